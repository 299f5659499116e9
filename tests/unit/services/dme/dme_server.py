"""An in-process DME (gRPC + REST on loopback) over a World the test fills directly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import grpc.aio
from edgeproto import ratelimit_pb2

from edge_cloud.server import HttpListener, bind, new_server
from services.dme._calls import DmeCalls
from services.dme._cookies import TEST_MODE_KEYS, CookieCodec
from services.dme._edgeevents import EdgeEvents
from services.dme._operators import StandaloneOperator
from services.dme._ranking import MatchEngine, SpatialIndex
from services.dme._ratelimit import RateLimitManager
from services.dme._rest import rest_app
from services.dme._world import World
from services.dme.api.match_engine import add_dme_services


@dataclass
class RunningDme:
    world: World
    calls: DmeCalls
    events: EdgeEvents
    channel: grpc.aio.Channel
    rest_url: str


@contextlib.asynccontextmanager
async def running_dme(
    world: World | None = None,
    *,
    flows: Iterable[ratelimit_pb2.FlowRateLimitSettings] = (),
    test_mode: bool = True,
    qossesaddr: str = "",
) -> AsyncIterator[RunningDme]:
    world = world or World()
    limiter = RateLimitManager(test_mode=test_mode)
    for flow in flows:
        limiter.update_flow(flow)
    operator = StandaloneOperator(qos_session_addr=qossesaddr)
    calls = DmeCalls(
        world,
        MatchEngine(world, SpatialIndex(world)),
        CookieCodec(TEST_MODE_KEYS),
        limiter,
        operator,
        operator,
        token_server_uri="http://toksrv/its",
        qos_session_addr=qossesaddr,
    )
    events = EdgeEvents(calls)
    server = new_server("dme")
    add_dme_services(server, calls, events)
    port = bind(server, "127.0.0.1:0")
    await server.start()
    http = await HttpListener.start(rest_app(calls, events), "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield RunningDme(world, calls, events, channel, f"http://127.0.0.1:{http.port}")
    finally:
        await http.close()
        await server.stop(None)
