"""ClusterInst and AppInst end to end through a CCRM test server, on real etcd and Redis."""

from __future__ import annotations

import asyncio

from distributed_match_engine import appcommon_pb2
from edgeproto import (
    app_pb2,
    app_pb2_grpc,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    refs_pb2,
    zone_pb2,
    zone_pb2_grpc,
)

from edge_cloud.errors import FailedPrecondition, ResourceExhausted
from edge_cloud.objects import codec, keys, registry
from services.controller._engine import Txn
from services.controller._inst_ops import InstRecovery, receive_cluster_inst_info
from services.controller._progress import START, stream_key
from services.controller._tracked import Recovery
from tests.integration.controller.cloudlet_harness import (
    ControllerHarness,
    collect,
    features,
    harness,
    new_cloudlet,
    put_features,
    unique_org,
)
from tests.integration.controller.clusterinst_harness import (
    APP_INST,
    CLUSTER_INST,
    InstCcrm,
    app_insts,
    ccrm,
    cluster_key,
    clusters,
    create_app,
    new_app_inst,
    new_cluster,
    put_flavor,
    ready_cloudlet,
    refs_of,
)
from tests.integration.helpers import eventually

__all__ = ["ccrm", "harness"]

CLUSTER_REFS = registry.by_class(refs_pb2.ClusterRefs)
APP_INST_REFS = registry.by_class(refs_pb2.AppInstRefs)


async def label_keys(harness: ControllerHarness) -> list[str]:
    ctl = harness.started[0]
    found, _ = await ctl.store.range("1/CloudletObjectDnsLabel/")
    ids, _ = await ctl.store.range("1/AppInstId/")
    return sorted([kv.key for kv in found] + [kv.key for kv in ids])


async def test_cluster_and_app_inst_lifecycle(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)

    lines, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet)))
    assert err is None, err
    assert lines == ["Creating cluster", "Created ClusterInst successfully"]
    cluster = ctl.sync.caches.get(CLUSTER_INST, keys.key_string(cluster_key(org)))
    assert cluster is not None
    assert cluster.state == common_pb2.READY
    assert cluster.ip_access == common_pb2.IP_ACCESS_SHARED
    assert cluster.dns_label == f"cl1-{org}"
    assert (
        cluster.fqdn
        == f"cl1-{org}.{cloudlet.key.name}-{org}.local.{ctl.runtime.config.app_dns_root}"
    )
    assert cluster.node_resources.vcpus == 2
    assert cluster.node_flavor == "m1.small"
    assert list(refs_of(ctl, cloudlet).cluster_insts) == [cluster.key]
    assert len(ccrm.cluster_requests) == 1
    assert ccrm.cluster_requests[0].state == common_pb2.CREATE_REQUESTED

    app = await create_app(ctl, org)
    lines, err = await collect(
        app_insts(ctl).CreateAppInst(new_app_inst(org, app, cluster=cluster.key))
    )
    assert err is None, err
    assert lines[-1] == "Created AppInst successfully"
    assert "Creating app instance" in lines
    inst = ctl.sync.caches.get(
        APP_INST, keys.key_string(appinst_pb2.AppInstKey(name="ai1", organization=org))
    )
    assert inst is not None
    assert inst.state == common_pb2.READY
    assert [(p.internal_port, p.public_port) for p in inst.mapped_ports] == [(80, 80)]
    stored_cloudlet = ctl.cloudlet(cloudlet.key)
    assert stored_cloudlet is not None
    assert inst.uri == stored_cloudlet.root_lb_fqdn
    assert inst.unique_id == f"{org}-ai1-c1-{org}"
    assert dict(refs_of(ctl, cloudlet).root_lb_ports) == {80: 1}
    crefs = ctl.sync.caches.get(CLUSTER_REFS, keys.key_string(cluster.key))
    assert crefs is not None
    assert list(crefs.apps) == [inst.key]
    airefs = ctl.sync.caches.get(APP_INST_REFS, keys.key_string(app.key))
    assert airefs is not None
    assert dict(airefs.insts) == {keys.key_string(inst.key): 1}

    # a second app's port 80 gets the next free external port
    app2 = await create_app(ctl, org, "app2")
    _, err = await collect(
        app_insts(ctl).CreateAppInst(new_app_inst(org, app2, "ai2", cluster=cluster.key))
    )
    assert err is None or isinstance(err, ResourceExhausted), err

    # in use: refused, naming the user
    lines, err = await collect(clusters(ctl).DeleteClusterInst(new_cluster(org, cloudlet)))
    assert isinstance(err, FailedPrecondition)
    assert err.message == f"ClusterInst in use by AppInst {keys.key_string(inst.key)}"
    still = ctl.sync.caches.get(CLUSTER_INST, keys.key_string(cluster.key))
    assert still is not None
    assert not still.delete_prepare
    assert still.state == common_pb2.READY

    for _, ai in list(ctl.sync.caches.items(APP_INST)):
        if ai.key.organization != org:
            continue
        lines, err = await collect(app_insts(ctl).DeleteAppInst(appinst_pb2.AppInst(key=ai.key)))
        assert err is None, err
        assert lines[-1] == "Deleted AppInst successfully"
    lines, err = await collect(clusters(ctl).DeleteClusterInst(new_cluster(org, cloudlet)))
    assert err is None, err
    assert lines[-1] == "Deleted ClusterInst successfully"

    refs = refs_of(ctl, cloudlet)
    assert list(refs.cluster_insts) == []
    assert dict(refs.root_lb_ports) == {}
    assert refs.used_dynamic_ips == 0
    assert ctl.sync.caches.get(CLUSTER_REFS, keys.key_string(cluster.key)) is None
    airefs = ctl.sync.caches.get(APP_INST_REFS, keys.key_string(app.key))
    assert airefs is not None
    assert dict(airefs.insts) == {}
    assert await label_keys(harness) == []


