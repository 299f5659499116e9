"""The object store: etcd behind a small typed interface, and the only module that imports aetcd.

Every durable object of the platform lives in etcd as one key. Services see `Store`, a
Protocol (so a unit test can hand them an in-memory fake) implemented here by `EtcdStore`.

Why it looks like this:

- **One etcd gRPC client per process, imported only here.** aetcd and the other etcd clients
  register the same protobuf symbols and bare file names; two of them in one process, or
  our own `kv.proto`, kill it at import (dependencies.md §3).
- **aetcd for the channel and the etcd API stubs, not its helpers.** Its high-level methods
  drop the response header (we need the revision of every read and write), take one timeout
  for the whole client, and multiplex all watches over one stream whose failure ends every
  watch at once. We call the stubs it ships directly, each with its own deadline.
- **Writes are guarded.** `update()` reads with revisions, lets a pure function compute the
  writes, and commits them in one transaction that compares the mod revision of everything
  read; on a lost race it retries with jittered backoff, at least a set number of times and
  as long as a time budget allows, then raises `Aborted` (architecture.md §8). No write
  path reads, thinks, then blindly overwrites.
- **A watch never ends by itself.** When the connection drops (an etcd restart, a network
  blip) it reopens from the last delivered revision + 1 with backoff, so nothing is lost or
  repeated. When the revision it needs was compacted away, nothing can replay the missed
  events, so it lists the prefix again and yields one `Resync` carrying that listing and its
  revision, then watches on from there. A caller replaces its state with the listing (that is
  how it learns about deletes it missed); it never has to catch an error or restart anything.
- **Every call is bounded.** Unary calls carry a deadline; a watch stream has no deadline but
  gRPC keepalive pings detect a dead peer. Failures surface as our own exceptions
  (`Unavailable`, `DeadlineExceeded`, ...) with one-line messages.

Keys are `str` (the platform's keys are JSON), values are `bytes`. An optional namespace
(prefix) is prepended to every key on the way in and stripped on the way out; tests use it to
isolate each test's keys, and nothing else needs to know about it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, Self
from urllib.parse import urlsplit

import aetcd
import aetcd.rpc as rpc
import grpc
import grpc.aio

from edge_cloud.errors import (
    Aborted,
    DeadlineExceeded,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

__all__ = [
    "Compare",
    "Delete",
    "DeletePrefix",
    "EtcdStore",
    "EventType",
    "Get",
    "KeyValue",
    "ModRevisionIs",
    "Op",
    "Put",
    "Resync",
    "RevisionCompacted",
    "Snapshot",
    "Store",
    "TxnResult",
    "UpdateFn",
    "ValueIs",
    "WatchEvent",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_UPDATE_RETRIES: Final = 10

# gRPC channel settings. Reconnect backoff is capped low because etcd is on the same network
# and a restarted etcd is back in about a second; the default cap (120 s) would keep us away
# long after it returned. Keepalive every 10 s (etcd refuses pings more often than every 5 s
# and pings without an active stream) finds a dead peer under a long-lived watch.
_CHANNEL_OPTIONS: Final[dict[str, Any]] = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 0,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
}

# Group commit (see `EtcdStore.txn`): how many transactions may be on their way to etcd alone
# before the next ones wait to go together, and the bounds of one combined transaction. etcd
# lets a nested transaction carry at most `--max-txn-ops` (128 by default) minus the number of
# siblings of its parent, so a batch of 16 leaves 112 ops per member; the bytes stay far
# below etcd's default request limit (1.5 MiB). Eight alone: writers that contend for one
# record (AppInst creates of one App on different clusters all rewrite its refs record) are
# rarely more than that, and queueing them only let their guesses go stale and lose more
# races (measured: +20-60 % etcd CPU per AppInst create with 2), while 64 independent
# creates (Flavors) still go in batches.
_GROUP_ALONE: Final = 8
_GROUP_MAX_TXNS: Final = 16
_GROUP_MAX_OPS: Final = 128 - _GROUP_MAX_TXNS
_GROUP_MAX_BYTES: Final = 512 * 1024

_RETRY_BASE: Final = 0.002
_RETRY_CAP: Final = 0.05
_WATCH_BACKOFF_MIN: Final = 0.05
_WATCH_BACKOFF_MAX: Final = 2.0


# --- values -------------------------------------------------------------------------------


class RevisionCompacted(FailedPrecondition):
    """A read asked for a revision that etcd has already compacted away."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it.

    Attributes:
        key: The key, without the store's namespace.
        value: The stored bytes.
        create_revision: Revision of the write that created the key.
        mod_revision: Revision of the last write to the key; what guarded writes compare.
        version: Number of writes since creation (1 after the first put).
        lease: ID of the attached lease, 0 for none.
    """

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


class EventType(enum.Enum):
    """What happened to a key in a watch event."""

    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change under a watched prefix.

    Attributes:
        type: PUT (create or update) or DELETE (also lease expiry).
        key: The key, without the store's namespace.
        value: The new value; empty for a DELETE.
        mod_revision: Revision of the change (for a DELETE, the revision of the deletion).
            Events arrive in revision order; several keys written by one transaction share one.
        create_revision: Revision that created the key (0 for a DELETE).
        version: Version after the change (0 for a DELETE).
        prev_value: The value before the change, only when the watch asked for `prev_kv`
            and etcd still had it; otherwise None.
    """

    type: EventType
    key: str
    value: bytes
    mod_revision: int
    create_revision: int = 0
    version: int = 0
    prev_value: bytes | None = None


