"""ClusterInst rules of controller.md §3.8: validation texts, IP access, resources."""

from __future__ import annotations

from typing import Any

import pytest
from edgeproto import (
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    refs_pb2,
    resources_pb2,
)

from edge_cloud.errors import EdgeError, FailedPrecondition, InvalidArgument, ResourceExhausted
from services.controller import _clusterinst as ci
from services.controller._inst_ops import merge_info

CLOUDLET_KEY = cloudletkey_pb2.CloudletKey(organization="oper", name="c1")


def cluster(name: str = "cl1", org: str = "dev", **kw: Any) -> clusterinst_pb2.ClusterInst:
    base: dict[str, Any] = {
        "key": cluster_pb2.ClusterKey(name=name, organization=org),
        "cloudlet_key": CLOUDLET_KEY,
    }
    base.update(kw)
    return clusterinst_pb2.ClusterInst(**base)


def message(fn: Any, *args: Any, error: type[EdgeError] = InvalidArgument) -> str:
    with pytest.raises(error) as info:
        fn(*args)
    return info.value.message


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (cluster(org=""), "ClusterInst Organization cannot be empty"),
        (cluster(name="-bad"), "Invalid cluster name"),
        (cluster(name="a_b"), "Invalid cluster name"),
        (cluster(org="#bad"), "Invalid cluster organization"),
        (
            clusterinst_pb2.ClusterInst(key=cluster_pb2.ClusterKey(name="c", organization="o")),
            "zone name must be specified",
        ),
        (
            clusterinst_pb2.ClusterInst(
                key=cluster_pb2.ClusterKey(name="c", organization="o"),
                zone_key=cloudletkey_pb2.ZoneKey(name="z"),
            ),
            "zone organization must be specified",
        ),
        (cluster(reservable=True), "Only edgecloudorg ClusterInsts may be reservable"),
        (cluster(multi_tenant=True), "Only edgecloudorg ClusterInsts may be multi-tenant"),
        (
            cluster(deployment="vm"),
            "ClusterInst is not needed for deployment type vm, just create an AppInst directly",
        ),
        (cluster(deployment="lxc"), "Invalid deployment type lxc for ClusterInst"),
        (
            cluster(org="edgecloudorg", multi_tenant=True, deployment="docker"),
            "Multi-tenant clusters must be of deployment type Kubernetes",
        ),
        (cluster(num_masters=2), "NumMasters cannot be greater than 1"),
        (
            cluster(deployment="docker", num_nodes=2),
            "NumNodes not applicable for deployment type docker",
        ),
        (
            cluster(deployment="docker", node_pools=[resources_pb2.NodePool(Name="p")]),
            "cannot specify node pools for docker deployment",
        ),
        (cluster(name="a" * 41), "Cluster name limited to 40 characters"),
    ],
)
def test_validation_messages(obj: clusterinst_pb2.ClusterInst, expected: str) -> None:
    assert message(ci.validate_cluster, obj) == expected


def test_user_create_prefixes() -> None:
    assert message(ci.precheck_user_create, cluster(name="reservable3-x")) == (
        'Invalid cluster name, prefix "reservable" is reserved for internal use'
    )
    assert message(ci.precheck_user_create, cluster(name="defaultclust-x")) == (
        "Invalid cluster name, defaultclust is reserved for internal use"
    )
    ok = cluster(auto=True)
    ci.precheck_user_create(ok)
    assert not ok.auto


def test_defaults() -> None:
    obj = cluster(deployment="helm", ip_access=2)
    ci.validate_cluster(obj)
    assert obj.deployment == "kubernetes"
    assert obj.num_masters == 1
    assert obj.liveness == common_pb2.LIVENESS_STATIC
    assert obj.ip_access == common_pb2.IP_ACCESS_UNKNOWN


FLAVOR = flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="f"), vcpus=2, ram=2048, disk=20)


