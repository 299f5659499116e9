"""NotifyClient against in-process servers: caches, callbacks, upstream, reconnects, deltas."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any

import grpc
import grpc.aio
import pytest
from edgeproto import notice_pb2

from edge_cloud.notify import (
    Action,
    MemorySource,
    NotifyCache,
    NotifyClient,
    NotifyServer,
    Peer,
    Snapshot,
    SyncInfo,
    key_string,
)
from edge_cloud.notify._wire import Message, pack
from tests.unit.edge_cloud.notify.harness import (
    App,
    AppInstInfo,
    CloudletInfo,
    Flavor,
    Notice,
    Recorder,
    app,
    cloudlet_info,
    contents,
    eventually,
    flavor,
    notify_server,
    serving,
)

FAST = {"backoff_initial": 0.02, "backoff_max": 0.2}


def client(port: int, **kwargs: Any) -> NotifyClient:
    return NotifyClient([f"127.0.0.1:{port}"], name=kwargs.pop("name", "dme"), **FAST, **kwargs)


async def synced(c: NotifyClient, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        await c.wait_synced()


def expect_same(cache: Mapping[str, Message], source: MemorySource, cls: type[Message]) -> None:
    assert contents(cache) == contents(source.objects(cls))


async def test_caches_follow_the_server_with_one_callback_per_change() -> None:
    source = MemorySource([flavor("small"), flavor("large"), app("a")])
    async with notify_server(source) as (_, port):
        c = client(port)
        flavors, apps = c.cache(Flavor), c.cache(App)
        assert c.cache(Flavor) is flavors
        seen = Recorder(flavors, apps)
        async with c:
            await synced(c)
            assert flavors.synced
            assert apps.synced
            expect_same(flavors, source, Flavor)
            expect_same(apps, source, App)
            assert seen.take() == [
                ("create", "App", key_string(app("a"))),
                ("create", "Flavor", key_string(flavor("large"))),
                ("create", "Flavor", key_string(flavor("small"))),
            ]
            assert c.server_name == "ctrl"
            assert c.synced_revision == source.revision

            source.put(flavor("small", ram=2048))
            source.put(flavor("small", ram=2048))  # a rewrite without a change
            source.commit(puts=[app("b")], deletes=[flavor("large")])
            await eventually(lambda: expect_same(flavors, source, Flavor))
            await eventually(lambda: expect_same(apps, source, App))
            assert seen.take() == [
                ("create", "App", key_string(app("b"))),
                ("delete", "Flavor", key_string(flavor("large"))),
                ("update", "Flavor", key_string(flavor("small"))),
            ]
            assert flavors.get_for(flavor("small")) == flavor("small", ram=2048)
            with pytest.raises(RuntimeError, match="before starting"):
                c.cache(AppInstInfo)


async def test_reconnect_after_server_restart_is_a_delta_with_exact_callbacks() -> None:
    source = MemorySource([flavor(f"f{i}") for i in range(10)] + [app("a"), app("b")])
    c = client(0)
    async with notify_server(source) as (_, port):
        c = client(port)
        flavors, apps = c.cache(Flavor), c.cache(App)
        seen = Recorder(flavors, apps)
        await c.start()
        await synced(c)
        seen.take()
    # the server is gone; the world moves on meanwhile
    await eventually(lambda: _assert(not c.connected))
    source.put(flavor("f1", ram=1))
    source.commit(puts=[flavor("f2", ram=2), app("c")], deletes=[flavor("f3"), app("a")])
    source.put(flavor("f3"))  # deleted and re-created: an update of the cached one
    source.delete(flavor("f4"))
    source.put(flavor("f4", ram=4))  # deleted and re-created with other contents
    source.put(flavor("f5"))  # rewritten unchanged: no callback
    try:
        async with notify_server(source, port=port):
            await eventually(lambda: _assert(c.stats.delta_syncs == 1), within=10)
            expect_same(flavors, source, Flavor)
            expect_same(apps, source, App)
            assert c.stats.full_syncs == 1
            assert seen.take() == [
                ("create", "App", key_string(app("c"))),
                ("delete", "App", key_string(app("a"))),
                ("update", "Flavor", key_string(flavor("f1"))),
                ("update", "Flavor", key_string(flavor("f2"))),
                ("update", "Flavor", key_string(flavor("f4"))),
            ]
            assert c.synced_revision == source.revision
    finally:
        await c.close()


async def test_full_resync_when_history_is_gone_still_fires_exact_callbacks() -> None:
    source = MemorySource([flavor("keep"), flavor("change"), flavor("drop")])
    async with notify_server(source) as (_, port):
        c = client(port)
        flavors = c.cache(Flavor)
        seen = Recorder(flavors)
        await c.start()
        await synced(c)
        seen.take()
    try:
        source.put(flavor("change", ram=1))
        source.delete(flavor("drop"))
        source.put(flavor("new"))
        source.compact()
        async with notify_server(source, port=port):
            await eventually(lambda: _assert(c.stats.full_syncs == 2), within=10)
            assert c.stats.delta_syncs == 0
            expect_same(flavors, source, Flavor)
            assert seen.take() == [
                ("create", "Flavor", key_string(flavor("new"))),
                ("delete", "Flavor", key_string(flavor("drop"))),
                ("update", "Flavor", key_string(flavor("change"))),
            ]
    finally:
        await c.close()


async def test_delta_from_a_live_server_uses_its_delete_log() -> None:
    source = MemorySource([flavor("a"), flavor("b")])
    notify = NotifyServer(source, name="ctrl", send_types=[Flavor])
    async with notify:
        await asyncio.wait_for(notify.wait_ready(), 5)
        async with serving(notify) as port:
            c = client(port)
            flavors = c.cache(Flavor)
            seen = Recorder(flavors)
            await c.start()
            await synced(c)
            seen.take()
        source.compact()  # only the server's own log can help now
        await eventually(lambda: _assert(not c.connected))
        source.delete(flavor("a"))
        source.put(flavor("c"))
        await eventually(lambda: _assert(notify.revision == source.revision))
        try:
            async with serving(notify, port):
                await eventually(lambda: _assert(c.stats.delta_syncs == 1), within=10)
                expect_same(flavors, source, Flavor)
                assert seen.take() == [
                    ("create", "Flavor", key_string(flavor("c"))),
                    ("delete", "Flavor", key_string(flavor("a"))),
                ]
        finally:
            await c.close()


async def test_original_behaviour_without_delta() -> None:
    source = MemorySource([flavor("a")])
    async with notify_server(source) as (_, port):
        c = client(port, delta=False)
        flavors = c.cache(Flavor)
        async with c:
            await synced(c)
    source.put(flavor("b"))
    async with notify_server(source, port=port), c:
        await eventually(lambda: _assert(c.stats.full_syncs == 2), within=10)
        expect_same(flavors, source, Flavor)
        assert c.stats.delta_syncs == 0


async def test_upstream_objects_are_resent_after_reconnect() -> None:
    got: list[tuple[str, Action, str]] = []
    flushed: list[dict[str, list[str]]] = []

    async def on_receive(peer: Peer, action: Action, obj: Message) -> None:
        got.append((peer.name, action, key_string(obj)))

    async def on_flush(peer: Peer, objects: Mapping[str, Mapping[str, Message]]) -> None:
        flushed.append({t: list(objs) for t, objs in objects.items()})

    callbacks = {"on_receive": on_receive, "on_flush": on_flush}
    info1, info2 = cloudlet_info("c1"), cloudlet_info("c2")
    c: NotifyClient | None = None
    try:
        async with notify_server(MemorySource(), **callbacks) as (_, port):
            c = client(port, name="crm")
            c.cache(Flavor)
            c.send(info1)  # before connecting: sent once connected
            await c.start()
            await synced(c)
            c.send(info2)
            await eventually(lambda: _assert(len(got) == 2))
            c.send(Flavor())  # the server does not want Flavors: never sent
            c.send_delete(info2)
            await eventually(lambda: _assert(len(got) == 3))
            assert got == [
                ("crm", Action.UPDATE, key_string(info1)),
                ("crm", Action.UPDATE, key_string(info2)),
                ("crm", Action.DELETE, key_string(info2)),
            ]
        expected = [{"edgeproto.CloudletInfo": [key_string(info1)]}]
        await eventually(lambda: _assert(flushed == expected))
        got.clear()
        async with notify_server(MemorySource(), port=port, **callbacks):
            await eventually(lambda: _assert(got == [("crm", Action.UPDATE, key_string(info1))]))
    finally:
        if c is not None:
            await c.close()


async def test_client_tries_each_address_in_turn() -> None:
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        dead_port = dead.getsockname()[1]
        async with notify_server(MemorySource([flavor("a")])) as (_, port):
            addrs = [f"127.0.0.1:{dead_port}", f"127.0.0.1:{port}"]
            c = NotifyClient(addrs, name="dme", **FAST)
            flavors = c.cache(Flavor)
            async with c:
                await synced(c)
                assert c.server_addr == f"127.0.0.1:{port}"
                assert list(flavors) == [key_string(flavor("a"))]


async def test_a_failing_callback_does_not_stop_the_others() -> None:
    source = MemorySource([flavor("a")])
    async with notify_server(source) as (_, port):
        c = client(port)
        flavors: NotifyCache[Flavor] = c.cache(Flavor)

        async def broken(new: Flavor, old: Flavor | None) -> None:
            raise RuntimeError("handler bug")

        flavors.on_update(broken)
        seen = Recorder(flavors)
        async with c:
            await synced(c)
            source.put(flavor("b"))
            await eventually(lambda: _assert(len(flavors) == 2))
            assert len(seen.take()) == 2


async def test_unknown_and_unwanted_objects_are_ignored() -> None:
    source = MemorySource([flavor("a"), app("x")])
    async with notify_server(source) as (_, port):
        c = client(port)
        flavors = c.cache(Flavor)
        c.cache(CloudletInfo)  # the server does not offer it: stays empty, still synced
        async with c:
            await synced(c)
            assert list(flavors) == [key_string(flavor("a"))]
            assert len(c.cache(CloudletInfo)) == 0


async def test_wait_resynced_and_on_synced_follow_every_sync() -> None:
    source = MemorySource([flavor("a"), flavor("b")])
    c = client(0)
    infos: list[SyncInfo] = []
    generations: list[int] = []
    async with notify_server(source) as (_, port):
        c = client(port)
        flavors = c.cache(Flavor)

        @c.on_synced
        async def broken(info: SyncInfo) -> None:
            raise RuntimeError("handler bug")

        @c.on_synced
        async def synced_(info: SyncInfo) -> None:
            infos.append(info)
            generations.append(c.sync_generation)  # counted once callbacks ran
            assert len(flavors) == (2 if info.generation == 1 else 3)

        assert c.sync_generation == 0
        await c.start()
        async with asyncio.timeout(5):
            assert await c.wait_resynced() == 1  # by default: the next sync
            assert await c.wait_resynced(0) == 1  # already past it: at once
        assert infos == [SyncInfo(1, False, source.revision, "ctrl")]
        assert c.sync_generation == 1
        nothing = asyncio.create_task(c.wait_resynced())
    try:
        source.put(flavor("c"))
        async with notify_server(source, port=port):
            async with asyncio.timeout(10):
                assert await c.wait_resynced(1) == 2
            assert await nothing == 2
            assert infos[1] == SyncInfo(2, True, source.revision, "ctrl")
            assert generations == [0, 1]
            assert (c.stats.full_syncs, c.stats.delta_syncs) == (1, 1)
    finally:
        await c.close()


async def test_cache_keys_are_computed_once_per_notice() -> None:
    source = MemorySource([flavor(f"f{i}") for i in range(50)])
    async with notify_server(source) as (_, port):
        c = client(port)
        flavors = c.cache(Flavor)
        assert flavors.key_of(flavor("f1")) == key_string(flavor("f1"))
        calls: list[str] = []
        encode = flavors._key

        def counting(obj: Message) -> str:
            key = encode(obj)
            calls.append(key)
            return key

        flavors._key = counting
        async with c:
            await synced(c)
            assert len(calls) == 50
            source.delete(flavor("f1"))
            await eventually(lambda: _assert(len(flavors) == 49))
            assert len(calls) == 51
            assert flavors.get_for(flavor("f2")) == flavor("f2")


async def test_client_waits_for_a_loading_server_past_its_handshake_timeout() -> None:
    class SlowSource(MemorySource):
        release = asyncio.Event()

        async def snapshot(self) -> Snapshot:
            await self.release.wait()
            return await super().snapshot()

    source = SlowSource([flavor("a")])
    notify = NotifyServer(source, name="ctrl", send_types=[Flavor])
    async with notify, serving(notify) as port:
        c = client(port, handshake_timeout=0.1)
        flavors = c.cache(Flavor)
        async with c:
            await asyncio.sleep(0.5)  # five handshake timeouts
            assert not c.cache(Flavor).synced
            source.release.set()
            await synced(c)
            assert c.stats.connects == 1  # one stream, never given up
            assert list(flavors) == [key_string(flavor("a"))]


async def test_client_retries_a_server_that_refuses_until_it_is_synced() -> None:
    source = MemorySource([flavor("a")])
    notify = NotifyServer(source, name="ctrl", send_types=[Flavor], sync_timeout=0.05)
    async with serving(notify) as port:
        c = client(port)
        c.cache(Flavor)
        async with c:
            await asyncio.sleep(0.3)  # refused (not started, so not loading) again and again
            assert c.stats.connects == 0
            async with notify:
                await synced(c)


def _assert(condition: bool) -> None:
    assert condition


class ScriptedServer:
    """A scripted notify server: answers VERSION, plays one script per connection, hangs up."""

    def __init__(self, *scripts: list[Notice]) -> None:
        self.hellos: list[Notice] = []
        self.scripts = list(scripts)

    async def stream(self, request_iterator: Any, context: Any) -> None:
        hello = await context.read()
        self.hellos.append(hello)
        await context.write(Notice(action=notice_pb2.VERSION, version=1, tags={"name": "orig"}))
        script = self.scripts.pop(0) if self.scripts else []
        for notice in script:
            await context.write(notice)
        if not script:
            await asyncio.Event().wait()  # nothing left to say: stay connected

    def add_to(self, server: grpc.aio.Server) -> None:
        handler = grpc.method_handlers_generic_handler(
            "edgeproto.NotifyApi",
            {
                "StreamNotice": grpc.stream_stream_rpc_method_handler(
                    self.stream,
                    request_deserializer=Notice.FromString,
                    response_serializer=Notice.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))


def upd(obj: Message, rev: int) -> Notice:
    return Notice(action=notice_pb2.UPDATE, any=pack(obj), mod_rev=rev)


def dele(obj: Flavor, rev: int) -> Notice:
    return Notice(action=notice_pb2.DELETE, any=pack(Flavor(key=obj.key)), mod_rev=rev)


def end(**tags: str) -> Notice:
    return Notice(action=notice_pb2.SENDALL_END, tags=tags, mod_rev=99)


async def test_revision_tracking_delta_acceptance_and_original_servers() -> None:
    a, b, c, d = (flavor(n) for n in "abcd")
    scripted = ScriptedServer(
        # ours: full send-all at revision 4, then changes; b and c share revision 5
        [upd(a, 3), end(**{"snapshot-rev": "4"}), upd(b, 5), upd(c, 5), upd(d, 6)],
        # ours, delta since 5 (as asked): nothing pruned; c deleted at 6
        [dele(c, 6), end(**{"snapshot-rev": "6", "delta-since-rev": "5"})],
        # an original server: no tags at all, a full send-all with only a; stale mod_rev
        [upd(a, 3), end()],
        [],
    )
    server = grpc.aio.server()
    scripted.add_to(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        cl = client(port)
        flavors = cl.cache(Flavor)
        async with cl:
            await eventually(lambda: _assert(len(scripted.hellos) == 4), within=10)
            # the 4th hello reaches the server before its VERSION reply reaches the client
            await eventually(lambda: _assert(cl.server_name == "orig"), within=10)
            announced = [h.tags.get("delta-since-rev") for h in scripted.hellos]
            # revision 6 was seen but could not be known complete: 5 is announced
            assert announced == [None, "5", "6", None]
            assert cl.stats.full_syncs == 2
            assert cl.stats.delta_syncs == 1
            assert list(flavors) == [key_string(a)]  # the original's send-all pruned b and d
            assert cl.synced_revision is None
            assert cl.server_name == "orig"
    finally:
        await server.stop(None)
