"""The whole platform as operators run it: etcd, the Controller and the CCRM as real processes,
driven through the Controller's gRPC API on fake cloudlets (issue 6).

One Controller + CCRM pair serves the module (its own etcd namespace); each test works on
cloudlets of its own, so the tests do not depend on each other's order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from distributed_match_engine import appcommon_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    refs_pb2,
    refs_pb2_grpc,
)

from tests.e2e.support import (
    ControllerApi,
    cloudlet_info,
    fake_cloudlet,
    ok,
    platform_fixture,
    run,
    wait_for,
)

TS = common_pb2
CS = appcommon_pb2
FLAVOR = "x1.small"
DEV = "dev"
TIMEOUT = 30.0

pytestmark = pytest.mark.timeout(60)


@dataclass
class Api(ControllerApi):
    """The Controller's stubs, plus CloudletRefs."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.refs = refs_pb2_grpc.CloudletRefsApiStub(self.channel)


api = platform_fixture(Api, "platform", flavor=FLAVOR)


@pytest.fixture(autouse=True)
def ccrm_running(api: Api) -> Iterator[None]:
    """A test that kills the CCRM and fails before restarting it must not break the next."""
    yield
    process = api.platform.ccrm.process
    if process is not None and process.poll() is not None:
        api.platform.ccrm.start()


# --- helpers -----------------------------------------------------------------------------------


CLOUDLET_CREATED = [
    "Setting physicalname to match cloudlet name",
    "Creating Cloudlet",
    "Starting CRMServer",
    "Gathering Cloudlet Info",
    "Created Cloudlet successfully",
]


def create_cloudlet(api: Api, **env: str) -> cloudlet_pb2.Cloudlet:
    cloudlet = fake_cloudlet(**env)
    assert ok(api.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT)) == CLOUDLET_CREATED
    return cloudlet


def usage(api: Api, cloudlet: cloudlet_pb2.Cloudlet) -> dict[str, int]:
    """What the fake cloud says is in use now (asks the CCRM for a fresh snapshot)."""
    api.cloudlets.RefreshCloudletResources(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=10)
    return {r.name: r.value for r in cloudlet_info(api, cloudlet.key).resources_snapshot.info}


def cloudlet_refs(api: Api, key: cloudletkey_pb2.CloudletKey) -> refs_pb2.CloudletRefs | None:
    shown = list(api.refs.ShowCloudletRefs(refs_pb2.CloudletRefs(key=key), timeout=5))
    return shown[0] if shown else None


def assert_no_refs(api: Api, key: cloudletkey_pb2.CloudletKey) -> None:
    refs = cloudlet_refs(api, key)
    if refs is not None:
        assert list(refs.cluster_insts) == []
        assert dict(refs.root_lb_ports) == {}
        assert refs.used_dynamic_ips == 0


def docker_cluster(cloudlet: cloudlet_pb2.Cloudlet, name: str) -> clusterinst_pb2.ClusterInst:
    cluster = clusterinst_pb2.ClusterInst(
        deployment="docker", flavor=flavor_pb2.FlavorKey(name=FLAVOR)
    )
    cluster.key.name, cluster.key.organization = name, DEV
    cluster.cloudlet_key.CopyFrom(cloudlet.key)
    return cluster


def k8s_cluster(cloudlet: cloudlet_pb2.Cloudlet, name: str) -> clusterinst_pb2.ClusterInst:
    cluster = clusterinst_pb2.ClusterInst(
        deployment="kubernetes",
        flavor=flavor_pb2.FlavorKey(name=FLAVOR),
        num_masters=1,
        num_nodes=1,
    )
    cluster.key.name, cluster.key.organization = name, DEV
    cluster.cloudlet_key.CopyFrom(cloudlet.key)
    return cluster


def show_clusters(api: Api, key: Any) -> list[clusterinst_pb2.ClusterInst]:
    return list(api.clusters.ShowClusterInst(clusterinst_pb2.ClusterInst(key=key), timeout=5))


def show_insts(api: Api, key: Any) -> list[appinst_pb2.AppInst]:
    return list(api.app_insts.ShowAppInst(appinst_pb2.AppInst(key=key), timeout=5))


def ensure_app(api: Api, deployment: str) -> app_pb2.App:
    app = app_pb2.App(
        deployment=deployment,
        image_type=app_pb2.IMAGE_TYPE_DOCKER,
        image_path="docker.io/library/nginx:latest",
        access_ports="tcp:80,udp:10000",
        default_flavor=flavor_pb2.FlavorKey(name=FLAVOR),
    )
    app.key.organization, app.key.name, app.key.version = DEV, f"{deployment}app", "1.0"
    try:
        api.apps.CreateApp(app, timeout=10)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    return app


