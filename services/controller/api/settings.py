"""SettingsApi: the region-wide Settings singleton (controller.md §3.3)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc.aio
from edgeproto import flavor_pb2, result_pb2, settings_pb2, settings_pb2_grpc

from edge_cloud.errors import EdgeError, InvalidArgument, NotFound
from edge_cloud.influx import InfluxV1Writer, go_duration, influxql_duration
from edge_cloud.objects import fields, registry
from edge_cloud.objects.registry import SETTINGS_KEY
from services.controller import _settings
from services.controller._engine import Txn
from services.controller._runtime import SETTINGS, Runtime

__all__ = [
    "CQ_RETRY_DELAY",
    "RETENTION_DATABASES",
    "ContinuousQuery",
    "SettingsApi",
    "add",
    "create_continuous_queries",
    "edge_events_queries",
    "sync_continuous_queries",
    "update_settings",
]

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

EDGE_EVENTS_DB: Final = "edgeevents_metrics"
"""Where the DME's edge-events latency and device statistics land (the CQs' source)."""
DOWNSAMPLED_DB: Final = "downsampled_metrics"
"""Where the continuous queries write their per-interval aggregates."""
CQ_FIELD: Final = "30"
"""Settings.edge_events_metrics_continuous_queries_collection_intervals."""
CQ_RETRY_DELAY: Final = 10.0
"""Seconds between attempts to create the queries at start (the original's reconnect delay)."""
LATENCY_AGGREGATIONS: Final = (
    ("0s", 'sum("0s")'),
    ("5ms", 'sum("5ms")'),
    ("10ms", 'sum("10ms")'),
    ("25ms", 'sum("25ms")'),
    ("50ms", 'sum("50ms")'),
    ("100ms", 'sum("100ms")'),
    ("min", 'min("min")'),
    ("max", 'max("max")'),
    ("total", 'sum("total")'),
    ("avg", 'sum("total") / sum("numsamples")'),
    ("numsamples", 'sum("numsamples")'),
)
"""The original's latency-metric aggregates: histogram buckets and totals add up, the average
is recomputed from them, extremes stay extremes."""
DEVICE_AGGREGATIONS: Final = (("numsessions", 'sum("numsessions")'),)


@dataclass(frozen=True, slots=True)
class ContinuousQuery:
    """One edge-events downsampling query, named and shaped as the original's.

    Attributes:
        measurement: The edge-events measurement read (`latency-metric`, `device-metric`).
        aggregations: (new field, InfluxQL aggregate) pairs.
        interval: The GROUP BY time interval, in ns (also in the query's name).
        retention: How long the downsampled points are kept, in ns; 0 keeps them in the
            database's default policy.
    """

    measurement: str
    aggregations: tuple[tuple[str, str], ...]
    interval: int
    retention: int

    @property
    def name(self) -> str:
        """`<measurement>-<interval>`, the interval as Go writes it (`latency-metric-24h0m0s`)."""
        return f"{self.measurement}-{go_duration(self.interval)}"

    @property
    def policy(self) -> str:
        """The retention policy the aggregates go to in the downsampled database."""
        if self.retention == 0:
            return f"{DOWNSAMPLED_DB}_default"
        return f"{DOWNSAMPLED_DB}_{go_duration(self.retention)}"

    def body(self) -> str:
        """The `SELECT ... INTO ... FROM ... GROUP BY time(...),*` between BEGIN and END."""
        selectors = ",".join(f'{agg} AS "{field}"' for field, agg in self.aggregations)
        into = f'"{DOWNSAMPLED_DB}"."{self.policy}"."{self.name}"'
        group = f"GROUP BY time({influxql_duration(self.interval)}),*"
        # built from constants and durations only, never user text
        return f'SELECT {selectors} INTO {into} FROM "{self.measurement}" {group}'  # noqa: S608


def edge_events_queries(settings: settings_pb2.Settings) -> list[ContinuousQuery]:
    """The latency and device queries of each configured collection interval."""
    queries: list[ContinuousQuery] = []
    for cq in settings.edge_events_metrics_continuous_queries_collection_intervals:
        for measurement, aggregations in (
            ("latency-metric", LATENCY_AGGREGATIONS),
            ("device-metric", DEVICE_AGGREGATIONS),
        ):
            queries.append(
                ContinuousQuery(measurement, aggregations, int(cq.interval), int(cq.retention))
            )
    return queries


async def sync_continuous_queries(
    influx_addr: str,
    old: Sequence[ContinuousQuery],
    new: Sequence[ContinuousQuery],
    default_retention: int,
) -> None:
    """Make InfluxDB run `new` instead of `old`.

    Old queries whose name no new one takes are dropped, and so are their non-default
    retention policies (with the points in them) that no new query writes to, as the
    original does; the new policies and queries are then created. Creating is idempotent,
    so this also (re)creates the queries at start (`old` empty). A query with retention 0
    writes to the downsampled database's default policy; InfluxDB refuses a query whose
    policy is missing, so a missing default policy is created with `default_retention`
    (the Settings' downsampled retention), as the original's downsampled-metrics client
    does when it starts.

    Raises:
        InvalidArgument: InfluxDB refused a statement.
        Unavailable: InfluxDB is unreachable.
    """
    origin = await InfluxV1Writer.connect(influx_addr, EDGE_EVENTS_DB)
    try:
        dest = await InfluxV1Writer.connect(influx_addr, DOWNSAMPLED_DB)
        try:
            names = {q.name for q in new}
            policies = {q.policy for q in new}
            for query in old:
                if query.name not in names:
                    await origin.drop_continuous_query(query.name)
            for policy in sorted({q.policy for q in old} - policies):
                if not policy.endswith("_default"):
                    await dest.drop_retention_policy(policy)
            if any(q.retention == 0 for q in new):
                default = f"{DOWNSAMPLED_DB}_default"
                if default not in {p["name"] for p in await dest.retention_policies()}:
                    await dest.set_retention_policy(default, default_retention, default=True)
            for query in new:
                if query.retention:
                    await dest.set_retention_policy(query.policy, query.retention, default=False)
                await origin.create_continuous_query(query.name, query.body())
        finally:
            await dest.close()
    finally:
        await origin.close()


async def create_continuous_queries(runtime: Runtime, retry_delay: float = CQ_RETRY_DELAY) -> None:
    """Create the edge-events queries of the current settings, retrying until InfluxDB takes them.

    Runs in the background at start (controller.md §1.2 step 15): InfluxDB being down must
    not keep the Controller from serving, and it never raises, so it cannot end the
    daemon's other background loops.
    """
    while True:
        current = runtime.caches.get(SETTINGS, SETTINGS_KEY)
        if current is None:
            current = _settings.default_settings()
        queries = edge_events_queries(current)
        try:
            await sync_continuous_queries(
                runtime.config.influx_addr,
                (),
                queries,
                int(current.influx_db_downsampled_metrics_retention),
            )
        except Exception as err:  # a background loop must not end the daemon
            log.warning(
                "edge-events continuous queries not created yet (retry in %.0fs): %s",
                retry_delay,
                err.message if isinstance(err, EdgeError) else f"{type(err).__name__}: {err}",
            )
        else:
            log.info("edge-events continuous queries in place: %s", [q.name for q in queries])
            return
        await asyncio.sleep(retry_delay)


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
    await _apply_continuous_queries(runtime, request, paths)

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


async def _apply_continuous_queries(
    runtime: Runtime, request: settings_pb2.Settings, paths: list[str]
) -> None:
    """Replace the edge-events continuous queries when their intervals change.

    Before the write, like the retentions: if InfluxDB refuses, the update fails and the
    stored intervals keep matching the queries InfluxDB runs. The original also recreates
    them when only the collection interval changes; the queries do not depend on it, so
    here only a changed interval list touches InfluxDB.

    Raises:
        InvalidArgument: InfluxDB refused a statement, or a cross-field check failed.
        Unavailable: InfluxDB is unreachable.
    """
    if not fields.FieldSet(paths).has_or_child(CQ_FIELD):
        return
    current = runtime.caches.get(SETTINGS, SETTINGS_KEY)
    if current is None:
        return
    preview = settings_pb2.Settings()
    preview.CopyFrom(current)
    if not fields.apply_fields(preview, request, paths):
        return
    _settings.check_cross_fields(preview, paths)
    old, new = edge_events_queries(current), edge_events_queries(preview)
    if old == new:
        return
    await sync_continuous_queries(
        runtime.config.influx_addr,
        old,
        new,
        int(preview.influx_db_downsampled_metrics_retention),
    )
    log.info("edge-events continuous queries now %s", [q.name for q in new])


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
