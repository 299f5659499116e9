"""Auto-provisioning in the Controller: a DME's process-now demand and AutoProv callers.

A notify client plays the DME and sends `AutoProvCounts` (one count, `process_now`) over
the real notify protocol; the Controller creates `autoprov-<app><version>-<zone hash>` in
that zone, which the test CCRM brings to Ready. AutoProv-service calls carry their intent
as gRPC metadata and are checked against the current state (aux_services.md §3.3).
"""

from __future__ import annotations

import asyncio
import hashlib

from edgeproto import (
    app_pb2,
    appinst_pb2,
    autoprovpolicy_pb2,
    autoprovpolicy_pb2_grpc,
    autoscalepolicy_pb2,
    cloudletkey_pb2,
    common_pb2,
    zone_pb2,
    zone_pb2_grpc,
)

from edge_cloud.errors import FailedPrecondition, InvalidArgument
from edge_cloud.notify import NotifyClient
from edge_cloud.objects import keys
from tests.integration.controller.cloudlet_harness import (
    Controller,
    ControllerHarness,
    collect,
    harness,
    unique_org,
)
from tests.integration.controller.clusterinst_harness import (
    APP_INST,
    CLUSTER_INST,
    InstCcrm,
    app_insts,
    ccrm,
    create_app,
    put_flavor,
    ready_cloudlet,
)
from tests.integration.helpers import eventually

__all__ = ["ccrm", "harness"]


def expected_name(app: app_pb2.App, zone: cloudletkey_pb2.ZoneKey) -> str:
    """The original's name, worked out here from its definition (not the product helper)."""
    digest = hashlib.sha256(f"{zone.name}::{zone.organization}".encode()).hexdigest()[:8]
    return f"autoprov-{app.key.name}{app.key.version.replace('.', '')}-{digest}"


def demand(app: app_pb2.App, zone: cloudletkey_pb2.ZoneKey) -> autoprovpolicy_pb2.AutoProvCounts:
    counts = autoprovpolicy_pb2.AutoProvCounts(dme_node_name="dme-test")
    counts.counts.add(app_key=app.key, zone_key=zone, count=3, process_now=True)
    return counts


def autoprov_metadata(reason: str, policy: str) -> tuple[tuple[str, str], ...]:
    return (
        ("caller-auto-prov", ""),
        ("auto-prov-reason", reason),
        ("auto-prov-policy-name", policy),
    )


def instances_of(ctl: Controller, app: app_pb2.App) -> list[appinst_pb2.AppInst]:
    return [i for _, i in ctl.sync.caches.items(APP_INST) if i.app_key == app.key]


async def zone_with_cloudlet(ctl: Controller, operator: str, name: str) -> cloudletkey_pb2.ZoneKey:
    zone = cloudletkey_pb2.ZoneKey(organization=operator, name=name)
    await zone_pb2_grpc.ZoneApiStub(ctl.channel).CreateZone(zone_pb2.Zone(key=zone), timeout=10)
    await ready_cloudlet(ctl, operator, f"site-{name}", zone=name)
    return zone


async def test_dme_process_now_creates_one_autoprov_instance(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    operator, dev = unique_org(), unique_org()
    zone = await zone_with_cloudlet(ctl, operator, "z1")
    await put_flavor(ctl)
    app = await create_app(ctl, dev)
    want = appinst_pb2.AppInstKey(name=expected_name(app, zone), organization=dev)
    worker = ctl.notify.process_now

    dme = NotifyClient([ctl.addr], name="dme", backoff_initial=0.05, backoff_max=0.2)
    async with dme:
        await dme.wait_connected()
        dme.send_message(demand(app, zone))

        async def ready() -> appinst_pb2.AppInst:
            inst = ctl.sync.caches.get(APP_INST, keys.key_string(want))
            assert inst is not None
            assert inst.state == common_pb2.READY
            return inst

        inst = await eventually(ready, within=20)
        assert inst.liveness == common_pb2.LIVENESS_AUTOPROV
        assert inst.zone_key == zone
        assert [r.key for r in ccrm.app_requests] == [want]

        async def worker_done(runs: int) -> None:
            assert worker.done == runs
            assert worker.running == 0

        await eventually(lambda: worker_done(1))
        clusters_before = len(list(ctl.sync.caches.items(CLUSTER_INST)))

        # the same demand again: refused by the zone check, nothing more is made
        dme.send_message(demand(app, zone))
        await eventually(lambda: worker_done(2))
    assert [i.key for i in instances_of(ctl, app)] == [want]
    assert len(list(ctl.sync.caches.items(CLUSTER_INST))) == clusters_before
    assert len(ccrm.app_requests) == 1

    # a user may not take the reserved prefix
    user = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name="autoprov-x", organization=dev),
        app_key=app.key,
        zone_key=zone,
    )
    _, err = await collect(app_insts(ctl).CreateAppInst(user, timeout=10))
    assert isinstance(err, InvalidArgument)
    assert err.message.startswith("AppInst name prefix autoprov- is reserved")


