"""`kill -9` of the Controller process while ClusterInst and AppInst creates are in flight
(controller.md §2.7, §5.8; BEHAVIOURS.md row 77).

The Controller and a CCRM running the fake platform are real processes on one etcd and Redis.
§2.7 says what a restart keeps: every etcd object including the transitional states, and the
Redis progress streams; the in-flight API calls and their undo are lost. In CCRM mode the
CCRM's work is cancelled with the Controller's connection (§5.8), so nothing would ever move
those objects again: the restarted Controller's recovery fails them (CreateError, with a
message saying why), and from there a user deletes or re-creates them.
"""

from __future__ import annotations

import re
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from distributed_match_engine import loc_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    refs_pb2,
    refs_pb2_grpc,
    stream_pb2_grpc,
)
from influxdb import InfluxDBClient

from edge_cloud.localservers import ServerProcess
from tests.e2e.support import ControllerApi, Platform, ok, run, wait_for

TS = common_pb2
DEV = "dev"
FLAVORS = ("k9.small", "k9.medium", "k9.large")
FLAVOR_KEY = flavor_pb2.FlavorKey(name=FLAVORS[0])
STEP_DELAY = "1.0"  # seconds per fake step: a cluster create takes 3 s, an AppInst 2 s
TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(180)


@dataclass
class Api(ControllerApi):
    """The Controller's stubs, plus the refs and the progress streams."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cloudlet_refs = refs_pb2_grpc.CloudletRefsApiStub(self.channel)
        self.cluster_refs = refs_pb2_grpc.ClusterRefsApiStub(self.channel)
        self.app_inst_refs = refs_pb2_grpc.AppInstRefsApiStub(self.channel)
        self.streams = stream_pb2_grpc.StreamObjApiStub(self.channel)


@dataclass
class Call:
    """A streaming create read in a thread: its messages so far, and how it ended."""

    messages: list[str] = field(default_factory=list)
    error: grpc.RpcError | None = None
    done: threading.Event = field(default_factory=threading.Event)


def start(call: Iterator[Any]) -> Call:
    """Read `call` in a daemon thread (the test kills its server while it runs)."""
    out = Call()

    def read() -> None:
        try:
            for result in call:
                out.messages.append(result.message)
        except grpc.RpcError as err:
            out.error = err
        finally:
            out.done.set()

    threading.Thread(target=read, daemon=True).start()
    return out


@pytest.fixture(scope="module")
def platform(
    etcd_server: ServerProcess,
    redis_server: ServerProcess,
    influx_server: ServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Platform]:
    """A Controller and a CCRM of this module's own; each test uses cloudlets of its own."""
    running = Platform(
        etcd_server.client_url, redis_server.client_url, tmp_path_factory.mktemp("kill9")
    )
    running.controller.args += ["--influx-addr", influx_server.client_url]
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(autouse=True)
def restarted(platform: Platform) -> Iterator[None]:
    """A test that fails between its kill and its restart must not break the next one."""
    yield
    for daemon in (platform.ccrm, platform.controller):
        if daemon.process is not None:
            daemon.process.send_signal(signal.SIGCONT)  # a no-op unless a test stopped it
            if daemon.process.poll() is not None:
                daemon.start()


def connect(platform: Platform) -> tuple[grpc.Channel, Api]:
    channel = grpc.insecure_channel(platform.api_addr)
    return channel, Api(platform, channel)


def fake_cloudlet(api: Api, step_delay: str = STEP_DELAY) -> cloudlet_pb2.Cloudlet:
    key = cloudletkey_pb2.CloudletKey(organization="k9op", name=f"c{uuid.uuid4().hex[:8]}")
    cloudlet = cloudlet_pb2.Cloudlet(
        key=key,
        platform_type="fake",
        location=loc_pb2.Loc(latitude=48.1, longitude=11.6),
        num_dynamic_ips=10,
    )
    cloudlet.env_var["FAKE_STEP_DELAY"] = step_delay
    ok(api.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT))
    return cloudlet


def docker_cluster(cloudlet: cloudlet_pb2.Cloudlet, name: str) -> clusterinst_pb2.ClusterInst:
    cluster = clusterinst_pb2.ClusterInst(
        key=cluster_pb2.ClusterKey(name=name, organization=DEV),
        deployment="docker",
        flavor=flavor_pb2.FlavorKey(name=FLAVORS[0]),
    )
    cluster.cloudlet_key.CopyFrom(cloudlet.key)
    return cluster


def docker_app(name: str) -> app_pb2.App:
    return app_pb2.App(
        key=app_pb2.AppKey(organization=DEV, name=name, version="1.0"),
        deployment="docker",
        image_type=app_pb2.IMAGE_TYPE_DOCKER,
        image_path=f"docker.io/library/{name}:latest",
        access_ports="tcp:8080",
        default_flavor=flavor_pb2.FlavorKey(name=FLAVORS[0]),
    )


