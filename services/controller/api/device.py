"""DeviceApi: the devices DMEs have seen register (aux_services.md §5.6).

DMEs send a Device over notify the first time a client registers with a device id; the
Controller stores each new key once and keeps it until an operator evicts it (notify
deletes and flushes are ignored). `InjectDevice` adds one by hand (regression tests, the
original's `/create/device`), `ShowDeviceReport` lists the devices first seen in a time
window: the count of new devices per period that billing reports are made of.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import device_pb2, device_pb2_grpc, result_pb2
from google.protobuf import timestamp_pb2

from edge_cloud.errors import InvalidArgument
from edge_cloud.objects import keys
from services.controller._runtime import Runtime

__all__ = ["DeviceApi", "add", "first_seen_within"]

_Ctx = grpc.aio.ServicerContext[Any, Any]


def _nanos(stamp: timestamp_pb2.Timestamp) -> int:
    return stamp.seconds * 1_000_000_000 + stamp.nanos


def first_seen_within(device: device_pb2.Device, report: device_pb2.DeviceReport) -> bool:
    """Whether the device was first seen in the report's window (both ends inclusive).

    An unset `begin` or `end` leaves that side open, as in the original.
    """
    seen = _nanos(device.first_seen)
    if report.HasField("begin") and seen < _nanos(report.begin):
        return False
    return not (report.HasField("end") and seen > _nanos(report.end))


class DeviceApi(device_pb2_grpc.DeviceApiServicer):
    """Inject, show, evict and report devices."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def InjectDevice(self, request: device_pb2.Device, context: _Ctx) -> result_pb2.Result:
        """Store a device (`Device key {...} already exists` when it is known already)."""
        keys.validate_key(request)
        stored = device_pb2.Device()
        stored.CopyFrom(request)
        stored.notify_id = 0  # not sent by any notify connection
        await self._rt.engine.create(stored)
        return result_pb2.Result()

    async def ShowDevice(
        self, request: device_pb2.Device, context: _Ctx
    ) -> AsyncIterator[device_pb2.Device]:
        """Every stored device matching the filter (zero fields match anything)."""
        for device in self._rt.engine.show(request):
            yield device

    async def EvictDevice(self, request: device_pb2.Device, context: _Ctx) -> result_pb2.Result:
        """Forget a device: the only way one leaves the Controller.

        Unlike the original, which answers success for an unknown device, an unknown key is
        NOT_FOUND, so a mistyped id does not look evicted.
        """
        keys.validate_key(request)
        await self._rt.engine.delete(request)
        return result_pb2.Result()

    async def ShowDeviceReport(
        self, request: device_pb2.DeviceReport, context: _Ctx
    ) -> AsyncIterator[device_pb2.Device]:
        """Devices matching the report's key filter that were first seen in its window."""
        if (
            request.HasField("begin")
            and request.HasField("end")
            and _nanos(request.begin) > _nanos(request.end)
        ):
            raise InvalidArgument(
                "the report's begin is after its end: give begin <= end (or leave one open)"
            )
        for device in self._rt.engine.show(device_pb2.Device(key=request.key)):
            if first_seen_within(device, request):
                yield device


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    device_pb2_grpc.add_DeviceApiServicer_to_server(DeviceApi(runtime), server)
    return ["edgeproto.DeviceApi"]
