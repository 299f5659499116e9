"""Every DME call over in-process gRPC, through both service layouts."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from distributed_match_engine import (
    app_client_pb2,
    app_client_platos_pb2,
    app_client_platos_pb2_grpc,
    appcommon_pb2,
    dynamic_location_group_pb2,
    dynamic_location_group_pb2_grpc,
    loc_pb2,
    locverify_pb2,
    locverify_pb2_grpc,
    match_engine_api_pb2_grpc,
    qos_pb2,
    qos_pb2_grpc,
    qos_position_pb2,
    qos_position_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from edgeproto import (
    appinst_pb2,
    appinstclient_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    metric_pb2,
    ratelimit_pb2,
)

from services.dme._authtoken import ksuid
from services.dme._autoprov import AutoProvStats, ZoneKey
from services.dme._clients import AppInstClients
from services.dme._stats import ApiStats, EdgeEventStats, StatKey
from services.dme._world import AppKey, World
from tests.unit.services.dme.builders import APP, add_app, add_site, app_inst, cloudlet_key
from tests.unit.services.dme.dme_server import RunningDme, running_dme

NEAR = loc_pb2.Loc(latitude=50.1, longitude=8.6)
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PLATFORM = AppKey("platos", "PlatosEnablingLayer", "1.0")


def region() -> World:
    world = World()
    add_app(world, official_fqdn="app.example.com", access_ports="tcp:80,udp:10002")
    add_app(world, PLATFORM)
    add_site(world, "dmuus", "frankfurt", 50.11, 8.68)
    add_site(world, "dmuus", "berlin", 52.52, 13.40)
    return world


@pytest.fixture
async def dme() -> AsyncIterator[RunningDme]:
    async with running_dme(region()) as running:
        yield running


async def register(dme: RunningDme, app: AppKey = APP, **fields: str) -> str:
    reply = await session_pb2_grpc.SessionStub(dme.channel).RegisterClient(
        session_pb2.RegisterClientRequest(
            org_name=app.organization, app_name=app.name, app_vers=app.version, **fields
        ),
        timeout=5,
    )
    assert reply.status == 1
    return reply.session_cookie


async def status_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code(), info.value.details() or ""


async def test_register_client_generates_a_unique_id(dme: RunningDme) -> None:
    reply = await session_pb2_grpc.SessionStub(dme.channel).RegisterClient(
        session_pb2.RegisterClientRequest(org_name="devorg", app_name="app", app_vers="1.0"),
        timeout=5,
    )
    assert reply.unique_id_type == "dme-ksuid"
    assert len(reply.unique_id) == 27
    assert reply.token_server_uri == "http://toksrv/its"
    given = await session_pb2_grpc.SessionStub(dme.channel).RegisterClient(
        session_pb2.RegisterClientRequest(
            org_name="devorg", app_name="app", app_vers="1.0", unique_id="u", unique_id_type="t"
        ),
        timeout=5,
    )
    assert (given.unique_id, given.unique_id_type) == ("", "")


@pytest.mark.parametrize(
    ("fields", "code", "text"),
    [
        ({"app_name": "a", "app_vers": "1"}, INVALID, "OrgName cannot be empty"),
        ({"org_name": "o", "app_vers": "1"}, INVALID, "AppName cannot be empty"),
        ({"org_name": "o", "app_name": "a"}, INVALID, "AppVers cannot be empty"),
        ({"org_name": "o", "app_name": "a", "app_vers": "1"}, NOT_FOUND, "app not found"),
        (
            {"org_name": "devorg", "app_name": "app", "app_vers": "1.0", "unique_id": "x"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Both, or none of UniqueId and UniqueIdType should be set",
        ),
        (
            {"org_name": "devorg", "app_name": "app", "app_vers": "1.0", "auth_token": "x"},
            grpc.StatusCode.UNAUTHENTICATED,
            "No authkey found to validate token",
        ),
    ],
)  # fmt: skip
async def test_register_client_validation(
    dme: RunningDme, fields: dict[str, str], code: grpc.StatusCode, text: str
) -> None:
    stub = session_pb2_grpc.SessionStub(dme.channel)
    call = stub.RegisterClient(session_pb2.RegisterClientRequest(**fields), timeout=5)
    assert await status_of(call) == (code, text)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(private: rsa.RSAPrivateKey, claims: dict[str, object]) -> str:
    head = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = private.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{_b64(sig)}"


async def test_register_client_verifies_rs256_auth_tokens() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    world = World()
    add_app(world, auth_public_key=pem.decode())
    now = int(time.time())
    claims = {"iat": now, "exp": now + 60, "orgname": "devorg", "appname": "app", "appvers": "1.0"}
    async with running_dme(world) as dme:
        assert await register(dme, auth_token=mint(private, claims))
        stub = session_pb2_grpc.SessionStub(dme.channel)

        async def refused(token: str) -> tuple[grpc.StatusCode, str]:
            request = session_pb2.RegisterClientRequest(
                org_name="devorg", app_name="app", app_vers="1.0", auth_token=token
            )
            return await status_of(stub.RegisterClient(request, timeout=5))

        assert await status_of(
            stub.RegisterClient(
                session_pb2.RegisterClientRequest(
                    org_name="devorg", app_name="app", app_vers="1.0"
                ),
                timeout=5,
            )
        ) == (grpc.StatusCode.INVALID_ARGUMENT, "No authtoken received")
        assert await refused("x") == (
            grpc.StatusCode.UNAUTHENTICATED,
            "failed to verify token - token contains an invalid number of segments",
        )
        assert await refused(mint(private, {**claims, "exp": now - 10})) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "failed to verify token - token is expired by 10s",
        )
        assert await refused(mint(private, {**claims, "appname": "other"})) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "failed to verify token - token appname mismatch",
        )
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        code, text = await refused(mint(other, claims))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert text.startswith("failed to verify token - ")


async def test_find_cloudlet_on_split_and_legacy_paths(dme: RunningDme) -> None:
    cookie = await register(dme)
    request = app_client_pb2.FindCloudletRequest(session_cookie=cookie, gps_location=NEAR)
    legacy = match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel)
    reply = await legacy.FindCloudlet(request, timeout=5)
    assert reply.status == app_client_pb2.FindCloudletReply.FIND_FOUND
    assert reply.fqdn == "frankfurt-inst.frankfurt.dmuus.example.net"
    assert reply.tags["appinst"] == "frankfurt-inst"
    assert reply.edge_events_cookie
    key = dme.calls.codec.verify_edge_events_cookie(reply.edge_events_cookie)
    assert (key.cloudlet_org, key.cloudlet_name) == ("dmuus", "frankfurt")
    # the legacy service also carries RegisterClient
    legacy_reg = await legacy.RegisterClient(
        session_pb2.RegisterClientRequest(org_name="devorg", app_name="app", app_vers="1.0"),
        timeout=5,
    )
    assert legacy_reg.session_cookie


async def test_find_cloudlet_notfound_is_a_successful_reply(dme: RunningDme) -> None:
    add_app(dme.world, AppKey("devorg", "lonely", "1.0"))
    cookie = await register(dme, AppKey("devorg", "lonely", "1.0"))
    reply = await match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel).FindCloudlet(
        app_client_pb2.FindCloudletRequest(session_cookie=cookie, gps_location=NEAR), timeout=5
    )
    assert reply.status == app_client_pb2.FindCloudletReply.FIND_NOTFOUND
    assert reply.HasField("cloudlet_location")


async def test_cookies_are_verified(dme: RunningDme) -> None:
    stub = match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel)
    cookie = await register(dme)
    forged = cookie[:-4] + ("AAAA" if not cookie.endswith("AAAA") else "BBBB")
    for bad, text in [
        ("", "VerifyCookie failed: missing cookie"),
        ("x", "token contains an invalid number of segments"),
        (forged, "signature is invalid"),
    ]:
        call = stub.FindCloudlet(
            app_client_pb2.FindCloudletRequest(session_cookie=bad, gps_location=NEAR), timeout=5
        )
        assert await status_of(call) == (grpc.StatusCode.UNAUTHENTICATED, text)
    missing = stub.FindCloudlet(
        app_client_pb2.FindCloudletRequest(session_cookie=cookie), timeout=5
    )
    assert await status_of(missing) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing GpsLocation")


def token_bucket(api: str, rps: float, burst: int) -> ratelimit_pb2.FlowRateLimitSettings:
    return ratelimit_pb2.FlowRateLimitSettings(
        key=ratelimit_pb2.FlowRateLimitSettingsKey(
            flow_settings_name=f"{api}-test",
            rate_limit_key=ratelimit_pb2.RateLimitSettingsKey(
                api_name=api,
                api_endpoint_type=ratelimit_pb2.ApiEndpointType.DME,
                rate_limit_target=ratelimit_pb2.RateLimitTarget.ALL_REQUESTS,
            ),
        ),
        settings=ratelimit_pb2.FlowSettings(
            flow_algorithm=ratelimit_pb2.FlowRateLimitAlgorithm.TOKEN_BUCKET_ALGORITHM,
            reqs_per_second=0.5,
            burst_size=burst,
        ),
    )


async def test_rate_limit_names_the_path_the_client_used() -> None:
    async with running_dme(
        region(), flows=[token_bucket("FindCloudlet", 0.5, 1)], test_mode=False
    ) as dme:
        cookie = await register(dme)
        request = app_client_pb2.FindCloudletRequest(session_cookie=cookie, gps_location=NEAR)
        stub = match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel)
        await stub.FindCloudlet(request, timeout=5)
        code, text = await status_of(stub.FindCloudlet(request, timeout=5))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert text == (
            "Request for /distributed_match_engine.MatchEngineApi/FindCloudlet rate limited, "
            "please retry later. Error is: Exceeded rate of 0.500000 requests per second."
        )


async def test_get_app_inst_list_groups_by_cloudlet(dme: RunningDme) -> None:
    cookie = await register(dme)
    stub = match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel)
    reply = await stub.GetAppInstList(
        app_client_pb2.AppInstListRequest(session_cookie=cookie, gps_location=NEAR), timeout=5
    )
    assert reply.status == app_client_pb2.AppInstListReply.AI_SUCCESS
    assert [c.cloudlet_name for c in reply.cloudlets] == ["frankfurt", "berlin"]
    assert reply.cloudlets[0].appinstances[0].app_name == "app"
    missing = stub.GetAppInstList(
        app_client_pb2.AppInstListRequest(session_cookie=cookie), timeout=5
    )
    assert await status_of(missing) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing GPS location")


async def test_verify_and_get_location(dme: RunningDme) -> None:
    cookie = await register(dme)
    stub = locverify_pb2_grpc.LocationStub(dme.channel)
    near = await stub.VerifyLocation(
        locverify_pb2.VerifyLocationRequest(
            session_cookie=cookie, gps_location=loc_pb2.Loc(latitude=32.01, longitude=-96.59)
        ),
        timeout=5,
    )
    assert near.gps_location_status == locverify_pb2.VerifyLocationReply.LOC_VERIFIED
    assert near.gps_location_accuracy_km == 2
    far = await stub.VerifyLocation(
        locverify_pb2.VerifyLocationRequest(session_cookie=cookie, gps_location=NEAR), timeout=5
    )
    assert far.gps_location_status == locverify_pb2.VerifyLocationReply.LOC_MISMATCH_SAME_COUNTRY
    assert far.gps_location_accuracy_km == -1
    zero = stub.VerifyLocation(
        locverify_pb2.VerifyLocationRequest(session_cookie=cookie, gps_location=loc_pb2.Loc()),
        timeout=5,
    )
    assert await status_of(zero) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing GPS location")
    got = await stub.GetLocation(
        locverify_pb2.GetLocationRequest(session_cookie=cookie, carrier_name="dmuus"), timeout=5
    )
    assert got.status == locverify_pb2.GetLocationReply.LOC_FOUND
    assert got.carrier_name == "dmuus"
    assert (got.network_location.latitude, got.network_location.longitude) == (
        32.013988,
        -96.598243,
    )


async def test_platform_calls(dme: RunningDme) -> None:
    cookie = await register(dme)
    platos = app_client_platos_pb2_grpc.PlatformOSStub(dme.channel)
    denied = platos.GetFqdnList(
        app_client_platos_pb2.FqdnListRequest(session_cookie=cookie), timeout=5
    )
    assert await status_of(denied) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "API Not allowed for developer: devorg app: app",
    )
    official = await match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel).GetAppOfficialFqdn(
        app_client_pb2.AppOfficialFqdnRequest(session_cookie=cookie, gps_location=NEAR), timeout=5
    )
    assert official.status == app_client_pb2.AppOfficialFqdnReply.AOF_SUCCESS
    assert official.app_official_fqdn == "app.example.com"
    assert [(p.proto, p.internal_port, p.public_port) for p in official.ports] == [
        (1, 80, 80),
        (2, 10002, 10002),
    ]
    platform_cookie = await register(dme, PLATFORM)
    fqdns = await platos.GetFqdnList(
        app_client_platos_pb2.FqdnListRequest(session_cookie=platform_cookie), timeout=5
    )
    assert [(a.app_name, list(a.fqdns)) for a in fqdns.app_fqdns] == [("app", ["app.example.com"])]
    found = await platos.PlatformFindCloudlet(
        app_client_platos_pb2.PlatformFindCloudletRequest(
            session_cookie=platform_cookie, client_token=official.client_token
        ),
        timeout=5,
    )
    assert found.status == app_client_pb2.FindCloudletReply.FIND_FOUND
    assert found.fqdn.startswith("frankfurt-inst")


async def test_qos_calls_with_the_standalone_operator(dme: RunningDme) -> None:
    cookie = await register(dme)
    qos = qos_pb2_grpc.QualityOfServiceStub(dme.channel)
    create = qos.QosPrioritySessionCreate(
        qos_pb2.QosPrioritySessionCreateRequest(session_cookie=cookie), timeout=5
    )
    assert await status_of(create) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Cannot create session because qosSesAddr not defined.",
    )
    deleted = await qos.QosPrioritySessionDelete(
        qos_pb2.QosPrioritySessionDeleteRequest(session_cookie=cookie), timeout=5
    )
    assert deleted == qos_pb2.QosPrioritySessionDeleteReply()
    kpi = qos_position_pb2_grpc.QosPositionKpiStub(dme.channel)
    request = qos_position_pb2.QosPositionRequest(session_cookie=cookie)
    request.positions.add(positionid=7, gps_location=NEAR)
    replies = [r async for r in kpi.GetQosPositionKpi(request, timeout=5)]
    assert len(replies) == 1
    [result] = replies[0].position_results
    assert result.positionid == 7
    assert result.dluserthroughput_avg > 0


async def test_add_user_to_group_only_on_the_legacy_service(dme: RunningDme) -> None:
    cookie = await register(dme)
    legacy = match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel)
    reply = await legacy.AddUserToGroup(
        dynamic_location_group_pb2.DynamicLocGroupRequest(session_cookie=cookie), timeout=5
    )
    assert reply.status == 1
    dlg = dynamic_location_group_pb2_grpc.DynamicLocGroupApiStub(dme.channel)
    code, _ = await status_of(
        dlg.AddUserToGroup(
            dynamic_location_group_pb2.DynamicLocGroupRequest(session_cookie=cookie), timeout=5
        )
    )
    assert code == grpc.StatusCode.UNIMPLEMENTED


async def test_stream_edge_event(dme: RunningDme) -> None:
    cookie = await register(dme)
    found = await match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel).FindCloudlet(
        app_client_pb2.FindCloudletRequest(session_cookie=cookie, gps_location=NEAR), timeout=5
    )
    C = app_client_pb2.ClientEdgeEvent
    S = app_client_pb2.ServerEdgeEvent
    stream = match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel).StreamEdgeEvent(timeout=10)
    await stream.write(
        C(
            event_type=C.EVENT_INIT_CONNECTION,
            session_cookie=cookie,
            edge_events_cookie=found.edge_events_cookie,
        )
    )
    assert (await stream.read()).event_type == S.EVENT_INIT_CONNECTION
    samples = C(event_type=C.EVENT_LATENCY_SAMPLES, gps_location=NEAR)
    for value in (1.0, 2.0, 3.0, -1.0):
        samples.samples.add(value=value)
    await stream.write(samples)
    stats = (await stream.read()).statistics
    assert (stats.avg, stats.min, stats.max, stats.num_samples, stats.variance) == (2, 1, 3, 3, 1)
    berlin = loc_pb2.Loc(latitude=52.5, longitude=13.4)
    await stream.write(C(event_type=C.EVENT_LOCATION_UPDATE, gps_location=berlin))
    update = await stream.read()
    assert update.event_type == S.EVENT_CLOUDLET_UPDATE
    assert update.new_cloudlet.fqdn.startswith("berlin-inst")
    await stream.write(C(event_type=C.EVENT_LATENCY_SAMPLES))
    error = await stream.read()
    assert error.error_msg == (
        "Invalid EVENT_LATENCY_SAMPLES, invalid location: rpc error: code = InvalidArgument "
        "desc = Missing GpsLocation"
    )
    # the instance goes unhealthy (as notify would report it): the client is told, with
    # the next best instance
    inst = dme.world.update_app_inst(
        app_inst(
            "frankfurt-inst",
            cloudlet_key("dmuus", "frankfurt"),
            50.11,
            8.68,
            health=appcommon_pb2.HealthCheck.HEALTH_CHECK_SERVER_FAIL,
        )
    )
    dme.events.app_inst_changed(inst, appcommon_pb2.HealthCheck.HEALTH_CHECK_OK)
    health = await stream.read()
    assert health.event_type == S.EVENT_APPINST_HEALTH
    assert health.health_check == appcommon_pb2.HealthCheck.HEALTH_CHECK_SERVER_FAIL
    assert health.new_cloudlet.fqdn.startswith("berlin-inst")
    await stream.write(C(event_type=C.EVENT_TERMINATE_CONNECTION))
    assert await stream.read() == grpc.aio.EOF
    assert await stream.code() == grpc.StatusCode.OK


async def test_stream_edge_event_needs_init_first(dme: RunningDme) -> None:
    C = app_client_pb2.ClientEdgeEvent
    stream = match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel).StreamEdgeEvent(timeout=10)
    await stream.write(C(event_type=C.EVENT_LATENCY_SAMPLES))
    await stream.done_writing()
    assert await status_of(stream.read()) == (
        grpc.StatusCode.UNKNOWN,
        "First message should have event type EVENT_INIT_CONNECTION",
    )


def test_ksuid_shape() -> None:
    ids = {ksuid() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 27 and i.isalnum() for i in ids)


async def test_stats_count_calls_by_app_and_found_instance(dme: RunningDme) -> None:
    cookie = await register(dme)
    stub = match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel)
    await stub.FindCloudlet(
        app_client_pb2.FindCloudletRequest(session_cookie=cookie, gps_location=NEAR), timeout=5
    )
    await status_of(stub.FindCloudlet(app_client_pb2.FindCloudletRequest(), timeout=5))
    stats = dme.calls.stats.peek()
    app = (APP.organization, APP.name, APP.version)
    found = stats[StatKey("FindCloudlet", app, ("frankfurt-inst", "devorg"), ("", ""), "dmuus")]
    assert (found.reqs, found.errs, sum(found.latency)) == (1, 0, 1)
    failed = stats[StatKey("FindCloudlet")]
    assert (failed.reqs, failed.errs) == (1, 1)
    assert stats[StatKey("RegisterClient", app)].reqs == 1
    assert len(dme.calls.stats.metrics(1.0, "dme1")) == 3
    assert dme.calls.stats.metrics(2.0, "dme1") == []  # nothing new since


def test_latency_buckets() -> None:
    stats = ApiStats()
    for seconds in (0.001, 0.005, 0.007, 0.03, 0.2):
        stats.record(StatKey("X"), seconds, failed=False)
    assert stats.peek()[StatKey("X")].latency == [1, 2, 0, 1, 0, 1]


async def test_stream_edge_event_cookie_errors_and_unknown_instances(dme: RunningDme) -> None:
    C = app_client_pb2.ClientEdgeEvent
    cookie = await register(dme)
    api = match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel)
    stream = api.StreamEdgeEvent(timeout=10)
    # a session cookie where the edge-events cookie belongs
    await stream.write(
        C(event_type=C.EVENT_INIT_CONNECTION, session_cookie=cookie, edge_events_cookie=cookie)
    )
    assert await status_of(stream.read()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "No Key data in cookie",
    )
    # an edge cookie naming an instance the DME does not know: no events at all (§2.10 b)
    found = await api.FindCloudlet(
        app_client_pb2.FindCloudletRequest(session_cookie=cookie, gps_location=NEAR), timeout=5
    )
    dme.world.delete_app_inst(appinst_pb2.AppInstKey(name="frankfurt-inst", organization="devorg"))
    stream = api.StreamEdgeEvent(timeout=10)
    await stream.write(
        C(
            event_type=C.EVENT_INIT_CONNECTION,
            session_cookie=cookie,
            edge_events_cookie=found.edge_events_cookie,
        )
    )
    await stream.write(C(event_type=C.EVENT_LATENCY_SAMPLES, gps_location=NEAR))
    await stream.done_writing()
    assert await stream.read() == grpc.aio.EOF
    assert await stream.code() == grpc.StatusCode.OK


async def test_stream_edge_event_statistics(dme: RunningDme) -> None:
    dme.events.stats = EdgeEventStats(("dmuus", "dme-cloudlet"))
    cookie = await register(dme)
    api = match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel)
    found = await api.FindCloudlet(
        app_client_pb2.FindCloudletRequest(session_cookie=cookie, gps_location=NEAR), timeout=5
    )
    C = app_client_pb2.ClientEdgeEvent
    stream = api.StreamEdgeEvent(timeout=10)
    await stream.write(
        C(
            event_type=C.EVENT_INIT_CONNECTION,
            session_cookie=cookie,
            edge_events_cookie=found.edge_events_cookie,
            device_info_static=appcommon_pb2.DeviceInfoStatic(
                device_os="Android", device_model="X"
            ),
            device_info_dynamic=appcommon_pb2.DeviceInfoDynamic(
                carrier_name="dmuus", data_network_type="5G", signal_strength=4
            ),
        )
    )
    await stream.read()
    # same tile, same device: no new session; another tile: one more
    await stream.write(C(event_type=C.EVENT_LOCATION_UPDATE, gps_location=NEAR))
    far = loc_pb2.Loc(latitude=NEAR.latitude + 0.5, longitude=NEAR.longitude)
    await stream.write(C(event_type=C.EVENT_LOCATION_UPDATE, gps_location=far))
    samples = C(event_type=C.EVENT_LATENCY_SAMPLES, gps_location=far)
    for value in (5.0, 15.0):
        samples.samples.add(value=value)
    await stream.write(samples)
    S = app_client_pb2.ServerEdgeEvent
    for _ in range(3):  # a better cloudlet may be announced first
        event = await stream.read()
        assert event is not grpc.aio.EOF
        if event.event_type == S.EVENT_LATENCY_PROCESSED:  # both updates were handled
            break
    custom = C(event_type=C.EVENT_CUSTOM_EVENT, custom_event="fps")
    custom.samples.add(value=30.0)
    await stream.write(custom)
    await stream.write(C(event_type=C.EVENT_TERMINATE_CONNECTION))
    for _ in range(3):
        if await stream.read() is grpc.aio.EOF:
            break
    metrics = dme.events.stats.metrics(1.0)
    by_name: dict[str, list[metric_pb2.Metric]] = {}
    for metric in metrics:
        by_name.setdefault(metric.name, []).append(metric)
    devices = by_name["device-metric"]
    tiles = sorted(next(t.val for t in m.tags if t.name == "locationtile") for m in devices)
    assert len(tiles) == 2  # the connection's tile, then the far one
    for metric in devices:
        tags = {t.name: t.val for t in metric.tags}
        assert (tags["deviceos"], tags["devicemodel"], tags["datanetworktype"]) == (
            "Android",
            "X",
            "5G",
        )
        assert tags["appinst"] == "frankfurt-inst"
    (latency,) = by_name["latency-metric"]
    values = {v.name: v for v in latency.vals}
    assert (values["avg"].dval, values["numsamples"].ival, values["10ms"].ival) == (10.0, 2, 1)
    (fps,) = by_name["custom-metric"]
    assert {t.name: t.val for t in fps.tags}["statname"] == "fps"


async def test_searches_count_demand_and_record_clients(dme: RunningDme) -> None:
    counts: list[autoprovpolicy_pb2.AutoProvCounts] = []
    sent: list[appinstclient_pb2.AppInstClient] = []
    dme.calls.autoprov = AutoProvStats("dme1", counts.append)
    dme.calls.clients = AppInstClients(sent.append)
    dme.calls.clients.want("all", appinstclient_pb2.AppInstClientKey())
    add_app(dme.world, access_ports="tcp:80", auto_prov_policies=["near-munich"])
    dme.calls.autoprov.update_policy(
        autoprovpolicy_pb2.AutoProvPolicy(
            key=autoscalepolicy_pb2.PolicyKey(organization=APP.organization, name="near-munich"),
            deploy_client_count=5,
            deploy_interval_count=2,
            zones=[cloudletkey_pb2.ZoneKey(organization="dmuus", name="bavaria")],
        )
    )
    dme.calls.autoprov.update_cloudlet(
        cloudlet_pb2.Cloudlet(
            key=cloudlet_key("dmuus", "munich"),
            zone="bavaria",
            location=loc_pb2.Loc(latitude=48.14, longitude=11.58),
        )
    )
    cookie = await register(dme, unique_id_type="phone", unique_id="u1")
    api = match_engine_api_pb2_grpc.MatchEngineApiStub(dme.channel)
    munich = loc_pb2.Loc(latitude=48.2, longitude=11.6)
    listed = await api.GetAppInstList(
        app_client_pb2.AppInstListRequest(session_cookie=cookie, gps_location=munich), timeout=5
    )
    assert listed.cloudlets
    found = await api.FindCloudlet(
        app_client_pb2.FindCloudletRequest(session_cookie=cookie, gps_location=munich), timeout=5
    )
    assert found.fqdn.startswith("frankfurt-inst")
    zone = ZoneKey("dmuus", "bavaria")
    assert dme.calls.autoprov.counts() == {((APP.organization, APP.name, APP.version), zone): 2}
    assert counts == []  # two intervals: only the periodic report sends
    # near Frankfurt, Munich is not closer than the instance there: no demand
    await api.FindCloudlet(
        app_client_pb2.FindCloudletRequest(session_cookie=cookie, gps_location=NEAR), timeout=5
    )
    assert sum(dme.calls.autoprov.counts().values()) == 2
    # FindCloudlet (not GetAppInstList) records who was sent where
    assert [(c.client_key.unique_id, c.client_key.app_inst_key.name) for c in sent] == [
        ("u1", "frankfurt-inst"),
        ("u1", "frankfurt-inst"),
    ]
