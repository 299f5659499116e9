"""Services the Controller serves in later slices: registered now, answering UNIMPLEMENTED.

A client calling them gets a clean status naming what is missing instead of "unknown
service" (or, worse, a fake empty answer). Each slice that implements a service removes it
from `LATER` and adds its own module.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import grpc
import grpc.aio
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from edge_cloud.errors import Unimplemented

__all__ = ["LATER", "add"]

LATER: Final[dict[str, tuple[str, str]]] = {
    # service: (proto module, slice of the Controller issue that brings it)
    "ExecApi": ("exec_pb2", "EdgeTurn console and shell relay"),
}


def _handler(
    service: ServiceDescriptor, method: MethodDescriptor, area: str
) -> grpc.RpcMethodHandler[Any, Any]:
    message = (
        f"{service.name}.{method.name} is not implemented yet (Controller issue, {area} slice)"
    )
    request_cls: type[Message] = message_factory.GetMessageClass(method.input_type)
    response_cls: type[Message] = message_factory.GetMessageClass(method.output_type)
    deserialize: Callable[[bytes], Message] = request_cls.FromString
    serialize: Callable[[Message], bytes] = response_cls.SerializeToString

    if method.server_streaming:

        async def stream(request: Message, context: Any) -> AsyncIterator[Message]:
            for _ in ():  # an async generator that yields nothing before failing
                yield request
            raise Unimplemented(message)

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=deserialize, response_serializer=serialize
        )

    async def unary(request: Message, context: Any) -> Message:
        raise Unimplemented(message)

    behavior: Callable[[Message, Any], Awaitable[Message]] = unary
    return grpc.unary_unary_rpc_method_handler(
        behavior, request_deserializer=deserialize, response_serializer=serialize
    )


def add(server: grpc.aio.Server, *, exclude: frozenset[str] = frozenset()) -> list[str]:
    """Register every service of `LATER` not in `exclude`; returns their full names."""
    names: list[str] = []
    for service_name, (module_name, area) in LATER.items():
        full_name = f"edgeproto.{service_name}"
        if full_name in exclude:
            continue
        module = importlib.import_module(f"edgeproto.{module_name}")
        service = module.DESCRIPTOR.services_by_name[service_name]
        handlers = {m.name: _handler(service, m, area) for m in service.methods}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(full_name, handlers)])
        names.append(full_name)
    return names
