"""The Controller process with its notify listener and Redis: what daemons connect to."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc.aio
import pytest
from edgeproto import cloudlet_pb2, cloudlet_pb2_grpc, flavor_pb2, flavor_pb2_grpc

from edge_cloud import localservers
from edge_cloud.localservers import ServerProcess
from edge_cloud.notify import NotifyClient

ROOT = Path(__file__).resolve().parents[3]


def controller_env(etcd: ServerProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env["EDGE_ETCD_URLS"] = etcd.client_url
    return env


@pytest.fixture
def controller(
    etcd_server: ServerProcess, redis_server: ServerProcess, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, int], Path]]:
    ready = tmp_path / "ready.json"
    out = (tmp_path / "controller.out").open("wb")
    err = (tmp_path / "controller.err").open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "services.controller",
            "--api-addr", "127.0.0.1:0",
            "--notify-addr", "127.0.0.1:0",
            "--metrics-addr", "",
            "--http-addr", "127.0.0.1:0",
            "--redis-standalone-addr", redis_server.client_url,
            "--platform-service-addrs", "ccrm=127.0.0.1:1",
            "--etcd-namespace", f"/e2e/{uuid.uuid4().hex[:12]}/",
            "--ready-file", str(ready),
            "--shutdown-grace", "5",
        ],
        cwd=ROOT, env=controller_env(etcd_server), stdout=out, stderr=err,
    )  # fmt: skip
    try:
        deadline = 30.0
        while not ready.exists():
            if process.poll() is not None:
                pytest.fail(f"controller exited with {process.returncode}")
            deadline -= 0.05
            if deadline < 0:
                pytest.fail("timed out waiting for the ready file")
            time.sleep(0.05)
        yield process, json.loads(ready.read_text()), tmp_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        out.close()
        err.close()


async def test_notify_client_receives_flavors(
    controller: tuple[subprocess.Popen[bytes], dict[str, int], Path],
) -> None:
    process, ports, tmp = controller
    assert set(ports) == {"api", "notify", "http"}  # the ready file names the REST gateway's
    assert len({ports["api"], ports["notify"], ports["http"]}) == 3
    client = NotifyClient(
        [f"127.0.0.1:{ports['notify']}"], name="dme", backoff_initial=0.05, backoff_max=0.5
    )
    flavors = client.cache(flavor_pb2.Flavor)
    created = asyncio.Event()
    deleted = asyncio.Event()

    @flavors.on_update
    async def updated(new: flavor_pb2.Flavor, old: flavor_pb2.Flavor | None) -> None:
        created.set()

    @flavors.on_delete
    async def removed(old: flavor_pb2.Flavor) -> None:
        deleted.set()

    async with client, grpc.aio.insecure_channel(f"127.0.0.1:{ports['api']}") as channel:
        async with asyncio.timeout(20):
            await client.wait_synced()
        assert len(flavors) == 0
        api = flavor_pb2_grpc.FlavorApiStub(channel)
        small = flavor_pb2.Flavor(
            key=flavor_pb2.FlavorKey(name="x1.small"), ram=1024, vcpus=1, disk=10
        )
        await api.CreateFlavor(small, timeout=10)
        async with asyncio.timeout(10):
            await created.wait()
        [got] = flavors.values()
        assert (got.key.name, got.ram) == ("x1.small", 1024)
        await api.DeleteFlavor(small, timeout=10)
        async with asyncio.timeout(10):
            await deleted.wait()
        assert len(flavors) == 0

        # the cloudlet APIs are served now (slice 1 answered UNIMPLEMENTED)
        cloudlets = cloudlet_pb2_grpc.CloudletApiStub(channel)
        shown = [c async for c in cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(), timeout=10)]
        assert shown == []
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 15) == 0
    assert (tmp / "controller.err").read_text() == ""


def test_unreachable_redis_fails_the_start(etcd_server: ServerProcess, tmp_path: Path) -> None:
    port = localservers.free_port()
    result = subprocess.run(
        [
            sys.executable, "-m", "services.controller",
            "--api-addr", "127.0.0.1:0", "--notify-addr", "127.0.0.1:0", "--metrics-addr", "",
            "--http-addr", "127.0.0.1:0",
            "--etcd-namespace", f"/e2e/{uuid.uuid4().hex[:12]}/",
            "--redis-standalone-addr", f"127.0.0.1:{port}",
        ],
        cwd=ROOT, env=controller_env(etcd_server), capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    errors = result.stderr.decode().strip().splitlines()
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(
        f"controller: error: Redis at redis://127.0.0.1:{port} is unreachable"
    )
    assert b"Traceback" not in result.stdout + result.stderr
