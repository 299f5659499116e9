"""EtcdStore against a real etcd: reads, guarded writes, leases, and watches that survive."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence

import pytest

from edge_cloud import localservers
from edge_cloud.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    NotFound,
    Unavailable,
)
from edge_cloud.localservers import ServerProcess
from edge_cloud.store import (
    Delete,
    DeletePrefix,
    EtcdStore,
    EventType,
    Get,
    KeyValue,
    ModRevisionIs,
    Op,
    Put,
    Resync,
    Store,
    ValueIs,
    WatchEvent,
)
from tests.integration.helpers import eventually, take


async def test_put_get_range_delete(etcd_store: EtcdStore) -> None:
    generic: Store = etcd_store  # EtcdStore satisfies the protocol (checked by mypy)
    rev_a = await generic.put("a", b"1")
    await etcd_store.put("b/2", b"two")
    rev_b1 = await etcd_store.put("b/1", b"one")

    got = await etcd_store.get("a")
    assert got is not None
    assert (got.key, got.value, got.mod_revision, got.create_revision, got.version) == (
        "a",
        b"1",
        rev_a,
        rev_a,
        1,
    )
    assert await etcd_store.get("missing") is None

    items, revision = await etcd_store.range("b/")
    assert [(kv.key, kv.value) for kv in items] == [("b/1", b"one"), ("b/2", b"two")]
    assert revision >= rev_b1
    everything, _ = await etcd_store.range("")
    assert [kv.key for kv in everything] == ["a", "b/1", "b/2"]

    assert await etcd_store.put("a", b"2") > rev_a
    updated = await etcd_store.get("a")
    assert updated is not None
    assert updated.version == 2
    assert updated.create_revision == rev_a

    assert await etcd_store.delete("a") is True
    assert await etcd_store.delete("a") is False
    assert await etcd_store.delete_prefix("b/") == 2
    assert (await etcd_store.range(""))[0] == []


async def test_namespaces_do_not_see_each_other(
    etcd_store: EtcdStore, etcd_server: ServerProcess
) -> None:
    async with await EtcdStore.connect(etcd_server.client_url, namespace="/other-ns/") as other:
        await other.put("k", b"theirs")
        await etcd_store.put("k", b"ours")
        assert (await other.get("k")) is not None
        got = await etcd_store.get("k")
        assert got is not None
        assert got.value == b"ours"
        assert await other.delete_prefix("") == 1


async def test_txn_compare_and_swap(etcd_store: EtcdStore) -> None:
    # Create only if absent: mod revision 0.
    created = await etcd_store.txn([ModRevisionIs("k", 0)], [Put("k", b"v1"), Get("k")])
    assert created.succeeded
    kv = created.values["k"]
    assert kv is not None
    assert kv.mod_revision == created.revision

    again = await etcd_store.txn([ModRevisionIs("k", 0)], [Put("k", b"lost")], [Get("k")])
    assert not again.succeeded
    current = again.values["k"]
    assert current is not None
    assert current.value == b"v1"

    # Swap on the exact revision just read succeeds once; a stale revision loses.
    swapped = await etcd_store.txn([ModRevisionIs("k", current.mod_revision)], [Put("k", b"v2")])
    assert swapped.succeeded
    assert swapped.revision > current.mod_revision
    stale = await etcd_store.txn([ModRevisionIs("k", current.mod_revision)], [Put("k", b"v3")])
    assert not stale.succeeded

    # Value compare, and deletes counted in the branch that ran.
    await etcd_store.put("p/1", b"x")
    await etcd_store.put("p/2", b"x")
    assert not (await etcd_store.txn([ValueIs("k", b"v1")], [Delete("k")])).succeeded
    result = await etcd_store.txn([ValueIs("k", b"v2")], [Delete("k"), DeletePrefix("p/")])
    assert result.succeeded
    assert result.deleted == 3
    assert (await etcd_store.range(""))[0] == []


def _increment(current: Mapping[str, KeyValue | None]) -> Sequence[Op]:
    kv = current["counter"]
    value = int(kv.value) + 1 if kv else 1
    return [Put("counter", str(value).encode())]


async def test_concurrent_updates_lose_nothing(
    etcd_store: EtcdStore, etcd_server: ServerProcess
) -> None:
    rounds = 40
    calls = 0

    async def increment_after_a_yield(current: Mapping[str, KeyValue | None]) -> Sequence[Op]:
        # Yield between read and write so the two updaters really interleave and collide.
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return _increment(current)

    async def updater(store: EtcdStore) -> None:
        for _ in range(rounds):
            await store.update(["counter"], increment_after_a_yield, retries=50)

    # Two connections, as two processes would have.
    async with await EtcdStore.connect(
        etcd_server.client_url, namespace=etcd_store.namespace
    ) as rival:
        async with asyncio.timeout(30):
            await asyncio.gather(updater(etcd_store), updater(rival))

    final = await etcd_store.get("counter")
    assert final is not None
    assert int(final.value) == 2 * rounds
    assert final.version == 2 * rounds
    assert calls > 2 * rounds, "the updaters never collided, so nothing was tested"


async def test_sync_update_function(etcd_store: EtcdStore) -> None:
    first = await etcd_store.update(["counter"], _increment)
    second = await etcd_store.update(["counter"], _increment)
    assert first.succeeded
    assert second.revision > first.revision
    got = await etcd_store.get("counter")
    assert got is not None
    assert got.value == b"2"


async def test_update_gives_up_with_aborted(etcd_store: EtcdStore) -> None:
    calls = 0

    async def meddling(current: Mapping[str, KeyValue | None]) -> Sequence[Op]:
        # Someone else writes the key between every read and commit.
        nonlocal calls
        calls += 1
        await etcd_store.put("contended", str(calls).encode())
        return [Put("contended", b"mine")]

    with pytest.raises(Aborted, match="contended") as caught:
        await etcd_store.update(["contended"], meddling, retries=3)
    assert "\n" not in str(caught.value)
    assert calls == 4
    got = await etcd_store.get("contended")
    assert got is not None
    assert got.value == b"4"


async def test_update_refusal_writes_nothing(etcd_store: EtcdStore) -> None:
    def refuse(current: Mapping[str, KeyValue | None]) -> Sequence[Op]:
        raise AlreadyExists("Flavor key {name: x1} already exists")

    with pytest.raises(AlreadyExists):
        await etcd_store.update(["a", "b"], refuse)
    assert (await etcd_store.range(""))[0] == []

    nothing = await etcd_store.update(["a"], lambda current: [])
    assert nothing.succeeded
    assert nothing.values == {"a": None}


async def test_lease_expiry_deletes_keys_and_keepalive_prevents_it(etcd_store: EtcdStore) -> None:
    kept, dropped = await etcd_store.grant(1), await etcd_store.grant(1)
    await etcd_store.put("kept", b"x", lease=kept)
    await etcd_store.put("dropped", b"x", lease=dropped)
    got = await etcd_store.get("kept")
    assert got is not None
    assert got.lease == kept

    async with asyncio.TaskGroup() as tg:
        keeper = tg.create_task(etcd_store.keepalive(kept, 1, interval=0.2))

        async def dropped_is_gone() -> None:
            assert await etcd_store.get("dropped") is None

        await eventually(dropped_is_gone, within=10)
        assert await etcd_store.get("kept") is not None, "keepalive did not keep the lease"
        keeper.cancel()

    with pytest.raises(NotFound, match="expired"):
        await etcd_store.refresh(dropped)
    await etcd_store.revoke(dropped)  # already gone: not an error
    await etcd_store.revoke(kept)
    assert await etcd_store.get("kept") is None


async def test_watch_delivers_puts_and_deletes_in_order(etcd_store: EtcdStore) -> None:
    await etcd_store.put("w/old", b"before")
    await etcd_store.put("elsewhere", b"not watched")
    _, revision = await etcd_store.range("w/")

    async with contextlib.aclosing(etcd_store.watch("w/", revision + 1, prev_kv=True)) as events:
        r1 = await etcd_store.put("w/a", b"1")
        r2 = await etcd_store.put("w/old", b"after")
        r3 = (await etcd_store.txn([], [Delete("w/a")])).revision
        await etcd_store.put("elsewhere", b"still not watched")
        both = await etcd_store.txn([], [Put("w/b", b"2"), Put("w/c", b"3")])
        got = await take(events, 5)

    assert all(isinstance(e, WatchEvent) for e in got)
    summary = [
        (e.type, e.key, e.value, e.mod_revision, e.prev_value)
        for e in got
        if isinstance(e, WatchEvent)
    ]
    assert summary == [
        (EventType.PUT, "w/a", b"1", r1, None),
        (EventType.PUT, "w/old", b"after", r2, b"before"),
        (EventType.DELETE, "w/a", b"", r3, b"1"),
        (EventType.PUT, "w/b", b"2", both.revision, None),
        (EventType.PUT, "w/c", b"3", both.revision, None),
    ]


async def test_watch_without_start_revision_starts_now(etcd_store: EtcdStore) -> None:
    await etcd_store.put("n/before", b"x")
    async with contextlib.aclosing(etcd_store.watch("n/")) as events:
        first = asyncio.ensure_future(anext(events))

        async def put_until_seen() -> None:
            # The watch starts at some point after this test asked for it; keep writing until
            # it reports one of our writes, then check it never reported the earlier one.
            await etcd_store.put("n/after", b"y")
            assert first.done()

        await eventually(put_until_seen)
        event = first.result()
    assert isinstance(event, WatchEvent)
    assert event.key == "n/after"


async def test_watch_from_a_compacted_revision_resyncs(etcd_store: EtcdStore) -> None:
    _, start = await etcd_store.range("c/")
    await etcd_store.put("c/a", b"1")
    await etcd_store.put("c/b", b"1")
    await etcd_store.delete("c/a")
    last = await etcd_store.put("c/c", b"1")
    await etcd_store.compact(last)

    async with contextlib.aclosing(etcd_store.watch("c/", start + 1)) as events:
        (resync,) = await take(events, 1)
        assert isinstance(resync, Resync)
        assert [(kv.key, kv.value) for kv in resync.items] == [("c/b", b"1"), ("c/c", b"1")]
        assert resync.revision >= last
        assert resync.compact_revision == last

        # The watch goes on after the resync, from the listing's revision.
        after = await etcd_store.put("c/d", b"2")
        (event,) = await take(events, 1)
    assert isinstance(event, WatchEvent)
    assert (event.type, event.key, event.mod_revision) == (EventType.PUT, "c/d", after)


async def _put_when_back(store: EtcdStore, key: str, value: bytes) -> int:
    """Write as soon as etcd answers again (bounded)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return await store.put(key, value)
        except (Unavailable, DeadlineExceeded):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_watch_resumes_after_etcd_restart(private_etcd: ServerProcess) -> None:
    store = await EtcdStore.connect(private_etcd.client_url, timeout=2)
    writer = await EtcdStore.connect(private_etcd.client_url, timeout=2)
    restarted: ServerProcess | None = None
    seen: list[WatchEvent | Resync] = []
    try:
        _, revision = await store.range("r/")

        async def consume() -> None:
            async for event in store.watch("r/", revision + 1):
                seen.append(event)

        async with asyncio.TaskGroup() as tg:
            consumer = tg.create_task(consume())
            before = [await writer.put(f"r/{i}", b"before") for i in range(3)]

            async def got_before() -> None:
                assert len(seen) == 3

            await eventually(got_before)

            # Stop etcd under the open watch and bring it back on the same ports and data.
            private_etcd.stop()
            restarted = localservers.start_etcd(
                private_etcd.data_dir,
                private_etcd.log_path,
                port=private_etcd.ports["client"],
                peer_port=private_etcd.ports["peer"],
                metrics_port=private_etcd.ports["metrics"],
            )
            after = [await _put_when_back(writer, f"r/{i}", b"after") for i in range(3)]
            sentinel = await writer.put("r/sentinel", b"end")

            async def got_all() -> None:
                assert len(seen) >= 7
                assert isinstance(seen[-1], WatchEvent)
                assert seen[-1].key == "r/sentinel"

            await eventually(got_all, within=20)
            consumer.cancel()
    finally:
        await store.close()
        await writer.close()
        if restarted is not None:
            restarted.stop()

    # Exactly once each, in order: nothing lost while etcd was down, nothing repeated.
    assert all(isinstance(e, WatchEvent) for e in seen)
    assert [e.mod_revision for e in seen if isinstance(e, WatchEvent)] == [
        *before,
        *after,
        sentinel,
    ]


async def test_close_ends_a_running_watch_quietly(etcd_server: ServerProcess) -> None:
    store = await EtcdStore.connect(etcd_server.client_url, namespace="/close-test/")
    seen: list[WatchEvent | Resync] = []
    ended = asyncio.Event()

    async def consume() -> None:
        async for event in store.watch("x/"):
            seen.append(event)
        ended.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(consume())

        async def watch_is_running() -> None:
            await store.put("x/1", b"1")
            assert seen

        await eventually(watch_is_running)
        await store.delete_prefix("")
        await store.close()
        async with asyncio.timeout(5):
            await ended.wait()
    assert store.closed


async def test_connect_to_a_dead_port_is_unavailable() -> None:
    port = localservers.free_port()
    with pytest.raises(Unavailable) as caught:
        await EtcdStore.connect(f"http://127.0.0.1:{port}", timeout=2)
    message = str(caught.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message
    assert "unreachable" in message
