"""The REST gateway: JSON mapping, errors, CORS, streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from distributed_match_engine import app_client_pb2, qos_pb2, session_pb2
from edgeproto import appinst_pb2

from edge_cloud.errors import InvalidArgument
from services.dme._rest import message_from_json, message_to_json
from services.dme._world import World
from tests.unit.services.dme.builders import add_app, add_site
from tests.unit.services.dme.dme_server import RunningDme, running_dme

NEAR = {"latitude": 50.1, "longitude": 8.6}


@pytest.fixture
async def dme() -> AsyncIterator[RunningDme]:
    world = World()
    add_app(world)
    add_site(world, "dmuus", "frankfurt", 50.11, 8.68)
    async with running_dme(world) as running:
        yield running


async def post(dme: RunningDme, call: str, body: Any, **kwargs: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{dme.rest_url}/v1/{call}", json=body, **kwargs) as response,
    ):
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def cookie(dme: RunningDme) -> str:
    status, body = await post(
        dme, "registerclient", {"org_name": "devorg", "appName": "app", "app_vers": "1.0"}
    )
    assert status == 200, body
    assert body["status"] == "RS_SUCCESS"
    assert body["unique_id_type"] == "dme-ksuid"
    assert "ver" not in body  # zero values are omitted
    return str(body["session_cookie"])


async def test_register_and_find_cloudlet(dme: RunningDme) -> None:
    session_cookie = await cookie(dme)
    status, body = await post(
        dme, "findcloudlet", {"sessionCookie": session_cookie, "gps_location": NEAR}
    )
    assert status == 200
    assert body["status"] == "FIND_FOUND"
    assert body["fqdn"] == "frankfurt-inst.frankfurt.dmuus.example.net"
    assert body["cloudlet_location"]["latitude"] == 50.11
    assert body["tags"] == {"appinst": "frankfurt-inst", "appinstorg": "devorg"}


async def test_notfound_renders_the_empty_location(dme: RunningDme) -> None:
    session_cookie = await cookie(dme)
    dme.world.delete_app_inst(appinst_pb2.AppInstKey(name="frankfurt-inst", organization="devorg"))
    status, body = await post(
        dme, "findcloudlet", {"session_cookie": session_cookie, "gps_location": NEAR}
    )
    assert (status, body) == (200, {"status": "FIND_NOTFOUND", "cloudlet_location": {}})


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        ({"session_cookie": ""}, 401, 16, "VerifyCookie failed: missing cookie"),
        ({"session_cookie": "x"}, 401, 16, "token contains an invalid number of segments"),
    ],
)
async def test_errors_have_the_gateway_shape(
    dme: RunningDme, body: dict[str, str], status: int, code: int, message: str
) -> None:
    assert await post(dme, "findcloudlet", body) == (
        status,
        {"code": code, "message": message, "details": []},
    )


async def test_status_mapping(dme: RunningDme) -> None:
    status, body = await post(
        dme, "registerclient", {"org_name": "x", "app_name": "y", "app_vers": "1"}
    )
    assert (status, body["code"], body["message"]) == (404, 5, "app not found")
    status, body = await post(dme, "registerclient", {"app_name": "y"})
    assert (status, body["code"]) == (400, 3)
    status, body = await post(dme, "registerclient", ["not", "an", "object"])
    assert (status, body["code"]) == (400, 3)


async def test_unknown_enum_value_is_400(dme: RunningDme) -> None:
    session_cookie = await cookie(dme)
    for value in ("QOS_BOGUS", "9"):
        status, body = await post(
            dme, "qosprioritysessioncreate", {"session_cookie": session_cookie, "profile": value}
        )
        assert status == 400
        assert body["message"] == (
            f'unknown value "{value}" for enum distributed_match_engine.QosSessionProfile'
        )


@pytest.mark.parametrize("spelling", ["QOS_LOW_LATENCY", 1, "QosLowLatency", "LowLatency"])
def test_enum_spellings(spelling: object) -> None:
    message = message_from_json({"profile": spelling}, qos_pb2.QosPrioritySessionCreateRequest)
    assert message.profile == qos_pb2.QosSessionProfile.QOS_LOW_LATENCY  # type: ignore[attr-defined]


def test_nested_enums_and_int64() -> None:
    message = message_from_json(
        {"eventType": "LatencySamples", "gpsLocation": {"timestamp": {"seconds": "12"}}},
        app_client_pb2.ClientEdgeEvent,
    )
    assert message.event_type == app_client_pb2.ClientEdgeEvent.EVENT_LATENCY_SAMPLES
    assert message.gps_location.timestamp.seconds == 12
    rendered = message_to_json(message)
    assert rendered["gps_location"]["timestamp"]["seconds"] == "12"
    assert rendered["event_type"] == "EVENT_LATENCY_SAMPLES"


def test_bad_field_type_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        message_from_json({"org_name": 5}, session_pb2.RegisterClientRequest)


async def test_cors(dme: RunningDme) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.options(
            f"{dme.rest_url}/v1/findcloudlet",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        ) as preflight,
    ):
        assert preflight.status == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert preflight.headers["Access-Control-Allow-Headers"] == "Content-Type,Accept"
        assert preflight.headers["Access-Control-Allow-Methods"] == "GET,HEAD,POST,PUT,DELETE"
    status, _ = await post(dme, "findcloudlet", {}, headers={"Origin": "https://a.example"})
    assert status == 401


async def test_qos_position_kpi_is_newline_delimited(dme: RunningDme) -> None:
    session_cookie = await cookie(dme)
    body = {
        "session_cookie": session_cookie,
        "positions": [{"positionid": "3", "gps_location": NEAR}],
    }
    status, text = await post(dme, "getqospositionkpi", body)
    assert status == 200
    lines = (
        [json.loads(line) for line in str(text).splitlines()] if isinstance(text, str) else [text]
    )
    assert len(lines) == 1
    result = lines[0]["result"]
    assert result["status"] == "RS_SUCCESS"
    assert result["position_results"][0]["positionid"] == "3"


async def test_stream_edge_event_over_rest(dme: RunningDme) -> None:
    session_cookie = await cookie(dme)
    _, found = await post(
        dme, "findcloudlet", {"session_cookie": session_cookie, "gps_location": NEAR}
    )
    events = [
        {
            "event_type": "EVENT_INIT_CONNECTION",
            "session_cookie": session_cookie,
            "edge_events_cookie": found["edge_events_cookie"],
        },
        {"event_type": "EVENT_LATENCY_SAMPLES", "gps_location": NEAR, "samples": [{"value": 4}]},
    ]
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{dme.rest_url}/v1/streamedgeevent",
            data="\n".join(json.dumps(e) for e in events),
        ) as response,
    ):
        assert response.status == 200
        lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert [line["result"]["event_type"] for line in lines] == [
        "EVENT_INIT_CONNECTION",
        "EVENT_LATENCY_PROCESSED",
    ]
    assert lines[1]["result"]["statistics"]["avg"] == 4


async def test_unknown_call_and_method(dme: RunningDme) -> None:
    status, _ = await post(dme, "nosuchcall", {})
    assert status == 404
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{dme.rest_url}/v1/findcloudlet") as response,
    ):
        assert response.status == 405
