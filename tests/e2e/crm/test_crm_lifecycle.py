"""The on-edge mode as operators run it: etcd, Redis, the Controller, the CCRM (it onboards the
site) and a CRM for the cloudlet, all real processes, driven through the Controller's API.

The cloudlets have `crm_on_edge` set, so after onboarding every ClusterInst and AppInst
operation goes from the Controller to the CRM over notify and its reports come back the same
way; the CRM reports the cloudlet's resource snapshot itself. Each test starts its own CRM.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import grpc
import pytest
from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import app_pb2, appinst_pb2, cloudlet_pb2, cloudletkey_pb2, common_pb2, flavor_pb2

from edge_cloud.objects import keys
from tests.e2e.platform.test_fake_lifecycle import (
    FLAVOR,
    TIMEOUT,
    Api,
    app_inst,
    assert_no_refs,
    cloudlet_info,
    details,
    docker_cluster,
    drop_env,
    ensure_app,
    k8s_cluster,
    ok,
    run,
    show_clusters,
    show_insts,
)
from tests.e2e.platform.test_fake_lifecycle import api as api  # the Controller + CCRM fixture
from tests.e2e.support import Daemon, clean_env, wait_for

TS = common_pb2
CS = appcommon_pb2

T = TypeVar("T")
TRANSIENT = frozenset(
    {TS.CREATE_REQUESTED, TS.CREATING, TS.UPDATE_REQUESTED, TS.UPDATING, TS.DELETE_REQUESTED,
     TS.DELETING}
)  # fmt: skip

pytestmark = pytest.mark.timeout(60)


def edge_cloudlet(**env: str) -> cloudlet_pb2.Cloudlet:
    key = cloudletkey_pb2.CloudletKey(organization="e2eop", name=f"e{uuid.uuid4().hex[:8]}")
    cloudlet = cloudlet_pb2.Cloudlet(
        key=key,
        platform_type="fake",
        location=loc_pb2.Loc(latitude=52.5, longitude=13.4),
        num_dynamic_ips=10,
        crm_on_edge=True,
    )
    # Steps take a little time: the Controller subscribes to an operation's reports only
    # after its commit, and a CRM that finishes within that moment leaves the caller
    # waiting until its deadline (seen with a zero delay; reported, not ours to fix here).
    cloudlet.env_var.update({"FAKE_STEP_DELAY": "0.05", **env})
    return cloudlet


class Crm:
    """One CRM process for one cloudlet, restartable with the same flags."""

    started: ClassVar[dict[Path, list[Crm]]] = {}

    def __init__(self, api: Api, cloudlet: cloudlet_pb2.Cloudlet, workdir: Path) -> None:
        Crm.started.setdefault(workdir, []).append(self)
        self.daemon = Daemon(
            "crm",
            [
                "--notify-addrs", f"127.0.0.1:{api.platform.notify_port}",
                "--cloudlet-key", keys.key_string(cloudlet.key),
                "--api-addr", "127.0.0.1:0",
                "--metrics-addr", "",
                "--test-mode",
                "--init-timeout", "20",
                "--shutdown-grace", "2",
            ],
            workdir,
            env=clean_env(),
        )  # fmt: skip

    def start(self) -> None:
        self.daemon.start()

    def exited(self, within: float) -> int:
        process = self.daemon.process
        assert process is not None
        return wait_for(process.poll, within, "the CRM to exit")


@pytest.fixture
def crm_dir(tmp_path: Path) -> Iterator[Path]:
    """A test's working directory; any CRM started in it is stopped at the end."""
    yield tmp_path
    for crm in Crm.started.pop(tmp_path, []):
        crm.daemon.stop(grace=5)


def onboard(api: Api, cloudlet: cloudlet_pb2.Cloudlet, workdir: Path) -> tuple[Crm, list[str]]:
    """CreateCloudlet, with the CRM started once the Controller has the cloudlet (as the
    platform's onboarding would start it); returns the CRM and the create's messages."""
    outcome: list[tuple[list[str], grpc.RpcError | None]] = []
    caller = threading.Thread(
        target=lambda: outcome.append(run(api.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT)))
    )
    caller.start()
    crm = Crm(api, cloudlet, workdir)
    try:
        wait_for(
            lambda: (
                list(api.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key))) or None
            ),
            10,
            "the cloudlet to be committed",
        )
        crm.start()
    finally:
        caller.join(TIMEOUT)
    assert not caller.is_alive()
    [(messages, err)] = outcome
    assert err is None, f"{err.code()}: {err.details()} after {messages}"
    return crm, messages


def snapshot(api: Api, cloudlet: cloudlet_pb2.Cloudlet) -> dict[str, int]:
    """What the CRM last reported as used on its cloudlet."""
    return {r.name: r.value for r in cloudlet_info(api, cloudlet.key).resources_snapshot.info}