async def test_autoprov_service_intent_is_checked(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    operator, dev = unique_org(), unique_org()
    z1 = await zone_with_cloudlet(ctl, operator, "z1")
    z2 = await zone_with_cloudlet(ctl, operator, "z2")
    await put_flavor(ctl)
    policy = autoprovpolicy_pb2.AutoProvPolicy(
        key=autoscalepolicy_pb2.PolicyKey(organization=dev, name="p1"),
        deploy_client_count=1,
        max_instances=1,
        zones=[z1, z2],
    )
    await autoprovpolicy_pb2_grpc.AutoProvPolicyApiStub(ctl.channel).CreateAutoProvPolicy(
        policy, timeout=10
    )
    app = await create_app(ctl, dev, auto_prov_policies=["p1"])
    stub = app_insts(ctl)
    demand_md = autoprov_metadata("demand", "p1")

    first = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name="autoprov-first", organization=dev),
        app_key=app.key,
        zone_key=z1,
    )
    _, err = await collect(stub.CreateAppInst(first, metadata=demand_md, timeout=30))
    assert err is None, err
    stored = ctl.sync.caches.get(APP_INST, keys.key_string(first.key))
    assert stored is not None
    assert stored.liveness == common_pb2.LIVENESS_AUTOPROV

    # a second instance in z1 is refused in the commit (named by cloudlet, so the early
    # zone check has no zone to go by)
    site = cloudletkey_pb2.CloudletKey(organization=operator, name="site-z1")
    again = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name="autoprov-again", organization=dev),
        app_key=app.key,
        cloudlet_key=site,
    )
    _, err = await collect(stub.CreateAppInst(again, metadata=demand_md, timeout=30))
    assert isinstance(err, FailedPrecondition)
    assert err.message == f"already an AppInst on Zone {keys.key_string(z1)}"

    # z2 is free, but the policy's maximum of 1 is reached
    second = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name="autoprov-second", organization=dev),
        app_key=app.key,
        zone_key=z2,
    )
    _, err = await collect(stub.CreateAppInst(second, metadata=demand_md, timeout=30))
    assert isinstance(err, FailedPrecondition)
    assert err.message == "Create would exceed max instances 1 of policy p1"
    assert [i.key for i in instances_of(ctl, app)] == [first.key]

    # with a minimum of 1 the one online instance is both the minimum and the maximum
    policy.min_active_instances = 1
    policy.fields[:] = ["6"]
    await autoprovpolicy_pb2_grpc.AutoProvPolicyApiStub(ctl.channel).UpdateAutoProvPolicy(
        policy, timeout=10
    )
    gone = appinst_pb2.AppInst(key=first.key)
    minmax_md = autoprov_metadata("minmax", "p1")
    refusals = [
        (stub.CreateAppInst, second, minmax_md, "Create to satisfy min already met, ignoring"),
        (
            stub.DeleteAppInst,
            gone,
            demand_md,
            "Delete would violate min active instances 1 of policy p1",
        ),
        (stub.DeleteAppInst, gone, minmax_md, "Delete to satisfy max already met, ignoring"),
    ]
    for rpc, request, metadata, message in refusals:  # one at a time
        _, err = await collect(rpc(request, metadata=metadata, timeout=30))
        assert isinstance(err, FailedPrecondition)
        assert err.message == message
    assert [i.key for i in instances_of(ctl, app)] == [first.key]

    # an orphan delete of an instance whose zone is still in the App's policy is refused;
    # a plain delete goes through
    orphaned = autoprov_metadata("orphaned", "p1")
    _, err = await collect(stub.DeleteAppInst(gone, metadata=orphaned, timeout=30))
    assert isinstance(err, FailedPrecondition)
    assert err.message == (
        f"AppInst {keys.key_string(first.key)} on Zone in policy p1 on App, not orphaned"
    )
    _, err = await collect(stub.DeleteAppInst(gone, timeout=30))
    assert err is None, err
    assert instances_of(ctl, app) == []


async def test_racing_autoprov_creates_leave_one_instance_per_zone(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    operator, dev = unique_org(), unique_org()
    await zone_with_cloudlet(ctl, operator, "z1")
    await put_flavor(ctl)
    app = await create_app(ctl, dev)
    site = cloudletkey_pb2.CloudletKey(organization=operator, name="site-z1")
    md = autoprov_metadata("demand", "p1")

    async def create(name: str) -> Exception | None:
        # named by cloudlet: the early zone check has no zone, the commit decides
        request = appinst_pb2.AppInst(
            key=appinst_pb2.AppInstKey(name=name, organization=dev),
            app_key=app.key,
            cloudlet_key=site,
        )
        _, err = await collect(app_insts(ctl).CreateAppInst(request, metadata=md, timeout=30))
        return err

    async with asyncio.timeout(60):
        errors = await asyncio.gather(*(create(f"autoprov-race{i}") for i in range(3)))
    refused = [e for e in errors if e is not None]
    assert len(refused) == 2, errors
    for err in refused:
        assert isinstance(err, FailedPrecondition)
        assert err.message.startswith("already an AppInst on Zone ")
    [winner] = instances_of(ctl, app)
    assert winner.liveness == common_pb2.LIVENESS_AUTOPROV
    assert winner.state == common_pb2.READY

    async def losers_cleaned_up() -> None:
        auto = [c for _, c in ctl.sync.caches.items(CLUSTER_INST) if c.reserved_by == dev]
        assert [c.key for c in auto] == [winner.cluster_key]

    await eventually(losers_cleaned_up, within=20)
