"""What loading and serving cost the server: lazy decoding, yielding, waiting, bytes, deltas."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import grpc
import grpc.aio
import pytest
from edgeproto import notice_pb2

from edge_cloud.errors import EdgeError
from edge_cloud.notify import (
    SERVICE_NAME,
    Action,
    Encoded,
    EtcdNotifySource,
    MemorySource,
    NotifyServer,
    Peer,
    Snapshot,
    key_string,
)
from edge_cloud.notify import server as server_module
from edge_cloud.notify._wire import Message, data_notice
from edge_cloud.notify.server import _Conn, _Entry, _RevisionIndex
from edge_cloud.objects import codec, keys
from edge_cloud.store import KeyValue
from tests.unit.edge_cloud.notify.harness import (
    SEND_TYPES,
    App,
    Flavor,
    Notice,
    RawStream,
    app,
    eventually,
    flavor,
    notify_server,
    serving,
    unpack,
    version,
)

METHOD = f"/{SERVICE_NAME}/StreamNotice"


class EncodedSource(MemorySource):
    """Hands its snapshots over encoded, as `EtcdNotifySource` does, and counts decodes."""

    def __init__(self, objects: list[Message], *, bad: tuple[str, ...] = ()) -> None:
        super().__init__(objects)
        self.decoded: list[str] = []
        self.bad = set(bad)
        self.on_decode: Callable[[], None] = lambda: None

    async def snapshot(self) -> Snapshot:
        snap = await super().snapshot()
        objects: dict[str, list[Encoded]] = {}
        for name, items in snap.objects.items():
            for item in items:
                assert not isinstance(item, Encoded)
                value = b"" if item.key in self.bad else item.obj.SerializeToString()
                encoded = Encoded(item.key, item.mod_rev, value, self._decoder(type(item.obj)))
                objects.setdefault(name, []).append(encoded)
        return Snapshot(objects, snap.revision)

    def _decoder(self, cls: type[Message]) -> Callable[[bytes], Message]:
        def decode(value: bytes) -> Message:
            if not value:
                raise ValueError("not an object")
            obj = cls.FromString(value)
            self.decoded.append(key_string(obj))
            self.on_decode()
            return obj

        return decode


class SlowSource(MemorySource):
    """A source whose first snapshot takes until `release` is set."""

    def __init__(self, objects: list[Message]) -> None:
        super().__init__(objects)
        self.release = asyncio.Event()

    async def snapshot(self) -> Snapshot:
        await self.release.wait()
        return await super().snapshot()


class BrokenSource(MemorySource):
    async def snapshot(self) -> Snapshot:
        raise ConnectionError("etcd is down")


async def data_of(raw: RawStream, *wants: type[Message], **tags: str) -> list[Notice]:
    """Handshake, then the data notices of the send-all (SENDALL_END dropped)."""
    await raw.send(version(*wants, **tags))
    assert (await raw.read()).action == notice_pb2.VERSION
    return (await raw.read_until_sendall_end())[:-1]


# --- lazy decoding --------------------------------------------------------------------------


async def test_the_server_is_ready_before_decoding_and_decodes_each_object_once() -> None:
    source = EncodedSource([flavor(f"f{i}") for i in range(300)] + [app("a")])
    notify = NotifyServer(source, name="ctrl", send_types=SEND_TYPES)
    ready_then: list[bool] = []
    source.on_decode = lambda: ready_then.append(notify._ready.is_set())
    async with notify, serving(notify) as port:
        async with asyncio.timeout(5):
            await notify.wait_ready()
        for _ in range(3):
            raw = RawStream(port)
            try:
                assert len(await data_of(raw, Flavor, App)) == 301
            finally:
                await raw.close()
        await eventually(lambda: _check(len(source.decoded) == 301))  # all, in the background
        assert all(ready_then)  # none before the server was ready
        assert sorted(source.decoded) == sorted(
            [key_string(flavor(f"f{i}")) for i in range(300)] + [key_string(app("a"))]
        )
        assert notify.lookup("edgeproto.App", key_string(app("a"))) == app("a")
        assert len(source.decoded) == 301


async def test_background_decoding_waits_while_a_client_is_being_sent_to() -> None:
    source = EncodedSource([flavor(f"f{i}") for i in range(50)])
    notify = NotifyServer(source, name="ctrl", send_types=SEND_TYPES)
    busy = _Conn(Peer(99, "test", "busy", False), frozenset(), 10, sending=True)
    notify._conns.add(busy)
    async with notify:
        async with asyncio.timeout(5):
            await notify.wait_ready()
        await asyncio.sleep(0.1)
        assert source.decoded == []
        busy.sending = False
        await eventually(lambda: _check(len(source.decoded) == 50))


def test_an_entry_decodes_and_serializes_once_on_demand() -> None:
    decoded: list[bytes] = []

    def decode(value: bytes) -> Message:
        decoded.append(value)
        if not value:
            raise ValueError("not a Flavor")
        return Flavor.FromString(value)

    obj = flavor("f")
    entry = _Entry("k", 7, raw=obj.SerializeToString(), decode=decode)
    assert not entry.decoded
    wire = entry.wire()
    assert wire == data_notice(Action.UPDATE, obj, 7).SerializeToString()
    assert entry.wire() is wire
    notice = entry.notice()
    assert notice is not None
    assert entry.notice() is notice
    assert unpack(notice, Flavor) == entry.obj == obj
    assert entry.decoded
    assert len(decoded) == 1

    broken = _Entry("k", 7, raw=b"", decode=decode)
    assert broken.obj is None
    assert (broken.wire(), broken.notice(), broken.decoded) == (None, None, True)


async def test_an_undecodable_object_is_never_sent(caplog: pytest.LogCaptureFixture) -> None:
    bad = key_string(flavor("f1"))
    source = EncodedSource([flavor("f0"), flavor("f1"), flavor("f2")], bad=(bad,))
    with caplog.at_level(logging.WARNING, logger="edge_cloud.notify.server"):
        async with notify_server(source) as (notify, port):
            raw = RawStream(port)
            try:
                names = [unpack(n, Flavor).key.name for n in await data_of(raw, Flavor)]
                assert names == ["f0", "f2"]
                assert notify.lookup("edgeproto.Flavor", bad) is None
                assert sorted(notify.objects(Flavor)) == sorted(
                    [key_string(flavor("f0")), key_string(flavor("f2"))]
                )
                # its later deletion still goes out (a client may hold an older version)
                rev = source.delete(flavor("f1"))
                delete = await raw.read()
                assert (delete.action, delete.mod_rev) == (notice_pb2.DELETE, rev)
                assert unpack(delete, Flavor) == Flavor(key=flavor("f1").key)
            finally:
                await raw.close()
    assert any("undecodable" in r.getMessage() and bad in r.getMessage() for r in caplog.records)


# --- the event loop keeps running -----------------------------------------------------------


@contextlib.asynccontextmanager
async def ticking() -> AsyncIterator[list[int]]:
    """Count the event loop's turns while the body runs."""
    ticks = [0]

    async def tick() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(tick())
    try:
        yield ticks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_large_snapshot_is_applied_a_thousand_objects_at_a_time() -> None:
    source = MemorySource([flavor(f"f{i:05d}") for i in range(5000)])
    notify = NotifyServer(source, name="ctrl", send_types=SEND_TYPES)
    async with ticking() as ticks, notify:
        await asyncio.sleep(0)
        ticks[0] = 0
        async with asyncio.timeout(10):
            await notify.wait_ready()
        assert ticks[0] >= 9  # two passes over 5000 objects, a yield per thousand
    assert len(notify.objects(Flavor)) == 5000