def wait_snapshot(
    api: Api, cloudlet: cloudlet_pb2.Cloudlet, want: dict[str, int]
) -> dict[str, int]:
    """The snapshot once it holds `want` (the CRM refreshes it after each operation)."""

    def matches() -> dict[str, int] | None:
        found = snapshot(api, cloudlet)
        return found if all(found.get(k) == v for k, v in want.items()) else None

    return wait_for(matches, 10, f"the resource snapshot to show {want}")


def settled(show: Callable[[], list[T]]) -> T:
    """The one object `show` lists, once it is in a terminal state.

    The Controller publishes a CRM's report to the waiting caller just before it merges
    the report into etcd, so right after a call returns Show can still list the previous
    state for a moment.
    """

    def terminal() -> T | None:
        found: Any = show()
        assert len(found) == 1, found
        return found[0] if found[0].state not in TRANSIENT else None

    return wait_for(terminal, 10, "the object to settle")


def offboard(api: Api, cloudlet: cloudlet_pb2.Cloudlet, crm: Crm) -> None:
    """DeleteCloudlet: the CRM sees its cloudlet go and exits cleanly."""
    ok(api.cloudlets.DeleteCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=TIMEOUT))
    assert list(api.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key))) == []
    assert crm.exited(10) == 0


def delete_across_crm_restart(
    api: Api, crm: Crm, inst: appinst_pb2.AppInst
) -> tuple[list[str], grpc.RpcError | None]:
    """DeleteAppInst with the CRM killed and restarted once the delete reaches its pause
    point (the cloudlet sets FAKE_PAUSE_AT); returns the call's messages and error."""
    outcome: list[tuple[list[str], grpc.RpcError | None]] = []
    caller = threading.Thread(
        target=lambda: outcome.append(run(api.app_insts.DeleteAppInst(inst, timeout=TIMEOUT)))
    )
    caller.start()
    try:

        def deleting() -> bool | None:
            shown = show_insts(api, inst.key)
            return True if shown and shown[0].state == TS.DELETING else None

        wait_for(deleting, 10, "the AppInst delete to reach the pause point")
        crm.daemon.kill()
        crm.start()
    finally:
        caller.join(TIMEOUT)
    assert not caller.is_alive()
    [result] = outcome
    return result


def test_on_edge_lifecycle_is_driven_by_the_crm(api: Api, crm_dir: Path) -> None:
    cloudlet = edge_cloudlet()
    crm, messages = onboard(api, cloudlet, crm_dir)
    assert messages[-1] == "Created Cloudlet successfully", messages
    assert "Gathering Cloudlet Info" in messages, messages
    info = cloudlet_info(api, cloudlet.key)
    assert info.state == CS.CLOUDLET_STATE_READY
    assert info.controller_cache_received
    assert [f.name for f in info.flavors] == ["x1.tiny", "x1.small", "x1.small.gpu"]
    [shown] = api.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=5)
    assert (shown.state, shown.crm_on_edge) == (TS.READY, True)
    empty = snapshot(api, cloudlet)
    assert (empty["Instances"], empty["RAM"], empty["External IPs"]) == (2, 8192, 1)

    cluster = k8s_cluster(cloudlet, "edge")
    assert ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT)) == [
        "Creating", "First Create Task", "Second Create Task",
        "Getting Cluster Infra Resources", "Ready", "Created ClusterInst successfully",
    ]  # fmt: skip
    stored = settled(lambda: show_clusters(api, cluster.key))
    assert stored.state == TS.READY
    assert len(stored.resources.vms) == 2
    with_cluster = wait_snapshot(api, cloudlet, {"Instances": 4})
    assert with_cluster["RAM"] == empty["RAM"] + 2 * 4096

    app = ensure_app(api, "kubernetes")
    inst = app_inst(app, cluster, "edge1")
    assert ok(api.app_insts.CreateAppInst(inst, timeout=TIMEOUT)) == [
        "Creating", "Creating App Inst", "Ready", "Created AppInst successfully"
    ]  # fmt: skip
    stored_inst = settled(lambda: show_insts(api, inst.key))
    assert (stored_inst.state, stored_inst.power_state) == (TS.READY, appinst_pb2.POWER_ON)

    # a restarted CRM resyncs: READY objects are adopted, not redone, and still counted
    crm.daemon.stop()
    wait_for(
        lambda: cloudlet_info(api, cloudlet.key).state == CS.CLOUDLET_STATE_OFFLINE or None,
        10,
        "the Controller to see the CRM go",
    )
    crm.start()
    wait_for(
        lambda: cloudlet_info(api, cloudlet.key).state == CS.CLOUDLET_STATE_READY or None,
        20,
        "the restarted CRM to report READY",
    )
    assert wait_snapshot(api, cloudlet, {"Instances": 4}) == with_cluster
    [again] = show_clusters(api, cluster.key)
    assert (again.state, again.resources) == (TS.READY, stored.resources)
    [inst_again] = show_insts(api, inst.key)
    assert inst_again.state == TS.READY
    assert "Creating" not in crm.daemon.log.read_text()  # nothing was created again

    update = k8s_cluster(cloudlet, "edge")
    update.num_nodes, update.fields[:] = 2, ["14"]
    assert ok(api.clusters.UpdateClusterInst(update, timeout=TIMEOUT)) == [
        "Updating", "Updating Cluster Inst", "Getting Cluster Infra Resources", "Ready",
        "Updated ClusterInst successfully",
    ]  # fmt: skip
    stored = settled(lambda: show_clusters(api, cluster.key))
    assert (stored.state, stored.num_nodes, len(stored.resources.vms)) == (TS.READY, 2, 3)
    wait_snapshot(api, cloudlet, {"Instances": 5})

    assert ok(api.app_insts.DeleteAppInst(inst, timeout=TIMEOUT))[-1] == (
        "Deleted AppInst successfully"
    )
    assert show_insts(api, inst.key) == []
    assert ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))[-1] == (
        "Deleted ClusterInst successfully"
    )
    assert show_clusters(api, cluster.key) == []
    assert_no_refs(api, cloudlet.key)
    assert wait_snapshot(api, cloudlet, empty) == empty  # everything freed on the edge
    offboard(api, cloudlet, crm)