async def test_second_port_mapping_and_resources_in_cluster(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)
    await put_flavor(ctl, "x1.large", vcpus=4)
    big = new_cluster(org, cloudlet, flavor=flavor_pb2.FlavorKey(name="x1.large"))
    _, err = await collect(clusters(ctl).CreateClusterInst(big))
    assert err is None, err
    apps = [await create_app(ctl, org, f"app{i}") for i in range(3)]
    for i, app in enumerate(apps[:2]):
        _, err = await collect(
            app_insts(ctl).CreateAppInst(new_app_inst(org, app, f"ai{i}", cluster=big.key))
        )
        assert err is None, err
    ports = sorted(
        p.public_port
        for _, ai in ctl.sync.caches.items(APP_INST)
        if ai.key.organization == org
        for p in ai.mapped_ports
    )
    assert ports == [80, 10000]
    assert dict(refs_of(ctl, cloudlet).root_lb_ports) == {80: 1, 10000: 1}

    # the cluster (4 vCPUs) is full with two 2-vCPU instances
    _, err = await collect(
        app_insts(ctl).CreateAppInst(new_app_inst(org, apps[2], "ai2", cluster=big.key))
    )
    assert isinstance(err, ResourceExhausted)
    assert err.message.startswith(
        f"not enough resources in cluster {keys.key_string(big.key)}, want 2 vcpus but only 0 free"
    )
    # a second docker instance of the same App in the cluster
    _, err = await collect(
        app_insts(ctl).CreateAppInst(new_app_inst(org, apps[0], "dup", cluster=big.key))
    )
    assert isinstance(err, FailedPrecondition)
    assert "cannot deploy another instance of App" in err.message
    assert dict(refs_of(ctl, cloudlet).root_lb_ports) == {80: 1, 10000: 1}


async def test_cloudlet_resources_exhausted(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org, max_vcpus=4)
    await put_flavor(ctl)
    await put_flavor(ctl, "x1.large", vcpus=4)
    _, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet)))
    assert err is None, err
    big = new_cluster(org, cloudlet, "cl2", flavor=flavor_pb2.FlavorKey(name="x1.large"))
    _, err = await collect(clusters(ctl).CreateClusterInst(big))
    assert isinstance(err, ResourceExhausted)
    assert err.message == (
        "not enough resources available: required vCPUs is 4 but only 2 out of 4 is available"
    )
    assert ctl.sync.caches.get(CLUSTER_INST, keys.key_string(big.key)) is None
    assert len(refs_of(ctl, cloudlet).cluster_insts) == 1


