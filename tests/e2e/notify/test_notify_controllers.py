"""Notify against real Controller processes on a real etcd: what a CRM or DME sees (notify issue).

Each test runs its own Controllers (`python -m services.controller`) on a fresh etcd key
namespace, and `NotifyClient`s in the test process: filtering by cloudlet, CloudletInfo
driving the Cloudlet, reconnect after `kill -9`, delta resync against a full one, the full
fallback after an etcd compaction, and two controllers sharing one region.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import (
    ccrm_pb2_grpc,
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    cloudletkey_pb2,
    common_pb2,
    flavor_pb2,
    flavor_pb2_grpc,
    notice_pb2,
    notice_pb2_grpc,
    settings_pb2,
)
from google.protobuf.message import Message

from edge_cloud import localservers
from edge_cloud.localservers import ServerProcess
from edge_cloud.notify import (
    PROTOCOL_VERSION,
    Action,
    NotifyCache,
    NotifyClient,
    SyncInfo,
    key_string,
)
from edge_cloud.notify._wire import data_notice
from edge_cloud.objects import codec
from edge_cloud.store import EtcdStore
from tests.integration.helpers import eventually

ROOT = Path(__file__).resolve().parents[3]
PLATFORM = "fakeedge"
CS = appcommon_pb2
READY = CS.CLOUDLET_STATE_READY
OFFLINE = CS.CLOUDLET_STATE_OFFLINE
TS = common_pb2

pytestmark = pytest.mark.timeout(60)


# --- processes --------------------------------------------------------------------------------


class FakeCcrm(ccrm_pb2_grpc.CloudletPlatformAPIServicer):
    """A CCRM that onboards every cloudlet at once (one status line) and deletes likewise."""

    async def ApplyCloudlet(
        self, request: cloudlet_pb2.Cloudlet, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[cloudlet_pb2.CloudletInfo]:
        info = cloudlet_pb2.CloudletInfo(key=request.key)
        info.fields.append("11")
        info.status.msgs.append(
            "Onboarding cloudlet" if request.state == TS.CREATE_REQUESTED else "Offboarding"
        )
        yield info


class Controller:
    """`python -m services.controller` on fixed ports (restartable), killed in teardown."""

    def __init__(
        self, name: str, etcd: ServerProcess, redis: ServerProcess, namespace: str, ccrm: str
    ) -> None:
        self.name = name
        self.api_port = localservers.free_port()
        self.notify_port = localservers.free_port()
        self.namespace = namespace
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        self.env["EDGE_ETCD_URLS"] = etcd.client_url
        self.redis = redis.client_url
        self.ccrm = ccrm
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    @property
    def notify(self) -> str:
        return f"127.0.0.1:{self.notify_port}"

    def spawn(self, tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
        self.runs += 1
        ready = tmp / f"{self.name}-ready{self.runs}.json"
        log = (tmp / f"{self.name}-{self.runs}.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "services.controller",
                "--api-addr", self.api,
                "--notify-addr", self.notify,
                "--metrics-addr", "",
                "--http-addr", "127.0.0.1:0",
                "--redis-standalone-addr", self.redis,
                "--platform-service-addrs", f"ccrm={self.ccrm}",
                "--etcd-namespace", self.namespace,
                "--ready-file", str(ready),
                "--shutdown-grace", "2",
            ],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        return self.process, ready

    async def started(self, process: subprocess.Popen[bytes], ready: Path) -> None:
        async def up() -> None:
            if process.poll() is not None:
                pytest.fail(f"controller {self.name} exited with {process.returncode}")
            assert await asyncio.to_thread(ready.exists)

        await eventually(up, within=30)
        assert json.loads(await asyncio.to_thread(ready.read_text))["notify"] == self.notify_port

    def kill(self) -> None:
        """SIGKILL: no flush, no cleanup, the streams just break."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


