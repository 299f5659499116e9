"""The DME fed from objects as the Controller stores them in etcd (EtcdNotifySource)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

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
    appinst_pb2,
    cloudlet_pb2,
    operatorcode_pb2,
    ratelimit_pb2,
)
from google.protobuf.message import Message

from edge_cloud.config import load
from edge_cloud.notify import EtcdNotifySource, NotifyServer
from edge_cloud.objects import codec, keys
from edge_cloud.server import bind, new_server, serve
from edge_cloud.store import EtcdStore
from services.dme.config import DmeConfig
from services.dme.daemon import DmeDaemon
from tests.unit.services.dme.builders import APP, app_inst, app_key_pb, cloudlet_key

SEND_TYPES: list[type[Message]] = [
    operatorcode_pb2.OperatorCode,
    ratelimit_pb2.FlowRateLimitSettings,
    ratelimit_pb2.MaxReqsRateLimitSettings,
    app_pb2.App,
    cloudlet_pb2.Cloudlet,
    cloudlet_pb2.CloudletInfo,
    appinst_pb2.AppInst,
]


async def put(store: EtcdStore, obj: Message) -> None:
    await store.put(keys.object_store_key(obj), codec.encode(obj))


@contextlib.asynccontextmanager
async def dme_on(store: EtcdStore) -> AsyncIterator[DmeDaemon]:
    server = new_server("ctl")
    port = bind(server, "127.0.0.1:0")
    cfg = load(
        DmeConfig,
        [
            "--api-addr", "127.0.0.1:0", "--http-addr", "", "--metrics-addr", "",
            "--notify-addrs", f"127.0.0.1:{port}",
        ],
        {},
    )  # fmt: skip
    notify = NotifyServer(EtcdNotifySource(store, SEND_TYPES), name="ctl", send_types=SEND_TYPES)
    notify.add_to(server)
    await server.start()
    dme = DmeDaemon(cfg)
    ready, stop = asyncio.Event(), asyncio.Event()
    try:
        async with notify:
            task = asyncio.create_task(serve(dme, ready, stop=stop))
            try:
                async with asyncio.timeout(10):
                    await ready.wait()
                    await dme.notify.wait_synced()
                yield dme
            finally:
                stop.set()
                await task
    finally:
        await server.stop(None)


async def test_objects_from_etcd_reach_the_dme(etcd_store: EtcdStore) -> None:
    key = cloudlet_key("dmuus", "frankfurt")
    await put(etcd_store, operatorcode_pb2.OperatorCode(code="310260", organization="dmuus"))
    await put(etcd_store, app_pb2.App(key=app_key_pb(APP), access_ports="tcp:80"))
    await put(
        etcd_store,
        cloudlet_pb2.Cloudlet(key=key, location=loc_pb2.Loc(latitude=50.11, longitude=8.68)),
    )
    await put(
        etcd_store,
        cloudlet_pb2.CloudletInfo(key=key, state=appcommon_pb2.CloudletState.CLOUDLET_STATE_READY),
    )
    await put(etcd_store, app_inst("inst1", key, 50.11, 8.68))
    await put(
        etcd_store,
        ratelimit_pb2.MaxReqsRateLimitSettings(
            key=ratelimit_pb2.MaxReqsRateLimitSettingsKey(
                max_reqs_settings_name="findcloudlet-window",
                rate_limit_key=ratelimit_pb2.RateLimitSettingsKey(
                    api_name="FindCloudlet",
                    api_endpoint_type=ratelimit_pb2.ApiEndpointType.DME,
                    rate_limit_target=ratelimit_pb2.RateLimitTarget.ALL_REQUESTS,
                ),
            ),
            settings=ratelimit_pb2.MaxReqsSettings(
                max_reqs_algorithm=ratelimit_pb2.MaxReqsRateLimitAlgorithm.FIXED_WINDOW_ALGORITHM,
                max_requests=2,
                interval=60_000_000_000,
            ),
        ),
    )
    async with (
        dme_on(etcd_store) as dme,
        grpc.aio.insecure_channel(f"127.0.0.1:{dme.ports['api']}") as channel,
    ):
        reg = await session_pb2_grpc.SessionStub(channel).RegisterClient(
            session_pb2.RegisterClientRequest(
                org_name=APP.organization, app_name=APP.name, app_vers=APP.version
            ),
            timeout=5,
        )
        api = match_engine_api_pb2_grpc.MatchEngineApiStub(channel)
        request = app_client_pb2.FindCloudletRequest(
            session_cookie=reg.session_cookie,
            carrier_name="310260",  # translated to dmuus by the OperatorCode
            gps_location=loc_pb2.Loc(latitude=50, longitude=8),
        )
        for _ in range(2):
            reply = await api.FindCloudlet(request, timeout=5)
            assert reply.status == app_client_pb2.FindCloudletReply.FIND_FOUND
            assert reply.fqdn == "inst1.frankfurt.dmuus.example.net"
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await api.FindCloudlet(request, timeout=5)
        assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Error is: Exceeded limit of 2, retry again in " in (limited.value.details() or "")
