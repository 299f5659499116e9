"""A Controller killed in the middle of a cloudlet create: after its restart the cloudlet is in
a terminal state, and a user can delete it (§5.8)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from distributed_match_engine import loc_pb2
from edgeproto import (
    ccrm_pb2_grpc,
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    cloudletkey_pb2,
    common_pb2,
)

from edge_cloud import localservers
from edge_cloud.localservers import ServerProcess
from edge_cloud.notify import NotifyClient
from tests.integration.helpers import eventually

ROOT = Path(__file__).resolve().parents[3]


class HangingCcrm(ccrm_pb2_grpc.CloudletPlatformAPIServicer):
    """A CCRM that starts creating and never finishes; deletes succeed."""

    def __init__(self) -> None:
        self.creating = asyncio.Event()

    async def ApplyCloudlet(
        self, request: cloudlet_pb2.Cloudlet, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[cloudlet_pb2.CloudletInfo]:
        info = cloudlet_pb2.CloudletInfo(key=request.key)
        info.fields.append("11")
        if request.state == common_pb2.CREATE_REQUESTED:
            info.status.msgs.append("Creating cloudlet")
            yield info
            self.creating.set()
            await asyncio.sleep(600)
        else:
            info.status.msgs.append("Deleting cloudlet")
            yield info


async def drain(call: Any) -> None:
    """Read a streaming call to its end (or its error)."""
    while await call.read() is not grpc.aio.EOF:
        pass


class ControllerProcess:
    """`python -m services.controller` on fixed ports, restartable."""

    def __init__(self, etcd: ServerProcess, redis: ServerProcess, ccrm: str, tmp: Path) -> None:
        self.api_port = localservers.free_port()
        self.notify_port = localservers.free_port()
        self.namespace = f"/e2e/{uuid.uuid4().hex[:12]}/"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
        self.env["EDGE_ETCD_URLS"] = etcd.client_url
        self.redis = redis.client_url
        self.ccrm = ccrm
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def _spawn(self, ready: Path) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"controller{self.runs}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable, "-m", "services.controller",
                "--api-addr", f"127.0.0.1:{self.api_port}",
                "--notify-addr", f"127.0.0.1:{self.notify_port}",
                "--metrics-addr", "",
                "--http-addr", "127.0.0.1:0",
                "--redis-standalone-addr", self.redis,
                "--platform-service-addrs", f"ccrm={self.ccrm}",
                "--etcd-namespace", self.namespace,
                "--ready-file", str(ready),
                "--shutdown-grace", "2",
            ],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        return process

    async def start(self) -> None:
        self.runs += 1
        ready = self.tmp / f"ready{self.runs}.json"
        self.process = process = self._spawn(ready)

        async def started() -> None:
            if process.poll() is not None:
                pytest.fail(f"controller exited with {process.returncode}")
            assert ready.exists()

        await eventually(started, within=30)
        assert json.loads(ready.read_text())["api"] == self.api_port

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def test_killed_mid_create_then_restarted(
    etcd_server: ServerProcess, redis_server: ServerProcess, tmp_path: Path
) -> None:
    ccrm = HangingCcrm()
    server = grpc.aio.server()
    ccrm_pb2_grpc.add_CloudletPlatformAPIServicer_to_server(ccrm, server)
    ccrm_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    ctl = ControllerProcess(etcd_server, redis_server, f"127.0.0.1:{ccrm_port}", tmp_path)
    try:
        await ctl.start()
        # the CCRM registers its platform over notify, as a CCRM does
        registrar = NotifyClient([f"127.0.0.1:{ctl.notify_port}"], name="ccrm")
        async with registrar:
            registrar.send(
                cloudlet_pb2.PlatformFeatures(platform_type="fakeccrm", node_type="ccrm")
            )
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ctl.api_port}") as channel:
                stub = cloudlet_pb2_grpc.PlatformFeaturesApiStub(channel)

                async def registered() -> None:
                    shown = stub.ShowPlatformFeatures(cloudlet_pb2.PlatformFeatures(), timeout=5)
                    assert [f.platform_type async for f in shown] == ["fakeccrm"]

                await eventually(registered)
        key = cloudletkey_pb2.CloudletKey(organization=f"op{uuid.uuid4().hex[:6]}", name="c1")
        cloudlet = cloudlet_pb2.Cloudlet(
            key=key,
            location=loc_pb2.Loc(latitude=1, longitude=2),
            num_dynamic_ips=2,
            platform_type="fakeccrm",
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{ctl.api_port}")
        create = cloudlet_pb2_grpc.CloudletApiStub(channel).CreateCloudlet(cloudlet, timeout=60)
        first = await create.read()
        assert first.message == "Setting physicalname to match cloudlet name"
        async with asyncio.timeout(10):
            await ccrm.creating.wait()
        ctl.kill()  # no cleanup at all: the cloudlet stays CreateRequested in etcd
        with pytest.raises(grpc.aio.AioRpcError):
            await drain(create)
        await channel.close()

        await ctl.start()  # same address, so the same controller id: its own operation
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ctl.api_port}") as channel:
            api = cloudlet_pb2_grpc.CloudletApiStub(channel)

            async def failed() -> None:
                shown = api.ShowCloudlet(cloudlet_pb2.Cloudlet(key=key), timeout=5)
                assert [c.state async for c in shown] == [common_pb2.CREATE_ERROR]

            await eventually(failed, within=20)
            [shown] = [c async for c in api.ShowCloudlet(cloudlet_pb2.Cloudlet(key=key), timeout=5)]
            assert "restarted during the operation" in shown.errors[0]
            lines = [
                r.message
                async for r in api.DeleteCloudlet(cloudlet_pb2.Cloudlet(key=key), timeout=30)
            ]
            assert lines == ["Deleting cloudlet", "Deleted Cloudlet successfully"]
            assert [c async for c in api.ShowCloudlet(cloudlet_pb2.Cloudlet(), timeout=5)] == []
    finally:
        ctl.stop()
        await server.stop(None)
