"""OperatorCodeApi: carrier codes mapped to operator organizations (controller.md §3.2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import operatorcode_pb2, operatorcode_pb2_grpc, result_pb2

from services.controller import _validate
from services.controller._runtime import Runtime

__all__ = ["OperatorCodeApi", "add"]

_Ctx = grpc.aio.ServicerContext[Any, Any]


class OperatorCodeApi(operatorcode_pb2_grpc.OperatorCodeApiServicer):
    """Create, delete and show operator codes; there is no update."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def CreateOperatorCode(
        self, request: operatorcode_pb2.OperatorCode, context: _Ctx
    ) -> result_pb2.Result:
        """Store a new code (`key <code> already exists` when taken, as the original)."""
        _validate.check_operator_code(request)
        await self._rt.engine.create(request, plain=True)
        return result_pb2.Result()

    async def DeleteOperatorCode(
        self, request: operatorcode_pb2.OperatorCode, context: _Ctx
    ) -> result_pb2.Result:
        """Delete a code (`OperatorCode key <code> not found` when absent)."""
        await self._rt.engine.delete(request)
        return result_pb2.Result()

    async def ShowOperatorCode(
        self, request: operatorcode_pb2.OperatorCode, context: _Ctx
    ) -> AsyncIterator[operatorcode_pb2.OperatorCode]:
        """Every cached code matching the filter."""
        for code in self._rt.engine.show(request):
            yield code


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    operatorcode_pb2_grpc.add_OperatorCodeApiServicer_to_server(OperatorCodeApi(runtime), server)
    return ["edgeproto.OperatorCodeApi"]