class Region:
    """Controllers sharing one etcd namespace and Redis, plus a fake CCRM, for one test."""

    def __init__(self, etcd: ServerProcess, redis: ServerProcess, tmp: Path) -> None:
        self.etcd = etcd
        self.redis = redis
        self.tmp = tmp
        self.namespace = f"/e2e/notify/{uuid.uuid4().hex[:12]}/"
        self.controllers: list[Controller] = []
        self.ccrm_server = grpc.aio.server()
        ccrm_pb2_grpc.add_CloudletPlatformAPIServicer_to_server(FakeCcrm(), self.ccrm_server)
        self.ccrm = f"127.0.0.1:{self.ccrm_server.add_insecure_port('127.0.0.1:0')}"
        self.channels: list[grpc.aio.Channel] = []
        self.clients: list[NotifyClient] = []

    async def start(self, *names: str) -> list[Controller]:
        await self.ccrm_server.start()
        made = [Controller(n, self.etcd, self.redis, self.namespace, self.ccrm) for n in names]
        self.controllers.extend(made)
        spawned = [c.spawn(self.tmp) for c in made]  # in parallel: each takes a while
        for ctl, (process, ready) in zip(made, spawned, strict=True):
            await ctl.started(process, ready)
        return made

    async def restart(self, ctl: Controller) -> None:
        ctl.kill()
        await ctl.started(*ctl.spawn(self.tmp))

    def channel(self, ctl: Controller) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(ctl.api)
        self.channels.append(channel)
        return channel

    def client(self, *ctls: Controller, name: str, **kwargs: Any) -> NotifyClient:
        kwargs.setdefault("backoff_initial", 0.05)
        kwargs.setdefault("backoff_max", 0.3)
        client = NotifyClient([c.notify for c in ctls], name=name, **kwargs)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        for channel in self.channels:
            await channel.close()
        for ctl in self.controllers:
            ctl.kill()
        await self.ccrm_server.stop(None)


@pytest.fixture
async def region(
    etcd_server: ServerProcess, redis_server: ServerProcess, tmp_path: Path
) -> AsyncIterator[Region]:
    region = Region(etcd_server, redis_server, tmp_path)
    try:
        yield region
    finally:
        await region.close()


@pytest.fixture
async def private_region(
    private_etcd: ServerProcess, redis_server: ServerProcess, tmp_path: Path
) -> AsyncIterator[Region]:
    """A region on an etcd of its own (compacting the shared one would disturb other tests)."""
    region = Region(private_etcd, redis_server, tmp_path)
    try:
        yield region
    finally:
        await region.close()


# --- helpers ----------------------------------------------------------------------------------


def flavor(name: str, ram: int = 1024) -> flavor_pb2.Flavor:
    return flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name=name), ram=ram, vcpus=1, disk=10)


def cloudlet_key(org: str, name: str) -> cloudletkey_pb2.CloudletKey:
    return cloudletkey_pb2.CloudletKey(organization=org, name=name)


def snapshot(client: NotifyClient, *types: type[Message]) -> dict[str, dict[str, bytes]]:
    """The client's caches as type → key → serialized message (deterministic)."""
    out: dict[str, dict[str, bytes]] = {}
    for cls in types:
        cache: NotifyCache[Any] = client.cache(cls)
        out[cache.type_name] = {
            k: v.SerializeToString(deterministic=True) for k, v in cache.items()
        }
    return out


class Recorder:
    """Counts every callback of a cache: ("update", key) / ("delete", key)."""

    def __init__(self, cache: NotifyCache[Any]) -> None:
        self.events: list[tuple[str, str]] = []
        self.syncs: list[SyncInfo] = []

        @cache.on_update
        async def updated(new: Any, old: Any) -> None:
            self.events.append(("update", cache.key_of(new)))

        @cache.on_delete
        async def deleted(old: Any) -> None:
            self.events.append(("delete", cache.key_of(old)))

    def watch_syncs(self, client: NotifyClient) -> None:
        @client.on_synced
        async def synced(info: SyncInfo) -> None:
            self.syncs.append(info)


async def synced(client: NotifyClient, within: float = 15) -> None:
    await client.start()
    async with asyncio.timeout(within):
        await client.wait_synced()


async def resynced(client: NotifyClient, after: int, within: float = 15) -> None:
    async with asyncio.timeout(within):
        await client.wait_resynced(after)