def test_node_resources_from_flavor() -> None:
    k8s = cluster(deployment="kubernetes", num_nodes=3)
    ci.resolve_node_resources(k8s, FLAVOR)
    assert [(p.Name, p.num_nodes, p.node_resources.vcpus) for p in k8s.node_pools] == [
        ("defaultpool", 3, 2)
    ]
    docker = cluster(deployment="docker")
    ci.resolve_node_resources(docker, FLAVOR)
    assert docker.node_resources.ram == 2048
    # a GPU flavor's GPUs reach the nodes (the infra flavor match is exact on GPUs)
    gpu_flavor = flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="g"), vcpus=4, ram=8192, disk=40)
    gpu_flavor.gpus.add(model_id="nvidia-t4", count=1)
    gpu = cluster(deployment="kubernetes")
    ci.resolve_node_resources(gpu, gpu_flavor)
    assert [(g.model_id, g.count) for g in gpu.node_pools[0].node_resources.gpus] == [
        ("nvidia-t4", 1)
    ]
    assert message(ci.resolve_node_resources, cluster(deployment="docker"), None) == (
        "missing flavor or node resources"
    )
    bad = cluster(deployment="kubernetes", node_resources=resources_pb2.NodeResources(vcpus=1))
    assert message(ci.resolve_node_resources, bad, None) == (
        "cannot specify node resources for Kubernetes deployment"
    )


def features(**kw: Any) -> cloudlet_pb2.PlatformFeatures:
    return cloudlet_pb2.PlatformFeatures(platform_type="fake", **kw)


def cloudlet(org: str = "oper", **kw: Any) -> cloudlet_pb2.Cloudlet:
    return cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization=org, name="c1"),
        platform_type="fake",
        **kw,
    )


def test_ip_access_defaults() -> None:
    obj = cluster()
    ci.ip_access_default(obj, cloudlet(), features())
    assert obj.ip_access == common_pb2.IP_ACCESS_SHARED
    per_service = cluster()
    ci.ip_access_default(per_service, cloudlet("gcp"), features(is_fake=True))
    assert per_service.ip_access == common_pb2.IP_ACCESS_DEDICATED
    shared = cluster(ip_access=common_pb2.IP_ACCESS_SHARED)
    args = (shared, cloudlet("aws"), features(is_fake=True))
    assert message(ci.ip_access_default, *args) == "IpAccessShared not supported for platform: fake"
    dedicated = cluster(ip_access=common_pb2.IP_ACCESS_DEDICATED)
    args = (dedicated, cloudlet(), features(cloudlet_services_local=True))
    assert message(ci.ip_access_default, *args) == "IpAccessDedicated not supported platform: fake"


def test_dynamic_ip_allocation() -> None:
    refs = refs_pb2.CloudletRefs()
    site = cloudlet(num_dynamic_ips=3, ip_support=common_pb2.IP_SUPPORT_DYNAMIC)
    first = cluster(ip_access=common_pb2.IP_ACCESS_DEDICATED)
    ci.allocate_ip(first, site, features(), refs)
    assert (refs.used_dynamic_ips, first.allocated_ip) == (1, "dynamic")
    ci.allocate_ip(cluster(ip_access=common_pb2.IP_ACCESS_DEDICATED), site, features(), refs)
    third = cluster(ip_access=common_pb2.IP_ACCESS_DEDICATED)
    args = (third, site, features(), refs)
    assert message(ci.allocate_ip, *args, error=ResourceExhausted) == "No more dynamic IPs left"
    ci.free_ip(first, refs)
    assert refs.used_dynamic_ips == 1
    static = cloudlet(num_dynamic_ips=3, ip_support=common_pb2.IP_SUPPORT_STATIC)
    args = (cluster(ip_access=common_pb2.IP_ACCESS_DEDICATED), static, features(), refs)
    assert (
        message(ci.allocate_ip, *args, error=FailedPrecondition) == "Static IPs not supported yet"
    )


def test_reservable_ids() -> None:
    refs = refs_pb2.CloudletRefs()
    assert [ci.reserve_auto_cluster_id(refs) for _ in range(3)] == [0, 1, 2]
    assert refs.reserved_auto_cluster_ids == 7
    ci.release_auto_cluster_id("reservable1-abc", refs)
    assert refs.reserved_auto_cluster_ids == 5
    assert ci.reserve_auto_cluster_id(refs) == 1
    refs.reserved_auto_cluster_ids = (1 << 64) - 1
    assert message(ci.reserve_auto_cluster_id, refs, error=ResourceExhausted) == (
        "Requested new reservable autocluster but maximum number reached"
    )
    name = ci.reservable_name(4, CLOUDLET_KEY)
    assert name.startswith("reservable4-")


def test_skip_reasons() -> None:
    obj = cluster(deployment="docker")
    assert ci.check_cloudlet_support(obj, features(), False) == "site is unavailable"
    assert ci.check_cloudlet_support(obj, None, True) == "site features are missing"
    single = features(is_single_kubernetes_cluster=True)
    assert ci.check_cloudlet_support(obj, single, True) == "site only supports AppInst creates"
    k8s_only = features(supports_kubernetes_only=True)
    assert ci.check_cloudlet_support(obj, k8s_only, True) == "platform only supports kubernetes"
    assert ci.check_cloudlet_support(obj, features(), True) == ""


