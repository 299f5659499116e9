"""The standard server interceptor: error mapping, access log, request context, metrics.

It runs on every RPC of every daemon, so its per-call work is kept to what it must do: a
request id from a per-process prefix and a counter, one log-context binding, plain integer
counts that a Prometheus collector reads at scrape time (no lock, no label lookup per call),
and an access line built only when its logger would emit it. Everything that depends only
on the method (labels, access level, wrapped behaviour) is resolved once per method.
"""

from __future__ import annotations

import bisect
import contextlib
import inspect
import itertools
import logging
import os
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Final, TypeAlias, TypeVar, cast

import grpc
import grpc.aio
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_cloud import logs
from edge_cloud.errors import EdgeError

__all__ = ["StandardInterceptor", "instrument", "standard_interceptors"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_AnyHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_Ctx: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

access_log = logging.getLogger("edge_cloud.access")
log = logging.getLogger("edge_cloud.server")

HANDLED_NAME: Final = "edge_grpc_server_handled"
HANDLING_NAME: Final = "edge_grpc_server_handling_seconds"
# DME calls take well under a millisecond; the default buckets start at 5 ms.
BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)
# `le` as Prometheus' Go formatting writes these bounds: 0.0005, 1.0, 2.5, +Inf
_BUCKET_LABELS: Final = (*(repr(float(b)) for b in BUCKETS), "+Inf")

# Probes and tooling; logging each at INFO would bury the real traffic.
_QUIET_SERVICES: Final = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
)
_REQUEST_ID_KEY: Final = "x-request-id"
_OK: Final = grpc.StatusCode.OK
_CANCELLED: Final = grpc.StatusCode.CANCELLED


class _RequestIds:
    """Request ids: 8 random hex digits per process, then 8 of a counter.

    Unique enough to find one call's lines, at a fraction of `secrets.token_hex` per call;
    a forked child draws a new prefix so it does not repeat its parent's ids.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Draw a new prefix and restart the counter (at start-up and after a fork)."""
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count()

    def next(self) -> str:
        """The next id (16 hex digits)."""
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFF:08x}"


_IDS: Final = _RequestIds()
os.register_at_fork(after_in_child=_IDS.reset)


