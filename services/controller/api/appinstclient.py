"""AppInstClientApi: watch the clients DMEs find for an AppInst (aux_services.md §5.6).

DMEs only report the clients someone asked for: a watch stores its `AppInstClientKey`
in etcd (under this controller's lease, so a dead controller's requests vanish with it),
notify carries it down to every DME, and matching `AppInstClient` messages come back up
to the controller the DME is connected to. That controller keeps the latest
`max_tracked_dme_clients` per App (latest per unique id) in `AppInstClients`, the hub
shared by the notify handler and the servicer.

`ShowAppInstClient` replays the matching clients this controller holds, then follows new
ones; it also fans in every other live controller's `StreamAppInstClientsLocal`, because a
DME reports only to its own controller. Each fan-in holds a local watch on the other
controller too, so the request stays in etcd as long as any watcher anywhere needs it; the
last watcher of a key to leave withdraws it and purges the matching clients, as the
original does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Final

import grpc
import grpc.aio
from edgeproto import appinstclient_pb2, appinstclient_pb2_grpc, controller_pb2

from edge_cloud.api import channel
from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.objects import keys, registry
from edge_cloud.objects.match import matches
from services.controller._engine import Txn
from services.controller._runtime import Runtime
from services.controller._tracked import TrackedRuntime

__all__ = ["AppInstClientApi", "AppInstClients", "add", "client_hub"]

log = logging.getLogger(__name__)

_Ctx = grpc.aio.ServicerContext[Any, Any]
_Client = appinstclient_pb2.AppInstClient
_Key = appinstclient_pb2.AppInstClientKey
_AppId = tuple[str, str, str]

CLIENT_KEY: Final = registry.by_class(appinstclient_pb2.AppInstClientKey)
_HUBS: Final[weakref.WeakKeyDictionary[Runtime, AppInstClients]] = weakref.WeakKeyDictionary()


def client_hub(runtime: Runtime) -> AppInstClients:
    """The hub of `runtime`'s controller, created on first use.

    The servicers are registered before the notify server exists; both find the same hub
    through the runtime they share.
    """
    hub = _HUBS.get(runtime)
    if hub is None:
        hub = _HUBS[runtime] = AppInstClients(runtime)
    return hub


def _app_of(key: _Key) -> _AppId:
    return (key.app_key.organization, key.app_key.name, key.app_key.version)


class _Watch:
    """One watcher: its filter and the queue new matching clients are put on."""

    def __init__(self, key: _Key, limit: int) -> None:
        self.key = key
        self.queue: asyncio.Queue[_Client] = asyncio.Queue(maxsize=limit)
        self.dropped = 0


class AppInstClients:
    """The clients reported by this controller's DMEs and the watches waiting for them.

    Args:
        runtime: The runtime (engine, Settings).
    """

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._rings: dict[_AppId, deque[_Client]] = {}
        self._watches: dict[str, list[_Watch]] = {}
        # serialises the etcd writes of the requests, so a withdrawal that raced a new
        # watch of the same key sees it and keeps the request
        self._requests = asyncio.Lock()
        self._cleanups: set[asyncio.Task[None]] = set()
        self.lease_id: Callable[[], int | None] = lambda: None

    def clients(self, want: _Key) -> list[_Client]:
        """The held clients matching `want` (zero fields match anything), oldest first."""
        return [c for ring in self._rings.values() for c in ring if matches(want, c.client_key)]

    def watchers(self, want: _Key) -> int:
        """How many watches of exactly `want` this controller has."""
        return len(self._watches.get(keys.key_string(want), ()))

    def add(self, client: _Client) -> None:
        """Keep one reported client and hand it to the watches it matches.

        A watcher that falls `max_tracked_dme_clients` behind loses clients rather than
        holding up notify (the original drops on a full channel too).
        """
        key = client.client_key
        limit = max(self._rt.settings().max_tracked_dme_clients, 1)
        app = _app_of(key)
        ring = self._rings.get(app)
        if ring is None or ring.maxlen != limit:
            ring = self._rings[app] = deque(ring or (), maxlen=limit)
        for old in ring:
            if (old.client_key.unique_id, old.client_key.unique_id_type) == (
                key.unique_id,
                key.unique_id_type,
            ):
                ring.remove(old)
                break
        ring.append(client)
        for watches in self._watches.values():
            for watch in watches:
                if not matches(watch.key, key):
                    continue
                try:
                    watch.queue.put_nowait(client)
                except asyncio.QueueFull:
                    watch.dropped += 1

    async def watch(self, want: _Key) -> AsyncGenerator[_Client, None]:
        """The matching clients held now, then every new one, until the caller stops.

        Raises:
            InvalidArgument: `want` names no AppInst organization.
        """
        if not want.app_inst_key.organization:
            raise InvalidArgument("Organization must be specified")
        keys.validate_key(want)
        key_string = keys.key_string(want)
        watch = _Watch(want, max(self._rt.settings().max_tracked_dme_clients, 1))
        # register and snapshot in one step: nothing arrives in between to be lost or doubled
        self._watches.setdefault(key_string, []).append(watch)
        held = self.clients(want)
        try:
            for client in held:
                yield client
            await self._request(want)
            while True:
                yield await watch.queue.get()
        finally:
            watches = self._watches.get(key_string, [])
            if watch in watches:
                watches.remove(watch)
            if not watches:
                self._watches.pop(key_string, None)
                # outlives the handler, which is being cancelled when the client left
                task = asyncio.get_running_loop().create_task(self._withdraw(want, key_string))
                self._cleanups.add(task)
                task.add_done_callback(self._cleanups.discard)

    async def _request(self, want: _Key) -> None:
        """Store the request (DMEs then report matching clients), if it is not there yet."""
        lease = self.lease_id()

        def put(txn: Txn) -> None:
            if txn.get(CLIENT_KEY, keys.key_string(want)) is None:
                txn.put(want, lease=lease)

        async with self._requests:
            await self._rt.engine.apply(put)

    async def _withdraw(self, want: _Key, key_string: str) -> None:
        """The last watch of `want` left: remove the request and the clients it brought."""

        def remove(txn: Txn) -> None:
            if txn.get(CLIENT_KEY, key_string) is not None:
                txn.delete(CLIENT_KEY, key_string)

        async with self._requests:
            if key_string in self._watches:
                return  # watched again meanwhile: keep the request
            try:
                await self._rt.engine.apply(remove)
            except EdgeError as err:
                log.warning("AppInstClientKey %s not withdrawn: %s", key_string, err)
            for app, ring in list(self._rings.items()):
                kept = [c for c in ring if not matches(want, c.client_key)]
                if len(kept) != len(ring):
                    self._rings[app] = deque(kept, maxlen=ring.maxlen)


class AppInstClientApi(appinstclient_pb2_grpc.AppInstClientApiServicer):
    """Watch an AppInst's clients on this controller, and across the region."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def ShowAppInstClient(self, request: _Key, context: _Ctx) -> AsyncIterator[_Client]:
        """Clients of every controller of the region, followed live until the caller leaves."""
        hub = client_hub(self._rt)
        if not request.app_inst_key.organization:
            raise InvalidArgument("Organization must be specified")
        others = self._other_controllers()
        if not others:
            async with contextlib.aclosing(hub.watch(request)) as local:
                async for client in local:
                    yield client
            return
        merged: asyncio.Queue[_Client | EdgeError] = asyncio.Queue()

        async def pump_local() -> None:
            try:
                async with contextlib.aclosing(hub.watch(request)) as local:
                    async for client in local:
                        await merged.put(client)
            except EdgeError as err:
                await merged.put(err)

        async def pump_remote(addr: str) -> None:
            try:
                async with channel(addr, tls=self._rt.config.tls, timeout=None) as chan:
                    stub = appinstclient_pb2_grpc.AppInstClientApiStub(chan)
                    async for client in stub.StreamAppInstClientsLocal(request):
                        await merged.put(client)
            except grpc.aio.AioRpcError as err:
                # a controller that went away takes its DMEs' clients with it; the rest go on
                log.info("no clients from controller %s: %s", addr, err.details())

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(pump_local())]
            tasks.extend(group.create_task(pump_remote(addr)) for addr in others)
            try:
                while True:
                    item = await merged.get()
                    if isinstance(item, EdgeError):
                        raise item
                    yield item
            finally:
                for task in tasks:
                    task.cancel()

    async def StreamAppInstClientsLocal(
        self, request: _Key, context: _Ctx
    ) -> AsyncIterator[_Client]:
        """This controller's clients only: what other controllers fan in."""
        async with contextlib.aclosing(client_hub(self._rt).watch(request)) as local:
            async for client in local:
                yield client

    def _other_controllers(self) -> list[str]:
        """API addresses of the other live controllers (their leased records)."""
        own = ""
        if isinstance(self._rt, TrackedRuntime):
            own = self._rt.tracked.controller_id.partition("@")[2]
        return [
            c.key.addr
            for c in self._rt.engine.show(controller_pb2.Controller())
            if c.key.addr and c.key.addr != own
        ]


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    appinstclient_pb2_grpc.add_AppInstClientApiServicer_to_server(AppInstClientApi(runtime), server)
    return ["edgeproto.AppInstClientApi"]