@dataclass(frozen=True, slots=True)
class Resync:
    """Yielded by `watch` instead of the events it could not replay after a compaction.

    Replace everything known under the prefix with `items`: they are the complete state at
    `revision`, and the watch continues with events after `revision`. Keys missing from
    `items` were deleted while the watch was behind.

    Attributes:
        items: Every key under the watched prefix at `revision`, in key order.
        revision: The store revision of the listing.
        compact_revision: The compaction point that made the replay impossible.
    """

    items: list[KeyValue]
    revision: int
    compact_revision: int


# --- transactions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModRevisionIs:
    """Compare: the key's last modification revision equals `revision` (0: must not exist)."""

    key: str
    revision: int


@dataclass(frozen=True, slots=True)
class ValueIs:
    """Compare: the key exists and holds exactly `value`."""

    key: str
    value: bytes


Compare = ModRevisionIs | ValueIs


@dataclass(frozen=True, slots=True)
class Put:
    """Op: write `value` at `key`, attached to `lease` if given (the key dies with it)."""

    key: str
    value: bytes
    lease: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Op: delete `key` (no error if absent)."""

    key: str


@dataclass(frozen=True, slots=True)
class DeletePrefix:
    """Op: delete every key that starts with `prefix`."""

    prefix: str


@dataclass(frozen=True, slots=True)
class Get:
    """Op: read `key`; the result lands in `TxnResult.values`."""

    key: str


Op = Put | Delete | DeletePrefix | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    """The outcome of one transaction.

    Attributes:
        succeeded: Whether every compare held (so the success ops ran).
        revision: Store revision after the transaction; every key it wrote has this
            mod revision.
        values: Result of each `Get` op of the branch that ran (None: key absent).
        deleted: Number of keys deleted by the branch that ran.
    """

    succeeded: bool
    revision: int
    values: dict[str, KeyValue | None] = field(default_factory=dict)
    deleted: int = 0


class Snapshot(dict[str, "KeyValue | None"]):
    """The values `update` hands its function: key → value (None: absent), read at `revision`.

    The revision lets a function tell whether a local copy of other data (a cache fed by a
    watch) is at least as new as what it reads here, and so safe to combine with it.
    """

    def __init__(self, values: Mapping[str, KeyValue | None], *, revision: int) -> None:
        super().__init__(values)
        self.revision = revision


#: What `update` calls: current values of the keys read (None: absent) → ops to commit.
UpdateFn = Callable[[Mapping[str, KeyValue | None]], Sequence[Op] | Awaitable[Sequence[Op]]]


# --- the interface --------------------------------------------------------------------------


class Store(Protocol):
    """What services use to keep objects; `EtcdStore` in production, a fake in unit tests."""

    async def get(self, key: str) -> KeyValue | None:
        """Read one key; None if absent."""
        ...

    async def range(
        self, prefix: str, *, revision: int | None = None, keys_only: bool = False
    ) -> tuple[list[KeyValue], int]:
        """Read every key under `prefix` (key order) and the revision of that snapshot."""
        ...

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        """Write unconditionally; returns the revision of the write."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete unconditionally; returns whether the key existed."""
        ...

    async def txn(
        self,
        compares: Sequence[Compare],
        success_ops: Sequence[Op],
        failure_ops: Sequence[Op] = (),
    ) -> TxnResult:
        """Run `success_ops` if every compare holds, else `failure_ops`, atomically."""
        ...

    async def update(
        self,
        keys: Iterable[str],
        fn: UpdateFn,
        *,
        retries: int = DEFAULT_UPDATE_RETRIES,
        budget: float | None = None,
        initial: Snapshot | None = None,
    ) -> TxnResult:
        """Read `keys`, let `fn` compute ops, commit guarded by what was read; see EtcdStore."""
        ...

    async def grant(self, ttl: int) -> int:
        """Create a lease of `ttl` seconds; returns its ID."""
        ...

    async def refresh(self, lease_id: int) -> int:
        """Renew a lease once; returns the new TTL (NotFound if it already expired)."""
        ...

    async def keepalive(self, lease_id: int, ttl: int, *, interval: float | None = None) -> None:
        """Renew a lease until cancelled (run it as a task)."""
        ...

    async def revoke(self, lease_id: int) -> None:
        """End a lease now, deleting its keys."""
        ...

    def watch(
        self, prefix: str, start_revision: int | None = None, *, prev_kv: bool = False
    ) -> AsyncGenerator[WatchEvent | Resync, None]:
        """Changes under `prefix` from `start_revision` on; never ends by itself."""
        ...

    async def compact(self, revision: int) -> None:
        """Discard history before `revision`."""
        ...

    async def close(self) -> None:
        """Release the connection; idempotent."""
        ...


