"""Notify fed by a real etcd: EtcdNotifySource, delta resync across a server restart, compaction."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from edge_cloud.notify import EtcdNotifySource, NotifyClient, NotifyServer, key_string
from edge_cloud.notify._wire import Message
from edge_cloud.objects import codec, keys
from edge_cloud.store import Delete, EtcdStore, Op, Put
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
    serving,
)


async def put(store: EtcdStore, obj: Message) -> int:
    return await store.put(keys.object_store_key(obj), codec.encode(obj))


async def delete(store: EtcdStore, obj: Message) -> None:
    await store.delete(keys.object_store_key(obj))


def new_client(port: int) -> NotifyClient:
    return NotifyClient([f"127.0.0.1:{port}"], name="dme", backoff_initial=0.02, backoff_max=0.2)


async def stored(store: EtcdStore, cls: type[Message]) -> dict[str, bytes]:
    """What etcd holds for a type, in the caches' form."""
    items, _ = await store.range(keys.store_prefix(cls.DESCRIPTOR.name))
    return {
        key_string(obj): obj.SerializeToString(deterministic=True)
        for obj in (codec.decode(cls, kv.value) for kv in items)
    }


async def full_resync_view(port: int) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """What a brand-new client sees: the reference for any resync."""
    fresh = new_client(port)
    flavors, apps = fresh.cache(Flavor), fresh.cache(App)
    async with fresh:
        async with asyncio.timeout(10):
            await fresh.wait_synced()
        assert fresh.stats.full_syncs == 1
        return contents(flavors), contents(apps)


async def test_etcd_source_feeds_a_client(etcd_store: EtcdStore) -> None:
    await put(etcd_store, flavor("x1.small"))
    await put(etcd_store, app("a"))
    await etcd_store.put("1/VersionV2", b'{"Hash":"x","ID":62}')  # not an object: skipped
    await etcd_store.put("1/CloudletDnsLabel/lbl", b"lbl")  # a type nobody asked for
    source = EtcdNotifySource(etcd_store, SEND_TYPES)
    async with notify_server(source) as (notify, port):
        client = new_client(port)
        flavors, apps = client.cache(Flavor), client.cache(App)
        seen = Recorder(flavors, apps)
        async with client:
            async with asyncio.timeout(10):
                await client.wait_synced()
            assert contents(flavors) == await stored(etcd_store, Flavor)
            assert contents(apps) == await stored(etcd_store, App)
            seen.take()

            rev = await put(etcd_store, flavor("x1.small", ram=4096))
            await delete(etcd_store, app("a"))
            await put(etcd_store, app("b"))

            async def caught_up() -> None:
                assert contents(flavors) == await stored(etcd_store, Flavor)
                assert contents(apps) == await stored(etcd_store, App)

            await eventually(caught_up)
            assert seen.take() == [
                ("create", "App", key_string(app("b"))),
                ("delete", "App", key_string(app("a"))),
                ("update", "Flavor", key_string(flavor("x1.small"))),
            ]
            assert notify.lookup("edgeproto.Flavor", key_string(flavor("x1.small"))) is not None
            assert client.synced_revision is not None
            assert client.synced_revision >= rev - 1


async def hundred_changes(store: EtcdStore, seed: int) -> None:
    """Creates, updates and deletes of Flavors and Apps; every fifth batch is one transaction."""
    rng = random.Random(seed)  # noqa: S311 - test data
    ops: list[Op] = []
    for i in range(100):
        kind = rng.choice(["flavor", "app"])
        name = f"{kind}-{rng.randrange(30)}"
        ram = rng.randrange(1, 9) * 1024
        obj: Message = flavor(name, ram=ram) if kind == "flavor" else app(name, image=f"img:{i}")
        key = keys.object_store_key(obj)
        ops.append(Delete(key) if rng.random() < 0.3 else Put(key, codec.encode(obj)))
        if i % 5 == 4:
            if i % 25 == 24:
                # one commit, several keys at one revision (distinct keys: last op wins)
                last = {op.key: op for op in ops}
                await store.txn((), list(last.values()))
            else:
                for op in ops:
                    if isinstance(op, Put):
                        await store.put(op.key, op.value)
                    else:
                        await store.delete(op.key)
            ops = []


