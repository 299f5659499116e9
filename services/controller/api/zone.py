"""ZoneApi: named groups of cloudlets that developers deploy to (controller.md §3.4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import result_pb2, zone_pb2, zone_pb2_grpc

from edge_cloud.objects import keys
from services.controller import _ids, _uses
from services.controller._engine import Txn
from services.controller._runtime import Runtime

__all__ = ["UPDATABLE", "ZoneApi", "add"]

UPDATABLE = frozenset({"3", "4"})
"""description, infra_flavors."""

_Ctx = grpc.aio.ServicerContext[Any, Any]


class ZoneApi(zone_pb2_grpc.ZoneApiServicer):
    """Create, update, delete and show zones."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def CreateZone(self, request: zone_pb2.Zone, context: _Ctx) -> result_pb2.Result:
        """Store a new zone with a fresh lower-case ULID as `obj_id`."""
        keys.validate_key(request)

        def assign_id(txn: Txn, zone: zone_pb2.Zone) -> None:
            zone.obj_id = _ids.ulid().lower()  # federation wants lower case

        await self._rt.engine.create(request, check=assign_id)
        return result_pb2.Result()

    async def UpdateZone(self, request: zone_pb2.Zone, context: _Ctx) -> result_pb2.Result:
        """Change the description or infra flavors; refused while being deleted."""
        await self._rt.engine.update(request, updatable=UPDATABLE, refuse_deleting=True)
        return result_pb2.Result()

    async def DeleteZone(self, request: zone_pb2.Zone, context: _Ctx) -> result_pb2.Result:
        """Delete-prepare, refuse while policies, cloudlets or pools use it, delete."""
        engine = self._rt.engine
        await engine.delete(request, in_use=lambda z: _uses.zone_users(engine.caches, z.key))
        return result_pb2.Result()

    async def ShowZone(self, request: zone_pb2.Zone, context: _Ctx) -> AsyncIterator[zone_pb2.Zone]:
        """Every cached zone matching the filter."""
        for zone in self._rt.engine.show(request):
            yield zone

    async def ShowZoneGPUs(
        self, request: zone_pb2.Zone, context: _Ctx
    ) -> AsyncIterator[zone_pb2.ZoneGPUs]:
        """GPUs offered in each zone; zones without GPUs are left out.

        GPUs come from the zones' cloudlets, which arrive with a later slice; until then no
        zone has any, so the stream is empty.
        """
        for _ in ():
            yield zone_pb2.ZoneGPUs()


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    zone_pb2_grpc.add_ZoneApiServicer_to_server(ZoneApi(runtime), server)
    return ["edgeproto.ZoneApi"]
