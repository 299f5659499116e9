"""CloudletManagedClusterApi against the real Controller and CCRM processes (issue 4).

The CCRM runs the fake platform; a cloudlet with `LOAD_MANAGED_CLUSTERS` has one cluster its
"infrastructure" made (`fake-managed`, id `fake-managed-1`). Show lists it through the
CCRM, Register adopts it as a ClusterInst that takes its Kubernetes version and node pools
from the platform, Deregister forgets it again while the infra cluster stays.
"""

from __future__ import annotations

import grpc
import pytest
from distributed_match_engine import loc_pb2
from edgeproto import (
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
)

from tests.e2e.support import ControllerApi, fake_cloudlet, ok, platform_fixture, run

TIMEOUT = 30.0
FLAVOR = "x1.small"
DEV = "devorg"

pytestmark = pytest.mark.timeout(90)


class Api(ControllerApi):
    """The Controller's stubs plus CloudletManagedClusterApi."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.managed = cloudlet_pb2_grpc.CloudletManagedClusterApiStub(self.channel)


api = platform_fixture(Api, "cmc", flavor=FLAVOR)


def create_cloudlet(api: Api, *, managed: bool = True) -> cloudlet_pb2.Cloudlet:
    cloudlet = fake_cloudlet("cmcop", location=loc_pb2.Loc(latitude=48.1, longitude=11.6))
    if managed:
        cloudlet.env_var["LOAD_MANAGED_CLUSTERS"] = "true"
    ok(api.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT))
    return cloudlet


def show(api: Api, request: cloudlet_pb2.CloudletManagedCluster) -> list[str]:
    return [
        f"{c.key.name}/{c.key.id}/{c.kubernetes_version}"
        for c in api.managed.ShowCloudletManagedCluster(request, timeout=TIMEOUT)
    ]


def clusters_on(api: Api, cloudlet: cloudlet_pb2.Cloudlet) -> list[clusterinst_pb2.ClusterInst]:
    return list(
        api.clusters.ShowClusterInst(
            clusterinst_pb2.ClusterInst(cloudlet_key=cloudlet.key), timeout=10
        )
    )


def registration(
    cloudlet: cloudlet_pb2.Cloudlet, *, name: str = "", infra_id: str = "", cluster: str = ""
) -> cloudlet_pb2.CloudletManagedCluster:
    return cloudlet_pb2.CloudletManagedCluster(
        key=cloudlet_pb2.CloudletManagedClusterKey(name=name, id=infra_id),
        cloudlet_key=cloudlet.key,
        cluster_key=cluster_pb2.ClusterKey(name=cluster, organization=DEV),
    )


def code_and_text(err: grpc.RpcError | None) -> tuple[grpc.StatusCode, str]:
    assert err is not None, "the call succeeded"
    return err.code(), err.details() or ""


def test_show_lists_the_infrastructure_clusters_through_the_ccrm(api: Api) -> None:
    cloudlet = create_cloudlet(api)
    wanted = cloudlet_pb2.CloudletManagedCluster(cloudlet_key=cloudlet.key)
    assert show(api, wanted) == ["fake-managed/fake-managed-1/1.31"]
    [listed] = api.managed.ShowCloudletManagedCluster(wanted, timeout=TIMEOUT)
    assert listed.cloudlet_key == cloudlet.key
    assert listed.state == "ready"
    # a key in the request narrows the list
    wanted.key.name = "other"
    assert show(api, wanted) == []

    plain = create_cloudlet(api, managed=False)
    assert show(api, cloudlet_pb2.CloudletManagedCluster(cloudlet_key=plain.key)) == []


def test_show_refuses_what_it_cannot_answer(api: Api) -> None:
    no_org = cloudlet_pb2.CloudletManagedCluster(cloudlet_key=cloudletkey_pb2.CloudletKey(name="x"))
    with pytest.raises(grpc.RpcError) as caught:
        show(api, no_org)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "cloudlet organization is required" in (caught.value.details() or "")

    missing = cloudlet_pb2.CloudletManagedCluster(
        cloudlet_key=cloudletkey_pb2.CloudletKey(organization="cmcop", name="nowhere")
    )
    with pytest.raises(grpc.RpcError) as caught:
        show(api, missing)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert "nowhere" in (caught.value.details() or "")


def test_register_adopts_the_cluster_and_deregister_forgets_it(api: Api) -> None:
    cloudlet = create_cloudlet(api)
    lines = ok(
        api.managed.RegisterCloudletManagedCluster(
            registration(cloudlet, name="fake-managed"), timeout=TIMEOUT
        )
    )
    assert lines[-1] == "Created ClusterInst successfully"
    [adopted] = clusters_on(api, cloudlet)
    # named after the infra cluster, with what the platform says about it
    assert adopted.key == cluster_pb2.ClusterKey(name="fake-managed", organization=DEV)
    assert adopted.state == common_pb2.READY
    assert adopted.cloudlet_managed_cluster_name == "fake-managed"
    assert adopted.deployment == "kubernetes"
    assert adopted.num_masters == 0
    assert adopted.kubernetes_version == "1.31"
    assert [(p.Name, p.num_nodes, p.node_resources.vcpus) for p in adopted.node_pools] == [
        ("cpupool", 2, 2)
    ]

    # the same infra cluster twice: refused, by name or by id of another registration
    _, err = run(
        api.managed.RegisterCloudletManagedCluster(
            registration(cloudlet, name="fake-managed", cluster="again"), timeout=TIMEOUT
        )
    )
    code, text = code_and_text(err)
    assert code is grpc.StatusCode.ALREADY_EXISTS
    assert "infra name 'fake-managed' already registered" in text

    # deregister by the infra name on the cloudlet: the ClusterInst goes, the cluster stays
    ok(
        api.managed.DeregisterCloudletManagedCluster(
            registration(cloudlet, name="fake-managed"), timeout=TIMEOUT
        )
    )
    assert clusters_on(api, cloudlet) == []
    wanted = cloudlet_pb2.CloudletManagedCluster(cloudlet_key=cloudlet.key)
    assert show(api, wanted) == ["fake-managed/fake-managed-1/1.31"]

    # by id, under a name of our choosing, then deregistered by its ClusterInst key
    ok(
        api.managed.RegisterCloudletManagedCluster(
            registration(cloudlet, infra_id="fake-managed-1", cluster="mine"), timeout=TIMEOUT
        )
    )
    [adopted] = clusters_on(api, cloudlet)
    assert (adopted.key.name, adopted.cloudlet_managed_cluster_id) == ("mine", "fake-managed-1")
    by_key = cloudlet_pb2.CloudletManagedCluster(
        cluster_key=cluster_pb2.ClusterKey(name="mine", organization=DEV)
    )
    ok(api.managed.DeregisterCloudletManagedCluster(by_key, timeout=TIMEOUT))
    assert clusters_on(api, cloudlet) == []


def test_register_of_an_unknown_cluster_fails_and_leaves_nothing(api: Api) -> None:
    cloudlet = create_cloudlet(api)
    _, err = run(
        api.managed.RegisterCloudletManagedCluster(
            registration(cloudlet, name="not-there"), timeout=TIMEOUT
        )
    )
    code, text = code_and_text(err)
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "cloudlet managed cluster name 'not-there'" in text
    assert clusters_on(api, cloudlet) == []

    _, err = run(
        api.managed.RegisterCloudletManagedCluster(
            cloudlet_pb2.CloudletManagedCluster(cloudlet_key=cloudlet.key), timeout=TIMEOUT
        )
    )
    code, text = code_and_text(err)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "cloudlet cluster id or name not specified" in text


def test_deregister_refuses_clusters_it_did_not_register(api: Api) -> None:
    cloudlet = create_cloudlet(api)
    own = clusterinst_pb2.ClusterInst(
        key=cluster_pb2.ClusterKey(name="built", organization=DEV),
        cloudlet_key=cloudlet.key,
        flavor=flavor_pb2.FlavorKey(name=FLAVOR),
        deployment="docker",
    )
    ok(api.clusters.CreateClusterInst(own, timeout=TIMEOUT))
    _, err = run(
        api.managed.DeregisterCloudletManagedCluster(
            cloudlet_pb2.CloudletManagedCluster(cluster_key=own.key), timeout=TIMEOUT
        )
    )
    code, text = code_and_text(err)
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    assert "use DeleteClusterInst" in text
    assert [c.key.name for c in clusters_on(api, cloudlet)] == ["built"]

    _, err = run(
        api.managed.DeregisterCloudletManagedCluster(
            registration(cloudlet, name="fake-managed"), timeout=TIMEOUT
        )
    )
    code, text = code_and_text(err)
    assert code is grpc.StatusCode.NOT_FOUND
    assert "cloudlet managed cluster not found for infra name 'fake-managed'" in text
    ok(api.clusters.DeleteClusterInst(own, timeout=TIMEOUT))
