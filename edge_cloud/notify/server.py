"""The server side of notify: `NotifyServer`, a `NotifyApi` servicer fed by a `NotifySource`.

It keeps one in-memory copy of the source's objects (with each object's revision and a log
of recent deletes), and one send queue per connected client:

- **Send-all then changes, in commit order.** A new connection gets, atomically with its
  registration, every wanted object (or only what changed since the revision the client
  announced, see the package docstring), then SENDALL_END, then each change as it is
  applied. Nothing is coalesced, so a client can tell which revision it has fully applied.
- **Slow clients do not hold anyone up.** Changes are appended to each client's queue and
  written by that connection's own task. A queue holding more than `queue_limit` changes
  means the client cannot keep up; the connection is dropped with RESOURCE_EXHAUSTED and
  the client reconnects and resyncs (cheaply, by delta).
- **Upstream objects** (CloudletInfo, AppInstInfo, Alert, ...) are decoded and handed to
  `on_receive(peer, action, obj)`; when the connection ends, `on_flush(peer, objects)` gets
  everything that peer sent and did not delete (the original's flush by notify id).
- **Cloudlet filtering** for clients that ask for it, per `edge_cloud.notify.filters`.

What it costs:

- **Loading** does not hold up the event loop: a snapshot is applied a thousand objects at a
  time, and the server is ready once it is applied. Objects a source hands over still
  encoded (`Encoded`) are decoded in the background afterwards, a millisecond at a time
  while no client is being sent to (cloudlet-scoped types first: a filtered client checks
  all of them when it connects), or at once by whatever needs one sooner (a send, a
  filter, a lookup). Clients that connect while the snapshot loads wait for it.
- **Each object is serialized once**, however many clients it goes to: an UPDATE notice
  is built (and, for servers wired by `add_to`, serialized to its wire bytes) the first time
  it is written, then shared.
- **A delta costs what changed**: each type keeps its keys ordered by revision, so the
  objects written after a client's revision are found without looking at the others.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import operator
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Self

import grpc
import grpc.aio
from edgeproto import cloudlet_pb2, notice_pb2

from edge_cloud.notify._tasks import until_first
from edge_cloud.notify._wire import (
    PROTOCOL_VERSION,
    TAG_DELTA_SINCE,
    TAG_FULL_TYPES,
    TAG_NAME,
    TAG_SNAPSHOT_REV,
    Action,
    Message,
    any_type_name,
    data_notice,
    key_only,
    key_string,
    type_name,
)
from edge_cloud.notify.filters import (
    DEFAULT_CLOUDLET_FILTERS,
    CloudletFilter,
    CloudletKey,
    Stage,
    reached,
    stage_of,
)
from edge_cloud.notify.source import Change, Encoded, NotifySource, Snapshot, Stored
from edge_cloud.objects import keys

__all__ = ["SERVICE_NAME", "FlushFn", "NotifyServer", "Peer", "ReceiveFn"]

log = logging.getLogger(__name__)

Notice = notice_pb2.Notice
#: A stream's context; it writes `Notice`s (`StreamNotice`) or their bytes (`add_to`).
Context = grpc.aio.ServicerContext[Notice, Any]
SERVICE_NAME: Final = "edgeproto.NotifyApi"
_CLOUDLET_INFO: Final = "edgeproto.CloudletInfo"
_EXPECTED_VERSION: Final = "Notify server expected action version"
_RETRY_MIN: Final = 0.1
_RETRY_MAX: Final = 5.0
#: Objects applied between two yields to the event loop while a snapshot is applied.
_YIELD_EVERY: Final = 1000
#: Seconds of background decoding between two yields to the event loop.
_DECODE_SLICE: Final = 0.001
#: Seconds background decoding waits while a client is being sent to.
_DECODE_PAUSE: Final = 0.01
_REVISION = operator.itemgetter(0)


@dataclass(frozen=True, slots=True)
class Peer:
    """One connected client, as callbacks see it.

    Attributes:
        notify_id: Connection number on this server, from 1 (the original's notify id).
        addr: The client's address as gRPC reports it (`ipv4:127.0.0.1:5000`).
        name: The name the client gave in its VERSION notice.
        filter_cloudlet_key: Whether it asked for cloudlet-key filtering.
    """

    notify_id: int
    addr: str
    name: str
    filter_cloudlet_key: bool


#: Called for each object a client sends: (peer, UPDATE or DELETE, object; key-only for DELETE).
ReceiveFn = Callable[[Peer, Action, Message], Awaitable[None]]
#: Called when a client is gone: (peer, what it sent and did not delete: type → key → object).
FlushFn = Callable[[Peer, Mapping[str, Mapping[str, Message]]], Awaitable[None]]


class _Entry:
    """An object in the server's copy, shared by every client's queue.

    Never changed once made (a write makes a new entry), so a queue may hold it and build
    its notice later. The object may arrive encoded; it is decoded on first use, and its
    UPDATE notice (or that notice's wire bytes) is built once for every client.
    """

    __slots__ = ("_decode", "_notice", "_obj", "_raw", "_wire", "key", "mod_rev")

    def __init__(
        self,
        key: str,
        mod_rev: int,
        obj: Message | None = None,
        *,
        raw: bytes | None = None,
        decode: Callable[[bytes], Message] | None = None,
    ) -> None:
        self.key = key
        self.mod_rev = mod_rev
        self._obj = obj
        self._raw = raw
        self._decode = decode
        self._notice: Notice | None = None
        self._wire: bytes | None = None

    @classmethod
    def of(cls, key: str, item: Stored | Encoded) -> _Entry:
        if isinstance(item, Encoded):
            return cls(key, item.mod_rev, raw=item.value, decode=item.decode)
        return cls(key, item.mod_rev, item.obj)

    @property
    def decoded(self) -> bool:
        """Whether the object was handed over decoded or has been decoded since."""
        return self._raw is None

    @property
    def obj(self) -> Message | None:
        """The object; None if its stored bytes do not decode (it is never sent then)."""
        if self._raw is not None:
            self.decode()
        return self._obj

    def decode(self) -> None:
        """Decode the stored bytes now, if not done yet."""
        raw, decode = self._raw, self._decode
        if raw is None or decode is None:
            return
        self._raw = self._decode = None
        try:
            self._obj = decode(raw)
        except Exception as err:
            log.warning("notify: skipping undecodable object %s: %s", self.key, err)

    def notice(self) -> Notice | None:
        if self._notice is None:
            obj = self.obj
            if obj is None:
                return None
            self._notice = data_notice(Action.UPDATE, obj, self.mod_rev)
        return self._notice

    def wire(self) -> bytes | None:
        if self._wire is None:
            notice = self._notice
            if notice is None:
                obj = self.obj
                if obj is None:
                    return None
                notice = data_notice(Action.UPDATE, obj, self.mod_rev)  # not kept: bytes are
            self._wire = notice.SerializeToString()
        return self._wire


class _Built:
    """Any other notice (a DELETE, SENDALL_END), serialized at most once."""

    __slots__ = ("_notice", "_wire")

    def __init__(self, notice: Notice) -> None:
        self._notice = notice
        self._wire: bytes | None = None

    def notice(self) -> Notice:
        return self._notice

    def wire(self) -> bytes:
        if self._wire is None:
            self._wire = self._notice.SerializeToString()
        return self._wire


@dataclass(frozen=True, slots=True, order=True)
class _Tombstone:
    mod_rev: int
    type_name: str
    key: str
    obj: Message = field(compare=False)


class _RevisionIndex:
    """One type's keys by the revision that last wrote them, oldest first: what deltas read.

    Writes are appended (changes come in commit order); a snapshot's objects come in any
    order and are sorted once it is applied. Pairs whose entry was rewritten or deleted
    since are skipped when read and dropped once they outnumber the live ones.
    """

    __slots__ = ("_pairs", "_sorted")

    def __init__(self) -> None:
        self._pairs: list[tuple[int, str]] = []
        self._sorted = True

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, mod_rev: int, key: str, objects: Mapping[str, _Entry]) -> None:
        pairs = self._pairs
        if pairs and mod_rev < pairs[-1][0]:
            self._sorted = False
        pairs.append((mod_rev, key))
        if len(pairs) > 2 * len(objects) + 1024:
            self._pairs = [(r, k) for r, k in pairs if _live(objects, r, k)]

    def settle(self) -> None:
        """Sort after out-of-order additions (one C sort; ~30 ms for 100k pairs)."""
        if not self._sorted:
            self._pairs.sort(key=_REVISION)
            self._sorted = True

    def since(self, mod_rev: int, objects: Mapping[str, _Entry]) -> list[_Entry]:
        """The current entries written after `mod_rev`, oldest first."""
        self.settle()
        start = bisect.bisect_right(self._pairs, mod_rev, key=_REVISION)
        out: list[_Entry] = []
        seen: set[str] = set()
        for rev, key in self._pairs[start:]:
            entry = objects.get(key)
            if entry is not None and entry.mod_rev == rev and key not in seen:
                seen.add(key)
                out.append(entry)
        return out


def _live(objects: Mapping[str, _Entry], mod_rev: int, key: str) -> bool:
    entry = objects.get(key)
    return entry is not None and entry.mod_rev == mod_rev


_Out = _Entry | _Built
_Item = _Out | list[_Out]


@dataclass(eq=False, slots=True)
class _Conn:
    """One client connection: what it wants, what it has been sent, its queue."""

    peer: Peer
    wants: frozenset[str]
    limit: int
    queue: deque[_Item] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sending: bool = False  # its writer is working through an item
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    abort: tuple[grpc.StatusCode, str] | None = None
    delta_since: int | None = None
    # cloudlet filtering
    cloudlets: dict[str, tuple[CloudletKey, Stage]] = field(default_factory=dict)
    sent: dict[str, dict[str, int]] = field(default_factory=dict)
    sendall_end_sent: bool = False
    # upstream
    received: dict[str, dict[str, Message]] = field(default_factory=dict)

    @property
    def filtered(self) -> bool:
        return self.peer.filter_cloudlet_key

    def push(self, item: _Item) -> None:
        if self.closed.is_set() or (isinstance(item, list) and not item):
            return
        self.queue.append(item)
        self.wake.set()
        if len(self.queue) > self.limit:
            self.close(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"notify client {self.peer.name or self.peer.addr} fell more than {self.limit} "
                "changes behind; dropping the connection so it resyncs",
            )

    async def wait_closed(self) -> None:
        await self.closed.wait()

    def close(self, code: grpc.StatusCode | None = None, message: str = "") -> None:
        if self.closed.is_set():
            return
        if code is not None:
            self.abort = (code, message)
            self.queue.clear()
        self.closed.set()


class NotifyServer:
    """The `edgeproto.NotifyApi` servicer: replicates a source's objects to every client.

    Add it to a grpc.aio server with `add_to`, and run it (`run()` as a daemon background
    coroutine, or `async with server:`) so it loads and follows its source. Clients that
    connect before the first snapshot is loaded wait for it, however long loading takes;
    only a server that is not loading (not started, or its source failing) refuses them,
    after `sync_timeout`.

    Args:
        source: Where objects come from.
        name: This server's name, sent in its VERSION notice.
        send_types: Types it offers, in dependency order (controller.md §6.4): a send-all
            goes in this order, deletes of a delta resync in reverse.
        receive_types: Types it accepts from clients (its `want_objs`).
        receive_messages: Uncached message types it accepts too (the original's notify
            "messages": Metric, AutoProvCounts, AppInstClient): handed to `on_receive`
            as UPDATEs but not remembered, so never flushed.
        send_messages: Uncached message types it may send to clients that want them
            (the original's DebugRequest), with `send_message`.
        on_receive: Called with each object a client sends.
        on_flush: Called when a client disconnects, with what it had sent.
        cloudlet_filters: Cloudlet-scoped types and how to match them, for clients that
            ask for filtering; `DEFAULT_CLOUDLET_FILTERS` by default.
        queue_limit: Changes a client may fall behind before it is dropped.
        tombstone_limit: Deletes remembered for delta resync; older ones push the oldest
            revision a delta can start from forward.
        handshake_timeout: Seconds a client has to send its VERSION notice.
        sync_timeout: Seconds a client waits for the first snapshot while none is loading
            before it is refused (UNAVAILABLE, so it tries another server); also the bound
            on reading delete history from the source.
        decode_ahead_after: Seconds after the server is ready before objects the source
            handed over encoded are decoded in the background (what a send, a filter or a
            lookup needs is decoded at once meanwhile). A source sharing its objects with
            the rest of the process (the Controller's caches) leaves the first seconds to
            the calls that arrive right after a start.
    """

    def __init__(
        self,
        source: NotifySource,
        *,
        name: str,
        send_types: Sequence[type[Message]],
        receive_types: Sequence[type[Message]] = (),
        receive_messages: Sequence[type[Message]] = (),
        send_messages: Sequence[type[Message]] = (),
        on_receive: ReceiveFn | None = None,
        on_flush: FlushFn | None = None,
        cloudlet_filters: Mapping[str, CloudletFilter] = DEFAULT_CLOUDLET_FILTERS,
        queue_limit: int = 10_000,
        tombstone_limit: int = 100_000,
        handshake_timeout: float = 30.0,
        sync_timeout: float = 30.0,
        decode_ahead_after: float = 0.0,
    ) -> None:
        self._source = source
        self._decode_ahead_after = decode_ahead_after
        self._name = name
        self._order = [type_name(t) for t in send_types]
        self._classes = {type_name(t): t for t in send_types}
        self._rank = {n: i for i, n in enumerate(self._order)}
        self._receive = {type_name(t): t for t in (*receive_types, *receive_messages)}
        self._messages = frozenset(type_name(t) for t in receive_messages)
        self._sendable = self._rank.keys() | {type_name(t) for t in send_messages}
        self._on_receive = on_receive
        self._on_flush = on_flush
        self._filters = {n: f for n, f in cloudlet_filters.items() if n in self._rank}
        self._dependents: dict[str, list[str]] = {}
        for scoped in self._order:
            flt = self._filters.get(scoped)
            for dependency in flt.depends_on if flt else ():
                self._dependents.setdefault(dependency, []).append(scoped)
        self._queue_limit = queue_limit
        self._tombstone_limit = tombstone_limit
        self._handshake_timeout = handshake_timeout
        self._sync_timeout = sync_timeout

        self._objects: dict[str, dict[str, _Entry]] = {n: {} for n in self._order}
        self._index = {n: _RevisionIndex() for n in self._order}
        self._revision = 0
        self._floor = 0  # deltas can start at revisions >= this
        self._tombstones: list[_Tombstone] = []
        self._ready = asyncio.Event()
        self._loading = False  # a snapshot is being read or applied
        self._state_changed = asyncio.Event()  # set (and replaced) when either changes
        self._applying = asyncio.Lock()  # held while a snapshot is applied
        self._undecoded: deque[tuple[str, _Entry]] = deque()  # for `_decode_ahead`
        self._undecoded_added = asyncio.Event()
        self._history_lock = asyncio.Lock()
        self._conns: set[_Conn] = set()
        # flushes outlive their stream's handler, which gRPC cancels when the client goes away
        self._flushes: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    # -- wiring ------------------------------------------------------------------------------

    def add_to(self, server: grpc.aio.Server) -> str:
        """Serve `edgeproto.NotifyApi` on `server`; returns the service name (for health).

        The method writes each notice's wire bytes, serialized once for every client (no
        response serializer); the bytes are those `Notice.SerializeToString` gives.
        """
        handler = grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "StreamNotice": grpc.stream_stream_rpc_method_handler(
                    self._stream_wire,
                    request_deserializer=Notice.FromString,
                    response_serializer=None,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
        return SERVICE_NAME

    async def run(self) -> None:
        """Load the source's snapshot, then apply its changes until cancelled.

        A failing source is retried with backoff; each retry starts from a new snapshot,
        compared with what is held, so clients see exactly the differences.
        """
        decoder = asyncio.create_task(self._decode_ahead(), name=f"notify-decode-{self._name}")
        delay = _RETRY_MIN
        try:
            while True:
                try:
                    self._set_loading(True)
                    snapshot = await self._source.snapshot()
                    await self._apply_snapshot(snapshot)
                    if not self._ready.is_set():
                        self._floor = snapshot.revision
                        self._ready.set()
                        log.info(
                            "notify server %s synced at revision %d", self._name, self._revision
                        )
                    self._set_loading(False)  # wakes the clients waiting for the snapshot
                    delay = _RETRY_MIN
                    async for item in self._source.changes(self._revision):
                        if isinstance(item, Snapshot):
                            await self._apply_snapshot(item)
                        else:
                            self._apply_change(item)
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    self._set_loading(False)
                    log.warning("notify source failed (%s); reloading in %.1fs", err, delay)
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                    delay = min(delay * 2, _RETRY_MAX)
        finally:
            decoder.cancel()
            await asyncio.wait([decoder])
            self._set_loading(False)

    async def _decode_ahead(self) -> None:
        """Decode what snapshots handed over encoded, so that sends and filters need not.

        Only while no client is being sent to: a writer decodes what it sends itself, and
        would otherwise wait for a slice of decoding before each of its writes. The first
        pass waits `decode_ahead_after` seconds once the server is ready.
        """
        loop = asyncio.get_running_loop()
        if self._decode_ahead_after > 0:
            await self._ready.wait()
            await asyncio.sleep(self._decode_ahead_after)
        while True:
            while not self._undecoded:
                self._undecoded_added.clear()
                await self._undecoded_added.wait()
            if any(c.sending or c.queue for c in self._conns):
                await asyncio.sleep(_DECODE_PAUSE)
                continue
            until = loop.time() + _DECODE_SLICE
            while self._undecoded and loop.time() < until:
                name, entry = self._undecoded.popleft()
                if self._objects[name].get(entry.key) is entry:  # not replaced meanwhile
                    entry.decode()
            await asyncio.sleep(0)

    async def start(self) -> None:
        """Run `run()` as a task owned by this server (ended by `close`)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"notify-server-{self._name}")

    async def close(self) -> None:
        """Stop following the source and drop every client (UNAVAILABLE). Idempotent."""
        for conn in list(self._conns):
            conn.close(grpc.StatusCode.UNAVAILABLE, f"notify server {self._name} is shutting down")
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def wait_ready(self) -> None:
        """Wait until the first snapshot is loaded."""
        await self._ready.wait()

    # -- state ---------------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """Revision of the last change applied (every change up to it is applied)."""
        return self._revision

    @property
    def delta_floor(self) -> int:
        """The oldest revision a client may resume from without a full send-all."""
        return self._floor

    @property
    def peers(self) -> list[Peer]:
        """The clients connected now."""
        return sorted((c.peer for c in self._conns), key=lambda p: p.notify_id)

    def send_message(self, obj: Message, notify_ids: Collection[int] | None = None) -> int:
        """Send an uncached message (a `send_messages` type) to the clients that want it.

        It is queued behind what each client has pending, sent once, never re-sent.

        Args:
            obj: The message; the caller must not modify it afterwards.
            notify_ids: Only to these connections (their `Peer.notify_id`); None: to all.

        Returns:
            How many connections it was queued for.
        """
        name = type_name(obj)
        notice = _Built(data_notice(Action.UPDATE, obj))
        count = 0
        for conn in self._conns:
            if name in conn.wants and (notify_ids is None or conn.peer.notify_id in notify_ids):
                conn.push(notice)
                count += 1
        return count

    def lookup(self, type_name: str, key: str) -> Message | None:
        """The current object of `type_name` with key string `key`, or None."""
        entry = self._objects.get(type_name, {}).get(key)
        return None if entry is None else entry.obj

    def objects(self, obj_type: type[Message]) -> dict[str, Message]:
        """A copy of the current objects of a type by key string."""
        entries = self._objects.get(type_name(obj_type), {})
        return {k: obj for k, e in entries.items() if (obj := e.obj) is not None}

    # -- readiness -----------------------------------------------------------------------------

    def _set_loading(self, loading: bool) -> None:
        if loading != self._loading:
            self._loading = loading
            self._signal()

    def _signal(self) -> None:
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    async def _wait_ready(self) -> bool:
        """Wait for the first snapshot; False once `sync_timeout` passed with none loading."""
        budget = self._sync_timeout
        loop = asyncio.get_running_loop()
        while not self._ready.is_set():
            changed = self._state_changed
            if self._loading:
                await changed.wait()
                continue
            started = loop.time()
            try:
                async with asyncio.timeout(budget):
                    await changed.wait()
            except TimeoutError:
                return False
            budget -= loop.time() - started
        return True

    # -- applying the source -------------------------------------------------------------------

    async def _apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the held state with `snapshot`, telling clients about every difference.

        Gives the event loop back every `_YIELD_EVERY` objects; no client registers
        meanwhile (`_open` waits), so none sees a send-all of half a snapshot.
        """
        async with self._applying:
            done = 0
            scoped: list[tuple[str, _Entry]] = []  # left encoded, for `_decode_ahead`
            others: list[tuple[str, _Entry]] = []
            for name in self._order:
                current = self._objects[name]
                index = self._index[name]
                undecoded = scoped if name in self._filters else others
                fresh: dict[str, Stored | Encoded] = {}
                for item in snapshot.objects.get(name, ()):
                    fresh[_key_of(item)] = item
                    done += 1
                    if done % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                for key in [k for k in current if k not in fresh]:
                    gone = current.pop(key)
                    deleted = self._key_only(name, gone)
                    if deleted is not None:
                        self._tombstone(name, key, deleted, snapshot.revision)
                        self._dispatch(name, key, snapshot.revision, gone=deleted)
                    done += 1
                    if done % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                for key, item in fresh.items():
                    done += 1
                    if done % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                    old = current.get(key)
                    if old is not None and old.mod_rev == item.mod_rev:
                        continue
                    entry = _Entry.of(key, item)
                    current[key] = entry
                    index.add(entry.mod_rev, key, current)
                    if not entry.decoded:
                        undecoded.append((name, entry))
                    self._dispatch(name, key, entry.mod_rev, entry)
                index.settle()
            self._revision = max(self._revision, snapshot.revision)
            if scoped or others:
                self._undecoded.extend(scoped)
                self._undecoded.extend(others)
                self._undecoded_added.set()

    def _apply_change(self, change: Change) -> None:
        objects = self._objects.get(change.type_name)
        self._revision = max(self._revision, change.mod_rev)
        if objects is None:
            return
        name = change.type_name
        key = change.key or key_string(change.obj)
        if change.action is Action.UPDATE:
            entry = _Entry(key, change.mod_rev, change.obj)
            objects[key] = entry
            self._index[name].add(change.mod_rev, key, objects)
            self._dispatch(name, key, change.mod_rev, entry)
            return
        gone = objects.pop(key, None)
        deleted = key_only(change.obj)
        self._tombstone(name, key, deleted, change.mod_rev)
        if gone is not None:
            self._dispatch(name, key, change.mod_rev, gone=deleted)

    def _key_only(self, name: str, entry: _Entry) -> Message | None:
        """What a DELETE of `entry` carries: its object with only the key set."""
        obj = entry.obj if entry.decoded else None
        if obj is not None:
            return key_only(obj)
        try:  # from the key string: cheaper than decoding, and works for undecodable ones
            deleted: Message = keys.object_from_key_string(self._classes[name], entry.key)
        except Exception as err:
            log.warning("notify: cannot delete %s %s: %s", name, entry.key, err)
            return None
        return deleted

    def _tombstone(self, name: str, key: str, deleted: Message, mod_rev: int) -> None:
        self._tombstones.append(_Tombstone(mod_rev, name, key, deleted))
        excess = len(self._tombstones) - self._tombstone_limit
        if excess > self._tombstone_limit // 4:
            self._floor = max(self._floor, self._tombstones[excess - 1].mod_rev)
            del self._tombstones[:excess]

    def _dispatch(
        self,
        name: str,
        key: str,
        mod_rev: int,
        entry: _Entry | None = None,
        gone: Message | None = None,
    ) -> None:
        """Queue one change for every client that should see it.

        Args:
            name: The object's type.
            key: Its key string.
            mod_rev: Revision of the change.
            entry: The new entry, for an UPDATE.
            gone: The key-only object, for a DELETE.
        """
        if not self._conns:
            return
        out: _Out | None = entry
        delete: _Built | None = None
        if entry is None and gone is not None:
            out = delete = _Built(data_notice(Action.DELETE, gone, mod_rev))
        if out is None:
            return
        for conn in self._conns:
            if name not in conn.wants:
                continue
            flt = self._filters.get(name) if conn.filtered else None
            if flt is None:
                conn.push(out)
            else:
                sent = conn.sent.setdefault(name, {})
                obj = None if entry is None else entry.obj
                if obj is not None and reached(flt, obj, conn.cloudlets.values(), self):
                    sent[key] = mod_rev
                    conn.push(out)
                elif key in sent:
                    del sent[key]
                    if delete is None and entry is not None:
                        deleted = self._key_only(name, entry)
                        if deleted is not None:
                            delete = _Built(data_notice(Action.DELETE, deleted, mod_rev))
                    if delete is not None:
                        conn.push(delete)
            if conn.filtered:
                for dependent in self._dependents.get(name, ()):
                    conn.push(self._recheck(conn, dependent))

    # -- filtered clients ------------------------------------------------------------------

    def _recheck(self, conn: _Conn, name: str) -> list[_Out]:
        """Bring a filtered client's copy of one scoped type in line with its filter."""
        if name not in conn.wants:
            return []
        flt = self._filters[name]
        sent = conn.sent.setdefault(name, {})
        cloudlets = list(conn.cloudlets.values())
        out: list[_Out] = []
        for key in [k for k in sent if k not in self._objects[name]]:
            del sent[key]  # deleted while held back; the delete already went out
        for key, entry in self._objects[name].items():
            obj = entry.obj
            passes = obj is not None and reached(flt, obj, cloudlets, self)
            if passes and sent.get(key) != entry.mod_rev:
                sent[key] = entry.mod_rev
                out.append(entry)
            elif not passes and key in sent:
                del sent[key]
                deleted = self._key_only(name, entry)
                if deleted is not None:
                    out.append(_Built(data_notice(Action.DELETE, deleted, self._revision)))
        return out

    def _cloudlet_info(self, conn: _Conn, action: Action, info: cloudlet_pb2.CloudletInfo) -> None:
        """Advance (or, on DELETE, drop) a filtered client's cloudlet; release what is due."""
        key = key_string(info)
        if action is Action.DELETE:
            if conn.cloudlets.pop(key, None) is None:
                return
        else:
            old = conn.cloudlets.get(key)
            stage = stage_of(info, self)
            if old is not None and old[1] >= stage:
                return
            ck = CloudletKey()
            ck.CopyFrom(info.key)
            conn.cloudlets[key] = (ck, stage)
        batch: list[_Out] = []
        for name in self._order:
            if name in self._filters:
                batch.extend(self._recheck(conn, name))
        if not conn.sendall_end_sent and any(s is Stage.READY for _, s in conn.cloudlets.values()):
            conn.sendall_end_sent = True
            batch.append(_Built(self._sendall_end(conn)))
        conn.push(batch)

    # -- connections ---------------------------------------------------------------------------

    def _sendall_end(self, conn: _Conn) -> Notice:
        tags = {TAG_SNAPSHOT_REV: str(self._revision)}
        if conn.delta_since is not None:
            tags[TAG_DELTA_SINCE] = str(conn.delta_since)
            full = [
                n for n in self._order if n in conn.wants and conn.filtered and n in self._filters
            ]
            if full:
                tags[TAG_FULL_TYPES] = ",".join(full)
        return Notice(action=notice_pb2.SENDALL_END, mod_rev=self._revision, tags=tags)

    def _open(self, conn: _Conn, since: int | None) -> None:
        """Register `conn` and queue its send-all, in one step (no change can slip between)."""
        if since is not None and self._floor <= since <= self._revision:
            conn.delta_since = since
        held = self._filters.keys() if conn.filtered else frozenset()
        batch: list[_Out] = []
        floor = conn.delta_since
        if floor is not None:
            deletes: dict[tuple[str, str], _Tombstone] = {}
            start = bisect.bisect_right(self._tombstones, floor, key=lambda t: t.mod_rev)
            for tomb in self._tombstones[start:]:
                if (
                    tomb.type_name in conn.wants
                    and tomb.type_name not in held
                    and tomb.key not in self._objects[tomb.type_name]
                ):
                    deletes[tomb.type_name, tomb.key] = tomb
            for tomb in sorted(deletes.values(), key=lambda t: -self._rank[t.type_name]):
                batch.append(_Built(data_notice(Action.DELETE, tomb.obj, tomb.mod_rev)))
        for name in self._order:
            if name not in conn.wants or name in held:
                continue
            objects = self._objects[name]
            if floor is None:
                batch.extend(objects.values())
            else:
                batch.extend(self._index[name].since(floor, objects))
        if not conn.filtered:
            conn.sendall_end_sent = True
            batch.append(_Built(self._sendall_end(conn)))
        conn.push(batch)
        self._conns.add(conn)

    async def _extend_history(self, since: int) -> None:
        """Learn the deletes between `since` and the floor from the source, if it has them."""
        async with self._history_lock:
            until = self._floor
            if since >= until:
                return
            try:
                async with asyncio.timeout(self._sync_timeout):
                    deletes = await self._source.deleted_since(since, until)
            except Exception as err:
                log.warning("notify history since revision %d unavailable: %s", since, err)
                return
            if deletes is None or self._floor != until:
                return
            for change in deletes:
                if change.type_name in self._objects:
                    tomb = _Tombstone(
                        change.mod_rev,
                        change.type_name,
                        change.key or key_string(change.obj),
                        key_only(change.obj),
                    )
                    bisect.insort(self._tombstones, tomb)
            self._floor = since
            log.debug("notify history extended back to revision %d", since)

    async def StreamNotice(
        self,
        request_iterator: AsyncIterator[Notice],
        context: grpc.aio.ServicerContext[Notice, Notice],
    ) -> None:
        """One client connection: handshake, send-all, then both directions until it ends.

        Writes `Notice` messages, for a server that registers this method itself with
        `Notice.SerializeToString` as its response serializer; `add_to` registers a variant
        that writes bytes serialized once for every client.
        """
        await self._serve(context, wire=False)

    async def _stream_wire(
        self,
        request_iterator: AsyncIterator[Notice],
        context: grpc.aio.ServicerContext[Notice, bytes],
    ) -> None:
        """`StreamNotice` writing serialized notices (registered without a serializer)."""
        await self._serve(context, wire=True)

    async def _serve(self, context: Context, *, wire: bool) -> None:
        try:
            async with asyncio.timeout(self._handshake_timeout):
                first = await _read(context)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no VERSION notice in time")
        if first is None:
            return
        if first.action != notice_pb2.VERSION:
            log.info("notify client %s opened with action %d", context.peer(), first.action)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _EXPECTED_VERSION)
        # Headers now tell the client the stream is accepted; the VERSION reply may wait for
        # the first snapshot and for history (our clients bound only the wait for headers).
        await context.send_initial_metadata(())
        if not await self._wait_ready():
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"notify server {self._name} is not synced yet"
            )
        since = _parse_revision(first.tags.get(TAG_DELTA_SINCE))
        if since is not None and since < self._floor and since <= self._revision:
            await self._extend_history(since)

        peer = Peer(
            next(self._ids), context.peer(), first.tags.get(TAG_NAME, ""), first.filter_cloudlet_key
        )
        conn = _Conn(peer, frozenset(first.want_objs) & self._sendable, self._queue_limit)
        async with self._applying:
            self._open(conn, since)
        tags = {TAG_NAME: self._name}
        if conn.delta_since is not None:
            tags[TAG_DELTA_SINCE] = str(conn.delta_since)
        reply = Notice(
            action=notice_pb2.VERSION,
            version=min(first.version or PROTOCOL_VERSION, PROTOCOL_VERSION),
            want_objs=list(self._receive),
            tags=tags,
        )
        log.info(
            "notify client %s (%s) connected as %d, %s",
            peer.name,
            peer.addr,
            peer.notify_id,
            "full send" if conn.delta_since is None else f"delta since revision {conn.delta_since}",
        )
        try:
            await context.write(reply.SerializeToString() if wire else reply)
            await until_first(
                self._read_loop(conn, context),
                self._write_loop(conn, context, wire),
                conn.wait_closed(),
            )
        finally:
            self._conns.discard(conn)
            conn.closed.set()
            log.info("notify client %s (%s) disconnected", peer.name, peer.addr)
            # A client that cancels its stream makes gRPC cancel this handler, possibly in
            # the middle of the flush; the flush (e.g. marking a CRM's cloudlets OFFLINE)
            # must finish anyway, so it runs as its own task that close() waits for.
            flush = asyncio.create_task(self._flush(conn), name=f"notify-flush-{peer.name}")
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
            await asyncio.shield(flush)
        if conn.abort is not None:
            await context.abort(*conn.abort)

    async def _write_loop(self, conn: _Conn, context: Context, wire: bool) -> None:
        try:
            while True:
                while not conn.queue:
                    conn.sending = False
                    conn.wake.clear()
                    await conn.wake.wait()
                conn.sending = True
                item = conn.queue.popleft()
                for out in item if isinstance(item, list) else (item,):
                    data = out.wire() if wire else out.notice()  # maybe decodes
                    if data is not None:
                        await context.write(data)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.debug("notify send to %s failed: %s", conn.peer.addr, err)
        finally:
            conn.close()

    async def _read_loop(self, conn: _Conn, context: Context) -> None:
        try:
            while True:
                notice = await _read(context)
                if notice is None:
                    return
                await self._received(conn, notice)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.debug("notify receive from %s failed: %s", conn.peer.addr, err)
        finally:
            conn.close()

    async def _received(self, conn: _Conn, notice: Notice) -> None:
        if notice.action not in (notice_pb2.UPDATE, notice_pb2.DELETE):
            return
        action = Action(notice.action)
        name = any_type_name(notice.any)
        cls = self._receive.get(name)
        if cls is None and name == _CLOUDLET_INFO and conn.filtered:
            cls = cloudlet_pb2.CloudletInfo
        if cls is None:
            log.debug("notify: ignoring %s from %s (not wanted)", name, conn.peer.name)
            return
        obj = cls()
        obj.ParseFromString(notice.any.value)
        if conn.filtered and isinstance(obj, cloudlet_pb2.CloudletInfo):
            self._cloudlet_info(conn, action, obj)
        if name not in self._receive:
            return
        if name in self._messages:
            if self._on_receive is not None and action is Action.UPDATE:
                try:
                    await self._on_receive(conn.peer, action, obj)
                except Exception:
                    log.exception(
                        "notify message handler failed for %s from %s", name, conn.peer.name
                    )
            return
        mine = conn.received.setdefault(name, {})
        if action is Action.UPDATE:
            mine[key_string(obj)] = obj
        else:
            mine.pop(key_string(obj), None)
        if self._on_receive is not None:
            try:
                await self._on_receive(conn.peer, action, obj)
            except Exception:
                log.exception("notify receive handler failed for %s from %s", name, conn.peer.name)

    async def _flush(self, conn: _Conn) -> None:
        if self._on_flush is None:
            return
        try:
            await self._on_flush(conn.peer, conn.received)
        except Exception:
            log.exception("notify flush handler failed for %s", conn.peer.name)


async def _read(context: Context) -> Notice | None:
    """The next notice, or None at the end of the stream."""
    notice: object = await context.read()
    return notice if isinstance(notice, Notice) else None


def _key_of(item: Stored | Encoded) -> str:
    if isinstance(item, Encoded) or item.key:
        return item.key
    return key_string(item.obj)


def _parse_revision(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None
