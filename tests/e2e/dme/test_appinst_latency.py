"""AppInstLatencyApi end to end: Controller, CCRM and DME as processes (issue 4).

A device connected over StreamEdgeEvent to an AppInst on a fake cloudlet gets
`EVENT_LATENCY_REQUEST` when an operator calls `RequestAppInstLatency` on the Controller:
the Controller sends the `request-appinst-latency` debug request over notify to the DME,
which asks every edge-events client of that AppInst. The device answers with samples and
gets its statistics back, as it would for samples it sends on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from distributed_match_engine import (
    app_client_pb2,
    loc_pb2,
    match_engine_api_pb2_grpc,
    session_pb2,
)
from edgeproto import (
    app_pb2,
    appinst_pb2,
    appinst_pb2_grpc,
    clusterinst_pb2,
    flavor_pb2,
)

from edge_cloud import localservers
from edge_cloud.localservers import ServerProcess
from tests.e2e.support import ControllerApi, Daemon, Platform, clean_env, fake_cloudlet, ok

TIMEOUT = 30.0
FLAVOR = "x1.small"
DEV = "devorg"
HERE = loc_pb2.Loc(latitude=52.52, longitude=13.40)
_C = app_client_pb2.ClientEdgeEvent
_S = app_client_pb2.ServerEdgeEvent

pytestmark = pytest.mark.timeout(120)


class Region:
    """The Controller's stubs, the DME's address, and the AppInst a device will use."""

    def __init__(self, api: ControllerApi, dme_addr: str, inst: appinst_pb2.AppInst) -> None:
        self.api = api
        self.dme_addr = dme_addr
        self.inst = inst


@pytest.fixture(scope="module")
def region(
    etcd_server: ServerProcess,
    redis_server: ServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Region]:
    workdir: Path = tmp_path_factory.mktemp("latency")
    platform = Platform(etcd_server.client_url, redis_server.client_url, workdir)
    dme = Daemon(
        "dme",
        [
            "--api-addr", f"127.0.0.1:{localservers.free_port()}",
            "--http-addr", "127.0.0.1:0",
            "--metrics-addr", "",
            "--notify-addrs", f"127.0.0.1:{platform.notify_port}",
            "--shutdown-grace", "2",
            "--no-random", "true",
        ],
        workdir,
        env=clean_env(),
    )  # fmt: skip
    platform.start()
    try:
        with grpc.insecure_channel(platform.api_addr) as channel:
            api = ControllerApi(platform, channel)
            api.registered("fake", 20)
            api.create_flavor(FLAVOR, disk=40)
            inst = deploy(api)
            ports = dme.start()
            yield Region(api, f"127.0.0.1:{ports['api']}", inst)
    finally:
        dme.stop()
        platform.stop()


def deploy(api: ControllerApi) -> appinst_pb2.AppInst:
    """A fake cloudlet in Berlin, a docker cluster there and an AppInst of a web App."""
    cloudlet = fake_cloudlet("latop", location=HERE)
    ok(api.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT))
    cluster = clusterinst_pb2.ClusterInst(
        deployment="docker", flavor=flavor_pb2.FlavorKey(name=FLAVOR)
    )
    cluster.key.name, cluster.key.organization = "latclust", DEV
    cluster.cloudlet_key.CopyFrom(cloudlet.key)
    ok(api.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    app = app_pb2.App(
        deployment="docker",
        image_type=app_pb2.IMAGE_TYPE_DOCKER,
        image_path="docker.io/library/nginx:latest",
        access_ports="tcp:80",
        default_flavor=flavor_pb2.FlavorKey(name=FLAVOR),
    )
    app.key.organization, app.key.name, app.key.version = DEV, "web", "1.0"
    api.apps.CreateApp(app, timeout=10)
    inst = appinst_pb2.AppInst(app_key=app.key, cluster_key=cluster.key, cloudlet_key=cloudlet.key)
    inst.key.name, inst.key.organization = "web-berlin", DEV
    ok(api.app_insts.CreateAppInst(inst, timeout=TIMEOUT))
    return inst


async def found_instance(
    dme: match_engine_api_pb2_grpc.MatchEngineApiStub,
) -> tuple[str, app_client_pb2.FindCloudletReply]:
    """RegisterClient and FindCloudlet, once the DME has learnt the AppInst (bounded)."""
    register = session_pb2.RegisterClientRequest(org_name=DEV, app_name="web", app_vers="1.0")
    async with asyncio.timeout(20):
        while True:
            try:
                session = await dme.RegisterClient(register, timeout=5)
                reply = await dme.FindCloudlet(
                    app_client_pb2.FindCloudletRequest(
                        session_cookie=session.session_cookie, gps_location=HERE
                    ),
                    timeout=5,
                )
                if reply.status == app_client_pb2.FindCloudletReply.FIND_FOUND:
                    return session.session_cookie, reply
            except grpc.aio.AioRpcError as err:
                if err.code() is not grpc.StatusCode.NOT_FOUND:
                    raise
            await asyncio.sleep(0.1)


async def request_latency(
    stub: appinst_pb2_grpc.AppInstLatencyApiStub, key: appinst_pb2.AppInstKey
) -> str:
    """RequestAppInstLatency, retried while the DME has not yet registered its node."""
    async with asyncio.timeout(20):
        while True:
            try:
                result = await stub.RequestAppInstLatency(
                    appinst_pb2.AppInstLatency(key=key), timeout=15
                )
                return str(result.message)
            except grpc.aio.AioRpcError as err:
                if err.code() is not grpc.StatusCode.FAILED_PRECONDITION:
                    raise
            await asyncio.sleep(0.1)


async def test_a_connected_device_is_asked_for_latency(region: Region) -> None:
    async with (
        grpc.aio.insecure_channel(region.dme_addr) as dme_channel,
        grpc.aio.insecure_channel(region.api.platform.api_addr) as ctl_channel,
    ):
        dme = match_engine_api_pb2_grpc.MatchEngineApiStub(dme_channel)
        cookie, found = await found_instance(dme)
        stream = dme.StreamEdgeEvent()
        await stream.write(
            _C(
                event_type=_C.EVENT_INIT_CONNECTION,
                session_cookie=cookie,
                edge_events_cookie=found.edge_events_cookie,
            )
        )
        async with asyncio.timeout(10):
            first = await stream.read()
        assert first.event_type == _S.EVENT_INIT_CONNECTION

        latency = appinst_pb2_grpc.AppInstLatencyApiStub(ctl_channel)
        message = await request_latency(latency, region.inst.key)
        assert message == "successfully sent latency request"
        async with asyncio.timeout(10):
            asked = await stream.read()
        assert asked.event_type == _S.EVENT_LATENCY_REQUEST

        # the device measures and answers; the DME sends back the statistics
        await stream.write(
            _C(
                event_type=_C.EVENT_LATENCY_SAMPLES,
                gps_location=HERE,
                samples=[loc_pb2.Sample(value=v) for v in (10.0, 20.0, 30.0)],
            )
        )
        async with asyncio.timeout(10):
            processed = await stream.read()
        assert processed.event_type == _S.EVENT_LATENCY_PROCESSED
        assert (processed.statistics.avg, processed.statistics.num_samples) == (20.0, 3)
        stream.cancel()


async def test_an_unknown_app_inst_is_not_found(region: Region) -> None:
    async with grpc.aio.insecure_channel(region.api.platform.api_addr) as channel:
        latency = appinst_pb2_grpc.AppInstLatencyApiStub(channel)
        missing = appinst_pb2.AppInstKey(name="nowhere", organization=DEV)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await latency.RequestAppInstLatency(appinst_pb2.AppInstLatency(key=missing), timeout=10)
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        assert "nowhere" in (caught.value.details() or "")

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await latency.RequestAppInstLatency(
                appinst_pb2.AppInstLatency(key=appinst_pb2.AppInstKey(name="x")), timeout=10
            )
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