def app_inst(
    app: app_pb2.App, cluster: clusterinst_pb2.ClusterInst, name: str
) -> appinst_pb2.AppInst:
    inst = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name=name, organization=DEV),
        app_key=app.key,
        cluster_key=cluster.key,
        cloudlet_key=cluster.cloudlet_key,
    )
    return inst


def cluster_state(api: Api, key: cluster_pb2.ClusterKey) -> clusterinst_pb2.ClusterInst | None:
    shown = list(api.clusters.ShowClusterInst(clusterinst_pb2.ClusterInst(key=key), timeout=5))
    return shown[0] if shown else None


def inst_state(api: Api, key: appinst_pb2.AppInstKey) -> appinst_pb2.AppInst | None:
    shown = list(api.app_insts.ShowAppInst(appinst_pb2.AppInst(key=key), timeout=5))
    return shown[0] if shown else None


def refs(api: Api, cloudlet: cloudlet_pb2.Cloudlet, base: Any, app: app_pb2.App) -> Any:
    """(cluster names on the cloudlet, AppInst names on `base`, AppInst names of `app`)."""
    [cl] = api.cloudlet_refs.ShowCloudletRefs(refs_pb2.CloudletRefs(key=cloudlet.key), timeout=5)
    cluster_refs = list(
        api.cluster_refs.ShowClusterRefs(refs_pb2.ClusterRefs(key=base.key), timeout=5)
    )
    app_refs = list(api.app_inst_refs.ShowAppInstRefs(refs_pb2.AppInstRefs(key=app.key)))
    return (
        sorted(k.name for k in cl.cluster_insts),
        sorted(k.name for r in cluster_refs for k in r.apps),
        sorted(name for r in app_refs for name in r.insts),
    )


ABANDONED = re.compile(
    r"controller \S+@127\.0\.0\.1:\d+ restarted during the operation; "
    r"operation abandoned in state (CREATE_REQUESTED|CREATING)"
)


def test_kill9_during_cluster_and_app_inst_creates(platform: Platform) -> None:
    channel, api = connect(platform)
    with channel:
        api.registered("fake", 20)
        for i, name in enumerate(FLAVORS):
            api.create_flavor(name, disk=20 * (i + 1))
        apps = [docker_app(f"k9app{i}") for i in range(3)]
        for app in apps:
            api.apps.CreateApp(app, timeout=10)
        cloudlet = fake_cloudlet(api)
        base = docker_cluster(cloudlet, "base")
        ok(api.clusters.CreateClusterInst(base, timeout=TIMEOUT))
        inflight = docker_cluster(cloudlet, "inflight")
        inst = app_inst(apps[0], base, "inflight-ai")
        cluster_call = start(api.clusters.CreateClusterInst(inflight, timeout=TIMEOUT))
        inst_call = start(api.app_insts.CreateAppInst(inst, timeout=TIMEOUT))

        def both_creating() -> bool | None:
            c, i = cluster_state(api, inflight.key), inst_state(api, inst.key)
            if c is None or i is None:
                return None
            return True if (c.state, i.state) == (TS.CREATING, TS.CREATING) else None

        wait_for(both_creating, 10, "both creates to be Creating")
        before_kill = list(cluster_call.messages), list(inst_call.messages)
        # killed before the channel closes: a caller that goes away cancels its create
        platform.controller.kill()
    for call in (cluster_call, inst_call):
        assert call.done.wait(10)
        assert call.error is not None
        assert call.error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

    platform.controller.start()
    channel, api = connect(platform)
    with channel:
        # every acknowledged object is still there
        shown_flavors = {f.key.name for f in api.flavors.ShowFlavor(flavor_pb2.Flavor())}
        assert set(FLAVORS) <= shown_flavors
        shown_apps = {a.key.name for a in api.apps.ShowApp(app_pb2.App(), timeout=5)}
        assert {a.key.name for a in apps} <= shown_apps
        [stored_cloudlet] = api.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key))
        assert stored_cloudlet.state == TS.READY
        stored_base = cluster_state(api, base.key)
        assert stored_base is not None
        assert stored_base.state == TS.READY

        # the in-flight ones end in CreateError with the reason; they are not undone (§2.7)
        def failed() -> tuple[Any, Any] | None:
            c, i = cluster_state(api, inflight.key), inst_state(api, inst.key)
            assert c is not None, "the in-flight ClusterInst vanished"
            assert i is not None, "the in-flight AppInst vanished"
            if (c.state, i.state) != (TS.CREATE_ERROR, TS.CREATE_ERROR):
                return None
            return c, i

        stuck_cluster, stuck_inst = wait_for(failed, 30, "recovery to fail the creates")
        for stuck in (stuck_cluster, stuck_inst):
            [message] = stuck.errors
            assert ABANDONED.fullmatch(message), message
        # the Redis progress streams survived: what the caller saw, then the reason
        for stream, seen in (
            (api.streams.StreamClusterInst(inflight.key, timeout=10), before_kill[0]),
            (api.streams.StreamAppInst(inst.key, timeout=10), before_kill[1]),
        ):
            lines, err = run(stream)
            assert lines[: len(seen)] == seen
            assert err is not None
            assert ABANDONED.search(err.details() or ""), err.details()

        # refs name exactly the stored objects, failed ones included until deleted
        assert refs(api, cloudlet, base, apps[0]) == (
            ["base", "inflight"],
            ["inflight-ai"],
            ['{"name":"inflight-ai","organization":"dev"}'],
        )
        ok(api.app_insts.DeleteAppInst(inst, timeout=TIMEOUT))
        ok(api.clusters.DeleteClusterInst(inflight, timeout=TIMEOUT))
        assert refs(api, cloudlet, base, apps[0]) == (["base"], [], [])

        # and new creates work, on the same keys
        ok(api.clusters.CreateClusterInst(inflight, timeout=TIMEOUT))
        ok(api.app_insts.CreateAppInst(inst, timeout=TIMEOUT))
        assert refs(api, cloudlet, base, apps[0]) == (
            ["base", "inflight"],
            ["inflight-ai"],
            ['{"name":"inflight-ai","organization":"dev"}'],
        )
        done_cluster, done_inst = cluster_state(api, inflight.key), inst_state(api, inst.key)
        assert done_cluster is not None
        assert done_inst is not None
        assert (done_cluster.state, done_inst.state) == (TS.READY, TS.READY)


