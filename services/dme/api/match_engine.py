"""The DME's gRPC servicers, for both service layouts of dme.md §1.1.

`MatchEngineApi` is generated once, as the legacy all-in-one superset (13 RPCs); the split
services (Session, Location, QualityOfService, QosPositionKpi, PlatformOS) use the same
method names. One servicer class implements every method; an instance is registered per
service so each knows the path its clients called (rate-limit messages quote it). The
superset instance serves both the legacy layout and the split `MatchEngineApi`.
`DynamicLocGroupApi` is not registered, as in the original.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import grpc
import grpc.aio
from distributed_match_engine import (
    app_client_platos_pb2_grpc,
    locverify_pb2_grpc,
    match_engine_api_pb2_grpc,
    qos_pb2_grpc,
    qos_position_pb2_grpc,
    session_pb2_grpc,
)

from services.dme._calls import PACKAGE, Call, DmeCalls
from services.dme._edgeevents import EdgeEvents, StreamError
from services.dme._peer import peer_ip

__all__ = ["DmeServicer", "add_dme_services"]

_CALL_CACHE_SIZE: Final = 65_536
"""(method, peer) pairs remembered per service; the cache starts afresh beyond it."""


class DmeServicer:
    """Every DME RPC, reached through one service name.

    Args:
        service: Short service name (`Session`, `MatchEngineApi`, ...).
        calls: The calls and their pipeline.
        events: The edge-events handler.
    """

    def __init__(self, service: str, calls: DmeCalls, events: EdgeEvents) -> None:
        self._service = service
        self._calls = calls
        self._events = events
        # (method, peer) -> Call: a connection makes many calls of one method; building the
        # path and parsing the peer once per pair keeps them off the per-call path
        self._call_cache: dict[tuple[str, str], Call] = {}

    async def _unary(
        self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        peer = context.peer()
        call = self._call_cache.get((method, peer))
        if call is None:
            if len(self._call_cache) >= _CALL_CACHE_SIZE:
                self._call_cache.clear()
            call = self._call_cache[method, peer] = Call.of(self._service, method, peer_ip(peer))
        return await self._calls.unary(call, request)

    async def RegisterClient(self, request: Any, context: Any) -> Any:
        """RegisterClient."""
        return await self._unary("RegisterClient", request, context)

    async def FindCloudlet(self, request: Any, context: Any) -> Any:
        """FindCloudlet."""
        return await self._unary("FindCloudlet", request, context)

    async def PlatformFindCloudlet(self, request: Any, context: Any) -> Any:
        """PlatformFindCloudlet."""
        return await self._unary("PlatformFindCloudlet", request, context)

    async def QosPrioritySessionCreate(self, request: Any, context: Any) -> Any:
        """QosPrioritySessionCreate."""
        return await self._unary("QosPrioritySessionCreate", request, context)

    async def QosPrioritySessionDelete(self, request: Any, context: Any) -> Any:
        """QosPrioritySessionDelete."""
        return await self._unary("QosPrioritySessionDelete", request, context)

    async def VerifyLocation(self, request: Any, context: Any) -> Any:
        """VerifyLocation."""
        return await self._unary("VerifyLocation", request, context)

    async def GetLocation(self, request: Any, context: Any) -> Any:
        """GetLocation."""
        return await self._unary("GetLocation", request, context)

    async def AddUserToGroup(self, request: Any, context: Any) -> Any:
        """AddUserToGroup (legacy layout only)."""
        return await self._unary("AddUserToGroup", request, context)

    async def GetAppInstList(self, request: Any, context: Any) -> Any:
        """GetAppInstList."""
        return await self._unary("GetAppInstList", request, context)

    async def GetFqdnList(self, request: Any, context: Any) -> Any:
        """GetFqdnList."""
        return await self._unary("GetFqdnList", request, context)

    async def GetAppOfficialFqdn(self, request: Any, context: Any) -> Any:
        """GetAppOfficialFqdn."""
        return await self._unary("GetAppOfficialFqdn", request, context)

    async def GetQosPositionKpi(self, request: Any, context: Any) -> AsyncIterator[Any]:
        """GetQosPositionKpi (server stream)."""
        call = Call.of(self._service, "GetQosPositionKpi", peer_ip(context.peer()))
        for reply in await self._calls.qos_position_kpi(call, request):
            yield reply

    async def StreamEdgeEvent(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        """StreamEdgeEvent (bidirectional)."""
        call = Call.of(self._service, "StreamEdgeEvent", peer_ip(context.peer()))
        try:
            async for event in self._events.stream(call, request_iterator.__aiter__()):
                yield event
        except StreamError as err:
            await context.abort(grpc.StatusCode.UNKNOWN, str(err))


def add_dme_services(server: grpc.aio.Server, calls: DmeCalls, events: EdgeEvents) -> list[str]:
    """Register the legacy superset and the split services on a server.

    Args:
        server: The server.
        calls: The calls.
        events: The edge-events handler.

    Returns:
        Full service names, for health and reflection.
    """
    adders: dict[str, Callable[[Any, grpc.aio.Server], None]] = {
        "MatchEngineApi": match_engine_api_pb2_grpc.add_MatchEngineApiServicer_to_server,
        "Session": session_pb2_grpc.add_SessionServicer_to_server,
        "Location": locverify_pb2_grpc.add_LocationServicer_to_server,
        "QualityOfService": qos_pb2_grpc.add_QualityOfServiceServicer_to_server,
        "QosPositionKpi": qos_position_pb2_grpc.add_QosPositionKpiServicer_to_server,
        "PlatformOS": app_client_platos_pb2_grpc.add_PlatformOSServicer_to_server,
    }
    for service, add in adders.items():
        add(DmeServicer(service, calls, events), server)
    return [f"{PACKAGE}.{service}" for service in adders]
