"""Settings defaults and per-field validation (controller.md §3.3)."""

from __future__ import annotations

import pytest
from edgeproto import settings_pb2

from edge_cloud.errors import InvalidArgument
from edge_cloud.objects.durations import HOUR, MILLISECOND, MINUTE, SECOND
from services.controller import _settings


def test_defaults_are_the_originals() -> None:
    s = _settings.default_settings()
    assert s.create_app_inst_timeout == 30 * MINUTE
    assert s.delete_cluster_inst_timeout == 20 * MINUTE
    assert s.cloudlet_maintenance_timeout == 5 * MINUTE  # does not fit in 32 bits
    assert s.ccrm_api_timeout == 30 * SECOND
    assert s.platform_ha_instance_poll_interval == 300 * MILLISECOND
    assert s.master_node_flavor == ""
    assert [
        (c.interval, c.retention)
        for c in s.edge_events_metrics_continuous_queries_collection_intervals
    ] == [
        (24 * HOUR, 168 * HOUR),
        (168 * HOUR, 672 * HOUR),
        (672 * HOUR, 8064 * HOUR),
    ]


def test_fill_defaults() -> None:
    assert _settings.fill_defaults(None) == _settings.default_settings()
    assert _settings.fill_defaults(_settings.default_settings()) is None
    partial = _settings.default_settings()
    partial.ccrm_api_timeout = 0
    partial.shepherd_metrics_scrape_interval = 0
    partial.shepherd_alert_evaluation_interval = 10 * SECOND
    filled = _settings.fill_defaults(partial)
    assert filled is not None
    assert filled.ccrm_api_timeout == 30 * SECOND
    # never above the evaluation interval
    assert filled.shepherd_metrics_scrape_interval == 10 * SECOND


@pytest.mark.parametrize(
    ("field", "value", "path", "message"),
    [
        ("create_app_inst_timeout", 0, "8", "Create App Inst Timeout must be greater than 0s"),
        (
            "shepherd_health_check_retries",
            0,
            "3",
            "Shepherd Health Check Retries must be greater than 0",
        ),
        (
            "auto_deploy_offset_sec",
            -1,
            "6",
            "Auto Deploy Offset Sec must be greater than or equal to 0",
        ),
        (
            "cleanup_reservable_auto_cluster_idletime",
            30 * SECOND,
            "25",
            "Cleanup Reservable Auto Cluster Idletime must be greater than 30s",
        ),
        (
            "appinst_client_cleanup_interval",
            2 * SECOND,
            "33",
            "Appinst Client Cleanup Interval must be greater than 2s",
        ),
        (
            "platform_ha_instance_active_expire_time",
            400 * MILLISECOND,
            "43",
            "Platform Ha Instance Active Expire Time must be greater than or equal to 500ms",
        ),
        (
            "platform_ha_instance_poll_interval",
            10 * MILLISECOND,
            "42",
            "Platform Ha Instance Poll Interval must be greater than 10ms",
        ),
        (
            "resource_snapshot_thread_interval",
            SECOND,
            "41",
            "Resource Snapshot Thread Interval must be greater than 30s",
        ),
    ],
)
def test_field_checks(field: str, value: int, path: str, message: str) -> None:
    request = settings_pb2.Settings(fields=[path])
    setattr(request, field, value)
    with pytest.raises(InvalidArgument) as caught:
        _settings.check_fields(request, request.fields)
    assert caught.value.message == message


def test_unlisted_fields_are_not_checked() -> None:
    _settings.check_fields(settings_pb2.Settings(fields=["14"]), ["14"])


def cross_error(s: settings_pb2.Settings, paths: list[str]) -> str:
    with pytest.raises(InvalidArgument) as caught:
        _settings.check_cross_fields(s, paths)
    return caught.value.message


def test_cross_checks() -> None:
    s = _settings.default_settings()
    s.shepherd_metrics_scrape_interval = s.shepherd_alert_evaluation_interval + 1
    assert cross_error(s, ["40"]) == (
        "Shepherd alert evaluation interval cannot be less than Shepherd metrics scrape interval"
    )
    s = _settings.default_settings()
    s.platform_ha_instance_poll_interval = s.platform_ha_instance_active_expire_time
    assert cross_error(s, ["42"]) == (
        "Platform HA Instance Active Expire Time cannot be less than Platform HA Instance "
        "Poll Interval"
    )
    s = _settings.default_settings()
    s.edge_events_metrics_collection_interval = 24 * HOUR
    assert cross_error(s, ["24"]) == (
        "All EdgeEvents continuous query collection intervals must be greater than the "
        "EdgeEventsMetricsCollectionInterval"
    )
    _settings.check_cross_fields(s, ["2"])  # only checked when one of the two is updated


def test_reset_lists_every_field() -> None:
    assert "30.1" in _settings.ALL_FIELDS
    assert "1" not in _settings.ALL_FIELDS
    assert (
        len([p for p in _settings.ALL_FIELDS if "." not in p]) == 40
    )  # 2..44 without the reserved 15, 17 and 38
