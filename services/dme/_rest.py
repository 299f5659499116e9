"""The REST gateway: `POST /v1/<call>` with JSON bodies, on its own port (dme.md §1.4).

Requests: the proto message as JSON; field names as proto names (`session_cookie`) or
lowerCamel; enums by proto name, number, CamelCase name, or CamelCase without the common
prefix (`FIND_FOUND`, `1`, `FindFound`, `Found`), as the original's enum parsers accept; a
string that is none of these (a quoted number too) is 400 `unknown value "<v>" for enum
<full name>`. 64-bit integers as strings (numbers accepted too); unknown fields are ignored.

Replies — the rendering convention chosen here is the edgexr one (grpc-gateway v1
`JSONPb{OrigName: true}`): proto field names, enums by proto value name (`FIND_FOUND`),
64-bit integers as strings, fields at their zero value omitted (a present empty message
still renders as `{}`, e.g. a FIND_NOTFOUND reply's `cloudlet_location`). MobiledgeX-era
clients that expect `"Found"` and emitted defaults are not served that dialect.

Errors: HTTP status from the gRPC code as grpc-gateway v1 maps it, body
`{"code": <grpc code number>, "message": "<text>", "details": []}`. Server streams
(GetQosPositionKpi, StreamEdgeEvent) answer newline-delimited `{"result": {...}}` objects;
StreamEdgeEvent takes newline-delimited ClientEdgeEvents as its body. CORS: any `Origin` is
echoed; preflights get `Content-Type,Accept` and `GET,HEAD,POST,PUT,DELETE`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

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
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from edge_cloud.errors import EdgeError, InvalidArgument
from services.dme._calls import Call, DmeCalls
from services.dme._edgeevents import EdgeEvents, StreamError
from services.dme._peer import peer_ip

__all__ = ["HTTP_STATUS", "ROUTES", "message_from_json", "message_to_json", "rest_app"]

log = logging.getLogger(__name__)

_C = grpc.StatusCode
HTTP_STATUS: Final[dict[grpc.StatusCode, int]] = {
    _C.OK: 200,
    _C.CANCELLED: 408,
    _C.UNKNOWN: 500,
    _C.INVALID_ARGUMENT: 400,
    _C.DEADLINE_EXCEEDED: 504,
    _C.NOT_FOUND: 404,
    _C.ALREADY_EXISTS: 409,
    _C.PERMISSION_DENIED: 403,
    _C.UNAUTHENTICATED: 401,
    _C.RESOURCE_EXHAUSTED: 429,
    _C.FAILED_PRECONDITION: 400,
    _C.ABORTED: 409,
    _C.OUT_OF_RANGE: 400,
    _C.UNIMPLEMENTED: 501,
    _C.INTERNAL: 500,
    _C.UNAVAILABLE: 503,
    _C.DATA_LOSS: 500,
}
"""gRPC code → HTTP status, grpc-gateway v1's `HTTPStatusFromCode`."""

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

_NUMERIC: Final = re.compile(r"^-?\d+$")
_enum_names: dict[str, dict[str, str]] = {}


def _camel(name: str) -> str:
    return "".join(word.capitalize() for word in name.split("_"))


def _enum_aliases(enum: Any) -> dict[str, str]:
    """Accepted spellings → proto value name, for one enum (cached)."""
    aliases = _enum_names.get(enum.full_name)
    if aliases is not None:
        return aliases
    names = [v.name for v in enum.values]
    words = [n.split("_") for n in names]
    common = 0
    if len(words) > 1:
        while all(len(w) > common + 1 and w[common] == words[0][common] for w in words):
            common += 1
    aliases = {}
    for name, parts in zip(names, words, strict=True):
        aliases[name] = name
        aliases.setdefault(_camel(name), name)
        aliases.setdefault(_camel("_".join(parts[common:])), name)
    for alias, name in list(aliases.items()):
        aliases.setdefault(alias.lower(), name)
    _enum_names[enum.full_name] = aliases
    return aliases


