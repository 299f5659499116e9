"""DeviceApi and AppInstClientApi on real controllers, with notify clients as the DMEs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import grpc.aio
import pytest
from edgeproto import appinstclient_pb2, appinstclient_pb2_grpc, device_pb2, device_pb2_grpc
from google.protobuf import timestamp_pb2

from edge_cloud.notify import NotifyClient
from edge_cloud.objects import keys, registry
from services.controller.api.appinstclient import AppInstClients
from tests.integration.controller.cloudlet_harness import (
    Controller,
    ControllerHarness,
    harness,
    unique_org,
)
from tests.integration.helpers import eventually, take

__all__ = ["harness"]

CLIENT_KEY = registry.by_class(appinstclient_pb2.AppInstClientKey)
DEVICE = registry.by_class(device_pb2.Device)


def device(unique_id: str, first_seen: int, id_type: str = "platos") -> device_pb2.Device:
    return device_pb2.Device(
        key=device_pb2.DeviceKey(unique_id_type=id_type, unique_id=unique_id),
        first_seen=timestamp_pb2.Timestamp(seconds=first_seen),
    )


def dme(ctl: Controller, name: str = "dme") -> NotifyClient:
    client = NotifyClient([ctl.addr], name=name, backoff_initial=0.05, backoff_max=0.2)
    client.cache(appinstclient_pb2.AppInstClientKey)
    return client


def watch_key(org: str, name: str = "inst1") -> appinstclient_pb2.AppInstClientKey:
    key = appinstclient_pb2.AppInstClientKey()
    key.app_inst_key.organization = org
    key.app_inst_key.name = name
    return key


def sighting(
    org: str, unique_id: str, lat: float, name: str = "inst1"
) -> appinstclient_pb2.AppInstClient:
    client = appinstclient_pb2.AppInstClient()
    client.client_key.app_inst_key.organization = org
    client.client_key.app_inst_key.name = name
    client.client_key.app_key.organization = org
    client.client_key.app_key.name = "app"
    client.client_key.app_key.version = "1.0"
    client.client_key.unique_id = unique_id
    client.client_key.unique_id_type = "dme"
    client.location.latitude = lat
    return client


async def requested(client: NotifyClient, want: appinstclient_pb2.AppInstClientKey) -> None:
    """Wait until the DME holds the controller's request for `want`."""

    async def check() -> None:
        assert keys.key_string(want) in client.cache(appinstclient_pb2.AppInstClientKey)

    await eventually(check)


@contextlib.asynccontextmanager
async def show(
    ctl: Controller, want: appinstclient_pb2.AppInstClientKey, *, local: bool = False
) -> AsyncIterator[AsyncIterator[appinstclient_pb2.AppInstClient]]:
    """A ShowAppInstClient (or StreamAppInstClientsLocal) call, cancelled on exit."""
    stub = appinstclient_pb2_grpc.AppInstClientApiStub(ctl.channel)
    call = stub.StreamAppInstClientsLocal(want) if local else stub.ShowAppInstClient(want)
    try:
        yield call.__aiter__()
    finally:
        call.cancel()


# --- DeviceApi -------------------------------------------------------------------------------


