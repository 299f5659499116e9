"""controller.md §10 behaviour 23: the default multi-tenant cluster follows the cloudlet online.

A cloudlet created with `enable_default_serverless_cluster` gets `defaultmtclust-<hash>`
once its CloudletInfo turns READY; a failed create is retried; two controllers running it
at once create one cluster; deleting the cloudlet deletes the cluster first. In-process
Controllers on the real etcd and Redis, with a CCRM test server behind the real
`CloudletPlatformAPI`/`ClusterPlatformAPI` interfaces.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from edgeproto import clusterinst_pb2, common_pb2

from services.controller._followons import (
    default_mt_cluster_key,
    default_mt_cluster_on_ready,
    update_default_mt_cluster,
)
from tests.integration.controller.cloudlet_harness import (
    CLOUDLET,
    Controller,
    ControllerHarness,
    collect,
    features,
    harness,
    new_cloudlet,
    put_features,
    unique_org,
)
from tests.integration.controller.clusterinst_harness import (
    CLUSTER_INST,
    InstCcrm,
    ccrm,
    put_flavor,
)
from tests.integration.helpers import eventually

__all__ = ["ccrm", "harness"]

pytestmark = pytest.mark.timeout(60)


async def started(harness: ControllerHarness) -> Controller:
    ctl = await harness.start()
    await put_features(ctl, features(supports_multi_tenant_cluster=True))
    await put_flavor(ctl, "x1.small", vcpus=2)
    return ctl


def creates_of(ccrm: InstCcrm, key: Any) -> int:
    return sum(
        1 for r in ccrm.cluster_requests if r.key == key and r.state == common_pb2.CREATE_REQUESTED
    )


async def ready_cluster(ctl: Controller, key: Any) -> clusterinst_pb2.ClusterInst:
    async def check() -> clusterinst_pb2.ClusterInst:
        cluster = ctl.engine.get(CLUSTER_INST, key)
        assert cluster is not None
        assert cluster.state == common_pb2.READY
        return cluster

    found: clusterinst_pb2.ClusterInst = await eventually(check, within=20)
    return found


async def test_created_when_the_cloudlet_comes_online_and_deleted_with_it(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await started(harness)
    org = unique_org()
    cloudlet = new_cloudlet(org, "c1", enable_default_serverless_cluster=True)
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None, err
    key = default_mt_cluster_key(cloudlet.key)

    cluster = await ready_cluster(ctl, key)
    assert cluster.multi_tenant
    assert cluster.cloudlet_key == cloudlet.key
    assert [(p.Name, p.num_nodes) for p in cluster.node_pools] == [("defaultpool", 3)]
    assert creates_of(ccrm, key) == 1

    # a cloudlet without the setting: nothing to do when it comes online
    plain = new_cloudlet(org, "c2")
    _, err = await collect(ctl.cloudlets.CreateCloudlet(plain, timeout=30))
    assert err is None, err
    assert not default_mt_cluster_on_ready(ctl.runtime, plain.key)
    assert ctl.engine.get(CLUSTER_INST, default_mt_cluster_key(plain.key)) is None

    # the cloudlet's delete takes the cluster along instead of refusing "in use"
    lines, err = await collect(ctl.cloudlets.DeleteCloudlet(cloudlet, timeout=30))
    assert err is None, (err, lines)
    assert ctl.engine.get(CLUSTER_INST, key) is None
    assert any(
        r.key == key and r.state == common_pb2.DELETE_REQUESTED for r in ccrm.cluster_requests
    )


async def test_a_failed_create_is_retried(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await started(harness)
    ccrm.fail_cluster_create = "no capacity left for the default cluster"
    cloudlet = new_cloudlet(unique_org(), "c1", enable_default_serverless_cluster=True)
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None, err
    key = default_mt_cluster_key(cloudlet.key)

    async def first_attempt_undone() -> None:
        assert creates_of(ccrm, key) >= 1
        assert ctl.engine.get(CLUSTER_INST, key) is None

    await eventually(first_attempt_undone, within=20)
    ccrm.fail_cluster_create = ""  # the infrastructure recovers; the retry (1 s) succeeds
    await ready_cluster(ctl, key)
    assert creates_of(ccrm, key) == 2


async def test_two_controllers_create_one_cluster(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    a = await started(harness)
    b = await harness.start()
    org = unique_org()
    # created without the setting, then switched on in etcd alone: no run has started yet
    cloudlet = new_cloudlet(org, "c1")
    _, err = await collect(a.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None, err

    def enable(txn: Any) -> None:
        stored = txn.get(CLOUDLET, cloudlet.key)
        stored.enable_default_serverless_cluster = True
        txn.put(stored)

    await a.engine.apply(enable)

    async def both_see_it() -> None:
        for ctl in (a, b):
            seen = ctl.cloudlet(cloudlet.key)
            assert seen is not None
            assert seen.enable_default_serverless_cluster

    await eventually(both_see_it)
    key = default_mt_cluster_key(cloudlet.key)
    # both controllers act on the same READY at once: one transaction wins
    await asyncio.gather(
        update_default_mt_cluster(a.runtime, cloudlet.key),
        update_default_mt_cluster(b.runtime, cloudlet.key),
    )
    await ready_cluster(a, key)
    assert creates_of(ccrm, key) == 1
    assert [
        c.key for c in a.engine.show(clusterinst_pb2.ClusterInst(cloudlet_key=cloudlet.key))
    ] == [key]