async def test_dedicated_ip_allocation(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org, num_dynamic_ips=2)
    await put_flavor(ctl)
    dedicated = new_cluster(org, cloudlet, ip_access=common_pb2.IP_ACCESS_DEDICATED)
    _, err = await collect(clusters(ctl).CreateClusterInst(dedicated))
    assert err is None, err
    assert refs_of(ctl, cloudlet).used_dynamic_ips == 1
    stored = ctl.sync.caches.get(CLUSTER_INST, keys.key_string(dedicated.key))
    assert stored is not None
    assert stored.allocated_ip == "dynamic"
    second = new_cluster(org, cloudlet, "cl2", ip_access=common_pb2.IP_ACCESS_DEDICATED)
    _, err = await collect(clusters(ctl).CreateClusterInst(second))
    assert isinstance(err, ResourceExhausted)
    assert err.message == "No more dynamic IPs left"
    # an AppInst behind a dedicated LB keeps its internal port, URI is the cluster fqdn
    app = await create_app(ctl, org)
    _, err = await collect(
        app_insts(ctl).CreateAppInst(new_app_inst(org, app, cluster=dedicated.key))
    )
    assert err is None, err
    inst = next(ai for _, ai in ctl.sync.caches.items(APP_INST) if ai.key.organization == org)
    assert inst.uri == stored.fqdn
    assert [p.public_port for p in inst.mapped_ports] == [80]
    assert dict(refs_of(ctl, cloudlet).root_lb_ports) == {}
    _, err = await collect(app_insts(ctl).DeleteAppInst(appinst_pb2.AppInst(key=inst.key)))
    assert err is None, err
    _, err = await collect(clusters(ctl).DeleteClusterInst(dedicated))
    assert err is None, err
    assert refs_of(ctl, cloudlet).used_dynamic_ips == 0


async def test_worker_failures_leave_nothing_behind(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org, num_dynamic_ips=5)
    await put_flavor(ctl)
    ccrm.fail_cluster_create = "create ClusterInst failed"
    bad = new_cluster(org, cloudlet, ip_access=common_pb2.IP_ACCESS_DEDICATED)
    lines, err = await collect(clusters(ctl).CreateClusterInst(bad))
    assert isinstance(err, FailedPrecondition)
    assert err.message == "create ClusterInst failed"
    assert "DELETING ClusterInst due to failures" in lines
    assert ctl.sync.caches.get(CLUSTER_INST, keys.key_string(bad.key)) is None
    refs = refs_of(ctl, cloudlet)
    assert list(refs.cluster_insts) == []
    assert refs.used_dynamic_ips == 0
    assert await label_keys(harness) == []

    ccrm.fail_cluster_create = ""
    _, err = await collect(clusters(ctl).CreateClusterInst(bad))
    assert err is None, err
    app = await create_app(ctl, org, access_ports="tcp:80,udp:5000")
    ccrm.fail_app_create = "create app inst failed"
    shared = new_cluster(org, cloudlet, "cl2")
    _, err = await collect(clusters(ctl).CreateClusterInst(shared))
    assert err is None, err
    lines, err = await collect(
        app_insts(ctl).CreateAppInst(new_app_inst(org, app, cluster=shared.key))
    )
    assert isinstance(err, FailedPrecondition)
    assert err.message == "create app inst failed"
    assert "Deleting AppInst due to failure" in lines
    assert not [ai for _, ai in ctl.sync.caches.items(APP_INST) if ai.key.organization == org]
    assert dict(refs_of(ctl, cloudlet).root_lb_ports) == {}
    assert ctl.sync.caches.get(CLUSTER_REFS, keys.key_string(shared.key)) is None
    assert [k for k in await label_keys(harness) if "AppInstId" in k] == []


async def test_reservable_autocluster(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)
    app = await create_app(ctl, org)
    inst = new_app_inst(org, app, cloudlet_key=cloudlet.key)
    lines, err = await collect(app_insts(ctl).CreateAppInst(inst))
    assert err is None, err
    assert "No existing cluster available" in lines
    auto = [
        c
        for _, c in ctl.sync.caches.items(CLUSTER_INST)
        if c.cloudlet_key == cloudlet.key and c.auto
    ]
    assert len(auto) == 1
    cluster = auto[0]
    assert cluster.key.name.startswith("reservable0-")
    assert cluster.key.organization == "edgecloudorg"
    assert cluster.reserved_by == org
    assert f"Creating new auto-cluster named {cluster.key.name} to deploy AppInst" in lines
    assert refs_of(ctl, cloudlet).reserved_auto_cluster_ids == 1

    # a cluster reserved by another org is not used; a second one is made
    other = unique_org()
    app_b = await create_app(ctl, other)
    lines, err = await collect(
        app_insts(ctl).CreateAppInst(new_app_inst(other, app_b, cloudlet_key=cloudlet.key))
    )
    assert err is None, err
    assert refs_of(ctl, cloudlet).reserved_auto_cluster_ids == 3

    _, err = await collect(app_insts(ctl).DeleteAppInst(appinst_pb2.AppInst(key=inst.key)))
    assert err is None, err
    freed = ctl.sync.caches.get(CLUSTER_INST, keys.key_string(cluster.key))
    assert freed is not None
    assert freed.reserved_by == ""
    result = await clusters(ctl).DeleteIdleReservableClusterInsts(
        clusterinst_pb2.IdleReservableClusterInsts(idle_time=0)
    )
    assert result.message == "Delete done"
    assert ctl.sync.caches.get(CLUSTER_INST, keys.key_string(cluster.key)) is None
    assert refs_of(ctl, cloudlet).reserved_auto_cluster_ids == 2


