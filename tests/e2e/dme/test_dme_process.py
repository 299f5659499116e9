"""The DME as a process: fed by a real Controller, and by a simulated one over notify.

`test_with_a_real_controller` runs etcd, Redis and the Controller process, creates a
Flavor and an App through the Controller's API, and checks that the DME learns the App over
notify: RegisterClient works and FindCloudlet answers FIND_NOTFOUND (no instances exist;
the Controller cannot deploy AppInsts in this test setup).

`test_with_a_simulated_controller` serves notify from the test itself (a `NotifyServer`
over a `MemorySource`, what the Controller would send) to put a cloudlet, its CloudletInfo,
an AppInst and a rate-limit setting into the DME: FIND_FOUND over split, legacy and REST
paths, forged and expired cookies, and rate limiting. The cloudlet and instance are
simulated; no CRM or infrastructure exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from distributed_match_engine import (
    app_client_pb2,
    appcommon_pb2,
    loc_pb2,
    match_engine_api_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from edgeproto import (
    app_pb2,
    app_pb2_grpc,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    common_pb2,
    flavor_pb2,
    flavor_pb2_grpc,
    ratelimit_pb2,
)

from edge_cloud.localservers import ServerProcess
from edge_cloud.notify import MemorySource, NotifyServer
from edge_cloud.server import bind, new_server

ROOT = Path(__file__).resolve().parents[3]
NEAR = loc_pb2.Loc(latitude=50.1, longitude=8.6)
APP = app_pb2.AppKey(organization="devorg", name="app", version="1.0")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}


def wait_ready(process: subprocess.Popen[bytes], ready: Path, what: str) -> dict[str, int]:
    deadline = time.monotonic() + 30
    while not ready.exists():
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for the {what} ready file")
        time.sleep(0.05)
    return dict(json.loads(ready.read_text()))


@contextlib.contextmanager
def process(
    args: list[str], tmp: Path, name: str, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, int]]]:
    ready = tmp / f"{name}.ready.json"
    out = (tmp / f"{name}.out").open("wb")
    err = (tmp / f"{name}.err").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", *args, "--ready-file", str(ready)],
        cwd=ROOT, env=env, stdout=out, stderr=err,
    )  # fmt: skip
    try:
        yield proc, wait_ready(proc, ready, name)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        err.close()


def dme_args(notify_port: int, *extra: str) -> list[str]:
    return [
        "services.dme",
        "--api-addr", "127.0.0.1:0",
        "--http-addr", "127.0.0.1:0",
        "--metrics-addr", "",
        "--notify-addrs", f"127.0.0.1:{notify_port}",
        "--shutdown-grace", "2",
        "--no-random", "true",
        *extra,
    ]  # fmt: skip


async def eventually_registered(channel: grpc.aio.Channel, service: str = "Session") -> str:
    """RegisterClient once the App has arrived over notify (bounded)."""
    stub: Any = (
        session_pb2_grpc.SessionStub(channel)
        if service == "Session"
        else match_engine_api_pb2_grpc.MatchEngineApiStub(channel)
    )
    request = session_pb2.RegisterClientRequest(
        org_name=APP.organization, app_name=APP.name, app_vers=APP.version
    )
    async with asyncio.timeout(20):
        while True:
            try:
                reply = await stub.RegisterClient(request, timeout=5)
                return str(reply.session_cookie)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            await asyncio.sleep(0.05)


async def find(channel: grpc.aio.Channel, cookie: str) -> app_client_pb2.FindCloudletReply:
    stub = match_engine_api_pb2_grpc.MatchEngineApiStub(channel)
    request = app_client_pb2.FindCloudletRequest(session_cookie=cookie, gps_location=NEAR)
    reply: app_client_pb2.FindCloudletReply = await stub.FindCloudlet(request, timeout=5)
    return reply


async def rest(port: int, call: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/v1/{call}", json=body) as response,
    ):
        return response.status, await response.json()


async def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 15) == 0


async def test_with_a_real_controller(
    etcd_server: ServerProcess, redis_server: ServerProcess, tmp_path: Path
) -> None:
    env = clean_env()
    env["EDGE_ETCD_URLS"] = etcd_server.client_url
    controller_args = [
        "services.controller",
        "--api-addr", "127.0.0.1:0",
        "--notify-addr", "127.0.0.1:0",
        "--metrics-addr", "",
        "--http-addr", "127.0.0.1:0",
        "--redis-standalone-addr", redis_server.client_url,
        "--platform-service-addrs", "ccrm=127.0.0.1:1",
        "--etcd-namespace", f"/e2e/{uuid.uuid4().hex[:12]}/",
        "--shutdown-grace", "5",
    ]  # fmt: skip
    with (
        process(controller_args, tmp_path, "controller", env) as (ctl, ctl_ports),
        process(dme_args(ctl_ports["notify"]), tmp_path, "dme", clean_env()) as (dme, ports),
    ):
        assert set(ports) == {"api", "http"}
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{ctl_ports['api']}") as ctl_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{ports['api']}") as channel,
        ):
            await flavor_pb2_grpc.FlavorApiStub(ctl_channel).CreateFlavor(
                flavor_pb2.Flavor(
                    key=flavor_pb2.FlavorKey(name="x1.small"), ram=1024, vcpus=1, disk=10
                ),
                timeout=10,
            )
            await app_pb2_grpc.AppApiStub(ctl_channel).CreateApp(
                app_pb2.App(
                    key=APP,
                    image_type=app_pb2.IMAGE_TYPE_DOCKER,
                    image_path="registry.example.com/devorg/app:1.0",
                    access_ports="tcp:80",
                    default_flavor=flavor_pb2.FlavorKey(name="x1.small"),
                ),
                timeout=10,
            )
            cookie = await eventually_registered(channel)
            legacy_cookie = await eventually_registered(channel, "MatchEngineApi")
            for c in (cookie, legacy_cookie):
                reply = await find(channel, c)
                assert reply.status == app_client_pb2.FindCloudletReply.FIND_NOTFOUND
            status, body = await rest(
                ports["http"],
                "registerclient",
                {"org_name": "devorg", "app_name": "app", "app_vers": "1.0"},
            )
            assert status == 200
            status, body = await rest(
                ports["http"],
                "findcloudlet",
                {"session_cookie": body["session_cookie"], "gps_location": {"latitude": 1}},
            )
            assert (status, body["status"]) == (200, "FIND_NOTFOUND")
            with pytest.raises(grpc.aio.AioRpcError) as forged:
                await find(channel, cookie[:-6] + "AAAAAA")
            assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await stop(dme)
        await stop(ctl)
    assert "Traceback" not in (tmp_path / "dme.err").read_text()


def simulated_region() -> list[Any]:
    cloudlet = cloudletkey_pb2.CloudletKey(organization="dmuus", name="frankfurt")
    return [
        app_pb2.App(key=APP, access_ports="tcp:80"),
        cloudlet_pb2.Cloudlet(key=cloudlet, location=loc_pb2.Loc(latitude=50.11, longitude=8.68)),
        cloudlet_pb2.CloudletInfo(
            key=cloudlet, state=appcommon_pb2.CloudletState.CLOUDLET_STATE_READY
        ),
        appinst_pb2.AppInst(
            key=appinst_pb2.AppInstKey(name="inst1", organization="devorg"),
            app_key=APP,
            cloudlet_key=cloudlet,
            cluster_key=cluster_pb2.ClusterKey(name="cl1", organization="devorg"),
            cloudlet_loc=loc_pb2.Loc(latitude=50.11, longitude=8.68),
            uri="inst1.frankfurt.dmuus.example.net",
            state=common_pb2.TrackedState.READY,
            health_check=appcommon_pb2.HealthCheck.HEALTH_CHECK_OK,
        ),
        ratelimit_pb2.FlowRateLimitSettings(
            key=ratelimit_pb2.FlowRateLimitSettingsKey(
                flow_settings_name="findcloudlet-e2e",
                rate_limit_key=ratelimit_pb2.RateLimitSettingsKey(
                    api_name="FindCloudlet",
                    api_endpoint_type=ratelimit_pb2.ApiEndpointType.DME,
                    rate_limit_target=ratelimit_pb2.RateLimitTarget.ALL_REQUESTS,
                ),
            ),
            settings=ratelimit_pb2.FlowSettings(
                flow_algorithm=ratelimit_pb2.FlowRateLimitAlgorithm.TOKEN_BUCKET_ALGORITHM,
                reqs_per_second=0.5,
                burst_size=3,
            ),
        ),
    ]


@contextlib.asynccontextmanager
async def simulated_controller(source: MemorySource) -> AsyncIterator[int]:
    notify = NotifyServer(
        source,
        name="controller",
        send_types=[
            ratelimit_pb2.FlowRateLimitSettings,
            app_pb2.App,
            cloudlet_pb2.Cloudlet,
            cloudlet_pb2.CloudletInfo,
            appinst_pb2.AppInst,
        ],
    )
    server = new_server("sim-controller")
    notify.add_to(server)
    port = bind(server, "127.0.0.1:0")
    await server.start()
    try:
        async with notify:
            yield port
    finally:
        await server.stop(None)


async def test_with_a_simulated_controller(tmp_path: Path) -> None:
    source = MemorySource(simulated_region())
    async with simulated_controller(source) as notify_port:
        args = dme_args(notify_port, "--cookie-expiration", "2s")
        with process(args, tmp_path, "dme", clean_env()) as (dme, ports):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ports['api']}") as channel:
                cookie = await eventually_registered(channel)
                # split and legacy paths are the same MatchEngineApi service name; the
                # legacy-only RegisterClient path is exercised too
                legacy_cookie = await eventually_registered(channel, "MatchEngineApi")
                for c in (cookie, legacy_cookie):
                    reply = await find(channel, c)
                    assert reply.status == app_client_pb2.FindCloudletReply.FIND_FOUND
                    assert reply.fqdn == "inst1.frankfurt.dmuus.example.net"
                status, body = await rest(
                    ports["http"],
                    "findcloudlet",
                    {"session_cookie": cookie, "gps_location": {"latitude": 50, "longitude": 8}},
                )
                assert (status, body["status"]) == (200, "FIND_FOUND")
                # burst 3 used up: the 4th FindCloudlet within a second is refused
                with pytest.raises(grpc.aio.AioRpcError) as limited:
                    await find(channel, cookie)
                assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert (limited.value.details() or "").startswith(
                    "Request for /distributed_match_engine.MatchEngineApi/FindCloudlet rate "
                    "limited, please retry later."
                )
                status, body = await rest(
                    ports["http"],
                    "findcloudlet",
                    {"session_cookie": cookie, "gps_location": {"latitude": 50}},
                )
                assert (status, body["code"]) == (429, 8)
                # the cookie expires after 2s (bounded wait)
                async with asyncio.timeout(10):
                    while True:
                        status, body = await rest(
                            ports["http"],
                            "getlocation",
                            {"session_cookie": cookie},
                        )
                        if status == 401:
                            break
                        assert status == 200
                        await asyncio.sleep(0.2)
                assert body["message"].startswith("token is expired by ")
                status, body = await rest(
                    ports["http"], "getlocation", {"session_cookie": cookie[:-4] + "AAAA"}
                )
                assert status == 401
            await stop(dme)
