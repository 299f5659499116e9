"""The Controller as operators run it: a process on the real etcd, called over gRPC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from edgeproto import (
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    controller_pb2,
    controller_pb2_grpc,
    flavor_pb2,
    flavor_pb2_grpc,
    settings_pb2,
    settings_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edge_cloud.localservers import ServerProcess

ROOT = Path(__file__).resolve().parents[3]
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


@pytest.fixture
def controller(
    etcd_server: ServerProcess, redis_server: ServerProcess, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    ready = tmp_path / "ready.json"
    out = (tmp_path / "controller.out").open("wb")
    err = (tmp_path / "controller.err").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
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
        yield process, port, tmp_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        out.close()
        err.close()


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_flavor_and_settings_over_grpc(
    controller: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    process, port, tmp = controller
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(
            health_pb2.HealthCheckRequest(service="edgeproto.FlavorApi"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

        flavors = flavor_pb2_grpc.FlavorApiStub(channel)
        small = flavor_pb2.Flavor(
            key=flavor_pb2.FlavorKey(name="x1.small"), ram=1024, vcpus=1, disk=10
        )
        flavors.CreateFlavor(small, timeout=10)
        shown = list(flavors.ShowFlavor(flavor_pb2.Flavor(), timeout=10))
        assert [(f.key.name, f.ram) for f in shown] == [("x1.small", 1024)]

        err = rpc_error(lambda: flavors.CreateFlavor(small, timeout=10))
        assert err.code() is grpc.StatusCode.ALREADY_EXISTS
        assert err.details() == 'Flavor key {"name":"x1.small"} already exists'
        bad = flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x"), vcpus=1, disk=1)
        err = rpc_error(lambda: flavors.CreateFlavor(bad, timeout=10))
        assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Ram cannot be 0")
        err = rpc_error(lambda: flavors.UpdateFlavor(small, timeout=10))
        assert err.details() == "Update Flavor not supported"

        settings = settings_pb2_grpc.SettingsApiStub(channel)
        current = settings.ShowSettings(settings_pb2.Settings(), timeout=10)
        assert current.cloudlet_maintenance_timeout == 5 * 60 * 10**9  # int64 on our wire
        request = settings_pb2.Settings(master_node_flavor="x1.small", fields=["14"])
        settings.UpdateSettings(request, timeout=10)
        err = rpc_error(lambda: flavors.DeleteFlavor(small, timeout=10))
        assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert err.details() == (
            "Flavor in use by Settings MasterNodeFlavor, change Settings.MasterNodeFlavor first"
        )
        err = rpc_error(
            lambda: settings.UpdateSettings(
                settings_pb2.Settings(create_app_inst_timeout=0, fields=["8"]), timeout=10
            )
        )
        assert (err.code(), err.details()) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "Create App Inst Timeout must be greater than 0s",
        )
        settings.ResetSettings(settings_pb2.Settings(), timeout=10)
        flavors.DeleteFlavor(small, timeout=10)
        err = rpc_error(lambda: flavors.DeleteFlavor(small, timeout=10))
        assert (err.code(), err.details()) == (
            grpc.StatusCode.NOT_FOUND,
            'Flavor key {"name":"x1.small"} not found',
        )

        cloudlets = cloudlet_pb2_grpc.CloudletApiStub(channel)
        assert list(cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(), timeout=10)) == []

        controllers = controller_pb2_grpc.ControllerApiStub(channel)

        def registered() -> list[controller_pb2.Controller] | None:
            found = list(controllers.ShowController(controller_pb2.Controller(), timeout=10))
            return found or None

        [me] = eventually(registered, 10, "the controller's own record")
        assert me.key.addr == f"127.0.0.1:{port}"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert (tmp / "controller.err").read_text() == ""
    logged = [json.loads(line) for line in (tmp / "controller.out").read_text().splitlines()]
    assert {"serving", "stopped"} <= {entry["msg"] for entry in logged}


def test_unreachable_etcd_fails_the_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    result = subprocess.run(
        [
            sys.executable, "-m", "services.controller",
            "--api-addr", "127.0.0.1:0", "--metrics-addr", "",
            "--http-addr", "127.0.0.1:0",
            "--etcd-urls", "http://127.0.0.1:9", "--etcd-timeout", "1",
        ],
        cwd=ROOT, env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    errors = result.stderr.decode().strip().splitlines()
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("controller: error: etcd is unreachable at 127.0.0.1:9")
    assert b"Traceback" not in result.stdout + result.stderr


def test_bad_region_is_one_line_and_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "services.controller", "--region", "no such"],
        cwd=ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        "controller: error: bad value 'no such' for --region: invalid region name"
    ]