async def test_concurrent_app_inst_creates_never_double_allocate(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl_a = await harness.start()
    ctl_b = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl_a, org)
    await put_flavor(ctl_a)
    await put_flavor(ctl_a, "x1.large", vcpus=8)
    big = new_cluster(org, cloudlet, flavor=flavor_pb2.FlavorKey(name="x1.large"))
    _, err = await collect(clusters(ctl_a).CreateClusterInst(big))
    assert err is None, err
    apps = [await create_app(ctl_a, org, f"app{i}") for i in range(6)]
    _, revision = await ctl_a.store.range("1/", keys_only=True)
    await ctl_b.sync.wait_for_revision(revision)

    async def create(i: int) -> Exception | None:
        ctl = (ctl_a, ctl_b)[i % 2]
        _, err = await collect(
            app_insts(ctl).CreateAppInst(new_app_inst(org, apps[i], f"ai{i}", cluster=big.key))
        )
        return err

    async with asyncio.timeout(60):
        errors = await asyncio.gather(*(create(i) for i in range(6)))
    ok = [e for e in errors if e is None]
    refused = [e for e in errors if e is not None]
    assert len(ok) == 4  # 8 vCPUs, 2 per instance
    assert all(isinstance(e, ResourceExhausted) for e in refused), refused
    insts = [ai for _, ai in ctl_a.sync.caches.items(APP_INST) if ai.key.organization == org]
    ports = [p.public_port for ai in insts for p in ai.mapped_ports]
    assert len(ports) == 4
    assert len(set(ports)) == 4
    assert sorted(refs_of(ctl_a, cloudlet).root_lb_ports) == sorted(ports)


async def test_app_delete_auto_deletes_dynamic_instances(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)
    _, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet)))
    assert err is None, err
    app = await create_app(ctl, org)
    dynamic = new_app_inst(org, app, cluster=cluster_key(org), liveness=common_pb2.LIVENESS_DYNAMIC)
    _, err = await collect(app_insts(ctl).CreateAppInst(dynamic))
    assert err is None, err
    await app_pb2_grpc.AppApiStub(ctl.channel).DeleteApp(app_pb2.App(key=app.key), timeout=30)
    assert ctl.sync.caches.get(APP_INST, keys.key_string(dynamic.key)) is None
    assert ctl.sync.caches.get(APP_INST_REFS, keys.key_string(app.key)) is None
    assert dict(refs_of(ctl, cloudlet).root_lb_ports) == {}