class FakeStore:
    """The listings `EtcdNotifySource` reads: now, and at older revisions."""

    def __init__(self, items: list[KeyValue], revision: int) -> None:
        self.items, self.revision = items, revision
        self.history: dict[int, list[KeyValue]] = {}
        self.asked: list[int | None] = []

    async def range(
        self, prefix: str, *, revision: int | None = None, keys_only: bool = False
    ) -> tuple[list[KeyValue], int]:
        self.asked.append(revision)
        if revision is None or (revision == self.revision and revision not in self.history):
            return [kv for kv in self.items if kv.key.startswith(prefix)], self.revision
        return self.history[revision], self.revision


async def test_etcd_snapshot_takes_keys_from_etcd_and_leaves_values_encoded() -> None:
    objs = [flavor(f"f{i:05d}") for i in range(3000)]
    items = [
        KeyValue(keys.object_store_key(o), codec.encode(o), i + 2, i + 2, 1)
        for i, o in enumerate(objs)
    ]
    items.append(KeyValue("1/VersionV2", b"{}", 1, 1, 1))  # not an object
    items.append(KeyValue("1/Flavor/" + key_string(flavor("bad")), b"not json", 3, 3, 1))
    source = EtcdNotifySource(cast(Any, FakeStore(items, 5000)), [Flavor])
    async with ticking() as ticks:
        await asyncio.sleep(0)
        ticks[0] = 0
        snap = await source.snapshot()
        assert ticks[0] >= 2
    assert snap.revision == 5000
    got = snap.objects["edgeproto.Flavor"]
    assert len(got) == 3001
    first = got[0]
    assert isinstance(first, Encoded)
    assert (first.key, first.mod_rev) == (key_string(objs[0]), 2)
    assert first.decode(first.value) == objs[0]
    last = got[-1]
    assert isinstance(last, Encoded)
    with pytest.raises(EdgeError, match=r"cannot decode stored edgeproto\.Flavor"):
        last.decode(last.value)