def app_inst(
    app: app_pb2.App, cluster: clusterinst_pb2.ClusterInst, name: str
) -> appinst_pb2.AppInst:
    inst = appinst_pb2.AppInst(
        app_key=app.key, cluster_key=cluster.key, cloudlet_key=cluster.cloudlet_key
    )
    inst.key.name, inst.key.organization = name, DEV
    return inst


def drop_env(api: Api, cloudlet: cloudlet_pb2.Cloudlet, name: str) -> list[str]:
    """UpdateCloudlet with the cloudlet's env vars less `name` (field 19 replaces the map)."""
    update = cloudlet_pb2.Cloudlet(key=cloudlet.key, fields=["19"])
    update.env_var.update({k: v for k, v in cloudlet.env_var.items() if k != name})
    return ok(api.cloudlets.UpdateCloudlet(update, timeout=TIMEOUT))


def delete_cloudlet(api: Api, cloudlet: cloudlet_pb2.Cloudlet) -> None:
    ok(api.cloudlets.DeleteCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=TIMEOUT))
    assert list(api.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key))) == []


def details(err: grpc.RpcError | None) -> tuple[grpc.StatusCode, str]:
    assert err is not None, "the call succeeded"
    return err.code(), err.details() or ""


# --- the lifecycle -----------------------------------------------------------------------------


def test_cloudlet_cluster_app_inst_lifecycle_frees_everything(api: Api) -> None:
    cloudlet = create_cloudlet(api)
    info = cloudlet_info(api, cloudlet.key)
    assert info.state == CS.CLOUDLET_STATE_READY
    assert [f.name for f in info.flavors] == ["x1.tiny", "x1.small", "x1.small.gpu"]
    assert (info.os_max_ram, info.os_max_vcores) == (40960, 50)
    [shown] = api.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=5)
    assert shown.state == TS.READY
    empty = usage(api, cloudlet)
    # the two platform VMs of a fake cloudlet (platform VM and root LB, 4 GB each)
    assert (empty["Instances"], empty["RAM"], empty["External IPs"]) == (2, 8192, 1)

    cluster = k8s_cluster(cloudlet, "life")
    assert ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT)) == [
        "Creating", "First Create Task", "Second Create Task",
        "Getting Cluster Infra Resources", "Ready", "Created ClusterInst successfully",
    ]  # fmt: skip
    [stored] = show_clusters(api, cluster.key)
    assert stored.state == TS.READY
    assert stored.fqdn == f"life-dev.{cloudlet.key.name}-e2eop.local.appdnsroot.net"
    assert len(stored.resources.vms) == 2  # one master, one node
    assert [k.name for k in cloudlet_refs(api, cloudlet.key).cluster_insts] == ["life"]  # type: ignore[union-attr]
    with_cluster = usage(api, cloudlet)
    assert with_cluster["Instances"] == 4
    assert with_cluster["RAM"] == empty["RAM"] + 2 * 4096

    app = ensure_app(api, "kubernetes")
    inst = app_inst(app, cluster, "life1")
    assert ok(api.app_insts.CreateAppInst(inst, timeout=TIMEOUT)) == [
        "Creating", "Creating App Inst", "Ready", "Created AppInst successfully"
    ]  # fmt: skip
    [stored_inst] = show_insts(api, inst.key)
    assert stored_inst.state == TS.READY
    assert stored_inst.power_state == appinst_pb2.POWER_ON
    assert stored_inst.uri == f"shared.{cloudlet.key.name}-e2eop.local.appdnsroot.net"
    ports = {(p.proto, p.internal_port, p.public_port) for p in stored_inst.mapped_ports}
    assert ports == {
        (appcommon_pb2.L_PROTO_TCP, 80, 80),
        (appcommon_pb2.L_PROTO_UDP, 10000, 10000),
    }
    refs = cloudlet_refs(api, cloudlet.key)
    assert refs is not None
    assert {(port, n) for port, n in refs.root_lb_ports.items()} == {(80, 1), (10000, 2)}

    # update: one more node
    update = clusterinst_pb2.ClusterInst(key=cluster.key, num_nodes=2, fields=["14"])
    assert ok(api.clusters.UpdateClusterInst(update, timeout=TIMEOUT)) == [
        "Updating", "Updating Cluster Inst", "Getting Cluster Infra Resources", "Ready",
        "Updated ClusterInst successfully",
    ]  # fmt: skip
    [stored] = show_clusters(api, cluster.key)
    assert (stored.state, stored.num_nodes, len(stored.resources.vms)) == (TS.READY, 2, 3)
    assert usage(api, cloudlet)["Instances"] == 5

    # delete all
    messages = ok(api.app_insts.DeleteAppInst(inst, timeout=TIMEOUT))
    assert messages[-1] == "Deleted AppInst successfully"
    assert show_insts(api, inst.key) == []
    messages = ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
    assert messages[-1] == "Deleted ClusterInst successfully"
    assert show_clusters(api, cluster.key) == []
    assert_no_refs(api, cloudlet.key)
    assert usage(api, cloudlet) == empty
    delete_cloudlet(api, cloudlet)
    assert cloudlet_refs(api, cloudlet.key) is None
    assert list(api.infos.ShowCloudletInfo(cloudlet_pb2.CloudletInfo(key=cloudlet.key))) == []