async def test_crm_on_edge_reports_reach_the_waiting_controller(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl_a = await harness.start()
    ctl_b = await harness.start()
    org = unique_org()
    await put_features(ctl_a, features())
    site = new_cloudlet(org, crm_on_edge=True, state=common_pb2.READY, dns_label=f"c1-{org}")
    info = cloudlet_pb2.CloudletInfo(
        key=site.key,
        state=appcommon_pb2.CLOUDLET_STATE_READY,
        flavors=[cloudlet_pb2.FlavorInfo(name="m1.small", vcpus=2, ram=4096, disk=40)],
    )

    def put(txn: Txn) -> None:
        txn.put(site)
        txn.put(info)

    await ctl_a.engine.apply(put)
    await put_flavor(ctl_a)
    _, revision = await ctl_a.store.range("1/", keys_only=True)
    await ctl_b.sync.wait_for_revision(revision)

    request = new_cluster(org, site)
    create = asyncio.create_task(collect(clusters(ctl_a).CreateClusterInst(request, timeout=30)))

    async def requested() -> None:
        found = ctl_b.sync.caches.get(CLUSTER_INST, keys.key_string(request.key))
        assert found is not None
        assert found.state == common_pb2.CREATE_REQUESTED

    await eventually(requested)
    # the CRM reports to controller B; the call on controller A follows through Redis
    working = clusterinst_pb2.ClusterInstInfo(key=request.key, state=common_pb2.CREATING)
    working.status.msgs.append("Creating cluster on the edge")
    await receive_cluster_inst_info(ctl_b.runtime, working)
    done = clusterinst_pb2.ClusterInstInfo(key=request.key, state=common_pb2.READY)
    done.status.msgs.append("Creating cluster on the edge")
    await receive_cluster_inst_info(ctl_b.runtime, done)
    lines, err = await create
    assert err is None, err
    assert lines == ["Creating cluster on the edge", "Created ClusterInst successfully"]
    assert ccrm.cluster_requests == []  # no CCRM call for a CRM on the edge

    # a late, illegal report is ignored
    late = clusterinst_pb2.ClusterInstInfo(key=request.key, state=common_pb2.CREATING)
    await receive_cluster_inst_info(ctl_b.runtime, late)
    stored = ctl_b.sync.caches.get(CLUSTER_INST, keys.key_string(request.key))
    assert stored is not None
    assert stored.state == common_pb2.READY

    delete = asyncio.create_task(collect(clusters(ctl_a).DeleteClusterInst(request, timeout=30)))

    async def delete_requested() -> None:
        found = ctl_b.sync.caches.get(CLUSTER_INST, keys.key_string(request.key))
        assert found is not None
        assert found.state == common_pb2.DELETE_REQUESTED

    await eventually(delete_requested)
    gone = clusterinst_pb2.ClusterInstInfo(key=request.key, state=common_pb2.DELETE_DONE)
    await receive_cluster_inst_info(ctl_b.runtime, gone)
    lines, err = await delete
    assert err is None, err
    assert lines[-1] == "Deleted ClusterInst successfully"
    assert ctl_a.sync.caches.get(CLUSTER_INST, keys.key_string(request.key)) is None


async def test_cloudlet_delete_cascades_idle_autoclusters(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)
    app = await create_app(ctl, org)
    inst = new_app_inst(org, app, cloudlet_key=cloudlet.key)
    _, err = await collect(app_insts(ctl).CreateAppInst(inst))
    assert err is None, err
    lines, err = await collect(ctl.cloudlets.DeleteCloudlet(cloudlet, timeout=30))
    assert isinstance(err, FailedPrecondition)
    assert err.message.startswith("Cloudlet in use by ClusterInst name reservable0-")
    _, err = await collect(app_insts(ctl).DeleteAppInst(appinst_pb2.AppInst(key=inst.key)))
    assert err is None, err
    lines, err = await collect(ctl.cloudlets.DeleteCloudlet(cloudlet, timeout=30))
    assert err is None, err
    assert "Deleted ClusterInst successfully" in lines
    assert lines[-1] == "Deleted Cloudlet successfully"
    assert not [c for _, c in ctl.sync.caches.items(CLUSTER_INST) if c.cloudlet_key == cloudlet.key]
    assert await label_keys(harness) == []


async def test_a_dead_controllers_cluster_operation_fails_cleanly(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    left = new_cluster(org, cloudlet, state=common_pb2.CREATE_REQUESTED)
    revision = await ctl.store.put(keys.object_store_key(left), codec.encode(left))
    await ctl.sync.wait_for_revision(revision)
    name = stream_key(left.key)
    op_id = "deadhost@10.0.0.9:55001#0123456789abcdef"
    await ctl.redis.xadd(name, {START: "", "id": op_id, "modRev": str(revision)})
    await ctl.redis.xadd(name, {"message": "Creating cluster", "id": op_id})

    recovery = Recovery(ctl.runtime, [InstRecovery(ctl.runtime, CLUSTER_INST)], interval=3600)
    assert await recovery.run_once() == 0  # one pass could be a lease being renewed
    assert await recovery.run_once() == 1
    stored = ctl.sync.caches.get(CLUSTER_INST, keys.key_string(left.key))
    assert stored is not None
    assert stored.state == common_pb2.CREATE_ERROR
    assert list(stored.errors) == [
        "controller deadhost@10.0.0.9:55001 is gone; operation abandoned in state CREATE_REQUESTED"
    ]
    lines, err = await collect(ctl.streams.StreamClusterInst(left.key, timeout=10))
    assert lines == ["Creating cluster"]
    assert err is not None


async def test_vm_app_inst_on_a_cloudlet(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org, max_vcpus=3)
    await put_flavor(ctl)
    vm = await create_app(
        ctl,
        org,
        "vm1",
        image_type=app_pb2.IMAGE_TYPE_QCOW,
        deployment="vm",
        image_path=f"https://artifacts.example.com/vm.qcow2#md5:{'0' * 32}",
    )
    named = new_app_inst(org, vm, cluster=cluster_key(org), cloudlet_key=cloudlet.key)
    _, err = await collect(app_insts(ctl).CreateAppInst(named))
    assert err is not None
    assert err.message == "Cluster name must be blank for App deployment type vm"

    inst = new_app_inst(org, vm, cloudlet_key=cloudlet.key)
    _, err = await collect(app_insts(ctl).CreateAppInst(inst))
    assert err is None, err
    stored = ctl.sync.caches.get(APP_INST, keys.key_string(inst.key))
    assert stored is not None
    assert stored.state == common_pb2.READY
    assert [p.public_port for p in stored.mapped_ports] == [80]
    assert stored.uri.startswith(f"ai1-{org}.c1-{org}.")
    assert stored.vm_flavor == "m1.small"
    assert list(refs_of(ctl, cloudlet).vm_app_insts) == [inst.key]
    # the VM's 2 vCPUs count against the cloudlet: a 2-vCPU cluster no longer fits
    _, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet)))
    assert isinstance(err, ResourceExhausted)
    assert err.message == (
        "not enough resources available: required vCPUs is 2 but only 1 out of 3 is available"
    )
    _, err = await collect(app_insts(ctl).DeleteAppInst(appinst_pb2.AppInst(key=inst.key)))
    assert err is None, err
    assert list(refs_of(ctl, cloudlet).vm_app_insts) == []


