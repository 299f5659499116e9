"""CloudletNodeApi: edge machines registered to fetch their configuration (objects.md §3.1).

Create answers with the node's one-time password in `Result.message` (the only time it
is shown); Show never returns the password hash, salt or iterations. The rules live in
`services.controller._cloudletnode`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import cloudletnode_pb2, cloudletnode_pb2_grpc, result_pb2

from services.controller._cloudletnode import (
    UPDATABLE,
    check_node,
    create_node,
    redacted,
)
from services.controller._runtime import Runtime

__all__ = ["CloudletNodeApi", "add"]

_Ctx = grpc.aio.ServicerContext[Any, Any]


class CloudletNodeApi(cloudletnode_pb2_grpc.CloudletNodeApiServicer):
    """Create, update, delete and show cloudlet nodes."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def CreateCloudletNode(
        self, request: cloudletnode_pb2.CloudletNode, context: _Ctx
    ) -> result_pb2.Result:
        """Register a node of an existing cloudlet; the message is its password."""
        password = await create_node(self._rt.engine, request)
        return result_pb2.Result(message=password)

    async def UpdateCloudletNode(
        self, request: cloudletnode_pb2.CloudletNode, context: _Ctx
    ) -> result_pb2.Result:
        """Change type, role, owner tags or attributes of a stored node."""
        check_node(request)
        await self._rt.engine.update(request, updatable=UPDATABLE)
        return result_pb2.Result()

    async def DeleteCloudletNode(
        self, request: cloudletnode_pb2.CloudletNode, context: _Ctx
    ) -> result_pb2.Result:
        """Remove a node: its password stops working."""
        check_node(request)
        await self._rt.engine.delete(request)
        return result_pb2.Result()

    async def ShowCloudletNode(
        self, request: cloudletnode_pb2.CloudletNode, context: _Ctx
    ) -> AsyncIterator[cloudletnode_pb2.CloudletNode]:
        """Every cached node matching the filter, without its password fields."""
        for node in self._rt.engine.show(request):
            yield redacted(node)


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    cloudletnode_pb2_grpc.add_CloudletNodeApiServicer_to_server(CloudletNodeApi(runtime), server)
    return ["edgeproto.CloudletNodeApi"]
