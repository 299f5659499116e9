"""Resource usage and flavor mapping RPCs through gRPC, on real etcd and Redis (issue 4).

The cloudlets are created through a CCRM test server; their CloudletInfo (infra flavors,
resources snapshot) and quotas are then set the way a CRM report or an operator would.
"""

from __future__ import annotations

from typing import Any

import grpc
from edgeproto import (
    app_pb2,
    app_pb2_grpc,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    flavor_pb2,
    flavor_pb2_grpc,
    resources_pb2,
    zone_pb2,
    zone_pb2_grpc,
)

from edge_cloud.errors import InvalidArgument, NotFound, from_rpc_error
from edge_cloud.objects import keys, registry
from tests.integration.controller.cloudlet_harness import (
    Controller,
    ControllerHarness,
    collect,
    harness,
    unique_org,
)
from tests.integration.controller.clusterinst_harness import (
    InstCcrm,
    app_insts,
    ccrm,
    cluster_key,
    clusters,
    create_app,
    edit,
    new_app_inst,
    new_cluster,
    put_flavor,
    ready_cloudlet,
)

__all__ = ["ccrm", "harness"]

CLOUDLET = registry.by_class(cloudlet_pb2.Cloudlet)
CLOUDLET_INFO = registry.by_class(cloudlet_pb2.CloudletInfo)
T4 = "nvidia-t4"


async def rpc_error(call: Any) -> Exception:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return from_rpc_error(err)
    raise AssertionError("the call succeeded")


async def stream_error(call: Any) -> Exception:
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as err:
        return from_rpc_error(err)
    raise AssertionError("the call succeeded")


def rows(usage: cloudlet_pb2.CloudletResourceUsage) -> list[tuple[str, int, int, int, str]]:
    return [(r.name, r.value, r.infra_max_value, r.quota_max_value, r.units) for r in usage.info]


async def usage_of(
    ctl: Controller, key: cloudletkey_pb2.CloudletKey, *, infra: bool = False
) -> cloudlet_pb2.CloudletResourceUsage:
    return await ctl.cloudlets.GetCloudletResourceUsage(
        cloudlet_pb2.CloudletResourceUsage(key=key, infra_usage=infra), timeout=10
    )


