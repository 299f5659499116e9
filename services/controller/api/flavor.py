"""FlavorApi: named resource sizes (controller.md §3.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
from edgeproto import flavor_pb2, flavor_pb2_grpc, result_pb2, settings_pb2

from edge_cloud.errors import FailedPrecondition, Unimplemented
from edge_cloud.objects import registry
from edge_cloud.objects.registry import SETTINGS_KEY
from services.controller import _uses, _validate
from services.controller._engine import Txn
from services.controller._runtime import SETTINGS, Runtime

__all__ = ["FlavorApi", "add"]

FLAVOR: Final = registry.by_class(flavor_pb2.Flavor)
_Ctx = grpc.aio.ServicerContext[Any, Any]


class FlavorApi(flavor_pb2_grpc.FlavorApiServicer):
    """Create, show and delete flavors; add and remove optional resources."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def CreateFlavor(self, request: flavor_pb2.Flavor, context: _Ctx) -> result_pb2.Result:
        """Validate fully, then store it if the key is free."""
        flavor = flavor_pb2.Flavor()
        flavor.CopyFrom(request)
        _validate.check_flavor(flavor)
        await self._rt.engine.create(flavor)
        return result_pb2.Result()

    async def UpdateFlavor(self, request: flavor_pb2.Flavor, context: _Ctx) -> result_pb2.Result:
        """Flavors never change: delete and create instead."""
        raise Unimplemented("Update Flavor not supported")

    async def DeleteFlavor(self, request: flavor_pb2.Flavor, context: _Ctx) -> result_pb2.Result:
        """Delete-prepare, refuse while Settings or any object uses it, delete."""
        engine = self._rt.engine

        def not_master_flavor(txn: Txn, current: flavor_pb2.Flavor) -> None:
            settings = txn.get(SETTINGS, SETTINGS_KEY) or settings_pb2.Settings()
            if settings.master_node_flavor == current.key.name:
                raise FailedPrecondition(
                    "Flavor in use by Settings MasterNodeFlavor, change "
                    "Settings.MasterNodeFlavor first"
                )

        await engine.delete(
            request,
            prepare=not_master_flavor,
            in_use=lambda flavor: _uses.flavor_users(engine.caches, flavor),
        )
        # TODO(#4, App): delete AutoDelete Apps whose default flavor this was.
        return result_pb2.Result()

    async def ShowFlavor(
        self, request: flavor_pb2.Flavor, context: _Ctx
    ) -> AsyncIterator[flavor_pb2.Flavor]:
        """Every cached flavor matching the filter."""
        for flavor in self._rt.engine.show(request):
            yield flavor

    async def AddFlavorRes(self, request: flavor_pb2.Flavor, context: _Ctx) -> result_pb2.Result:
        """Add or replace optional-resource entries (names checked, values as given)."""
        for name in sorted(request.opt_res_map):
            _validate.check_res_name(name)

        def add(txn: Txn, flavor: flavor_pb2.Flavor) -> None:
            flavor.opt_res_map.update(request.opt_res_map)

        await self._rt.engine.modify(FLAVOR, request.key, add)
        return result_pb2.Result()

    async def RemoveFlavorRes(self, request: flavor_pb2.Flavor, context: _Ctx) -> result_pb2.Result:
        """Remove the named optional-resource entries; absent names are ignored."""

        def remove(txn: Txn, flavor: flavor_pb2.Flavor) -> None:
            for name in request.opt_res_map:
                flavor.opt_res_map.pop(name, None)

        await self._rt.engine.modify(FLAVOR, request.key, remove)
        return result_pb2.Result()


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    flavor_pb2_grpc.add_FlavorApiServicer_to_server(FlavorApi(runtime), server)
    return ["edgeproto.FlavorApi"]
