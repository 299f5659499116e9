"""The daemon skeleton as operators see it: a real process, real ports, real signals."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.support.demo_daemon import ECHO, SERVICE

ROOT = Path(__file__).resolve().parents[2]
GRACE = 5.0
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll until `probe` returns something other than None; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Demo:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def err_lines(self) -> list[str]:
        return self.stderr.read_text().splitlines()


@pytest.fixture
def start_demo(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    started: list[Demo] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}

    def start(*args: str) -> Demo:
        n = len(started)
        out, err = tmp_path / f"demo{n}.out", tmp_path / f"demo{n}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.demo_daemon", *args],
                cwd=ROOT,
                env=env,
                stdout=stdout,
                stderr=stderr,
            )
        demo = Demo(process, out, err)
        started.append(demo)
        return demo

    yield start
    for demo in started:
        if demo.process.poll() is None:
            demo.process.kill()
            demo.process.wait()


def http_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def wait_ready(demo: Demo, ready_file: Path) -> dict[str, int]:
    def probe() -> dict[str, int] | None:
        if demo.process.poll() is not None:
            pytest.fail(f"demo exited with {demo.process.returncode}: {demo.err_lines()}")
        return json.loads(ready_file.read_text()) if ready_file.exists() else None

    return eventually(probe, 30, "the ready file")


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_serves_reports_and_stops_cleanly(
    start_demo: Callable[..., Demo], tmp_path: Path, loop: str
) -> None:
    ready_file = tmp_path / "ready.json"
    demo = start_demo(
        "--api-addr", "127.0.0.1:0",
        "--ready-file", str(ready_file),
        "--shutdown-grace", str(GRACE),
        "--event-loop", loop,
    )  # fmt: skip
    ports = wait_ready(demo, ready_file)
    assert set(ports) == {"api", "metrics"}
    assert all(isinstance(p, int) and p > 0 for p in ports.values())

    with grpc.insecure_channel(f"127.0.0.1:{ports['api']}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [answer] = list(reflection.ServerReflectionInfo(iter([request]), timeout=5))
        listed = {s.name for s in answer.list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health"} <= listed

        echo: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ECHO)
        assert echo(b"hello", timeout=5) == b"hello"
        with pytest.raises(grpc.RpcError) as caught:
            echo(b"", timeout=5)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "nothing to echo"

        status, text = http_get(ports["metrics"], "/metrics")
        assert status == 200
        for code in ("OK", "INVALID_ARGUMENT"):
            labels = f'code="{code}",method="{ECHO}",service="demo"'
            assert f"edge_grpc_server_handled_total{{{labels}}} 1.0" in text
        assert http_get(ports["metrics"], "/readyz")[0] == 200
        assert http_get(ports["metrics"], "/healthz")[0] == 200

        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=GRACE + 10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        demo.process.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()  # the watch is an in-flight RPC: ending it lets shutdown finish early

    assert demo.wait(timeout=GRACE + 5) == 0
    assert time.monotonic() - started < GRACE
    assert not ready_file.exists()
    assert demo.err_lines() == []
    logged = [json.loads(line) for line in demo.stdout.read_text().splitlines()]
    assert {"starting demo", "serving", "stopped"} <= {entry["msg"] for entry in logged}
    assert all(entry["service"] == "demo" for entry in logged)


def test_bad_config_is_one_line_and_exit_2(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo("--api-addr", "nonsense")
    assert demo.wait() == 2
    assert demo.err_lines() == [
        "demo: error: bad value 'nonsense' for --api-addr: expected host:port"
    ]
    assert "Traceback" not in demo.stdout.read_text()


def test_port_in_use_is_one_line_and_exit_2(start_demo: Callable[..., Demo]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = start_demo("--api-addr", f"127.0.0.1:{port}")
        assert demo.wait() == 2
    assert demo.err_lines() == [
        f"demo: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert "Traceback" not in demo.stdout.read_text()


def test_fatal_error_is_logged_once_and_exit_1(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo("--fail-start")
    assert demo.wait() == 1
    logged = [json.loads(line) for line in demo.stdout.read_text().splitlines()]
    [fatal] = [entry for entry in logged if entry["level"] == "critical"]
    assert fatal["msg"] == "demo failed"
    assert "Traceback" in fatal["exc_info"]
    assert "RuntimeError: cannot reach the imaginary database" in fatal["exc_info"]
    assert sum("Traceback" in str(entry) for entry in logged) == 1
    assert demo.err_lines() == []


def test_help_names_flags_and_variables(start_demo: Callable[..., Demo]) -> None:
    demo = start_demo("--help")
    assert demo.wait() == 0
    text = " ".join(demo.stdout.read_text().split())
    assert "--api-addr HOST:PORT, -apiAddr HOST:PORT" in text
    assert "EDGE_API_ADDR" in text
    assert demo.err_lines() == []