def test_infra_flavor_selection() -> None:
    flavors = [
        cloudlet_pb2.FlavorInfo(name="big", vcpus=8, ram=16384, disk=80),
        cloudlet_pb2.FlavorInfo(name="small", vcpus=2, ram=4096, disk=40),
    ]
    assert (
        ci.select_infra_flavor(resources_pb2.NodeResources(vcpus=2, ram=2048), flavors) == "small"
    )
    assert ci.select_infra_flavor(resources_pb2.NodeResources(vcpus=4), flavors) == "big"
    assert ci.select_infra_flavor(resources_pb2.NodeResources(vcpus=64), []) == "noderesources"
    assert message(ci.select_infra_flavor, resources_pb2.NodeResources(vcpus=16), flavors) == (
        "no suitable infra flavor found for requested node resources, 2 with not enough vCPUs"
    )


def test_resource_fit_messages() -> None:
    docker = cluster(
        deployment="docker", node_resources=resources_pb2.NodeResources(vcpus=4, ram=8192)
    )
    k8s = cluster(
        deployment="kubernetes",
        num_masters=1,
        node_pools=[
            resources_pb2.NodePool(
                Name="p", num_nodes=2, node_resources=resources_pb2.NodeResources(vcpus=2, ram=4096)
            )
        ],
    )
    assert ci.cluster_resources(docker) == {"vCPUs": 4, "RAM": 8192, "Disk": 0}
    assert ci.cluster_resources(k8s) == {"vCPUs": 5, "RAM": 10240, "Disk": 10}
    managed = features(kubernetes_managed_control_plane=True)
    assert ci.cluster_resources(k8s, managed)["vCPUs"] == 4
    used = ci.used_resources([docker, k8s])
    assert used["vCPUs"] == 9
    with pytest.raises(ResourceExhausted) as info:
        ci.fit_resources({"vCPUs": 4, "RAM": 4096}, used, {"vCPUs": 12, "RAM": 20000})
    assert info.value.message == (
        "not enough resources available: required RAM is 4096MB but only 1568MB out of "
        "20000MB is available, required vCPUs is 4 but only 3 out of 12 is available"
    )
    ci.fit_resources({"vCPUs": 4, "Disk": 1000}, {}, {"vCPUs": 4})  # unlimited Disk


def test_dns_names() -> None:
    assert ci.cluster_label_candidates("My_Cluster", "Dev Org")[:2] == [
        "my-cluster-devorg",
        "my-cluster-devorg1",
    ]
    assert ci.cluster_fqdn("cl1-dev", "c1-oper", "Local", "mobiledgex.net") == (
        "cl1-dev.c1-oper.local.mobiledgex.net"
    )
    assert ci.cloudlet_object_label_key('{"organization":"o","name":"c"}', "x") == (
        '1/CloudletObjectDnsLabel/{"Cloudlet":{"organization":"o","name":"c"},"Label":"x"}'
    )


def test_worker_reports_follow_the_transition_table() -> None:
    obj = cluster(state=common_pb2.CREATE_REQUESTED)
    info = clusterinst_pb2.ClusterInstInfo(state=common_pb2.CREATING)
    assert merge_info(obj, info)
    assert obj.state == common_pb2.CREATING
    failed = clusterinst_pb2.ClusterInstInfo(state=common_pb2.CREATE_ERROR, errors=["boom"])
    assert merge_info(obj, failed)
    assert (obj.state, list(obj.errors)) == (common_pb2.CREATE_ERROR, ["boom"])
    # from an error state only the controller moves it: late reports are ignored
    assert not merge_info(obj, clusterinst_pb2.ClusterInstInfo(state=common_pb2.READY))
    deleting = cluster(state=common_pb2.DELETE_REQUESTED)
    assert merge_info(deleting, clusterinst_pb2.ClusterInstInfo(state=common_pb2.DELETE_DONE))
    ready = cluster(state=common_pb2.READY)
    assert not merge_info(ready, clusterinst_pb2.ClusterInstInfo(state=common_pb2.DELETING))
    # a status-only report changes nothing stored
    assert not merge_info(ready, clusterinst_pb2.ClusterInstInfo())
