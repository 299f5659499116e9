"""EtcdStore group commit against a real etcd: concurrent transactions share one etcd
transaction, yet each commits or fails exactly as it would alone."""

from __future__ import annotations

import asyncio

import pytest

from edge_cloud.errors import InvalidArgument
from edge_cloud.store import EtcdStore, Get, ModRevisionIs, Put, TxnResult

CONCURRENT = 64


async def create(store: EtcdStore, key: str, value: bytes) -> TxnResult:
    """A guarded create: put `key` only if it does not exist, else read it."""
    return await store.txn([ModRevisionIs(key, 0)], [Put(key, value)], [Get(key)])


async def test_concurrent_creates_share_revisions_and_all_land(etcd_store: EtcdStore) -> None:
    results = await asyncio.gather(
        *(create(etcd_store, f"k{i:03d}", f"v{i}".encode()) for i in range(CONCURRENT))
    )

    assert all(r.succeeded for r in results)
    for i, result in enumerate(results):
        got = await etcd_store.get(f"k{i:03d}")
        assert got is not None
        assert got.value == f"v{i}".encode()
        assert got.mod_revision == result.revision  # each caller learns its own revision
    # a few go alone, the rest wait and go together: fewer revisions than transactions
    assert len({r.revision for r in results}) < CONCURRENT


async def test_members_of_one_batch_fail_or_succeed_on_their_own(etcd_store: EtcdStore) -> None:
    for i in range(0, CONCURRENT, 2):
        await etcd_store.put(f"k{i:03d}", b"old")

    results = await asyncio.gather(
        *(create(etcd_store, f"k{i:03d}", b"new") for i in range(CONCURRENT))
    )

    for i, result in enumerate(results):
        key = f"k{i:03d}"
        if i % 2 == 0:
            assert not result.succeeded
            found = result.values[key]
            assert found is not None
            assert found.value == b"old"  # the failure branch's read, for this member only
        else:
            assert result.succeeded
            assert result.values == {}
        got = await etcd_store.get(key)
        assert got is not None
        assert got.value == (b"old" if i % 2 == 0 else b"new")


async def test_racing_creates_of_one_key_have_exactly_one_winner(etcd_store: EtcdStore) -> None:
    # the same key never goes twice in one batch (etcd would refuse it): the racers queue
    results = await asyncio.gather(
        *(create(etcd_store, "hot", f"v{i}".encode()) for i in range(CONCURRENT))
    )

    winners = [i for i, r in enumerate(results) if r.succeeded]
    assert len(winners) == 1
    got = await etcd_store.get("hot")
    assert got is not None
    assert got.value == f"v{winners[0]}".encode()
    for result in results:
        if not result.succeeded:
            seen = result.values["hot"]
            assert seen is not None
            assert seen.value == got.value


async def test_a_refused_batch_is_retried_member_by_member(etcd_store: EtcdStore) -> None:
    async def bad() -> TxnResult:
        # the same key put twice: etcd refuses this transaction (and any batch holding it)
        return await etcd_store.txn([], [Put("dup", b"1"), Put("dup", b"2")])

    jobs = [create(etcd_store, f"ok{i:03d}", b"v") for i in range(CONCURRENT)]
    jobs.insert(CONCURRENT // 2, bad())
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)

    refused = outcomes.pop(CONCURRENT // 2)
    assert isinstance(refused, InvalidArgument)
    assert "duplicate key" in str(refused)
    assert all(isinstance(r, TxnResult) and r.succeeded for r in outcomes)
    assert await etcd_store.get("dup") is None
    for i in range(CONCURRENT):
        assert await etcd_store.get(f"ok{i:03d}") is not None


async def test_a_lone_transaction_is_not_held_back(etcd_store: EtcdStore) -> None:
    first = await create(etcd_store, "a", b"1")
    second = await create(etcd_store, "b", b"2")

    assert first.succeeded
    assert second.succeeded
    assert second.revision > first.revision


@pytest.mark.parametrize("cancel_at", [0, 10])
async def test_a_cancelled_waiter_does_not_disturb_the_others(
    etcd_store: EtcdStore, cancel_at: int
) -> None:
    tasks = [asyncio.create_task(create(etcd_store, f"c{i:03d}", b"v")) for i in range(CONCURRENT)]
    await asyncio.sleep(0)  # every task has started and queued (or is on its way)
    tasks[cancel_at].cancel()
    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    for i, outcome in enumerate(outcomes):
        if i == cancel_at:
            continue
        assert isinstance(outcome, TxnResult)
        assert outcome.succeeded
