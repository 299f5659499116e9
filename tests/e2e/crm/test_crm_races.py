"""Races between a fast on-edge CRM and the Controller's waiting caller (issue 6).

The CRM here has no step delay: its reports for an operation can all arrive before the
Controller has subscribed to the object's channel, and a report can reach the caller while
it is being merged into etcd. The caller must still end promptly, and what it reports as
done must already be what Show lists and what the next call is checked against.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from distributed_match_engine import appcommon_pb2
from edgeproto import cloudlet_pb2, common_pb2

from tests.e2e.crm.test_crm_lifecycle import crm_dir as crm_dir  # the CRM cleanup fixture
from tests.e2e.crm.test_crm_lifecycle import (
    delete_across_crm_restart,
    edge_cloudlet,
    offboard,
    onboard,
)
from tests.e2e.platform.test_fake_lifecycle import (
    TIMEOUT,
    Api,
    app_inst,
    assert_no_refs,
    cloudlet_info,
    details,
    docker_cluster,
    ensure_app,
    ok,
    show_clusters,
    show_insts,
)
from tests.e2e.platform.test_fake_lifecycle import api as api  # the Controller + CCRM fixture

TS = common_pb2
CS = appcommon_pb2

pytestmark = pytest.mark.timeout(90)

#: Far below the 30 s deadline a lost report used to cost; a fast CRM takes well under 1 s.
FAST = 5.0


def test_sequential_fast_creates_end_promptly_and_are_stored_ready(api: Api, crm_dir: Path) -> None:
    cloudlet = edge_cloudlet(FAKE_STEP_DELAY="0")
    crm, _ = onboard(api, cloudlet, crm_dir)
    for n in range(10):
        cluster = docker_cluster(cloudlet, f"fast{n}")
        started = time.monotonic()
        messages = ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
        took = time.monotonic() - started
        assert took < FAST, f"create {n} took {took:.1f}s: {messages}"
        assert messages[-1] == "Created ClusterInst successfully", messages
        [shown] = show_clusters(api, cluster.key)  # no settling: READY at once
        assert shown.state == TS.READY, (n, TS.TrackedState.Name(shown.state))
        # a delete right after the create is not refused as busy
        started = time.monotonic()
        deleted = ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
        assert time.monotonic() - started < FAST, deleted
        assert deleted[-1] == "Deleted ClusterInst successfully", deleted
        assert show_clusters(api, cluster.key) == []
    assert_no_refs(api, cloudlet.key)
    offboard(api, cloudlet, crm)


def test_on_edge_cloudlet_update_waits_for_the_crm(api: Api, crm_dir: Path) -> None:
    cloudlet = edge_cloudlet(FAKE_STEP_DELAY="0")
    crm, _ = onboard(api, cloudlet, crm_dir)
    update = cloudlet_pb2.Cloudlet(key=cloudlet.key, fields=["19"])
    update.env_var.update({**cloudlet.env_var, "FAKE_MARK": "1"})
    messages = ok(api.cloudlets.UpdateCloudlet(update, timeout=TIMEOUT))
    # the CRM's own progress reached the caller: it had started (and finished) the update
    assert messages == [
        "CloudletStateUpgrade", "Updating envvar, FAKE_MARK=1",
        "Updating envvar, FAKE_STEP_DELAY=0", "Cloudlet updated successfully",
    ]  # fmt: skip
    [shown] = api.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=5)
    assert shown.state == TS.READY
    assert cloudlet_info(api, cloudlet.key).state == CS.CLOUDLET_STATE_READY
    offboard(api, cloudlet, crm)


def test_delete_error_after_a_crm_restart_reaches_the_caller(api: Api, crm_dir: Path) -> None:
    cloudlet = edge_cloudlet(FAKE_STEP_DELAY="0", FAKE_PAUSE_AT="delete_appinst:step1")
    crm, _ = onboard(api, cloudlet, crm_dir)
    cluster = docker_cluster(cloudlet, "host")
    ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    inst = app_inst(ensure_app(api, "docker"), cluster, "stuck")
    ok(api.app_insts.CreateAppInst(inst, timeout=TIMEOUT))
    messages, err = delete_across_crm_restart(api, crm, inst)
    code, text = details(err)
    assert code == grpc.StatusCode.FAILED_PRECONDITION, text
    # lines from before the kill, then the restarted CRM's own (its status starts over)
    assert messages[0] == "Deleting", messages
    assert messages[-1] == "DeleteError", messages
    [stored] = show_insts(api, inst.key)
    assert stored.state == TS.DELETE_ERROR
    assert list(stored.errors) == [text]
    ok(
        api.cloudlets.UpdateCloudlet(
            cloudlet_pb2.Cloudlet(
                key=cloudlet.key, fields=["19"], env_var={"FAKE_STEP_DELAY": "0"}
            ),
            timeout=TIMEOUT,
        )
    )
    ok(api.app_insts.DeleteAppInst(inst, timeout=TIMEOUT))
    ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
    assert_no_refs(api, cloudlet.key)
    offboard(api, cloudlet, crm)
