"""Caches that survive compaction, and the leased Controller record that survives expiry."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from edgeproto import controller_pb2, flavor_pb2

from edge_cloud.errors import FailedPrecondition
from edge_cloud.localservers import ServerProcess
from edge_cloud.objects import codec, keys, registry
from edge_cloud.store import EtcdStore
from services.controller._engine import Engine
from services.controller._startup import ControllerLease, check_version, version_value
from services.controller._sync import Sync
from tests.integration.helpers import eventually

FLAVOR = registry.by_class(flavor_pb2.Flavor)


def flavor(name: str) -> flavor_pb2.Flavor:
    return flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name=name), ram=1, vcpus=1, disk=1)


async def test_resync_after_compaction_replaces_the_caches(private_etcd: ServerProcess) -> None:
    async with await EtcdStore.connect(private_etcd.client_url) as store:
        sync = Sync(store)
        engine = Engine(store, sync)
        await sync.start()
        task = asyncio.create_task(sync.run())
        await engine.create(flavor("old"))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        # while nobody watches: one object appears, one goes, and history is compacted
        await store.put(keys.object_store_key(flavor("new")), codec.encode(flavor("new")))
        await store.delete(keys.object_store_key(flavor("old")))
        await store.compact(await store.revision())

        task = asyncio.create_task(sync.run())
        try:

            async def replaced() -> None:
                assert [f.key.name for f in sync.caches.values(FLAVOR)] == ["new"]

            await eventually(replaced, within=10)
            assert sync.revision == await store.revision()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_lost_lease_registers_again(etcd_store: EtcdStore) -> None:
    lease = ControllerLease(etcd_store, "127.0.0.1:55001")
    await lease.register()
    first = lease.lease_id
    stored = await etcd_store.get('1/Controller/{"addr":"127.0.0.1:55001"}')
    assert stored is not None
    assert codec.decode(controller_pb2.Controller, stored.value).key.addr == "127.0.0.1:55001"
    assert stored.lease == first

    task = asyncio.create_task(lease.keep_alive())
    try:
        assert first is not None
        await etcd_store.revoke(first)  # as if it had expired

        async def back_with_a_new_lease() -> None:
            again = await etcd_store.get(lease.store_key)
            assert again is not None
            assert again.lease not in (0, first)

        await eventually(back_with_a_new_lease, within=15)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await lease.revoke()
    assert await etcd_store.get(lease.store_key) is None


async def test_version_written_once_and_checked(etcd_store: EtcdStore) -> None:
    await check_version(etcd_store)
    stored = await etcd_store.get("1/VersionV2")
    assert stored is not None
    assert stored.value == b'{"Hash":"6851436bc9cb6e0e5180d600dd9a0187","ID":62}'
    await check_version(etcd_store)  # same version: accepted, untouched
    again = await etcd_store.get("1/VersionV2")
    assert again is not None
    assert again.mod_revision == stored.mod_revision

    await etcd_store.put("1/VersionV2", version_value("0123", 20))
    with pytest.raises(FailedPrecondition) as caught:
        await check_version(etcd_store)
    assert caught.value.message == (
        "Running version 6851436bc9cb6e0e5180d600dd9a0187 doesn't match the etcd database "
        "version 0123, and autoUpgrade is not enabled"
    )