async def test_cloudlet_usage_follows_clusters_and_vm_apps(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org, max_vcpus=8, max_ram=16384)
    other = await ready_cloudlet(ctl, org, "c2")
    await put_flavor(ctl)  # x1.small: 2 vCPUs, 1024 MB, 10 GB

    def add_quota(cl: cloudlet_pb2.Cloudlet) -> None:
        cl.resource_quotas.add(name="RAM", value=8192, alert_threshold=70)

    await edit(ctl, CLOUDLET, cloudlet.key, add_quota)
    before = await usage_of(ctl, cloudlet.key)
    assert before.key == cloudlet.key
    assert not before.infra_usage
    assert rows(before) == [("RAM", 0, 16384, 8192, "MB"), ("vCPUs", 0, 8, 0, "")]
    assert [r.alert_threshold for r in before.info] == [70, 0]
    # free vCPUs 8 x1000 and free RAM min(16384, 8192) MB, averaged
    assert before.resource_score == (8000 + 8192) // 2

    _, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet)))
    assert err is None, err
    after_cluster = await usage_of(ctl, cloudlet.key)
    # the node takes its whole infra flavor, m1.small (2 vCPUs, 4096 MB, 40 GB), not the
    # 1024 MB / 10 GB the x1.small flavor asks for (controller.md §4.1)
    assert rows(after_cluster) == [
        ("Disk", 40, 0, 0, "GB"),
        ("RAM", 4096, 16384, 8192, "MB"),
        ("vCPUs", 2, 8, 0, ""),
    ]
    assert after_cluster.resource_score == (6000 + 4096) // 2

    # an AppInst on the cluster takes from the cluster, not the cloudlet; a VM takes from both
    app = await create_app(ctl, org)
    _, err = await collect(
        app_insts(ctl).CreateAppInst(new_app_inst(org, app, cluster=cluster_key(org)))
    )
    assert err is None, err
    assert rows(await usage_of(ctl, cloudlet.key)) == rows(after_cluster)
    vm = await create_app(
        ctl,
        org,
        "vm1",
        image_type=app_pb2.IMAGE_TYPE_QCOW,
        deployment="vm",
        image_path=f"https://artifacts.example.com/vm.qcow2#md5:{'0' * 32}",
    )
    vm_inst = new_app_inst(org, vm, "vmi", cloudlet_key=cloudlet.key)
    _, err = await collect(app_insts(ctl).CreateAppInst(vm_inst))
    assert err is None, err
    assert rows(await usage_of(ctl, cloudlet.key)) == [
        ("Disk", 80, 0, 0, "GB"),
        ("RAM", 8192, 16384, 8192, "MB"),
        ("vCPUs", 4, 8, 0, ""),
    ]
    _, err = await collect(app_insts(ctl).DeleteAppInst(appinst_pb2.AppInst(key=vm_inst.key)))
    assert err is None, err
    assert rows(await usage_of(ctl, cloudlet.key)) == rows(after_cluster)

    # infra_usage: what the infra reports, limits merged in the same way
    def report(info: cloudlet_pb2.CloudletInfo) -> None:
        for res in info.resources_snapshot.info:
            res.value = {"vCPUs": 3, "RAM": 3000}[res.name]
        info.resources_snapshot.info.add(name="Instances", value=4, description="VMs")

    await edit(ctl, CLOUDLET_INFO, cloudlet.key, report)
    infra = await usage_of(ctl, cloudlet.key, infra=True)
    assert infra.infra_usage
    assert rows(infra) == [
        ("Instances", 4, 0, 0, ""),
        ("RAM", 3000, 16384, 8192, "MB"),
        ("vCPUs", 3, 8, 0, ""),
    ]
    assert infra.resource_score == (5000 + 5192) // 2

    # Show: every matching cloudlet, by key; a cloudlet without limits scores the maximum
    shown = [
        u
        async for u in ctl.cloudlets.ShowCloudletResourceUsage(
            cloudlet_pb2.Cloudlet(key=cloudletkey_pb2.CloudletKey(organization=org)), timeout=10
        )
    ]
    assert [u.key.name for u in shown] == ["c1", "c2"]
    assert rows(shown[0]) == rows(after_cluster)
    assert rows(shown[1]) == []
    assert shown[1].resource_score == 2**64 - 1
    assert shown[1].key == other.key

    missing = cloudletkey_pb2.CloudletKey(organization=org, name="nope")
    err = await rpc_error(usage_of(ctl, missing))
    assert isinstance(err, NotFound)
    assert err.message == f"Cloudlet key {keys.key_string(missing)} not found"


