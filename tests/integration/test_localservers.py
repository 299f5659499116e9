"""edge_cloud.localservers with real processes: start failures, restarts, run records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_cloud import localservers
from edge_cloud.localservers import RunDir, ServerProcess, ServerStartError


def test_a_server_that_dies_reports_its_log(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="exited with status 1") as caught:
        localservers.start_redis(tmp_path / "data", tmp_path / "log", binary=Path("/bin/false"))
    assert "last lines of" in str(caught.value)


def test_a_port_taken_by_someone_else_is_named(tmp_path: Path, redis_server: ServerProcess) -> None:
    taken = redis_server.ports["client"]
    with pytest.raises(ServerStartError) as caught:
        localservers.start_redis(tmp_path / "data", tmp_path / "log", port=taken)
    assert f"port 127.0.0.1:{taken} is already in use" in str(caught.value)


def test_run_dir_stops_what_it_recorded(tmp_path: Path, redis_server: ServerProcess) -> None:
    run = RunDir(tmp_path / ".run")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    try:
        run.record_pid("sleeper", sleeper.pid)
        run.record_pid("finished", finished.pid)
        statuses = {r.name: r.alive() for r in run.load()}
        assert statuses == {"sleeper": True, "finished": False}

        assert run.stop_all(timeout=5) == 1  # the stale record is dropped, not signalled
        assert sleeper.wait(5) is not None
        assert run.load() == []
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_restart_on_same_ports_keeps_data(private_etcd: ServerProcess) -> None:
    first_log = private_etcd.log_path.read_text()
    private_etcd.stop()
    assert not private_etcd.alive()
    again = localservers.start_etcd(
        private_etcd.data_dir,
        private_etcd.log_path,
        port=private_etcd.ports["client"],
        peer_port=private_etcd.ports["peer"],
        metrics_port=private_etcd.ports["metrics"],
    )
    try:
        assert again.endpoints == private_etcd.endpoints
        assert again.log_path.read_text().startswith(first_log)  # appended, not truncated
    finally:
        again.stop()