# --- injected failures -------------------------------------------------------------------------


def test_cloudlet_create_failure_is_undone_with_its_message(api: Api) -> None:
    cloudlet = fake_cloudlet(FAKE_FAIL_AT="create_cloudlet:step2")
    messages, err = run(api.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT))
    failure = (
        "Cloudlet onboarding failed: fake platform create cloudlet failed at step 2 (injected)"
    )
    assert details(err) == (grpc.StatusCode.FAILED_PRECONDITION, failure)
    assert messages == [
        "Setting physicalname to match cloudlet name", "Creating Cloudlet", "Starting CRMServer",
        failure, "Deleting Cloudlet due to failures", "Deleting Cloudlet", "Stopping CRMServer",
        "Deleted Cloudlet successfully",
    ]  # fmt: skip
    # the create is undone, as in the original: nothing of the cloudlet is left
    assert list(api.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key))) == []
    assert list(api.infos.ShowCloudletInfo(cloudlet_pb2.CloudletInfo(key=cloudlet.key))) == []
    assert cloudlet_refs(api, cloudlet.key) is None


def test_cluster_create_failure_is_undone_and_leaves_nothing(api: Api) -> None:
    cloudlet = create_cloudlet(api, FAKE_FAIL_AT="create_cluster:step3")
    empty = usage(api, cloudlet)
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
    assert usage(api, cloudlet) == empty
    delete_cloudlet(api, cloudlet)


def test_app_inst_create_failure_is_undone_and_leaves_nothing(api: Api) -> None:
    cloudlet = create_cloudlet(api, FAKE_FAIL_AT="create_appinst:step1")
    cluster = docker_cluster(cloudlet, f"host{cloudlet.key.name}")
    ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    with_cluster = usage(api, cloudlet)
    inst = app_inst(ensure_app(api, "docker"), cluster, "broken")
    messages, err = run(api.app_insts.CreateAppInst(inst, timeout=TIMEOUT))
    code, text = details(err)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "fake platform create appinst failed at step 1 (injected)" in text, text
    assert messages == [
        "Creating", "Creating App Inst", "CreateError", "Deleting AppInst due to failure"
    ]  # fmt: skip
    assert show_insts(api, inst.key) == []
    refs = cloudlet_refs(api, cloudlet.key)
    assert refs is not None
    assert dict(refs.root_lb_ports) == {}
    assert usage(api, cloudlet) == with_cluster
    ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
    assert_no_refs(api, cloudlet.key)
    delete_cloudlet(api, cloudlet)


def test_app_inst_delete_failure_is_delete_error_then_retry_succeeds(api: Api) -> None:
    cloudlet = create_cloudlet(api, FAKE_FAIL_AT="delete_appinst:step1")
    cluster = docker_cluster(cloudlet, f"host{cloudlet.key.name}")
    ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    inst = app_inst(ensure_app(api, "docker"), cluster, "stuck")
    ok(api.app_insts.CreateAppInst(inst, timeout=TIMEOUT))
    messages, err = run(api.app_insts.DeleteAppInst(inst, timeout=TIMEOUT))
    assert messages == ["Deleting", "First Delete Task", "DeleteError"]
    code, text = details(err)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "fake platform delete appinst failed at step 1 (injected)" in text, text
    [stored] = show_insts(api, inst.key)
    assert stored.state == TS.DELETE_ERROR
    assert any("failed at step 1 (injected)" in e for e in stored.errors), stored.errors
    # still there, so still accounted for: its ports stay reserved until it is really gone
    refs = cloudlet_refs(api, cloudlet.key)
    assert refs is not None
    assert dict(refs.root_lb_ports) != {}

    assert drop_env(api, cloudlet, "FAKE_FAIL_AT") == [
        "CloudletStateUpgrade",
        "Updating envvar, FAKE_STEP_DELAY=0.01",
        "Cloudlet updated successfully",
    ]
    ok(api.app_insts.DeleteAppInst(inst, timeout=TIMEOUT))
    assert show_insts(api, inst.key) == []
    ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
    assert_no_refs(api, cloudlet.key)
    delete_cloudlet(api, cloudlet)


