"""What the DME reports to the Controller over notify, received by a simulated Controller.

The simulated Controller is a real `NotifyServer` (over a `MemorySource` holding what the
Controller would send: an App with an AutoProvPolicy, two cloudlets, one instance, Settings
with one-second report periods, and a standing AppInstClientKey request) that records every
object and message the DME sends up. Device calls go over real gRPC on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc.aio
from distributed_match_engine import (
    app_client_pb2,
    loc_pb2,
    match_engine_api_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from edgeproto import (
    app_pb2,
    appinst_pb2,
    appinstclient_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    device_pb2,
    metric_pb2,
    settings_pb2,
)
from google.protobuf.message import Message

from edge_cloud.config import load
from edge_cloud.notify import Action, MemorySource, NotifyServer, Peer
from edge_cloud.server import bind, new_server, serve
from services.dme.config import DmeConfig
from services.dme.daemon import DmeDaemon
from tests.unit.services.dme.builders import APP, READY, app_inst, app_key_pb, cloudlet_key

T = TypeVar("T", bound=Message)
SECOND = 1_000_000_000
SEND_TYPES: list[type[Message]] = [
    settings_pb2.Settings,
    cloudlet_pb2.Cloudlet,
    cloudlet_pb2.CloudletInfo,
    autoprovpolicy_pb2.AutoProvPolicy,
    app_pb2.App,
    appinst_pb2.AppInst,
    appinstclient_pb2.AppInstClientKey,
]
BERLIN = loc_pb2.Loc(latitude=52.52, longitude=13.40)
PARIS = loc_pb2.Loc(latitude=48.85, longitude=2.35)


@dataclass
class Received:
    """What the simulated Controller got, in order."""

    items: list[Message] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self, peer: Peer, action: Action, obj: Message) -> None:
        self.items.append(obj)
        self.arrived.set()

    async def wait_for(self, cls: type[T], match: Callable[[T], bool] = lambda _: True) -> T:
        async with asyncio.timeout(10):
            while True:
                for item in self.items:
                    if isinstance(item, cls) and match(item):
                        return item
                self.arrived.clear()
                await self.arrived.wait()


def region() -> list[Message]:
    settings = settings_pb2.Settings(
        dme_api_metrics_collection_interval=1 * SECOND,
        edge_events_metrics_collection_interval=1 * SECOND,
        auto_deploy_interval_sec=1,
        max_tracked_dme_clients=10,
        location_tile_side_length_km=2,
        appinst_client_cleanup_interval=3600 * SECOND,
    )
    berlin = cloudletkey_pb2.CloudletKey(organization="dmuus", name="berlin")
    paris = cloudlet_key("dmuus", "paris")
    policy = autoprovpolicy_pb2.AutoProvPolicy(
        key=autoscalepolicy_pb2.PolicyKey(organization=APP.organization, name="demand"),
        deploy_client_count=2,
        deploy_interval_count=1,
        zones=[cloudletkey_pb2.ZoneKey(organization="dmuus", name="de")],
    )
    return [
        settings,
        cloudlet_pb2.Cloudlet(key=berlin, location=BERLIN, zone="de"),
        cloudlet_pb2.Cloudlet(key=paris, location=PARIS, zone="fr"),
        cloudlet_pb2.CloudletInfo(key=paris, state=READY),
        policy,
        app_pb2.App(key=app_key_pb(APP), access_ports="tcp:80", auto_prov_policies=["demand"]),
        app_inst("paris-inst", paris, PARIS.latitude, PARIS.longitude),
        appinstclient_pb2.AppInstClientKey(app_key=app_key_pb(APP)),
    ]


@contextlib.asynccontextmanager
async def dme_reporting_to(received: Received) -> AsyncIterator[DmeDaemon]:
    server = new_server("ctl")
    port = bind(server, "127.0.0.1:0")
    notify = NotifyServer(
        MemorySource(region()),
        name="ctl",
        send_types=SEND_TYPES,
        receive_types=[device_pb2.Device],
        receive_messages=[
            metric_pb2.Metric,
            autoprovpolicy_pb2.AutoProvCounts,
            appinstclient_pb2.AppInstClient,
        ],
        on_receive=received.receive,
    )
    notify.add_to(server)
    await server.start()
    cfg = load(
        DmeConfig,
        [
            "--api-addr", "127.0.0.1:0", "--http-addr", "", "--metrics-addr", "",
            "--notify-addrs", f"127.0.0.1:{port}", "--scale-id", "dme-under-test",
        ],
        {},
    )  # fmt: skip
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


def tags(metric: metric_pb2.Metric) -> dict[str, str]:
    return {t.name: t.val for t in metric.tags}


def vals(metric: metric_pb2.Metric) -> dict[str, object]:
    return {v.name: getattr(v, v.WhichOneof("value") or "sval") for v in metric.vals}


async def test_dme_reports_stats_clients_devices_and_demand_upstream() -> None:
    received = Received()
    async with (
        dme_reporting_to(received) as dme,
        grpc.aio.insecure_channel(f"127.0.0.1:{dme.ports['api']}") as channel,
    ):
        reg = await session_pb2_grpc.SessionStub(channel).RegisterClient(
            session_pb2.RegisterClientRequest(
                org_name=APP.organization,
                app_name=APP.name,
                app_vers=APP.version,
                unique_id_type="platos-phone",
                unique_id="device-1",
            ),
            timeout=5,
        )
        api = match_engine_api_pb2_grpc.MatchEngineApiStub(channel)
        near_berlin = loc_pb2.Loc(latitude=52.4, longitude=13.1)
        for _ in range(2):
            reply = await api.FindCloudlet(
                app_client_pb2.FindCloudletRequest(
                    session_cookie=reg.session_cookie, gps_location=near_berlin
                ),
                timeout=5,
            )
            assert reply.fqdn == "paris-inst.paris.dmuus.example.net"

        device = await received.wait_for(device_pb2.Device)
        assert (device.key.unique_id_type, device.key.unique_id) == ("platos-phone", "device-1")

        client = await received.wait_for(appinstclient_pb2.AppInstClient)
        assert client.client_key.app_inst_key.name == "paris-inst"
        assert client.client_key.unique_id == "device-1"
        assert (client.location.latitude, client.location.longitude) == (52.4, 13.1)
        assert client.location.timestamp.seconds > 0

        # Berlin (zone de) is closer than Paris: the second search reaches the policy's
        # deploy client count and goes at once with process_now
        counts = await received.wait_for(
            autoprovpolicy_pb2.AutoProvCounts, lambda c: any(n.process_now for n in c.counts)
        )
        assert counts.dme_node_name == "dme-under-test"
        (count,) = counts.counts
        assert (count.zone_key.organization, count.zone_key.name, count.count) == ("dmuus", "de", 2)

        api_metric = await received.wait_for(
            metric_pb2.Metric,
            lambda m: m.name == "dme-api" and tags(m).get("method") == "FindCloudlet",
        )
        assert tags(api_metric) == {
            "apporg": APP.organization,
            "app": APP.name,
            "appver": APP.version,
            "dmeId": "dme-under-test",
            "method": "FindCloudlet",
        }
        values = vals(api_metric)
        assert (values["reqs"], values["errs"], values["foundappinstname"]) == (2, 0, "paris-inst")
        assert values["foundOperator"] == "dmuus"
        assert sum(int(values[b]) for b in ("0s", "5ms", "10ms", "25ms", "50ms", "100ms")) == 2  # type: ignore[call-overload]

        # edge events: a latency report becomes a latency-metric within a period
        stream = api.StreamEdgeEvent()
        await stream.write(
            app_client_pb2.ClientEdgeEvent(
                event_type=app_client_pb2.ClientEdgeEvent.EVENT_INIT_CONNECTION,
                session_cookie=reg.session_cookie,
                edge_events_cookie=reply.edge_events_cookie,
            )
        )
        await stream.read()
        await stream.write(
            app_client_pb2.ClientEdgeEvent(
                event_type=app_client_pb2.ClientEdgeEvent.EVENT_LATENCY_SAMPLES,
                gps_location=near_berlin,
                samples=[loc_pb2.Sample(value=v) for v in (10.0, 20.0, 30.0)],
            )
        )
        await stream.read()
        latency = await received.wait_for(metric_pb2.Metric, lambda m: m.name == "latency-metric")
        assert tags(latency)["appinst"] == "paris-inst"
        assert tags(latency)["locationtile"].endswith("_2")
        assert (vals(latency)["avg"], vals(latency)["numsamples"]) == (20.0, 3)
        stream.cancel()
