"""Listeners of a daemon: gRPC servers and ports, health and reflection, the HTTP side port."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import grpc.aio
from aiohttp import web
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from edge_cloud.config import TlsFiles, split_host_port
from edge_cloud.errors import ConfigError
from edge_cloud.server._interceptor import instrument

__all__ = ["Health", "HttpListener", "bind", "metrics_app", "new_server"]

# grpc sets SO_REUSEPORT by default, which lets a second daemon bind a port that is already
# taken and silently share its traffic. A clash must be an error instead.
_SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


def new_server(service: str) -> grpc.aio.Server:
    """A `grpc.aio` server with the standard wrapping, for the main or an extra listener.

    Args:
        service: The daemon's name, labelling the RPC metrics.

    Returns:
        An unstarted server with no ports.
    """
    # wrapped at registration rather than intercepted per call: the same behaviour as
    # `standard_interceptors`, without an interceptor chain on every RPC
    return instrument(grpc.aio.server(options=_SERVER_OPTIONS), service)


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {flag} {path}: {err.strerror}") from None


def _reason(err: OSError) -> str:
    """The kernel's words ("Address already in use") without the library's wrapping."""
    if isinstance(err, socket.gaierror) or not err.errno:
        return err.strerror or str(err)  # resolver errors have their own numbering
    return os.strerror(err.errno)


def _check_can_listen(host: str, port: int, addr: str) -> None:
    """Bind a throwaway socket first, so a taken port is one clear line and not grpc's noise.

    grpc only says "Failed to bind" and logs its own lines on stderr; the kernel's reason
    ("Address already in use") is what an operator needs. A daemon racing us for the port
    between this check and grpc's bind still fails, just less politely.
    """
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpc does
            probe.bind(sockaddr)
    except OSError as err:  # socket.gaierror included
        raise ConfigError(f"cannot listen on {addr}: {_reason(err)}") from None


def bind(server: grpc.aio.Server, addr: str, tls: TlsFiles | None = None) -> int:
    """Add a listening port to a server, with TLS (mTLS when a CA is given) or in plaintext.

    Args:
        server: The unstarted server.
        addr: `host:port`; port 0 picks a free port.
        tls: Certificate files, or None for plaintext (meant for loopback).

    Returns:
        The port actually bound, which is the one to announce.

    Raises:
        ConfigError: When the address is malformed or taken, or a TLS file is unreadable.
    """
    try:
        host, port = split_host_port(addr)
    except ValueError as err:
        raise ConfigError(f"bad listen address {addr!r}: {err}") from None
    _check_can_listen(host, port, addr)
    target = addr if host else f"[::]:{port}"
    try:
        if tls is None:
            return server.add_insecure_port(target)
        credentials = grpc.ssl_server_credentials(
            [(_read(tls.key, "--tls-key"), _read(tls.cert, "--tls-cert"))],
            root_certificates=_read(tls.ca, "--tls-ca") if tls.ca else None,
            require_client_auth=tls.ca is not None,
        )
        return server.add_secure_port(target, credentials)
    except RuntimeError as err:
        raise ConfigError(f"cannot listen on {addr}: {err}") from None


class Health:
    """Standard gRPC health for the server ("") and each service, plus server reflection.

    Everything reports NOT_SERVING until `set_all_serving`, so balancers and `grpc_health_probe`
    wait for `Daemon.start` to finish; `enter_graceful_shutdown` flips all of it back for good.

    Attributes:
        services: The names whose health is reported, "" (the whole server) first.
        serving: Whether SERVING is reported now; `/readyz` answers from it.
    """

    def __init__(self, server: grpc.aio.Server, services: Sequence[str]) -> None:
        self._servicer = grpc_health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._servicer, server)
        reflection.enable_server_reflection(
            [*services, grpc_health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        self.services: tuple[str, ...] = ("", *services)
        self.serving = False

    async def set_all_not_serving(self) -> None:
        """Report NOT_SERVING everywhere (the servicer starts with "" SERVING)."""
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.serving = False

    async def set_all_serving(self) -> None:
        """Report SERVING everywhere; ignored once shutdown has begun."""
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)
        self.serving = True

    async def enter_graceful_shutdown(self) -> None:
        """Report NOT_SERVING everywhere for good, so probes fail before the port closes."""
        self.serving = False
        await self._servicer.enter_graceful_shutdown()

    async def _set_all(self, status: object) -> None:
        for name in self.services:
            await self._servicer.set(name, status)


class HttpListener:
    """An aiohttp application on its own port, started and stopped like the gRPC ones.

    Used for `/metrics`; a daemon can use it for its own HTTP (the DME's REST API, the
    Controller's REST gateway) and report `port` through `Daemon.extra_ports`.

    A client that disconnects cancels its handler at once (aiohttp's `handler_cancellation`),
    as a gRPC server cancels a call whose client went away: a handler waiting on a long gRPC
    stream would otherwise only learn of it at its next write, and keep that call running.

    Attributes:
        port: The port actually bound.
    """

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self._runner = runner
        self.port = port

    @classmethod
    async def start(cls, app: web.Application, addr: str) -> HttpListener:
        """Serve `app` on `addr` (`host:port`, port 0 for any).

        Raises:
            ConfigError: When the address is malformed or cannot be bound.
        """
        try:
            host, port = split_host_port(addr)
        except ValueError as err:
            raise ConfigError(f"bad listen address {addr!r}: {err}") from None
        runner = web.AppRunner(
            app,
            access_log=None,  # scrapes every few seconds are noise
            handler_cancellation=True,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host or None, port).start()
        except OSError as err:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {addr}: {_reason(err)}") from None
        return cls(runner, runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening and finish open requests."""
        await self._runner.cleanup()


def metrics_app(ready: Callable[[], bool]) -> web.Application:
    """The side port: `/metrics` (Prometheus text), `/healthz` (alive), `/readyz` (serving).

    Args:
        ready: Whether the daemon serves now; `/readyz` answers 503 while it is False.

    Returns:
        The application, for `HttpListener.start`.
    """

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