async def test_kubernetes_instances_and_namespaces(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)
    k8s = new_cluster(org, cloudlet, deployment="kubernetes", num_nodes=2)
    _, err = await collect(clusters(ctl).CreateClusterInst(k8s))
    assert err is None, err
    stored = ctl.sync.caches.get(CLUSTER_INST, keys.key_string(k8s.key))
    assert stored is not None
    assert [(p.Name, p.num_nodes) for p in stored.node_pools] == [("defaultpool", 2)]
    assert stored.num_masters == 1
    app = await create_app(ctl, org, deployment="kubernetes")
    first = new_app_inst(org, app, "ai1", cluster=k8s.key)
    _, err = await collect(app_insts(ctl).CreateAppInst(first))
    assert err is None, err
    inst = ctl.sync.caches.get(APP_INST, keys.key_string(first.key))
    assert inst is not None
    assert inst.namespace == f"ai1-{org}"
    second = new_app_inst(org, app, "ai2", cluster=k8s.key)
    _, err = await collect(app_insts(ctl).CreateAppInst(second))
    assert err is None, err
    third = new_app_inst(org, app, "ai3", cluster=k8s.key, namespace=f"ai1-{org}")
    _, err = await collect(app_insts(ctl).CreateAppInst(third))
    assert isinstance(err, FailedPrecondition)
    assert err.message == (
        f"cannot deploy another instance of App {keys.key_string(app.key)} to the same "
        f'namespace "ai1-{org}" in the same cluster'
    )


async def test_update_credentials_and_usage(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)
    k8s = new_cluster(org, cloudlet, deployment="kubernetes", num_nodes=1)
    docker = new_cluster(org, cloudlet, "cl2")
    for request in (k8s, docker):
        _, err = await collect(clusters(ctl).CreateClusterInst(request))
        assert err is None, err

    grow = clusterinst_pb2.ClusterInst(key=k8s.key, num_nodes=3, fields=["14"])
    lines, err = await collect(clusters(ctl).UpdateClusterInst(grow))
    assert err is None, err
    assert lines == ["Updating cluster", "Updated ClusterInst successfully"]
    stored = ctl.sync.caches.get(CLUSTER_INST, keys.key_string(k8s.key))
    assert stored is not None
    assert (stored.state, stored.num_nodes, stored.node_pools[0].num_nodes) == (
        common_pb2.READY,
        3,
        3,
    )
    assert ccrm.cluster_requests[-1].state == common_pb2.UPDATE_REQUESTED
    assert list(ccrm.cluster_requests[-1].fields) == ["14"]
    same = clusterinst_pb2.ClusterInst(key=k8s.key, num_nodes=3, fields=["14"])
    calls = len(ccrm.cluster_requests)
    lines, err = await collect(clusters(ctl).UpdateClusterInst(same))
    assert err is None, err
    assert lines == ["Updated ClusterInst successfully"]
    assert len(ccrm.cluster_requests) == calls  # nothing changed: no worker call
    wrong = clusterinst_pb2.ClusterInst(key=docker.key, num_nodes=2, fields=["14"])
    _, err = await collect(clusters(ctl).UpdateClusterInst(wrong))
    assert err is not None
    assert err.message == "Cannot update number of nodes in non-kubernetes cluster"

    creds = await clusters(ctl).GetClusterCredentials(
        clusterinst_pb2.ClusterCredentialsRequest(key=k8s.key), timeout=10
    )
    assert creds.message == "kubeconfig of cl1"
    usage = [
        u
        async for u in clusters(ctl).ShowClusterResourceUsage(
            clusterinst_pb2.ClusterInst(key=k8s.key), timeout=10
        )
    ]
    # no AppInsts yet: nothing used of 3 nodes of the m1.small infra flavor
    assert [(r.name, r.value, r.infra_max_value) for r in usage[0].total_resources] == [
        ("Disk", 0, 120),
        ("RAM", 0, 12288),
        ("vCPUs", 0, 6),
    ]


