"""A minimal daemon for testing the runner end to end, with no generated code.

Serves `edge.test.Echo/Echo` (bytes in, the same bytes out) through grpc generic handlers::

    python -m tests.support.demo_daemon --api-addr 127.0.0.1:0 --ready-file /tmp/demo.json
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from edge_cloud.config import CommonConfig, host_port, option
from edge_cloud.errors import InvalidArgument
from edge_cloud.server import Daemon, run_daemon

SERVICE = "edge.test.Echo"
ECHO = f"/{SERVICE}/Echo"


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoConfig(CommonConfig):
    """Demo daemon settings; everything on loopback, any free port."""

    api_addr: str = option("127.0.0.1:0", "gRPC listen address", go="apiAddr", parse=host_port)
    fail_start: bool = option(False, "raise in start(), to test the fatal-error exit")


class DemoDaemon(Daemon[DemoConfig]):
    """Echoes bytes back; an empty request is refused, to show error mapping."""

    name = "demo"

    def add_services(self, server: grpc.aio.Server) -> list[str]:
        handler: grpc.RpcMethodHandler[bytes, bytes]
        handler = grpc.unary_unary_rpc_method_handler(self.echo)
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler})]
        )
        return [SERVICE]

    async def start(self) -> None:
        if self.config.fail_start:
            raise RuntimeError("cannot reach the imaginary database")

    async def echo(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        if not request:
            raise InvalidArgument("nothing to echo")
        return request


def main(argv: list[str] | None = None) -> int:
    return run_daemon(DemoDaemon, DemoConfig, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
