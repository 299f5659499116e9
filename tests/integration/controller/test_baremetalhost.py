"""BareMetalHostApi against the real Controller and CCRM processes (issue 4).

The CCRM runs the fake platforms; `fakebaremetal` keeps an in-memory inventory with one
host per cluster node plus two spares, so a cluster create shows up as provisioned hosts.
Cloudlets of platforms without bare metal are skipped, as in the original.
"""

from __future__ import annotations

import uuid

import grpc
import grpc.aio
import pytest
from distributed_match_engine import loc_pb2
from edgeproto import (
    baremetalhost_pb2,
    baremetalhost_pb2_grpc,
    cloudlet_pb2,
    cluster_pb2,
    clusterinst_pb2,
    resources_pb2,
)

from edge_cloud.localservers import free_port
from services.controller._engine import Txn
from tests.e2e.support import ControllerApi, fake_cloudlet, ok, platform_fixture
from tests.integration.controller.cloudlet_harness import (
    ControllerHarness,
    features,
    harness,
    new_cloudlet,
    put_features,
    unique_org,
)
from tests.integration.helpers import eventually

__all__ = ["harness"]

TIMEOUT = 30.0
ORG = "bmhop"

pytestmark = pytest.mark.timeout(90)


class Api(ControllerApi):
    """The Controller's stubs plus BareMetalHostApi."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.hosts = baremetalhost_pb2_grpc.BareMetalHostApiStub(self.channel)


api = platform_fixture(Api, "bmh", platform_type="fakebaremetal")


def create_cloudlet(api: Api, platform_type: str, org: str = ORG) -> cloudlet_pb2.Cloudlet:
    cloudlet = fake_cloudlet(
        org, platform_type=platform_type, location=loc_pb2.Loc(latitude=50.1, longitude=8.7)
    )
    ok(api.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT))
    return cloudlet


def hosts(api: Api, **key: str) -> list[baremetalhost_pb2.BareMetalHost]:
    request = baremetalhost_pb2.BareMetalHost(key=baremetalhost_pb2.BareMetalHostKey(**key))
    return list(api.hosts.ShowBareMetalHost(request, timeout=TIMEOUT))


def test_hosts_follow_the_clusters_built_on_them(api: Api) -> None:
    org = f"bmh{uuid.uuid4().hex[:6]}"
    metal = create_cloudlet(api, "fakebaremetal", org)
    create_cloudlet(api, "fake", org)  # no bare metal: skipped, not an error

    spare = hosts(api, organization=org)
    assert [(h.key.name, h.key.cloudlet, h.status) for h in spare] == [
        ("fake-bmh-1", metal.key.name, "available"),
        ("fake-bmh-2", metal.key.name, "available"),
    ]
    assert all(h.key.organization == org and h.nics[0].mac_address for h in spare)

    cluster = clusterinst_pb2.ClusterInst(
        key=cluster_pb2.ClusterKey(name="metal", organization="devorg"),
        cloudlet_key=metal.key,
        deployment="kubernetes",
    )
    cluster.node_pools.add(
        Name="cpupool",
        num_nodes=2,
        node_resources=resources_pb2.NodeResources(vcpus=2, ram=4096, disk=40),
    )
    ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    try:
        listed = hosts(api, organization=org, cloudlet=metal.key.name)
        assert [h.status for h in listed] == [
            "provisioned",
            "provisioned",
            "available",
            "available",
        ]
        assert {h.labels["owner"] for h in listed[:2]} == {
            'cluster:{"name":"metal","organization":"devorg"}'
        }
        # any other field filters too
        provisioned = api.hosts.ShowBareMetalHost(
            baremetalhost_pb2.BareMetalHost(
                key=baremetalhost_pb2.BareMetalHostKey(organization=org), status="available"
            ),
            timeout=TIMEOUT,
        )
        assert [h.key.name for h in provisioned] == ["fake-bmh-3", "fake-bmh-4"]
    finally:
        ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
    assert [h.status for h in hosts(api, organization=org)] == ["available", "available"]


def test_no_matching_cloudlet_lists_nothing(api: Api) -> None:
    assert hosts(api, organization="nobody-here") == []


# --- failures, with an in-process Controller whose CCRM is not there ----------------------


async def test_each_failed_cloudlet_is_named_after_the_others_answered(
    harness: ControllerHarness,
) -> None:
    harness.ccrm_addr = f"127.0.0.1:{free_port()}"  # nothing listens there
    ctl = await harness.start()
    org = unique_org()
    await put_features(ctl, features(supports_bare_metal=True))
    await put_features(ctl, features("fakeccrm-vm"))
    stored = [
        new_cloudlet(org, "a"),
        new_cloudlet(org, "b"),
        new_cloudlet(org, "vm", platform_type="fakeccrm-vm"),  # no bare metal: skipped
    ]

    def put(txn: Txn) -> None:
        for cloudlet in stored:
            txn.put(cloudlet)

    await ctl.engine.apply(put)

    async def cached() -> None:
        assert all(ctl.cloudlet(c.key) is not None for c in stored)

    await eventually(cached)
    stub = baremetalhost_pb2_grpc.BareMetalHostApiStub(ctl.channel)
    request = baremetalhost_pb2.BareMetalHost(
        key=baremetalhost_pb2.BareMetalHostKey(organization=org)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.ShowBareMetalHost(request, timeout=30):
            pass
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    text = caught.value.details() or ""
    for name in ("a", "b"):
        assert f'{{"organization":"{org}","name":"{name}"}}: cannot reach the CCRM' in text
    assert '"name":"vm"' not in text
    assert "check that it is running" in text