async def test_gpu_usage(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await ready_cloudlet(ctl, org, "c2")  # no GPU flavors: not in the GPU stream

    def offer_gpus(info: cloudlet_pb2.CloudletInfo) -> None:
        info.flavors.add(
            name="g1.large",
            vcpus=8,
            ram=16384,
            disk=80,
            gpus=[resources_pb2.GPUResource(model_id=T4, count=1, vendor="nvidia", memory=16)],
        )
        info.resources_snapshot.info.add(name=T4, type="gpu", infra_max_value=4)

    await edit(ctl, CLOUDLET_INFO, cloudlet.key, offer_gpus)
    gpu_nodes = resources_pb2.NodeResources(
        vcpus=2, ram=1024, gpus=[resources_pb2.GPUResource(model_id=T4, count=1)]
    )
    request = new_cluster(org, cloudlet, "gpucl", flavor=None, node_resources=gpu_nodes)
    _, err = await collect(clusters(ctl).CreateClusterInst(request))
    assert err is None, err

    filt = cloudlet_pb2.Cloudlet(key=cloudletkey_pb2.CloudletKey(organization=org))
    gpus = [u async for u in ctl.cloudlets.ShowCloudletGPUUsage(filt, timeout=10)]
    assert [u.key for u in gpus] == [cloudlet.key]
    (entry,) = gpus[0].gpus
    assert (entry.gpu.model_id, entry.gpu.vendor, entry.gpu.memory, entry.gpu.count) == (
        T4,
        "nvidia",
        16,
        0,
    )
    assert (entry.usage.name, entry.usage.type, entry.usage.value) == (T4, "gpu", 1)
    assert entry.usage.infra_max_value == 4
    usage = await usage_of(ctl, cloudlet.key)
    by_name = {(r.type, r.name): (r.value, r.infra_max_value) for r in usage.info}
    assert by_name[("", "GPUs")] == (1, 0)
    assert by_name[("gpu", T4)] == (1, 4)

    # a Kubernetes cluster as a cloudlet: limits and GPU models come from its node pools
    pools = await ready_cloudlet(ctl, org, "c3")

    def node_pools(info: cloudlet_pb2.CloudletInfo) -> None:
        del info.flavors[:]
        nodes = resources_pb2.NodeResources(
            vcpus=4,
            ram=8192,
            disk=50,
            gpus=[resources_pb2.GPUResource(model_id=T4, count=1, vendor="nvidia")],
        )
        info.node_pools.add(Name="gpupool", num_nodes=2, node_resources=nodes)

    await edit(ctl, CLOUDLET_INFO, pools.key, node_pools)
    pool_usage = await usage_of(ctl, pools.key)
    assert [(r.type, r.name, r.value, r.infra_max_value) for r in pool_usage.info] == [
        ("", "Disk", 0, 100),
        ("", "GPUs", 0, 2),
        ("", "RAM", 0, 16384),
        ("gpu", T4, 0, 2),  # rows by resource key: gpu/nvidia-t4 sorts after upper case
        ("", "vCPUs", 0, 8),
    ]
    gpus = [u async for u in ctl.cloudlets.ShowCloudletGPUUsage(filt, timeout=10)]
    assert [u.key.name for u in gpus] == ["c1", "c3"]
    assert [(g.gpu.model_id, g.usage.value, g.usage.infra_max_value) for g in gpus[1].gpus] == [
        (T4, 0, 2)
    ]


async def test_flavor_match_and_flavors_for_zone(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    zone = cloudletkey_pb2.ZoneKey(organization=org, name="z1")
    await zone_pb2_grpc.ZoneApiStub(ctl.channel).CreateZone(zone_pb2.Zone(key=zone), timeout=10)
    cloudlet = await ready_cloudlet(ctl, org, zone="z1")
    await put_flavor(ctl)
    await put_flavor(ctl, "x1.large", vcpus=4)
    await put_flavor(ctl, "x1.huge", vcpus=32)

    async def match(flavor: str, key: cloudletkey_pb2.CloudletKey = cloudlet.key) -> Any:
        return await ctl.cloudlets.FindFlavorMatch(
            cloudlet_pb2.FlavorMatch(key=key, flavor_name=flavor), timeout=10
        )

    # the smallest infra flavor that is big enough, as a cluster create would choose
    assert (await match("x1.small")).flavor_name == "m1.small"
    found = await match("x1.large")
    assert (found.key, found.flavor_name, found.availability_zone) == (
        cloudlet.key,
        "m1.large",
        "",
    )
    err = await rpc_error(match("x1.huge"))
    assert isinstance(err, NotFound)
    assert err.message == (
        "failed to find flavor match for c1, no suitable infra flavor found for requested node "
        "resources, 3 with not enough vCPUs"
    )
    err = await rpc_error(match("nope"))
    assert isinstance(err, NotFound)
    assert err.message == 'Flavor key {"name":"nope"} not found'
    missing = cloudletkey_pb2.CloudletKey(organization=org, name="gone")
    err = await rpc_error(match("x1.small", missing))
    assert isinstance(err, NotFound)
    assert err.message == f"Cloudlet key {keys.key_string(missing)} not found"

    def gpu_zone(info: cloudlet_pb2.CloudletInfo) -> None:
        info.availability_zones.add(name="nova")
        info.availability_zones.add(name="GPU-zone")
        info.flavors.add(name="g1", vcpus=4, ram=4096, disk=40)
        # the same size with the GPU: the match must be exact, so g1 (no GPU) never fits
        info.flavors.add(
            name="g1.t4",
            vcpus=4,
            ram=4096,
            disk=40,
            gpus=[resources_pb2.GPUResource(model_id=T4, count=1)],
        )

    await edit(ctl, CLOUDLET_INFO, cloudlet.key, gpu_zone)
    gpu_flavor = flavor_pb2.Flavor(
        key=flavor_pb2.FlavorKey(name="x1.gpu"),
        vcpus=4,
        ram=2048,
        disk=10,
        gpus=[resources_pb2.GPUResource(model_id=T4, count=1, vendor="nvidia", memory=16)],
    )
    await flavor_pb2_grpc.FlavorApiStub(ctl.channel).CreateFlavor(gpu_flavor, timeout=10)
    gpu_match = await match("x1.gpu")
    assert (gpu_match.flavor_name, gpu_match.availability_zone) == ("g1.t4", "GPU-zone")
    # and a CPU flavor of that size is not put on the GPU flavor
    assert (await match("x1.large")).flavor_name == "g1"

    names = [k.name async for k in ctl.cloudlets.ShowFlavorsForZone(zone, timeout=10)]
    assert names == ["x1.gpu", "x1.large", "x1.small"]
    empty = cloudletkey_pb2.ZoneKey(organization=org, name="nothing-here")
    assert [k async for k in ctl.cloudlets.ShowFlavorsForZone(empty, timeout=10)] == []


async def test_zones_for_app_deployment(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    zones = zone_pb2_grpc.ZoneApiStub(ctl.channel)
    for name in ("small", "big"):
        key = cloudletkey_pb2.ZoneKey(organization=org, name=name)
        await zones.CreateZone(zone_pb2.Zone(key=key), timeout=10)
    await ready_cloudlet(ctl, org, "c-small", max_vcpus=2, zone="small")
    await ready_cloudlet(ctl, org, "c-big", max_vcpus=16, zone="big")
    await ready_cloudlet(ctl, org, "c-nozone")
    await put_flavor(ctl, "x1.large", vcpus=4)
    await put_flavor(ctl, "x1.huge", vcpus=32)
    api = app_pb2_grpc.AppApiStub(ctl.channel)

    async def zones_for(**kw: Any) -> list[str]:
        app = app_pb2.App(**kw.pop("app"))
        request = app_pb2.DeploymentZoneRequest(app=app, **kw)
        return [z.name async for z in api.ShowZonesForAppDeployment(request, timeout=10)]

    large = flavor_pb2.FlavorKey(name="x1.large")
    docker = {"deployment": "docker", "default_flavor": large}
    # without a dry run only the flavor mapping counts; cloudlets without a zone are left out
    assert await zones_for(app=docker) == ["big", "small"]
    # a dry run checks room for a new cluster: 4 vCPUs do not fit in 2
    assert await zones_for(app=docker, dry_run_deploy=True) == ["big"]
    kube = {"deployment": "kubernetes", "default_flavor": large}
    # one 1-vCPU master plus 3 nodes of 4 fits in 16; plus 4 nodes does not
    assert await zones_for(app=kube, dry_run_deploy=True, num_nodes=3) == ["big"]
    assert await zones_for(app=kube, dry_run_deploy=True, num_nodes=4) == []
    huge = {"deployment": "docker", "default_flavor": flavor_pb2.FlavorKey(name="x1.huge")}
    assert await zones_for(app=huge) == []
    vm = {"deployment": "vm", "default_flavor": large}
    assert await zones_for(app=vm, dry_run_deploy=True) == ["big"]
    # a free reservable docker cluster takes the instance whatever room the cloudlet has left
    await put_flavor(ctl)
    small = ctl.cloudlet(cloudletkey_pb2.CloudletKey(organization=org, name="c-small"))
    assert small is not None
    shared = new_cluster("edgecloudorg", small, "shared1", reservable=True)
    _, err = await collect(clusters(ctl).CreateClusterInst(shared))
    assert err is None, err
    assert await zones_for(app=docker, dry_run_deploy=True) == ["big", "small"]
    assert await zones_for(app=kube, dry_run_deploy=True, num_nodes=3) == ["big"]

    err = await stream_error(
        api.ShowZonesForAppDeployment(app_pb2.DeploymentZoneRequest(), timeout=10)
    )
    assert isinstance(err, InvalidArgument)
    assert err.message == "No flavor specified for App"
    no_deployment = app_pb2.DeploymentZoneRequest(
        app=app_pb2.App(default_flavor=large), dry_run_deploy=True
    )
    err = await stream_error(api.ShowZonesForAppDeployment(no_deployment, timeout=10))
    assert isinstance(err, InvalidArgument)
    assert err.message == "No deployment found on candidate App"
    unknown = app_pb2.DeploymentZoneRequest(
        app=app_pb2.App(default_flavor=flavor_pb2.FlavorKey(name="nope"))
    )
    err = await stream_error(api.ShowZonesForAppDeployment(unknown, timeout=10))
    assert isinstance(err, NotFound)
    assert err.message == 'Flavor key {"name":"nope"} not found'


async def test_cluster_usage_follows_app_insts(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)  # x1.small maps to the m1.small infra flavor: 2 vCPUs, 4096 MB, 40 GB
    k8s = new_cluster(org, cloudlet, "k8s", deployment="kubernetes", num_nodes=2)
    docker = new_cluster(org, cloudlet, "dock")
    for request in (k8s, docker):
        _, err = await collect(clusters(ctl).CreateClusterInst(request))
        assert err is None, err

    async def usages() -> dict[str, clusterinst_pb2.ClusterResourceUsage]:
        filt = clusterinst_pb2.ClusterInst(key=cluster_pb2.ClusterKey(organization=org))
        return {
            u.key.name: u async for u in clusters(ctl).ShowClusterResourceUsage(filt, timeout=10)
        }

    def table(found: Any) -> list[tuple[str, int, int]]:
        return [(r.name, r.value, r.infra_max_value) for r in found]

    before = await usages()
    assert list(before) == ["dock", "k8s"]
    assert table(before["k8s"].cpu_pools_resources) == [
        ("Disk", 0, 80),
        ("RAM", 0, 8192),
        ("vCPUs", 0, 4),
    ]
    assert table(before["k8s"].gpu_pools_resources) == []
    assert before["k8s"].resource_score == (4000 + 8192) // 2
    assert before["k8s"].cpu_pools_resource_score == before["k8s"].resource_score
    assert before["k8s"].gpu_pools_resource_score == 0

    kapp = await create_app(ctl, org, "kapp", deployment="kubernetes")
    dapp = await create_app(ctl, org, "dapp")
    for name, app, cluster in (("ai1", kapp, k8s.key), ("ai2", dapp, docker.key)):
        _, err = await collect(app_insts(ctl).CreateAppInst(new_app_inst(org, app, name, cluster)))
        assert err is None, err
    after = await usages()
    # the docker AppInst takes the x1.small node resources of the whole m1.small node
    assert table(after["dock"].total_resources) == [
        ("Disk", 10, 40),
        ("RAM", 1024, 4096),
        ("vCPUs", 2, 2),
    ]
    assert after["dock"].resource_score == (0 + 3072) // 2
    # the Kubernetes AppInst's CPU-pool request, against two m1.small nodes
    expected = [("Disk", 10, 80), ("RAM", 1024, 8192), ("vCPUs", 2, 4)]
    assert table(after["k8s"].cpu_pools_resources) == expected
    assert table(after["k8s"].total_resources) == expected
    assert after["k8s"].resource_score == (2000 + 7168) // 2
    assert after["k8s"].cloudlet_key == cloudlet.key
