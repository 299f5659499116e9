"""`edgeproto.ClusterPlatformAPI`: ClusterInst work streamed back as ClusterInstInfo."""

from __future__ import annotations

from collections.abc import AsyncIterator

from edgeproto import ccrm_pb2, ccrm_pb2_grpc, clusterinst_pb2, common_pb2, result_pb2

from services.ccrm._cluster import ClusterWork
from services.ccrm._host import PlatformHost
from services.ccrm._stream import stream_work
from services.ccrm.api._common import Ctx, name_sanitize

__all__ = ["ClusterPlatformApi"]


class ClusterPlatformApi(ccrm_pb2_grpc.ClusterPlatformAPIServicer):
    """ApplyClusterInst and NameSanitize.

    Args:
        host: The hosted platforms.
    """

    def __init__(self, host: PlatformHost) -> None:
        self._host = host
        self._work = ClusterWork(host)

    async def ApplyClusterInst(
        self, request: clusterinst_pb2.ClusterInst, context: Ctx
    ) -> AsyncIterator[clusterinst_pb2.ClusterInstInfo]:
        """Create, update or delete a cluster; ClusterInstInfo updates stream back."""
        info = clusterinst_pb2.ClusterInstInfo()
        info.key.CopyFrom(request.key)
        async for update in stream_work(
            info, common_pb2.TrackedState.DESCRIPTOR, lambda s: self._work.apply(request, s)
        ):
            yield update

    async def NameSanitize(
        self, request: ccrm_pb2.NameSanitizeReq, context: Ctx
    ) -> result_pb2.Result:
        """The platform's legal form of a name."""
        return name_sanitize(self._host, request)
