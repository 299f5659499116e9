"""The DME's `request-appinst-latency` debug command (dme.md §2.10, aux_services.md §5.3).

An in-process DME on loopback: two devices on the Frankfurt instance and one on Berlin's;
the command for Frankfurt's key asks exactly the two Frankfurt devices, and bad args are
answered in words instead of failing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from distributed_match_engine import (
    app_client_pb2,
    loc_pb2,
    match_engine_api_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)

from services.dme._edgeevents import LATENCY_REQUEST_SENT
from services.dme._world import AppInstKey, World
from tests.unit.services.dme.builders import APP, add_app, add_site
from tests.unit.services.dme.dme_server import RunningDme, running_dme

C = app_client_pb2.ClientEdgeEvent
S = app_client_pb2.ServerEdgeEvent
FRANKFURT = loc_pb2.Loc(latitude=50.1, longitude=8.6)
BERLIN = loc_pb2.Loc(latitude=52.5, longitude=13.4)


@pytest.fixture
async def dme() -> AsyncIterator[RunningDme]:
    world = World()
    add_app(world, official_fqdn="app.example.com", access_ports="tcp:80")
    add_site(world, "dmuus", "frankfurt", 50.11, 8.68)
    add_site(world, "dmuus", "berlin", 52.52, 13.40)
    async with running_dme(world) as running:
        yield running


async def connect(dme: RunningDme, near: loc_pb2.Loc) -> tuple[Any, str]:
    """A device attached over StreamEdgeEvent; returns the stream and its AppInst's name."""
    reply = await session_pb2_grpc.SessionStub(dme.channel).RegisterClient(
        session_pb2.RegisterClientRequest(
            org_name=APP.organization, app_name=APP.name, app_vers=APP.version
        ),
        timeout=5,
    )
    api = match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel)
    found = await api.FindCloudlet(
        app_client_pb2.FindCloudletRequest(session_cookie=reply.session_cookie, gps_location=near),
        timeout=5,
    )
    stream = api.StreamEdgeEvent(timeout=10)
    await stream.write(
        C(
            event_type=C.EVENT_INIT_CONNECTION,
            session_cookie=reply.session_cookie,
            edge_events_cookie=found.edge_events_cookie,
        )
    )
    assert (await stream.read()).event_type == S.EVENT_INIT_CONNECTION
    return stream, found.fqdn.split(".")[0]


async def test_only_the_devices_of_that_app_inst_are_asked(dme: RunningDme) -> None:
    first, inst = await connect(dme, FRANKFURT)
    second, _ = await connect(dme, FRANKFURT)
    other, other_inst = await connect(dme, BERLIN)
    assert inst != other_inst
    args = json.dumps({"name": inst, "organization": APP.organization})

    assert dme.events.request_latency_command(args) == LATENCY_REQUEST_SENT
    for stream in (first, second):
        async with asyncio.timeout(5):
            assert (await stream.read()).event_type == S.EVENT_LATENCY_REQUEST
    # the Berlin device got nothing: its next event is the answer to its own samples
    await other.write(C(event_type=C.EVENT_LATENCY_SAMPLES, gps_location=BERLIN))
    async with asyncio.timeout(5):
        assert (await other.read()).event_type == S.EVENT_LATENCY_PROCESSED
    for stream in (first, second, other):
        stream.cancel()


async def test_bad_args_are_answered_in_words(dme: RunningDme) -> None:
    assert dme.events.request_latency_command("") == "appinst info in args required"
    assert dme.events.request_latency_command("{name").startswith(
        "invalid AppInstKey JSON in args:"
    )
    assert dme.events.request_latency_command("[1]").startswith(
        "args must be an AppInstKey JSON object"
    )
    # a key no device is attached to: sent to nobody, as the original
    unknown = json.dumps({"name": "nowhere", "organization": "devorg"})
    assert dme.events.request_latency_command(unknown) == LATENCY_REQUEST_SENT
    assert dme.events.request_latency(AppInstKey("nowhere", "devorg")) == 0
