"""Session and edge-events cookies, client tokens (dme.md §2.1.1-2.1.3, §2.2.1, §2.3)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json

import grpc
import pytest
from distributed_match_engine import loc_pb2

from edge_cloud.errors import EdgeError, InvalidArgument, PermissionDenied, Unauthenticated
from services.dme._cookies import (
    EDGE_EVENTS_COOKIE_LIFETIME,
    SESSION_COOKIE_LIFETIME,
    TEST_MODE_KEYS,
    CookieCodec,
    EdgeEventsKey,
    JwtKeys,
    SessionKey,
    check_platform_request,
    decode_client_token,
    encode_client_token,
)
from services.dme._peer import peer_ip

NOW = 1_700_000_000.0
KEY = SessionKey(
    peer_ip="10.1.2.3",
    org_name="devorg",
    app_name="app",
    app_vers="1.0",
    unique_id_type="dme-ksuid",
    unique_id="2C6A1KUXrvxt4k6tu3G2YWxCqVN",
)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def any_app(org: str, name: str, vers: str) -> bool:
    return True


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def claims_of(cookie: str) -> bytes:
    part = cookie.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def forge(
    claims: dict[str, object] | str,
    secret: bytes = b"12345",
    *,
    header: dict[str, object] | str | None = None,
    digest: str = "sha512",
) -> str:
    head = header if header is not None else {"alg": "HS512", "typ": "JWT"}
    head_text = head if isinstance(head, str) else json.dumps(head, separators=(",", ":"))
    body = claims if isinstance(claims, str) else json.dumps(claims, separators=(",", ":"))
    signing = f"{b64(head_text.encode())}.{b64(body.encode())}"
    sig = hmac.new(secret, signing.encode(), digest).digest()
    return f"{signing}.{b64(sig)}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def codec(clock: Clock) -> CookieCodec:
    # The original's unit tests use kid 1 with secret "12345".
    return CookieCodec(JwtKeys.single(1, "12345"), clock=clock)


def verify_error(codec: CookieCodec, cookie: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        codec.verify_session_cookie(cookie, app_exists=any_app)
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    return info.value.message


# --- session cookies ------------------------------------------------------------------------


def test_session_cookie_layout_is_the_originals(codec: CookieCodec) -> None:
    cookie = codec.session_cookie(KEY)
    header, _, signature = cookie.split(".")
    assert header == b64(b'{"alg":"HS512","typ":"JWT"}')
    assert claims_of(cookie) == (
        b'{"exp":1700086400,"iat":1700000000,"key":{"peerip":"10.1.2.3","orgname":"devorg",'
        b'"appname":"app","appvers":"1.0","uniqueidtype":"dme-ksuid",'
        b'"uniqueid":"2C6A1KUXrvxt4k6tu3G2YWxCqVN","kid":1}}'
    )
    expected = hmac.new(b"12345", cookie.rsplit(".", 1)[0].encode(), hashlib.sha512).digest()
    assert signature == b64(expected)


def test_session_cookie_lifetime_is_24h_by_default(codec: CookieCodec) -> None:
    claims = json.loads(claims_of(codec.session_cookie(KEY)))
    assert claims["exp"] - claims["iat"] == SESSION_COOKIE_LIFETIME == 86400


def test_session_cookie_round_trip_sets_kid(codec: CookieCodec) -> None:
    key = codec.verify_session_cookie(codec.session_cookie(KEY), app_exists=any_app)
    assert key == dataclasses.replace(KEY, kid=1)


def test_empty_fields_and_kid_zero_are_omitted(clock: Clock) -> None:
    codec = CookieCodec(TEST_MODE_KEYS, clock=clock)
    cookie = codec.session_cookie(SessionKey(org_name="o", app_name="a", app_vers="1"))
    assert claims_of(cookie) == (
        b'{"exp":1700086400,"iat":1700000000,"key":{"orgname":"o","appname":"a","appvers":"1"}}'
    )
    assert codec.verify_session_cookie(cookie, app_exists=any_app).kid == 0


@pytest.mark.parametrize(
    ("cookie", "message"),
    [
        ("", "VerifyCookie failed: missing cookie"),
        ("x", "token contains an invalid number of segments"),
        ("x.x", "token contains an invalid number of segments"),
        ("a.b.c.d", "token contains an invalid number of segments"),
        ("x.x.x", "illegal base64 data at input byte 1"),
        ("Bearer x.y.z", "tokenstring should not contain 'bearer '"),
    ],
)
def test_malformed_cookies(codec: CookieCodec, cookie: str, message: str) -> None:
    assert verify_error(codec, cookie) == message


def test_cookie_without_key_object(codec: CookieCodec) -> None:
    cookie = forge({"exp": int(NOW) + 60, "iat": int(NOW)})
    assert verify_error(codec, cookie) == "VerifyCookie failed: Invalid cookie, no key"


def test_unknown_kid_names_the_cookie(codec: CookieCodec) -> None:
    cookie = forge({"exp": int(NOW) + 60, "key": {"orgname": "o", "kid": 7}})
    assert (
        verify_error(codec, cookie)
        == f"VerifyCookie failed: no secret for kid 7 in cookie {cookie}"
    )


def test_expired_cookie_says_by_how_much(codec: CookieCodec, clock: Clock) -> None:
    cookie = codec.session_cookie(KEY)
    clock.now += SESSION_COOKIE_LIFETIME + 10
    assert verify_error(codec, cookie) == "token is expired by 10s"
    clock.now += 50
    assert verify_error(codec, cookie) == "token is expired by 1m0s"


def test_cookie_expires_at_exp_itself(codec: CookieCodec, clock: Clock) -> None:
    # golang-jwt v4.5: valid while now < exp.
    cookie = codec.session_cookie(KEY)
    clock.now += SESSION_COOKIE_LIFETIME - 1
    codec.verify_session_cookie(cookie, app_exists=any_app)
    clock.now += 1
    assert verify_error(codec, cookie) == "token is expired by 0s"


def test_forged_signature(codec: CookieCodec) -> None:
    cookie = forge({"exp": int(NOW) + 60, "key": {"orgname": "o", "kid": 1}}, b"not-the-secret")
    assert verify_error(codec, cookie) == "signature is invalid"


def test_signature_error_wins_over_expiry(codec: CookieCodec) -> None:
    cookie = forge({"exp": int(NOW) - 60, "key": {"orgname": "o", "kid": 1}}, b"wrong")
    assert verify_error(codec, cookie) == "signature is invalid"


def test_tampered_claims_fail_the_signature(codec: CookieCodec) -> None:
    head, _, sig = codec.session_cookie(KEY).split(".")
    body = b64(claims_of(codec.session_cookie(KEY)).replace(b'"app"', b'"evil"'))
    assert verify_error(codec, f"{head}.{body}.{sig}") == "signature is invalid"


def test_bad_signature_encoding(codec: CookieCodec) -> None:
    head, body, _ = codec.session_cookie(KEY).split(".")
    assert verify_error(codec, f"{head}.{body}.!") == "illegal base64 data at input byte 0"


def test_future_iat(codec: CookieCodec) -> None:
    cookie = forge({"iat": int(NOW) + 100, "key": {"orgname": "o", "kid": 1}})
    assert verify_error(codec, cookie) == "token used before issued"


def test_algorithm_rules_follow_golang_jwt(codec: CookieCodec) -> None:
    claims = {"exp": int(NOW) + 60, "key": {"orgname": "o", "kid": 1}}
    # Any HMAC algorithm with the right secret passes, as in the original.
    hs256 = forge(claims, header={"alg": "HS256", "typ": "JWT"}, digest="sha256")
    assert codec.verify_session_cookie(hs256, app_exists=any_app).org_name == "o"
    assert verify_error(codec, forge(claims, header={"alg": "none"})) == (
        "'none' signature type is not allowed"
    )
    assert verify_error(codec, forge(claims, header={"alg": "RS256"})) == "key is of invalid type"
    assert verify_error(codec, forge(claims, header={"alg": "XX1"})) == (
        "signing method (alg) is unavailable."
    )
    assert verify_error(codec, forge(claims, header={"typ": "JWT"})) == (
        "signing method (alg) is unspecified."
    )


def test_json_errors_are_gos(codec: CookieCodec) -> None:
    assert verify_error(codec, forge("{", header="{}")) == "unexpected end of JSON input"
    assert verify_error(codec, forge("{}", header="[1]")) == (
        "json: cannot unmarshal array into Go value of type map[string]interface {}"
    )
    assert verify_error(codec, forge('{"exp":"soon","key":{}}')) == (
        "json: cannot unmarshal string into Go struct field dmeClaims.exp of type int64"
    )
    assert verify_error(codec, forge('{"key":{"kid":1.5}}')) == (
        "json: cannot unmarshal number 1.5 into Go struct field CookieKey.key.kid of type int"
    )


def test_claim_names_match_case_insensitively(codec: CookieCodec) -> None:
    # Go's encoding/json matches struct fields case-insensitively.
    cookie = forge({"EXP": int(NOW) + 60, "Key": {"OrgName": "o", "KID": 1}})
    assert codec.verify_session_cookie(cookie, app_exists=any_app).org_name == "o"


def test_cookie_of_a_deleted_app(codec: CookieCodec) -> None:
    cookie = codec.session_cookie(KEY)
    with pytest.raises(Unauthenticated) as info:
        codec.verify_session_cookie(cookie, app_exists=lambda org, name, vers: False)
    assert info.value.message == "app not found -- developer: devorg, app: app, appvers: 1.0"


def test_app_check_gets_the_cookie_app(codec: CookieCodec) -> None:
    seen: list[tuple[str, str, str]] = []

    def exists(org: str, name: str, vers: str) -> bool:
        seen.append((org, name, vers))
        return True

    codec.verify_session_cookie(codec.session_cookie(KEY), app_exists=exists)
    assert seen == [("devorg", "app", "1.0")]


def test_key_rotation_keeps_old_cookies_valid(clock: Clock) -> None:
    codec = CookieCodec(JwtKeys.single(1, "one"), clock=clock)
    old = codec.session_cookie(KEY)
    codec.set_keys(JwtKeys({1: b"one", 2: b"two"}, 2))
    new = codec.session_cookie(KEY)
    assert json.loads(claims_of(new))["key"]["kid"] == 2
    assert codec.verify_session_cookie(old, app_exists=any_app).kid == 1
    assert codec.verify_session_cookie(new, app_exists=any_app).kid == 2


def test_newer_kid_asks_for_a_refresh(clock: Clock) -> None:
    issuer = CookieCodec(JwtKeys({1: b"one", 2: b"two"}, 2), clock=clock)
    cookie = issuer.session_cookie(KEY)
    asked: list[int] = []
    verifier = CookieCodec(JwtKeys.single(1, "one"), clock=clock, on_newer_kid=asked.append)
    assert verify_error(verifier, cookie).startswith("VerifyCookie failed: no secret for kid 2")
    assert asked == [2]

    def refresh(kid: int) -> None:
        verifier.set_keys(JwtKeys({1: b"one", 2: b"two"}, 2))

    verifier = CookieCodec(JwtKeys.single(1, "one"), clock=clock, on_newer_kid=refresh)
    assert verifier.verify_session_cookie(cookie, app_exists=any_app).kid == 2


def test_signing_without_current_key_is_internal(clock: Clock) -> None:
    codec = CookieCodec(JwtKeys({1: b"x"}, 2), clock=clock)
    with pytest.raises(EdgeError) as info:
        codec.session_cookie(KEY)
    assert info.value.code == grpc.StatusCode.INTERNAL
    assert info.value.message == "no signing key"


# --- edge-events cookies ------------------------------------------------------------------------

EE_KEY = EdgeEventsKey(
    app_inst_name="inst1",
    cluster_org="clusterorg",
    cluster_name="cluster1",
    cloudlet_org="dmuus",
    cloudlet_name="cloudlet1",
    location=loc_pb2.Loc(
        latitude=10.0,
        longitude=11.0,
        horizontal_accuracy=123.4,
        vertical_accuracy=321.03,
        altitude=1.453423,
        course=45.3,
        speed=3.453,
        timestamp=loc_pb2.Timestamp(seconds=1_700_000_000),
    ),
)


def test_edge_events_cookie_layout(codec: CookieCodec) -> None:
    cookie = codec.edge_events_cookie(EE_KEY)
    assert claims_of(cookie) == (
        b'{"exp":1700000600,"iat":1700000000,"key":{"appinstname":"inst1",'
        b'"clusterorg":"clusterorg","clustername":"cluster1","cloudletorg":"dmuus",'
        b'"cloudletname":"cloudlet1","location":{"latitude":10,"longitude":11,'
        b'"horizontal_accuracy":123.4,"vertical_accuracy":321.03,"altitude":1.453423,'
        b'"course":45.3,"speed":3.453,"timestamp":{"seconds":1700000000}},"kid":1}}'
    )
    claims = json.loads(claims_of(cookie))
    assert claims["exp"] - claims["iat"] == EDGE_EVENTS_COOKIE_LIFETIME == 600


def test_edge_events_cookie_of_a_plain_device_location(codec: CookieCodec) -> None:
    # the per-call fast path (instance prefix reused, latitude/longitude written directly)
    # must produce the same bytes as the general writer
    for lat, lon, text in (
        (52.5, 13.4, b'{"latitude":52.5,"longitude":13.4}'),
        (10.0, -1e-07, b'{"latitude":10,"longitude":-1e-7}'),
        (0.0, 13.4, b'{"longitude":13.4}'),
    ):
        key = dataclasses.replace(EE_KEY, location=loc_pb2.Loc(latitude=lat, longitude=lon))
        for _ in range(2):  # second time from the prefix cache
            assert claims_of(codec.edge_events_cookie(key)) == (
                b'{"exp":1700000600,"iat":1700000000,"key":{"appinstname":"inst1",'
                b'"clusterorg":"clusterorg","clustername":"cluster1","cloudletorg":"dmuus",'
                b'"cloudletname":"cloudlet1","location":' + text + b',"kid":1}}'
            )
    other = EdgeEventsKey(app_inst_name="inst2", cloudlet_org="o", cloudlet_name='q"uote')
    assert codec.verify_edge_events_cookie(codec.edge_events_cookie(other)).cloudlet_name == (
        'q"uote'
    )
    nan = dataclasses.replace(EE_KEY, location=loc_pb2.Loc(latitude=float("nan"), longitude=1))
    assert codec.edge_events_cookie(nan) == ""


def test_edge_events_cookie_round_trip(codec: CookieCodec) -> None:
    key = codec.verify_edge_events_cookie(codec.edge_events_cookie(EE_KEY))
    assert key == dataclasses.replace(EE_KEY, kid=1)
    assert key.same_cluster(EE_KEY)
    assert not key.same_cluster(EdgeEventsKey(cloudlet_org="dmuus", cloudlet_name="other"))


def test_edge_events_cookie_expires_after_10_minutes(codec: CookieCodec, clock: Clock) -> None:
    cookie = codec.edge_events_cookie(EE_KEY)
    clock.now += 605
    with pytest.raises(Unauthenticated, match=r"^token is expired by 5s$"):
        codec.verify_edge_events_cookie(cookie)


def test_session_cookie_is_not_an_edge_events_cookie(codec: CookieCodec) -> None:
    with pytest.raises(Unauthenticated, match=r"^No Key data in cookie$"):
        codec.verify_edge_events_cookie(codec.session_cookie(KEY))


def test_edge_events_cookie_is_not_a_session_cookie(codec: CookieCodec) -> None:
    cookie = codec.edge_events_cookie(EE_KEY)
    with pytest.raises(Unauthenticated) as info:
        codec.verify_session_cookie(cookie, app_exists=lambda *k: k != ("", "", ""))
    assert info.value.message == "app not found -- developer: , app: , appvers: "


def test_edge_events_cookie_errors(codec: CookieCodec) -> None:
    for cookie, message in [
        ("", "VerifyCookie failed: missing cookie"),
        ("x", "token contains an invalid number of segments"),
        (forge({"exp": int(NOW) + 9, "key": {"kid": 1}}), "No Key data in cookie"),
        (
            forge({"key": {"cloudletname": "c", "location": {"latitude": 91}, "kid": 1}}),
            "invalid location in cookie",
        ),
    ]:
        with pytest.raises(Unauthenticated) as info:
            codec.verify_edge_events_cookie(cookie)
        assert info.value.message == message


def test_edge_events_cookie_of_unmarshallable_location_is_empty(codec: CookieCodec) -> None:
    key = EdgeEventsKey(cloudlet_name="c", location=loc_pb2.Loc(latitude=float("nan")))
    assert codec.edge_events_cookie(key) == ""


# --- client tokens ------------------------------------------------------------------------------

PLATFORM = SessionKey(org_name="platos", app_name="PlatosEnablingLayer", app_vers="1.0")


def test_client_token_format() -> None:
    token = encode_client_token("devorg", "app", "1.0", loc_pb2.Loc(latitude=52.5, longitude=13.4))
    assert base64.b64decode(token) == (
        b'{"Location":{"latitude":52.5,"longitude":13.4},'
        b'"AppKey":{"organization":"devorg","name":"app","version":"1.0"}}'
    )
    decoded = decode_client_token(token)
    assert (decoded.organization, decoded.name, decoded.version) == ("devorg", "app", "1.0")
    assert decoded.location == loc_pb2.Loc(latitude=52.5, longitude=13.4)


def test_client_token_decoding_is_gos() -> None:
    text = (
        b'{"location":{"Latitude":1},"appkey":{"Organization":"o","name":"n","version":"v"},"x":1}'
    )
    token = decode_client_token(base64.b64encode(text).decode())
    assert (token.organization, token.location.latitude) == ("o", 1.0)
    for bad in ["%%%", base64.b64encode(b"[1]").decode(), base64.b64encode(b"{").decode()]:
        with pytest.raises(InvalidArgument, match=r"^Invalid ClientToken$"):
            decode_client_token(bad)
    unpadded = base64.b64encode(b'{"AppKey":{}}').decode().rstrip("=")
    with pytest.raises(InvalidArgument, match=r"^Invalid ClientToken$"):
        decode_client_token(unpadded)


def token_of(org: str, name: str, vers: str, lat: float = 1.0) -> str:
    return encode_client_token(org, name, vers, loc_pb2.Loc(latitude=lat, longitude=2.0))


@pytest.mark.parametrize(
    ("caller", "token", "error", "message"),
    [
        (KEY, "", PermissionDenied, "API Not allowed for developer: devorg app: app"),
        (PLATFORM, "", InvalidArgument, "Missing ClientToken"),
        (PLATFORM, "not base64!", InvalidArgument, "Invalid ClientToken"),
        (PLATFORM, token_of("", "n", "v"), InvalidArgument, "OrgName in token cannot be empty"),
        (PLATFORM, token_of("o", "", "v"), InvalidArgument, "AppName in token cannot be empty"),
        (PLATFORM, token_of("o", "n", ""), InvalidArgument, "AppVers in token cannot be empty"),
        (PLATFORM, token_of("x", "n", "v"), InvalidArgument, "Requested app does not exist"),
        (PLATFORM, token_of("o", "n", "v", 95), InvalidArgument, "Invalid ClientToken"),
    ],
)
def test_platform_find_cloudlet_checks_in_order(
    caller: SessionKey, token: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        check_platform_request(caller, token, app_exists=lambda org, n, v: org == "o")
    assert str(info.value) == message


def test_platform_request_returns_the_token() -> None:
    token = check_platform_request(PLATFORM, token_of("o", "n", "v"), app_exists=any_app)
    assert (token.organization, token.name, token.version) == ("o", "n", "v")
    assert (token.location.latitude, token.location.longitude) == (1.0, 2.0)


# --- peers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "ip"),
    [
        ("ipv4:10.0.0.1:5555", "10.0.0.1"),
        ("ipv6:[::1]:5555", "::1"),  # the original failed IPv6 peers (dme.md §2.1.1)
        ("ipv6:%5B2001:db8::1%5D:443", "2001:db8::1"),
        ("10.0.0.1:80", "10.0.0.1"),
        ("unix:/tmp/sock", ""),
        ("nonsense", ""),
    ],
)
def test_peer_ip(peer: str, ip: str) -> None:
    assert peer_ip(peer) == ip