def _enum_value(enum: Any, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    aliases = _enum_aliases(enum)
    name = None if _NUMERIC.match(value) else aliases.get(value, aliases.get(value.lower()))
    if name is None:
        raise InvalidArgument(f'unknown value "{value}" for enum {enum.full_name}')
    return name


def _normalize(descriptor: Any, data: Any) -> Any:
    """Rewrite tolerant enum spellings to proto names, recursively."""
    if not isinstance(data, dict):
        return data
    fields: dict[str, Any] = {}
    for fd in descriptor.fields:
        fields[fd.name] = fd
        fields[fd.json_name] = fd
    out: dict[str, Any] = {}
    for key, value in data.items():
        fd = fields.get(key)
        if fd is None or value is None:
            out[key] = value
            continue
        repeated = fd.is_repeated
        if fd.type == FieldDescriptor.TYPE_ENUM:
            if repeated and isinstance(value, list):
                out[key] = [_enum_value(fd.enum_type, v) for v in value]
            else:
                out[key] = _enum_value(fd.enum_type, value)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE and not fd.message_type.GetOptions().map_entry:
            if repeated and isinstance(value, list):
                out[key] = [_normalize(fd.message_type, v) for v in value]
            else:
                out[key] = _normalize(fd.message_type, value)
        else:
            out[key] = value
    return out


def message_from_json(data: Any, cls: type[Message]) -> Message:
    """Build a request from decoded JSON, tolerantly (see the module docstring).

    Args:
        data: The decoded JSON body.
        cls: The request type.

    Returns:
        The message.

    Raises:
        InvalidArgument: For a body that is not the message (including unknown enum values).
    """
    if not isinstance(data, dict):
        raise InvalidArgument(
            f"cannot unmarshal {type(data).__name__} into {cls.DESCRIPTOR.full_name}"
        )
    message = cls()
    try:
        json_format.ParseDict(_normalize(cls.DESCRIPTOR, data), message, ignore_unknown_fields=True)
    except json_format.ParseError as err:
        raise InvalidArgument(str(err)) from None
    return message


def message_to_json(message: Message) -> dict[str, Any]:
    """Render a reply: proto names, enum names, int64 as strings, zero values omitted.

    Args:
        message: The reply.

    Returns:
        The JSON object.
    """
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _error_body(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    return {"code": code.value[0], "message": message, "details": []}


def _error_response(code: grpc.StatusCode, message: str) -> web.Response:
    return web.json_response(_error_body(code, message), status=HTTP_STATUS.get(code, 500))


def _as_error(err: Exception) -> tuple[grpc.StatusCode, str]:
    if isinstance(err, EdgeError):
        return err.code, err.message
    if isinstance(err, StreamError):
        return grpc.StatusCode.UNKNOWN, str(err)
    log.error("REST call failed", exc_info=err)
    return grpc.StatusCode.INTERNAL, "internal error"


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


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read() or b"{}")
    except ValueError as err:
        raise InvalidArgument(f"invalid JSON body: {err}") from None


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
            return _error_response(grpc.StatusCode.NOT_FOUND, "Not Found")
        if request.method != "POST":
            return web.json_response(
                _error_body(grpc.StatusCode.UNIMPLEMENTED, "Method Not Allowed"), status=405
            )
        service, method, cls = route
        call = Call.of(service, method, peer_ip(request.remote or ""))
        try:
            if method == "StreamEdgeEvent":
                return await _edge_events(request, call)
            message = message_from_json(await _body(request), cls)
            if method == "GetQosPositionKpi":
                replies: list[Message] = list(
                    await calls.qos_position_kpi(call, message)  # type: ignore[arg-type]
                )
                text = "".join(json.dumps({"result": message_to_json(r)}) + "\n" for r in replies)
                return web.Response(text=text, content_type="application/json")
            reply = await calls.unary(call, message)
        except Exception as err:
            return _error_response(*_as_error(err))
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

        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        started = False
        try:
            async for event in events.stream(call, source()):
                if not started:
                    await response.prepare(request)
                    started = True
                await response.write(
                    (json.dumps({"result": message_to_json(event)}) + "\n").encode()
                )
        except Exception as err:
            code, text = _as_error(err)
            if not started:
                return _error_response(code, text)
            await response.write((json.dumps({"error": _error_body(code, text)}) + "\n").encode())
        if not started:
            await response.prepare(request)
        await response.write_eof()
        return response

    app = web.Application(middlewares=[_cors])
    app.router.add_route("*", "/v1/{call}", handle)
    return app
