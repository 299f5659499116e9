"""The DME daemon in-process: configuration, keys, and notify feeding the world and streams."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

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
from edgeproto import app_pb2, appinst_pb2, cloudlet_pb2, ratelimit_pb2

from edge_cloud.config import load
from edge_cloud.errors import ConfigError
from edge_cloud.notify import MemorySource, NotifyServer
from edge_cloud.server import bind, new_server, serve
from services.dme.__main__ import main
from services.dme._cookies import TEST_MODE_KEYS
from services.dme.config import DmeConfig
from services.dme.daemon import DmeDaemon, load_keys
from tests.unit.services.dme.builders import APP, app_inst, app_key_pb, cloudlet_key

NEAR = loc_pb2.Loc(latitude=50.1, longitude=8.6)


def test_defaults_and_go_spellings() -> None:
    cfg = load(DmeConfig, [], {})
    assert (cfg.api_addr, cfg.http_addr, cfg.notify_addrs) == (
        "127.0.0.1:50051",
        "127.0.0.1:38001",
        ("127.0.0.1:50001",),
    )
    assert (cfg.cookie_expiration, cfg.edge_events_cookie_expiration) == (86400.0, 600.0)
    cfg = load(
        DmeConfig,
        [
            "-notifyAddrs", "10.0.0.1:50001,10.0.0.2:50001",
            "-cookieExpiration", "1h30m",
            "-testMode", "true",
        ],
        {"E2ETEST_NORANDOM": "true", "EDGE_CARRIER": "standalone"},
    )  # fmt: skip
    assert cfg.notify_addrs == ("10.0.0.1:50001", "10.0.0.2:50001")
    assert cfg.cookie_expiration == 5400.0
    assert cfg.test_mode
    assert cfg.no_random
    with pytest.raises(ConfigError):
        load(DmeConfig, ["--cookie-expiration", "soon"], {})


def test_unknown_carrier_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--carrier", "nosuchop", "--metrics-addr", "", "--api-addr", "127.0.0.1:0"]) == 2
    assert "unknown --carrier 'nosuchop'" in capsys.readouterr().err


def test_key_files(tmp_path: Path) -> None:
    assert load_keys(None, test_mode=False) is TEST_MODE_KEYS
    plain = tmp_path / "secret"
    plain.write_text("s3cret\n")
    keys = load_keys(plain, test_mode=False)
    assert (dict(keys.secrets), keys.current) == ({1: b"s3cret"}, 1)
    rotated = tmp_path / "keys.json"
    rotated.write_text(json.dumps({"current": 3, "secrets": {"2": "old", "3": "new"}}))
    keys = load_keys(rotated, test_mode=False)
    assert (dict(keys.secrets), keys.current) == ({2: b"old", 3: b"new"}, 3)
    rotated.write_text(json.dumps({"current": 4, "secrets": {"3": "new"}}))
    with pytest.raises(ConfigError, match="no secret for current kid 4"):
        load_keys(rotated, test_mode=False)
    with pytest.raises(ConfigError, match="cannot read"):
        load_keys(tmp_path / "missing", test_mode=False)


@contextlib.asynccontextmanager
async def controller(source: MemorySource) -> AsyncIterator[int]:
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
    server = new_server("ctl")
    notify.add_to(server)
    port = bind(server, "127.0.0.1:0")
    await server.start()
    try:
        async with notify:
            yield port
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def daemon(notify_port: int) -> AsyncIterator[DmeDaemon]:
    cfg = load(
        DmeConfig,
        [
            "--api-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--metrics-addr", "",
            "--notify-addrs", f"127.0.0.1:{notify_port}", "--no-random", "true",
        ],
        {},
    )  # fmt: skip
    dme = DmeDaemon(cfg)
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(dme, ready, stop=stop))
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield dme
    finally:
        stop.set()
        await task


async def test_device_calls_are_not_access_logged_unless_asked() -> None:
    access = logging.getLogger("edge_cloud.access")
    before = access.level
    async with controller(MemorySource([])) as port, daemon(port):
        assert not access.isEnabledFor(logging.INFO)
    assert access.level == before
    cfg = load(
        DmeConfig,
        ["--api-addr", "127.0.0.1:0", "--http-addr", "", "--metrics-addr", "", "-d", "dmereq"],
        {},
    )
    verbose = DmeDaemon(cfg)
    await verbose.start()
    try:
        assert access.level == before
    finally:
        await verbose.close()


def cloudlet(name: str, lat: float, lon: float) -> list[object]:
    key = cloudlet_key("dmuus", name)
    return [
        cloudlet_pb2.Cloudlet(key=key, location=loc_pb2.Loc(latitude=lat, longitude=lon)),
        cloudlet_pb2.CloudletInfo(key=key, state=appcommon_pb2.CloudletState.CLOUDLET_STATE_READY),
        app_inst(f"{name}-inst", key, lat, lon),
    ]


async def test_notify_feeds_the_world_and_pushes_edge_events() -> None:
    source = MemorySource(
        [
            app_pb2.App(key=app_key_pb(APP)),
            *cloudlet("frankfurt", 50.11, 8.68),
            *cloudlet("berlin", 52.52, 13.4),
        ]  # type: ignore[list-item]
    )
    async with controller(source) as port, daemon(port) as dme:
        assert set(dme.ports) == {"api", "http"}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{dme.ports['api']}") as channel:
            async with asyncio.timeout(10):
                await dme.notify.wait_synced()
            reg = await session_pb2_grpc.SessionStub(channel).RegisterClient(
                session_pb2.RegisterClientRequest(
                    org_name=APP.organization, app_name=APP.name, app_vers=APP.version
                ),
                timeout=5,
            )
            api = match_engine_api_pb2_grpc.MatchEngineApiStub(channel)
            found = await api.FindCloudlet(
                app_client_pb2.FindCloudletRequest(
                    session_cookie=reg.session_cookie, gps_location=NEAR
                ),
                timeout=5,
            )
            assert found.fqdn.startswith("frankfurt-inst")
            C, S = app_client_pb2.ClientEdgeEvent, app_client_pb2.ServerEdgeEvent
            stream = api.StreamEdgeEvent(timeout=20)
            await stream.write(
                C(
                    event_type=C.EVENT_INIT_CONNECTION,
                    session_cookie=reg.session_cookie,
                    edge_events_cookie=found.edge_events_cookie,
                )
            )
            assert (await stream.read()).event_type == S.EVENT_INIT_CONNECTION
            # a closer instance appears: the client is offered it
            source.commit(puts=cloudlet("near", 50.1, 8.6))  # type: ignore[arg-type]
            async with asyncio.timeout(10):
                event = await stream.read()
            assert event.event_type == S.EVENT_CLOUDLET_UPDATE
            assert event.new_cloudlet.fqdn.startswith("near-inst")
            # the Controller reports the current instance unhealthy
            sick = app_inst(
                "frankfurt-inst",
                cloudlet_key("dmuus", "frankfurt"),
                50.11,
                8.68,
                health=appcommon_pb2.HealthCheck.HEALTH_CHECK_SERVER_FAIL,
            )
            source.put(sick)
            async with asyncio.timeout(10):
                event = await stream.read()
            assert event.event_type == S.EVENT_APPINST_HEALTH
            assert event.new_cloudlet.fqdn.startswith("near-inst")
            # the cloudlet goes offline: every client hears it (the original's behaviour)
            source.put(
                cloudlet_pb2.CloudletInfo(
                    key=cloudlet_key("dmuus", "frankfurt"),
                    state=appcommon_pb2.CloudletState.CLOUDLET_STATE_OFFLINE,
                )
            )
            async with asyncio.timeout(10):
                event = await stream.read()
            assert event.event_type == S.EVENT_CLOUDLET_STATE
            assert event.cloudlet_state == appcommon_pb2.CloudletState.CLOUDLET_STATE_OFFLINE
            # deleting the instance ends with SERVER_FAIL and the next best
            source.delete(sick)
            async with asyncio.timeout(10):
                event = await stream.read()
            assert event.health_check == appcommon_pb2.HealthCheck.HEALTH_CHECK_SERVER_FAIL
            assert event.new_cloudlet.fqdn.startswith("near-inst")
            await stream.write(C(event_type=C.EVENT_TERMINATE_CONNECTION))
            assert await stream.read() == grpc.aio.EOF
        # the world follows deletes too
        gone = asyncio.Event()

        @dme.notify.cache(app_pb2.App).on_delete
        async def app_deleted(old: app_pb2.App) -> None:
            gone.set()

        source.delete(app_pb2.App(key=app_key_pb(APP)))
        async with asyncio.timeout(10):
            await gone.wait()
        assert not dme.world.app_exists(APP.organization, APP.name, APP.version)
