"""The engine's tools for hot records (issue 6): commit turns, unguarded member peeks and
writes that start from the caches."""

from __future__ import annotations

import asyncio
import contextlib

from edgeproto import flavor_pb2

from edge_cloud.objects import codec, keys, registry
from services.controller._engine import Txn
from tests.integration.controller.conftest import StartInstance

FLAVOR = registry.by_class(flavor_pb2.Flavor)


def flavor(name: str, vcpus: int = 1) -> flavor_pb2.Flavor:
    return flavor_pb2.Flavor(key=key(name), ram=1024, vcpus=vcpus, disk=10)


def key(name: str) -> flavor_pb2.FlavorKey:
    return flavor_pb2.FlavorKey(name=name)


async def test_turns_exclude_each_other_and_vanish_after_use(
    start_instance: StartInstance,
) -> None:
    engine = (await start_instance()).engine
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []

    async def hold(tag: str, names: list[str]) -> None:
        async with engine.serialized(names):
            inside.append(tag)
            if len(inside) > 1:
                overlaps.append(tuple(inside))
            await asyncio.sleep(0.02)
            inside.remove(tag)

    # every pair shares a name; names come in different orders (no deadlock: sorted)
    async with asyncio.timeout(10):
        await asyncio.gather(
            hold("a", ["x", "y"]), hold("b", ["y", "x"]), hold("c", ["z", "x"]), hold("d", ["x"])
        )
    assert overlaps == []
    assert engine._locks == {}

    # disjoint names run side by side
    async with asyncio.timeout(10):
        await asyncio.gather(hold("p", ["p"]), hold("q", ["q"]))


async def test_a_cancelled_waiter_does_not_release_the_holders_turn(
    start_instance: StartInstance,
) -> None:
    engine = (await start_instance()).engine
    release = asyncio.Event()
    held = asyncio.Event()

    async def holder() -> None:
        async with engine.serialized(["hot"]):
            held.set()
            await release.wait()

    first = asyncio.create_task(holder())
    await asyncio.wait_for(held.wait(), 5)
    waiter = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    lock, users = engine._locks["hot"]
    assert lock.locked()  # still the first holder's
    assert users == [1]
    release.set()
    await asyncio.wait_for(first, 5)
    assert engine._locks == {}


async def test_concurrent_commits_on_one_record_take_turns_without_aborting(
    start_instance: StartInstance,
) -> None:
    """Forty increments of one counter object: with turns, none is lost or aborted."""
    engine = (await start_instance()).engine
    await engine.create(flavor("counter", vcpus=0))
    skey = keys.store_key(FLAVOR.name, keys.key_string(key("counter")))

    def bump(txn: Txn) -> None:
        current = txn.get(FLAVOR, key("counter"))
        assert current is not None
        current.vcpus += 1
        txn.put(current)

    async with asyncio.timeout(30):
        await asyncio.gather(
            *(engine.apply(bump, reads=[skey], serialize=[skey]) for _ in range(40))
        )
    stored = engine.get(FLAVOR, key("counter"))
    assert stored is not None
    assert stored.vcpus == 40


async def test_peek_waits_for_caches_behind_the_snapshot(start_instance: StartInstance) -> None:
    """A member committed with its record must be seen even by a Controller that lags."""
    writer = await start_instance()
    reader = await start_instance()
    await writer.engine.create(flavor("record"))
    await reader.sync.wait_for_revision(await writer.store.revision())

    # the reader stops following etcd; the writer adds a member and touches the record
    reader.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader.task

    def add_member(txn: Txn) -> None:
        record = txn.get(FLAVOR, key("record"))
        assert record is not None
        record.vcpus += 1
        txn.put(record)
        txn.put(flavor("member", vcpus=7))

    await writer.engine.apply(add_member)
    seen: list[int] = []

    def read(txn: Txn) -> None:
        seen.clear()
        record = txn.get(FLAVOR, key("record"))
        assert record is not None
        member = txn.peek_many(FLAVOR, [key("member")])[0]
        seen.append(-1 if member is None else member.vcpus)

    pending = asyncio.create_task(reader.engine.apply(read))
    await asyncio.sleep(0.2)
    assert not pending.done()  # waiting for its caches, not deciding on stale ones
    reader.task = asyncio.create_task(reader.sync.run())
    await asyncio.wait_for(pending, 10)
    assert seen == [7]


async def test_writes_from_stale_caches_are_still_guarded(start_instance: StartInstance) -> None:
    writer = await start_instance()
    lagging = await start_instance()
    await writer.engine.create(flavor("shared", vcpus=1))
    await lagging.sync.wait_for_revision(await writer.store.revision())
    lagging.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await lagging.task
    # the lagging instance's caches still say 1; etcd says 5
    await writer.engine.apply(lambda txn: txn.put(flavor("shared", vcpus=5)))
    skey = keys.store_key(FLAVOR.name, keys.key_string(key("shared")))
    runs: list[int] = []

    def double(txn: Txn) -> None:
        current = txn.get(FLAVOR, key("shared"))
        assert current is not None
        runs.append(current.vcpus)
        current.vcpus *= 2
        txn.put(current)

    await lagging.engine.apply(double, reads=[skey], from_caches=True, wait=False)
    assert runs == [1, 5]  # the cached guess lost its compare, the real value won
    stored = await writer.store.get(skey)
    assert stored is not None
    lagging.task = asyncio.create_task(lagging.sync.run())
    await lagging.sync.wait_for_revision(stored.mod_revision)
    found = lagging.engine.get(FLAVOR, key("shared"))
    assert found is not None
    assert found.vcpus == 10

    # nothing to write on the stale guess: decided again on what etcd holds
    lagging.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await lagging.task
    await writer.engine.apply(lambda txn: txn.put(flavor("shared", vcpus=3)))
    odd: list[int] = []

    def make_even(txn: Txn) -> None:
        current = txn.get(FLAVOR, key("shared"))
        assert current is not None
        odd.append(current.vcpus)
        if current.vcpus % 2:
            current.vcpus += 1
            txn.put(current)

    await lagging.engine.apply(make_even, reads=[skey], from_caches=True, wait=False)
    assert odd == [10, 3]
    stored = await writer.store.get(skey)
    assert stored is not None
    assert codec.decode(FLAVOR, stored.value).vcpus == 4
    lagging.task = asyncio.create_task(lagging.sync.run())


async def test_reservations_guessed_free_are_checked_by_the_commit(
    start_instance: StartInstance,
) -> None:
    engine = (await start_instance()).engine
    await engine.store.put("1/AppInstId/taken", b"someone else")
    tried: list[str] = []

    def reserve(txn: Txn) -> str:
        for candidate in ("taken", "free"):
            reservation = f"1/AppInstId/{candidate}"
            if not txn.has_key(reservation):
                tried.append(candidate)
                txn.put_key(reservation, b"mine")
                return candidate
        raise AssertionError("no candidate left")

    got = await engine.apply(reserve, reads=["1/AppInstId/taken"], from_caches=True)
    assert got == "free"
    assert tried == ["taken", "free"]  # the guess lost its compare, then the real read won
    kept = await engine.store.get("1/AppInstId/taken")
    assert kept is not None
    assert kept.value == b"someone else"
