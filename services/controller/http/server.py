"""The Controller's HTTP listener (`--http-addr`): REST gateway and NBI, opened with the daemon.

As in the original (controller.md §1.2 step 19), one HTTP server carries the grpc-gateway
translation of the gRPC API at `/edgeproto/v1` and the CAMARA NBI at
`/edge-application-management/vwip`; both reach the API through one loopback channel to the
daemon's own gRPC port, so they need nothing else of the daemon.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc.aio
from aiohttp import web

from edge_cloud.api import channel as open_channel
from edge_cloud.config import TlsFiles, split_host_port
from edge_cloud.server import HttpListener
from services.controller.http.gateway import PREFIX, gateway_app
from services.controller.http.nbi import make_nbi_app

__all__ = ["NBI_ROOT", "ControllerHttp", "dial_target", "http_app"]

NBI_ROOT = "/edge-application-management/vwip"
"""Where the NBI is mounted (the original's `NBIRootPath`)."""

_WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104 - recognising a bind-all address, not binding


def dial_target(api_addr: str, port: int) -> str:
    """Where the gateway dials the gRPC API: the bound port, on loopback when bound to all.

    Args:
        api_addr: The configured `--api-addr`.
        port: The port actually bound (differs from the configured one for port 0).

    Returns:
        `host:port` for a gRPC channel.
    """
    host, _ = split_host_port(api_addr)
    if host in _WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


def http_app(
    channel: grpc.aio.Channel, services: Sequence[str], *, region: str, app_dns_root: str
) -> web.Application:
    """The root application: the REST gateway under `PREFIX`, the NBI under `NBI_ROOT`.

    Paths outside the mounted applications get aiohttp's plain 404, as the original's
    `http.ServeMux` answers its own "404 page not found".

    Args:
        channel: A channel to the Controller's gRPC API.
        services: Full names of the services the Controller registers.
        region: The Controller's region, which the NBI reports and filters on.
        app_dns_root: The Controller's DNS root for App instances, handed to the NBI.

    Returns:
        The application, for `HttpListener.start`.
    """
    app = web.Application()
    app.add_subapp(PREFIX, gateway_app(channel, services))
    app.add_subapp(NBI_ROOT, make_nbi_app(channel, region=region, app_dns_root=app_dns_root))
    return app


class ControllerHttp:
    """The running HTTP listener and the gRPC channel behind it.

    Attributes:
        port: The port actually bound.
    """

    def __init__(self, listener: HttpListener, channel: grpc.aio.Channel) -> None:
        self._listener = listener
        self._channel = channel
        self.port = listener.port

    @classmethod
    async def start(
        cls,
        addr: str,
        *,
        api_target: str,
        services: Sequence[str],
        region: str,
        app_dns_root: str,
        tls: TlsFiles | None = None,
    ) -> ControllerHttp:
        """Dial the API and serve the gateway and the NBI on `addr`.

        Args:
            addr: `host:port` to listen on; port 0 picks a free one.
            api_target: The gRPC API's address (see `dial_target`).
            services: Full names of the services the Controller registers.
            region: The Controller's region (for the NBI).
            app_dns_root: The Controller's DNS root for App instances (for the NBI).
            tls: The daemon's TLS files: with mTLS on the API, the gateway presents the
                daemon's own certificate, as the original's gateway does.

        Returns:
            The started listener.

        Raises:
            ConfigError: When the address is malformed or cannot be bound.
        """
        # no default deadline: streamed creates run as long as the Controller lets them
        channel = open_channel(api_target, tls=tls, timeout=None)
        try:
            app = http_app(channel, services, region=region, app_dns_root=app_dns_root)
            listener = await HttpListener.start(app, addr)
        except BaseException:
            await channel.close()
            raise
        return cls(listener, channel)

    async def close(self) -> None:
        """Stop listening, finish open requests, close the channel."""
        await self._listener.close()
        await self._channel.close()
