"""AppInst/ClusterInst update checks, infra flavor matching and placement order (issue 4).

Through gRPC on real etcd and Redis with a CCRM test server, as the other controller tests:
updates must refuse fields the original does not let users change and must re-check that new
resources fit; infra flavors must match GPUs and optional resources exactly; placement must
count VM AppInsts when ranking cloudlets.
"""

from __future__ import annotations

from typing import Any

import pytest
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    resources_pb2,
    restagtable_pb2,
    restagtable_pb2_grpc,
    zone_pb2,
    zone_pb2_grpc,
)

from edge_cloud.errors import InvalidArgument, NotFound, ResourceExhausted
from edge_cloud.objects import keys, registry
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


def stored_cluster(ctl: Controller, request: clusterinst_pb2.ClusterInst) -> Any:
    found = ctl.sync.caches.get(CLUSTER_INST, keys.key_string(request.key))
    assert found is not None
    return found


def stored_inst(ctl: Controller, request: appinst_pb2.AppInst) -> Any:
    found = ctl.sync.caches.get(APP_INST, keys.key_string(request.key))
    assert found is not None
    return found


def pool(name: str, nodes: int, vcpus: int, ram: int) -> Any:
    return clusterinst_pb2.ClusterInst(
        node_pools=[
            {
                "Name": name,
                "num_nodes": nodes,
                "node_resources": resources_pb2.NodeResources(vcpus=vcpus, ram=ram, disk=10),
            }
        ]
    ).node_pools[0]


async def test_cluster_update_checks_fields_and_refits(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org, max_vcpus=10)
    await put_flavor(ctl)  # x1.small: 2 vCPUs, 1024 MB
    k8s = new_cluster(org, cloudlet, deployment="kubernetes", num_nodes=1)
    docker = new_cluster(org, cloudlet, "cl2")
    for request in (k8s, docker):
        _, err = await collect(clusters(ctl).CreateClusterInst(request))
        assert err is None, err
    # master (1 vCPU asked, its m1.small infra flavor has 2) + 1 node x 2 + docker 2 = 6 of
    # 10 vCPUs used: a VM takes its whole infra flavor (controller.md §4.1)

    async def update(**values: Any) -> tuple[list[str], Exception | None]:
        return await collect(clusters(ctl).UpdateClusterInst(clusterinst_pb2.ClusterInst(**values)))

    _, err = await update(key=k8s.key, deployment="docker", fields=["15"])
    assert isinstance(err, InvalidArgument)
    assert err.message == "specified field(s) Deployment cannot be modified"
    _, err = await update(key=k8s.key, skip_crm_cleanup_on_timeout=True, fields=["53"])
    assert err is None, err
    assert stored_cluster(ctl, k8s).skip_crm_cleanup_on_timeout

    _, err = await update(key=k8s.key, num_nodes=3, fields=["14"])  # +4: 10 of 10
    assert err is None, err
    _, err = await update(key=k8s.key, num_nodes=4, fields=["14"])  # +2 more: 12 of 10
    assert isinstance(err, ResourceExhausted)
    assert err.message == (
        "not enough resources available: required vCPUs is 2 but only 0 out of 10 is available"
    )
    assert stored_cluster(ctl, k8s).num_nodes == 3
    _, err = await update(key=k8s.key, num_nodes=1, fields=["14"])  # shrinking always fits
    assert err is None, err
    assert (stored_cluster(ctl, k8s).num_nodes, stored_cluster(ctl, k8s).state) == (
        1,
        common_pb2.READY,
    )

    # a bigger pool (m1.large instead of m1.small, +2 vCPUs: 8 of 10) gets its infra
    # flavor chosen again
    _, err = await update(key=k8s.key, node_pools=[pool("cpupool", 1, 4, 8192)], fields=["46"])
    assert err is None, err
    grown = stored_cluster(ctl, k8s)
    assert (grown.node_pools[0].node_resources.infra_node_flavor, grown.node_flavor) == (
        "m1.large",
        "m1.large",
    )
    assert ccrm.cluster_requests[-1].state == common_pb2.UPDATE_REQUESTED
    _, err = await update(key=k8s.key, node_pools=[pool("p2", 1, 0, 1024)], fields=["46"])
    assert isinstance(err, InvalidArgument)
    assert err.message == "pool p2 missing vcpus"
    _, err = await update(key=k8s.key, node_pools=[pool("cpupool", 1, 64, 1024)], fields=["46"])
    assert isinstance(err, InvalidArgument)
    assert err.message == (
        "failed to select infra flavor for pool cpupool, no suitable infra flavor found for "
        "requested node resources, 3 with not enough vCPUs"
    )

    _, err = await update(key=docker.key, enable_ipv6=True, fields=["37"])
    assert isinstance(err, InvalidArgument)
    assert err.message == "cloudlet platform does not support IPv6"


