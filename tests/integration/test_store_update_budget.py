"""`EtcdStore.update` under contention: retries adapt to a time budget (issue 6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from edge_cloud.errors import Aborted
from edge_cloud.store import EtcdStore, KeyValue, Op, Put, Snapshot


async def test_a_budget_outlasts_a_burst_of_conflicts(etcd_store: EtcdStore) -> None:
    calls = 0

    async def contended(current: Mapping[str, KeyValue | None]) -> Sequence[Op]:
        # another writer wins the first six races, then stops
        nonlocal calls
        calls += 1
        if calls <= 6:
            await etcd_store.put("hot", str(calls).encode())
        return [Put("hot", b"mine")]

    result = await etcd_store.update(["hot"], contended, retries=1, budget=10.0)
    assert result.succeeded
    assert calls == 7
    got = await etcd_store.get("hot")
    assert got is not None
    assert got.value == b"mine"


async def test_without_a_budget_the_retry_count_bounds_it(etcd_store: EtcdStore) -> None:
    calls = 0

    async def contended(current: Mapping[str, KeyValue | None]) -> Sequence[Op]:
        nonlocal calls
        calls += 1
        await etcd_store.put("hot", str(calls).encode())
        return [Put("hot", b"mine")]

    with pytest.raises(Aborted, match="gave up after 2 attempts"):
        await etcd_store.update(["hot"], contended, retries=1)
    assert calls == 2


async def test_an_exhausted_budget_gives_up(etcd_store: EtcdStore) -> None:
    calls = 0

    async def contended(current: Mapping[str, KeyValue | None]) -> Sequence[Op]:
        nonlocal calls
        calls += 1
        await etcd_store.put("hot", str(calls).encode())
        return [Put("hot", b"mine")]

    with pytest.raises(Aborted, match="hot"):
        await etcd_store.update(["hot"], contended, retries=0, budget=0.3)
    assert calls >= 2


async def test_the_function_sees_the_snapshot_revision(etcd_store: EtcdStore) -> None:
    written = await etcd_store.put("seen", b"1")
    revisions: list[int] = []

    def record(current: Mapping[str, KeyValue | None]) -> Sequence[Op]:
        assert isinstance(current, Snapshot)
        revisions.append(current.revision)
        return []

    await etcd_store.update(["seen"], record)
    assert len(revisions) == 1
    assert revisions[0] >= written