class _MethodStats:
    """Counts of one (service, method): per status code, and the latency histogram."""

    __slots__ = ("buckets", "codes", "count", "labels", "total")

    def __init__(self, service: str, method: str) -> None:
        self.labels = (service, method)
        self.codes: dict[grpc.StatusCode, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0

    def add(self, code: grpc.StatusCode, seconds: float) -> None:
        """Count one finished RPC."""
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.count += 1
        self.total += seconds


class _StatsCollector(Collector):
    """The RPC metrics, read from the plain counts at scrape time.

    `edge_grpc_server_handled_total{service,method,code}` and the
    `edge_grpc_server_handling_seconds{service,method}` histogram, as Prometheus counters
    would expose them, without the lock and label lookup those take on every call.
    """

    def __init__(self) -> None:
        self.stats: dict[tuple[str, str], _MethodStats] = {}

    def of(self, service: str, method: str) -> _MethodStats:
        """The shared counts of one method (servers of one daemon share its labels)."""
        stats = self.stats.get((service, method))
        if stats is None:
            stats = self.stats[(service, method)] = _MethodStats(service, method)
        return stats

    def collect(self) -> Iterator[Metric]:
        """The two families, from a snapshot of the counts."""
        handled = CounterMetricFamily(
            HANDLED_NAME,
            "RPCs completed on the server, by final status code",
            labels=["service", "method", "code"],
        )
        seconds = HistogramMetricFamily(
            HANDLING_NAME,
            "Time from the start of an RPC to its status (a stream's whole life for streams)",
            labels=["service", "method"],
        )
        for stats in list(self.stats.values()):
            for code, count in list(stats.codes.items()):
                handled.add_metric([*stats.labels, code.name], count)
            cumulative = list(itertools.accumulate(stats.buckets))
            seconds.add_metric(
                list(stats.labels),
                list(zip(_BUCKET_LABELS, (float(c) for c in cumulative), strict=True)),
                stats.total,
            )
        yield handled
        yield seconds


_COLLECTOR: Final = _StatsCollector()
REGISTRY.register(_COLLECTOR)


def instrument(server: grpc.aio.Server, service: str) -> grpc.aio.Server:
    """Wrap every handler registered on `server` from now on, as `StandardInterceptor` would.

    The handlers are wrapped once, when they are registered, instead of asking an
    interceptor on every call: grpc then finds a generated servicer's methods in its own
    table of registered methods and runs no Python at all before the wrapped behaviour,
    where an interceptor costs a chain of coroutines per call. Generic handlers (health,
    reflection, hand-made services) are wrapped too; their lookup stays per call, as grpc
    does it, with the wrapped handler cached per method.

    Args:
        server: A new server, before any handler is added.
        service: The daemon's name: the `service` label of the RPC metrics.

    Returns:
        `server`, whose `add_generic_rpc_handlers` and `add_registered_method_handlers`
        now wrap what they are given.
    """
    add_generic = server.add_generic_rpc_handlers
    add_registered = server.add_registered_method_handlers

    def add_generic_rpc_handlers(generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        add_generic([_WrappedGeneric(handler, service) for handler in generic_rpc_handlers])

    def add_registered_method_handlers(
        service_name: str, method_handlers: Mapping[str, _AnyHandler]
    ) -> None:
        wrapped = {
            name: _wrap(handler, _Rpc(service, f"/{service_name}/{name}"))
            for name, handler in method_handlers.items()
        }
        add_registered(service_name, wrapped)

    # grpc offers no hook at registration; replacing the two methods on this one instance
    # is the narrowest way in (the class, and every other server, stay untouched)
    server.add_generic_rpc_handlers = add_generic_rpc_handlers  # type: ignore[method-assign]
    server.add_registered_method_handlers = add_registered_method_handlers  # type: ignore[method-assign]
    return server


class _WrappedGeneric(grpc.GenericRpcHandler):
    """A generic handler whose handlers come back wrapped (once per method)."""

    def __init__(self, inner: grpc.GenericRpcHandler, service: str) -> None:
        self._inner = inner
        self._service = service
        self._wrapped: dict[str, tuple[_AnyHandler, _AnyHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> _AnyHandler | None:
        """The inner handler for the call, wrapped; None for methods it does not serve."""
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        return _wrap_once(self._wrapped, self._service, handler_call_details.method, handler)


def standard_interceptors(service: str) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors every server of a daemon gets, outermost first.

    Args:
        service: The daemon's name: the `service` label of the RPC metrics.

    Returns:
        Interceptors for `grpc.aio.server(interceptors=...)`.
    """
    return [StandardInterceptor(service)]


class StandardInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every async handler so all RPCs fail, log and count the same way.

    - `EdgeError` becomes `context.abort(error.code, error.message)`, also when a TaskGroup
      in the handler wrapped it in an exception group;
    - any other exception becomes INTERNAL "internal error (id …)", its traceback logged
      under that id, so clients see no internals and operators can find the cause;
    - cancellation (a BaseException) passes untouched and is recorded as CANCELLED;
    - one access line per RPC (method, peer, code, duration) with `request_id` and `method`
      bound for every line logged while handling it;
    - `edge_grpc_server_handled_total{service,method,code}` and a latency histogram.

    Synchronous handlers are returned unwrapped: grpc runs them on its thread pool, where
    an async wrapper cannot follow. Our servicers are all async.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        # grpc asks interceptors on every call; wrapping once per method keeps that cheap
        self._wrapped: dict[str, tuple[_AnyHandler, _AnyHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Req, _Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Req, _Resp] | None:
        """Look up the handler, then return it wrapped (None for unknown methods)."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return _wrap_once(self._wrapped, self.service, handler_call_details.method, handler)


def _wrap_once(
    cache: dict[str, tuple[_AnyHandler, _AnyHandler]],
    service: str,
    method: str,
    handler: grpc.RpcMethodHandler[_Req, _Resp],
) -> grpc.RpcMethodHandler[_Req, _Resp]:
    """The handler wrapped, reusing the wrapper made for the same handler of the method.

    grpc looks the handler up on every call; wrapping it anew each time would rebuild the
    `_Rpc` (metric children, labels) per call.
    """
    cached = cache.get(method)
    if cached is not None and cached[0] is handler:
        return cached[1]
    wrapped = _wrap(handler, _Rpc(service, method))
    cache[method] = (handler, wrapped)
    return wrapped


class _Rpc:
    """What the wrappers of one method need, resolved once: labels, counts, access level."""

    __slots__ = ("access_level", "method", "service", "stats")

    def __init__(self, service: str, method: str) -> None:
        self.method = method
        self.service = service
        self.stats = _COLLECTOR.of(service, method)
        grpc_service = method.lstrip("/").partition("/")[0]
        self.access_level = logging.DEBUG if grpc_service in _QUIET_SERVICES else logging.INFO

    def context(self, context: _Ctx) -> contextlib.AbstractContextManager[None]:
        """Bind `request_id` and `method` for every line logged while handling the call."""
        return logs.context(request_id=_request_id(context), method=self.method)

    async def failed(self, error: Exception, context: _Ctx, start: float) -> None:
        """Record a handler's exception and abort with its status (always raises).

        The outcome is recorded before `context.abort` sends the status, so a client that
        sees an error also sees it counted.
        """
        edge = _as_edge_error(error)
        if edge is not None:
            code, details = edge.code, edge.message
        else:
            code = grpc.StatusCode.INTERNAL
            details = f"internal error (id {secrets.token_hex(4)})"
            log.error("%s in %s", details, self.method, exc_info=error)
        self.record(code, details, context, start)
        await context.abort(code, details)

    def aborted(self, context: _Ctx, start: float) -> None:
        """Record a handler that aborted by itself: the status is already on the context."""
        self.record(
            _code(context) or grpc.StatusCode.UNKNOWN, context.details() or "", context, start
        )

    def finished(self, context: _Ctx, start: float) -> None:
        """Record a handler that returned: OK unless it set a code itself."""
        code = _code(context)
        if code is None or code is _OK:
            self.record(_OK, "", context, start)
        else:
            self.record(code, context.details() or "", context, start)

    def record(self, code: grpc.StatusCode, details: str, context: _Ctx, start: float) -> None:
        """Count the call, and write its access line if that level is logged."""
        elapsed = time.perf_counter() - start
        self.stats.add(code, elapsed)
        if not access_log.isEnabledFor(self.access_level):
            return
        fields: dict[str, object] = {
            "peer": context.peer(),
            "code": code.name,
            "duration_ms": round(elapsed * 1000, 3),
        }
        if details:
            fields["details"] = details
        access_log.log(
            self.access_level, "%s %s %.1fms", self.method, code.name, elapsed * 1000, extra=fields
        )


def leaves(error: BaseException) -> list[BaseException]:
    """The individual exceptions inside (possibly nested) exception groups."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def _as_edge_error(error: Exception) -> EdgeError | None:
    """The `EdgeError` to report, also when a TaskGroup in the handler wrapped it in a group."""
    found = leaves(error)
    if all(isinstance(leaf, EdgeError) for leaf in found):
        return cast(EdgeError, found[0])
    return None


def _code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode | None:
    """The code a handler set, or None: the stubs promise a code, grpc returns None if unset."""
    return cast("grpc.StatusCode | None", context.code())


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller's `x-request-id` when it sent one, so its logs and ours line up."""
    for key, value in context.invocation_metadata() or ():
        if key == _REQUEST_ID_KEY:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return _IDS.next()


def _wrap(
    handler: grpc.RpcMethodHandler[_Req, _Resp], rpc: _Rpc
) -> grpc.RpcMethodHandler[_Req, _Resp]:
    """Rebuild the handler around a wrapped behaviour of the same kind and shape."""
    kinds: tuple[tuple[Any, Callable[..., grpc.RpcMethodHandler[_Req, _Resp]]], ...] = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
    )
    for behavior, make in kinds:
        if behavior is None:
            continue
        if inspect.isasyncgenfunction(behavior):
            wrapped: Callable[..., Any] = _wrap_generator(behavior, rpc)
        elif inspect.iscoroutinefunction(behavior):
            wrapped = _wrap_coroutine(behavior, rpc)
        else:
            return handler
        return make(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class _Outcome:
    """Record how a handler ended, around its body; the handler's exception passes on.

    A class rather than a generator-based context manager: it runs on every call.
    """

    __slots__ = ("_context", "_rpc", "_start")

    def __init__(self, rpc: _Rpc, context: _Ctx, start: float) -> None:
        self._rpc = rpc
        self._context = context
        self._start = start

    async def __aenter__(self) -> None:
        """Nothing to set up: the wrapper took the start time."""

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        """Record the outcome; an exception other than an abort becomes the call's status."""
        rpc, context, start = self._rpc, self._context, self._start
        if exc is None:
            rpc.finished(context, start)
        elif isinstance(exc, grpc.aio.AbortError):
            rpc.aborted(context, start)
        elif isinstance(exc, Exception):
            await rpc.failed(exc, context, start)  # aborts: raises AbortError
        else:
            # cancelled by the client or the server's shutdown: pass it on untouched
            rpc.record(_CANCELLED, "", context, start)


def _wrap_coroutine(
    behavior: Callable[[Any, _Ctx], Awaitable[Any]], rpc: _Rpc
) -> Callable[[Any, _Ctx], Awaitable[Any]]:
    """Wrap a unary-response handler, or a streaming one that writes with `context.write`."""

    async def handle(request: Any, context: _Ctx) -> Any:
        start = time.perf_counter()
        with rpc.context(context):
            async with _Outcome(rpc, context, start):
                response = await behavior(request, context)
            return response

    return handle


def _wrap_generator(
    behavior: Callable[[Any, _Ctx], AsyncGenerator[Any, None]], rpc: _Rpc
) -> Callable[[Any, _Ctx], AsyncGenerator[Any, None]]:
    """Wrap a handler that yields its responses."""

    async def handle(request: Any, context: _Ctx) -> AsyncGenerator[Any, None]:
        start = time.perf_counter()
        with rpc.context(context):
            async with (
                _Outcome(rpc, context, start),
                contextlib.aclosing(behavior(request, context)) as stream,
            ):
                async for response in stream:
                    yield response

    return handle