async def test_app_inst_update_checks_fields_and_cluster_fit(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)  # x1.small: 2 vCPUs, 1024 MB
    await put_flavor(ctl, "x1.large", vcpus=4)  # 4 vCPUs, 2048 MB
    await put_flavor(ctl, "x1.huge", vcpus=6)
    cluster = new_cluster(org, cloudlet, flavor=flavor_pb2.FlavorKey(name="x1.large"))
    _, err = await collect(clusters(ctl).CreateClusterInst(cluster))
    assert err is None, err
    app = await create_app(ctl, org)
    other = await create_app(ctl, org, "app2")
    first = new_app_inst(org, app, "ai1", cluster=cluster_key(org))
    second = new_app_inst(org, other, "ai2", cluster=cluster_key(org))
    for inst in (first, second):
        _, err = await collect(app_insts(ctl).CreateAppInst(inst))
        assert err is None, err
    # the cluster's 4 vCPUs / 2048 MB are now fully reserved by two x1.small instances

    async def update(**values: Any) -> tuple[list[str], Exception | None]:
        return await collect(app_insts(ctl).UpdateAppInst(appinst_pb2.AppInst(**values)))

    _, err = await update(key=first.key, app_key=app.key, fields=["44"])
    assert isinstance(err, InvalidArgument)
    assert err.message == "specified field(s) App Key cannot be modified"
    _, err = await update(key=first.key, obj_id="forged", fields=["49", "29"])
    assert isinstance(err, InvalidArgument)
    assert err.message == "specified field(s) Health Check,Obj Id cannot be modified"

    calls = len(ccrm.app_requests)
    _, err = await update(
        key=first.key, flavor=flavor_pb2.FlavorKey(name="x1.large"), fields=["12"]
    )
    assert isinstance(err, ResourceExhausted)
    assert err.message == (
        f"not enough resources in cluster {keys.key_string(cluster.key)}, want 4 vcpus but only "
        "2 free, want 2048MB memory but only 1024MB free"
    )
    assert stored_inst(ctl, first).node_resources.vcpus == 2
    assert len(ccrm.app_requests) == calls  # refused before any worker call
    _, err = await update(key=first.key, flavor=flavor_pb2.FlavorKey(name="nope"), fields=["12"])
    assert isinstance(err, NotFound)
    assert err.message == 'Flavor key {"name":"nope"} not found'

    smaller = resources_pb2.NodeResources(vcpus=1, ram=512)
    lines, err = await update(key=first.key, node_resources=smaller, fields=["56"])
    assert err is None, err
    assert lines[-1] == "Updated AppInst successfully"
    assert (stored_inst(ctl, first).node_resources.vcpus, stored_inst(ctl, first).state) == (
        1,
        common_pb2.READY,
    )
    assert ccrm.app_requests[-1].state == common_pb2.UPDATE_REQUESTED
    # 1 vCPU freed: the other instance may now grow to 3, not to 4
    _, err = await update(
        key=second.key, node_resources=resources_pb2.NodeResources(vcpus=4, ram=512), fields=["56"]
    )
    assert isinstance(err, ResourceExhausted)
    _, err = await update(
        key=second.key, node_resources=resources_pb2.NodeResources(vcpus=3, ram=512), fields=["56"]
    )
    assert err is None, err
    _, err = await update(
        key=second.key, node_resources=resources_pb2.NodeResources(vcpus=0, ram=512), fields=["56"]
    )
    assert isinstance(err, InvalidArgument)
    assert err.message == (
        "invalid NodeResources, vcpus must be greater than 0, or infra node flavor must be "
        "specified"
    )

    vm = await create_app(
        ctl,
        org,
        "vm1",
        image_type=app_pb2.IMAGE_TYPE_QCOW,
        deployment="vm",
        image_path=f"https://artifacts.example.com/vm.qcow2#md5:{'0' * 32}",
    )
    vm_inst = new_app_inst(org, vm, "vm-ai", cloudlet_key=cloudlet.key)
    _, err = await collect(app_insts(ctl).CreateAppInst(vm_inst))
    assert err is None, err
    _, err = await update(
        key=vm_inst.key, flavor=flavor_pb2.FlavorKey(name="x1.huge"), fields=["12"]
    )
    assert isinstance(err, InvalidArgument)
    assert err.message == "cannot modify resources allocated to VM deployments"
    _, err = await update(key=vm_inst.key, enable_ipv6=True, fields=["48"])
    assert isinstance(err, InvalidArgument)
    assert err.message == "cloudlet platform does not support IPv6"


