"""Settings: the region-wide singleton's defaults and per-field validation (controller.md §3.3).

Durations are Go `time.Duration` nanosecond counts; error texts show them the way Go prints
them ("must be greater than 0s", "... than 30s").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from edgeproto import settings_pb2

from edge_cloud.errors import InvalidArgument
from edge_cloud.objects import fields
from edge_cloud.objects.durations import HOUR, MILLISECOND, MINUTE, SECOND, format_duration

__all__ = [
    "ALL_FIELDS",
    "MASTER_NODE_FLAVOR",
    "check_cross_fields",
    "check_fields",
    "default_settings",
    "describe",
    "fill_defaults",
]

MASTER_NODE_FLAVOR: Final = "14"
CQ_INTERVALS: Final = "30"
CQ_INTERVALS_INTERVAL: Final = "30.1"
CQ_INTERVALS_RETENTION: Final = "30.2"
EDGE_EVENTS_COLLECTION_INTERVAL: Final = "24"

_Settings = settings_pb2.Settings


def default_settings() -> settings_pb2.Settings:
    """The original's `GetDefaultSettings()`."""
    s = _Settings()
    s.shepherd_metrics_collection_interval = 5 * SECOND
    s.shepherd_alert_evaluation_interval = 15 * SECOND
    s.shepherd_metrics_scrape_interval = 15 * SECOND
    s.shepherd_health_check_retries = 3
    s.shepherd_health_check_interval = 5 * SECOND
    s.auto_deploy_interval_sec = 300
    s.auto_deploy_offset_sec = 20
    s.auto_deploy_max_intervals = 10
    s.create_app_inst_timeout = 30 * MINUTE
    s.update_app_inst_timeout = 30 * MINUTE
    s.delete_app_inst_timeout = 20 * MINUTE
    s.create_cluster_inst_timeout = 30 * MINUTE
    s.update_cluster_inst_timeout = 20 * MINUTE
    s.delete_cluster_inst_timeout = 20 * MINUTE
    s.create_cloudlet_timeout = 30 * MINUTE
    s.update_cloudlet_timeout = 20 * MINUTE
    s.master_node_flavor = ""
    s.max_tracked_dme_clients = 100
    s.cloudlet_maintenance_timeout = 5 * MINUTE
    s.update_vm_pool_timeout = 20 * MINUTE
    s.update_trust_policy_timeout = 10 * MINUTE
    s.dme_api_metrics_collection_interval = 30 * SECOND
    s.influx_db_metrics_retention = 672 * HOUR
    s.cleanup_reservable_auto_cluster_idletime = 30 * MINUTE
    s.influx_db_cloudlet_usage_metrics_retention = 8760 * HOUR
    s.appinst_client_cleanup_interval = 24 * HOUR
    s.location_tile_side_length_km = 2
    s.edge_events_metrics_collection_interval = 1 * HOUR
    s.influx_db_edge_events_metrics_retention = 672 * HOUR
    for interval, retention in ((24, 168), (168, 672), (672, 672 * 12)):
        s.edge_events_metrics_continuous_queries_collection_intervals.add(
            interval=interval * HOUR, retention=retention * HOUR
        )
    s.influx_db_downsampled_metrics_retention = 8760 * HOUR
    s.cluster_auto_scale_averaging_duration_sec = 60
    s.cluster_auto_scale_retry_delay = 1 * MINUTE
    s.alert_policy_min_trigger_time = 30 * SECOND
    s.disable_rate_limit = False
    s.rate_limit_max_tracked_ips = 10000
    s.resource_snapshot_thread_interval = 60 * MINUTE
    s.platform_ha_instance_active_expire_time = 1 * SECOND
    s.platform_ha_instance_poll_interval = 300 * MILLISECOND
    s.ccrm_api_timeout = 30 * SECOND
    return s