async def register_platform(region: Region, ctl: Controller) -> None:
    """Register the fake platform as a CCRM does: PlatformFeatures over notify."""
    ccrm = region.client(ctl, name="ccrm")
    await ccrm.start()
    ccrm.send(cloudlet_pb2.PlatformFeatures(platform_type=PLATFORM, node_type="ccrm"))
    stub = cloudlet_pb2_grpc.PlatformFeaturesApiStub(region.channel(ctl))

    async def registered() -> None:
        shown = stub.ShowPlatformFeatures(cloudlet_pb2.PlatformFeatures(), timeout=5)
        assert [f.platform_type async for f in shown] == [PLATFORM]

    await eventually(registered, within=10)


def restricted_cloudlet(key: cloudletkey_pb2.CloudletKey) -> cloudlet_pb2.Cloudlet:
    """A CRM-on-edge cloudlet with restricted infra access: created Ready with no CCRM call."""
    return cloudlet_pb2.Cloudlet(
        key=key,
        location=loc_pb2.Loc(latitude=1, longitude=2),
        num_dynamic_ips=2,
        platform_type=PLATFORM,
        infra_api_access=cloudlet_pb2.RESTRICTED_ACCESS,
        infra_config=cloudlet_pb2.InfraConfig(
            flavor_name="infra.small", external_network_name="ext"
        ),
    )


async def create_cloudlet(
    api: cloudlet_pb2_grpc.CloudletApiStub, cl: cloudlet_pb2.Cloudlet
) -> list[str]:
    return [r.message async for r in api.CreateCloudlet(cl, timeout=20)]


async def show_infos(channel: grpc.aio.Channel) -> dict[str, cloudlet_pb2.CloudletInfo]:
    stub = cloudlet_pb2_grpc.CloudletInfoApiStub(channel)
    shown = stub.ShowCloudletInfo(cloudlet_pb2.CloudletInfo(), timeout=5)
    return {i.key.name: i async for i in shown}


async def show_cloudlets(channel: grpc.aio.Channel) -> dict[str, cloudlet_pb2.Cloudlet]:
    stub = cloudlet_pb2_grpc.CloudletApiStub(channel)
    shown = stub.ShowCloudlet(cloudlet_pb2.Cloudlet(), timeout=5)
    return {c.key.name: c async for c in shown}


async def show_flavors(channel: grpc.aio.Channel) -> dict[str, flavor_pb2.Flavor]:
    stub = flavor_pb2_grpc.FlavorApiStub(channel)
    return {f.key.name: f async for f in stub.ShowFlavor(flavor_pb2.Flavor(), timeout=5)}


# --- tests ------------------------------------------------------------------------------------


async def test_filtered_client_gets_only_its_cloudlet(region: Region) -> None:
    [ctl] = await region.start("a")
    await register_platform(region, ctl)
    org = f"op{uuid.uuid4().hex[:6]}"
    api = cloudlet_pb2_grpc.CloudletApiStub(region.channel(ctl))
    for name in ("ca", "cb"):
        lines = await create_cloudlet(api, restricted_cloudlet(cloudlet_key(org, name)))
        assert lines[-1].startswith("Cloudlet configured successfully"), lines

    crm = region.client(ctl, name="crm-ca", filter_cloudlet_key=True)
    cloudlets = crm.cache(cloudlet_pb2.Cloudlet)
    flavors = crm.cache(flavor_pb2.Flavor)
    # the server's filter learns the client's cloudlet from the CloudletInfo it sends up
    crm.send(cloudlet_pb2.CloudletInfo(key=cloudlet_key(org, "ca"), state=CS.CLOUDLET_STATE_READY))
    everyone = region.client(ctl, name="dme")
    all_cloudlets = everyone.cache(cloudlet_pb2.Cloudlet)
    await synced(crm)
    await synced(everyone)
    assert sorted(c.key.name for c in cloudlets.values()) == ["ca"]
    assert sorted(c.key.name for c in all_cloudlets.values()) == ["ca", "cb"]

    # a third cloudlet and a flavor later: the flavor (not cloudlet-scoped) comes, the cloudlet not
    await create_cloudlet(api, restricted_cloudlet(cloudlet_key(org, "cc")))
    await flavor_pb2_grpc.FlavorApiStub(region.channel(ctl)).CreateFlavor(flavor("x1"), timeout=10)

    async def arrived() -> None:
        assert sorted(c.key.name for c in all_cloudlets.values()) == ["ca", "cb", "cc"]
        assert [f.key.name for f in flavors.values()] == ["x1"]

    await eventually(arrived, within=10)
    await asyncio.sleep(0.3)  # anything wrongly forwarded would have come with the flavor
    assert sorted(c.key.name for c in cloudlets.values()) == ["ca"]


