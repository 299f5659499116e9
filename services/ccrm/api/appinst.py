"""`edgeproto.AppInstPlatformAPI`: AppInst work streamed back as AppInstInfo."""

from __future__ import annotations

from collections.abc import AsyncIterator

from edgeproto import (
    appinst_pb2,
    ccrm_pb2,
    ccrm_pb2_grpc,
    common_pb2,
    result_pb2,
    trustpolicyexception_pb2,
)

from edge_cloud.crmutil import TpeWork
from services.ccrm._appinst import AppInstWork
from services.ccrm._host import PlatformHost
from services.ccrm._stream import stream_work
from services.ccrm.api._common import Ctx, name_sanitize

__all__ = ["AppInstPlatformApi"]


class AppInstPlatformApi(ccrm_pb2_grpc.AppInstPlatformAPIServicer):
    """ApplyAppInst, ApplyTrustPolicyException and NameSanitize.

    Args:
        host: The hosted platforms.
    """

    def __init__(self, host: PlatformHost) -> None:
        self._host = host
        self._work = AppInstWork(host)

    async def ApplyAppInst(
        self, request: appinst_pb2.AppInst, context: Ctx
    ) -> AsyncIterator[appinst_pb2.AppInstInfo]:
        """Create, update or delete an app instance; AppInstInfo updates stream back."""
        info = appinst_pb2.AppInstInfo()
        info.key.CopyFrom(request.key)
        async for update in stream_work(
            info, common_pb2.TrackedState.DESCRIPTOR, lambda s: self._work.apply(request, s)
        ):
            yield update

    async def ApplyTrustPolicyException(
        self, request: trustpolicyexception_pb2.TPEInstanceState, context: Ctx
    ) -> result_pb2.Result:
        """Open (`tpe_enable`) or close a trust policy exception for one cluster."""
        await TpeWork(self._host).apply(request)
        return result_pb2.Result()

    async def NameSanitize(
        self, request: ccrm_pb2.NameSanitizeReq, context: Ctx
    ) -> result_pb2.Result:
        """The platform's legal form of a name."""
        return name_sanitize(self._host, request)
