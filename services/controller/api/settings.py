"""SettingsApi: the region-wide Settings singleton (controller.md §3.3)."""

from __future__ import annotations

from typing import Any, Final

import grpc.aio
from edgeproto import flavor_pb2, result_pb2, settings_pb2, settings_pb2_grpc

from edge_cloud.errors import InvalidArgument, NotFound
from edge_cloud.objects import fields, registry
from edge_cloud.objects.registry import SETTINGS_KEY
from services.controller import _settings
from services.controller._engine import Txn
from services.controller._runtime import SETTINGS, Runtime

__all__ = ["SettingsApi", "add", "update_settings"]

FLAVOR: Final = registry.by_class(flavor_pb2.Flavor)
_Ctx = grpc.aio.ServicerContext[Any, Any]


async def update_settings(runtime: Runtime, request: settings_pb2.Settings) -> bool:
    """Validate the listed fields, merge them into the stored settings, cross-check, write.

    Returns:
        Whether anything changed.

    Raises:
        InvalidArgument: A field or a combination is invalid, or no fields are listed.
        NotFound: `Flavor must preexist` for an unknown master node flavor.
    """
    paths = list(request.fields)
    if not paths:
        raise InvalidArgument("nothing specified to update")
    _settings.check_fields(request, paths)

    def fn(txn: Txn) -> bool:
        current = txn.get(SETTINGS, SETTINGS_KEY)
        if current is None:
            raise NotFound("no settings found")
        merged = settings_pb2.Settings()
        merged.CopyFrom(current)
        if not fields.apply_fields(merged, request, paths):
            return False
        _settings.check_cross_fields(merged, paths)
        if fields.FieldSet(paths).has(_settings.MASTER_NODE_FLAVOR) and merged.master_node_flavor:
            txn.require(
                FLAVOR,
                flavor_pb2.FlavorKey(name=merged.master_node_flavor),
                missing=lambda: NotFound("Flavor must preexist"),
            )
        # TODO(#4, metrics): apply retention and continuous-query changes to
        # InfluxDB inside the update, as the original does.
        txn.put(merged)
        return True

    return await runtime.engine.apply(fn)


class SettingsApi(settings_pb2_grpc.SettingsApiServicer):
    """Update, reset and show the settings."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def UpdateSettings(
        self, request: settings_pb2.Settings, context: _Ctx
    ) -> result_pb2.Result:
        """Change the listed fields."""
        await update_settings(self._rt, request)
        return result_pb2.Result()

    async def ResetSettings(
        self, request: settings_pb2.Settings, context: _Ctx
    ) -> result_pb2.Result:
        """Set every field back to its default."""
        defaults = _settings.default_settings()
        defaults.fields.extend(_settings.ALL_FIELDS)
        await update_settings(self._rt, defaults)
        return result_pb2.Result()

    async def ShowSettings(
        self, request: settings_pb2.Settings, context: _Ctx
    ) -> settings_pb2.Settings:
        """The stored settings."""
        current = self._rt.caches.get(SETTINGS, SETTINGS_KEY)
        if current is None:
            raise NotFound("no settings found")
        return current


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    settings_pb2_grpc.add_SettingsApiServicer_to_server(SettingsApi(runtime), server)
    return ["edgeproto.SettingsApi"]
