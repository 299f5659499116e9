"""SettingsApi: the region-wide Settings singleton (controller.md §3.3)."""

from __future__ import annotations

import logging
from typing import Any, Final

import grpc.aio
from edgeproto import flavor_pb2, result_pb2, settings_pb2, settings_pb2_grpc

from edge_cloud.errors import InvalidArgument, NotFound
from edge_cloud.influx import InfluxV1Writer
from edge_cloud.objects import fields, registry
from edge_cloud.objects.registry import SETTINGS_KEY
from services.controller import _settings
from services.controller._engine import Txn
from services.controller._runtime import SETTINGS, Runtime

__all__ = ["RETENTION_DATABASES", "SettingsApi", "add", "update_settings"]

log = logging.getLogger(__name__)

FLAVOR: Final = registry.by_class(flavor_pb2.Flavor)
RETENTION_DATABASES: Final = (
    ("influx_db_metrics_retention", "metrics"),
    ("influx_db_cloudlet_usage_metrics_retention", "cloudlet_resource_usage"),
    ("influx_db_edge_events_metrics_retention", "edgeevents_metrics"),
    ("influx_db_downsampled_metrics_retention", "downsampled_metrics"),
)
"""Settings retention fields and the InfluxDB database each one governs (the original's
DeveloperMetricsDbName, CloudletResourceUsageDbName, EdgeEventsMetricsDbName,
DownsampledMetricsDbName); each database's policy is `<database>_default`."""
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
    await _apply_retentions(runtime, request, paths)

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
        # TODO(#4, metrics): recreate the edge-events continuous queries in InfluxDB when
        # their intervals change, as the original does (none are created at start-up yet).
        txn.put(merged)
        return True

    return await runtime.engine.apply(fn)


async def _apply_retentions(
    runtime: Runtime, request: settings_pb2.Settings, paths: list[str]
) -> None:
    """Set the default retention policy of each metrics database whose retention changes.

    Done before the settings are written, as the original does inside its update: if
    InfluxDB refuses or is down, the update fails and the stored settings keep matching
    what InfluxDB enforces. Unchanged values are not sent (an unchanged update writes
    nothing either), so resetting settings that are already defaults needs no InfluxDB.
    A refused cross-field check is reported before InfluxDB is touched.

    Raises:
        InvalidArgument: InfluxDB refused the policy, or a cross-field check failed.
        Unavailable: InfluxDB is unreachable.
    """
    selected = fields.FieldSet(paths)
    wanted = [(name, db) for name, db in RETENTION_DATABASES if selected.has(_path(name))]
    current = runtime.caches.get(SETTINGS, SETTINGS_KEY)
    if not wanted or current is None:
        return
    preview = settings_pb2.Settings()
    preview.CopyFrom(current)
    if not fields.apply_fields(preview, request, paths):
        return
    _settings.check_cross_fields(preview, paths)
    for name, database in wanted:
        retention = int(getattr(preview, name))
        if retention == int(getattr(current, name)):
            continue
        writer = await InfluxV1Writer.connect(runtime.config.influx_addr, database)
        try:
            await writer.set_retention_policy(f"{database}_default", retention, default=True)
        finally:
            await writer.close()
        log.info("InfluxDB %s now keeps points for %d ns", database, retention)


def _path(name: str) -> str:
    return str(settings_pb2.Settings.DESCRIPTOR.fields_by_name[name].number)


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