def test_kill9_after_the_commit_before_the_answer(platform: Platform) -> None:
    """The create is in etcd but the caller has heard nothing: its retry finds the object."""
    channel, api = connect(platform)
    with channel:
        api.registered("fake", 20)
        if not list(api.flavors.ShowFlavor(flavor_pb2.Flavor(key=FLAVOR_KEY), timeout=5)):
            api.create_flavor(FLAVORS[0], disk=20)  # unless the other test of the module did
        cloudlet = fake_cloudlet(api, step_delay="0.01")
        # a first create fetches the cloudlet's sizing facts from the CCRM before its commit;
        # later ones find them known and commit before they call the CCRM
        ok(api.clusters.CreateClusterInst(docker_cluster(cloudlet, "warm"), timeout=TIMEOUT))
        limbo = docker_cluster(cloudlet, "limbo")
        ccrm = platform.ccrm.process
        assert ccrm is not None
        ccrm.send_signal(signal.SIGSTOP)  # the Controller's call to the CCRM gets no answer
        try:
            call = start(api.clusters.CreateClusterInst(limbo, timeout=TIMEOUT))
            wait_for(lambda: cluster_state(api, limbo.key), 10, "the create's commit")
            assert call.messages == []  # committed, and nothing answered yet
            platform.controller.kill()
        finally:
            ccrm.send_signal(signal.SIGCONT)
    assert call.done.wait(10)
    assert call.error is not None
    assert call.messages == []

    platform.controller.start()
    channel, api = connect(platform)
    with channel:
        messages, err = run(api.clusters.CreateClusterInst(limbo, timeout=TIMEOUT))
        assert err is not None, messages
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS, err.details()
        # the original's key-error wording: the key message's name, `Cluster`
        assert err.details() == 'Cluster key {"name":"limbo","organization":"dev"} already exists'
        on_cloudlet = clusterinst_pb2.ClusterInst(cloudlet_key=cloudlet.key)
        shown = [c.key.name for c in api.clusters.ShowClusterInst(on_cloudlet, timeout=5)]
        assert sorted(shown) == ["limbo", "warm"]


def test_each_start_puts_the_edge_events_queries_in_influxdb(
    platform: Platform, influx_server: ServerProcess
) -> None:
    """§1.2 step 15 in the process: whichever start came last, the queries are there."""

    def created() -> list[str] | None:
        client = InfluxDBClient(
            host="127.0.0.1", port=influx_server.ports["client"], database="edgeevents_metrics"
        )
        try:
            result = client.query("SHOW CONTINUOUS QUERIES")
            names = sorted(str(q["name"]) for q in result.get_points("edgeevents_metrics"))
        finally:
            client.close()
        return names or None

    assert wait_for(created, 20, "the continuous queries") == [
        "device-metric-168h0m0s",
        "device-metric-24h0m0s",
        "device-metric-672h0m0s",
        "latency-metric-168h0m0s",
        "latency-metric-24h0m0s",
        "latency-metric-672h0m0s",
    ]