async def test_cloudlet_info_from_the_crm_drives_the_cloudlet(region: Region) -> None:
    [ctl] = await region.start("a")
    await register_platform(region, ctl)
    key = cloudlet_key(f"op{uuid.uuid4().hex[:6]}", "edge1")
    channel = region.channel(ctl)
    api = cloudlet_pb2_grpc.CloudletApiStub(channel)
    cloudlet = cloudlet_pb2.Cloudlet(
        key=key,
        location=loc_pb2.Loc(latitude=1, longitude=2),
        num_dynamic_ips=2,
        platform_type=PLATFORM,
        crm_on_edge=True,
    )
    create = asyncio.create_task(create_cloudlet(api, cloudlet))

    async def waiting_for_crm() -> None:
        assert not create.done(), create.result()
        shown = await show_cloudlets(channel)
        assert "edge1" in shown
        assert shown["edge1"].state in (TS.CREATE_REQUESTED, TS.CREATING), shown

    await eventually(waiting_for_crm, within=10)

    crm = region.client(ctl, name="crm-edge1", filter_cloudlet_key=True)
    cloudlets = crm.cache(cloudlet_pb2.Cloudlet)
    crm.send(cloudlet_pb2.CloudletInfo(key=key, state=CS.CLOUDLET_STATE_READY, os_max_ram=4096))
    await synced(crm)
    async with asyncio.timeout(20):
        lines = await create
    assert lines[-1] == "Created Cloudlet successfully", lines

    infos = await show_infos(channel)
    assert infos["edge1"].state == CS.CLOUDLET_STATE_READY
    assert infos["edge1"].os_max_ram == 4096
    assert (await show_cloudlets(channel))["edge1"].state == TS.READY

    async def cloudlet_ready_in_cache() -> None:
        [got] = cloudlets.values()
        assert got.state == TS.READY

    await eventually(cloudlet_ready_in_cache, within=10)
    # Its going OFFLINE when the CRM disconnects: test_disconnected_crm_goes_offline.


async def stream_notice(ctl: Controller, name: str) -> Any:
    """A raw notify stream (VERSION exchanged), for ending it exactly as a test needs."""
    channel = grpc.aio.insecure_channel(ctl.notify)
    call = notice_pb2_grpc.NotifyApiStub(channel).StreamNotice()
    await call.write(
        notice_pb2.Notice(action=notice_pb2.VERSION, version=PROTOCOL_VERSION, tags={"name": name})
    )
    async with asyncio.timeout(10):
        reply = await call.read()
    assert reply.action == notice_pb2.VERSION
    return channel, call


async def test_disconnected_crm_goes_offline(region: Region) -> None:
    """A CRM's stream ends (half-close, then the call is cancelled as a client exiting does):
    its CloudletInfo must go OFFLINE, however the end reaches the server."""
    [ctl] = await region.start("a")
    channel = region.channel(ctl)
    org = f"op{uuid.uuid4().hex[:6]}"
    names = [f"edge{i:02d}" for i in range(30)]  # a flush long enough to be cut short
    crm_channel, call = await stream_notice(ctl, "crm-multi")
    try:
        for name in names:
            info = cloudlet_pb2.CloudletInfo(key=cloudlet_key(org, name), state=READY)
            await call.write(data_notice(Action.UPDATE, info))

        async def ready() -> None:
            infos = await show_infos(channel)
            assert sorted(infos) == names
            assert {i.state for i in infos.values()} == {READY}

        await eventually(ready, within=10)
        await call.done_writing()  # the server's read loop sees the end and starts flushing
        await asyncio.sleep(0.02)
        call.cancel()  # ... and grpc.aio cancels the handler task while it does
    finally:
        await crm_channel.close()

    async def offline() -> None:
        infos = await show_infos(channel)
        assert [n for n, i in sorted(infos.items()) if i.state != OFFLINE] == []

    await eventually(offline, within=5)


