"""NotifyServer on the wire: handshake, send-all, changes, upstream, slow clients, deltas."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import grpc
import grpc.aio
import pytest
from edgeproto import notice_pb2

from edge_cloud.notify import Action, MemorySource, NotifyServer, Peer, Snapshot, key_string
from edge_cloud.notify._wire import Message, pack
from tests.unit.edge_cloud.notify.harness import (
    SEND_TYPES,
    App,
    CloudletInfo,
    Flavor,
    Notice,
    RawStream,
    app,
    cloudlet,
    cloudlet_info,
    eventually,
    flavor,
    notify_server,
    serving,
    unpack,
    version,
)


async def test_handshake_send_all_and_changes_on_the_wire() -> None:
    source = MemorySource([flavor("x1.small"), flavor("x1.large"), app("a"), cloudlet("c1")])
    async with notify_server(source, name="ctrl-1") as (_, port):
        raw = RawStream(port)
        try:
            await raw.send(version(Flavor, App, name="dme-1"))
            reply = await raw.read()
            assert reply.action == notice_pb2.VERSION
            assert reply.version == 1
            assert reply.tags["name"] == "ctrl-1"
            assert list(reply.want_objs) == ["edgeproto.CloudletInfo", "edgeproto.AppInstInfo"]
            assert "delta-since-rev" not in reply.tags

            sendall = await raw.read_until_sendall_end()
            data, end = sendall[:-1], sendall[-1]
            # registration order: Flavor before App; the Cloudlet was not wanted
            assert [n.any.type_url for n in data] == [
                "type.googleapis.com/edgeproto.Flavor",
                "type.googleapis.com/edgeproto.Flavor",
                "type.googleapis.com/edgeproto.App",
            ]
            assert all(n.action == notice_pb2.UPDATE for n in data)
            assert unpack(data[2], App) == app("a")
            assert all(n.mod_rev == 1 for n in data)
            assert end.tags["snapshot-rev"] == "1"
            assert end.mod_rev == 1
            assert not end.HasField("any")

            rev = source.put(app("a", image="img:2"))
            update = await raw.read()
            assert update.action == notice_pb2.UPDATE
            assert update.mod_rev == rev
            assert unpack(update, App).image_path == "img:2"

            source.put(cloudlet("c2"))  # not wanted: nothing arrives for it
            rev = source.delete(flavor("x1.large"))
            delete = await raw.read()
            assert delete.action == notice_pb2.DELETE
            assert delete.mod_rev == rev
            assert unpack(delete, Flavor) == Flavor(key=flavor("x1.large").key)  # key only
        finally:
            await raw.close()


async def test_version_is_the_lower_one_and_unknown_wants_are_ignored() -> None:
    async with notify_server(MemorySource([flavor("f")])) as (_, port):
        raw = RawStream(port)
        try:
            hello = version(Flavor)
            hello.version = 7
            hello.want_objs.append("edgeproto.NoSuchThing")
            await raw.send(hello)
            assert (await raw.read()).version == 1
            notices = await raw.read_until_sendall_end()
            assert [n.any.type_url for n in notices[:-1]] == [
                "type.googleapis.com/edgeproto.Flavor"
            ]
        finally:
            await raw.close()


async def test_first_notice_must_be_version() -> None:
    async with notify_server(MemorySource([flavor("f")])) as (_, port):
        raw = RawStream(port)
        try:
            await raw.send(Notice(action=notice_pb2.UPDATE))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw.read()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert caught.value.details() == "Notify server expected action version"
        finally:
            await raw.close()


async def test_upstream_objects_go_to_receive_and_flush_on_disconnect() -> None:
    received: list[tuple[Peer, Action, Message]] = []
    flushed: list[tuple[Peer, Mapping[str, Mapping[str, Message]]]] = []

    async def on_receive(peer: Peer, action: Action, obj: Message) -> None:
        received.append((peer, action, obj))

    async def on_flush(peer: Peer, objects: Mapping[str, Mapping[str, Message]]) -> None:
        flushed.append((peer, objects))

    async with notify_server(MemorySource(), on_receive=on_receive, on_flush=on_flush) as (
        _,
        port,
    ):
        raw = RawStream(port)
        try:
            await raw.send(version(Flavor, name="crm-1"))
            await raw.read_until_sendall_end()
            info1, info2 = cloudlet_info("c1"), cloudlet_info("c2")
            for obj in (info1, info2):
                await raw.send(Notice(action=notice_pb2.UPDATE, any=pack(obj)))
            await raw.send(Notice(action=notice_pb2.DELETE, any=pack(CloudletInfo(key=info2.key))))
            await raw.send(Notice(action=notice_pb2.UPDATE, any=pack(flavor("nope"))))

            def three() -> None:
                assert len(received) == 3

            await eventually(three)
            peer = received[0][0]
            assert (peer.name, peer.notify_id, peer.filter_cloudlet_key) == ("crm-1", 1, False)
            assert peer.addr.startswith("ipv4:127.0.0.1:")
            assert [(a, key_string(o)) for _, a, o in received] == [
                (Action.UPDATE, key_string(info1)),
                (Action.UPDATE, key_string(info2)),
                (Action.DELETE, key_string(info2)),
            ]
            assert flushed == []
        finally:
            await raw.close()

        def gone() -> None:
            assert len(flushed) == 1

        await eventually(gone)
        peer, objects = flushed[0]
        assert peer.name == "crm-1"
        assert {t: list(objs) for t, objs in objects.items()} == {
            "edgeproto.CloudletInfo": [key_string(info1)]
        }


async def test_slow_client_is_dropped_and_others_keep_up() -> None:
    source = MemorySource([flavor("base")])
    async with notify_server(source, queue_limit=5) as (_, port):
        slow, fast = RawStream(port), RawStream(port)
        try:
            for raw in (slow, fast):
                await raw.send(version(App))
                await raw.read_until_sendall_end()
            big = "x" * 64_000
            for i in range(200):
                source.put(app(f"a{i}", image=big))
                # the fast client reads every change as it comes
                assert unpack(await fast.read(), App).key.name == f"a{i}"
            # the slow one read nothing: once its transport window was full its queue
            # overflowed, and what it finally reads ends in the drop
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await drain(slow, 200)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "fell more than 5 changes behind" in (caught.value.details() or "")
        finally:
            await slow.close()
            await fast.close()


async def test_queue_limit_applies_to_changes_not_to_the_send_all() -> None:
    source = MemorySource([flavor(f"f{i}") for i in range(100)])
    async with notify_server(source, queue_limit=5) as (_, port):
        raw = RawStream(port)
        try:
            await raw.send(version(Flavor))
            await raw.read()
            assert len(await raw.read_until_sendall_end()) == 101
        finally:
            await raw.close()


async def test_delta_on_the_wire_and_fallbacks() -> None:
    source = MemorySource([flavor("keep"), flavor("change"), flavor("drop"), app("a")])
    synced = source.revision
    source.put(flavor("change", ram=4096))
    source.delete(flavor("drop"))
    source.put(flavor("new"))
    async with notify_server(source) as (notify, port):
        # The server started after those changes: its own log knows no deletes before it,
        # so it learns them from the source's history.
        assert notify.delta_floor == source.revision
        raw = RawStream(port)
        try:
            await raw.send(version(Flavor, App, **{"delta-since-rev": str(synced)}))
            reply = await raw.read()
            assert reply.tags["delta-since-rev"] == str(synced)
            notices = await raw.read_until_sendall_end()
            summary = [
                (notice_pb2.NoticeAction.Name(n.action), unpack(n, Flavor).key.name)
                for n in notices[:-1]
            ]
            assert summary == [("DELETE", "drop"), ("UPDATE", "change"), ("UPDATE", "new")]
            end = notices[-1]
            assert end.tags["delta-since-rev"] == str(synced)
            assert end.tags["snapshot-rev"] == str(source.revision)
            assert "full-types" not in end.tags
        finally:
            await raw.close()
        assert notify.delta_floor == synced

        # a client from the future, or after compaction: full send-all without the tag
        source.compact()
        for since in (str(source.revision + 10), "0", "garbage"):
            raw = RawStream(port)
            try:
                await raw.send(version(Flavor, App, **{"delta-since-rev": since}))
                reply = await raw.read()
                notices = await raw.read_until_sendall_end()
                assert since == str(synced) or "delta-since-rev" not in reply.tags
                assert len(notices) == 5  # keep, change, new, a, end
                assert "delta-since-rev" not in notices[-1].tags
            finally:
                await raw.close()


async def test_server_close_drops_clients_with_unavailable() -> None:
    async with notify_server(MemorySource([flavor("f")])) as (notify, port):
        raw = RawStream(port)
        try:
            await raw.send(version(Flavor))
            await raw.read_until_sendall_end()
            assert [p.notify_id for p in notify.peers] == [1]
            await notify.close()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw.read()
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            await eventually(lambda: _assert_equal(notify.peers, []))
        finally:
            await raw.close()


async def test_clients_wait_for_the_first_snapshot() -> None:
    class SlowSource(MemorySource):
        def __init__(self) -> None:
            super().__init__([flavor("f")])
            self.release = asyncio.Event()

        async def snapshot(self) -> Snapshot:
            await self.release.wait()
            return await super().snapshot()

    source = SlowSource()
    notify = NotifyServer(source, name="ctrl", send_types=SEND_TYPES)
    async with notify, serving(notify) as port:
        raw = RawStream(port)
        try:
            await raw.send(version(Flavor))
            waiting = asyncio.create_task(raw.read())
            await asyncio.sleep(0.05)
            assert not waiting.done()  # no VERSION reply before the server is synced
            source.release.set()
            assert (await waiting).action == notice_pb2.VERSION
            assert len(await raw.read_until_sendall_end()) == 2
        finally:
            await raw.close()


async def drain(raw: RawStream, most: int) -> None:
    """Read up to `most` notices."""
    for _ in range(most):
        await raw.read()


def _assert_equal(a: object, b: object) -> None:
    assert a == b
