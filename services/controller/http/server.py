"""The Controller's HTTP listener (`--http-addr`): REST gateway and NBI, opened with the daemon.

As in the original (controller.md §1.2 step 19), one HTTP server carries the grpc-gateway
translation of the gRPC API at `/edgeproto/v1` and the CAMARA NBI at
`/edge-application-management/vwip`; both reach the API through one loopback channel to the
daemon's own gRPC port, so they need nothing else of the daemon.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc.aio
from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from edge_cloud.api import channel as open_channel
from edge_cloud.config import TlsFiles, split_host_port
from edge_cloud.errors import ConfigError
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


def own_name(cert: Path) -> str | None:
    """A name the daemon's own certificate is valid for: its first DNS name, else its CN.

    The gateway dials its own API, often at an address the certificate does not name (a
    wildcard bind dialled on 127.0.0.1); checking the certificate against its own name keeps
    the chain verified by the CA, where the original's gateway skips verification entirely.

    Args:
        cert: The daemon's certificate (PEM).

    Returns:
        The name, or None when the certificate has neither.

    Raises:
        ConfigError: When the file cannot be read or is not a PEM certificate.
    """
    try:
        loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read --tls-cert {cert}: {err}") from None
    try:
        names = loaded.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if names:
        return names[0]
    common = loaded.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else None


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
        options: list[tuple[str, Any]] = []
        name = own_name(tls.cert) if tls is not None else None
        if name:
            options.append(("grpc.ssl_target_name_override", name))
        # no default deadline: streamed creates run as long as the Controller lets them
        channel = open_channel(api_target, tls=tls, timeout=None, options=options)
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