async def test_infra_flavor_matches_gpus_exactly(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)  # m1.small (2/4096/40), m1.xlarge (16/32768/100)
    await put_flavor(ctl)
    gpu_nodes = resources_pb2.NodeResources(
        vcpus=2, ram=1024, gpus=[resources_pb2.GPUResource(model_id=T4, count=1)]
    )
    no_gpu = new_cluster(org, cloudlet, "gpu0", flavor=None, node_resources=gpu_nodes)
    _, err = await collect(clusters(ctl).CreateClusterInst(no_gpu))
    assert isinstance(err, InvalidArgument)
    assert err.message == (
        "no suitable infra flavor found for requested node resources, 3 with not enough nvidia-t4"
    )

    def offer_gpus(info: cloudlet_pb2.CloudletInfo) -> None:
        t4 = [resources_pb2.GPUResource(model_id=T4, count=1)]
        # same size as m1.small and sorted before it: a CPU request must still skip it
        info.flavors.add(name="g0.t4", vcpus=2, ram=4096, disk=40, gpus=t4)
        info.flavors.add(name="g1.t4x2", vcpus=2, ram=4096, disk=40, gpus=t4 + t4)

    await edit(ctl, CLOUDLET_INFO, cloudlet.key, offer_gpus)
    gpu = new_cluster(org, cloudlet, "gpu1", flavor=None, node_resources=gpu_nodes)
    _, err = await collect(clusters(ctl).CreateClusterInst(gpu))
    assert err is None, err
    assert stored_cluster(ctl, gpu).node_resources.infra_node_flavor == "g0.t4"
    cpu = new_cluster(org, cloudlet, "cpu1")
    _, err = await collect(clusters(ctl).CreateClusterInst(cpu))
    assert err is None, err
    assert stored_cluster(ctl, cpu).node_resources.infra_node_flavor == "m1.small"
    three = resources_pb2.NodeResources(
        vcpus=2, ram=1024, gpus=[resources_pb2.GPUResource(model_id=T4, count=3)]
    )
    _, err = await collect(
        clusters(ctl).CreateClusterInst(
            new_cluster(org, cloudlet, "gpu3", flavor=None, node_resources=three)
        )
    )
    # as the original, the count is of GPUs missing over all flavors (3 + 3 + 3 + 2 + 1)
    assert isinstance(err, InvalidArgument)
    assert err.message == (
        "no suitable infra flavor found for requested node resources, 12 with not enough nvidia-t4"
    )


