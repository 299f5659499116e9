"""Bursts of AppInst creates on one cluster (issue 6): fast, conflict-free, refs exact.

Every create on a cluster writes the cluster's ClusterRefs and the cloudlet's CloudletRefs
(shared root-LB ports). These tests check that a burst on ONE cluster, from one or two
Controllers, succeeds without `Aborted`, never hands out a port twice, never over-commits
the cluster, and leaves every refs record exactly equal to the instances that exist.
"""

from __future__ import annotations

import asyncio

from edgeproto import app_pb2, appinst_pb2, cloudlet_pb2, common_pb2, flavor_pb2, refs_pb2

from edge_cloud.errors import ResourceExhausted
from edge_cloud.objects import keys, registry
from services.controller._engine import Txn
from services.controller._inst_ops import receive_app_inst_info
from tests.integration.controller.cloudlet_harness import (
    Controller,
    ControllerHarness,
    collect,
    harness,
    unique_org,
)
from tests.integration.controller.clusterinst_harness import (
    APP_INST,
    InstCcrm,
    app_insts,
    ccrm,
    clusters,
    create_app,
    new_app_inst,
    new_cluster,
    put_flavor,
    ready_cloudlet,
    refs_of,
)

__all__ = ["ccrm", "harness"]

CLOUDLET_INFO = registry.by_class(cloudlet_pb2.CloudletInfo)
CLUSTER_REFS = registry.by_class(refs_pb2.ClusterRefs)
APP_INST_REFS = registry.by_class(refs_pb2.AppInstRefs)
BURST_TIMEOUT = 90.0


async def big_cluster(ctl: Controller, org: str, vcpus: int) -> tuple[cloudlet_pb2.Cloudlet, str]:
    """A ready cloudlet with one docker cluster of `vcpus` vCPUs; returns it and the cluster."""
    cloudlet = await ready_cloudlet(ctl, org)

    def add_infra_flavor(txn: Txn) -> None:
        info = txn.get(CLOUDLET_INFO, cloudlet.key)
        assert info is not None
        info.flavors.append(
            cloudlet_pb2.FlavorInfo(name="m1.huge", vcpus=256, ram=262144, disk=100)
        )
        txn.put(info)

    await ctl.engine.apply(add_infra_flavor)
    await put_flavor(ctl)  # x1.small, 2 vCPUs: what each instance takes
    await put_flavor(ctl, "x1.big", vcpus=vcpus)
    cluster = new_cluster(org, cloudlet, flavor=flavor_pb2.FlavorKey(name="x1.big"))
    _, err = await collect(clusters(ctl).CreateClusterInst(cluster, timeout=30))
    assert err is None, err
    return cloudlet, keys.key_string(cluster.key)


async def burst(
    ctls: list[Controller], org: str, apps: list[app_pb2.App], cluster_text: str
) -> list[Exception | None]:
    """One create per App, all at once, spread round-robin over `ctls`."""
    cluster = keys.object_from_key_string(registry.by_name("ClusterInst"), cluster_text).key

    async def create(i: int) -> Exception | None:
        ctl = ctls[i % len(ctls)]
        request = new_app_inst(org, apps[i], f"ai{i:03d}", cluster=cluster)
        _, err = await collect(app_insts(ctl).CreateAppInst(request, timeout=BURST_TIMEOUT))
        return err

    async with asyncio.timeout(BURST_TIMEOUT):
        return await asyncio.gather(*(create(i) for i in range(len(apps))))


def assert_refs_exact(
    ctl: Controller, org: str, cloudlet: cloudlet_pb2.Cloudlet, cluster_text: str
) -> list[appinst_pb2.AppInst]:
    """Every refs record equals what the stored instances say; returns the instances."""
    insts = [ai for _, ai in ctl.sync.caches.items(APP_INST) if ai.key.organization == org]
    assert all(ai.state == common_pb2.READY for ai in insts)
    ports = [p.public_port for ai in insts for p in ai.mapped_ports]
    assert len(ports) == len(insts)
    assert len(set(ports)) == len(ports), "a shared root-LB port was handed out twice"
    assert dict(refs_of(ctl, cloudlet).root_lb_ports) == dict.fromkeys(ports, 1)
    crefs = ctl.sync.caches.get(CLUSTER_REFS, cluster_text)
    assert crefs is not None
    listed = [keys.key_string(k) for k in crefs.apps]
    assert sorted(listed) == sorted(keys.key_string(ai.key) for ai in insts)
    for ai in insts:
        air = ctl.sync.caches.get(APP_INST_REFS, keys.key_string(ai.app_key))
        assert air is not None
        assert dict(air.insts) == {keys.key_string(ai.key): 1}
    return insts