# Fields that start-up fills when zero, in the original's order (initDefaults).
_FILLED_WHEN_ZERO: Final = (
    "cloudlet_maintenance_timeout",
    "shepherd_alert_evaluation_interval",
    "shepherd_metrics_scrape_interval",
    "update_vm_pool_timeout",
    "update_trust_policy_timeout",
    "influx_db_metrics_retention",
    "cleanup_reservable_auto_cluster_idletime",
    "influx_db_cloudlet_usage_metrics_retention",
    "max_tracked_dme_clients",
    "dme_api_metrics_collection_interval",
    "edge_events_metrics_collection_interval",
    "influx_db_edge_events_metrics_retention",
    "influx_db_downsampled_metrics_retention",
    "location_tile_side_length_km",
    "edge_events_metrics_continuous_queries_collection_intervals",
    "create_cloudlet_timeout",
    "update_cloudlet_timeout",
    "appinst_client_cleanup_interval",
    "cluster_auto_scale_averaging_duration_sec",
    "cluster_auto_scale_retry_delay",
    "alert_policy_min_trigger_time",
    "rate_limit_max_tracked_ips",
    "resource_snapshot_thread_interval",
    "platform_ha_instance_active_expire_time",
    "platform_ha_instance_poll_interval",
    "ccrm_api_timeout",
    # Not in the original's list, but zero would make every timed operation fail at once;
    # controller.md §3.3 says every zero-valued setting is filled.
    "shepherd_metrics_collection_interval",
    "shepherd_health_check_retries",
    "shepherd_health_check_interval",
    "auto_deploy_interval_sec",
    "auto_deploy_max_intervals",
    "create_app_inst_timeout",
    "update_app_inst_timeout",
    "delete_app_inst_timeout",
    "create_cluster_inst_timeout",
    "update_cluster_inst_timeout",
    "delete_cluster_inst_timeout",
)


def fill_defaults(current: settings_pb2.Settings | None) -> settings_pb2.Settings | None:
    """Start-up: the settings to write, or None when the stored ones need nothing.

    Args:
        current: The stored settings, or None when there are none yet.

    Returns:
        The whole default object when none is stored; the stored one with its zero fields
        filled from the defaults when any was zero; None when nothing changed.
    """
    defaults = default_settings()
    if current is None:
        return defaults
    merged = _Settings()
    merged.CopyFrom(current)
    modified = False
    for name in _FILLED_WHEN_ZERO:
        if name == "edge_events_metrics_continuous_queries_collection_intervals":
            if len(getattr(merged, name)) == 0:
                getattr(merged, name).extend(getattr(defaults, name))
                modified = True
            continue
        if getattr(merged, name) == 0:
            if name == "shepherd_metrics_scrape_interval":
                # the evaluation interval may not be shorter than the scrape interval
                merged.shepherd_metrics_scrape_interval = min(
                    defaults.shepherd_metrics_scrape_interval,
                    merged.shepherd_alert_evaluation_interval,
                )
            else:
                setattr(merged, name, getattr(defaults, name))
            modified = True
    return merged if modified else None


def describe(path: str) -> str:
    """The original's description of a Settings field path ("Create App Inst Timeout")."""
    return fields.field_path_name(_Settings.DESCRIPTOR, path)


ALL_FIELDS: Final = fields.all_field_paths(_Settings.DESCRIPTOR)
"""Every Settings field path, parents and children (what ResetSettings lists)."""

_Check = Callable[[settings_pb2.Settings, str], None]


def _gt(name: str, bound: float, *, duration: bool = True, gte: bool = False) -> _Check:
    def check(s: settings_pb2.Settings, path: str) -> None:
        value = getattr(s, name)
        if (value < bound) if gte else (value <= bound):
            shown = format_duration(int(bound)) if duration else f"{bound:g}"
            than = "greater than or equal to" if gte else "greater than"
            raise InvalidArgument(f"{describe(path)} must be {than} {shown}")

    return check


def _none(s: settings_pb2.Settings, path: str) -> None:
    """Fields the original does not validate."""


def _cq_intervals(s: settings_pb2.Settings, path: str) -> None:
    for cq in s.edge_events_metrics_continuous_queries_collection_intervals:
        if cq.interval <= 0:
            raise InvalidArgument(f"{describe(path)} must be greater than 0s")
        if cq.retention < 0:
            raise InvalidArgument(f"{describe(path)} must be greater than or equal to 0s")


