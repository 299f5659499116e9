"""`edge local up|status|down` and `edge serve` as a user runs them: real processes and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def edge(*args: str, run_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the `edge` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "edge_cloud.cli", *args],
        cwd=ROOT,
        env={**os.environ, "EDGE_RUN_DIR": str(run_dir)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_for_file(
    path: Path, process: subprocess.Popen[str], timeout: float = 60
) -> dict[str, dict[str, str]]:
    """Wait (bounded) until `edge local up` wrote its ready file."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"edge local up exited {process.returncode}: {out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail("edge local up did not become ready")
        time.sleep(0.1)
    data: dict[str, dict[str, str]] = json.loads(path.read_text())
    return data


def start_up(run_dir: Path, ready: Path, cwd: Path = ROOT) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_cloud.cli",
            "local",
            "--run-dir",
            str(run_dir),
            "up",
            "--etcd-port",
            "0",
            "--redis-port",
            "0",
            "--influx-port",
            "0",
            "--no-daemons",
            "--ready-file",
            str(ready),
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_local_up_serves_then_stops_cleanly_and_can_run_again(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    for attempt in range(2):  # the second run proves no manual clean-up is needed
        ready = tmp_path / f"ready{attempt}.json"
        # a relative run directory, as `make run` uses: servers must not depend on their cwd
        process = start_up(Path("run"), ready, cwd=tmp_path)
        try:
            endpoints = wait_for_file(ready, process)
            assert set(endpoints) == {"etcd", "redis", "influxdb"}
            with urllib.request.urlopen(  # noqa: S310 - loopback http only
                endpoints["etcd"]["client"] + "/health", timeout=5
            ) as r:
                assert json.loads(r.read())["health"] == "true"
            influx = endpoints["influxdb"]["client"]
            with urllib.request.urlopen(  # noqa: S310 - loopback http only
                influx + "/ping", timeout=5
            ) as r:
                assert r.status == 204
            status = edge("local", "status", run_dir=run_dir)
            assert status.returncode == 0
            assert "etcd" in status.stdout
            assert "redis" in status.stdout
            assert (run_dir / "logs" / "etcd.log").exists()
        finally:
            process.send_signal(signal.SIGINT)
            out, _ = process.communicate(timeout=60)
        assert process.returncode == 0, out
        assert "stopped" in out
        assert edge("local", "status", run_dir=run_dir).stdout.strip() == "nothing is running"


@pytest.mark.slow
def test_local_down_cleans_up_after_a_killed_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ready = tmp_path / "ready.json"
    process = start_up(run_dir, ready)
    try:
        wait_for_file(ready, process)
    finally:
        process.kill()  # no chance to clean up: the servers stay behind
        process.communicate(timeout=30)
    down = edge("local", "down", run_dir=run_dir)
    assert down.returncode == 0
    assert "stopped 3 process(es)" in down.stdout
    assert edge("local", "status", run_dir=run_dir).stdout.strip() == "nothing is running"


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_cloud.cli",
                "local",
                "--run-dir",
                str(tmp_path / "run"),
                "up",
                "--etcd-port",
                str(port),
                "--no-daemons",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1, result.stderr
    assert "in use" in errors[0]
    assert "Traceback" not in result.stderr


def test_serve_unknown_service_lists_the_known_ones(tmp_path: Path) -> None:
    result = edge("serve", "nosuchdaemon", run_dir=tmp_path)
    assert result.returncode == 2
    assert "unknown service 'nosuchdaemon'" in result.stderr


def test_missing_server_binary_is_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_cloud.cli",
            "local",
            "--run-dir",
            str(tmp_path / "run"),
            "up",
            "--etcd-port",
            "0",
            "--redis-port",
            "0",
            "--influx-port",
            "0",
            "--no-daemons",
        ],
        cwd=ROOT,
        env={**os.environ, "EDGE_REDIS_BIN": str(tmp_path / "no-such-redis-server")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1, result.stderr
    assert "redis-server" in errors[0]
    assert "Traceback" not in result.stderr
    # etcd was started before Redis failed; it must not be left running
    status = edge("local", "status", run_dir=tmp_path / "run")
    assert status.stdout.strip() == "nothing is running"
