"""FlavorApi: named resource sizes (controller.md §3.1)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    clusterinst_pb2,
    flavor_pb2,
    flavor_pb2_grpc,
    result_pb2,
    settings_pb2,
)

from edge_cloud.errors import EdgeError, FailedPrecondition, Unimplemented
from edge_cloud.objects import registry
from edge_cloud.objects.registry import SETTINGS_KEY
from services.controller import _validate
from services.controller._engine import Txn
from services.controller._runtime import SETTINGS, Runtime
from services.controller._sync import Caches
from services.controller.api.app import AppApi

__all__ = ["FlavorApi", "add"]

log = logging.getLogger(__name__)

FLAVOR: Final = registry.by_class(flavor_pb2.Flavor)
APP: Final = registry.by_class(app_pb2.App)
APP_INST: Final = registry.by_class(appinst_pb2.AppInst)
CLUSTER_INST: Final = registry.by_class(clusterinst_pb2.ClusterInst)
CLOUDLET: Final = registry.by_class(cloudlet_pb2.Cloudlet)
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
            in_use=lambda flavor: _flavor_users(engine.caches, flavor),
        )
        await self._auto_delete_apps(request.key, context)
        return result_pb2.Result()

    async def _auto_delete_apps(self, key: flavor_pb2.FlavorKey, context: _Ctx) -> None:
        """Delete the AutoDelete Apps whose default flavor was `key`, as the original does.

        Such Apps were created for the flavor (by a caller that owns neither), so they do
        not keep it in use and go with it. Each goes through the App API's own delete, which
        also removes its deletable instances; one that still has static instances stays,
        and the flavor delete still succeeds, as in the original.
        """
        apps = AppApi(self._rt)
        doomed = sorted(
            (name, app)
            for name, app in self._rt.caches.items(APP)
            if app.default_flavor == key and app.del_opt == app_pb2.AUTO_DELETE
        )
        for name, app in doomed:
            try:
                await apps.DeleteApp(app_pb2.App(key=app.key), context)
            except EdgeError as err:
                log.warning("could not auto-delete App %s of flavor %s: %s", name, key.name, err)

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


def _flavor_users(caches: Caches, flavor: flavor_pb2.Flavor) -> None:
    """The in-use checks of a flavor delete; AutoDelete Apps do not count (they go with it).

    Raises:
        FailedPrecondition: `Flavor in use by <Type> <key>` for the first user found.
    """
    name = flavor.key.name
    for key, cluster in caches.items(CLUSTER_INST):
        if cluster.flavor.name == name:
            raise FailedPrecondition(f"Flavor in use by ClusterInst {key}")
    for key, app in caches.items(APP):
        if app.default_flavor.name == name and app.del_opt != app_pb2.AUTO_DELETE:
            raise FailedPrecondition(f"Flavor in use by App {key}")
    for key, inst in caches.items(APP_INST):
        if inst.flavor.name == name:
            raise FailedPrecondition(f"Flavor in use by AppInst {key}")
    for key, cloudlet in caches.items(CLOUDLET):
        if cloudlet.flavor.name == name:
            raise FailedPrecondition(f"Flavor in use by Cloudlet {key}")


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    flavor_pb2_grpc.add_FlavorApiServicer_to_server(FlavorApi(runtime), server)
    return ["edgeproto.FlavorApi"]
