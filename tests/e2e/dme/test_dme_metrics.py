"""DME statistics end to end: DME process → notify → Controller process → InfluxDB (and etcd).

A real Controller (etcd, Redis, InfluxDB from the fixtures) and a DME process: the Settings
are updated through the Controller's API to report `dme-api` every second, an App is created,
a device registers with a platform unique id type and calls FindCloudlet, and the `dme-api`
point of that App appears in InfluxDB's `metrics` database, and the Device record in etcd.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc.aio
import pytest
from distributed_match_engine import (
    app_client_pb2,
    match_engine_api_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from edgeproto import (
    app_pb2,
    app_pb2_grpc,
    device_pb2,
    flavor_pb2,
    flavor_pb2_grpc,
    settings_pb2,
    settings_pb2_grpc,
)

from edge_cloud.errors import EdgeError
from edge_cloud.influx import InfluxV1Writer
from edge_cloud.localservers import ServerProcess
from edge_cloud.objects import keys
from edge_cloud.store import EtcdStore
from tests.e2e.dme.test_dme_process import NEAR, clean_env, dme_args, process, stop


async def test_dme_api_metric_reaches_influxdb_through_the_controller(
    etcd_server: ServerProcess,
    redis_server: ServerProcess,
    influx_server: ServerProcess,
    tmp_path: Path,
) -> None:
    env = clean_env()
    env["EDGE_ETCD_URLS"] = etcd_server.client_url
    namespace = f"/e2e/{uuid.uuid4().hex[:12]}/"
    app = app_pb2.AppKey(organization="devorg", name=f"metrics-{uuid.uuid4().hex[:8]}", version="1")
    controller_args = [
        "services.controller",
        "--api-addr", "127.0.0.1:0",
        "--notify-addr", "127.0.0.1:0",
        "--metrics-addr", "",
        "--http-addr", "127.0.0.1:0",
        "--redis-standalone-addr", redis_server.client_url,
        "--influx-addr", influx_server.client_url,
        "--platform-service-addrs", "ccrm=127.0.0.1:1",
        "--etcd-namespace", namespace,
        "--shutdown-grace", "5",
    ]  # fmt: skip
    with (
        process(controller_args, tmp_path, "controller", env) as (ctl, ctl_ports),
        process(dme_args(ctl_ports["notify"]), tmp_path, "dme", clean_env()) as (dme, ports),
    ):
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{ctl_ports['api']}") as ctl_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{ports['api']}") as channel,
        ):
            await settings_pb2_grpc.SettingsApiStub(ctl_channel).UpdateSettings(
                settings_pb2.Settings(dme_api_metrics_collection_interval=10**9, fields=["23"]),
                timeout=10,
            )
            await flavor_pb2_grpc.FlavorApiStub(ctl_channel).CreateFlavor(
                flavor_pb2.Flavor(
                    key=flavor_pb2.FlavorKey(name="x1.small"), ram=1024, vcpus=1, disk=10
                ),
                timeout=10,
            )
            await app_pb2_grpc.AppApiStub(ctl_channel).CreateApp(
                app_pb2.App(
                    key=app,
                    image_type=app_pb2.IMAGE_TYPE_DOCKER,
                    image_path="registry.example.com/devorg/app:1.0",
                    access_ports="tcp:80",
                    default_flavor=flavor_pb2.FlavorKey(name="x1.small"),
                ),
                timeout=10,
            )
            request = session_pb2.RegisterClientRequest(
                org_name=app.organization,
                app_name=app.name,
                app_vers=app.version,
                unique_id_type="platos-tablet",
                unique_id=uuid.uuid4().hex,
            )
            async with asyncio.timeout(20):
                while True:
                    try:
                        reg = await session_pb2_grpc.SessionStub(channel).RegisterClient(
                            request, timeout=5
                        )
                        break
                    except grpc.aio.AioRpcError as err:
                        if err.code() != grpc.StatusCode.NOT_FOUND:  # the App not there yet
                            raise
                    await asyncio.sleep(0.05)
            reply = await match_engine_api_pb2_grpc.MatchEngineApiStub(channel).FindCloudlet(
                app_client_pb2.FindCloudletRequest(
                    session_cookie=reg.session_cookie, gps_location=NEAR
                ),
                timeout=5,
            )
            assert reply.status == app_client_pb2.FindCloudletReply.FIND_NOTFOUND

            rows: list[dict[str, object]] = []
            async with asyncio.timeout(30):
                while not rows:
                    await asyncio.sleep(0.5)
                    try:
                        influx = await InfluxV1Writer.connect(
                            influx_server.client_url, "metrics", create_database=False
                        )
                    except EdgeError:
                        continue
                    try:
                        rows = await influx.query(
                            'SELECT * FROM "dme-api" WHERE "app" = $app AND "method" = '
                            "'FindCloudlet'",
                            params={"app": app.name},
                        )
                    except EdgeError:
                        rows = []  # the database is created with the first write
                    finally:
                        await influx.close()
            row = rows[-1]
            assert (row["apporg"], row["appver"], row["reqs"], row["errs"]) == (
                "devorg",
                "1",
                1,
                0,
            )
            assert row["dmeId"]

            device = device_pb2.Device(
                key=device_pb2.DeviceKey(
                    unique_id_type="platos-tablet", unique_id=request.unique_id
                )
            )
            store = await EtcdStore.connect([etcd_server.client_url], namespace=namespace)
            try:
                for _ in range(100):  # 10 s
                    if await store.get(keys.object_store_key(device)) is not None:
                        break
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail("the Device never reached etcd")
            finally:
                await store.close()
        await stop(dme)
        await stop(ctl)
