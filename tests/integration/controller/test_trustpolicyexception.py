"""TrustPolicyExceptionApi and the per-instance TPEInstanceState records (controller.md §3.12).

A Controller in-process on the real etcd and Redis, with its `TpeApplier` following the
caches, and a CCRM test server that records the `ApplyTrustPolicyException` calls it gets.
Cloudlet, cluster and AppInst states are written straight into etcd, as worker reports
would leave them, so each test sets exactly the conditions the original checks.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from edgeproto import (
    app_pb2,
    app_pb2_grpc,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    controller_pb2,
    result_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
    trustpolicyexception_pb2_grpc,
    zone_pb2,
    zone_pb2_grpc,
    zonepool_pb2,
    zonepool_pb2_grpc,
)

from edge_cloud.objects import keys, registry
from services.controller._engine import Txn
from services.controller._tpe import TpeApplier, targets_for_tpe
from tests.integration.controller import cloudlet_harness
from tests.integration.controller.cloudlet_harness import Controller, ControllerHarness
from tests.integration.controller.clusterinst_harness import (
    InstCcrm,
    cluster_key,
    create_app,
    edit,
    inst_ccrm_server,
    put_flavor,
    ready_cloudlet,
)
from tests.integration.helpers import eventually

harness = cloudlet_harness.harness  # the fixture, under its name
TPES = trustpolicyexception_pb2
TPE_INSTANCE = registry.by_class(TPES.TPEInstanceState)
CLOUDLET = registry.by_class(cloudlet_pb2.Cloudlet)
APP_INST = registry.by_class(appinst_pb2.AppInst)
ACTIVE = TPES.TRUST_POLICY_EXCEPTION_STATE_ACTIVE
REJECTED = TPES.TRUST_POLICY_EXCEPTION_STATE_REJECTED
RULE = trustpolicy_pb2.SecurityRule(protocol="tcp", port_range_min=443, remote_cidr="10.1.0.0/16")


@dataclass
class TpeCcrm(InstCcrm):
    """The instance CCRM, also recording trust policy exception applications."""

    tpe_requests: list[TPES.TPEInstanceState] = field(default_factory=list)
    tpe_error: str = ""

    async def ApplyTrustPolicyException(
        self, request: TPES.TPEInstanceState, context: grpc.aio.ServicerContext[Any, Any]
    ) -> result_pb2.Result:
        self.tpe_requests.append(request)
        if self.tpe_error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.tpe_error)
        return result_pb2.Result()


@dataclass
class World:
    """One operator's zone and pool, a developer's trusted App, one controller."""

    ctl: Controller
    ccrm: TpeCcrm
    oper: str
    dev: str
    app: app_pb2.App
    pool: zonepool_pb2.ZonePool
    tpes: trustpolicyexception_pb2_grpc.TrustPolicyExceptionApiStub
    pools: zonepool_pb2_grpc.ZonePoolApiStub
    applier: TpeApplier

    def tpe(self, name: str = "tpe1", **kw: Any) -> TPES.TrustPolicyException:
        base: dict[str, Any] = {
            "key": TPES.TrustPolicyExceptionKey(
                app_key=self.app.key, zone_pool_key=self.pool.key, name=name
            ),
            "outbound_security_rules": [RULE],
        }
        base.update(kw)
        return TPES.TrustPolicyException(**base)

    def records(self) -> list[TPES.TPEInstanceState]:
        return self.ctl.sync.caches.values(TPE_INSTANCE)


@pytest.fixture
async def world(harness: ControllerHarness) -> AsyncIterator[World]:
    ccrm = TpeCcrm()
    async with inst_ccrm_server(ccrm) as addr:
        harness.ccrm_addr = addr
        ctl = await harness.start()
        applier = TpeApplier(ctl.runtime)
        applier.follow()
        oper, dev = f"oper{id(ctl) % 10_000}", f"dev{id(ctl) % 10_000}"
        zone = zone_pb2.Zone(key=cloudletkey_pb2.ZoneKey(organization=oper, name="z1"))
        await zone_pb2_grpc.ZoneApiStub(ctl.channel).CreateZone(zone, timeout=10)
        pools = zonepool_pb2_grpc.ZonePoolApiStub(ctl.channel)
        pool = zonepool_pb2.ZonePool(
            key=zonepool_pb2.ZonePoolKey(organization=oper, name="pool1"), zones=[zone.key]
        )
        await pools.CreateZonePool(pool, timeout=10)
        await put_flavor(ctl)
        app = await create_app(ctl, dev, trusted=True)
        tpes = trustpolicyexception_pb2_grpc.TrustPolicyExceptionApiStub(ctl.channel)
        try:
            yield World(ctl, ccrm, oper, dev, app, pool, tpes, pools, applier)
        finally:
            await applier.close()
            await harness.stop_all()


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_create_validates_and_starts_in_approval_requested(world: World) -> None:
    w = world
    err = await refused(w.tpes.CreateTrustPolicyException(w.tpe(outbound_security_rules=[])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Security rules must be specified"

    err = await refused(w.tpes.CreateTrustPolicyException(w.tpe(name="")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "TrustPolicyException name cannot be empty"

    bad_rule = trustpolicy_pb2.SecurityRule(protocol="sctp", remote_cidr="10.0.0.0/8")
    err = await refused(
        w.tpes.CreateTrustPolicyException(w.tpe(outbound_security_rules=[bad_rule]))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Protocol must be one of: (TCP,UDP,ICMP)"

    missing_app = w.tpe()
    missing_app.key.app_key.name = "nosuch"
    err = await refused(w.tpes.CreateTrustPolicyException(missing_app))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details().startswith("App key ")
    assert err.details().endswith(" not found")

    missing_pool = w.tpe()
    missing_pool.key.zone_pool_key.name = "nosuch"
    err = await refused(w.tpes.CreateTrustPolicyException(missing_pool))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "ZonePool key" in err.details()

    untrusted = await create_app(w.ctl, w.dev, name="plain")
    plain = w.tpe()
    plain.key.app_key.CopyFrom(untrusted.key)
    err = await refused(w.tpes.CreateTrustPolicyException(plain))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == (
        f'Non trusted app: organization:"{w.dev}" name:"plain" version:"1.0" not compatible '
        f'with trust policy: app_key:<organization:"{w.dev}" name:"plain" version:"1.0" > '
        f'zone_pool_key:<organization:"{w.oper}" name:"pool1" > name:"tpe1" '
    )

    # the requested state is ignored: an exception starts waiting for approval
    await w.tpes.CreateTrustPolicyException(w.tpe(state=ACTIVE), timeout=10)
    shown = [t async for t in w.tpes.ShowTrustPolicyException(TPES.TrustPolicyException())]
    assert [t.state for t in shown] == [TPES.TRUST_POLICY_EXCEPTION_STATE_APPROVAL_REQUESTED]
    assert shown[0].outbound_security_rules[0].protocol == "TCP"  # normalised
    assert shown[0].outbound_security_rules[0].port_range_max == 443

    err = await refused(w.tpes.CreateTrustPolicyException(w.tpe()))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert err.details().endswith(" already exists")


async def test_update_state_rules_and_not_found(world: World) -> None:
    w = world
    err = await refused(w.tpes.UpdateTrustPolicyException(w.tpe(state=ACTIVE, fields=["3"])))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = await refused(w.tpes.DeleteTrustPolicyException(w.tpe()))
    assert err.code() == grpc.StatusCode.NOT_FOUND

    await w.tpes.CreateTrustPolicyException(w.tpe(), timeout=10)
    pending = TPES.TRUST_POLICY_EXCEPTION_STATE_APPROVAL_REQUESTED
    err = await refused(w.tpes.UpdateTrustPolicyException(w.tpe(state=pending, fields=["3"])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "New state must be either Active or Rejected"

    wider = trustpolicy_pb2.SecurityRule(
        protocol="udp", port_range_min=53, remote_cidr="8.8.8.8/32"
    )
    await w.tpes.UpdateTrustPolicyException(
        w.tpe(outbound_security_rules=[wider], fields=["4"]), timeout=10
    )
    await w.tpes.UpdateTrustPolicyException(w.tpe(state=ACTIVE, fields=["3"]), timeout=10)
    by_key = TPES.TrustPolicyException(key=w.tpe().key)
    stored = [t async for t in w.tpes.ShowTrustPolicyException(by_key)]
    assert stored[0].state == ACTIVE
    assert [r.protocol for r in stored[0].outbound_security_rules] == ["UDP"]

    err = await refused(
        w.tpes.UpdateTrustPolicyException(w.tpe(outbound_security_rules=[RULE], fields=["4"]))
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == (
        "Can update security rules only when trust policy exception is still in approval "
        "requested state"
    )

    await w.tpes.DeleteTrustPolicyException(w.tpe(), timeout=10)
    assert [t async for t in w.tpes.ShowTrustPolicyException(by_key)] == []


async def test_app_and_zone_pool_are_held_by_an_exception(world: World) -> None:
    w = world
    await w.tpes.CreateTrustPolicyException(w.tpe(), timeout=10)
    key_text = keys.key_string(w.tpe().key)

    err = await refused(app_pb2_grpc.AppApiStub(w.ctl.channel).DeleteApp(w.app))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == f"Application in use by Trust Policy Exception {key_text}"

    err = await refused(w.pools.DeleteZonePool(w.pool))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == f"ZonePool in use by Trust Policy Exception {key_text}"

    update = zonepool_pb2.ZonePool(key=w.pool.key, fields=["3"])
    err = await refused(w.pools.UpdateZonePool(update))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == (
        f"Not allowed to update ZonePool when TrustPolicyException {key_text} is applied"
    )

    await w.tpes.DeleteTrustPolicyException(w.tpe(), timeout=10)
    await w.pools.DeleteZonePool(w.pool, timeout=10)


async def instance(w: World, name: str = "ai1") -> appinst_pb2.AppInst:
    """A READY AppInst of the App on a dedicated cluster of a trust-policy cloudlet in z1."""
    cloudlet = w.ctl.sync.caches.get(
        CLOUDLET, keys.key_string(cloudletkey_pb2.CloudletKey(organization=w.oper, name="c1"))
    )
    if cloudlet is None:
        cloudlet = await ready_cloudlet(w.ctl, w.oper, zone="z1")

        def trusted(c: cloudlet_pb2.Cloudlet) -> None:
            c.trust_policy = "egress"

        await edit(w.ctl, CLOUDLET, cloudlet.key, trusted)
    cluster = clusterinst_pb2.ClusterInst(
        key=cluster_key(w.dev),
        cloudlet_key=cloudlet.key,
        ip_access=common_pb2.IP_ACCESS_DEDICATED,
        state=common_pb2.READY,
    )
    inst = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(organization=w.dev, name=name),
        app_key=w.app.key,
        cluster_key=cluster.key,
        cloudlet_key=cloudlet.key,
        state=common_pb2.READY,
    )

    def put(txn: Txn) -> None:
        txn.put(cluster)
        txn.put(inst)

    await w.ctl.engine.apply(put)
    return inst


async def settled(w: World, count: int = 1) -> list[TPES.TPEInstanceState]:
    """The records once every runner has finished (no owner left)."""

    async def check() -> list[TPES.TPEInstanceState]:
        records = w.records()
        assert len(records) == count, records
        assert all(not r.owner and not r.run_requested for r in records), records
        return records

    assert await w.applier.wait_idle(10)
    return await eventually(check)


async def test_instance_states_follow_approval_rejection_and_delete(world: World) -> None:
    w = world
    inst = await instance(w)
    await w.tpes.CreateTrustPolicyException(w.tpe(), timeout=10)
    assert await w.applier.wait_idle(10)
    assert w.records() == []  # waiting for approval: nothing applied yet

    await w.tpes.UpdateTrustPolicyException(w.tpe(state=ACTIVE, fields=["3"]), timeout=10)
    [record] = await settled(w)
    assert record.tpe_enable
    assert record.disable_reason == ""
    assert record.error == ""
    assert record.key.app_inst_key == inst.key
    assert record.key.cluster_key == inst.cluster_key
    assert record.key.cloudlet_key == inst.cloudlet_key
    assert record.key.tpe_key == w.tpe().key
    assert [r.tpe_enable for r in w.ccrm.tpe_requests] == [True]
    assert w.ccrm.tpe_requests[0].run_count == 1

    await w.tpes.UpdateTrustPolicyException(w.tpe(state=REJECTED, fields=["3"]), timeout=10)
    [record] = await settled(w)
    assert not record.tpe_enable
    assert record.disable_reason == "trust policy exception state is not active"
    assert [r.tpe_enable for r in w.ccrm.tpe_requests] == [True, False]

    await w.tpes.UpdateTrustPolicyException(w.tpe(state=ACTIVE, fields=["3"]), timeout=10)
    await settled(w)
    assert [r.tpe_enable for r in w.ccrm.tpe_requests] == [True, False, True]

    # deleting an active exception closes it on the cluster, then drops the record
    await w.tpes.DeleteTrustPolicyException(w.tpe(), timeout=10)
    await settled(w, count=0)
    assert [r.tpe_enable for r in w.ccrm.tpe_requests] == [True, False, True, False]


async def test_pool_membership_and_app_inst_changes_reapply(world: World) -> None:
    w = world
    await w.tpes.CreateTrustPolicyException(w.tpe(), timeout=10)
    await w.tpes.UpdateTrustPolicyException(w.tpe(state=ACTIVE, fields=["3"]), timeout=10)
    assert await w.applier.wait_idle(10)
    assert w.records() == []  # no instance yet

    inst = await instance(w)  # an AppInst becoming ready is covered at once
    [record] = await settled(w)
    assert record.tpe_enable

    member = zonepool_pb2.ZonePoolMember(key=w.pool.key, zone=w.pool.zones[0])
    await w.pools.RemoveZonePoolMember(member, timeout=10)
    [record] = await settled(w)
    assert not record.tpe_enable
    assert record.disable_reason == "zone not in trust policy exception zone pool"

    await w.pools.AddZonePoolMember(member, timeout=10)
    [record] = await settled(w)
    assert record.tpe_enable

    # the AppInst goes away: the exception is closed on its cluster and the record dropped
    def remove(txn: Txn) -> None:
        txn.delete(APP_INST, inst.key)

    await w.ctl.engine.apply(remove)
    await settled(w, count=0)
    assert [r.tpe_enable for r in w.ccrm.tpe_requests] == [True, False, True, False]
    assert w.ccrm.tpe_requests[-1].disable_reason.endswith(" not found")


async def test_a_cloudlet_losing_its_trust_policy_disables(world: World) -> None:
    w = world
    inst = await instance(w)
    await w.tpes.CreateTrustPolicyException(w.tpe(), timeout=10)
    await w.tpes.UpdateTrustPolicyException(w.tpe(state=ACTIVE, fields=["3"]), timeout=10)
    [record] = await settled(w)
    assert record.tpe_enable

    def untrusted(c: cloudlet_pb2.Cloudlet) -> None:
        c.trust_policy = ""

    await edit(w.ctl, CLOUDLET, inst.cloudlet_key, untrusted)
    [record] = await settled(w)
    assert not record.tpe_enable
    assert record.disable_reason == "cloudlet has no trust policy"


async def test_a_failing_ccrm_is_recorded_on_the_instance(world: World) -> None:
    w = world
    await instance(w)
    w.ccrm.tpe_error = "security group quota reached"
    await w.tpes.CreateTrustPolicyException(w.tpe(), timeout=10)
    await w.tpes.UpdateTrustPolicyException(w.tpe(state=ACTIVE, fields=["3"]), timeout=10)
    [record] = await settled(w)
    assert record.tpe_enable
    assert record.error == "security group quota reached"


async def test_a_dead_controllers_runner_is_taken_over_when_its_record_goes(
    world: World,
) -> None:
    w = world
    await instance(w)
    await w.tpes.CreateTrustPolicyException(w.tpe(), timeout=10)
    await w.tpes.UpdateTrustPolicyException(w.tpe(state=ACTIVE, fields=["3"]), timeout=10)
    [record] = await settled(w)
    calls = len(w.ccrm.tpe_requests)
    other = controller_pb2.Controller(
        key=controller_pb2.ControllerKey(addr="127.0.0.9:55001"), hostname="gone"
    )

    def run_left_behind(txn: Txn) -> None:
        # another controller was running this record when it died
        txn.put(other)
        stuck = txn.get(TPE_INSTANCE, record.key)
        assert stuck is not None
        stuck.owner = "gone@127.0.0.9:55001/a1b2"
        stuck.run_requested = True
        stuck.started_at.seconds = int(time.time())
        txn.put(stuck)

    await w.ctl.engine.apply(run_left_behind)
    # a trigger now only asks that (dead) owner to run again
    w.applier.apply(targets_for_tpe(w.ctl.sync.caches, w.tpe().key))
    assert await w.applier.wait_idle(10)
    [stuck] = w.records()
    assert stuck.owner == "gone@127.0.0.9:55001/a1b2"

    def lease_expired(txn: Txn) -> None:
        txn.delete(registry.by_class(controller_pb2.Controller), other.key)

    await w.ctl.engine.apply(lease_expired)
    [record] = await settled(w)
    assert record.tpe_enable
    assert len(w.ccrm.tpe_requests) == calls + 1


async def test_a_second_trigger_while_running_runs_once_more(world: World) -> None:
    w = world
    await instance(w)
    await w.tpes.CreateTrustPolicyException(w.tpe(), timeout=10)
    await w.tpes.UpdateTrustPolicyException(w.tpe(state=ACTIVE, fields=["3"]), timeout=10)
    await settled(w)
    # two triggers at once for the same record: one runner, the other only asks it to rerun
    targets = targets_for_tpe(w.ctl.sync.caches, w.tpe().key)
    assert len(targets) == 1
    w.applier.apply(targets + targets)
    [again] = await settled(w)
    assert again.tpe_enable
    calls = len(w.ccrm.tpe_requests)
    assert 2 <= calls <= 3, w.ccrm.tpe_requests
