"""Progress of long-running operations in Redis: streams for replay, pub/sub for hand-off.

Every operation on a tracked object (Cloudlet now, ClusterInst and AppInst next) writes its
progress lines to a **Redis stream** named after the object's key, as the original does
(controller.md §5.3), so `StreamObjApi.Stream<Type>` can replay them from any controller,
also after the API call that wrote them has gone::

    <Type>StreamKey: <key in Go compact text>     e.g. CloudletStreamKey: organization:"o" name:"c"

    {start-of-stream-message: "", id: <op id>, modRev: <etcd revision of the op's commit>}
    {message: "Creating", id: <op id>}
    ...
    {end-of-stream-message: "", id} | {error: "<text>", id} | {end-of-info-stream-message: "", id}

- Lines produced before the operation's first etcd commit are buffered; once the commit
  revision is known the stream is reset and restarted with the start marker, in a Redis
  transaction, unless the existing start marker carries a *higher* revision (a newer
  operation owns the stream; this one then writes nothing more to it).
- Readers take the id of the start marker and skip entries with another id.
- A successful delete (and a failed create that was undone) removes the stream if it still
  belongs to the operation (same id and revision).

Worker reports (CloudletInfo, VMPoolInfo, ...) are also **published** on the pub/sub channel
of the same name, by whichever controller received them. The API call waiting for them
subscribes after its commit, then reads the current state from etcd to close the race; this
is how a call running on controller A follows work reported to controller B (§8). When such a
report carries a terminal state and the stream is still open, an info-end marker is appended
(with the operation's id), so readers stop even if the operation's own controller died.

The op id is `<controller id>#<random>`: the recovery of orphaned operations (`_tracked`)
reads the owner from it. Original controllers write bare trace ids; those are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from redis.exceptions import RedisError, WatchError

from edge_cloud.errors import EdgeError, NotFound, Unavailable
from edge_cloud.redis import Redis

__all__ = [
    "END",
    "ERROR",
    "INFO_END",
    "MESSAGE",
    "START",
    "OpStream",
    "Progress",
    "StatusLines",
    "StreamedError",
    "Subscription",
    "compact_text",
    "op_owner",
    "stream_key",
]

log = logging.getLogger(__name__)

MESSAGE: Final = "message"
ERROR: Final = "error"
START: Final = "start-of-stream-message"
END: Final = "end-of-stream-message"
INFO_END: Final = "end-of-info-stream-message"
ID: Final = "id"
MOD_REV: Final = "modRev"

READ_TIMEOUT: Final = 30 * 60.0
"""Seconds a follower waits for the next line (the original's 30 min)."""
INFO_READ_TIMEOUT: Final = 3.0
"""Seconds a follower waits after an info-end marker."""
_BLOCK_SLICE: Final = 5.0  # one XREAD blocks at most this long (below the socket timeout)
_TX_RETRIES: Final = 10

# Server-side scripts: one round trip instead of WATCH/read/MULTI/EXEC (issue 6: every
# AppInst create starts a stream and ends its info part). Redis runs a script atomically,
# so the check and the writes cannot interleave with another controller's.
_RESTART_SCRIPT: Final = """
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first > 0 then
  local f = first[1][2]
  for i = 1, #f, 2 do
    if f[i] == ARGV[4] then
      local rev = tonumber(f[i + 1])
      if rev ~= nil and string.match(f[i + 1], '^%d+$') and rev > tonumber(ARGV[3]) then
        return 0
      end
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('XADD', KEYS[1], '*', ARGV[5], '', ARGV[6], ARGV[1], ARGV[4], ARGV[3])
for i = 9, #ARGV do
  redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[i], ARGV[6], ARGV[1])
end
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[1], '*', ARGV[7], ARGV[8], ARGV[6], ARGV[1])
end
return 1
"""
"""Reset a stream for an operation: KEYS[1] the stream; ARGV: op id, message field, mod rev,
mod-rev field, start field, id field, end field ('' for none), end value, buffered lines...
Returns 0 when a newer operation's start marker is there (nothing written)."""
_INFO_END_SCRIPT: Final = """
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first == 0 then return 0 end
local f = first[1][2]
local op_id = nil
local started = false
for i = 1, #f, 2 do
  if f[i] == ARGV[1] then started = true end
  if f[i] == ARGV[2] then op_id = f[i + 1] end
end
if not started then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local l = last[1][2]
  for i = 1, #l, 2 do
    if l[i] == ARGV[3] or l[i] == ARGV[4] then return 0 end
  end
end
redis.call('XADD', KEYS[1], '*', ARGV[5], '', ARGV[2], op_id or '')
return 1
"""
"""End the info part of a stream still open: KEYS[1] the stream; ARGV: start field, id field,
end field, error field, info-end field. Returns whether it wrote the marker."""
_SUBSCRIBE_TIMEOUT: Final = 5.0
_OWNER_SEP: Final = "#"

# Stream key prefixes by key message (the original's `<Key>.StreamKey()`).
_STREAM_NAMES: Final[Mapping[str, str]] = {
    "edgeproto.CloudletKey": "Cloudlet",
    "edgeproto.ClusterKey": "ClusterInst",
    "edgeproto.AppInstKey": "AppInst",
    "edgeproto.GPUDriverKey": "GPUDriver",
    "edgeproto.VMPoolKey": "VMPool",
}


class StreamedError(EdgeError):
    """The error an operation ended with, replayed from its stream (code unknown by then)."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN


# --- names ---------------------------------------------------------------------------------


def compact_text(key: Message) -> str:
    """golang/protobuf `CompactTextString` of a key message (what Go's `key.String()` gives).

    `organization:"o" name:"c" ` for a CloudletKey: fields in declaration order, empty
    scalars left out, nested messages as `name:<...> `, a trailing space.

    Args:
        key: A key message (strings, integers, booleans and nested keys only).

    Returns:
        The text.
    """
    parts: list[str] = []
    for fd in key.DESCRIPTOR.fields:
        value = getattr(key, fd.name)
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            parts.append(f"{fd.name}:<{compact_text(value)}> ")
        elif value:
            text = _go_text_quote(value) if isinstance(value, str) else str(value).lower()
            parts.append(f"{fd.name}:{text} ")
    return "".join(parts)


def _go_text_quote(value: str) -> str:
    out = ['"']
    for b in value.encode("utf-8", "surrogatepass"):
        c = chr(b)
        if c in '\n\r\t"\\':
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}[c])
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append(f"\\{b:03o}")
    out.append('"')
    return "".join(out)


def stream_key(key: Message) -> str:
    """The Redis stream (and pub/sub channel) of an object, e.g. `CloudletStreamKey: ...`.

    Args:
        key: The object's key message (CloudletKey, ClusterKey, AppInstKey, ...).

    Returns:
        The name, byte for byte the original's.

    Raises:
        KeyError: For key types that have no progress stream.
    """
    name = _STREAM_NAMES[key.DESCRIPTOR.full_name]
    return f"{name}StreamKey: {compact_text(key)}"


def new_op_id(controller_id: str) -> str:
    """A fresh operation id naming its controller (the original uses the trace id)."""
    return f"{controller_id}{_OWNER_SEP}{secrets.token_hex(8)}"


def op_owner(op_id: str) -> str | None:
    """The controller id inside an op id, None for ids written by an original controller."""
    owner, sep, _ = op_id.rpartition(_OWNER_SEP)
    return owner if sep else None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _entry_ms(entry_id: Any) -> float:
    """Milliseconds since the epoch of a stream entry id (`<ms>-<seq>`)."""
    head = _text(entry_id).partition("-")[0]
    return float(head) if head.isdigit() else 0.0


@dataclass(frozen=True, slots=True)
class StreamStart:
    """What the start marker of a stream says.

    Attributes:
        op_id: The operation's id.
        mod_rev: The etcd revision of the operation's commit.
        started_at: Unix time of the marker (from the entry id).
    """

    op_id: str
    mod_rev: int
    started_at: float


# --- pub/sub -------------------------------------------------------------------------------


class Subscription:
    """The pub/sub channel of one object, read by the API call waiting for worker reports.

    Each subscription holds its own Redis connection (as the original does); close it.
    """

    CLOSED: ClassVar[object] = object()
    """What `get` returns once the connection is lost."""

    def __init__(self, pubsub: Any, channel: str) -> None:
        self._pubsub = pubsub
        self.channel = channel
        self._closed = False
        self._pending: list[bytes] = []

    async def get(self, timeout: float) -> bytes | object | None:  # noqa: ASYNC109 - a poll
        """The next published payload, None after `timeout` seconds, `CLOSED` when lost.

        Args:
            timeout: Seconds to wait.
        """
        if self._pending:
            return self._pending.pop(0)
        if self._closed:
            return self.CLOSED
        try:
            message = await self._pubsub.get_message(
                ignore_subscribe_messages=True, timeout=max(timeout, 0.0)
            )
        except (RedisError, OSError) as err:
            log.warning("progress channel %s lost: %s", self.channel, err)
            self._closed = True
            return self.CLOSED
        if message is None or message.get("type") != "message":
            return None
        data = message.get("data")
        return data if isinstance(data, bytes) else _text(data).encode()

    async def drain(self, own: Collection[bytes]) -> int:
        """Drop the payloads this operation published itself (already forwarded).

        Reports from others received meanwhile are kept, in order, for `get`.

        Args:
            own: The payloads to drop.

        Returns:
            How many were dropped.
        """
        dropped = 0
        kept: list[bytes] = []
        while True:
            payload = await self.get(0.0)
            if payload is None or payload is self.CLOSED:
                break
            assert isinstance(payload, bytes)  # noqa: S101 - narrowing for mypy
            if payload in own:
                dropped += 1
            else:
                kept.append(payload)
        self._pending = kept + self._pending
        return dropped

    async def close(self) -> None:
        """Unsubscribe and give the connection back. Idempotent."""
        self._closed = True
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()


# --- status lines of worker reports ------------------------------------------------------


@dataclass(slots=True)
class StatusLines:
    """Which status lines of a worker's successive reports are new, by content.

    Every report carries the whole `status.msgs` list of the current operation. Counting
    lines (the original's `lastMsgCnt`) loses lines when the worker restarts: its status
    starts over shorter than before, so its next lines, among them the error that ends the
    operation, sit below the count and are never forwarded. Comparing content instead: a
    report whose lines extend the last ones contributes its tail; any other report is a
    restarted status and all of its lines are new (a repeated report contributes nothing).
    """

    _last: list[str] = field(default_factory=list)

    def new(self, msgs: Sequence[str]) -> list[str]:
        """The lines of `msgs` not forwarded yet; remembers `msgs` as the last report's."""
        current = list(msgs)
        last = self._last
        if current[: len(last)] == last:
            self._last = current
            return current[len(last) :]
        if last[: len(current)] == current:
            # a repeat of the start of the same status (a report replayed after a
            # reconnect, or a restart that began alike): nothing new, keep the longer one
            return []
        self._last = current
        return current


# --- the service ---------------------------------------------------------------------------


class Progress:
    """The Redis side of tracked operations for one Controller process.

    Args:
        redis: A connected client (bytes or text responses both work).
        controller_id: This controller's id, written into op ids.
    """

    def __init__(self, redis: Redis, controller_id: str) -> None:
        # redis-py's annotations mix its sync and async return types: use it untyped.
        self.redis: Any = redis
        self.controller_id = controller_id
        self._restart_script: Any = self.redis.register_script(_RESTART_SCRIPT)
        self._info_end_script: Any = self.redis.register_script(_INFO_END_SCRIPT)

    def new_stream(self, key: Message | str, sink: Callable[[str], None] | None) -> OpStream:
        """A stream for one operation, buffering until `OpStream.start`.

        Args:
            key: The object's key message, or a stream name.
            sink: Where each line also goes (the caller's gRPC stream), or None.
        """
        name = key if isinstance(key, str) else stream_key(key)
        return OpStream(self, name, sink, new_op_id(self.controller_id))

    # -- writing ---------------------------------------------------------------------------

    async def add(self, name: str, values: Mapping[str, str], op_id: str) -> None:
        """Append one entry, tagged with `op_id`."""
        entry = {**values, ID: op_id}
        await self.redis.xadd(name, entry)

    async def start_marker(self, name: str) -> StreamStart | None:
        """The start marker of a stream, or None (absent stream, or no marker first)."""
        first = await self.redis.xrange(name, "-", "+", count=1)
        if not first:
            return None
        entry_id, raw = first[0]
        values = _fields(raw)
        if START not in values:
            return None
        rev = values.get(MOD_REV, "0")
        return StreamStart(
            values.get(ID, ""), int(rev) if rev.isdigit() else 0, _entry_ms(entry_id) / 1000
        )

    async def open_operation(self, name: str) -> StreamStart | None:
        """The start marker of a stream whose operation has not ended, else None.

        An operation has ended when its stream's last entry is an end or error marker.
        """
        start = await self.start_marker(name)
        if start is None:
            return None
        last = await self.redis.xrevrange(name, "+", "-", count=1)
        if last and {END, ERROR} & _fields(last[0][1]).keys():
            return None
        return start

    async def _restart(
        self,
        name: str,
        op_id: str,
        mod_rev: int,
        lines: Sequence[str] = (),
        end: tuple[str, str] | None = None,
    ) -> bool:
        """Reset the stream for an operation committed at `mod_rev`, then append `lines`.

        One atomic script: the start marker check, the reset, the buffered lines and, for
        an operation that is over already, its end (`(END, "")`) or error marker cost one
        round trip.

        Returns:
            False when a newer operation owns the stream (nothing written).
        """
        end_field, end_value = end if end is not None else ("", "")
        args = [op_id, MESSAGE, str(mod_rev), MOD_REV, START, ID, end_field, end_value, *lines]
        written = await self._restart_script(keys=[name], args=args)
        return bool(int(written))

    async def _remove_if_owned(self, name: str, op_id: str, mod_rev: int) -> None:
        for attempt in range(_TX_RETRIES):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(name)
                    first = await pipe.xrange(name, "-", "+", count=1)
                    owned = False
                    if first:
                        values = _fields(first[0][1])
                        owned = values.get(ID) == op_id and values.get(MOD_REV) == str(mod_rev)
                    pipe.multi()
                    if owned:
                        pipe.delete(name)
                    await pipe.execute()
                    return
                except WatchError:
                    await asyncio.sleep(0.01 * (attempt + 1))

    async def subscribe(self, name: str) -> Subscription:
        """Subscribe to an object's channel and wait until Redis confirms.

        Raises:
            Unavailable: Redis did not confirm in time.
        """
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(name)
            async with asyncio.timeout(_SUBSCRIBE_TIMEOUT):
                while True:
                    message = await pubsub.get_message(timeout=_SUBSCRIBE_TIMEOUT)
                    if message is not None and _text(message.get("type")) == "subscribe":
                        break
        except (RedisError, OSError, TimeoutError) as err:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
            raise Unavailable(f"Failed to subscribe to stream {name}, {err}") from err
        return Subscription(pubsub, name)

    async def publish_info(self, name: str, payload: bytes, *, terminal: bool) -> None:
        """Publish a worker report; on a terminal one, end the stream's info part.

        Failures are logged: progress display must never fail the state change itself.

        Args:
            name: The object's stream name.
            payload: The report, encoded as stored.
            terminal: Whether it carries a terminal state (Ready, *Error, NotPresent).
        """
        try:
            await self.redis.publish(name, payload)
            if terminal:
                # only a stream of an operation still open gets the marker (one script)
                await self._info_end_script(keys=[name], args=[START, ID, END, ERROR, INFO_END])
        except (RedisError, OSError) as err:
            log.warning("could not publish progress on %s: %s", name, err)

    # -- reading ---------------------------------------------------------------------------

    async def follow(
        self,
        name: str,
        send: Callable[[str], Awaitable[None]],
        *,
        read_timeout: float = READ_TIMEOUT,
        info_read_timeout: float = INFO_READ_TIMEOUT,
    ) -> None:
        """Replay a stream's lines, then follow it until its operation ends (StreamObjApi).

        Args:
            name: The stream.
            send: Called with each message line.
            read_timeout: Seconds to wait for the next line before giving up (success).
            info_read_timeout: The same after an info-end marker.

        Raises:
            NotFound: `Stream <name> does not exist`.
            StreamedError: The operation ended with this error.
        """
        if not await self.redis.exists(name):
            raise NotFound(f"Stream {name} does not exist")
        reader = _Reader(send)
        last_id: Any = "0-0"
        for entry_id, raw in await self.redis.xrange(name, "-", "+") or []:
            last_id = entry_id
            if await reader.take(_fields(raw)):
                return
        if reader.info_ended():
            return
        timeout = read_timeout
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            block = int(min(remaining, _BLOCK_SLICE) * 1000) or 1
            found = await self.redis.xread({name: last_id}, count=1, block=block)
            if not found:
                continue
            for entry_id, raw in found[0][1]:
                last_id = entry_id
                if await reader.take(_fields(raw)):
                    return
                if reader.info_ended():
                    timeout = info_read_timeout
                deadline = time.monotonic() + timeout


@dataclass(slots=True)
class _Reader:
    """Decodes stream entries the way the original's StreamMsgs does."""

    send: Callable[[str], Awaitable[None]]
    op_id: str | None = None
    info_done: bool = False

    def info_ended(self) -> bool:
        """Whether an info-end marker of the operation was seen."""
        return self.info_done

    async def take(self, values: dict[str, str]) -> bool:
        """Handle one entry; True when the operation's end was reached."""
        entry_id = values.get(ID, "")
        if self.op_id is None:
            if START in values:
                self.op_id = entry_id
            return False  # the first entry must be the start marker
        if entry_id != self.op_id:
            return False
        if MESSAGE in values:
            await self.send(values[MESSAGE])
        if ERROR in values:
            raise StreamedError(values[ERROR])
        if END in values:
            return True
        if INFO_END in values:
            self.info_done = True
        return False


# --- one operation's stream ----------------------------------------------------------------


@dataclass(eq=False)
class OpStream:
    """The progress of one operation on one object: to its caller, and to Redis.

    A deferred stream (`start(..., defer=True)`, for operations that wait for nothing
    outside this call, such as IGNORE_CRM creates) keeps buffering after `start` and writes
    its start marker, its lines and its end marker in one round trip (`finish`, or `stop`
    on failure) instead of one for the start and one per later line and marker.

    Attributes:
        name: The stream (and channel) name.
        op_id: The operation's id (`<controller id>#<random>`).
        mod_rev: The etcd revision the stream was started for (0 until started).
        subscription: The object's pub/sub channel, opened by `start`.
        deferred: Started, but nothing written to Redis until `finish` or `stop`.
    """

    progress: Progress
    name: str
    sink: Callable[[str], None] | None
    op_id: str
    mod_rev: int = 0
    started: bool = False
    invalid: bool = False
    is_copy: bool = False
    subscription: Subscription | None = None
    deferred: bool = False
    ended: bool = False
    _buffer: list[str] = field(default_factory=list)

    async def send(self, message: str) -> None:
        """One progress line: to the caller now, to Redis once started (buffered before)."""
        if self.sink is not None:
            self.sink(message)
        if not self.started or self.deferred:
            self._buffer.append(message)
            return
        await self._write({MESSAGE: message})

    async def _write(self, values: Mapping[str, str]) -> None:
        if self.invalid:
            return
        try:
            await self.progress.add(self.name, values, self.op_id)
        except (RedisError, OSError) as err:
            # losing a progress line must not fail the operation (the original's rule)
            log.warning("could not write progress to %s: %s", self.name, err)

    async def start(self, mod_rev: int, *, subscribe: bool = True, defer: bool = False) -> None:
        """Bind the stream to the operation's commit, flush buffered lines, subscribe.

        Args:
            mod_rev: The etcd revision of the operation's first commit.
            subscribe: Also open the object's pub/sub channel (for waiting on reports).
            defer: Write nothing yet: `finish` (or `stop`) writes the start marker, the
                lines and the end together. Ignored with `subscribe` (an operation that
                waits for reports shows its progress as it goes).

        Raises:
            Unavailable: Redis cannot be reached or did not confirm the subscription.
        """
        if self.started:
            return
        self.mod_rev = mod_rev
        if defer and not subscribe:
            self.started = self.deferred = True
            return
        buffered, self._buffer = self._buffer, []
        try:
            self.invalid = not await self.progress._restart(
                self.name, self.op_id, mod_rev, buffered
            )
        except (RedisError, OSError) as err:
            raise Unavailable(f"cannot start progress stream {self.name}: {err}") from err
        if self.invalid:
            log.info("progress stream %s belongs to a newer operation", self.name)
        self.started = True
        if subscribe:
            self.subscription = await self.progress.subscribe(self.name)

    async def finish(self) -> None:
        """End a deferred stream that succeeded: start marker, lines and end in one trip.

        Called at the end of the operation's work, where a failure to start the stream
        used to surface: like `start`, it raises, and the operation fails (and is undone)
        as it did when Redis could not be reached at its start. Does nothing for a stream
        that is not deferred (or a copy: the operation that started it ends it).

        Raises:
            Unavailable: Redis cannot be reached.
        """
        if not self.deferred or self.is_copy:
            return
        await self._write_deferred((END, ""), raise_errors=True)

    async def _write_deferred(self, end: tuple[str, str], *, raise_errors: bool) -> None:
        """The one write of a deferred stream; afterwards it is an ended, started stream."""
        buffered, self._buffer = self._buffer, []
        self.deferred = False
        self.ended = True
        try:
            self.invalid = not await self.progress._restart(
                self.name, self.op_id, self.mod_rev, buffered, end
            )
        except (RedisError, OSError) as err:
            if raise_errors:
                # as a failed `start`: nothing more is written for this operation
                self.started = False
                raise Unavailable(f"cannot start progress stream {self.name}: {err}") from err
            log.warning("could not write progress to %s: %s", self.name, err)
            return
        if self.invalid:
            log.info("progress stream %s belongs to a newer operation", self.name)

    def copy(self, sink: Callable[[str], None] | None = None) -> OpStream:
        """The same stream for a nested operation (undo): it never ends or resets it.

        A copy of a deferred stream buffers into the same lines, in order.
        """
        return OpStream(
            self.progress,
            self.name,
            self.sink if sink is None else sink,
            self.op_id,
            self.mod_rev,
            self.started,
            self.invalid,
            is_copy=True,
            subscription=self.subscription,
            deferred=self.deferred,
            _buffer=self._buffer if self.deferred else [],
        )

    async def stop(self, error: BaseException | None, *, cleanup: bool = False) -> None:
        """End the stream: an error entry or the end marker; remove it if asked and owned.

        A copy does nothing: the operation that started the stream ends it.

        Args:
            error: What the operation failed with, or None.
            cleanup: Remove the stream (after a successful delete, or an undone create).
        """
        if self.is_copy:
            return
        if self.subscription is not None:
            await self.subscription.close()
            self.subscription = None
        if not self.started or self.invalid:
            return
        end = (END, "") if error is None else (ERROR, _describe(error))
        if self.deferred:
            await self._write_deferred(end, raise_errors=False)
        elif not self.ended:
            await self._write(dict([end]))
        if cleanup:
            try:
                await self.progress._remove_if_owned(self.name, self.op_id, self.mod_rev)
            except (RedisError, OSError) as err:
                log.warning("could not remove progress stream %s: %s", self.name, err)


def _describe(error: BaseException) -> str:
    if isinstance(error, EdgeError):
        return error.message
    if isinstance(error, asyncio.CancelledError):
        return "operation cancelled"
    return str(error) or type(error).__name__
