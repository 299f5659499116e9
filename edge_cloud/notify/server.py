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
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Self

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
from edge_cloud.notify.source import Change, NotifySource, Snapshot

__all__ = ["SERVICE_NAME", "FlushFn", "NotifyServer", "Peer", "ReceiveFn"]

log = logging.getLogger(__name__)

Notice = notice_pb2.Notice
Context = grpc.aio.ServicerContext[Notice, Notice]
SERVICE_NAME: Final = "edgeproto.NotifyApi"
_CLOUDLET_INFO: Final = "edgeproto.CloudletInfo"
_EXPECTED_VERSION: Final = "Notify server expected action version"
_RETRY_MIN: Final = 0.1
_RETRY_MAX: Final = 5.0


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
    """An object in the server's copy, with its UPDATE notice built once for every client."""

    __slots__ = ("_notice", "mod_rev", "obj")

    def __init__(self, obj: Message, mod_rev: int) -> None:
        self.obj = obj
        self.mod_rev = mod_rev
        self._notice: Notice | None = None

    def notice(self) -> Notice:
        if self._notice is None:
            self._notice = data_notice(Action.UPDATE, self.obj, self.mod_rev)
        return self._notice


@dataclass(frozen=True, slots=True, order=True)
class _Tombstone:
    mod_rev: int
    type_name: str
    key: str
    obj: Message = field(compare=False)


_Item = Notice | list[Notice]


