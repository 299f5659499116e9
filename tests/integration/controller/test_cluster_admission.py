"""CreateClusterInst refuses the fields only RegisterCloudletManagedCluster may set.

A cluster with a cloudlet-managed-cluster id or name skips node sizing and the resource
check (the infrastructure made it), so a user setting them on CreateClusterInst could
bypass the cloudlet's limits. RegisterCloudletManagedCluster itself keeps working
(test_cloudletmanagedcluster.py runs it against the real CCRM).
"""

from __future__ import annotations

import pytest
from edgeproto import clusterinst_pb2

from edge_cloud.errors import InvalidArgument, ResourceExhausted
from edge_cloud.objects import keys
from tests.integration.controller.cloudlet_harness import (
    ControllerHarness,
    collect,
    harness,
    unique_org,
)
from tests.integration.controller.clusterinst_harness import (
    CLUSTER_INST,
    InstCcrm,
    ccrm,
    clusters,
    new_cluster,
    put_flavor,
    ready_cloudlet,
)

__all__ = ["ccrm", "harness"]

REFUSAL = (
    "cloudlet managed cluster fields are set by RegisterCloudletManagedCluster, "
    "not CreateClusterInst"
)


@pytest.mark.parametrize(
    "managed",
    [
        {"cloudlet_managed_cluster_id": "infra-1"},
        {"cloudlet_managed_cluster_name": "infra"},
        {"cloudlet_managed_cluster_id": "infra-1", "cloudlet_managed_cluster_name": "infra"},
    ],
)
async def test_user_create_may_not_claim_a_managed_cluster(
    harness: ControllerHarness, ccrm: InstCcrm, managed: dict[str, str]
) -> None:
    ctl = await harness.start()
    org = unique_org()
    # 2 vCPUs of room: a 100-node cluster would be refused for resources if it got that far
    cloudlet = await ready_cloudlet(ctl, org, max_vcpus=2)
    await put_flavor(ctl)
    request = new_cluster(org, cloudlet, "huge", deployment="kubernetes", num_nodes=100)
    for name, value in managed.items():
        setattr(request, name, value)
    lines, err = await collect(clusters(ctl).CreateClusterInst(request, timeout=10))
    assert isinstance(err, InvalidArgument)
    assert err.message == REFUSAL
    assert lines == []
    assert ctl.sync.caches.get(CLUSTER_INST, keys.key_string(request.key)) is None
    assert ccrm.cluster_requests == []

    # the same cluster without the fields reaches the resource check
    plain = clusterinst_pb2.ClusterInst()
    plain.CopyFrom(request)
    plain.ClearField("cloudlet_managed_cluster_id")
    plain.ClearField("cloudlet_managed_cluster_name")
    _, err = await collect(clusters(ctl).CreateClusterInst(plain, timeout=10))
    assert isinstance(err, ResourceExhausted), err
