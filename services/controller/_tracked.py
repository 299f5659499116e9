"""Tracked state: the lifecycle of objects whose real work a worker does (controller.md §5).

Cloudlets now, ClusterInsts and AppInsts next: create/update/delete commit the requested
state (`CREATE_REQUESTED`, ...) in one etcd transaction; then a worker does the work, either
a CCRM called over gRPC or the CRM on the edge site reporting `*Info` objects over notify;
the API call streams `Result` progress lines until a terminal state, and undoes its commit
when the work fails. This module holds what every tracked type shares:

- `CallContext`: the request's CRM override (taken off the object, never stored, §5.6), the
  undo flag (§5.7) and the progress stream reused by an undo;
- `streamed`: runs an operation as a task and turns its progress lines into the RPC's
  `Result` stream (errors end the stream with the gRPC status);
- `wait_for_info`: the original's `WaitFor<Obj>Info` over the object's Redis channel, with
  the timeout rules of §5.4;
- `TrackedRuntime`: the daemon's runtime plus Redis progress, the CCRM clients and this
  controller's id, which the tracked APIs need;
- `Recovery`: operations a dead controller left in transient states (§5.8) are driven to a
  terminal state by the survivors (or by the same controller after its restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from edgeproto import common_pb2, controller_pb2, result_pb2
from google.protobuf.message import Message

from edge_cloud.errors import (
    DeadlineExceeded,
    EdgeError,
    FailedPrecondition,
    PlatformPermanentError,
    Unavailable,
)
from edge_cloud.objects import keys, registry
from edge_cloud.store import Get
from services.controller._ccrm import CcrmClients
from services.controller._engine import Txn
from services.controller._progress import (
    OpStream,
    Progress,
    StatusLines,
    StreamStart,
    Subscription,
    op_owner,
    stream_key,
)
from services.controller._runtime import Runtime
from services.controller._sync import Caches
from services.controller.config import ControllerConfig

__all__ = [
    "ALREADY_UNDER_DELETION",
    "BUSY_DELETION",
    "DELETE_STATES",
    "TRANSIENT",
    "CallContext",
    "InfoWait",
    "Recoverable",
    "Recovery",
    "Refresh",
    "TrackedOps",
    "TrackedRuntime",
    "TrackedServices",
    "seconds",
    "streamed",
    "streamed_rpc",
    "tracked",
    "validate_delete_state",
    "wait_for_info",
]

log = logging.getLogger(__name__)

TS = common_pb2
TRANSIENT: Final = frozenset(
    {
        TS.CREATE_REQUESTED,
        TS.CREATING,
        TS.CREATING_DEPENDENCIES,
        TS.UPDATE_REQUESTED,
        TS.UPDATING,
        TS.DELETE_REQUESTED,
        TS.DELETING,
        TS.DELETE_PREPARE,
    }
)
"""States in which a worker (or the controller) is still busy with the object."""
DELETE_STATES: Final = frozenset(
    {TS.DELETE_REQUESTED, TS.DELETING, TS.DELETE_PREPARE, TS.DELETE_DONE}
)
ALREADY_UNDER_DELETION: Final = "busy, already under deletion"
BUSY_DELETION: Final = "busy, cannot be deleted"
CONTROLLER: Final = registry.by_class(controller_pb2.Controller)


def seconds(duration_ns: int) -> float:
    """A Settings duration (Go nanoseconds) in seconds."""
    return duration_ns / 1e9


# --- the call context ----------------------------------------------------------------------


@dataclass(slots=True)
class CallContext:
    """How one API call (or its undo) runs.

    Attributes:
        override: The CRMOverride taken from the request.
        undo: This is the undo of a failed operation: skip state validation, keep the
            caller's stream.
        skip_cloudlet_ready_check: Cascaded deletes of a cloudlet's instances.
        streams: Progress streams an undo reuses, by stream name.
    """

    override: int = TS.NO_OVERRIDE
    undo: bool = False
    skip_cloudlet_ready_check: bool = False
    streams: dict[str, OpStream] = field(default_factory=dict)

    def take_override(self, obj: Message) -> None:
        """Move the object's `crm_override` here and zero it on the object (never stored).

        A default (zero) override leaves the context's override as it is, as the original's
        `SetOverride` does.
        """
        value = int(getattr(obj, "crm_override", 0))
        if value == TS.NO_OVERRIDE:
            return
        self.override = value
        obj.ClearField("crm_override")

    def with_undo(self, stream: OpStream | None = None) -> CallContext:
        """A copy for the undo of this call, reusing `stream`."""
        out = replace(self, undo=True, streams=dict(self.streams))
        if stream is not None:
            out.streams[stream.name] = stream
        return out

    @property
    def ignore_crm(self) -> bool:
        """IGNORE_CRM or IGNORE_CRM_AND_TRANSIENT_STATE: no worker call at all."""
        return self.override in (TS.IGNORE_CRM, TS.IGNORE_CRM_AND_TRANSIENT_STATE)

    @property
    def ignore_transient(self) -> bool:
        """IGNORE_TRANSIENT_STATE or IGNORE_CRM_AND_TRANSIENT_STATE."""
        return self.override in (TS.IGNORE_TRANSIENT_STATE, TS.IGNORE_CRM_AND_TRANSIENT_STATE)

    @property
    def ignore_crm_errors(self) -> bool:
        """IGNORE_CRM_ERRORS: worker failures count as success."""
        return self.override == TS.IGNORE_CRM_ERRORS


def validate_delete_state(cctx: CallContext, obj_name: str, state: int) -> None:
    """Refuse to delete an object that is busy (the original's `validateDeleteState`).

    Raises:
        FailedPrecondition: `<Obj> busy, already under deletion` or `<Obj> busy, cannot be
            deleted` (unless undoing, or a transient-state override is given).
    """
    if cctx.undo or cctx.ignore_transient:
        return
    if state in DELETE_STATES:
        raise FailedPrecondition(f"{obj_name} {ALREADY_UNDER_DELETION}")
    if state in TRANSIENT:
        raise FailedPrecondition(f"{obj_name} {BUSY_DELETION}")


# --- streaming an operation to its caller --------------------------------------------------

Sink = Callable[[str], None]


async def streamed(
    work: Callable[[Sink], Coroutine[Any, Any, None]],
) -> AsyncIterator[result_pb2.Result]:
    """Run `work(sink)` as a task; yield each line it sinks as a `Result`, in order.

    The task's exception, if any, is raised after its last line (the RPC ends with that
    status). If the caller goes away the task is cancelled; operations clean up after a
    cancellation themselves (bounded, shielded), see the Cloudlet operations.

    Args:
        work: The operation; it calls `sink(line)` for each progress line.

    Yields:
        One `Result` per line.
    """
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    task = asyncio.create_task(work(queue.put_nowait))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while True:
            line = await queue.get()
            if line is None:
                break
            yield result_pb2.Result(message=line)
        await task
    finally:
        if not task.done():
            task.cancel()
            # Let the operation finish its (bounded) cleanup even if we are cancelled again
            # meanwhile: an abandoned cleanup would leave the object in a transient state.
            cancelled = False
            while not task.done():
                try:
                    await asyncio.wait({task})
                except asyncio.CancelledError:
                    cancelled = True
            if not task.cancelled():
                task.exception()  # retrieved: the caller is gone, nobody else will see it
            if cancelled:
                raise asyncio.CancelledError


def streamed_rpc(operation: str, doc: str) -> Any:
    """A server-streaming servicer method running `self._ops.<operation>(request, sink)`.

    The servicer keeps its operations object in `_ops`, None when the Controller runs
    without Redis progress tracking (the call is refused with UNAVAILABLE). The lines the
    operation sinks are streamed as `Result`s (`streamed`).

    Args:
        operation: The name of the operations method (`create`, `delete`, ...).
        doc: The servicer method's docstring.

    Returns:
        The method, an async generator function (typed `Any`: it takes the place of a
        generated servicer method, whose request type differs per RPC).
    """

    async def rpc(self: Any, request: Any, context: Any) -> AsyncIterator[result_pb2.Result]:
        ops = self._ops
        if ops is None:
            raise Unavailable("this Controller runs without Redis progress tracking")
        run = getattr(ops, operation)
        async for result in streamed(lambda sink: run(request, sink)):
            yield result

    rpc.__doc__ = doc
    return rpc


# --- waiting for a worker's report ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InfoWait:
    """What a wait for an Info object looks for.

    Attributes:
        target: The state that means done.
        error: The state that means failed.
        transitions: States in which the worker is still busy: a timeout then is success
            with a "still in progress" line (no undo), as in the original.
        state_name: The CamelName of a state, for messages.
        show: The Show RPC to suggest (`ShowCloudlet`).
        after: A reported target counts only once this state was seen: for waits whose
            target is also the state before the work (an on-edge cloudlet update waits
            for READY, and its CloudletInfo is READY until the CRM starts upgrading).
    """

    target: int
    error: int
    transitions: frozenset[int]
    state_name: Callable[[int], str]
    show: str
    after: int | None = None


Refresh = Callable[[], Awaitable[tuple[int, Sequence[str]]]]
"""Reads the stored state (and errors) from etcd and brings the caches up to that read."""

#: Seconds between reads of the stored state while no report arrives.
REFRESH_INTERVAL: Final = 1.0


def _worker_errors(errors: Sequence[str]) -> EdgeError:
    if len(errors) == 1:
        return PlatformPermanentError(errors[0])
    return PlatformPermanentError(f"Encountered failures: {', '.join(errors)}")


async def wait_for_info(
    spec: InfoWait,
    *,
    current: int,
    subscription: Subscription | None,
    decode: Callable[[bytes], Message],
    send: Callable[[str], Awaitable[None]],
    success_msg: str,
    timeout: float,  # noqa: ASYNC109 - the Settings timeout of the operation
    refresh: Refresh | None = None,
) -> None:
    """Wait until the worker reports the target state (the original's `WaitFor<Obj>Info`).

    The channel is subscribed after the operation's commit, so a worker can finish before
    the subscription exists and its reports are gone. With `refresh`, the stored state is
    read from etcd once subscribed and again whenever the channel is quiet for a second,
    so such an operation still ends promptly; on success the caches are brought up to the
    stored state, so a Show right after the call already lists it (reports are merged into
    etcd before they are published).

    Args:
        spec: Target, error and transition states.
        current: The state read from etcd after subscribing (closes the race with a
            report published before the subscription existed).
        subscription: The object's channel.
        decode: Bytes published on the channel → the Info object (with `state`,
            `errors`, `status`).
        send: Progress line sink; new status messages are forwarded.
        success_msg: Sent when the target is reached ("" for none).
        timeout: Seconds before giving up.
        refresh: Reads the stored state (see `Refresh`); None waits on the channel only.

    Raises:
        PlatformPermanentError: The worker reported the error state (its errors).
        DeadlineExceeded: `Timed out; expected state <T> but is <S>`.
        Unavailable: No channel to wait on.
    """
    if current == spec.target:
        if success_msg:
            await send(success_msg)
        return
    if subscription is None:
        raise Unavailable("wait for info missing redis message channel")
    state = current
    seen_after = spec.after is None
    lines = StatusLines()

    async def stored() -> bool:
        """Read the stored state; True when it is the target (raises on the error)."""
        nonlocal state, seen_after
        assert refresh is not None  # noqa: S101 - narrowing for mypy
        state, errors = await refresh()
        if state == spec.after:
            seen_after = True
        if state == spec.error:
            raise _worker_errors(list(errors))
        return state == spec.target

    async def done() -> None:
        if success_msg:
            await send(success_msg)

    if refresh is not None and await stored():
        await done()
        return
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if state in spec.transitions:
                await send(
                    f"Timed out while work still in progress state {spec.state_name(state)}. "
                    f"Please use {spec.show} to check current status"
                )
                return
            raise DeadlineExceeded(
                f"Timed out; expected state {spec.state_name(spec.target)} but is "
                f"{spec.state_name(state)}"
            )
        payload = await subscription.get(min(remaining, REFRESH_INTERVAL))
        if payload is None:
            if refresh is not None and await stored():
                await done()
                return
            continue
        if payload is Subscription.CLOSED:
            await send(
                f"Failed to get progress messages. Please use {spec.show} to check current status"
            )
            return
        assert isinstance(payload, bytes)  # noqa: S101 - narrowing for mypy
        try:
            info: Any = decode(payload)
        except EdgeError as err:
            log.warning("ignoring an undecodable report on %s: %s", subscription.channel, err)
            continue
        state = int(info.state)
        for line in lines.new(info.status.msgs):
            await send(line)
        if state == spec.after:
            seen_after = True
        if state == spec.error:
            raise _worker_errors(list(info.errors))
        if state == spec.target and seen_after:
            if refresh is not None:
                await refresh()  # the caches catch up with the merged report
            await done()
            return


# --- the runtime of tracked APIs -----------------------------------------------------------


@dataclass(slots=True)
class TrackedServices:
    """What tracked operations need besides the engine.

    Attributes:
        progress: Redis streams and channels.
        ccrm: The CCRM clients.
        controller_id: `<hostname>@<external API address>`, stamped on CloudletInfo.
        running: Stream names of operations this process is running now.
        info_cleanup_timeout: Seconds a deleted CRM-on-edge cloudlet's CRM gets to
            disconnect before its CloudletInfo is left in place (the original's 5 min).
    """

    progress: Progress
    ccrm: CcrmClients
    controller_id: str
    running: set[str] = field(default_factory=set)
    info_cleanup_timeout: float = 300.0
    _idle: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    @contextlib.contextmanager
    def operation(self, stream: OpStream) -> Iterator[None]:
        """Mark an operation as running here (recovery leaves it alone meanwhile)."""
        added = stream.name not in self.running
        self.running.add(stream.name)
        self._idle.clear()
        try:
            yield
        finally:
            if added:
                self.running.discard(stream.name)
            if not self.running:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:  # noqa: ASYNC109 - bounded shutdown
        """Wait until no operation runs here (their cleanup done), at most `timeout` s.

        Returns:
            Whether it became idle in time.
        """
        if not self.running:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


class TrackedRuntime(Runtime):
    """The Controller runtime with the tracked-state services (Redis, CCRMs) attached.

    Args:
        config: The daemon's configuration.
    """

    def __init__(self, config: ControllerConfig) -> None:
        super().__init__(config)
        self._tracked: TrackedServices | None = None

    def attach_tracked(self, services: TrackedServices) -> None:
        """Make Redis progress and the CCRM clients available (during start-up)."""
        self._tracked = services

    @property
    def tracked(self) -> TrackedServices:
        """The tracked-state services.

        Raises:
            Unavailable: The Controller has not finished starting.
        """
        if self._tracked is None:
            raise Unavailable("the Controller is still starting; retry shortly")
        return self._tracked


def tracked(runtime: Runtime) -> TrackedServices:
    """The tracked-state services of a runtime.

    Raises:
        Unavailable: Not started yet, or a runtime without Redis and CCRM wiring.
    """
    if isinstance(runtime, TrackedRuntime):
        return runtime.tracked
    raise Unavailable("this Controller runs without Redis progress tracking")


class TrackedOps:
    """What the create/update/delete operations of every tracked type share.

    Args:
        runtime: The runtime with tracked-state services.
    """

    def __init__(self, runtime: TrackedRuntime) -> None:
        self._rt = runtime

    def _stream(self, cctx: CallContext, key: Message, sink: Sink) -> OpStream:
        """The object's progress stream: the undo's reused one, or a new one."""
        name = stream_key(key)
        existing = cctx.streams.get(name)
        if existing is not None:
            return existing.copy(sink)
        return self._rt.tracked.progress.new_stream(name, sink)

    def _forward(
        self, stream: OpStream, receive: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        """An `on_info` for CCRM calls: `receive` each info, forward its new status lines."""
        lines = StatusLines()

        async def on_info(info: Any) -> None:
            await receive(info)
            for line in lines.new(info.status.msgs):
                await stream.send(line)

        return on_info

    async def _stored(self, otype: Any, key: Message) -> tuple[int, Sequence[str]]:
        """The object's state and errors as stored in etcd now, with the caches caught up.

        One read at etcd's current revision, then a wait for the caches to reach it: the
        caller can go on reading the caches and sees at least what etcd held. A missing
        (or DELETE_DONE) object is NOT_PRESENT, what a waiting delete looks for.
        """
        engine = self._rt.engine
        skey = keys.store_key(otype.name, keys.key_string(key))
        result = await engine.store.txn([], [Get(skey)])
        await engine.sync.wait_for_revision(result.revision)
        obj = self._rt.caches.get(otype, keys.key_string(key))
        if obj is None or obj.state == TS.DELETE_DONE:
            return TS.NOT_PRESENT, ()
        return int(obj.state), list(obj.errors)

    async def _set_state(
        self,
        otype: Any,
        key: Message,
        state: int,
        *,
        errors: list[str] | None = None,
        only_from: frozenset[int] | None = None,
        clear_prepare: bool = False,
    ) -> None:
        """Set a stored object's state (and errors) in one transaction, if it still exists.

        Args:
            otype: Its type.
            key: Its key.
            state: The new state.
            errors: Replace its errors with these.
            only_from: Change it only from one of these states.
            clear_prepare: Also clear its `delete_prepare`.
        """

        def fn(txn: Txn) -> None:
            obj = txn.get(otype, key)
            if obj is None:
                return
            if only_from is not None and obj.state not in only_from:
                return
            changed = type(obj)()
            changed.CopyFrom(obj)
            changed.state = state
            if errors is not None:
                del changed.errors[:]
                changed.errors.extend(errors)
            if clear_prepare and hasattr(changed, "delete_prepare"):
                changed.delete_prepare = False
            if changed != obj:
                txn.put(changed)

        skey = keys.store_key(otype.name, keys.key_string(key))
        await self._rt.engine.apply(fn, reads=[skey], from_caches=True)

    async def _run(
        self,
        stream: OpStream,
        revision: int | None,
        work: Callable[[], Coroutine[Any, Any, None]],
        *,
        on_error: Callable[[BaseException], Awaitable[None]],
        cleanup_on_success: bool = False,
        cleanup_on_error: Callable[[], Awaitable[bool]] | None = None,
        subscribe: bool = False,
        defer: bool = False,
    ) -> None:
        """Start the stream at `revision`, run `work`, handle failure, end the stream.

        Cancellation (the caller went away) runs `on_error` shielded, so the object still
        reaches a terminal state. With `defer` (work that waits for nothing outside this
        call), the stream is written once, after the work: one Redis round trip instead of
        one per line and marker (`OpStream.finish`).
        """
        services = self._rt.tracked
        with services.operation(stream):
            error: BaseException | None = None
            try:
                await stream.start(revision or 0, subscribe=subscribe, defer=defer)
                await work()
                await stream.finish()
            except asyncio.CancelledError as err:
                error = err
                await asyncio.shield(on_error(err))
                raise
            except Exception as err:
                error = err
                await on_error(err)
                raise
            finally:
                cleanup = cleanup_on_success if error is None else False
                if error is not None and cleanup_on_error is not None:
                    with contextlib.suppress(Exception):
                        cleanup = await cleanup_on_error()
                await asyncio.shield(stream.stop(error, cleanup=cleanup))


# --- recovery of orphaned operations --------------------------------------------------------


class Recoverable(Protocol):
    """One tracked type's part in recovery."""

    def stuck(self, caches: Caches) -> list[tuple[str, Message]]:
        """Objects in transient states, with their stream names."""
        ...

    async def recover(self, obj: Message, start: StreamStart, reason: str) -> None:
        """Drive one orphaned object to a terminal state (or leave it to its worker)."""
        ...


def live_controllers(caches: Caches) -> set[str]:
    """Ids of the controllers whose leased record is in etcd."""
    return {f"{c.hostname}@{c.key.addr}" for _, c in caches.items(CONTROLLER)}


class Recovery:
    """Finds operations whose controller is gone and hands them to their type's handler.

    An operation belongs to the controller named in its stream's start marker. It is
    orphaned when that controller is this one but the operation is not running here (we
    restarted), or when that controller has had no live record for two passes in a row
    (a peer died; one pass could be a lease being renewed). Operations started by original
    controllers (no owner in the id), ended ones (a CRM that restarts reports INIT again on
    a long-Ready cloudlet) and objects without a stream are left alone.

    Args:
        runtime: The runtime.
        handlers: One per tracked type.
        interval: Seconds between passes of `run`.
    """

    def __init__(
        self, runtime: TrackedRuntime, handlers: Sequence[Recoverable], interval: float = 30.0
    ) -> None:
        self._rt = runtime
        self._handlers = list(handlers)
        self._interval = interval
        self._suspects: set[str] = set()

    async def run_once(self) -> int:
        """One pass; returns how many objects were handed to their handlers."""
        services = self._rt.tracked
        caches = self._rt.caches
        live = live_controllers(caches)
        suspects: set[str] = set()
        handled = 0
        for handler in self._handlers:
            for name, obj in handler.stuck(caches):
                if name in services.running:
                    continue
                try:
                    start = await services.progress.open_operation(name)
                except Exception as err:
                    log.warning("recovery: cannot read progress stream %s: %s", name, err)
                    continue
                if start is None:
                    continue
                owner = op_owner(start.op_id)
                if owner is None:
                    continue
                if owner == services.controller_id:
                    reason = f"controller {owner} restarted during the operation"
                elif owner in live:
                    continue
                else:
                    suspects.add(name)
                    if name not in self._suspects:
                        continue
                    reason = f"controller {owner} is gone"
                try:
                    await handler.recover(obj, start, reason)
                    handled += 1
                except EdgeError as err:
                    log.warning("recovery of %s failed: %s", name, err)
        self._suspects = suspects
        return handled

    async def run(self) -> None:
        """A pass now, then one every `interval` seconds, until cancelled."""
        while True:
            try:
                await self.run_once()
            except (EdgeError, OSError) as err:
                log.warning("recovery pass failed: %s", err)
            await asyncio.sleep(self._interval)
