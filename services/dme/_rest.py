"""The REST gateway: `POST /v1/<call>` with JSON bodies, on its own port (dme.md §1.4).

The JSON dialect (request parsing with tolerant enums, rendering, error bodies, the
streaming format) is grpc-gateway v1's, shared with the Controller in `edge_cloud.restgw`;
MobiledgeX-era clients that expect `"Found"` and emitted defaults are not served that
dialect. What is the DME's own: the `/v1/<call>` routes, StreamEdgeEvent taking
newline-delimited ClientEdgeEvents as its body, 405 for a method other than POST, and CORS
(any `Origin` is echoed; preflights get `Content-Type,Accept` and
`GET,HEAD,POST,PUT,DELETE`), as the original DME wraps its gateway in `allowCORS`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import grpc
from aiohttp import web
from distributed_match_engine import (
    app_client_pb2,
    app_client_platos_pb2,
    dynamic_location_group_pb2,
    locverify_pb2,
    qos_pb2,
    qos_position_pb2,
    session_pb2,
)
from google.protobuf.message import Message

from edge_cloud.restgw import (
    HTTP_STATUS,
    JSON_CONTENT_TYPE,
    ResultStream,
    error_response,
    json_line,
    message_from_json,
    message_to_json,
    read_json,
    status_of,
)
from services.dme._calls import Call, DmeCalls
from services.dme._edgeevents import EdgeEvents, StreamError
from services.dme._peer import peer_ip

__all__ = ["HTTP_STATUS", "ROUTES", "message_from_json", "message_to_json", "rest_app"]

ROUTES: Final[dict[str, tuple[str, str, type[Message]]]] = {
    "registerclient": ("Session", "RegisterClient", session_pb2.RegisterClientRequest),
    "findcloudlet": ("MatchEngineApi", "FindCloudlet", app_client_pb2.FindCloudletRequest),
    "platformfindcloudlet": (
        "PlatformOS",
        "PlatformFindCloudlet",
        app_client_platos_pb2.PlatformFindCloudletRequest,
    ),
    "getappinstlist": ("MatchEngineApi", "GetAppInstList", app_client_pb2.AppInstListRequest),
    "getfqdnlist": ("PlatformOS", "GetFqdnList", app_client_platos_pb2.FqdnListRequest),
    "getappofficialfqdn": (
        "MatchEngineApi",
        "GetAppOfficialFqdn",
        app_client_pb2.AppOfficialFqdnRequest,
    ),
    "verifylocation": ("Location", "VerifyLocation", locverify_pb2.VerifyLocationRequest),
    "getlocation": ("Location", "GetLocation", locverify_pb2.GetLocationRequest),
    "qosprioritysessioncreate": (
        "QualityOfService",
        "QosPrioritySessionCreate",
        qos_pb2.QosPrioritySessionCreateRequest,
    ),
    "qosprioritysessiondelete": (
        "QualityOfService",
        "QosPrioritySessionDelete",
        qos_pb2.QosPrioritySessionDeleteRequest,
    ),
    "addusertogroup": (
        "MatchEngineApi",
        "AddUserToGroup",
        dynamic_location_group_pb2.DynamicLocGroupRequest,
    ),
    "getqospositionkpi": (
        "QosPositionKpi",
        "GetQosPositionKpi",
        qos_position_pb2.QosPositionRequest,
    ),
    "streamedgeevent": ("MatchEngineApi", "StreamEdgeEvent", app_client_pb2.ClientEdgeEvent),
}
"""REST path segment → (service, method, request type), dme.md §1.1."""


def _as_error(err: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(err, StreamError):
        return grpc.StatusCode.UNKNOWN, str(err)
    return status_of(err)


@web.middleware
async def _cors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    if (
        request.method == "OPTIONS"
        and origin
        and "Access-Control-Request-Method" in request.headers
    ):
        return web.Response(
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Headers": "Content-Type,Accept",
                "Access-Control-Allow-Methods": "GET,HEAD,POST,PUT,DELETE",
            }
        )
    response = await handler(request)
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
    return response


def rest_app(calls: DmeCalls, events: EdgeEvents) -> web.Application:
    """The aiohttp application of the REST gateway.

    Args:
        calls: The calls (the same pipeline as gRPC).
        events: The edge-events handler.

    Returns:
        The application, for `HttpListener.start`.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        route = ROUTES.get(request.match_info["call"])
        if route is None:
            return error_response(grpc.StatusCode.NOT_FOUND, "Not Found")
        if request.method != "POST":
            return error_response(grpc.StatusCode.UNIMPLEMENTED, "Method Not Allowed", status=405)
        service, method, cls = route
        call = Call.of(service, method, peer_ip(request.remote or ""))
        try:
            if method == "StreamEdgeEvent":
                return await _edge_events(request, call)
            message = message_from_json(await read_json(request), cls)
            if method == "GetQosPositionKpi":
                replies: list[Message] = list(
                    await calls.qos_position_kpi(call, message)  # type: ignore[arg-type]
                )
                body = b"".join(json_line({"result": message_to_json(r)}) for r in replies)
                return web.Response(body=body, content_type=JSON_CONTENT_TYPE)
            reply = await calls.unary(call, message)
        except Exception as err:
            return error_response(*_as_error(err))
        return web.json_response(message_to_json(reply))

    async def _edge_events(request: web.Request, call: Call) -> web.StreamResponse:
        raw = (await request.read()).decode()
        messages = [
            message_from_json(json.loads(line), app_client_pb2.ClientEdgeEvent)
            for line in raw.splitlines()
            if line.strip()
        ]

        async def source() -> AsyncIterator[app_client_pb2.ClientEdgeEvent]:
            for message in messages:
                yield message  # type: ignore[misc]

        stream = ResultStream(request)
        try:
            async for event in events.stream(call, source()):
                await stream.send(event)
        except Exception as err:
            return await stream.fail(*_as_error(err))
        return await stream.finish()

    app = web.Application(middlewares=[_cors])
    app.router.add_route("*", "/v1/{call}", handle)
    return app
