"""`edge ctl`, `edge apply` and `edge delete` as users run them, against a real Controller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import yaml

from edge_cloud.localservers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}


@pytest.fixture
def controller_addr(
    etcd_server: ServerProcess, redis_server: ServerProcess, tmp_path: Path
) -> Iterator[str]:
    ready = tmp_path / "ready.json"
    out = (tmp_path / "controller.out").open("wb")
    err = (tmp_path / "controller.err").open("wb")
    env = _env()
    env["EDGE_ETCD_URLS"] = etcd_server.client_url
    process = subprocess.Popen(
        [
            sys.executable, "-m", "services.controller",
            "--api-addr", "127.0.0.1:0",
            "--notify-addr", "127.0.0.1:0",
            "--redis-standalone-addr", redis_server.client_url,
            "--metrics-addr", "",
            "--http-addr", "127.0.0.1:0",
            "--etcd-namespace", f"/e2e/{uuid.uuid4().hex[:12]}/",
            "--ready-file", str(ready),
            "--shutdown-grace", "5",
        ],
        cwd=ROOT, env=env, stdout=out, stderr=err,
    )  # fmt: skip

    def ports() -> dict[str, int] | None:
        if process.poll() is not None:
            pytest.fail(f"controller exited with {process.returncode}")
        return json.loads(ready.read_text()) if ready.exists() else None

    try:
        port = eventually(ports, 30, "the ready file")["api"]
        yield f"127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        out.close()
        err.close()


def edge(*args: str, addr: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m edge_cloud.cli ARGS`, with `--addr` after the verb when given."""
    argv = [sys.executable, "-m", "edge_cloud.cli", *args]
    if addr is not None:
        argv += ["--addr", addr, "--timeout", "20"]
    return subprocess.run(
        argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60, check=False
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def test_flavor_round_trip_and_errors(controller_addr: str) -> None:
    addr = controller_addr
    ok(
        edge(
            "ctl", "flavor", "create", "name=x1.small", "ram=1024", "vcpus=1", "disk=10", addr=addr
        )
    )
    shown = json.loads(ok(edge("ctl", "flavor", "show", "-o", "json", addr=addr)))
    assert shown == [{"key": {"name": "x1.small"}, "ram": 1024, "vcpus": 1, "disk": 10}]

    # the short form, a table, and a key filter
    table = ok(edge("flavor", "show", "name=x1.small", addr=addr))
    assert "x1.small" in table
    assert "1024" in table

    # ALREADY_EXISTS: one line on stderr, exit code 4
    again = edge("flavor", "create", "name=x1.small", "ram=1", "vcpus=1", "disk=1", addr=addr)
    assert again.returncode == 4
    assert again.stderr.strip() == (
        'edge: ALREADY_EXISTS: Flavor key {"name":"x1.small"} already exists'
    )
    # a usage error is caught before anything is sent: exit 2
    bad = edge("ctl", "flavor", "create", "name=x", "colour=red", addr=addr)
    assert bad.returncode == 2
    assert bad.stderr.startswith("edge: INVALID_ARGUMENT: colour=red: Flavor has no field")

    # update: Settings take a duration; the mask is computed from the arguments
    ok(edge("ctl", "settings", "update", "create_app_inst_timeout=15m", addr=addr))
    settings = json.loads(ok(edge("ctl", "settings", "show", "-o", "json", addr=addr)))
    assert settings["create_app_inst_timeout"] == "15m0s"
    ok(edge("ctl", "settings", "reset", addr=addr))

    ok(edge("ctl", "flavor", "delete", "name=x1.small", addr=addr))
    assert json.loads(ok(edge("ctl", "flavor", "show", "-o", "json", addr=addr))) == []
    gone = edge("ctl", "flavor", "delete", "name=x1.small", addr=addr)
    assert gone.returncode == 3
    assert gone.stderr.strip() == 'edge: NOT_FOUND: Flavor key {"name":"x1.small"} not found'


def test_unreachable_controller_exits_7(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "edge_cloud.cli", "ctl", "--addr", "127.0.0.1:1",
            "--timeout", "3", "flavor", "show",
        ],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode in (7, 8), result.stderr
    assert result.stderr.startswith(("edge: UNAVAILABLE: ", "edge: DEADLINE_EXCEEDED: "))
    assert len(result.stderr.strip().splitlines()) == 1


WORLD = """\
flavors:
  - key: {name: x1.small}
    ram: 1024
    vcpus: 1
    disk: 10
zones:
  - key: {organization: op, name: paris}
    description: Paris region
  - key: {organization: op, name: berlin}
apps:
  - key: {organization: dev, name: web, version: "1.0"}
    image_type: docker
    deployment: kubernetes
    image_path: docker.io/library/nginx:latest
    access_ports: tcp:80
    kubernetes_resources:
      cpu_pool: {total_vcpus: {whole: 1}, total_memory: 1024}
"""


def test_apply_and_delete_a_file(controller_addr: str, tmp_path: Path) -> None:
    addr = controller_addr
    world = tmp_path / "world.yaml"
    world.write_text(WORLD)

    first = ok(edge("apply", "-f", str(world), addr=addr))
    assert first.splitlines() == [
        'Flavor {"name":"x1.small"}: created',
        'Zone {"organization":"op","name":"paris"}: created',
        'Zone {"organization":"op","name":"berlin"}: created',
        'App {"organization":"dev","name":"web","version":"1.0"}: created',
    ]
    apps = json.loads(ok(edge("ctl", "app", "show", "org=dev", "-o", "json", addr=addr)))
    assert [(a["key"]["name"], a["image_type"], a["access_ports"]) for a in apps] == [
        ("web", "IMAGE_TYPE_DOCKER", "tcp:80")
    ]

    # applying again changes nothing; a changed field is updated in place
    assert "created" not in ok(edge("apply", "-f", str(world), addr=addr))
    world.write_text(WORLD.replace("Paris region", "Paris and around"))
    second = ok(edge("apply", "-f", str(world), addr=addr)).splitlines()
    assert 'Zone {"organization":"op","name":"paris"}: updated (Description)' in second
    zones = yaml.safe_load(ok(edge("ctl", "zone", "show", "name=paris", "-o", "yaml", addr=addr)))
    assert zones[0]["description"] == "Paris and around"
    ok(edge("ctl", "zone", "update", "name=berlin", "org=op", "description=Berlin", addr=addr))
    zones = json.loads(ok(edge("zone", "show", "zone=berlin", "-o", "json", addr=addr)))
    assert [z["description"] for z in zones] == ["Berlin"]

    deleted = ok(edge("delete", "-f", str(world), addr=addr)).splitlines()
    assert deleted[0] == 'App {"organization":"dev","name":"web","version":"1.0"}: deleted'
    assert deleted[-1] == 'Flavor {"name":"x1.small"}: deleted'
    # deleting again is fine: NOT_FOUND is skipped
    again = ok(edge("delete", "-f", str(world), addr=addr)).splitlines()
    assert all(line.endswith(": not found") for line in again)
    assert json.loads(ok(edge("ctl", "zone", "show", "-o", "json", addr=addr))) == []


def test_apply_settings_only_changes_what_differs(controller_addr: str, tmp_path: Path) -> None:
    addr = controller_addr
    settings = tmp_path / "settings.yaml"
    settings.write_text("settings:\n  create_app_inst_timeout: 15m\n")
    assert ok(edge("apply", "-f", str(settings), addr=addr)).splitlines() == [
        "Settings settings: updated (Create App Inst Timeout)"
    ]
    assert ok(edge("apply", "-f", str(settings), addr=addr)).splitlines() == [
        "Settings settings: unchanged"
    ]
    shown = yaml.safe_load(ok(edge("settings", "show", "-o", "yaml", addr=addr)))
    assert shown["create_app_inst_timeout"] == "15m0s"
    assert ok(edge("delete", "-f", str(settings), addr=addr)).splitlines() == [
        "Settings settings: left as is (settings are never deleted)"
    ]
    ok(edge("settings", "reset", addr=addr))