def listing(*objs: Message) -> list[KeyValue]:
    return [KeyValue(keys.object_store_key(o), b"", 1, 1, 1) for o in objs]


async def test_etcd_history_lists_only_the_old_revision_when_the_new_is_the_snapshot() -> None:
    a, b, c, d = (flavor(n) for n in "abcd")
    store = FakeStore(listing(a, b), 10)
    store.history = {5: listing(a, c, d), 10: listing(a, b), 12: listing(b)}
    source = EtcdNotifySource(cast(Any, store), [Flavor])
    await source.snapshot()
    store.asked.clear()
    deletes = await source.deleted_since(5, 10)
    assert deletes is not None
    assert [(ch.action, ch.key, ch.mod_rev) for ch in deletes] == [
        (Action.DELETE, key_string(c), 10),
        (Action.DELETE, key_string(d), 10),
    ]
    assert deletes[0].obj == Flavor(key=c.key)
    assert store.asked == [5]  # the keys at 10 are the snapshot's
    deletes = await source.deleted_since(5, 12)
    assert deletes is not None
    assert [ch.key for ch in deletes] == [key_string(o) for o in (a, c, d)]
    assert store.asked == [5, 5, 12]


# --- waiting for the first snapshot ---------------------------------------------------------


async def test_clients_wait_for_a_loading_snapshot_past_sync_timeout() -> None:
    source = SlowSource([flavor("f")])
    notify = NotifyServer(source, name="ctrl", send_types=SEND_TYPES, sync_timeout=0.05)
    async with notify, serving(notify) as port:
        raw = RawStream(port)
        try:
            await raw.send(version(Flavor))
            async with asyncio.timeout(2):
                await raw.call.initial_metadata()  # accepted at once
            reply = asyncio.create_task(raw.read())
            await asyncio.sleep(0.3)  # six times sync_timeout: still loading, still waiting
            assert not reply.done()
            source.release.set()
            assert (await reply).action == notice_pb2.VERSION
            assert len(await raw.read_until_sendall_end()) == 2
        finally:
            await raw.close()


