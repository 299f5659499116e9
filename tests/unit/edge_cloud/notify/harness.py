"""Shared pieces of the notify tests: objects, in-process servers, raw streams, recorders."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
import grpc.aio
from distributed_match_engine import appcommon_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    flavor_pb2,
    notice_pb2,
    notice_pb2_grpc,
)

from edge_cloud.notify import NotifyCache, NotifyServer, NotifySource, key_string
from edge_cloud.notify._wire import Message

T = TypeVar("T")

Flavor = flavor_pb2.Flavor
App = app_pb2.App
Cloudlet = cloudlet_pb2.Cloudlet
CloudletInfo = cloudlet_pb2.CloudletInfo
ClusterInst = clusterinst_pb2.ClusterInst
AppInst = appinst_pb2.AppInst
AppInstInfo = appinst_pb2.AppInstInfo
Notice = notice_pb2.Notice

# Controller order (controller.md §6.4), restricted to what the tests use.
SEND_TYPES: list[type[Message]] = [Flavor, Cloudlet, ClusterInst, App, AppInst]
RECEIVE_TYPES: list[type[Message]] = [CloudletInfo, AppInstInfo]


def flavor(name: str, ram: int = 1024) -> Flavor:
    return Flavor(key=flavor_pb2.FlavorKey(name=name), ram=ram, vcpus=1, disk=10)


def app(name: str, image: str = "img:1") -> App:
    return App(
        key=app_pb2.AppKey(organization="dev", name=name, version="1.0"),
        image_path=image,
        deployment="kubernetes",
    )


def ckey(name: str) -> cloudletkey_pb2.CloudletKey:
    return cloudletkey_pb2.CloudletKey(organization="oper", name=name)


def cloudlet(name: str, **fields: Any) -> Cloudlet:
    return Cloudlet(key=ckey(name), **fields)


def cloudlet_info(name: str, state: int = appcommon_pb2.CLOUDLET_STATE_READY) -> CloudletInfo:
    return CloudletInfo(key=ckey(name), state=state)  # type: ignore[arg-type]


def cluster_inst(name: str, cloudlet_name: str) -> ClusterInst:
    return ClusterInst(
        key=cluster_pb2.ClusterKey(name=name, organization="dev"),
        cloudlet_key=ckey(cloudlet_name),
    )


def app_inst(name: str, cloudlet_name: str, uri: str = "") -> AppInst:
    return AppInst(
        key=appinst_pb2.AppInstKey(name=name, organization="dev"),
        cloudlet_key=ckey(cloudlet_name),
        uri=uri,
    )


async def eventually(
    check: Callable[[], T | Awaitable[T]], *, within: float = 5.0, interval: float = 0.01
) -> T:
    """Retry `check` until it stops raising AssertionError; re-raise at the deadline."""
    deadline = time.monotonic() + within
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            return result  # type: ignore[return-value]
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def serving(notify: NotifyServer, port: int = 0) -> AsyncIterator[int]:
    """A grpc.aio server on loopback carrying `notify`; yields its port."""
    server = grpc.aio.server()
    notify.add_to(server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        yield bound
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def notify_server(
    source: NotifySource, port: int = 0, **kwargs: Any
) -> AsyncIterator[tuple[NotifyServer, int]]:
    """A started, synced `NotifyServer` on loopback; yields it and its port."""
    kwargs.setdefault("name", "ctrl")
    kwargs.setdefault("send_types", SEND_TYPES)
    kwargs.setdefault("receive_types", RECEIVE_TYPES)
    notify = NotifyServer(source, **kwargs)
    async with notify:
        async with asyncio.timeout(5):
            await notify.wait_ready()
        async with serving(notify, port) as bound:
            yield notify, bound


class RawStream:
    """A hand-driven StreamNotice call, for checking the wire."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.call: Any = notice_pb2_grpc.NotifyApiStub(self.channel).StreamNotice()

    async def send(self, notice: Notice) -> None:
        await self.call.write(notice)

    async def read(self, within: float = 5.0) -> Notice:
        async with asyncio.timeout(within):
            notice = await self.call.read()
        assert isinstance(notice, Notice), f"stream ended: {notice!r}"
        return notice

    async def read_until_sendall_end(self, within: float = 5.0) -> list[Notice]:
        out: list[Notice] = []
        while True:
            notice = await self.read(within)
            out.append(notice)
            if notice.action == notice_pb2.SENDALL_END:
                return out

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


def version(*wants: type[Message], name: str = "raw", **tags: str) -> Notice:
    return Notice(
        action=notice_pb2.VERSION,
        version=1,
        want_objs=[w.DESCRIPTOR.full_name for w in wants],
        tags={"name": name, **tags},
    )


def unpack(notice: Notice, cls: type[T]) -> T:
    obj = cls()
    assert isinstance(obj, Message)
    obj.ParseFromString(notice.any.value)
    return obj


class Recorder:
    """Every callback fired by some caches, as (event, type, key) tuples."""

    def __init__(self, *caches: NotifyCache[Any]) -> None:
        self.events: list[tuple[str, str, str]] = []
        for cache in caches:
            self.attach(cache)

    def attach(self, cache: NotifyCache[Any]) -> None:
        name = cache.cls.DESCRIPTOR.name

        async def updated(new: Message, old: Message | None) -> None:
            self.events.append(("create" if old is None else "update", name, key_string(new)))

        async def deleted(old: Message) -> None:
            self.events.append(("delete", name, key_string(old)))

        cache.on_update(updated)
        cache.on_delete(deleted)

    def take(self) -> list[tuple[str, str, str]]:
        events, self.events = self.events, []
        return sorted(events)


def contents(cache: Mapping[str, Message]) -> dict[str, bytes]:
    """A cache as comparable bytes (deterministic serialization)."""
    return {k: v.SerializeToString(deterministic=True) for k, v in cache.items()}
