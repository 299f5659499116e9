"""`edge dme` against an in-process fake DME (a MatchEngineApi test double)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from distributed_match_engine import (
    app_client_pb2,
    appcommon_pb2,
    loc_pb2,
    locverify_pb2,
    match_engine_api_pb2_grpc,
    session_pb2,
)

from edge_cloud.cli import main

ClientEvent = app_client_pb2.ClientEdgeEvent
ServerEvent = app_client_pb2.ServerEdgeEvent


class FakeDme(match_engine_api_pb2_grpc.MatchEngineApiServicer):
    """Fixed replies; org `bad` is refused, and what the client streams is recorded."""

    def __init__(self) -> None:
        self.client_events: list[app_client_pb2.ClientEdgeEvent] = []
        self.endless = False

    def RegisterClient(
        self, request: session_pb2.RegisterClientRequest, context: Any
    ) -> session_pb2.RegisterClientReply:
        if request.org_name == "bad":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no such app")
        return session_pb2.RegisterClientReply(
            status=appcommon_pb2.RS_SUCCESS, session_cookie="sess"
        )

    def FindCloudlet(
        self, request: app_client_pb2.FindCloudletRequest, context: Any
    ) -> app_client_pb2.FindCloudletReply:
        if request.session_cookie != "sess":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad cookie")
        return app_client_pb2.FindCloudletReply(
            status=app_client_pb2.FindCloudletReply.FIND_FOUND,
            fqdn="app.cloudlet.example",
            cloudlet_location=loc_pb2.Loc(latitude=52.5, longitude=13.4),
            edge_events_cookie="ee",
        )

    def VerifyLocation(
        self, request: locverify_pb2.VerifyLocationRequest, context: Any
    ) -> locverify_pb2.VerifyLocationReply:
        return locverify_pb2.VerifyLocationReply(
            gps_location_status=locverify_pb2.VerifyLocationReply.LOC_VERIFIED,
            gps_location_accuracy_km=2.0,
        )

    def GetAppInstList(
        self, request: app_client_pb2.AppInstListRequest, context: Any
    ) -> app_client_pb2.AppInstListReply:
        if request.gps_location.latitude > 90:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Invalid GpsLocation")
        return app_client_pb2.AppInstListReply(status=app_client_pb2.AppInstListReply.AI_SUCCESS)

    def StreamEdgeEvent(
        self, request_iterator: Iterator[app_client_pb2.ClientEdgeEvent], context: Any
    ) -> Iterator[app_client_pb2.ServerEdgeEvent]:
        for event in request_iterator:
            self.client_events.append(event)
            if event.event_type == ClientEvent.EVENT_INIT_CONNECTION:
                yield ServerEvent(event_type=ServerEvent.EVENT_INIT_CONNECTION)
                if self.endless:
                    while context.is_active():
                        yield ServerEvent(event_type=ServerEvent.EVENT_LATENCY_REQUEST)
                        time.sleep(0.05)
                    return
            elif event.event_type == ClientEvent.EVENT_TERMINATE_CONNECTION:
                return


@pytest.fixture
def fake() -> Iterator[tuple[str, FakeDme]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    dme = FakeDme()
    match_engine_api_pb2_grpc.add_MatchEngineApiServicer_to_server(dme, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", dme
    finally:
        server.stop(grace=None).wait(5)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


APP = ("--org", "dev", "--app", "hello", "--appvers", "1.0")
HERE = ("--lat", "52.39", "--long", "13.06")


def test_findcloudlet_json(fake: tuple[str, FakeDme], capsys: pytest.CaptureFixture[str]) -> None:
    addr, _ = fake
    code, out, _ = run(capsys, "dme", "findcloudlet", "--addr", addr, *APP, *HERE, "-o", "json")
    assert code == 0
    reply = json.loads(out)
    assert reply["status"] == "FIND_FOUND"
    assert reply["fqdn"] == "app.cloudlet.example"
    assert reply["edge_events_cookie"] == "ee"
    assert reply["cloudlet_location"]["latitude"] == 52.5


def test_register_verify_and_list(
    fake: tuple[str, FakeDme], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, _ = fake
    code, out, _ = run(capsys, "dme", "register", "--addr", addr, *APP, "-o", "yaml")
    assert code == 0
    assert "session_cookie: sess" in out
    code, out, _ = run(capsys, "dme", "verifylocation", "--addr", addr, *APP, *HERE)
    assert code == 0
    assert "LOC_VERIFIED" in out
    code, out, _ = run(
        capsys, "dme", "appinstlist", "--addr", addr, *APP, *HERE, "--limit", "3", "-o", "json"
    )
    assert code == 0
    assert json.loads(out)["status"] == "AI_SUCCESS"


def test_errors_are_one_line_with_exit_code(
    fake: tuple[str, FakeDme], capsys: pytest.CaptureFixture[str]
) -> None:
    addr, _ = fake
    code, out, err = run(
        capsys, "dme", "findcloudlet", "--addr", addr, "--org", "bad", "--app", "a",
        "--appvers", "1", *HERE,
    )  # fmt: skip
    assert code == 10
    assert out == ""
    assert err == "edge: PERMISSION_DENIED: no such app\n"
    code, _, err = run(
        capsys, "dme", "appinstlist", "--addr", addr, *APP, "--lat", "91", "--long", "0"
    )
    assert code == 6
    assert err == "edge: INVALID_ARGUMENT: Invalid GpsLocation\n"


def test_unreachable_dme(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "dme", "register", "--addr", "127.0.0.1:1", *APP, "--timeout", "2")
    assert code in (7, 8)
    assert err.startswith("edge: ")
    assert err.count("\n") == 1


def test_edge_events_count(fake: tuple[str, FakeDme], capsys: pytest.CaptureFixture[str]) -> None:
    addr, dme = fake
    started = time.monotonic()
    code, out, _ = run(
        capsys, "dme", "edge-events", "--addr", addr, *APP, *HERE, "--count", "1", "-o", "json"
    )
    assert code == 0
    assert time.monotonic() - started < 5
    lines = out.splitlines()
    assert [json.loads(line)["event_type"] for line in lines] == ["EVENT_INIT_CONNECTION"]
    kinds = [e.event_type for e in dme.client_events]
    assert kinds == [ClientEvent.EVENT_INIT_CONNECTION, ClientEvent.EVENT_TERMINATE_CONNECTION]
    init = dme.client_events[0]
    assert (init.session_cookie, init.edge_events_cookie) == ("sess", "ee")


def test_edge_events_seconds(fake: tuple[str, FakeDme], capsys: pytest.CaptureFixture[str]) -> None:
    addr, dme = fake
    dme.endless = True
    started = time.monotonic()
    code, out, _ = run(
        capsys, "dme", "edge-events", "--addr", addr, *APP, *HERE, "--seconds", "0.5"
    )
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 5
    lines = out.splitlines()
    assert lines[0].startswith("EVENT_INIT_CONNECTION")
    assert all(line.startswith("EVENT_") for line in lines)
