"""The standard server interceptor: error mapping, access log, request context, metrics."""

from __future__ import annotations

import contextlib
import inspect
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeAlias, TypeVar, cast

import grpc
import grpc.aio
from prometheus_client import Counter, Histogram

from edge_cloud import logs
from edge_cloud.errors import EdgeError

__all__ = ["StandardInterceptor", "standard_interceptors"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_AnyHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

access_log = logging.getLogger("edge_cloud.access")
log = logging.getLogger("edge_cloud.server")

HANDLED: Final = Counter(
    "edge_grpc_server_handled_total",
    "RPCs completed on the server, by final status code",
    ["service", "method", "code"],
)
HANDLING_SECONDS: Final = Histogram(
    "edge_grpc_server_handling_seconds",
    "Time from the start of an RPC to its status (a stream's whole life for streams)",
    ["service", "method"],
    # DME calls take well under a millisecond; the default buckets start at 5 ms.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Probes and tooling; logging each at INFO would bury the real traffic.
_QUIET_SERVICES: Final = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
)
_REQUEST_ID_KEY: Final = "x-request-id"


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
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap(handler, _Rpc(self.service, method))
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class _Rpc:
    """What the wrappers of one method need to know about it."""

    def __init__(self, service: str, method: str) -> None:
        self.method = method
        self.service = service
        self.handled: dict[grpc.StatusCode, Counter] = {}
        self.seconds = HANDLING_SECONDS.labels(service, method)
        grpc_service = method.lstrip("/").partition("/")[0]
        self.access_level = logging.DEBUG if grpc_service in _QUIET_SERVICES else logging.INFO

    @contextlib.asynccontextmanager
    async def observe(self, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
        """Run the body as this RPC: map its errors, then log and count the outcome.

        The outcome is recorded before `context.abort` sends the status, so a client that
        sees an error also sees it counted.
        """
        start = time.perf_counter()
        with logs.context(request_id=_request_id(context), method=self.method):
            try:
                yield
            except grpc.aio.AbortError:
                # the handler aborted by itself: the status is already on the context
                code = _code(context) or grpc.StatusCode.UNKNOWN
                self._record(code, context.details() or "", context, start)
                raise
            except Exception as error:
                edge = _as_edge_error(error)
                if edge is not None:
                    code, details = edge.code, edge.message
                else:
                    code = grpc.StatusCode.INTERNAL
                    details = f"internal error (id {secrets.token_hex(4)})"
                    log.exception("%s in %s", details, self.method)
                self._record(code, details, context, start)
                await context.abort(code, details)
            except BaseException:
                # cancelled by the client or the server's shutdown: pass it on untouched
                self._record(grpc.StatusCode.CANCELLED, "", context, start)
                raise
            else:
                code = _code(context) or grpc.StatusCode.OK
                details = "" if code is grpc.StatusCode.OK else context.details() or ""
                self._record(code, details, context, start)

    def _record(
        self,
        code: grpc.StatusCode,
        details: str,
        context: grpc.aio.ServicerContext[Any, Any],
        start: float,
    ) -> None:
        elapsed = time.perf_counter() - start
        counter = self.handled.get(code)
        if counter is None:
            counter = self.handled[code] = HANDLED.labels(self.service, self.method, code.name)
        counter.inc()
        self.seconds.observe(elapsed)
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
    return secrets.token_hex(8)


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


def _wrap_coroutine(
    behavior: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]], rpc: _Rpc
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]:
    """Wrap a unary-response handler, or a streaming one that writes with `context.write`."""

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async with rpc.observe(context):
            response = await behavior(request, context)
        return response

    return handle


def _wrap_generator(
    behavior: Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncGenerator[Any, None]],
    rpc: _Rpc,
) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncGenerator[Any, None]]:
    """Wrap a handler that yields its responses."""

    async def handle(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncGenerator[Any, None]:
        async with rpc.observe(context), contextlib.aclosing(behavior(request, context)) as stream:
            async for response in stream:
                yield response

    return handle
