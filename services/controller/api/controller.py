"""ControllerApi: the live controllers of the region, from their leased etcd records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import controller_pb2, controller_pb2_grpc

from services.controller._runtime import Runtime

__all__ = ["ControllerApi", "add"]

_Ctx = grpc.aio.ServicerContext[Any, Any]


class ControllerApi(controller_pb2_grpc.ControllerApiServicer):
    """Show the controllers whose lease is alive."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def ShowController(
        self, request: controller_pb2.Controller, context: _Ctx
    ) -> AsyncIterator[controller_pb2.Controller]:
        """Every registered controller matching the filter."""
        for controller in self._rt.engine.show(request):
            yield controller


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    controller_pb2_grpc.add_ControllerApiServicer_to_server(ControllerApi(runtime), server)
    return ["edgeproto.ControllerApi"]
