"""AppInst rules of controller.md §3.9: pre-checks, port allocation, URI rules, ids."""

from __future__ import annotations

from typing import Any

import pytest
from distributed_match_engine import appcommon_pb2
from edgeproto import app_pb2, appinst_pb2, cluster_pb2, clusterinst_pb2, common_pb2, refs_pb2

from edge_cloud.errors import EdgeError, FailedPrecondition, InvalidArgument, ResourceExhausted
from services.controller import _appinst as ai

APP_KEY = app_pb2.AppKey(organization="dev", name="app", version="1")


def inst(name: str = "ai1", org: str = "dev", **kw: Any) -> appinst_pb2.AppInst:
    return appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name=name, organization=org), app_key=APP_KEY, **kw
    )


def app(**kw: Any) -> app_pb2.App:
    base: dict[str, Any] = {"key": APP_KEY, "deployment": "docker", "access_ports": "tcp:80"}
    base.update(kw)
    return app_pb2.App(**base)


def message(fn: Any, *args: Any, error: type[EdgeError] = InvalidArgument, **kw: Any) -> str:
    with pytest.raises(error) as info:
        fn(*args, **kw)
    return info.value.message


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (
            inst(cluster_key=cluster_pb2.ClusterKey(name="c")),
            "cluster organization must also be specified with cluster name",
        ),
        (
            inst(cluster_key=cluster_pb2.ClusterKey(organization="o")),
            "cluster name must also be specified with cluster organization",
        ),
        (inst(name="-x"), "Invalid app instance name"),
        (inst(org="#x"), "Invalid app instance organization"),
        (
            inst(name="autoprov-x"),
            "AppInst name prefix autoprov- is reserved for auto-provisioned instances, please "
            "choose a different name",
        ),
    ],
)
def test_precheck_messages(obj: appinst_pb2.AppInst, expected: str) -> None:
    assert message(ai.precheck_create, obj) == expected


def test_precheck_defaults_and_namespace() -> None:
    obj = inst()
    ai.precheck_create(obj)
    assert obj.liveness == common_pb2.LIVENESS_STATIC
    assert message(ai.precheck_create, inst(namespace="Bad_NS")).startswith("invalid namespace: ")


def test_vm_and_sidecar_rules() -> None:
    vm = app(deployment="vm")
    named = inst(cluster_key=cluster_pb2.ClusterKey(name="c", organization="o"))
    assert message(ai.vm_cluster_checks, named, vm) == (
        "Cluster name must be blank for App deployment type vm"
    )
    org_only = inst(cluster_key=cluster_pb2.ClusterKey(organization="o"))
    assert message(ai.vm_cluster_checks, org_only, vm) == (
        "Cluster organization must be blank for App deployment type vm"
    )
    sidecar = app(
        key=app_pb2.AppKey(organization="edgecloudorg", name="s", version="1"),
        del_opt=app_pb2.AUTO_DELETE,
    )
    assert message(ai.vm_cluster_checks, inst(), sidecar) == (
        "Sidecar AppInst (AutoDelete App) must specify the Cluster name and organization to "
        "deploy to"
    )


def ready_cluster(**kw: Any) -> clusterinst_pb2.ClusterInst:
    base: dict[str, Any] = {
        "key": cluster_pb2.ClusterKey(name="cl", organization="dev"),
        "state": common_pb2.READY,
        "deployment": "docker",
    }
    base.update(kw)
    return clusterinst_pb2.ClusterInst(**base)


def test_cluster_use_rules() -> None:
    assert not ai.check_cluster_use(inst(), app(), ready_cluster())
    assert (
        message(
            ai.check_cluster_use,
            inst(),
            app(),
            ready_cluster(state=common_pb2.CREATING),
            error=FailedPrecondition,
        )
        == 'ClusterInst {"name":"cl","organization":"dev"} not ready, it is CREATING'
    )
    assert (
        message(
            ai.check_cluster_use,
            inst(),
            app(deployment="kubernetes"),
            ready_cluster(),
            error=FailedPrecondition,
        )
        == "Cannot deploy kubernetes App into docker ClusterInst"
    )
    assert (
        message(
            ai.check_cluster_use,
            inst(org="other"),
            app(),
            ready_cluster(),
            error=FailedPrecondition,
        )
        == "developer organization mismatch between AppInst: other and ClusterInst: dev"
    )
    reservable = ready_cluster(reservable=True, reserved_by="someone")
    assert (
        message(ai.check_cluster_use, inst(), app(), reservable, error=FailedPrecondition)
        == "ClusterInst already reserved"
    )
    assert ai.check_cluster_use(inst(), app(), ready_cluster(reservable=True))
    mt = ready_cluster(multi_tenant=True, deployment="kubernetes")
    assert (
        message(
            ai.check_cluster_use, inst(), app(deployment="kubernetes"), mt, error=FailedPrecondition
        )
        == "App must allow serverless deployment to deploy to multi-tenant cluster cl"
    )


