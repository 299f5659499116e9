"""Rendering replies: plain data, tables, progress and exit codes."""

from __future__ import annotations

import io
import json

import grpc
import yaml
from distributed_match_engine import loc_pb2
from edgeproto import (
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    common_pb2,
    flavor_pb2,
    operatorcode_pb2,
    result_pb2,
    settings_pb2,
)
from rich.console import Console

from edge_cloud.cli import _output


def console(*, terminal: bool = False) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=120, highlight=False), buf


def flavor(name: str, ram: int = 1024) -> flavor_pb2.Flavor:
    return flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name=name), ram=ram, vcpus=1, disk=10)


def test_plain_data_is_readable_and_round_trips() -> None:
    settings = settings_pb2.Settings(create_app_inst_timeout=15 * 60 * 10**9)
    settings.fields.append("8")
    settings.edge_events_metrics_continuous_queries_collection_intervals.add(
        interval=24 * 3600 * 10**9
    )
    plain = _output.to_plain(settings)
    assert plain == {
        "create_app_inst_timeout": "15m0s",
        "edge_events_metrics_continuous_queries_collection_intervals": [{"interval": "24h0m0s"}],
    }
    assert _output.to_plain(flavor("x")) == {
        "key": {"name": "x"},
        "ram": 1024,  # uint64: a number, not proto JSON's string
        "vcpus": 1,
        "disk": 10,
    }


def test_json_and_yaml() -> None:
    text = _output.format_objects([flavor("a"), flavor("b")], "json", single=False)
    assert [f["key"]["name"] for f in json.loads(text)] == ["a", "b"]
    one = _output.format_objects([flavor("a")], "yaml", single=True)
    assert yaml.safe_load(one) == {"key": {"name": "a"}, "ram": 1024, "vcpus": 1, "disk": 10}
    assert json.loads(_output.format_objects([], "json", single=False)) == []


def test_columns_and_headers() -> None:
    assert _output.columns(flavor_pb2.Flavor.DESCRIPTOR) == [
        "key.name", "ram", "vcpus", "disk", "opt_res_map",
    ]  # fmt: skip
    cols = _output.columns(appinst_pb2.AppInst.DESCRIPTOR)
    assert cols[:2] == ["key.name", "key.organization"]
    assert "state" in cols
    assert "cloudlet_key.name" in cols
    assert _output.columns(operatorcode_pb2.OperatorCode.DESCRIPTOR) == ["code", "organization"]
    # no main columns known: key, then top-level scalar fields
    gpu = _output.columns(cloudlet_pb2.GPUDriver.DESCRIPTOR)
    assert gpu[:2] == ["key.name", "key.organization"]
    assert "state" in gpu
    assert _output.header("cloudlet_key.name") == "cloudlet"
    assert _output.header("cloudlet_key.organization") == "cloudlet-org"
    assert _output.header("app_key.version") == "app-vers"
    assert _output.header("location.latitude") == "latitude"
    assert _output.header("key.name") == "name"


def test_table_drops_empty_columns_and_shows_enums_short() -> None:
    out, buf = console()
    cloudlet = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization="op", name="paris"),
        location=loc_pb2.Loc(latitude=48.85, longitude=2.35),
        platform_type="fake",
        state=common_pb2.READY,
    )
    _output.render(out, [cloudlet], "table", cloudlet_pb2.Cloudlet.DESCRIPTOR, single=False)
    lines = buf.getvalue().splitlines()
    assert lines[0].split() == [
        "organization",
        "name",
        "platform_type",
        "latitude",
        "longitude",
        "state",
    ]
    assert lines[1].split() == ["op", "paris", "fake", "48.85", "2.35", "ready"]


def test_wide_rows_when_not_a_terminal() -> None:
    buf = io.StringIO()
    narrow = Console(file=buf, width=20, highlight=False)
    _output.render(narrow, [flavor("a-rather-long-flavor-name")], "table",
                   flavor_pb2.Flavor.DESCRIPTOR, single=False)  # fmt: skip
    assert "a-rather-long-flavor-name" in buf.getvalue()


def test_single_object_renders_vertically() -> None:
    out, buf = console()
    settings = settings_pb2.Settings(
        create_app_inst_timeout=60 * 10**9, shepherd_health_check_retries=3
    )
    _output.render(out, [settings], "table", settings_pb2.Settings.DESCRIPTOR, single=True)
    rows = [line.split() for line in buf.getvalue().splitlines()]
    assert ["create_app_inst_timeout", "1m0s"] in rows
    assert ["shepherd_health_check_retries", "3"] in rows


def test_results_print_their_message() -> None:
    out, buf = console()
    results = [result_pb2.Result(message="Flavor created"), result_pb2.Result()]
    _output.render(out, results, "table", result_pb2.Result.DESCRIPTOR, single=True)
    assert buf.getvalue() == "Flavor created\n"


def test_progress_plain_and_live() -> None:
    out, buf = console()
    with _output.progress(out, "CreateCloudlet", live=False) as show:
        show("Creating")
        show("Done")
    assert buf.getvalue().splitlines() == ["Creating", "Done"]

    live, live_buf = console(terminal=True)
    with _output.progress(live, "CreateCloudlet") as show:
        show("Creating")
        show("Done")
    assert "Creating" in live_buf.getvalue()
    assert "Done" in live_buf.getvalue()


def test_exit_codes() -> None:
    assert _output.exit_code(grpc.StatusCode.NOT_FOUND) == 3
    assert _output.exit_code(grpc.StatusCode.ALREADY_EXISTS) == 4
    assert _output.exit_code(grpc.StatusCode.FAILED_PRECONDITION) == 5
    assert _output.exit_code(grpc.StatusCode.INVALID_ARGUMENT) == 6
    assert _output.exit_code(grpc.StatusCode.UNAVAILABLE) == 7
    assert _output.exit_code(grpc.StatusCode.INTERNAL) == 1
    assert _output.exit_code(grpc.StatusCode.UNKNOWN) == 1
    for code, number in _output.EXIT_CODES.items():
        assert f"{number}" in _output.EXIT_CODES_HELP
        assert code.name.split("_")[0] in _output.EXIT_CODES_HELP