@pytest.mark.parametrize("started", [False, True], ids=["not-started", "source-failing"])
async def test_a_server_not_loading_refuses_clients_after_sync_timeout(started: bool) -> None:
    notify = NotifyServer(BrokenSource(), name="ctrl", send_types=SEND_TYPES, sync_timeout=0.2)
    async with contextlib.AsyncExitStack() as stack:
        if started:
            await stack.enter_async_context(notify)
        port = await stack.enter_async_context(serving(notify))
        raw = RawStream(port)
        stack.push_async_callback(raw.close)
        await raw.send(version(Flavor))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw.read(within=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details() == "notify server ctrl is not synced yet"


# --- serialized once, same bytes ------------------------------------------------------------


async def read_bytes(port: int, hello: Notice, count: int) -> list[bytes]:
    """The first `count` responses of a stream, as the bytes on the wire."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call: Any = channel.stream_stream(
            METHOD, request_serializer=Notice.SerializeToString, response_deserializer=None
        )()
        await call.write(hello)
        out = []
        for _ in range(count):
            async with asyncio.timeout(5):
                data = await call.read()
            assert isinstance(data, bytes)
            out.append(data)
        call.cancel()
        return out


@contextlib.asynccontextmanager
async def serving_messages(notify: NotifyServer) -> AsyncIterator[int]:
    """`notify.StreamNotice` registered by hand, with the message serializer."""
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "StreamNotice": grpc.stream_stream_rpc_method_handler(
                notify.StreamNotice,
                request_deserializer=Notice.FromString,
                response_serializer=Notice.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def test_each_update_is_serialized_once_into_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[Action] = []

    def counting(action: Action, obj: Message, mod_rev: int = 0) -> Notice:
        built.append(action)
        return data_notice(action, obj, mod_rev)

    monkeypatch.setattr(server_module, "data_notice", counting)
    objs = [flavor("small"), flavor("large"), app("a")]
    source = MemorySource(objs)
    hello = version(Flavor, App)
    async with notify_server(source) as (notify, port):
        first = await read_bytes(port, hello, 5)  # VERSION, 3 objects, SENDALL_END
        second = await read_bytes(port, hello, 5)
        assert built.count(Action.UPDATE) == 3  # not once per client
        assert first == second
        expected = {data_notice(Action.UPDATE, o, 1).SerializeToString() for o in objs}
        assert set(first[1:4]) == expected
        async with serving_messages(notify) as other:  # StreamNotice, registered by hand
            assert await read_bytes(other, hello, 5) == first


# --- the revision index ---------------------------------------------------------------------


def entries(*pairs: tuple[str, int]) -> dict[str, _Entry]:
    return {key: _Entry(key, rev, flavor(key)) for key, rev in pairs}


def test_revision_index_reads_what_was_written_after_a_revision() -> None:
    index = _RevisionIndex()
    objects = entries(("a", 5), ("b", 3), ("c", 9), ("d", 7))
    for key in ["a", "b", "c", "d"]:  # a snapshot: any order
        index.add(objects[key].mod_rev, key, objects)
    index.settle()
    assert [e.key for e in index.since(0, objects)] == ["b", "a", "d", "c"]
    assert [e.key for e in index.since(5, objects)] == ["d", "c"]
    assert index.since(9, objects) == []
    # changes: b rewritten twice, c deleted, e created at the same revision as b's last
    for key, rev in [("b", 10), ("b", 11), ("e", 11)]:
        objects[key] = _Entry(key, rev, flavor(key))
        index.add(rev, key, objects)
    del objects["c"]
    assert [e.key for e in index.since(5, objects)] == ["d", "b", "e"]
    assert [e.key for e in index.since(10, objects)] == ["b", "e"]


def test_revision_index_drops_stale_pairs_once_they_outnumber_live_ones() -> None:
    index = _RevisionIndex()
    objects: dict[str, _Entry] = {}
    for rev in range(1, 3000):
        objects["k"] = _Entry("k", rev, flavor("k"))
        index.add(rev, "k", objects)
    assert len(index) <= 2 * len(objects) + 1025
    assert [e.mod_rev for e in index.since(0, objects)] == [2999]


async def test_a_delta_reads_only_what_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    source = MemorySource([flavor(f"f{i:04d}") for i in range(2000)])
    async with notify_server(source, send_types=[Flavor]) as (notify, port):
        since = source.revision
        for i in (7, 1500, 7):
            source.put(flavor(f"f{i:04d}", ram=4096 + i))
        source.delete(flavor("f0009"))
        await eventually(lambda: _check(notify.revision == source.revision))
        seen: list[int] = []
        real = _Entry.mod_rev

        monkeypatch.setattr(
            _Entry, "mod_rev", property(lambda e: seen.append(1) or real.__get__(e))
        )
        raw = RawStream(port)
        try:
            notices = await data_of(raw, Flavor, **{"delta-since-rev": str(since)})
        finally:
            await raw.close()
        monkeypatch.undo()
        summary = [
            (notice_pb2.NoticeAction.Name(n.action), unpack(n, Flavor).key.name) for n in notices
        ]
        assert summary == [("DELETE", "f0009"), ("UPDATE", "f1500"), ("UPDATE", "f0007")]
        assert len(seen) < 20  # the 2000 unchanged entries were not looked at


def _check(condition: bool) -> None:
    assert condition
