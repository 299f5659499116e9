"""The client side of notify: `NotifyClient` and its typed, read-only `NotifyCache`s.

A client dials one of its addresses, asks for the types it has caches for, and keeps those
caches equal to the server's objects: across disconnects (the caches are kept and reconciled
after the reconnect) and across servers (any controller of the region will do). Callbacks
fire once per real change: an object re-sent unchanged after a reconnect fires nothing, one
that changed while disconnected fires `on_update`, one that vanished fires `on_delete`.

Objects the client sends upstream (`send`, `send_delete`) are remembered and all re-sent
after every reconnect, since the server forgets a connection's objects when it ends.
Messages (`send_message`: Metric, AutoProvCounts, AppInstClient, the original's uncached
notify messages) go once, in order, while connected; a bounded queue holds them across a
disconnect and drops the oldest when full (counted in `ClientStats.messages_dropped`).
Messages from the server (`on_message`: the original's DebugRequest) go to a handler as
they arrive, never cached.

Every completed send-all (the first sync and each resync after a reconnect, full or delta)
counts one sync generation: `wait_resynced` waits for the next one, and `on_synced` callbacks
hear of each (`SyncInfo`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, Self, TypeVar

import grpc
import grpc.aio
from edgeproto import notice_pb2, notice_pb2_grpc

from edge_cloud import api
from edge_cloud.config import TlsFiles
from edge_cloud.notify._tasks import until_first
from edge_cloud.notify._wire import (
    PROTOCOL_VERSION,
    TAG_DELTA_SINCE,
    TAG_FULL_TYPES,
    TAG_NAME,
    TAG_SNAPSHOT_REV,
    TYPE_URL_PREFIX,
    Action,
    Message,
    any_type_name,
    data_notice,
    key_encoder,
    key_only,
    key_string,
    type_name,
)

__all__ = ["ClientStats", "NotifyCache", "NotifyClient", "SyncInfo"]

log = logging.getLogger(__name__)

Notice = notice_pb2.Notice
T = TypeVar("T", bound=Message)

# Keepalive pings find a silently dead server under an idle stream. Not more often than
# every 5 minutes: that is what a grpc server tolerates by default on a stream with no data
# before it answers with GOAWAY "too many pings".
_CHANNEL_OPTIONS: Final[Sequence[tuple[str, Any]]] = (
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)


class NotifyCache(Mapping[str, T], Generic[T]):
    """The client's copy of one type: key string → object, read-only, with change callbacks.

    Objects are the received messages themselves; treat them as read-only. Callbacks run in
    the order changes arrive, one at a time; a slow callback delays the ones after it.
    """

    def __init__(self, cls: type[T]) -> None:
        self.cls = cls
        self.type_name = type_name(cls)
        self._key = key_encoder(cls)
        self._data: dict[str, T] = {}
        self._on_update: list[Callable[[T, T | None], Awaitable[None]]] = []
        self._on_delete: list[Callable[[T], Awaitable[None]]] = []
        self._synced = asyncio.Event()

    def __getitem__(self, key: str) -> T:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<NotifyCache {self.type_name}: {len(self._data)} objects>"

    def key_of(self, obj: Message) -> str:
        """The key string `obj` (an object of this type) is cached under."""
        return self._key(obj)

    def get_for(self, obj: Message) -> T | None:
        """The cached object with the same key as `obj` (any object of this type), or None."""
        return self._data.get(key_string(obj))

    def on_update(
        self, callback: Callable[[T, T | None], Awaitable[None]]
    ) -> Callable[[T, T | None], Awaitable[None]]:
        """Call `await callback(new, old)` when an object is created (old None) or changed."""
        self._on_update.append(callback)
        return callback

    def on_delete(self, callback: Callable[[T], Awaitable[None]]) -> Callable[[T], Awaitable[None]]:
        """Call `await callback(old)` when an object is deleted."""
        self._on_delete.append(callback)
        return callback

    @property
    def synced(self) -> bool:
        """Whether a send-all has completed since the client started."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        """Wait for the first complete send-all (bound it with `asyncio.timeout`)."""
        await self._synced.wait()

    # -- used by NotifyClient --------------------------------------------------------------

    async def _update(self, obj: T, key: str | None = None) -> None:
        if key is None:
            key = self._key(obj)
        old = self._data.get(key)
        if old is not None and old == obj:
            return
        self._data[key] = obj
        for callback in self._on_update:
            await _guarded(callback(obj, old), self.type_name)

    async def _delete(self, key: str) -> None:
        old = self._data.pop(key, None)
        if old is None:
            return
        for callback in self._on_delete:
            await _guarded(callback(old), self.type_name)

    async def _prune(self, keep: set[str]) -> None:
        for key in [k for k in self._data if k not in keep]:
            await self._delete(key)


async def _guarded(call: Awaitable[None], what: str) -> None:
    try:
        await call
    except Exception:
        log.exception("notify callback for %s failed", what)


@dataclass(frozen=True, slots=True)
class SyncInfo:
    """One completed send-all, as `NotifyClient.on_synced` callbacks receive it.

    Attributes:
        generation: Which sync of this client it is: 1 for the first, then one more for
            each resync (what `NotifyClient.sync_generation` says once callbacks ran).
        delta: Whether only the changes since our revision came (a delta resync).
        revision: The revision every cache is complete at; None with an original server.
        server_name: The name of the server it came from.
    """

    generation: int
    delta: bool
    revision: int | None
    server_name: str


#: An `on_synced` callback.
SyncedFn = Callable[[SyncInfo], Awaitable[None]]
#: An `on_message` handler: called with each message of its type the server sends.
MessageFn = Callable[[Any], Awaitable[None]]


@dataclass(slots=True)
class ClientStats:
    """Counters of one client, for logs, metrics and tests.

    Attributes:
        connects: Successful handshakes.
        full_syncs: Send-alls that were complete (the cache was pruned to them).
        delta_syncs: Send-alls that carried only the changes since our revision.
        messages_sent: Messages (`send_message`) written to a server.
        messages_dropped: Messages dropped: the queue was full, or the server did not want
            their type.
    """

    connects: int = 0
    full_syncs: int = 0
    delta_syncs: int = 0
    messages_sent: int = 0
    messages_dropped: int = 0


class NotifyClient:
    """Keeps typed caches in sync with a notify server, and sends objects upstream.

    Register caches with `cache()` before starting; then run it (`run()` as a daemon
    background coroutine, or `async with client:`).

    Args:
        addrs: Server addresses (`host:port`); a random one first, then each in turn.
        name: Our name, sent in the VERSION notice (`tags["name"]`).
        filter_cloudlet_key: Ask for cloudlet-key filtering (CRMs, Shepherd).
        tls: Client TLS files; plaintext when None.
        delta: Ask for a delta resync on reconnect (see the package docstring).
        backoff_initial: Seconds before the first reconnect attempt.
        backoff_max: Longest wait between attempts; waits double up to it, with jitter.
        handshake_timeout: Seconds the server has to accept the stream. Our servers accept
            at once and reply VERSION once they have their first snapshot, which the client
            waits for however long it takes (an original server replies at once).
        message_queue_limit: Messages held while disconnected before the oldest are dropped.
    """

    def __init__(
        self,
        addrs: Sequence[str],
        *,
        name: str,
        filter_cloudlet_key: bool = False,
        tls: TlsFiles | None = None,
        delta: bool = True,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        handshake_timeout: float = 10.0,
        message_queue_limit: int = 10_000,
    ) -> None:
        if not addrs:
            raise ValueError("NotifyClient needs at least one server address")
        self._addrs = list(addrs)
        self._name = name
        self._filter = filter_cloudlet_key
        self._tls = tls
        self._delta = delta
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._handshake_timeout = handshake_timeout
        self._caches: dict[str, NotifyCache[Any]] = {}
        self._by_url: dict[str, NotifyCache[Any]] = {}  # Any type URL → cache
        self._message_handlers: dict[str, tuple[type[Message], MessageFn]] = {}
        # upstream: what we have sent (re-sent after each reconnect), and what is pending
        self._upstream: dict[str, dict[str, Message]] = {}
        self._pending: dict[tuple[str, str], tuple[Action, Message]] = {}
        self._pending_wake = asyncio.Event()
        self._messages: collections.deque[Message] = collections.deque()
        self._message_limit = message_queue_limit
        self._server_wants: frozenset[str] = frozenset()
        # revisions (delta resync): every change up to _synced_rev is applied
        self._synced_rev: int | None = None
        self._pending_rev = 0
        self._connected = asyncio.Event()
        self._synced = asyncio.Event()
        self._generation = 0
        self._next_sync = asyncio.Event()  # set (and replaced) as a sync completes
        self._on_synced: list[SyncedFn] = []
        self._server_name = ""
        self._server_addr = ""
        self._task: asyncio.Task[None] | None = None
        self.stats = ClientStats()

    # -- setup ---------------------------------------------------------------------------------

    def cache(self, cls: type[T]) -> NotifyCache[T]:
        """The cache for a type, created (and the type wanted) on first call.

        Args:
            cls: The message class, e.g. `app_pb2.App`.

        Returns:
            The cache; the same one on later calls.
        """
        name = type_name(cls)
        existing = self._caches.get(name)
        if existing is not None:
            return existing
        if self._task is not None:
            raise RuntimeError(f"register the {name} cache before starting the notify client")
        cache: NotifyCache[T] = NotifyCache(cls)
        self._caches[name] = cache
        self._by_url[TYPE_URL_PREFIX + name] = cache
        return cache

    def on_message(self, cls: type[Message], handler: MessageFn) -> None:
        """Want the uncached message type `cls` from the server, handled by `handler`.

        Messages are not remembered: each is handed over once, as it arrives (a handler
        that takes long should hand the work to a task, so later notices are not held up).

        Args:
            cls: The message class, e.g. `debug_pb2.DebugRequest`.
            handler: `await handler(message)` for each one.
        """
        name = type_name(cls)
        if self._task is not None:
            raise RuntimeError(f"register the {name} handler before starting the notify client")
        self._message_handlers[name] = (cls, handler)

    def on_synced(self, callback: SyncedFn) -> SyncedFn:
        """Call `await callback(info)` after every completed send-all, first sync included.

        It runs once the caches hold the whole send-all (and its callbacks ran), before
        anything after it is applied and before `wait_resynced` returns.
        """
        self._on_synced.append(callback)
        return callback

    # -- upstream ------------------------------------------------------------------------------

    def send(self, obj: Message) -> None:
        """Send `obj` (create or update) to the server now, and again after each reconnect."""
        name, key = type_name(obj), key_string(obj)
        self._upstream.setdefault(name, {})[key] = obj
        self._pending.pop((name, key), None)
        self._pending[name, key] = (Action.UPDATE, obj)
        self._pending_wake.set()

    def send_delete(self, obj: Message) -> None:
        """Tell the server `obj` (by key) is gone; it is no longer re-sent."""
        name, key = type_name(obj), key_string(obj)
        self._upstream.get(name, {}).pop(key, None)
        self._pending.pop((name, key), None)
        self._pending[name, key] = (Action.DELETE, key_only(obj))
        self._pending_wake.set()

    def send_message(self, obj: Message) -> None:
        """Send a one-off message (not remembered, not re-sent after a reconnect).

        Args:
            obj: The message, e.g. an `edgeproto.Metric`; the caller must not modify it
                afterwards.
        """
        if len(self._messages) >= self._message_limit:
            self._messages.popleft()
            self.stats.messages_dropped += 1
        self._messages.append(obj)
        self._pending_wake.set()

    # -- state ---------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a stream is up (handshake done)."""
        return self._connected.is_set()

    @property
    def server_name(self) -> str:
        """The connected server's name (its VERSION tag), empty when disconnected."""
        return self._server_name

    @property
    def server_addr(self) -> str:
        """The address of the connected server, empty when disconnected."""
        return self._server_addr

    @property
    def synced_revision(self) -> int | None:
        """Revision up to which every change is applied.

        None before the first sync, and with an original server, which does not say.
        """
        return self._synced_rev

    async def wait_connected(self) -> None:
        """Wait until a stream is up."""
        await self._connected.wait()

    @property
    def sync_generation(self) -> int:
        """Send-alls completed so far (first sync and resyncs, full or delta); 0 before any."""
        return self._generation

    async def wait_synced(self) -> None:
        """Wait for the first complete send-all (every cache filled)."""
        await self._synced.wait()

    async def wait_resynced(self, after: int | None = None) -> int:
        """Wait for a send-all to complete after generation `after`.

        Take `sync_generation` before what causes the resync (a reconnect, `start()`),
        then pass it here; bound the wait with `asyncio.timeout`.

        Args:
            after: A generation seen earlier; by default the current one, so this waits
                for the next send-all.

        Returns:
            The generation now reached (above `after`).
        """
        target = self._generation if after is None else after
        while self._generation <= target:
            await self._next_sync.wait()
        return self._generation

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until cancelled: dial, sync, follow; on failure back off and redial."""
        index = random.randrange(len(self._addrs))  # noqa: S311 - load spreading, not security
        failures = 0
        while True:
            addr = self._addrs[index % len(self._addrs)]
            index += 1
            connects = self.stats.connects
            try:
                await self._session(addr)
                reason = "closed by the server"
            except asyncio.CancelledError:
                raise
            except Exception as err:
                reason = _describe(err)
            failures = 1 if self.stats.connects > connects else failures + 1
            delay = min(self._backoff_max, self._backoff_initial * 2 ** (failures - 1))
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter
            log.log(
                logging.INFO if failures == 1 else logging.DEBUG,
                "notify connection to %s ended (%s); reconnecting in %.2fs",
                addr,
                reason,
                delay,
            )
            await asyncio.sleep(delay)

    async def start(self) -> None:
        """Run `run()` as a task owned by this client (ended by `close`)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"notify-client-{self._name}")

    async def close(self) -> None:
        """Disconnect and stop reconnecting; caches keep their contents. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _session(self, addr: str) -> None:
        """One connection, from dial to end; raises what ended it."""
        async with api.channel(addr, tls=self._tls, timeout=None, options=_CHANNEL_OPTIONS) as ch:
            call = notice_pb2_grpc.NotifyApiStub(ch).StreamNotice()
            announced = self._synced_rev if self._delta else None
            tags = {TAG_NAME: self._name}
            if announced is not None:
                tags[TAG_DELTA_SINCE] = str(announced)
            hello = Notice(
                action=notice_pb2.VERSION,
                version=PROTOCOL_VERSION,
                want_objs=[*self._caches, *self._message_handlers],
                filter_cloudlet_key=self._filter,
                tags=tags,
            )
            try:
                async with asyncio.timeout(self._handshake_timeout):
                    await call.write(hello)
                    await call.initial_metadata()  # the server has accepted the stream
                reply = await call.read()  # maybe only once the server has its snapshot
                if reply is grpc.aio.EOF:
                    raise ConnectionError("the server closed the stream during the handshake")
                assert isinstance(reply, Notice)  # noqa: S101 - narrowing for mypy
                if reply.action != notice_pb2.VERSION:
                    raise ConnectionError(f"the server answered VERSION with action {reply.action}")
                self._server_wants = frozenset(reply.want_objs)
                self._server_name = reply.tags.get(TAG_NAME, "")
                self._server_addr = addr
                self.stats.connects += 1
                self._connected.set()
                log.info(
                    "notify connected to %s (%s)%s",
                    self._server_name,
                    addr,
                    "" if announced is None else f", asking for changes since {announced}",
                )
                await until_first(self._read_loop(call, announced), self._write_loop(call))
            finally:
                self._connected.clear()
                self._server_name = self._server_addr = ""
                call.cancel()

    async def _write_loop(self, call: Any) -> None:
        # Everything we hold goes again: the server flushed the last connection's objects.
        resend = [
            data_notice(Action.UPDATE, obj)
            for name, objs in self._upstream.items()
            if name in self._server_wants
            for obj in objs.values()
        ]
        self._pending.clear()
        for notice in resend:
            await call.write(notice)
        while True:
            while not self._pending and not self._messages:
                self._pending_wake.clear()
                await self._pending_wake.wait()
            if self._messages:
                message = self._messages[0]
                if type_name(message) in self._server_wants:
                    await call.write(data_notice(Action.UPDATE, message))
                    self.stats.messages_sent += 1
                else:
                    self.stats.messages_dropped += 1
                self._messages.popleft()
                continue
            (name, _key), (action, obj) = next(iter(self._pending.items()))
            del self._pending[name, _key]
            if name in self._server_wants:
                await call.write(data_notice(action, obj))

    async def _read_loop(self, call: Any, announced: int | None) -> None:
        seen: dict[str, set[str]] = {name: set() for name in self._caches}
        in_sendall = True
        while True:
            notice = await call.read()
            if notice is grpc.aio.EOF:
                return
            assert isinstance(notice, Notice)  # noqa: S101 - narrowing for mypy
            action = notice.action
            if action == notice_pb2.SENDALL_END:
                if in_sendall:
                    in_sendall = False
                    await self._sendall_end(notice, announced, seen)
                continue
            if action != notice_pb2.UPDATE and action != notice_pb2.DELETE:
                continue
            packed = notice.any
            cache = self._by_url.get(packed.type_url)
            if cache is None:
                cache = self._caches.get(any_type_name(packed))  # another URL prefix
                if cache is None:
                    await self._message(action, packed)
                    continue
            obj = cache.cls.FromString(packed.value)
            key = cache._key(obj)
            if action == notice_pb2.UPDATE:
                if in_sendall:
                    seen[cache.type_name].add(key)
                await cache._update(obj, key)
            else:
                await cache._delete(key)
            if (
                not in_sendall
                and self._synced_rev is not None
                and notice.mod_rev > self._pending_rev
            ):
                # Changes come in commit order: a higher revision means the last is complete.
                self._synced_rev = max(self._synced_rev, self._pending_rev)
                self._pending_rev = notice.mod_rev

    async def _message(self, action: int, packed: Any) -> None:
        """Hand a server's message (UPDATE of an uncached wanted type) to its handler."""
        found = self._message_handlers.get(any_type_name(packed))
        if found is None or action != notice_pb2.UPDATE:
            return
        cls, handler = found
        await _guarded(handler(cls.FromString(packed.value)), type_name(cls))

    async def _sendall_end(
        self, notice: Notice, announced: int | None, seen: Mapping[str, set[str]]
    ) -> None:
        delta = announced is not None and notice.tags.get(TAG_DELTA_SINCE) == str(announced)
        if delta:
            full = {n for n in notice.tags.get(TAG_FULL_TYPES, "").split(",") if n}
            self.stats.delta_syncs += 1
        else:
            full = set(self._caches)
            self.stats.full_syncs += 1
        for name in full:
            cache = self._caches.get(name)
            if cache is not None:
                await cache._prune(seen[name])
        snapshot = notice.tags.get(TAG_SNAPSHOT_REV)
        if snapshot is not None and snapshot.isdigit():
            self._synced_rev = self._pending_rev = int(snapshot)
        else:
            self._synced_rev = None  # an original server: its revisions promise no order
        for cache in self._caches.values():
            cache._synced.set()
        self._synced.set()
        log.debug(
            "notify %s sync from %s done at revision %s",
            "delta" if delta else "full",
            self._server_name,
            self._synced_rev,
        )
        info = SyncInfo(self._generation + 1, delta, self._synced_rev, self._server_name)
        for callback in self._on_synced:
            await _guarded(callback(info), "sync")
        self._generation = info.generation
        self._next_sync.set()
        self._next_sync = asyncio.Event()


def _describe(err: BaseException) -> str:
    if isinstance(err, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in err.exceptions)
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {err.details()}"
    return str(err) or type(err).__name__
