"""The `make run` path end to end: every server and daemon, the demo world, a FindCloudlet."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORLD = ROOT / "docker" / "demo" / "world.yaml"
UP_TIMEOUT = 240.0


@pytest.mark.slow
def test_local_up_loads_the_demo_and_finds_the_nearest_instance(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    log = tmp_path / "up.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "edge_cloud.cli", "local", "--run-dir",
                str(tmp_path / "run"), "up", "--etcd-port", "0", "--redis-port", "0",
                "--influx-port", "0", "--free-ports", "--demo", str(WORLD),
                "--ready-file", str(ready),
            ],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + UP_TIMEOUT
        while not ready.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "edge local up did not finish: " + log.read_text()
            time.sleep(0.2)
        endpoints = json.loads(ready.read_text())
        assert {"etcd", "redis", "influxdb", "controller", "ccrm", "dme"} <= set(endpoints)
        output = log.read_text()
        # the device stands in Potsdam: Berlin is nearer than Paris
        assert "FindCloudlet from (52.3906, 13.0645), Potsdam: FIND_FOUND" in output
        assert "berlin" in output.split("FIND_FOUND", 1)[1].splitlines()[0]
        assert 'AppInst {"name":"hello-berlin","organization":"demo-dev"}: created' in output
        # then the same world read back over the Controller's HTTP listener, from the ready file
        rest = f"http://127.0.0.1:{endpoints['controller']['http']}"
        flavors = _line(output, f"REST POST {rest}/edgeproto/v1/show/flavor: ")
        assert "x1.small 2vcpu/2048MB/20GB" in flavors.split(", ")
        zones = _line(
            output, f"REST GET {rest}/edge-application-management/vwip/edge-cloud-zones: "
        )
        assert zones.split(", ") == ["central-europe (active)", "west-europe (active)"]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log.read_text()
    assert "stopped" in log.read_text()


def _line(output: str, prefix: str) -> str:
    """What follows `prefix` on the one line of `output` that starts with it."""
    found = [line.removeprefix(prefix) for line in output.splitlines() if line.startswith(prefix)]
    assert len(found) == 1, f"no single line starting {prefix!r} in:\n{output}"
    return found[0]
