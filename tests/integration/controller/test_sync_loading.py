"""The caches' start-up listing: by type at one revision, values decoded on first read."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from edgeproto import cloudlet_pb2, cloudletkey_pb2, flavor_pb2

from edge_cloud.objects import codec, keys, registry
from edge_cloud.store import EtcdStore, Put
from services.controller._sync import Entry, Sync
from tests.integration.helpers import eventually

FLAVOR = registry.by_class(flavor_pb2.Flavor)
CLOUDLET = registry.by_class(cloudlet_pb2.Cloudlet)


def flavor(name: str, ram: int = 1) -> flavor_pb2.Flavor:
    return flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name=name), ram=ram, vcpus=1, disk=1)


def put(obj: flavor_pb2.Flavor | cloudlet_pb2.Cloudlet) -> Put:
    return Put(keys.object_store_key(obj), codec.encode(obj))


async def test_listing_loads_objects_encoded_and_decodes_them_once(etcd_store: EtcdStore) -> None:
    cloudlet = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization="op", name="c1"), platform_type="fake"
    )
    written = await etcd_store.txn(
        (),
        [
            put(flavor("a")),
            put(flavor("b", ram=2)),
            put(cloudlet),
            Put("1/VersionV2", b'{"Hash":"x","ID":1}'),  # not an object: not cached
            Put("1/AppInstId/inst-1", b"x"),  # a reservation: not cached
        ],
    )
    sync = Sync(etcd_store)
    assert await sync.start() == written.revision
    assert sync.caches.count(FLAVOR) == 2
    assert sync.caches.count(CLOUDLET) == 1
    raw = sync.caches._peek(FLAVOR, keys.key_string(flavor("b")))
    assert raw is not None
    assert not raw.is_decoded  # nothing decoded until read
    assert sync.caches.get(FLAVOR, keys.key_string(flavor("b"))) == flavor("b", ram=2)
    assert raw.is_decoded
    assert raw.obj is raw.obj  # decoded once, then shared
    assert raw.mod_revision == written.revision
    assert [f.key.name for f in sync.caches.values(FLAVOR)] == ["a", "b"]
    assert sync.caches.get(CLOUDLET, keys.key_string(cloudlet)) == cloudlet


async def test_undecodable_values_are_dropped_when_first_read(
    etcd_store: EtcdStore, caplog: pytest.LogCaptureFixture
) -> None:
    bad_key = keys.key_string(flavor("bad"))
    await etcd_store.txn(
        (), [put(flavor("good")), Put(keys.object_store_key(flavor("bad")), b"not json")]
    )
    sync = Sync(etcd_store)
    await sync.start()
    assert sync.caches.count(FLAVOR) == 2  # still encoded: not known to be bad yet
    assert [key for key, _ in sync.caches.items(FLAVOR)] == [keys.key_string(flavor("good"))]
    assert "cannot decode its value" in caplog.text
    assert sync.caches.count(FLAVOR) == 1
    assert sync.caches.get(FLAVOR, bad_key) is None
    assert not sync.caches.has(FLAVOR, bad_key)

    # an entry read through `entry()` first is dropped the same way
    await etcd_store.put(keys.object_store_key(flavor("worse")), b"{oops")
    other = Sync(etcd_store)
    await other.start()
    assert other.caches.entry(FLAVOR, keys.key_string(flavor("worse"))) is None
    assert other.caches.count(FLAVOR) == 2


async def test_watched_changes_are_decoded_and_bad_ones_keep_the_object(
    etcd_store: EtcdStore,
) -> None:
    await etcd_store.txn((), [put(flavor("a"))])
    sync = Sync(etcd_store)
    await sync.start()
    task = asyncio.create_task(sync.run())
    try:
        key = keys.key_string(flavor("a"))
        await etcd_store.put(keys.object_store_key(flavor("a")), b"broken")
        rev = await etcd_store.put(
            keys.object_store_key(flavor("z", ram=5)), codec.encode(flavor("z", ram=5))
        )
        await sync.wait_for_revision(rev)
        assert sync.caches.get(FLAVOR, key) == flavor("a")  # the bad update was ignored
        entry = sync.caches.entry(FLAVOR, keys.key_string(flavor("z")))
        assert isinstance(entry, Entry)
        assert entry.is_decoded
        assert entry.obj == flavor("z", ram=5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_items_skip_objects_deleted_while_iterating(etcd_store: EtcdStore) -> None:
    await etcd_store.txn((), [put(flavor(n)) for n in "abc"])
    sync = Sync(etcd_store)
    await sync.start()
    task = asyncio.create_task(sync.run())
    try:
        seen = []
        for key, obj in sync.caches.items(FLAVOR):
            seen.append(obj.key.name)
            if key == keys.key_string(flavor("a")):  # delete b while between items
                await etcd_store.delete(keys.object_store_key(flavor("b")))

                async def gone() -> None:
                    assert not sync.caches.has(FLAVOR, keys.key_string(flavor("b")))

                await eventually(gone, within=10)
        assert seen == ["a", "c"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