def test_duplicate_rules() -> None:
    other = inst("ai0")
    assert (
        message(ai.check_duplicate, inst(), app(), [other], "K", error=FailedPrecondition)
        == "cannot deploy another instance of App K in the cluster"
    )
    k8s = app(deployment="kubernetes")
    ai.check_duplicate(inst(namespace="a"), k8s, [inst("ai0", namespace="b")], "K")
    assert (
        message(
            ai.check_duplicate,
            inst(namespace="myns"),
            k8s,
            [inst("ai0", namespace="myns")],
            "K",
            error=FailedPrecondition,
        )
        == "cannot deploy another instance of App K to the same namespace "
        '"myns" in the same cluster'
    )


def test_shared_port_allocation() -> None:
    refs = refs_pb2.CloudletRefs()
    first = ai.map_ports(app(access_ports="tcp:80,udp:80,tcp:65121"), shared=True, refs=refs)
    assert [(p.internal_port, p.public_port) for p in first] == [(80, 80), (80, 80), (65121, 10000)]
    assert dict(refs.root_lb_ports) == {80: 3, 10000: 1}
    second = ai.map_ports(app(access_ports="tcp:80,http:8080"), shared=True, refs=refs)
    assert [(p.public_port, p.proto) for p in second] == [
        (10001, appcommon_pb2.L_PROTO_TCP),
        (8080, appcommon_pb2.L_PROTO_TCP),
    ]
    assert (
        message(ai.map_ports, app(access_ports="tcp:5000-5010"), shared=True, refs=refs)
        == "Shared IP access with port range not allowed"
    )
    holder = inst(mapped_ports=second)
    ai.free_root_lb_ports(holder, refs)
    assert dict(refs.root_lb_ports) == {80: 3, 10000: 1}
    full = refs_pb2.CloudletRefs(root_lb_ports={p: 1 for p in range(10000, 65000)})
    full.root_lb_ports[443] = 1
    assert (
        message(
            ai.map_ports,
            app(access_ports="tcp:443"),
            shared=True,
            refs=full,
            error=ResourceExhausted,
        )
        == "no free external ports"
    )


def test_dedicated_port_overlap() -> None:
    refs = refs_pb2.CloudletRefs()
    existing = inst("web", mapped_ports=ai.map_ports(app(), shared=False, refs=refs))
    assert dict(refs.root_lb_ports) == {}
    assert (
        message(
            ai.map_ports,
            app(),
            shared=False,
            refs=refs,
            others_on_cluster=[existing],
            error=FailedPrecondition,
        )
        == "port 80 is already in use on the cluster by AppInst web"
    )
    assert (
        message(
            ai.map_ports,
            app(access_ports="tcp:70-90"),
            shared=False,
            refs=refs,
            others_on_cluster=[existing],
            error=FailedPrecondition,
        )
        == "port range 70-90 overlaps with ports in use on the cluster"
    )


def test_uri_rules() -> None:
    refs = refs_pb2.CloudletRefs()
    base = inst(dns_label="ai1-dev", mapped_ports=ai.map_ports(app(), shared=True, refs=refs))
    common: dict[str, Any] = {
        "cloudlet_label": "c1-oper",
        "root_lb_fqdn": "shared.c1-oper.local.net",
        "region": "local",
        "app_dns_root": "net",
        "per_service_ip": False,
    }
    shared = ready_cluster(ip_access=common_pb2.IP_ACCESS_SHARED)
    assert ai.app_inst_uri(base, app(), cluster=shared, **common) == "shared.c1-oper.local.net"
    dedicated = ready_cluster(ip_access=common_pb2.IP_ACCESS_DEDICATED, fqdn="cl.c1-oper.local.net")
    assert ai.app_inst_uri(base, app(), cluster=dedicated, **common) == "cl.c1-oper.local.net"
    assert ai.app_inst_uri(base, app(deployment="vm"), cluster=None, **common) == (
        "ai1-dev.c1-oper.local.net"
    )
    common["per_service_ip"] = True
    assert ai.app_inst_uri(base, app(), cluster=dedicated, **common) == "ai1-dev.c1-oper.local.net"
    assert ai.app_inst_uri(inst(), app(access_ports=""), cluster=shared, **common) == ""


def test_ids_and_labels() -> None:
    obj = inst("AI_1", "AtlanticInc")
    assert ai.id_candidates(obj, "San Jose Site", "UFGT Inc.")[:2] == [
        "atlanticinc-ai-1-sanjosesite-ufgtinc",
        "atlanticinc-ai-1-sanjosesite-ufgtinc-1",
    ]
    assert ai.label_candidates(obj)[:2] == ["ai-1-atlanticinc", "ai-1-atlanticinc1"]
    assert ai.default_namespace(obj) == "ai-1-atlanticinc"
    assert message(ai.check_dns_name, "a" * 64 + ".b") == (
        f'Label "{"a" * 64}" of DNS name "{"a" * 64}.b" exceeds 63 chars, please shorten it'
    )