# --- etcd -------------------------------------------------------------------------------------


class EtcdStore:
    """`Store` on etcd v3 through aetcd's channel and stubs. Create it with `connect`.

    One instance per process: it is safe to share between tasks (gRPC multiplexes calls), and
    a second client library or connection brings nothing but duplicate-descriptor trouble.
    """

    def __init__(self, client: Any, endpoint: str, *, timeout: float, namespace: str = "") -> None:
        """Wrap an already connected aetcd client; use `EtcdStore.connect` instead."""
        self._client = client
        self._endpoint = endpoint
        self._timeout = timeout
        self._ns = namespace.encode()
        self._kv: Any = client.kvstub
        self._lease: Any = client.leasestub
        self._watch: Any = rpc.WatchStub(client.channel)
        self._closed = False
        self._sending = 0  # transactions (alone or combined) on their way to etcd
        self._waiting: list[_Queued] = []  # transactions waiting to go together
        self._senders: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(
        cls,
        endpoints: str | Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - also the deadline of later calls
        namespace: str = "",
    ) -> Self:
        """Connect to the first etcd endpoint that answers.

        aetcd's own connect only builds a channel, so a status call proves etcd is there:
        a daemon should fail at start with one clear line, not at its first write.

        Args:
            endpoints: `http://host:port` or `host:port`, as a list or a comma-separated
                string (the `--etcd-urls` form). Tried in order.
            timeout: Deadline of the probe and, afterwards, of every unary call.
            namespace: Prefix added to every key (tests use a unique one per test).

        Returns:
            A connected store.

        Raises:
            InvalidArgument: An endpoint is malformed or asks for TLS (not supported yet).
            Unavailable: No endpoint answered; the message names them all.
        """
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        if not endpoints:
            raise InvalidArgument("no etcd endpoint given")
        reasons: list[str] = []
        for endpoint in endpoints:
            host, port = _parse_endpoint(endpoint)
            client = aetcd.Client(host=host, port=port, options=dict(_CHANNEL_OPTIONS))
            try:
                await client.connect()
                await client.maintenancestub.Status(rpc.StatusRequest(), timeout=timeout)
            except grpc.aio.AioRpcError as err:
                await client.close()
                reasons.append(f"{host}:{port} ({_connect_failure(err, timeout)})")
                continue
            except BaseException:
                await client.close()
                raise
            log.debug("connected to etcd at %s:%d", host, port)
            return cls(client, f"{host}:{port}", timeout=timeout, namespace=namespace)
        raise Unavailable(f"etcd is unreachable at {', '.join(reasons)}")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._closed

    def _is_closed(self) -> bool:
        # A method, not the property: mypy would keep a narrowed value across awaits.
        return self._closed

    @property
    def namespace(self) -> str:
        """The prefix this store adds to every key."""
        return self._ns.decode()

    # -- reads and plain writes -------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        """Read one key.

        Args:
            key: The key.

        Returns:
            The key with its revisions, or None if absent.
        """
        resp = await self._unary(self._kv.Range, rpc.RangeRequest(key=self._key(key)), "get", key)
        return self._kv_from(resp.kvs[0]) if resp.kvs else None

    async def range(
        self, prefix: str, *, revision: int | None = None, keys_only: bool = False
    ) -> tuple[list[KeyValue], int]:
        """Read every key under `prefix` as one consistent snapshot.

        Args:
            prefix: Key prefix ("" for everything in the namespace).
            revision: Read the keys as they were at this past revision (what lets notify
                tell which objects vanished since a client last synced); None is now.
            keys_only: Leave values empty; enough for comparing key sets cheaply.

        Returns:
            The keys in key order, and the revision of the snapshot: start a watch at
            revision + 1 to follow on without a gap.

        Raises:
            RevisionCompacted: `revision` is older than etcd's compaction point.
        """
        start, end = self._prefix_range(prefix)
        request = rpc.RangeRequest(
            key=start, range_end=end, revision=revision or 0, keys_only=keys_only
        )
        try:
            resp = await self._kv.Range(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (err.details() or ""):
                raise RevisionCompacted(
                    f"etcd no longer has revision {revision} of {prefix!r} (compacted)"
                ) from err
            raise self._error(err, "range", prefix) from err
        snapshot_revision: int = resp.header.revision
        return [self._kv_from(kv) for kv in resp.kvs], snapshot_revision

    async def revision(self) -> int:
        """The current revision of the whole store."""
        start, end = self._prefix_range("")
        resp = await self._unary(
            self._kv.Range,
            rpc.RangeRequest(key=start, range_end=end, count_only=True),
            "read the revision of",
            "",
        )
        revision: int = resp.header.revision
        return revision

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        """Write unconditionally (use `txn` or `update` when others may write the key).

        Args:
            key: The key.
            value: The bytes to store.
            lease: Lease ID to attach; the key is deleted when the lease ends.

        Returns:
            The revision of the write (the key's new mod revision).
        """
        request = rpc.PutRequest(key=self._key(key), value=value, lease=lease or 0)
        resp = await self._unary(self._kv.Put, request, "put", key)
        revision: int = resp.header.revision
        return revision

    async def delete(self, key: str) -> bool:
        """Delete unconditionally.

        Args:
            key: The key.

        Returns:
            Whether the key existed.
        """
        request = rpc.DeleteRangeRequest(key=self._key(key))
        resp = await self._unary(self._kv.DeleteRange, request, "delete", key)
        return bool(resp.deleted)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under `prefix`; returns how many there were."""
        start, end = self._prefix_range(prefix)
        request = rpc.DeleteRangeRequest(key=start, range_end=end)
        resp = await self._unary(self._kv.DeleteRange, request, "delete prefix", prefix)
        deleted: int = resp.deleted
        return deleted

    # -- transactions ------------------------------------------------------------------------

    async def txn(
        self,
        compares: Sequence[Compare],
        success_ops: Sequence[Op],
        failure_ops: Sequence[Op] = (),
    ) -> TxnResult:
        """Run one etcd transaction: if every compare holds, the success ops, else the others.

        Args:
            compares: Conditions, all of which must hold (an empty list always holds).
            success_ops: Ops to run when they hold.
            failure_ops: Ops to run when one does not (typically `Get`s to learn why).

        Returns:
            Which branch ran, the revision after it, and what its `Get`s and deletes found.
        """
        request = rpc.TxnRequest(
            compare=[self._compare(c) for c in compares],
            success=[self._request_op(op) for op in success_ops],
            failure=[self._request_op(op) for op in failure_ops],
        )
        named = {_op_key(x) for x in (*compares, *success_ops)}  # what an error names
        what = ", ".join(sorted(named)) or "-"
        touched = named.union(map(_op_key, failure_ops))
        succeeded, revision, responses = await self._commit(
            request, touched, what, _groupable(compares, success_ops, failure_ops)
        )
        ran = success_ops if succeeded else failure_ops
        values: dict[str, KeyValue | None] = {}
        deleted = 0
        for op, result in zip(ran, responses, strict=True):
            if isinstance(op, Get):
                kvs = result.response_range.kvs
                values[op.key] = self._kv_from(kvs[0]) if kvs else None
            elif isinstance(op, Delete | DeletePrefix):
                deleted += result.response_delete_range.deleted
        return TxnResult(succeeded, revision, values, deleted)

    async def _commit(
        self, request: Any, touched: set[str], what: str, groupable: bool
    ) -> tuple[bool, int, Sequence[Any]]:
        """Send one transaction: alone when few are in flight, else together with others.

        Group commit: while `_GROUP_ALONE` transactions are on their way, the next ones
        queue, and as soon as one returns, the queue goes as one etcd transaction whose
        members are nested transactions (etcd >= 3.3), each with its own compares, branches
        and result. Under load, etcd then runs one request, one consensus round and one disk
        sync for many creates, and this process one gRPC call; an idle store adds no wait.
        Members of one batch touch disjoint keys (etcd refuses a key written twice in one
        transaction), so each commits or fails exactly as it would alone, at the batch's
        revision. Transactions that cannot be nested safely (prefix deletes, too many ops,
        large values) always go alone.

        Returns:
            Whether the compares held, the revision after the transaction, and the
            responses of the branch that ran.
        """
        if not groupable or request.ByteSize() > _GROUP_MAX_BYTES:
            resp = await self._unary(self._kv.Txn, request, "run a transaction on", what)
            return bool(resp.succeeded), resp.header.revision, resp.responses
        if self._sending >= _GROUP_ALONE:
            queued = _Queued(request, touched, what, asyncio.get_running_loop().create_future())
            self._waiting.append(queued)
            return await queued.result
        self._sending += 1
        try:
            resp = await self._unary(self._kv.Txn, request, "run a transaction on", what)
        finally:
            self._sending -= 1
            self._send_waiting()
        return bool(resp.succeeded), resp.header.revision, resp.responses

    def _send_waiting(self) -> None:
        """Start sending the queued transactions, if any, in a slot just freed."""
        if self._waiting and self._sending < _GROUP_ALONE:
            self._sending += 1
            task = asyncio.get_running_loop().create_task(self._send_batches())
            self._senders.add(task)  # a task nobody references may be collected mid-run
            task.add_done_callback(self._senders.discard)

    async def _send_batches(self) -> None:
        """Send the queue in batches until it is empty (holds one sending slot)."""
        try:
            while self._waiting:
                await self._send_batch(self._next_batch())
        finally:
            self._sending -= 1
            self._send_waiting()

    def _next_batch(self) -> list[_Queued]:
        """The oldest queued transactions whose keys are disjoint, within the bounds."""
        batch: list[_Queued] = []
        keys: set[str] = set()
        size = 0
        left: list[_Queued] = []
        for queued in self._waiting:
            if queued.result.done():  # its caller gave up (cancelled) before it was sent
                continue
            bytes_ = queued.request.ByteSize()
            if (
                len(batch) >= _GROUP_MAX_TXNS
                or size + bytes_ > _GROUP_MAX_BYTES
                or not keys.isdisjoint(queued.touched)
            ):
                left.append(queued)
                continue
            batch.append(queued)
            keys |= queued.touched
            size += bytes_
        self._waiting = left
        return batch

    async def _send_batch(self, batch: list[_Queued]) -> None:
        """Commit a batch as one transaction and hand each member its own outcome."""
        if not batch:
            return
        if len(batch) == 1:
            await self._send_alone(batch[0])
            return
        request = rpc.TxnRequest(
            success=[rpc.RequestOp(request_txn=queued.request) for queued in batch]
        )
        what = f"{len(batch)} combined transactions"
        try:
            resp = await self._unary(self._kv.Txn, request, "run a transaction on", what)
        except (InvalidArgument, ResourceExhausted):
            # refused before anything ran (an etcd with lower op or size limits than ours):
            # each goes alone, and gets its own answer
            for queued in batch:
                await self._send_alone(queued)
            return
        except Exception as err:
            for queued in batch:
                if not queued.result.done():
                    queued.result.set_exception(err)
            return
        except BaseException:
            for queued in batch:  # cancelled (the loop is closing): so are its members
                queued.result.cancel()
            raise
        revision = resp.header.revision
        for queued, member in zip(batch, resp.responses, strict=True):
            nested = member.response_txn
            if not queued.result.done():
                queued.result.set_result((bool(nested.succeeded), revision, nested.responses))

    async def _send_alone(self, queued: _Queued) -> None:
        """Commit one queued transaction by itself."""
        try:
            resp = await self._unary(
                self._kv.Txn, queued.request, "run a transaction on", queued.what
            )
        except Exception as err:
            if not queued.result.done():
                queued.result.set_exception(err)
            return
        if not queued.result.done():
            queued.result.set_result((bool(resp.succeeded), resp.header.revision, resp.responses))

    async def update(
        self,
        keys: Iterable[str],
        fn: UpdateFn,
        *,
        retries: int = DEFAULT_UPDATE_RETRIES,
        budget: float | None = None,
        initial: Snapshot | None = None,
    ) -> TxnResult:
        """Read-modify-write `keys` without lost updates.

        Reads every key in one snapshot, calls `fn` with the current values, and commits the
        ops it returns in one transaction that requires every key read to be unchanged (same
        mod revision, or still absent). If another writer got there first, the failed
        transaction itself returns fresh values, `fn` runs again on them, and so on.

        How long it keeps trying adapts to the contention: at least `retries` more
        attempts, and with a `budget` as many more as fit in that many seconds. A hot key
        (a per-cloudlet refs record under a burst of creates) thus costs its writers time,
        not failures, while a writer that can never win still gives up in bounded time.
        Between attempts it sleeps a jittered, exponentially growing few milliseconds, so
        writers retrying in lockstep spread out instead of colliding again.

        `fn` must be a pure function of its argument (it may run several times) and may raise
        an `EdgeError` to refuse (nothing is written). It may be a coroutine function. Its
        argument is a `Snapshot`: the values plus the store revision they were read at. Keys
        it writes but that are not in `keys` are written unguarded.

        With an `initial` snapshot (values the caller already knows, e.g. from a cache fed by
        a watch) the first read is skipped: the commit's compares verify it, and a stale
        guess just loses the race once. A decision not to write (no ops, or a refusal)
        taken on it is not verified by any compare, so it is taken again on a real read.

        Args:
            keys: Keys to read and guard.
            fn: Current values (None: absent) → ops to commit; an empty list writes nothing.
            retries: Extra attempts after the first lost race, at least.
            budget: Seconds during which lost races are retried beyond `retries`.
            initial: Values of exactly `keys` to start from instead of reading them.

        Returns:
            The successful transaction (or, if `fn` returned no ops, the read).

        Raises:
            Aborted: Every attempt lost its race.
        """
        guarded = list(dict.fromkeys(keys))
        reads: list[Op] = [Get(k) for k in guarded]

        async def read() -> Snapshot:
            snapshot = await self.txn((), reads)
            return Snapshot(snapshot.values, revision=snapshot.revision)

        verified = initial is None
        current = await read() if initial is None else initial
        if initial is not None and set(initial) != set(guarded):
            raise InvalidArgument("update: the initial snapshot must hold exactly the keys read")
        deadline = None if budget is None else time.monotonic() + budget
        attempt = 0
        while True:
            try:
                result = fn(current)
                ops = result if isinstance(result, Sequence) else await result
            except EdgeError:
                if verified:
                    raise
                current, verified = await read(), True
                continue
            if not ops:
                if not verified:
                    current, verified = await read(), True
                    continue
                return TxnResult(True, current.revision, dict(current), 0)
            compares = [ModRevisionIs(k, kv.mod_revision if kv else 0) for k, kv in current.items()]
            outcome = await self.txn(compares, ops, reads)
            if outcome.succeeded:
                return outcome
            current, verified = Snapshot(outcome.values, revision=outcome.revision), True
            attempt += 1
            if attempt > retries and (deadline is None or time.monotonic() >= deadline):
                break
            if attempt > 1:
                await asyncio.sleep(_retry_delay(attempt))
        raise Aborted(
            f"concurrent changes to {', '.join(guarded) or '(no keys)'} kept conflicting; "
            f"gave up after {attempt} attempts"
        )

    # -- leases --------------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        """Create a lease; keys put with it are deleted when it expires or is revoked.

        Args:
            ttl: Seconds without a refresh before expiry (etcd raises very small values to
                its minimum, about 2 s by default).

        Returns:
            The lease ID.
        """
        request = rpc.LeaseGrantRequest(TTL=ttl, ID=0)
        resp = await self._unary(self._lease.LeaseGrant, request, "grant", f"lease ttl={ttl}")
        if resp.error:
            raise ResourceExhausted(f"etcd refused a lease of {ttl}s: {resp.error}")
        lease_id: int = resp.ID
        return lease_id

    async def refresh(self, lease_id: int, *, timeout: float | None = None) -> int:  # noqa: ASYNC109 - a per-call deadline
        """Renew a lease once.

        Args:
            lease_id: The lease.
            timeout: Deadline of this call; default the store's.

        Returns:
            The TTL it was renewed to.

        Raises:
            NotFound: The lease has expired or was revoked (its keys are gone).
            DeadlineExceeded: etcd did not answer in time.
        """
        what = f"lease {lease_id:x}"
        deadline = self._timeout if timeout is None else timeout
        call = self._lease.LeaseKeepAlive(
            iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]), timeout=deadline
        )
        try:
            reply = await call.read()
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(
                    f"etcd at {self._endpoint} did not refresh {what} within {deadline:g}s"
                ) from err
            raise self._error(err, "refresh", what) from err
        finally:
            call.cancel()
        if reply is grpc.aio.EOF or reply.TTL <= 0:
            raise NotFound(f"etcd {what} has expired or was revoked")
        ttl: int = reply.TTL
        return ttl

    async def keepalive(self, lease_id: int, ttl: int, *, interval: float | None = None) -> None:
        """Keep a lease alive until cancelled; meant to run as a task beside its owner.

        Transient failures are retried sooner than the normal interval, since the lease keeps
        counting down on the server meanwhile; for the same reason one refresh may take at
        most a third of the TTL (the store's usual deadline can be as long as the whole TTL,
        and a refresh stuck that long loses the lease). If it expires anyway, this raises
        instead of pretending: the keys tied to it are gone and the owner must re-create them.

        Args:
            lease_id: The lease.
            ttl: Its TTL in seconds, to pace the refreshes.
            interval: Seconds between refreshes; default a third of `ttl`.

        Raises:
            NotFound: The lease expired or was revoked.
        """
        period = interval if interval is not None else max(ttl / 3, 0.1)
        deadline = min(self._timeout, max(ttl / 3, 0.5))
        while True:
            try:
                await self.refresh(lease_id, timeout=deadline)
            except (Unavailable, DeadlineExceeded) as err:
                log.warning("could not refresh etcd lease %x, retrying: %s", lease_id, err)
                await asyncio.sleep(min(period, 0.5))
                continue
            await asyncio.sleep(period)

    async def revoke(self, lease_id: int) -> None:
        """End a lease now, deleting its keys; an already expired lease is not an error.

        Args:
            lease_id: The lease.
        """
        request = rpc.LeaseRevokeRequest(ID=lease_id)
        try:
            await self._unary(self._lease.LeaseRevoke, request, "revoke", f"lease {lease_id:x}")
        except NotFound:
            log.debug("etcd lease %x was already gone", lease_id)

    # -- watch -------------------------------------------------------------------------------

    async def watch(
        self, prefix: str, start_revision: int | None = None, *, prev_kv: bool = False
    ) -> AsyncGenerator[WatchEvent | Resync, None]:
        """Follow every change under `prefix`, in revision order, forever.

        The iteration ends only when the consumer stops it (`break`, cancellation,
        `aclose()`; use `contextlib.aclosing` to release the stream promptly) or the store is
        closed. A lost connection is retried with backoff from the last delivered revision
        + 1, so no event is lost or repeated. If that revision has been compacted, one
        `Resync` with the complete current listing is yielded instead of the missed events
        (see `Resync`), and events continue after it.

        Args:
            prefix: Key prefix to follow ("" for the whole namespace).
            start_revision: First revision to deliver, typically `range()`'s revision + 1;
                None means "changes from now on".
            prev_kv: Also deliver each key's previous value (costs etcd a read per event).

        Yields:
            `WatchEvent`s, and a `Resync` after a compaction.
        """
        start, end = self._prefix_range(prefix)
        next_revision = start_revision
        delay = _WATCH_BACKOFF_MIN
        failures = 0
        while not self._is_closed():
            call = None
            try:
                if next_revision is None:
                    next_revision = await self.revision() + 1
                call = self._watch.Watch()
                create = rpc.WatchCreateRequest(
                    key=start,
                    range_end=end,
                    start_revision=next_revision,
                    prev_kv=prev_kv,
                    progress_notify=True,
                )
                await call.write(rpc.WatchRequest(create_request=create))
                async with asyncio.timeout(self._timeout):
                    response = await call.read()
                if response is grpc.aio.EOF or not response.created:
                    raise _WatchBroken(f"etcd did not create the watch ({response!r})")
                if response.canceled:
                    raise _WatchBroken(f"etcd refused the watch: {response.cancel_reason}")
                if failures:
                    log.info("etcd watch on %r resumed at revision %d", prefix, next_revision)
                failures, delay = 0, _WATCH_BACKOFF_MIN
                while True:
                    if response.compact_revision:
                        compacted = response.compact_revision
                        items, revision = await self.range(prefix)
                        log.warning(
                            "etcd watch on %r needed revision %d, compacted up to %d; "
                            "resynced at revision %d",
                            prefix,
                            next_revision,
                            compacted,
                            revision,
                        )
                        next_revision = revision + 1
                        yield Resync(items, revision, compacted)
                        break
                    if response.canceled:
                        raise _WatchBroken(f"etcd cancelled the watch: {response.cancel_reason}")
                    for event in response.events:
                        next_revision = event.kv.mod_revision + 1
                        yield self._event_from(event, prev_kv)
                    if not response.events and not response.created:
                        # A progress notification: nothing under the prefix changed up to
                        # this revision, so a reconnect may start after it.
                        next_revision = max(next_revision, response.header.revision + 1)
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        raise _WatchBroken("etcd closed the watch stream")
            except asyncio.CancelledError:
                # Closing the channel cancels its calls; that ends the watch quietly, while a
                # cancellation of the consumer's own task propagates as usual.
                task = asyncio.current_task()
                if self._is_closed() and task is not None and not task.cancelling():
                    return
                raise
            except (grpc.aio.AioRpcError, EdgeError, _WatchBroken, TimeoutError) as err:
                if self._is_closed():
                    return
                details = err.details() if isinstance(err, grpc.aio.AioRpcError) else str(err)
                failures += 1
                # One warning per outage; the retries of a longer one only at debug level.
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "etcd watch on %r interrupted (%s); reopening from revision %s",
                    prefix,
                    _one_line(details or "") or type(err).__name__,
                    next_revision,
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                delay = min(delay * 2, _WATCH_BACKOFF_MAX)
            finally:
                if call is not None:
                    call.cancel()

    # -- maintenance -------------------------------------------------------------------------

    async def compact(self, revision: int, *, physical: bool = True) -> None:
        """Discard the history before `revision` (watches from older revisions then resync).

        Args:
            revision: Oldest revision to keep.
            physical: Wait until the data is really gone (what tests of compaction want).
        """
        request = rpc.CompactionRequest(revision=revision, physical=physical)
        await self._unary(self._kv.Compact, request, "compact", f"revision {revision}")

    async def close(self) -> None:
        """Close the channel; running watches end quietly. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._client.close()

    # -- plumbing ------------------------------------------------------------------------------

    async def _unary(self, method: Any, request: Any, verb: str, what: str) -> Any:
        """One unary call with the store's deadline and our exception types."""
        try:
            return await method(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as err:
            raise self._error(err, verb, what) from err

    def _error(self, err: grpc.aio.AioRpcError, verb: str, what: str) -> EdgeError:
        details = _one_line(err.details() or "")
        where = f"etcd at {self._endpoint}"
        code = err.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            return Unavailable(f"{where} is unavailable, could not {verb} {what}: {details}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(f"{where} did not {verb} {what} within {self._timeout:g}s")
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFound(f"{where}: {what} not found ({details})")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidArgument(f"{where} refused to {verb} {what}: {details}")
        if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE):
            return FailedPrecondition(f"{where} could not {verb} {what}: {details}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return ResourceExhausted(f"{where} is out of resources to {verb} {what}: {details}")
        return EdgeError(f"{where} failed to {verb} {what}: {code.name}: {details}")

    def _key(self, key: str) -> bytes:
        return self._ns + key.encode()

    def _strip(self, raw: bytes) -> str:
        return raw[len(self._ns) :].decode()

    def _prefix_range(self, prefix: str) -> tuple[bytes, bytes]:
        start = self._key(prefix)
        if not start:
            return b"\0", b"\0"  # etcd's spelling of "every key"
        return start, _prefix_end(start)

    def _kv_from(self, kv: Any) -> KeyValue:
        return KeyValue(
            key=self._strip(kv.key),
            value=kv.value,
            create_revision=kv.create_revision,
            mod_revision=kv.mod_revision,
            version=kv.version,
            lease=kv.lease,
        )

    def _event_from(self, event: Any, prev_kv: bool) -> WatchEvent:
        kv = event.kv
        prev = event.prev_kv.value if prev_kv and event.HasField("prev_kv") else None
        return WatchEvent(
            type=EventType.DELETE if event.type == rpc.Event.DELETE else EventType.PUT,
            key=self._strip(kv.key),
            value=kv.value,
            mod_revision=kv.mod_revision,
            create_revision=kv.create_revision,
            version=kv.version,
            prev_value=prev,
        )

    def _compare(self, compare: Compare) -> Any:
        if isinstance(compare, ModRevisionIs):
            return rpc.Compare(
                result=rpc.Compare.EQUAL,
                target=rpc.Compare.MOD,
                key=self._key(compare.key),
                mod_revision=compare.revision,
            )
        return rpc.Compare(
            result=rpc.Compare.EQUAL,
            target=rpc.Compare.VALUE,
            key=self._key(compare.key),
            value=compare.value,
        )

    def _request_op(self, op: Op) -> Any:
        if isinstance(op, Put):
            put = rpc.PutRequest(key=self._key(op.key), value=op.value, lease=op.lease or 0)
            return rpc.RequestOp(request_put=put)
        if isinstance(op, Delete):
            return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._key(op.key)))
        if isinstance(op, DeletePrefix):
            start, end = self._prefix_range(op.prefix)
            delete = rpc.DeleteRangeRequest(key=start, range_end=end)
            return rpc.RequestOp(request_delete_range=delete)
        return rpc.RequestOp(request_range=rpc.RangeRequest(key=self._key(op.key)))


@dataclass(slots=True)
class _Queued:
    """A transaction waiting to be sent together with others, and where its outcome goes."""

    request: Any
    touched: set[str]
    what: str
    result: asyncio.Future[tuple[bool, int, Sequence[Any]]]


def _groupable(
    compares: Sequence[Compare], success_ops: Sequence[Op], failure_ops: Sequence[Op]
) -> bool:
    """Whether a transaction may be nested in a group commit: exact keys, few enough ops."""
    if max(len(compares), len(success_ops), len(failure_ops)) > _GROUP_MAX_OPS:
        return False
    return not any(isinstance(op, DeletePrefix) for op in (*success_ops, *failure_ops))


class _WatchBroken(Exception):
    """The watch stream ended or was refused in a way worth reopening."""


def _retry_delay(attempt: int) -> float:
    """Seconds before retry `attempt` (2, 3, ...) of a lost race: jittered, growing, capped."""
    ceiling = min(_RETRY_CAP, _RETRY_BASE * 2 ** min(attempt - 1, 8))
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not security


def _op_key(x: Compare | Op) -> str:
    return x.prefix + "*" if isinstance(x, DeletePrefix) else x.key


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with `prefix` (etcd's range_end)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # all 0xff: everything from prefix on
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _parse_endpoint(endpoint: str) -> tuple[str, int]:
    text = endpoint.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme == "https":
        raise InvalidArgument(f"etcd endpoint {endpoint!r}: TLS to etcd is not supported yet")
    try:
        port = parts.port or 2379
    except ValueError:
        raise InvalidArgument(f"etcd endpoint {endpoint!r} has an invalid port") from None
    if parts.scheme != "http" or not parts.hostname:
        raise InvalidArgument(f"etcd endpoint {endpoint!r} is not http://host:port")
    return parts.hostname, port


def _connect_failure(err: grpc.aio.AioRpcError, timeout: float) -> str:
    """The gist of a failed probe; gRPC's own text repeats the address and the code."""
    details = err.details() or ""
    if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within {timeout:g}s"
    if "connection refused" in details.lower():
        return "connection refused"
    return _one_line(details) or err.code().name


def _one_line(text: str) -> str:
    return " ".join(text.split())