def test_on_edge_failure_is_create_error_with_its_message(api: Api, crm_dir: Path) -> None:
    cloudlet = edge_cloudlet(FAKE_FAIL_AT="create_cluster:step3")
    crm, _ = onboard(api, cloudlet, crm_dir)
    empty = snapshot(api, cloudlet)
    cluster = docker_cluster(cloudlet, "broken")
    messages, err = run(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    assert details(err) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "fake platform create cluster failed at step 3 (injected)",
    )
    assert messages == [
        "Creating", "First Create Task", "Second Create Task", "CreateError",
        "DELETING ClusterInst due to failures",
    ]  # fmt: skip
    assert show_clusters(api, cluster.key) == []
    assert_no_refs(api, cloudlet.key)
    assert wait_snapshot(api, cloudlet, empty) == empty  # the platform cleaned up

    # the CRM applies cloudlet updates too: without the failure point the create works
    assert drop_env(api, cloudlet, "FAKE_FAIL_AT")[-1] == "Cloudlet updated successfully"
    # (the Controller answers before the CRM is done: it waits for a READY CloudletInfo,
    # which the previous one already was; so wait for the cloudlet itself)
    show = cloudlet_pb2.Cloudlet(key=cloudlet.key)
    settled(lambda: list(api.cloudlets.ShowCloudlet(show, timeout=5)))
    ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    assert settled(lambda: show_clusters(api, cluster.key)).state == TS.READY
    ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
    offboard(api, cloudlet, crm)


def test_crm_killed_mid_create_ends_the_operation_after_restart(api: Api, crm_dir: Path) -> None:
    cloudlet = edge_cloudlet(FAKE_PAUSE_AT="create_cluster:step2")
    crm, _ = onboard(api, cloudlet, crm_dir)
    empty = snapshot(api, cloudlet)
    cluster = docker_cluster(cloudlet, "killed")
    outcome: list[tuple[list[str], grpc.RpcError | None]] = []
    caller = threading.Thread(
        target=lambda: outcome.append(run(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT)))
    )
    caller.start()
    try:

        def creating() -> bool | None:
            shown = show_clusters(api, cluster.key)
            return True if shown and shown[0].state == TS.CREATING else None

        wait_for(creating, 10, "the cluster create to reach the pause point")
        crm.daemon.kill()
        offline = wait_for(
            lambda: cloudlet_info(api, cloudlet.key).state == CS.CLOUDLET_STATE_OFFLINE or None,
            10,
            "the Controller to see the CRM gone",
        )
        assert offline
        crm.start()  # the supervisor restarts it
    finally:
        caller.join(TIMEOUT)
    assert not caller.is_alive()
    [(messages, err)] = outcome
    code, text = details(err)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert text.startswith("inconsistent Controller vs CRM state"), text
    assert messages[-1] == "DELETING ClusterInst due to failures", messages
    # terminal: the failed create is undone, and the restarted CRM counts nothing for it
    assert wait_for(lambda: show_clusters(api, cluster.key) == [] or None, 10, "the undo")
    assert_no_refs(api, cloudlet.key)
    assert cloudlet_info(api, cloudlet.key).state == CS.CLOUDLET_STATE_READY
    assert wait_snapshot(api, cloudlet, empty) == empty
    offboard(api, cloudlet, crm)