async def test_fifty_concurrent_creates_on_one_cluster_all_succeed(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet, cluster_text = await big_cluster(ctl, org, vcpus=100)
    apps = [await create_app(ctl, org, f"app{i:03d}") for i in range(50)]

    errors = await burst([ctl], org, apps, cluster_text)

    assert [e for e in errors if e is not None] == []
    insts = assert_refs_exact(ctl, org, cloudlet, cluster_text)
    assert len(insts) == 50
    # tcp:80 maps to 80 once, then to the lowest free ports from 10000 on
    ports = sorted(p.public_port for ai in insts for p in ai.mapped_ports)
    assert ports == [80, *range(10000, 10049)]


async def test_two_controllers_fill_a_cluster_exactly(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl_a = await harness.start()
    ctl_b = await harness.start()
    org = unique_org()
    cloudlet, cluster_text = await big_cluster(ctl_a, org, vcpus=40)  # room for 20
    apps = [await create_app(ctl_a, org, f"app{i:03d}") for i in range(30)]
    _, revision = await ctl_a.store.range("1/", keys_only=True)
    await ctl_b.sync.wait_for_revision(revision)

    errors = await burst([ctl_a, ctl_b], org, apps, cluster_text)

    refused = [e for e in errors if e is not None]
    assert len(refused) == 10, refused
    assert all(isinstance(e, ResourceExhausted) for e in refused), refused
    assert all("not enough resources in cluster" in str(e) for e in refused), refused
    for ctl in (ctl_a, ctl_b):
        _, revision = await ctl.store.range("1/", keys_only=True)
        await ctl.sync.wait_for_revision(revision)
        insts = assert_refs_exact(ctl, org, cloudlet, cluster_text)
        assert len(insts) == 20


async def test_resource_update_rewrites_the_cluster_refs(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    """Creates fit against members read unguarded: a member's resize must touch the refs."""
    ctl = await harness.start()
    org = unique_org()
    _, cluster_text = await big_cluster(ctl, org, vcpus=8)
    app = await create_app(ctl, org)
    errors = await burst([ctl], org, [app], cluster_text)
    assert errors == [None]
    refs_key = f"1/ClusterRefs/{cluster_text}"
    before = await ctl.store.get(refs_key)
    assert before is not None

    update = appinst_pb2.AppInst(key=appinst_pb2.AppInstKey(name="ai000", organization=org))
    update.node_resources.vcpus = 4
    update.fields.append("56.1")  # vcpus only: a whole "56" would zero the RAM
    _, err = await collect(app_insts(ctl).UpdateAppInst(update, timeout=30))
    assert err is None, err

    after = await ctl.store.get(refs_key)
    assert after is not None
    assert after.mod_revision > before.mod_revision
    assert after.value == before.value


async def test_reports_that_repeat_the_state_write_nothing(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    _, cluster_text = await big_cluster(ctl, org, vcpus=8)
    app = await create_app(ctl, org)
    assert await burst([ctl], org, [app], cluster_text) == [None]
    key = appinst_pb2.AppInstKey(name="ai000", organization=org)
    skey = keys.store_key(APP_INST.name, keys.key_string(key))
    before = await ctl.store.get(skey)
    assert before is not None

    status_only = appinst_pb2.AppInstInfo(key=key, state=common_pb2.READY)
    status_only.status.msgs.append("still ready")
    await receive_app_inst_info(ctl.runtime, status_only)
    await receive_app_inst_info(ctl.runtime, appinst_pb2.AppInstInfo(key=key))
    unchanged = await ctl.store.get(skey)
    assert unchanged is not None
    assert unchanged.mod_revision == before.mod_revision

    await receive_app_inst_info(
        ctl.runtime, appinst_pb2.AppInstInfo(key=key, state=common_pb2.READY, uri="new.example")
    )
    changed = await ctl.store.get(skey)
    assert changed is not None
    assert changed.mod_revision > before.mod_revision
    stored = ctl.sync.caches.get(APP_INST, keys.key_string(key))
    assert stored is not None
    assert stored.uri == "new.example"