@dataclass(eq=False, slots=True)
class _Conn:
    """One client connection: what it wants, what it has been sent, its queue."""

    peer: Peer
    wants: frozenset[str]
    limit: int
    queue: deque[_Item] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
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
    connect before the first snapshot is loaded wait for it (up to `sync_timeout`).

    Args:
        source: Where objects come from.
        name: This server's name, sent in its VERSION notice.
        send_types: Types it offers, in dependency order (controller.md §6.4): a send-all
            goes in this order, deletes of a delta resync in reverse.
        receive_types: Types it accepts from clients (its `want_objs`).
        on_receive: Called with each object a client sends.
        on_flush: Called when a client disconnects, with what it had sent.
        cloudlet_filters: Cloudlet-scoped types and how to match them, for clients that
            ask for filtering; `DEFAULT_CLOUDLET_FILTERS` by default.
        queue_limit: Changes a client may fall behind before it is dropped.
        tombstone_limit: Deletes remembered for delta resync; older ones push the oldest
            revision a delta can start from forward.
        handshake_timeout: Seconds a client has to send its VERSION notice.
        sync_timeout: Seconds a client waits for the first snapshot before it is refused.
    """

    def __init__(
        self,
        source: NotifySource,
        *,
        name: str,
        send_types: Sequence[type[Message]],
        receive_types: Sequence[type[Message]] = (),
        on_receive: ReceiveFn | None = None,
        on_flush: FlushFn | None = None,
        cloudlet_filters: Mapping[str, CloudletFilter] = DEFAULT_CLOUDLET_FILTERS,
        queue_limit: int = 10_000,
        tombstone_limit: int = 100_000,
        handshake_timeout: float = 30.0,
        sync_timeout: float = 30.0,
    ) -> None:
        self._source = source
        self._name = name
        self._order = [type_name(t) for t in send_types]
        self._rank = {n: i for i, n in enumerate(self._order)}
        self._receive = {type_name(t): t for t in receive_types}
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
        self._revision = 0
        self._floor = 0  # deltas can start at revisions >= this
        self._tombstones: list[_Tombstone] = []
        self._ready = asyncio.Event()
        self._history_lock = asyncio.Lock()
        self._conns: set[_Conn] = set()
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None

    # -- wiring ------------------------------------------------------------------------------

    def add_to(self, server: grpc.aio.Server) -> str:
        """Serve `edgeproto.NotifyApi` on `server`; returns the service name (for health)."""
        handler = grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "StreamNotice": grpc.stream_stream_rpc_method_handler(
                    self.StreamNotice,
                    request_deserializer=Notice.FromString,
                    response_serializer=Notice.SerializeToString,
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
        delay = _RETRY_MIN
        while True:
            try:
                snapshot = await self._source.snapshot()
                self._apply_snapshot(snapshot)
                if not self._ready.is_set():
                    self._floor = snapshot.revision
                    self._ready.set()
                    log.info("notify server %s synced at revision %d", self._name, self._revision)
                delay = _RETRY_MIN
                async for item in self._source.changes(self._revision):
                    if isinstance(item, Snapshot):
                        self._apply_snapshot(item)
                    else:
                        self._apply_change(item)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("notify source failed (%s); reloading in %.1fs", err, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                delay = min(delay * 2, _RETRY_MAX)

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

    def lookup(self, type_name: str, key: str) -> Message | None:
        """The current object of `type_name` with key string `key`, or None."""
        entry = self._objects.get(type_name, {}).get(key)
        return None if entry is None else entry.obj

    def objects(self, obj_type: type[Message]) -> dict[str, Message]:
        """A copy of the current objects of a type by key string."""
        return {k: e.obj for k, e in self._objects.get(type_name(obj_type), {}).items()}

    # -- applying the source -------------------------------------------------------------------

    def _apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the held state with `snapshot`, telling clients about every difference."""
        for name in self._order:
            current = self._objects[name]
            fresh = {key_string(s.obj): s for s in snapshot.objects.get(name, ())}
            for key in [k for k in current if k not in fresh]:
                gone = current.pop(key)
                self._tombstone(name, key, gone.obj, snapshot.revision)
                self._dispatch(name, Action.DELETE, gone.obj, snapshot.revision)
            for key, stored in fresh.items():
                old = current.get(key)
                if old is not None and old.mod_rev == stored.mod_rev:
                    continue
                entry = _Entry(stored.obj, stored.mod_rev)
                current[key] = entry
                self._dispatch(name, Action.UPDATE, stored.obj, stored.mod_rev, entry)
        self._revision = max(self._revision, snapshot.revision)

    def _apply_change(self, change: Change) -> None:
        objects = self._objects.get(change.type_name)
        self._revision = max(self._revision, change.mod_rev)
        if objects is None:
            return
        key = key_string(change.obj)
        if change.action is Action.UPDATE:
            entry = _Entry(change.obj, change.mod_rev)
            objects[key] = entry
            self._dispatch(change.type_name, Action.UPDATE, change.obj, change.mod_rev, entry)
            return
        gone = objects.pop(key, None)
        self._tombstone(change.type_name, key, change.obj, change.mod_rev)
        if gone is not None:
            self._dispatch(change.type_name, Action.DELETE, gone.obj, change.mod_rev)

    def _tombstone(self, name: str, key: str, obj: Message, mod_rev: int) -> None:
        self._tombstones.append(_Tombstone(mod_rev, name, key, key_only(obj)))
        excess = len(self._tombstones) - self._tombstone_limit
        if excess > self._tombstone_limit // 4:
            self._floor = max(self._floor, self._tombstones[excess - 1].mod_rev)
            del self._tombstones[:excess]

    def _dispatch(
        self, name: str, action: Action, obj: Message, mod_rev: int, entry: _Entry | None = None
    ) -> None:
        """Queue one change for every client that should see it."""
        if not self._conns:
            return
        if entry is not None:
            notice = entry.notice()
        else:
            notice = data_notice(Action.DELETE, key_only(obj), mod_rev)
        for conn in self._conns:
            if name not in conn.wants:
                continue
            flt = self._filters.get(name) if conn.filtered else None
            if flt is None:
                conn.push(notice)
            else:
                sent = conn.sent.setdefault(name, {})
                key = key_string(obj)
                if action is Action.UPDATE and reached(flt, obj, conn.cloudlets.values(), self):
                    sent[key] = mod_rev
                    conn.push(notice)
                elif key in sent:
                    del sent[key]
                    conn.push(data_notice(Action.DELETE, key_only(obj), mod_rev))
            if conn.filtered:
                for dependent in self._dependents.get(name, ()):
                    conn.push(self._recheck(conn, dependent))

    # -- filtered clients ------------------------------------------------------------------

    def _recheck(self, conn: _Conn, name: str) -> list[Notice]:
        """Bring a filtered client's copy of one scoped type in line with its filter."""
        if name not in conn.wants:
            return []
        flt = self._filters[name]
        sent = conn.sent.setdefault(name, {})
        cloudlets = list(conn.cloudlets.values())
        out: list[Notice] = []
        for key in [k for k in sent if k not in self._objects[name]]:
            del sent[key]  # deleted while held back; the delete already went out
        for key, entry in self._objects[name].items():
            passes = reached(flt, entry.obj, cloudlets, self)
            if passes and sent.get(key) != entry.mod_rev:
                sent[key] = entry.mod_rev
                out.append(entry.notice())
            elif not passes and key in sent:
                del sent[key]
                out.append(data_notice(Action.DELETE, key_only(entry.obj), self._revision))
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
        batch: list[Notice] = []
        for name in self._order:
            if name in self._filters:
                batch.extend(self._recheck(conn, name))
        if not conn.sendall_end_sent and any(s is Stage.READY for _, s in conn.cloudlets.values()):
            conn.sendall_end_sent = True
            batch.append(self._sendall_end(conn))
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
        batch: list[Notice] = []
        if conn.delta_since is not None:
            deletes: dict[tuple[str, str], _Tombstone] = {}
            start = bisect.bisect_right(self._tombstones, since, key=lambda t: t.mod_rev)
            for tomb in self._tombstones[start:]:
                if (
                    tomb.type_name in conn.wants
                    and tomb.type_name not in held
                    and tomb.key not in self._objects[tomb.type_name]
                ):
                    deletes[tomb.type_name, tomb.key] = tomb
            for tomb in sorted(deletes.values(), key=lambda t: -self._rank[t.type_name]):
                batch.append(data_notice(Action.DELETE, tomb.obj, tomb.mod_rev))
        for name in self._order:
            if name not in conn.wants or name in held:
                continue
            entries: Iterable[_Entry] = self._objects[name].values()
            if conn.delta_since is not None:
                floor = conn.delta_since
                entries = sorted((e for e in entries if e.mod_rev > floor), key=lambda e: e.mod_rev)
            batch.extend(e.notice() for e in entries)
        if not conn.filtered:
            conn.sendall_end_sent = True
            batch.append(self._sendall_end(conn))
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
                        key_string(change.obj),
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
        """One client connection: handshake, send-all, then both directions until it ends."""
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
        try:
            async with asyncio.timeout(self._sync_timeout):
                await self._ready.wait()
        except TimeoutError:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"notify server {self._name} is not synced yet"
            )
        since = _parse_revision(first.tags.get(TAG_DELTA_SINCE))
        if since is not None and since < self._floor and since <= self._revision:
            await self._extend_history(since)

        peer = Peer(
            next(self._ids), context.peer(), first.tags.get(TAG_NAME, ""), first.filter_cloudlet_key
        )
        conn = _Conn(peer, frozenset(first.want_objs) & self._rank.keys(), self._queue_limit)
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
            await context.write(reply)
            await until_first(
                self._read_loop(conn, context), self._write_loop(conn, context), conn.wait_closed()
            )
        finally:
            self._conns.discard(conn)
            conn.closed.set()
            log.info("notify client %s (%s) disconnected", peer.name, peer.addr)
            await self._flush(conn)
        if conn.abort is not None:
            await context.abort(*conn.abort)

    async def _write_loop(
        self, conn: _Conn, context: grpc.aio.ServicerContext[Notice, Notice]
    ) -> None:
        try:
            while True:
                while not conn.queue:
                    conn.wake.clear()
                    await conn.wake.wait()
                item = conn.queue.popleft()
                for notice in item if isinstance(item, list) else (item,):
                    await context.write(notice)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.debug("notify send to %s failed: %s", conn.peer.addr, err)
        finally:
            conn.close()

    async def _read_loop(
        self, conn: _Conn, context: grpc.aio.ServicerContext[Notice, Notice]
    ) -> None:
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


def _parse_revision(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value >= 0 else None