# --- a CCRM killed in the middle of an operation ----------------------------------------------


def test_ccrm_killed_during_cluster_create_reaches_a_terminal_state(api: Api) -> None:
    cloudlet = create_cloudlet(api, FAKE_PAUSE_AT="create_cluster:step2")
    empty = usage(api, cloudlet)
    cluster = docker_cluster(cloudlet, "paused")
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
        api.platform.ccrm.kill()
    finally:
        caller.join(20)
    assert not caller.is_alive()
    [(messages, err)] = outcome
    # the Controller sees the CCRM stream break, marks the create failed and undoes it (a
    # DB-only undo, controller.md §5.7: the platform cleans up its own failed creates)
    assert details(err)[0] == grpc.StatusCode.UNAVAILABLE
    assert messages[-1] == "DELETING ClusterInst due to failures", messages
    api.platform.ccrm.start()
    assert wait_for(lambda: show_clusters(api, cluster.key) == [] or None, 10, "the undo")
    assert_no_refs(api, cloudlet.key)

    # the restarted CCRM serves the cloudlet again: lift the pause, and the same create works
    drop_env(api, cloudlet, "FAKE_PAUSE_AT")
    assert usage(api, cloudlet) == empty
    ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    [stored] = show_clusters(api, cluster.key)
    assert stored.state == TS.READY
    ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
    delete_cloudlet(api, cloudlet)


def test_ccrm_killed_during_app_inst_delete_leaves_delete_error(api: Api) -> None:
    cloudlet = create_cloudlet(api, FAKE_PAUSE_AT="delete_appinst:step1")
    cluster = docker_cluster(cloudlet, f"host{cloudlet.key.name}")
    ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    inst = app_inst(ensure_app(api, "docker"), cluster, "killed")
    ok(api.app_insts.CreateAppInst(inst, timeout=TIMEOUT))
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
        api.platform.ccrm.kill()
    finally:
        caller.join(20)
    assert not caller.is_alive()
    [(messages, err)] = outcome
    assert details(err)[0] == grpc.StatusCode.UNAVAILABLE
    assert messages[:1] == ["Deleting"], messages
    # a failed delete is not undone: the instance stays, in DELETE_ERROR, still accounted for
    [stored] = show_insts(api, inst.key)
    assert stored.state == TS.DELETE_ERROR
    # (what the error says is checked in test_a_lost_ccrm_is_named_in_the_error)
    assert list(stored.errors) == [details(err)[1]]
    refs = cloudlet_refs(api, cloudlet.key)
    assert refs is not None
    assert dict(refs.root_lb_ports) != {}

    api.platform.ccrm.start()
    drop_env(api, cloudlet, "FAKE_PAUSE_AT")
    ok(api.app_insts.DeleteAppInst(inst, timeout=TIMEOUT))
    assert show_insts(api, inst.key) == []
    ok(api.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
    assert_no_refs(api, cloudlet.key)
    delete_cloudlet(api, cloudlet)


def test_a_lost_ccrm_is_named_in_the_error(api: Api) -> None:
    cloudlet = create_cloudlet(api, FAKE_PAUSE_AT="create_cluster:step2")
    cluster = docker_cluster(cloudlet, f"lost{cloudlet.key.name}")
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
        api.platform.ccrm.kill()
    finally:
        caller.join(20)
        api.platform.ccrm.start()
    [(messages, err)] = outcome
    code, text = details(err)
    assert code == grpc.StatusCode.UNAVAILABLE
    addr = f"127.0.0.1:{api.platform.ccrm_port}"
    assert text.startswith(
        f"lost contact with the CCRM at {addr} (node type ccrm) while creating ClusterInst "
    ), text
    assert cluster.key.name in text, text
    # the caller saw the same words, and the object reached a terminal state: the failed
    # create was undone
    assert messages[-1] == "DELETING ClusterInst due to failures", messages
    assert wait_for(lambda: show_clusters(api, cluster.key) == [] or None, 10, "the undo")
    assert_no_refs(api, cloudlet.key)
    drop_env(api, cloudlet, "FAKE_PAUSE_AT")
    delete_cloudlet(api, cloudlet)
