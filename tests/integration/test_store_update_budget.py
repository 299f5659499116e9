"""`EtcdStore.update` for hot keys (issue 6): a retry time budget, a known first snapshot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from edge_cloud.errors import Aborted, InvalidArgument
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


async def test_a_stale_initial_snapshot_loses_once_then_commits(etcd_store: EtcdStore) -> None:
    await etcd_store.put("count", b"1")
    stale = Snapshot({"count": KeyValue("count", b"0", 1, 1, 1)}, revision=1)
    seen: list[bytes | None] = []

    def bump(current: Mapping[str, KeyValue | None]) -> Sequence[Op]:
        kv = current["count"]
        seen.append(None if kv is None else kv.value)
        value = int(kv.value) if kv is not None else 0
        return [Put("count", str(value + 1).encode())]

    await etcd_store.update(["count"], bump, initial=stale)
    assert seen == [b"0", b"1"]
    got = await etcd_store.get("count")
    assert got is not None
    assert got.value == b"2"


async def test_a_no_write_decision_on_the_initial_snapshot_is_taken_again(
    etcd_store: EtcdStore,
) -> None:
    await etcd_store.put("flag", b"set")
    guess = Snapshot({"flag": None}, revision=1)  # "absent", which is wrong
    seen: list[bool] = []

    def clear_if_set(current: Mapping[str, KeyValue | None]) -> Sequence[Op]:
        seen.append(current["flag"] is not None)
        return [Put("flag", b"")] if current["flag"] is not None else []

    await etcd_store.update(["flag"], clear_if_set, initial=guess)
    assert seen == [False, True]
    got = await etcd_store.get("flag")
    assert got is not None
    assert got.value == b""


async def test_an_initial_snapshot_must_cover_the_keys(etcd_store: EtcdStore) -> None:
    with pytest.raises(InvalidArgument, match="initial snapshot"):
        await etcd_store.update(["a", "b"], lambda _: [], initial=Snapshot({"a": None}, revision=1))