async def test_kill_9_reconnect_is_a_delta_equal_to_a_full_sync(
    region: Region, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await region.start("a", "b")
    flavors_api = flavor_pb2_grpc.FlavorApiStub(region.channel(a))
    for name in ("keep", "gone", "changed"):
        await flavors_api.CreateFlavor(flavor(name), timeout=10)

    # Clients pick a random address first; pin it to A so both sync via A.
    monkeypatch.setattr("edge_cloud.notify.client.random.randrange", lambda n: 0)
    # A first reconnect attempt after >= 1 s: the changes below happen while disconnected.
    slow = {"backoff_initial": 2.0, "backoff_max": 2.0}
    delta = region.client(a, b, name="dme-delta", **slow)
    full = region.client(a, b, name="dme-full", delta=False, **slow)
    recorders = {}
    for client in (delta, full):
        client.cache(settings_pb2.Settings)
        recorders[client] = rec = Recorder(client.cache(flavor_pb2.Flavor))
        rec.watch_syncs(client)
        await synced(client)
        assert client.server_addr == a.notify
        rec.events.clear()
    generations = {c: c.sync_generation for c in (delta, full)}
    stats_before = (delta.stats.full_syncs, delta.stats.delta_syncs)
    revision_before = delta.synced_revision
    assert revision_before is not None

    a.kill()
    channel = region.channel(b)
    api = flavor_pb2_grpc.FlavorApiStub(channel)

    async def disconnected() -> None:
        assert not delta.connected
        assert not full.connected

    await eventually(disconnected, within=5)
    await api.DeleteFlavor(flavor("gone"), timeout=10)
    await api.DeleteFlavor(flavor("changed"), timeout=10)
    await api.CreateFlavor(flavor("changed", ram=2048), timeout=10)
    await api.CreateFlavor(flavor("new"), timeout=10)
    # (a reconnect before this point would make the changes live ones, not a resync)
    assert (delta.stats.connects, full.stats.connects) == (1, 1)
    for client in (delta, full):
        await resynced(client, generations[client])
        assert client.server_addr == b.notify

    # the reconnect was a delta; the delta=False client took a full send-all
    assert (delta.stats.full_syncs, delta.stats.delta_syncs) == (
        stats_before[0],
        stats_before[1] + 1,
    )
    assert recorders[delta].syncs[-1].delta is True
    assert recorders[full].syncs[-1].delta is False
    assert delta.synced_revision is not None
    assert delta.synced_revision > revision_before

    # identical caches: the delta client, the full client, a fresh client, and the API
    fresh = region.client(b, name="dme-fresh")
    fresh.cache(settings_pb2.Settings)
    fresh.cache(flavor_pb2.Flavor)
    await synced(fresh)
    types = (flavor_pb2.Flavor, settings_pb2.Settings)
    assert snapshot(delta, *types) == snapshot(fresh, *types)
    assert snapshot(full, *types) == snapshot(fresh, *types)
    shown = await show_flavors(channel)
    assert sorted(shown) == ["changed", "keep", "new"]
    flavors = delta.cache(flavor_pb2.Flavor)
    assert {k: v.SerializeToString(deterministic=True) for k, v in flavors.items()} == {
        flavors.key_of(f): f.SerializeToString(deterministic=True) for f in shown.values()
    }

    # exactly one callback per real change (delete + re-create of "changed" is one update)
    key = flavors.key_of
    expected = sorted(
        [
            ("delete", key(flavor("gone"))),
            ("update", key(flavor("changed"))),
            ("update", key(flavor("new"))),
        ]
    )
    for client in (delta, full):
        assert sorted(recorders[client].events) == expected, client.stats

    # and the client follows live changes on its new controller
    await api.DeleteFlavor(flavor("keep"), timeout=10)

    async def followed() -> None:
        assert key(flavor("keep")) not in flavors
        assert snapshot(delta, *types) == snapshot(fresh, *types)

    await eventually(followed, within=10)
    assert recorders[delta].events.count(("delete", key(flavor("keep")))) == 1


async def etcd_flavors(region: Region, revision: int | None = None) -> dict[str, bytes]:
    """The Flavors as etcd holds them now (or at `revision`): key string → serialized."""
    store = await EtcdStore.connect(region.etcd.client_url, namespace=region.namespace)
    try:
        kvs, _ = await store.range("1/Flavor/", revision=revision)
    finally:
        await store.close()
    out = {}
    for kv in kvs:
        obj = codec.decode(flavor_pb2.Flavor, kv.value)
        out[key_string(obj)] = obj.SerializeToString(deterministic=True)
    return out


async def test_compaction_falls_back_to_a_full_send(private_region: Region) -> None:
    region = private_region
    [ctl] = await region.start("a")
    api = flavor_pb2_grpc.FlavorApiStub(region.channel(ctl))
    for name in ("keep", "gone", "gone2"):
        await api.CreateFlavor(flavor(name), timeout=10)

    client = region.client(ctl, name="dme")
    flavors = client.cache(flavor_pb2.Flavor)
    rec = Recorder(flavors)
    rec.watch_syncs(client)
    await synced(client)
    key = flavors.key_of

    def cached() -> dict[str, bytes]:
        return {k: v.SerializeToString(deterministic=True) for k, v in flavors.items()}

    assert cached() == await etcd_flavors(region)

    async def offline_change_and_restart(
        delete: str, create: str, *, compact: bool
    ) -> tuple[int, int]:
        """Disconnect the client, change, maybe compact, restart the controller, reconnect."""
        await client.close()  # disconnected; caches and revision kept
        rec.events.clear()
        generation = client.sync_generation
        before = (client.stats.full_syncs, client.stats.delta_syncs)
        await api.DeleteFlavor(flavor(delete), timeout=10)
        await api.CreateFlavor(flavor(create), timeout=10)
        if compact:
            store = await EtcdStore.connect(region.etcd.client_url)
            try:
                await store.compact(await store.revision(), physical=True)
            finally:
                await store.close()
        # A fresh controller has no delete log of its own, only etcd's history to offer.
        await region.restart(ctl)
        await client.start()
        await resynced(client, generation)
        assert sorted(rec.events) == sorted(
            [("delete", key(flavor(delete))), ("update", key(flavor(create)))]
        )
        assert cached() == await etcd_flavors(region)
        return client.stats.full_syncs - before[0], client.stats.delta_syncs - before[1]

    # with etcd's history intact the restarted controller serves a delta from it ...
    assert await offline_change_and_restart("gone", "new", compact=False) == (0, 1)
    assert rec.syncs[-1].delta is True
    # ... once compacted away, a full send-all, and the cache still equals etcd
    assert await offline_change_and_restart("gone2", "new2", compact=True) == (1, 0)
    assert rec.syncs[-1].delta is False
    assert sorted(f.key.name for f in flavors.values()) == ["keep", "new", "new2"]


async def test_client_on_one_controller_sees_changes_through_the_other(region: Region) -> None:
    a, b = await region.start("a", "b")
    client = region.client(a, name="dme")
    flavors = client.cache(flavor_pb2.Flavor)
    await synced(client)
    assert client.server_addr == a.notify
    api = flavor_pb2_grpc.FlavorApiStub(region.channel(b))
    await api.CreateFlavor(flavor("via-b", ram=4096), timeout=10)

    async def seen() -> None:
        assert [(f.key.name, f.ram) for f in flavors.values()] == [("via-b", 4096)]

    await eventually(seen, within=5)
    await api.DeleteFlavor(flavor("via-b"), timeout=10)

    async def gone() -> None:
        assert len(flavors) == 0

    await eventually(gone, within=5)