async def test_infra_flavor_matches_optional_resources(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    plain = await ready_cloudlet(ctl, org, "c2")
    await put_flavor(ctl)
    table_key = restagtable_pb2.ResTagTableKey(name="gpu", organization=org)
    await restagtable_pb2_grpc.ResTagTableApiStub(ctl.channel).CreateResTagTable(
        restagtable_pb2.ResTagTable(key=table_key, tags={"pci": "t4gpu:1"}), timeout=10
    )
    await edit(ctl, CLOUDLET, cloudlet.key, lambda c: c.res_tag_map["gpu"].CopyFrom(table_key))

    def offer_pci(info: cloudlet_pb2.CloudletInfo) -> None:
        # smaller than m1.small, so it sorts first: only a request for it may take it
        info.flavors.add(
            name="p1.t4", vcpus=2, ram=2048, disk=40, prop_map={"pci_passthrough": "alias=t4gpu:1"}
        )

    await edit(ctl, CLOUDLET_INFO, cloudlet.key, offer_pci)

    def opt_res(request: str, name: str, site: cloudlet_pb2.Cloudlet = cloudlet) -> Any:
        nodes = resources_pb2.NodeResources(vcpus=2, ram=1024, opt_res_map={"gpu": request})
        return new_cluster(org, site, name, flavor=None, node_resources=nodes)

    pci = opt_res("pci:1", "pci1")
    _, err = await collect(clusters(ctl).CreateClusterInst(pci))
    assert err is None, err
    assert stored_cluster(ctl, pci).node_resources.infra_node_flavor == "p1.t4"
    cpu = new_cluster(org, cloudlet, "cpu1")
    _, err = await collect(clusters(ctl).CreateClusterInst(cpu))
    assert err is None, err
    assert stored_cluster(ctl, cpu).node_resources.infra_node_flavor == "m1.small"

    # two passthrough GPUs: p1.t4 offers one, the others none
    _, err = await collect(clusters(ctl).CreateClusterInst(opt_res("pci:2", "pci2")))
    assert isinstance(err, InvalidArgument)
    assert err.message == (
        "no suitable infra flavor found for requested node resources, 4 with not enough gpu"
    )
    _, err = await collect(clusters(ctl).CreateClusterInst(opt_res("vgpu:1", "vgpu1")))
    assert isinstance(err, InvalidArgument)
    assert err.message == 'cloudlet "c1" doesn\'t support GPU resource "vgpu"'
    # the wildcard type must be a tag key too (the table only knows `pci`)
    _, err = await collect(clusters(ctl).CreateClusterInst(opt_res("gpu:1", "any1")))
    assert isinstance(err, InvalidArgument)
    assert err.message == 'cloudlet "c1" doesn\'t support GPU resource "gpu"'
    _, err = await collect(clusters(ctl).CreateClusterInst(opt_res("pci:1", "pci9", plain)))
    assert isinstance(err, InvalidArgument)
    assert err.message == "Cloudlet c2 doesn't support GPU"


async def test_placement_counts_vm_app_insts(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    zone = cloudletkey_pb2.ZoneKey(organization=org, name="z1")
    await zone_pb2_grpc.ZoneApiStub(ctl.channel).CreateZone(zone_pb2.Zone(key=zone), timeout=10)
    for name in ("c0", "c1"):
        await ready_cloudlet(ctl, org, name, max_vcpus=8, zone="z1")
    await put_flavor(ctl)
    await put_flavor(ctl, "x1.large", vcpus=4)
    vm = await create_app(
        ctl,
        org,
        "vm1",
        image_type=app_pb2.IMAGE_TYPE_QCOW,
        deployment="vm",
        image_path=f"https://artifacts.example.com/vm.qcow2#md5:{'0' * 32}",
        default_flavor=flavor_pb2.FlavorKey(name="x1.large"),
    )
    vm_inst = new_app_inst(org, vm, "vm-ai", zone_key=zone)
    _, err = await collect(app_insts(ctl).CreateAppInst(vm_inst))
    assert err is None, err
    assert stored_inst(ctl, vm_inst).cloudlet_key.name == "c0"  # a tie, broken by key
    # c0 has 4 of 8 vCPUs left, c1 all 8: the next cluster goes to c1
    request = clusterinst_pb2.ClusterInst(
        key=cluster_key(org, "cl0"),
        zone_key=zone,
        flavor=flavor_pb2.FlavorKey(name="x1.small"),
        deployment="docker",
    )
    _, err = await collect(clusters(ctl).CreateClusterInst(request))
    assert err is None, err
    assert stored_cluster(ctl, request).cloudlet_key.name == "c1"


def test_vm_spec_rules_without_servers() -> None:
    """The matcher's pure rules (§8.3) that the gRPC tests above do not reach."""
    from services.controller import _clusterinst as ci

    table = restagtable_pb2.ResTagTable(tags={"vgpu": "nvidia-63"})
    info = cloudlet_pb2.CloudletInfo(
        flavors=[
            cloudlet_pb2.FlavorInfo(name="nodisk", vcpus=2, ram=2048, disk=0),
            cloudlet_pb2.FlavorInfo(
                name="vgpu",
                vcpus=4,
                ram=4096,
                disk=40,
                prop_map={"resources:vgpu": "'nvidia-63:1'"},
            ),
            cloudlet_pb2.FlavorInfo(
                name="vio", vcpus=4, ram=8192, disk=40, prop_map={"vmware:vgpu": "nvidia-63=2"}
            ),
        ],
        availability_zones=[{"name": "nova"}, {"name": "gpu-az"}],
        os_images=[{"name": "ubuntu"}, {"name": "ubuntu-gpu"}],
    )
    tables = {"gpu": table}

    def message(nodes: resources_pb2.NodeResources, tbl: Any = tables) -> str:
        with pytest.raises(InvalidArgument) as caught:
            ci.vm_spec(nodes, info, tbl, cloudlet_name="c9")
        return caught.value.message

    # a disk-less flavor takes any disk as an external volume
    spec = ci.vm_spec(resources_pb2.NodeResources(vcpus=1, ram=1024, disk=50), info, tables)
    assert (spec.flavor_name, spec.external_volume_size, spec.availability_zone) == (
        "nodisk",
        50,
        "",
    )
    # "=" counts (VIO) match a qualified request; the legacy GPU zone and image come along
    spec = ci.vm_spec(
        resources_pb2.NodeResources(vcpus=1, ram=1024, opt_res_map={"gpu": "vgpu:nvidia-63:2"}),
        info,
        tables,
    )
    assert (spec.flavor_name, spec.availability_zone, spec.image_name) == (
        "vio",
        "gpu-az",
        "ubuntu-gpu",
    )
    # a quoted count is read as a number; the smaller flavor with one vGPU wins
    one = resources_pb2.NodeResources(vcpus=1, ram=1024, opt_res_map={"gpu": "vgpu:1"})
    assert ci.vm_spec(one, info, tables).flavor_name == "vgpu"
    # a CPU request bigger than the plain flavor finds only GPU flavors: refused
    assert message(resources_pb2.NodeResources(vcpus=4, ram=1024)) == (
        "no suitable infra flavor found for requested node resources, 1 with not enough vCPUs, "
        "2 with optional resources not requested"
    )
    assert message(resources_pb2.NodeResources(vcpus=1, opt_res_map={"gpu": "vgpu"})) == (
        "Invalid optresmap 'vgpu' in node resources"
    )
    assert message(resources_pb2.NodeResources(vcpus=1, opt_res_map={"nic": "sriov:1"}), None) == (
        "Optional resource requested, cloudlet c9 supports none"
    )
    assert message(resources_pb2.NodeResources(vcpus=1, infra_node_flavor="gone")) == (
        "Cloudlet flavor gone not found on cloudlet"
    )
    assert ci.select_infra_flavor(resources_pb2.NodeResources(vcpus=99), []) == "noderesources"
    assert ci.delta_resources({"vCPUs": 4, "RAM": 512}, {"vCPUs": 2, "RAM": 1024}) == {"vCPUs": 2}
