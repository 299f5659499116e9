"""DebugApi: debug commands for the Controller and the nodes below it (aux_services.md §5.3).

Each call runs the command on the Controller when its node filter matches it, forwards it
over notify to the children whose reported nodes match, and streams every node's
`DebugReply` as it arrives; a node that does not answer within the request's timeout
(default 10 s) gets `request timed out`. Enable/Disable/ShowDebugLevels are RunDebug with
the command set, as in the original.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import debug_pb2, debug_pb2_grpc

from edge_cloud.debug import DISABLE_DEBUG_LEVELS, ENABLE_DEBUG_LEVELS, SHOW_DEBUG_LEVELS
from services.controller._runtime import Runtime
from services.controller.api.svcnode import node_hub

__all__ = ["DebugApi", "add"]

_Ctx = grpc.aio.ServicerContext[Any, Any]
Request = debug_pb2.DebugRequest
Replies = AsyncIterator[debug_pb2.DebugReply]


class DebugApi(debug_pb2_grpc.DebugApiServicer):
    """The four debug calls, all streaming one reply per node."""

    def __init__(self, runtime: Runtime) -> None:
        self._debug = node_hub(runtime)

    def _with(self, request: Request, cmd: str) -> Request:
        req = Request()
        req.CopyFrom(request)
        req.cmd = cmd
        return req

    async def EnableDebugLevels(self, request: Request, context: _Ctx) -> Replies:
        """Turn on the listed logger families (`levels`, comma-separated) on each node."""
        async for reply in self._debug.request(self._with(request, ENABLE_DEBUG_LEVELS)):
            yield reply

    async def DisableDebugLevels(self, request: Request, context: _Ctx) -> Replies:
        """Turn off the listed logger families on each node."""
        async for reply in self._debug.request(self._with(request, DISABLE_DEBUG_LEVELS)):
            yield reply

    async def ShowDebugLevels(self, request: Request, context: _Ctx) -> Replies:
        """Each node's logger families at DEBUG."""
        async for reply in self._debug.request(self._with(request, SHOW_DEBUG_LEVELS)):
            yield reply

    async def RunDebug(self, request: Request, context: _Ctx) -> Replies:
        """Any command (`no cmd specified` without one; an unknown one lists them)."""
        async for reply in self._debug.request(request):
            yield reply


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    debug_pb2_grpc.add_DebugApiServicer_to_server(DebugApi(runtime), server)
    return ["edgeproto.DebugApi"]