async def test_delta_resync_after_a_hundred_changes_equals_a_full_resync(
    etcd_store: EtcdStore,
) -> None:
    for i in range(20):
        await put(etcd_store, flavor(f"flavor-{i}"))
        await put(etcd_store, app(f"app-{i}"))
    async with notify_server(EtcdNotifySource(etcd_store, SEND_TYPES)) as (_, port):
        client = new_client(port)
        flavors, apps = client.cache(Flavor), client.cache(App)
        seen = Recorder(flavors, apps)
        await client.start()
        async with asyncio.timeout(10):
            await client.wait_synced()
    try:
        before_flavors, before_apps = contents(flavors), contents(apps)
        seen.take()
        await hundred_changes(etcd_store, seed=7)
        # A new server (a restarted Controller) knows nothing of what happened before it
        # started; the deletes come from etcd's history.
        source = EtcdNotifySource(etcd_store, SEND_TYPES)
        async with notify_server(source, port=port) as (notify, _):
            await eventually(lambda: _check(client.stats.delta_syncs == 1), within=15)
            assert client.stats.full_syncs == 1
            assert notify.delta_floor < notify.revision
            reference = await full_resync_view(port)
            assert (contents(flavors), contents(apps)) == reference
            assert reference == (await stored(etcd_store, Flavor), await stored(etcd_store, App))
            # callbacks: exactly the differences between before and after
            assert seen.take() == sorted(
                _diff(before_flavors, reference[0], "Flavor")
                + _diff(before_apps, reference[1], "App")
            )
    finally:
        await client.close()


async def test_compacted_history_falls_back_to_a_full_send(etcd_store: EtcdStore) -> None:
    for i in range(10):
        await put(etcd_store, flavor(f"flavor-{i}"))
    async with notify_server(EtcdNotifySource(etcd_store, SEND_TYPES)) as (_, port):
        client = new_client(port)
        flavors, apps = client.cache(Flavor), client.cache(App)
        seen = Recorder(flavors, apps)
        await client.start()
        async with asyncio.timeout(10):
            await client.wait_synced()
    try:
        before = contents(flavors)
        seen.take()
        await hundred_changes(etcd_store, seed=11)
        await etcd_store.compact(await etcd_store.revision())
        async with notify_server(EtcdNotifySource(etcd_store, SEND_TYPES), port=port):
            await eventually(lambda: _check(client.stats.full_syncs == 2), within=15)
            assert client.stats.delta_syncs == 0
            reference = await full_resync_view(port)
            assert (contents(flavors), contents(apps)) == reference
            assert seen.take() == sorted(
                _diff(before, reference[0], "Flavor") + _diff({}, reference[1], "App")
            )
    finally:
        await client.close()


async def test_etcd_objects_are_decoded_once_after_the_server_is_ready(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    ready_then: list[bool] = []
    real_decode = codec.decode

    def counting(objtype: Any, data: bytes | str) -> Any:
        obj = real_decode(objtype, data)
        decoded.append(key_string(obj))
        ready_then.append(notify.delta_floor > 0)  # set as the first snapshot is in
        return obj

    monkeypatch.setattr(codec, "decode", counting)
    for i in range(20):
        await put(etcd_store, flavor(f"flavor-{i}"))
    bad = flavor("bad")
    await etcd_store.put(keys.object_store_key(bad), b"not json")
    notify = NotifyServer(
        EtcdNotifySource(etcd_store, SEND_TYPES), name="ctrl", send_types=SEND_TYPES
    )
    async with notify, serving(notify) as port:
        async with asyncio.timeout(10):
            await notify.wait_ready()
        for _ in range(2):
            client = new_client(port)
            flavors = client.cache(Flavor)
            async with client:
                async with asyncio.timeout(10):
                    await client.wait_synced()
                assert len(flavors) == 20  # the undecodable one is left out
                assert key_string(bad) not in flavors
        assert notify.lookup("edgeproto.Flavor", key_string(bad)) is None
        assert sorted(decoded) == sorted(key_string(flavor(f"flavor-{i}")) for i in range(20))
        assert all(ready_then)


def _diff(old: dict[str, bytes], new: dict[str, bytes], name: str) -> list[tuple[str, str, str]]:
    events = [("delete", name, k) for k in old if k not in new]
    events += [("create", name, k) for k in new if k not in old]
    events += [("update", name, k) for k in new if k in old and old[k] != new[k]]
    return sorted(events)


def _check(condition: bool) -> None:
    assert condition