async def test_zone_placement_by_free_resources(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    zone = cloudletkey_pb2.ZoneKey(organization=org, name="z1")
    await zone_pb2_grpc.ZoneApiStub(ctl.channel).CreateZone(zone_pb2.Zone(key=zone), timeout=10)
    sites = [await ready_cloudlet(ctl, org, f"c{i}", max_vcpus=6, zone="z1") for i in range(2)]
    await put_flavor(ctl)
    await put_flavor(ctl, "x1.large", vcpus=4)
    placed = []
    for i, flavor in enumerate(["x1.large", "x1.small", "x1.small"]):
        request = clusterinst_pb2.ClusterInst(
            key=cluster_key(org, f"cl{i}"),
            zone_key=zone,
            flavor=flavor_pb2.FlavorKey(name=flavor),
            deployment="docker",
        )
        _, err = await collect(clusters(ctl).CreateClusterInst(request))
        assert err is None, err
        stored = ctl.sync.caches.get(CLUSTER_INST, keys.key_string(request.key))
        assert stored is not None
        placed.append(stored.cloudlet_key.name)
    # the 4-vCPU cluster goes to c0 (ties by key), the next ones to whichever has more room
    assert placed == ["c0", "c1", "c1"]
    oversized = clusterinst_pb2.ClusterInst(
        key=cluster_key(org, "big"),
        zone_key=zone,
        flavor=flavor_pb2.FlavorKey(name="x1.large"),
        deployment="docker",
    )
    lines, err = await collect(clusters(ctl).CreateClusterInst(oversized))
    assert isinstance(err, ResourceExhausted)
    assert err.message == "not enough resources available to create the cluster"
    assert [line.split(":")[0] for line in lines] == [
        "potential cloudlet 0 not enough resources available",
        "potential cloudlet 1 not enough resources available",
    ]
    assert sorted(len(refs_of(ctl, s).cluster_insts) for s in sites) == [1, 2]


async def test_concurrent_cluster_creates_never_exceed_the_cloudlet(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl_a = await harness.start()
    ctl_b = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl_a, org, max_vcpus=6, num_dynamic_ips=3)
    await put_flavor(ctl_a)
    _, revision = await ctl_a.store.range("1/", keys_only=True)
    await ctl_b.sync.wait_for_revision(revision)

    async def create(i: int) -> Exception | None:
        ctl = (ctl_a, ctl_b)[i % 2]
        access = common_pb2.IP_ACCESS_DEDICATED if i < 3 else common_pb2.IP_ACCESS_SHARED
        request = new_cluster(org, cloudlet, f"cl{i}", ip_access=access)
        _, err = await collect(clusters(ctl).CreateClusterInst(request))
        return err

    async with asyncio.timeout(60):
        errors = await asyncio.gather(*(create(i) for i in range(6)))
    assert len([e for e in errors if e is None]) == 3  # 6 vCPUs, 2 per cluster
    assert all(isinstance(e, ResourceExhausted) for e in errors if e is not None), errors
    refs = refs_of(ctl_a, cloudlet)
    assert len(refs.cluster_insts) == 3
    # at most 2 of the 3 dedicated clusters got an IP (one is kept for the global LB)
    dedicated = [
        c
        for _, c in ctl_a.sync.caches.items(CLUSTER_INST)
        if c.cloudlet_key == cloudlet.key and c.allocated_ip == "dynamic"
    ]
    assert refs.used_dynamic_ips == len(dedicated) <= 2


async def test_failed_app_inst_delete_keeps_its_refs_until_retried(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)
    _, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet)))
    assert err is None, err
    app = await create_app(ctl, org)
    inst = new_app_inst(org, app, cluster=cluster_key(org))
    _, err = await collect(app_insts(ctl).CreateAppInst(inst))
    assert err is None, err
    ccrm.fail_app_delete = "delete app inst failed"
    _, err = await collect(app_insts(ctl).DeleteAppInst(appinst_pb2.AppInst(key=inst.key)))
    assert isinstance(err, FailedPrecondition)
    assert err.message == "delete app inst failed"
    stored = ctl.sync.caches.get(APP_INST, keys.key_string(inst.key))
    assert stored is not None
    assert stored.state == common_pb2.DELETE_ERROR
    assert dict(refs_of(ctl, cloudlet).root_lb_ports) == {80: 1}
    airefs = ctl.sync.caches.get(APP_INST_REFS, keys.key_string(app.key))
    assert airefs is not None
    assert dict(airefs.delete_requested_insts) == {}
    ccrm.fail_app_delete = ""
    _, err = await collect(app_insts(ctl).DeleteAppInst(appinst_pb2.AppInst(key=inst.key)))
    assert err is None, err
    assert dict(refs_of(ctl, cloudlet).root_lb_ports) == {}