_CHECKS: Final[dict[str, _Check]] = {
    "2": _gt("shepherd_metrics_collection_interval", 0),
    "3": _gt("shepherd_health_check_retries", 0, duration=False),
    "4": _gt("shepherd_health_check_interval", 0),
    "5": _gt("auto_deploy_interval_sec", 0, duration=False),
    "6": _gt("auto_deploy_offset_sec", 0, duration=False, gte=True),
    "7": _gt("auto_deploy_max_intervals", 0, duration=False),
    "8": _gt("create_app_inst_timeout", 0),
    "9": _gt("update_app_inst_timeout", 0),
    "10": _gt("delete_app_inst_timeout", 0),
    "11": _gt("create_cluster_inst_timeout", 0),
    "12": _gt("update_cluster_inst_timeout", 0),
    "13": _gt("delete_cluster_inst_timeout", 0),
    MASTER_NODE_FLAVOR: _none,
    "16": _gt("max_tracked_dme_clients", 0, duration=False),
    "18": _none,
    "19": _gt("cloudlet_maintenance_timeout", 0),
    "20": _gt("shepherd_alert_evaluation_interval", 0),
    "21": _gt("update_vm_pool_timeout", 0),
    "22": _gt("update_trust_policy_timeout", 0),
    "23": _gt("dme_api_metrics_collection_interval", 0),
    EDGE_EVENTS_COLLECTION_INTERVAL: _gt("edge_events_metrics_collection_interval", 0),
    "25": _gt("cleanup_reservable_auto_cluster_idletime", 30 * SECOND),
    "26": _none,
    "27": _gt("create_cloudlet_timeout", 0),
    "28": _gt("update_cloudlet_timeout", 0),
    "29": _gt("location_tile_side_length_km", 0, duration=False),
    CQ_INTERVALS: _cq_intervals,
    CQ_INTERVALS_INTERVAL: _none,
    CQ_INTERVALS_RETENTION: _none,
    "31": _none,
    "32": _none,
    "33": _gt("appinst_client_cleanup_interval", 2 * SECOND),
    "34": _gt("cluster_auto_scale_averaging_duration_sec", 0, duration=False),
    "35": _gt("cluster_auto_scale_retry_delay", 0),
    "36": _gt("alert_policy_min_trigger_time", 0),
    "37": _none,
    "39": _gt("rate_limit_max_tracked_ips", 0, duration=False),
    "40": _gt("shepherd_metrics_scrape_interval", 0),
    "41": _gt("resource_snapshot_thread_interval", 30 * SECOND),
    "42": _gt("platform_ha_instance_poll_interval", 10 * MILLISECOND),
    "43": _gt("platform_ha_instance_active_expire_time", 500 * MILLISECOND, gte=True),
    "44": _gt("ccrm_api_timeout", 0),
}


def check_fields(settings: settings_pb2.Settings, paths: Iterable[str]) -> None:
    """Validate the listed fields of an update request, in the order given.

    Args:
        settings: The request (not yet merged into the stored settings).
        paths: Its `fields` list.

    Raises:
        InvalidArgument: `<Field Desc> must be greater than <v>` and similar.
    """
    for path in paths:
        check = _CHECKS.get(path)
        if check is not None:
            check(settings, path)


def check_cross_fields(merged: settings_pb2.Settings, paths: Iterable[str]) -> None:
    """Checks between fields of the merged settings (the master flavor is checked elsewhere).

    Raises:
        InvalidArgument: With the original's text.
    """
    if merged.shepherd_alert_evaluation_interval < merged.shepherd_metrics_scrape_interval:
        raise InvalidArgument(
            "Shepherd alert evaluation interval cannot be less than Shepherd metrics scrape "
            "interval"
        )
    if merged.platform_ha_instance_active_expire_time <= merged.platform_ha_instance_poll_interval:
        raise InvalidArgument(
            "Platform HA Instance Active Expire Time cannot be less than Platform HA Instance "
            "Poll Interval"
        )
    if {CQ_INTERVALS, EDGE_EVENTS_COLLECTION_INTERVAL} & set(paths):
        collection = merged.edge_events_metrics_collection_interval
        for cq in merged.edge_events_metrics_continuous_queries_collection_intervals:
            if cq.interval <= collection:
                raise InvalidArgument(
                    "All EdgeEvents continuous query collection intervals must be greater than "
                    "the EdgeEventsMetricsCollectionInterval"
                )