async def test_inject_show_report_and_evict_devices(harness: ControllerHarness) -> None:
    ctl = await harness.start()
    stub = device_pb2_grpc.DeviceApiStub(ctl.channel)
    tag = unique_org()
    early, late = device(f"{tag}-a", 1_000), device(f"{tag}-b", 2_000)
    await stub.InjectDevice(early)
    await stub.InjectDevice(late)

    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await stub.InjectDevice(early)
    assert taken.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert "already exists" in (taken.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await stub.InjectDevice(device_pb2.Device())
    assert empty.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "Device id cannot be empty" in (empty.value.details() or "")

    # a DME's report of a known device changes nothing; a new one is stored
    reporter = dme(ctl)
    async with reporter:
        seen_again = device(f"{tag}-a", 5_000)
        reporter.send(seen_again)
        reporter.send(device(f"{tag}-c", 3_000))

        async def stored() -> None:
            assert ctl.sync.caches.get(DEVICE, keys.key_string(device(f"{tag}-c", 0))) is not None

        await eventually(stored)
    assert ctl.sync.caches.get(DEVICE, keys.key_string(early)) == early

    mine = [
        d async for d in stub.ShowDevice(device_pb2.Device()) if d.key.unique_id.startswith(tag)
    ]
    assert sorted(d.key.unique_id for d in mine) == [f"{tag}-a", f"{tag}-b", f"{tag}-c"]
    only_b = [d async for d in stub.ShowDevice(device_pb2.Device(key=late.key))]
    assert only_b == [late]

    def window(begin: int | None, end: int | None) -> device_pb2.DeviceReport:
        report = device_pb2.DeviceReport(key=device_pb2.DeviceKey(unique_id_type="platos"))
        if begin is not None:
            report.begin.seconds = begin
        if end is not None:
            report.end.seconds = end
        return report

    async def report(begin: int | None, end: int | None) -> list[str]:
        found = [d async for d in stub.ShowDeviceReport(window(begin, end))]
        return sorted(d.key.unique_id for d in found if d.key.unique_id.startswith(tag))

    assert await report(1_000, 2_000) == [f"{tag}-a", f"{tag}-b"]  # both ends inclusive
    assert await report(1_001, None) == [f"{tag}-b", f"{tag}-c"]
    assert await report(None, 1_999) == [f"{tag}-a"]
    with pytest.raises(grpc.aio.AioRpcError) as backwards:
        await report(2_000, 1_000)
    assert backwards.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    await stub.EvictDevice(device_pb2.Device(key=early.key))
    assert [d async for d in stub.ShowDevice(device_pb2.Device(key=early.key))] == []
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.EvictDevice(device_pb2.Device(key=early.key))
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND


# --- AppInstClientApi ------------------------------------------------------------------------


async def test_show_needs_an_organization(harness: ControllerHarness) -> None:
    ctl = await harness.start()
    for local in (False, True):
        async with show(ctl, appinstclient_pb2.AppInstClientKey(), local=local) as stream:
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await take(stream, 1)
        assert missing.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "Organization must be specified" in (missing.value.details() or "")


async def test_watch_requests_replays_follows_and_withdraws(harness: ControllerHarness) -> None:
    ctl = await harness.start()
    org = unique_org()
    want = watch_key(org)
    reporter = dme(ctl)
    async with reporter:
        async with show(ctl, want) as first:
            await requested(reporter, want)
            items, _ = await ctl.store.range("1/AppInstClientKey/")
            assert [i.lease for i in items] == [ctl.lease.lease_id]  # gone with this controller
            reporter.send_message(sighting(org, "u1", 1.0))
            reporter.send_message(sighting(org, "u2", 2.0))
            reporter.send_message(sighting(org, "other", 9.0, name="inst2"))  # not watched
            reporter.send_message(sighting(org, "u1", 3.0))  # u1 moved
            got = await take(first, 3)
            assert [(c.client_key.unique_id, c.location.latitude) for c in got] == [
                ("u1", 1.0),
                ("u2", 2.0),
                ("u1", 3.0),
            ]
            # a second watcher first gets what is held: the latest sighting per client
            async with show(ctl, want) as second:
                replay = await take(second, 2)
                assert [(c.client_key.unique_id, c.location.latitude) for c in replay] == [
                    ("u2", 2.0),
                    ("u1", 3.0),
                ]
                reporter.send_message(sighting(org, "u3", 4.0))
                [live] = await take(second, 1)
                assert live.client_key.unique_id == "u3"
            [also] = await take(first, 1)
            assert also.client_key.unique_id == "u3"
            # one watcher left: the request stays
            hub = ctl.notify.app_inst_clients
            await eventually(_expect_watchers(hub, want, 1))
            assert keys.key_string(want) in reporter.cache(appinstclient_pb2.AppInstClientKey)

        async def withdrawn() -> None:
            assert ctl.sync.caches.get(CLIENT_KEY, keys.key_string(want)) is None
            assert keys.key_string(want) not in reporter.cache(appinstclient_pb2.AppInstClientKey)
            assert hub.clients(want) == []  # purged with the request

        await eventually(withdrawn)
        # the unwatched AppInst's client is still held for a later watch
        assert [c.client_key.unique_id for c in hub.clients(watch_key(org, "inst2"))] == ["other"]


def _expect_watchers(
    hub: AppInstClients, want: appinstclient_pb2.AppInstClientKey, count: int
) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        assert hub.watchers(want) == count

    return check


async def test_show_fans_in_the_other_controllers(harness: ControllerHarness) -> None:
    first = await harness.start()
    second = await harness.start()
    org = unique_org()
    want = watch_key(org)
    near, far = dme(first, "dme-near"), dme(second, "dme-far")
    async with near, far, show(first, want) as stream:
        # the request reaches the DMEs of both controllers
        await requested(near, want)
        await requested(far, want)
        # the second controller serves the first one's fan-in with a local watch of its own
        await eventually(_expect_watchers(second.notify.app_inst_clients, want, 1))
        far.send_message(sighting(org, "remote", 5.0))
        [remote] = await take(stream, 1)
        assert remote.client_key.unique_id == "remote"
        near.send_message(sighting(org, "local", 6.0))
        [local] = await take(stream, 1)
        assert local.client_key.unique_id == "local"

    async def all_left() -> None:
        assert second.notify.app_inst_clients.watchers(want) == 0
        assert first.sync.caches.get(CLIENT_KEY, keys.key_string(want)) is None

    await eventually(all_left)


async def test_held_clients_are_the_newest_per_app(harness: ControllerHarness) -> None:
    ctl = await harness.start()
    await ctl.put_settings(max_tracked_dme_clients=2)
    org = unique_org()
    want = watch_key(org)
    reporter = dme(ctl)
    async with reporter, show(ctl, want) as stream:
        await requested(reporter, want)
        for n in range(5):
            reporter.send_message(sighting(org, f"u{n}", float(n)))
        seen: list[str] = []
        while "u4" not in seen:
            seen.extend(c.client_key.unique_id for c in await take(stream, 1))
        assert seen[-1] == "u4"
        # a watcher joining now is replayed only the newest two
        async with show(ctl, want) as late:
            replay = await take(late, 2)
        assert [c.client_key.unique_id for c in replay] == ["u3", "u4"]
