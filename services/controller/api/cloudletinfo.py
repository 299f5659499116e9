"""CloudletInfoApi: the state cloudlets' workers report (controller.md §5.2, §6.4).

CloudletInfo is written by the notify handler (CRMs) and by CCRM calls; this service shows
it, and offers the original's test hooks `InjectCloudletInfo` and `EvictCloudletInfo`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import cloudlet_pb2, cloudlet_pb2_grpc, result_pb2

from edge_cloud.objects import keys
from services.controller._cloudletinfo import CLOUDLET_INFO
from services.controller._engine import Txn
from services.controller._runtime import Runtime

__all__ = ["CloudletInfoApi", "add"]

_Ctx = grpc.aio.ServicerContext[Any, Any]


class CloudletInfoApi(cloudlet_pb2_grpc.CloudletInfoApiServicer):
    """Show, inject and evict CloudletInfo."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def ShowCloudletInfo(
        self, request: cloudlet_pb2.CloudletInfo, context: _Ctx
    ) -> AsyncIterator[cloudlet_pb2.CloudletInfo]:
        """Every cached CloudletInfo matching the filter."""
        for info in self._rt.engine.show(request):
            yield info

    async def InjectCloudletInfo(
        self, request: cloudlet_pb2.CloudletInfo, context: _Ctx
    ) -> result_pb2.Result:
        """Store a CloudletInfo as given (tests, federation); `status` is never stored."""
        keys.validate_key(request.key)
        info = cloudlet_pb2.CloudletInfo()
        info.CopyFrom(request)
        info.ClearField("status")

        def put(txn: Txn) -> None:
            txn.put(info)

        await self._rt.engine.apply(put)
        return result_pb2.Result()

    async def EvictCloudletInfo(
        self, request: cloudlet_pb2.CloudletInfo, context: _Ctx
    ) -> result_pb2.Result:
        """Delete a CloudletInfo (absent ones are fine)."""

        def remove(txn: Txn) -> None:
            if txn.get(CLOUDLET_INFO, request.key) is not None:
                txn.delete(CLOUDLET_INFO, request.key)

        await self._rt.engine.apply(remove)
        return result_pb2.Result()


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    cloudlet_pb2_grpc.add_CloudletInfoApiServicer_to_server(CloudletInfoApi(runtime), server)
    return ["edgeproto.CloudletInfoApi"]
