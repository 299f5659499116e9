"""The grpc-gateway v1 REST dialect, shared by every daemon that answers JSON over HTTP.

The original's daemons put grpc-gateway v1 (`JSONPb{OrigName: true}` marshaler, the proto
error handler) in front of their gRPC ports; the DME's `/v1/<call>` and the Controller's
`/edgeproto/v1/<verb>/<object>` both speak it, so the JSON mapping, the error bodies and the
streaming format live here once.

Requests: the proto message as JSON; field names as proto names (`session_cookie`) or
lowerCamel; enums by proto name, number, CamelCase name, or CamelCase without the common
prefix (`FIND_FOUND`, `1`, `FindFound`, `Found`), as the original's enum parsers accept; a
string that is none of these (a quoted number too) is INVALID_ARGUMENT `unknown value "<v>"
for enum <full name>`. 64-bit integers as strings (numbers accepted too); unknown fields are
ignored, as grpc-gateway v1 allows them by default.

Replies: proto field names, enums by proto value name, 64-bit integers as strings, fields at
their zero value omitted (a present empty message still renders as `{}`).

Errors: HTTP status from the gRPC code as grpc-gateway v1's `HTTPStatusFromCode` maps it,
body `{"code": <grpc code number>, "message": "<text>", "details": []}`. Server streams
answer one `{"result": {...}}` object per line; an error ends the stream with grpc-gateway
v1's stream-error chunk `{"error": {"grpc_code", "http_code", "message", "http_status",
"details"}}`, whose HTTP status is the error's when nothing was sent before it.
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from typing import Any, Final

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from edge_cloud.errors import EdgeError, InvalidArgument

__all__ = [
    "HTTP_STATUS",
    "JSON_CONTENT_TYPE",
    "ResultStream",
    "error_body",
    "error_response",
    "json_line",
    "message_from_json",
    "message_to_json",
    "read_json",
    "status_of",
    "stream_error",
]

log = logging.getLogger(__name__)

JSON_CONTENT_TYPE: Final = "application/json"

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

_NUMERIC: Final = re.compile(r"^-?\d+$")
_enum_names: dict[str, dict[str, str]] = {}


def _camel(name: str) -> str:
    return "".join(word.capitalize() for word in name.split("_"))


def _enum_aliases(enum: Any) -> dict[str, str]:
    """Accepted spellings → proto value name, for one enum (cached: enums never change)."""
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
    """Rewrite tolerant enum spellings to proto names, recursively.

    Descriptors are `Any`: the stubs type a field's `enum_type`/`message_type` as optional
    and the C and Python descriptor classes differ, which is noise for this walk.
    """
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


async def read_json(request: web.Request) -> Any:
    """The decoded request body; an empty body is the empty message, as in grpc-gateway.

    Raises:
        InvalidArgument: When the body is not JSON, naming the parser's complaint.
    """
    try:
        return json.loads(await request.read() or b"{}")
    except ValueError as err:
        raise InvalidArgument(f"invalid JSON body: {err}") from None


def status_of(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and message an exception travels as over REST.

    Our own errors and the statuses of proxied calls keep their code and text; anything
    else is a bug, logged here with its traceback and answered INTERNAL without details.

    Args:
        err: What the call raised.

    Returns:
        The code and the message for the client.
    """
    if isinstance(err, EdgeError):
        return err.code, err.message
    if isinstance(err, grpc.aio.AioRpcError):
        return err.code(), err.details() or ""
    log.error("REST call failed", exc_info=err)
    return grpc.StatusCode.INTERNAL, "internal error"


def error_body(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    """The body of a failed unary call: the `google.rpc.Status` as JSON."""
    return {"code": code.value[0], "message": message, "details": []}


def error_response(code: grpc.StatusCode, message: str, *, status: int = 0) -> web.Response:
    """A failed unary call: `error_body` with the mapped HTTP status (or `status`)."""
    return web.json_response(error_body(code, message), status=status or _http(code))


def stream_error(code: grpc.StatusCode, message: str) -> dict[str, Any]:
    """grpc-gateway v1's stream-error chunk, the last line of a failed server stream."""
    http = _http(code)
    return {
        "error": {
            "grpc_code": code.value[0],
            "http_code": http,
            "message": message,
            "http_status": HTTPStatus(http).phrase,
            "details": [],
        }
    }


def json_line(payload: dict[str, Any]) -> bytes:
    """One newline-terminated JSON object of a streamed reply."""
    return (json.dumps(payload, separators=(",", ":")) + "\n").encode()


def _http(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


class ResultStream:
    """A server stream over HTTP, written as grpc-gateway v1's `ForwardResponseStream` does.

    Each reply is a `{"result": ...}` line, flushed as it comes so a client follows a long
    create live. The status line goes out with the first reply (200); a stream that fails
    before any reply answers the error's own HTTP status with the error chunk as its body,
    and a stream that fails later can only append the chunk.

    Args:
        request: The HTTP request being answered.
    """

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._response = web.StreamResponse(headers={"Content-Type": JSON_CONTENT_TYPE})

    @property
    def response(self) -> web.StreamResponse:
        """The response being written (to hand back when the client went away)."""
        return self._response

    async def send(self, message: Message) -> None:
        """Write one reply line."""
        await self._prepared()
        await self._response.write(json_line({"result": message_to_json(message)}))

    async def fail(self, code: grpc.StatusCode, text: str) -> web.StreamResponse:
        """End the stream with the error chunk; returns the response to hand back."""
        if not self._response.prepared:
            self._response.set_status(_http(code))
        await self._prepared()
        await self._response.write(json_line(stream_error(code, text))[:-1])  # no delimiter
        await self._response.write_eof()
        return self._response

    async def finish(self) -> web.StreamResponse:
        """End a stream that completed (an empty one answers 200 with no body)."""
        await self._prepared()
        await self._response.write_eof()
        return self._response

    async def _prepared(self) -> None:
        if not self._response.prepared:
            await self._response.prepare(self._request)