async def test_cluster_delete_auto_deletes_sidecars(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)
    _, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet)))
    assert err is None, err
    sidecar = await create_app(
        ctl, "edgecloudorg", f"sidecar-{org}", del_opt=app_pb2.AUTO_DELETE, access_ports=""
    )
    unnamed = new_app_inst("edgecloudorg", sidecar, "sc1")
    _, err = await collect(app_insts(ctl).CreateAppInst(unnamed))
    assert err is not None
    assert err.message == (
        "Sidecar AppInst (AutoDelete App) must specify the Cluster name and organization to "
        "deploy to"
    )
    inst = new_app_inst("edgecloudorg", sidecar, "sc1", cluster=cluster_key(org))
    _, err = await collect(app_insts(ctl).CreateAppInst(inst))
    assert err is None, err
    lines, err = await collect(clusters(ctl).DeleteClusterInst(new_cluster(org, cloudlet)))
    assert err is None, err
    assert "Deleting auto-delete AppInst sc1" in lines
    assert lines[-1] == "Deleted ClusterInst successfully"
    assert ctl.sync.caches.get(APP_INST, keys.key_string(inst.key)) is None
    assert list(refs_of(ctl, cloudlet).cluster_insts) == []


async def test_automatic_choice_prefers_an_owned_cluster(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)
    _, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet)))
    assert err is None, err
    app = await create_app(ctl, org)
    inst = new_app_inst(org, app, cloudlet_key=cloudlet.key)
    lines, err = await collect(app_insts(ctl).CreateAppInst(inst))
    assert err is None, err
    assert "Chose cluster cl1" in lines
    stored = ctl.sync.caches.get(APP_INST, keys.key_string(inst.key))
    assert stored is not None
    assert stored.cluster_key == cluster_key(org)
    assert refs_of(ctl, cloudlet).reserved_auto_cluster_ids == 0


async def test_refresh_and_update_app_inst(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)
    _, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet)))
    assert err is None, err
    app = await create_app(ctl, org)
    inst = new_app_inst(org, app, cluster=cluster_key(org))
    _, err = await collect(app_insts(ctl).CreateAppInst(inst))
    assert err is None, err

    everything = appinst_pb2.AppInst(app_key=app.key, update_multiple=True)
    lines, err = await collect(app_insts(ctl).RefreshAppInst(everything))
    assert err is None, err
    assert lines == ["Completed: 1 of 1 AppInsts.  Updated: 0 Skipped: 1 Failed: 0"]
    calls = len(ccrm.app_requests)
    forced = appinst_pb2.AppInst(key=inst.key, force_update=True)
    lines, err = await collect(app_insts(ctl).RefreshAppInst(forced))
    assert err is None, err
    assert lines[-1] == "Completed: 1 of 1 AppInsts.  Updated: 1 Skipped: 0 Failed: 0"
    assert ccrm.app_requests[calls].state == common_pb2.UPDATE_REQUESTED

    power = appinst_pb2.AppInst(key=inst.key, power_state=appinst_pb2.POWER_OFF, fields=["31"])
    _, err = await collect(app_insts(ctl).UpdateAppInst(power))
    assert err is not None
    assert err.message == "Updating powerstate is only supported for VM deployment"
    both = appinst_pb2.AppInst(
        key=inst.key, power_state=appinst_pb2.POWER_OFF, fields=["31", "100"]
    )
    _, err = await collect(app_insts(ctl).UpdateAppInst(both))
    assert err is not None
    assert err.message == "If powerstate is to be updated, then no other fields can be modified"
    tags = appinst_pb2.AppInst(key=inst.key, tags={"team": "a"}, fields=["100"])
    lines, err = await collect(app_insts(ctl).UpdateAppInst(tags))
    assert err is None, err
    assert lines[-1] == "Updated AppInst successfully"
    stored = ctl.sync.caches.get(APP_INST, keys.key_string(inst.key))
    assert stored is not None
    assert (stored.state, dict(stored.tags)) == (common_pb2.READY, {"team": "a"})
