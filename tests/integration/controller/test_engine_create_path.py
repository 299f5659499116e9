"""A create of a new key is one etcd transaction, started from the caches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from edgeproto import flavor_pb2

from edge_cloud.errors import AlreadyExists
from edge_cloud.objects import keys, registry
from edge_cloud.store import EtcdStore
from services.controller._engine import Engine
from services.controller._sync import Sync

FLAVOR = registry.by_class(flavor_pb2.Flavor)


def flavor(name: str) -> flavor_pb2.Flavor:
    return flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name=name), ram=1024, vcpus=1, disk=1)


async def test_create_is_one_transaction_and_refuses_a_taken_key(
    etcd_store: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = Sync(etcd_store)
    await sync.start()
    task = asyncio.create_task(sync.run())
    try:
        engine = Engine(etcd_store, sync)
        calls: list[int] = []
        real_txn = etcd_store.txn

        async def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            return await real_txn(*args, **kwargs)

        monkeypatch.setattr(etcd_store, "txn", counted)
        await engine.create(flavor("f1"))
        assert len(calls) == 1  # no snapshot read ahead of the commit
        assert engine.get(FLAVOR, keys.key_string(flavor("f1"))) == flavor("f1")
        with pytest.raises(AlreadyExists, match="already exists"):
            await engine.create(flavor("f1"))
        # deleted: once the caches have it, the key is free again
        await etcd_store.delete(keys.object_store_key(flavor("f1")))
        await sync.wait_for_revision(await etcd_store.revision())
        await engine.create(flavor("f1"))
        assert engine.get(FLAVOR, keys.key_string(flavor("f1"))) == flavor("f1")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
