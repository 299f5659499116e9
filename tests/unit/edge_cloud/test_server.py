from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from edge_cloud import errors, logs
from edge_cloud.config import CommonConfig, option
from edge_cloud.server import (
    Daemon,
    HttpListener,
    StandardInterceptor,
    bind,
    metrics_app,
    new_server,
    serve,
)

SERVICE = "edge.test.Unit"
Context = grpc.aio.ServicerContext[Any, Any]


async def eventually(check: Callable[[], Any], within: float = 5.0) -> None:
    """Retry an assertion until it holds or `within` seconds pass; then raise its error."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            check()
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.01)


def handled(method: str, code: str, service: str = "unit") -> float:
    value = REGISTRY.get_sample_value(
        "edge_grpc_server_handled_total",
        {"service": service, "method": f"/{SERVICE}/{method}", "code": code},
    )
    return value or 0.0


class Servicer:
    """Handlers in every shape the interceptor must wrap."""

    def __init__(self) -> None:
        self.hang = asyncio.Event()
        self.started_hanging = asyncio.Event()
        self.seen_context: dict[str, object] = {}
        self.endless_closed = asyncio.Event()

    async def ok(self, request: bytes, context: Context) -> bytes:
        self.seen_context = dict(logs.bound())
        return request

    async def not_found(self, request: bytes, context: Context) -> bytes:
        raise errors.NotFound("Flavor key {name: x1} not found")

    async def boom(self, request: bytes, context: Context) -> bytes:
        raise RuntimeError("secret internals")

    async def self_abort(self, request: bytes, context: Context) -> bytes:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")

    async def set_code(self, request: bytes, context: Context) -> bytes:
        context.set_code(grpc.StatusCode.ALREADY_EXISTS)
        context.set_details("exists")
        return b""

    async def stream(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        for i in range(3):
            yield b"%d" % i
        if request == b"fail":
            raise errors.Unavailable("etcd is down")

    async def grouped(self, request: bytes, context: Context) -> bytes:
        async def fail() -> None:
            raise errors.AlreadyExists("App key {name: a} already exists")

        async with asyncio.TaskGroup() as group:
            group.create_task(fail())
        return b""

    async def endless(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick"
                await asyncio.sleep(0.01)
        finally:
            self.endless_closed.set()

    async def write_stream(self, request: bytes, context: Context) -> None:
        await context.write(b"a")
        await context.write(b"b")

    async def hang_forever(self, request: bytes, context: Context) -> bytes:
        self.started_hanging.set()
        await self.hang.wait()
        return b""

    def sync_ok(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    def handlers(self) -> grpc.GenericRpcHandler:
        unary = grpc.unary_unary_rpc_method_handler
        stream = grpc.unary_stream_rpc_method_handler
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Ok": unary(self.ok),
                "NotFound": unary(self.not_found),
                "Boom": unary(self.boom),
                "SelfAbort": unary(self.self_abort),
                "SetCode": unary(self.set_code),
                "Stream": stream(self.stream),
                "WriteStream": stream(self.write_stream),
                "Endless": stream(self.endless),
                "Grouped": unary(self.grouped),
                "Hang": unary(self.hang_forever),
            },
        )


@dataclass
class Rig:
    servicer: Servicer
    channel: grpc.aio.Channel

    def unary(self, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        return self.channel.unary_unary(f"/{SERVICE}/{method}")

    def stream(self, method: str) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
        return self.channel.unary_stream(f"/{SERVICE}/{method}")


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    servicer = Servicer()
    server = new_server("unit")
    server.add_generic_rpc_handlers([servicer.handlers()])
    port = bind(server, "127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Rig(servicer, channel)
    finally:
        await server.stop(None)


async def test_success_is_counted_and_logged(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_cloud.access")
    before = handled("Ok", "OK")
    assert await rig.unary("Ok")(b"hi", metadata=(("x-request-id", "req-42"),)) == b"hi"
    assert handled("Ok", "OK") == before + 1
    [line] = [r for r in caplog.records if r.name == "edge_cloud.access"]
    assert line.getMessage().startswith(f"/{SERVICE}/Ok OK ")
    assert line.code == "OK"  # type: ignore[attr-defined]
    assert line.peer.startswith("ipv4:127.0.0.1:")  # type: ignore[attr-defined]
    assert line.duration_ms >= 0  # type: ignore[attr-defined]
    # the handler ran with the request bound for its own log lines
    assert rig.servicer.seen_context == {"request_id": "req-42", "method": f"/{SERVICE}/Ok"}


async def test_a_request_id_is_made_up_when_none_is_sent(rig: Rig) -> None:
    await rig.unary("Ok")(b"hi")
    assert re.fullmatch(r"[0-9a-f]{16}", str(rig.servicer.seen_context["request_id"]))


async def test_edge_error_becomes_its_status(rig: Rig) -> None:
    before = handled("NotFound", "NOT_FOUND")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.unary("NotFound")(b"")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "Flavor key {name: x1} not found"
    assert handled("NotFound", "NOT_FOUND") == before + 1


async def test_unexpected_error_is_internal_with_an_id_in_the_log(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    before = handled("Boom", "INTERNAL")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.unary("Boom")(b"")
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    details = caught.value.details() or ""
    match = re.fullmatch(r"internal error \(id ([0-9a-f]{8})\)", details)
    assert match, details
    assert "secret internals" not in details
    [logged] = [r for r in caplog.records if r.name == "edge_cloud.server"]
    assert match.group(1) in logged.getMessage()
    assert logged.exc_info is not None
    assert str(logged.exc_info[1]) == "secret internals"
    assert handled("Boom", "INTERNAL") == before + 1


async def test_handlers_may_still_abort_or_set_codes_themselves(rig: Rig) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.unary("SelfAbort")(b"")
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == "not yours"
    await eventually(lambda: _check(handled("SelfAbort", "PERMISSION_DENIED") >= 1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.unary("SetCode")(b"")
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    await eventually(lambda: _check(handled("SetCode", "ALREADY_EXISTS") >= 1))


def _check(condition: bool) -> None:
    assert condition


async def test_streams_are_wrapped_too(rig: Rig) -> None:
    ok_before = handled("Stream", "OK")
    assert [m async for m in rig.stream("Stream")(b"")] == [b"0", b"1", b"2"]
    assert handled("Stream", "OK") == ok_before + 1

    received: list[bytes] = []

    async def read_all() -> None:
        async for message in rig.stream("Stream")(b"fail"):
            received.append(message)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_all()
    assert received == [b"0", b"1", b"2"]
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "etcd is down"

    assert [m async for m in rig.stream("WriteStream")(b"")] == [b"a", b"b"]
    await eventually(lambda: _check(handled("WriteStream", "OK") >= 1))


async def test_cancellation_passes_through_and_is_counted(rig: Rig) -> None:
    before = handled("Hang", "CANCELLED")
    call = rig.unary("Hang")(b"")
    await asyncio.wait_for(rig.servicer.started_hanging.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await eventually(lambda: _check(handled("Hang", "CANCELLED") == before + 1))


async def test_edge_errors_inside_task_groups_keep_their_status(rig: Rig) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.unary("Grouped")(b"")
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert caught.value.details() == "App key {name: a} already exists"


async def test_a_cancelled_stream_closes_the_handler(rig: Rig) -> None:
    before = handled("Endless", "CANCELLED")
    call = rig.stream("Endless")(b"")
    assert await call.read() == b"tick"
    call.cancel()
    await asyncio.wait_for(rig.servicer.endless_closed.wait(), 5)
    await eventually(lambda: _check(handled("Endless", "CANCELLED") == before + 1))


async def test_sync_handlers_are_left_alone() -> None:
    # grpc runs sync handlers on its thread pool, where an async wrapper cannot follow
    handler: grpc.RpcMethodHandler[bytes, bytes]
    handler = grpc.unary_unary_rpc_method_handler(Servicer().sync_ok)

    class Details:
        method = f"/{SERVICE}/Sync"
        invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()

    async def continuation(_: object) -> grpc.RpcMethodHandler[Any, Any]:
        return handler

    interceptor = StandardInterceptor("unit")
    assert await interceptor.intercept_service(continuation, Details()) is handler


async def test_unknown_methods_stay_unknown(rig: Rig) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.unary("Nope")(b"")
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED


# --- listeners ---------------------------------------------------------------------------


async def test_binding_a_taken_port_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = grpc.aio.server()
        with pytest.raises(
            errors.ConfigError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"
        ):
            bind(server, f"127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("addr", "message"),
    [
        ("nonsense", "bad listen address 'nonsense'"),
        ("192.0.2.1:0", "cannot listen on 192.0.2.1:0"),
    ],
)
async def test_bad_listen_addresses(addr: str, message: str) -> None:
    with pytest.raises(errors.ConfigError, match=re.escape(message)):
        bind(grpc.aio.server(), addr)


async def test_http_listener_on_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(errors.ConfigError, match="Address already in use"):
            await HttpListener.start(metrics_app(lambda: True), f"127.0.0.1:{port}")


# --- serve() in process ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitConfig(CommonConfig):
    """Config for the in-process daemon."""

    fail_start: bool = option(False, "raise in start()")
    fail_background: bool = option(False, "raise in a background loop")


class UnitDaemon(Daemon[UnitConfig]):
    name = "unitd"

    def __init__(self, config: UnitConfig) -> None:
        super().__init__(config)
        self.events: list[str] = []
        self.servicer = Servicer()
        self.extra: HttpListener | None = None

    def add_services(self, server: grpc.aio.Server) -> list[str]:
        server.add_generic_rpc_handlers([self.servicer.handlers()])
        self.events.append("add_services")
        return [SERVICE]

    async def start(self) -> None:
        self.events.append("start")
        if self.config.fail_start:
            raise RuntimeError("etcd unreachable")
        self.extra = await HttpListener.start(metrics_app(lambda: True), "127.0.0.1:0")

    def extra_ports(self) -> dict[str, int]:
        return {"rest": self.extra.port} if self.extra else {}

    def background(self) -> list[Coroutine[Any, Any, None]]:
        return [self.loop()]

    async def loop(self) -> None:
        self.events.append("loop")
        try:
            if self.config.fail_background:
                raise RuntimeError("watch broke")
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.events.append("loop cancelled")
            raise

    async def close(self) -> None:
        if self.extra:
            await self.extra.close()
        self.events.append("close")


async def health_status(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(reply.status)


async def run_in_background(daemon: UnitDaemon) -> tuple[asyncio.Task[None], asyncio.Event]:
    """Start serve() as a task and wait (bounded) until it is ready; returns (task, stop)."""
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(daemon, ready, stop=stop))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([task, waiter], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # serve() failed before it was ready: show why
    assert ready.is_set(), "serve() was not ready within 10s"
    return task, stop


async def test_serve_runs_the_daemon_in_order_and_stops_gracefully(tmp_path: Path) -> None:
    ready_file = tmp_path / "ready.json"
    daemon = UnitDaemon(UnitConfig(ready_file=ready_file))
    task, stop = await run_in_background(daemon)
    ports = daemon.ports
    assert set(ports) == {"api", "metrics", "rest"}
    assert json.loads(ready_file.read_text()) == ports
    assert daemon.events == ["add_services", "start", "loop"]

    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['api']}") as channel:
        serving = health_pb2.HealthCheckResponse.SERVING
        assert await health_status(channel, "") == serving
        assert await health_status(channel, SERVICE) == serving
        ok: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{SERVICE}/Ok")
        assert await ok(b"x", timeout=5) == b"x"

        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{ports['metrics']}"
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert (
                f'edge_grpc_server_handled_total{{code="OK",method="/{SERVICE}/Ok",service="unitd"}}'
                in text
            )

        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == serving
        stop.set()
        assert (
            await asyncio.wait_for(watch.read(), 5)
        ).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()

    await asyncio.wait_for(task, 10)
    assert daemon.events[-2:] == ["loop cancelled", "close"]
    assert not ready_file.exists()


async def test_nothing_is_ready_until_start_returns() -> None:
    seen: dict[str, object] = {}

    class Slow(UnitDaemon):
        async def start(self) -> None:
            # the listeners are up and their ports known, but nobody should send traffic yet
            async with grpc.aio.insecure_channel(f"127.0.0.1:{self.ports['api']}") as channel:
                seen["health"] = await health_status(channel, SERVICE)
                seen["overall"] = await health_status(channel, "")
            readyz = f"http://127.0.0.1:{self.ports['metrics']}/readyz"
            async with aiohttp.ClientSession() as http, http.get(readyz) as resp:
                seen["readyz"] = resp.status

    daemon = Slow(UnitConfig())
    task, stop = await run_in_background(daemon)
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert seen == {"health": not_serving, "overall": not_serving, "readyz": 503}
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_failed_start_still_closes_the_daemon() -> None:
    daemon = UnitDaemon(UnitConfig(fail_start=True, metrics_addr=None))
    with pytest.raises(RuntimeError, match="etcd unreachable"):
        await asyncio.wait_for(serve(daemon, stop=asyncio.Event()), 10)
    assert daemon.events == ["add_services", "start", "close"]


async def test_a_failed_background_loop_stops_the_daemon() -> None:
    daemon = UnitDaemon(UnitConfig(fail_background=True, metrics_addr=None))
    with pytest.raises(ExceptionGroup) as caught:
        await asyncio.wait_for(serve(daemon, stop=asyncio.Event()), 10)
    assert [str(e) for e in caught.value.exceptions] == ["watch broke"]
    assert daemon.events[-1] == "close"


async def test_a_taken_port_fails_before_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = UnitDaemon(UnitConfig(api_addr=f"127.0.0.1:{port}"))
        with pytest.raises(errors.ConfigError, match="Address already in use"):
            await asyncio.wait_for(serve(daemon, stop=asyncio.Event()), 10)
    assert daemon.events == ["add_services", "close"]
