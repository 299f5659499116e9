"""The notify server fed from the Controller's caches (`SyncNotifySource`, issue 4) on a real
etcd: what clients get equals etcd, deltas and compaction work as with `EtcdNotifySource`,
and each object is decoded once for both the caches and notify."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edge_cloud.notify import NotifyClient, key_string
from edge_cloud.notify._wire import Message
from edge_cloud.objects import codec, keys, registry
from edge_cloud.store import EtcdStore, Put
from services.controller import _sync_notify as sync_notify
from services.controller._sync import Sync
from services.controller._sync_notify import SyncNotifySource
from tests.integration.notify.test_notify_etcd import (
    _diff,
    delete,
    full_resync_view,
    hundred_changes,
    new_client,
    put,
    stored,
)
from tests.unit.edge_cloud.notify.harness import (
    SEND_TYPES,
    App,
    Flavor,
    Recorder,
    app,
    contents,
    eventually,
    flavor,
    notify_server,
)


@contextlib.asynccontextmanager
async def following(store: EtcdStore) -> AsyncIterator[Sync]:
    """A loaded Sync following etcd in a task, as the Controller runs it."""
    sync = Sync(store)
    await sync.start()
    task = asyncio.create_task(sync.run())
    try:
        yield sync
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def synced(client: NotifyClient) -> None:
    async with asyncio.timeout(10):
        await client.wait_synced()


async def test_caches_feed_a_client(etcd_store: EtcdStore) -> None:
    await put(etcd_store, flavor("x1.small"))
    await put(etcd_store, app("a"))
    await etcd_store.put("1/CloudletDnsLabel/lbl", b"lbl")  # not a replicated type
    async with following(etcd_store) as sync:
        source = SyncNotifySource(sync, etcd_store, SEND_TYPES)
        async with notify_server(source) as (notify, port):
            client = new_client(port)
            flavors, apps = client.cache(Flavor), client.cache(App)
            seen = Recorder(flavors, apps)
            async with client:
                await synced(client)
                assert contents(flavors) == await stored(etcd_store, Flavor)
                assert contents(apps) == await stored(etcd_store, App)
                seen.take()

                rev = await put(etcd_store, flavor("x1.small", ram=4096))
                await delete(etcd_store, app("a"))
                await etcd_store.txn(  # two objects in one commit
                    (),
                    [
                        Put(keys.object_store_key(obj), codec.encode(obj))
                        for obj in (app("b"), flavor("x1.large"))
                    ],
                )

                async def caught_up() -> None:
                    assert contents(flavors) == await stored(etcd_store, Flavor)
                    assert contents(apps) == await stored(etcd_store, App)

                await eventually(caught_up)
                assert seen.take() == [
                    ("create", "App", key_string(app("b"))),
                    ("create", "Flavor", key_string(flavor("x1.large"))),
                    ("delete", "App", key_string(app("a"))),
                    ("update", "Flavor", key_string(flavor("x1.small"))),
                ]
                assert client.synced_revision is not None
                assert client.synced_revision >= rev
                # the server holds the very objects the caches hold: decoded once
                held = notify.lookup("edgeproto.Flavor", key_string(flavor("x1.small")))
                entry = sync.caches.entry(sync_type(Flavor), keys.key_string(flavor("x1.small")))
                assert entry is not None
                assert held is entry.obj


def sync_type(cls: type[Message]) -> Any:
    return registry.by_class(cls)


async def test_a_delta_resync_and_a_full_one_agree_with_etcd(etcd_store: EtcdStore) -> None:
    for i in range(20):
        await put(etcd_store, flavor(f"flavor-{i}"))
        await put(etcd_store, app(f"app-{i}"))
    async with following(etcd_store) as sync:
        source = SyncNotifySource(sync, etcd_store, SEND_TYPES)
        async with notify_server(source) as (_, port):
            client = new_client(port)
            flavors, apps = client.cache(Flavor), client.cache(App)
            seen = Recorder(flavors, apps)
            await client.start()
            await synced(client)
        try:
            before_flavors, before_apps = contents(flavors), contents(apps)
            seen.take()
            await hundred_changes(etcd_store, seed=7)
            # a new server on the same caches; the deletes come from etcd's history
            source = SyncNotifySource(sync, etcd_store, SEND_TYPES)
            async with notify_server(source, port=port) as (notify, _):
                await eventually(lambda: _check(client.stats.delta_syncs == 1), within=15)
                assert client.stats.full_syncs == 1
                reference = await full_resync_view(port)

                async def agree() -> None:
                    assert reference == (
                        await stored(etcd_store, Flavor),
                        await stored(etcd_store, App),
                    )

                await eventually(agree)
                assert (contents(flavors), contents(apps)) == reference
                assert seen.take() == sorted(
                    _diff(before_flavors, reference[0], "Flavor")
                    + _diff(before_apps, reference[1], "App")
                )
                assert notify.revision == sync.revision
        finally:
            await client.close()


async def test_a_compacted_watch_reaches_clients_as_a_snapshot(
    etcd_store: EtcdStore, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(10):
        await put(etcd_store, flavor(f"flavor-{i}"))
    sync = Sync(etcd_store)
    await sync.start()
    source = SyncNotifySource(sync, etcd_store, SEND_TYPES)
    async with notify_server(source) as (notify, port):
        client = new_client(port)
        flavors, apps = client.cache(Flavor), client.cache(App)
        seen = Recorder(flavors, apps)
        async with client:
            await synced(client)
            before = contents(flavors)
            seen.take()
            # the caches fall behind (no watch running), etcd forgets the history, and
            # the watch that resumes gets a fresh listing instead
            await hundred_changes(etcd_store, seed=11)
            await etcd_store.compact(await etcd_store.revision())
            async with following_from(sync):
                after = (await stored(etcd_store, Flavor), await stored(etcd_store, App))

                async def caught_up() -> None:
                    assert (contents(flavors), contents(apps)) == after

                await eventually(caught_up, within=15)
                assert seen.take() == sorted(
                    _diff(before, after[0], "Flavor") + _diff({}, after[1], "App")
                )
                assert notify.revision == sync.revision
    assert "etcd history was compacted; caches replaced" in caplog.text


@contextlib.asynccontextmanager
async def following_from(sync: Sync) -> AsyncIterator[None]:
    """Run an already loaded Sync's watch from where it stopped."""
    task = asyncio.create_task(sync.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_objects_loaded_at_start_are_decoded_once(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(20):
        await put(etcd_store, flavor(f"flavor-{i}"))
    await etcd_store.put(keys.object_store_key(flavor("bad")), b"not json")
    decoded: list[str] = []
    real_decode = codec.decode

    def counting(objtype: Any, data: bytes | str) -> Any:
        obj = real_decode(objtype, data)
        decoded.append(key_string(obj))
        return obj

    monkeypatch.setattr(codec, "decode", counting)
    async with following(etcd_store) as sync:
        source = SyncNotifySource(sync, etcd_store, SEND_TYPES)
        async with notify_server(source) as (notify, port):
            for _ in range(2):
                client = new_client(port)
                flavors = client.cache(Flavor)
                async with client:
                    await synced(client)
                    assert len(flavors) == 20  # the undecodable one is left out
            assert notify.lookup("edgeproto.Flavor", key_string(flavor("bad"))) is None
            assert len(sync.caches.values(sync_type(Flavor))) == 20  # reads of the caches too
    assert sorted(decoded) == sorted(key_string(flavor(f"flavor-{i}")) for i in range(20))


def _check(condition: bool) -> None:
    assert condition


async def test_writes_during_the_snapshot_build_reach_clients(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_notify, "YIELD_EVERY", 1)  # the build yields after every object
    for i in range(30):
        await put(etcd_store, flavor(f"flavor-{i}"))

    async def writes() -> None:
        for i in range(30):
            if i % 3 == 0:
                await delete(etcd_store, flavor(f"flavor-{i}"))
            else:
                await put(etcd_store, flavor(f"flavor-{i}", ram=8192))
            await put(etcd_store, app(f"app-{i}"))

    async with following(etcd_store) as sync:
        source = SyncNotifySource(sync, etcd_store, SEND_TYPES)
        writer = asyncio.create_task(writes())
        try:
            async with notify_server(source) as (_, port):
                client = new_client(port)
                flavors, apps = client.cache(Flavor), client.cache(App)
                async with client:
                    await synced(client)
                    await writer

                    async def caught_up() -> None:
                        assert contents(flavors) == await stored(etcd_store, Flavor)
                        assert contents(apps) == await stored(etcd_store, App)

                    await eventually(caught_up)
        finally:
            await writer