def test_crm_killed_mid_app_inst_delete_leaves_delete_error_then_retry_works(
    api: Api, crm_dir: Path
) -> None:
    cloudlet = edge_cloudlet(FAKE_PAUSE_AT="delete_appinst:step1")
    crm, _ = onboard(api, cloudlet, crm_dir)
    cluster = docker_cluster(cloudlet, "host")
    ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    settled(lambda: show_clusters(api, cluster.key))
    inst = app_inst(ensure_app(api, "docker"), cluster, "stuck")
    ok(api.app_insts.CreateAppInst(inst, timeout=TIMEOUT))
    settled(lambda: show_insts(api, inst.key))  # a delete needs it READY, not CREATING
    messages, err = delete_across_crm_restart(api, crm, inst)
    code, text = details(err)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert text.startswith("inconsistent Controller vs CRM state"), text
    assert messages, "progress was streamed before the kill"
    # a failed delete is not undone: the instance stays, in DeleteError, until a retry
    stored = settled(lambda: show_insts(api, inst.key))
    assert stored.state == TS.DELETE_ERROR
    assert list(stored.errors) == [text]

    assert drop_env(api, cloudlet, "FAKE_PAUSE_AT")[-1] == "Cloudlet updated successfully"
    settled(lambda: list(api.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key))))
    ok(api.app_insts.DeleteAppInst(inst, timeout=TIMEOUT))
    assert show_insts(api, inst.key) == []
    ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
    assert_no_refs(api, cloudlet.key)
    offboard(api, cloudlet, crm)


def test_ccrm_mode_refreshes_resources_after_each_operation(api: Api) -> None:
    """Without a CRM the Controller re-reads the resources from the CCRM after each cluster
    or AppInst operation (crm_platforms.md §5.3): nobody calls RefreshCloudletResources."""
    cloudlet = edge_cloudlet()
    cloudlet.crm_on_edge = False
    ok(api.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT))
    empty = snapshot(api, cloudlet)
    assert empty["Instances"] == 2
    cluster = docker_cluster(cloudlet, "counted")
    ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    with_cluster = wait_snapshot(api, cloudlet, {"Instances": 3})
    assert with_cluster["RAM"] == empty["RAM"] + 4096
    vm_app = app_pb2.App(
        deployment="vm",
        image_type=app_pb2.IMAGE_TYPE_QCOW,
        image_path="https://images.example.com/vm.qcow2#md5:" + "0" * 32,
        access_ports="tcp:2222",
        default_flavor=flavor_pb2.FlavorKey(name=FLAVOR),
    )
    vm_app.key.organization, vm_app.key.name, vm_app.key.version = "dev", "vmapp", "1.0"
    try:
        api.apps.CreateApp(vm_app, timeout=10)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    inst = app_inst(vm_app, cluster, "vm1")
    inst.ClearField("cluster_key")  # a VM app brings its own VM
    ok(api.app_insts.CreateAppInst(inst, timeout=TIMEOUT))
    wait_snapshot(api, cloudlet, {"Instances": 4})
    ok(api.app_insts.DeleteAppInst(inst, timeout=TIMEOUT))
    wait_snapshot(api, cloudlet, {"Instances": 3})
    ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
    assert wait_snapshot(api, cloudlet, empty) == empty
    ok(api.cloudlets.DeleteCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=TIMEOUT))


def test_deployment_local_cloudlet_gets_its_crm_from_the_ccrm(api: Api) -> None:
    """One-touch onboarding on one host (crm_platforms.md §6.5): the CCRM starts the CRM of a
    `deployment_local` cloudlet and stops it with the cloudlet."""
    cloudlet = edge_cloudlet()
    cloudlet.deployment_local = True
    messages = ok(api.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT))
    assert messages[-1] == "Created Cloudlet successfully", messages
    assert "Starting CRMServer, Starting the local CRM" in messages, messages
    assert cloudlet_info(api, cloudlet.key).state == CS.CLOUDLET_STATE_READY
    ccrm_log = api.platform.ccrm.log.read_text()
    started = re.findall(
        rf"started the local CRM of .*{cloudlet.key.name}.*?, pid (\d+)",
        ccrm_log.replace('\\"', ""),
    )
    assert len(started) == 1, ccrm_log[-2000:]
    pid = int(started[0])

    cluster = docker_cluster(cloudlet, "local")
    ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    assert settled(lambda: show_clusters(api, cluster.key)).state == TS.READY
    wait_snapshot(api, cloudlet, {"Instances": 3})  # reported by the local CRM
    ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))

    ok(api.cloudlets.DeleteCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=TIMEOUT))

    def gone() -> bool | None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return None

    assert wait_for(gone, 10, "the local CRM to be stopped")
