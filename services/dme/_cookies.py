"""Session cookies, edge-events cookies and PlatformFindCloudlet client tokens (dme.md §2.1-2.3).

Both cookies are HS512 JWTs signed with the DME's key set; the key id travels inside the
claims (`key.kid`), not in the JWT header, because that is where the original put it and
where every DME of a region looks for it. A device holds a session cookie for a day and an
edge-events cookie for ten minutes; every DME in the region must accept them, so the claim
layout, the JSON encoding and the verification order are the original's, byte for byte
where the bytes are visible:

- verification follows golang-jwt's `ParseWithClaims`: parse header and claims, resolve
  the kid, validate `exp`/`iat`/`nbf`, verify the signature; the *last* error wins, so a
  forged signature reports "signature is invalid" even when the cookie has also expired;
- every failure is `Unauthenticated` with the library's text (the gRPC status message
  clients see), e.g. "token is expired by 10s";
- the client token is standard base64 of Go-marshalled JSON whose capitalised top-level
  keys (`Location`, `AppKey`) clients decode.

Signing keys are passed in (`JwtKeys`): the daemon reads them from Vault
(`<region>/jwtkeys/data/dme`, KV version = kid) or uses the test-mode key.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from distributed_match_engine import loc_pb2

from edge_cloud.errors import EdgeError, InvalidArgument, PermissionDenied, Unauthenticated
from edge_cloud.objects.durations import SECOND, format_duration
from edge_cloud.objects.gojson import go_quote
from services.dme._gocompat import (
    Field,
    GoError,
    Obj,
    Struct,
    b64decode,
    b64encode,
    go_float,
    json_kind,
)
from services.dme._gocompat import loads as go_loads
from services.dme._names import is_platform_app

__all__ = [
    "EDGE_EVENTS_COOKIE_LIFETIME",
    "SESSION_COOKIE_LIFETIME",
    "TEST_MODE_KEYS",
    "ClientToken",
    "CookieCodec",
    "EdgeEventsKey",
    "JwtKeys",
    "SessionKey",
    "check_platform_request",
    "decode_client_token",
    "encode_client_token",
    "loc_is_valid",
    "loc_json",
]

SESSION_COOKIE_LIFETIME: Final = 24 * 3600.0
"""Seconds a session cookie is valid (flag `cookieExpiration`, default 24h)."""

EDGE_EVENTS_COOKIE_LIFETIME: Final = 600.0
"""Seconds an edge-events cookie is valid (flag `edgeEventsCookieExpiration`, default 10m)."""

_HEADER: Final = b64encode(b'{"alg":"HS512","typ":"JWT"}')
_KID: Final = '"kid":'
_EDGE_PREFIX_CACHE_SIZE: Final = 100_000
"""Instances whose cookie prefix is kept; the cache starts afresh beyond it."""
_HMAC_ALGS: Final[dict[str, Callable[..., Any]]] = {
    "HS256": hashlib.sha256,
    "HS384": hashlib.sha384,
    "HS512": hashlib.sha512,
}
# golang-jwt registers these; any other `alg` is "unavailable". Ours are HMAC, so the
# asymmetric ones fail at verification with the library's wrong-key-type error.
_OTHER_ALGS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True, slots=True)
class JwtKeys:
    """The DME's cookie signing secrets, by key id.

    New cookies are signed with `current`; older ids stay for verifying cookies issued
    before a rotation (Vault keeps old KV versions, the version number is the kid).

    Attributes:
        secrets: Key id -> HMAC secret.
        current: The id new cookies are signed with; must be in `secrets` to sign.
    """

    secrets: Mapping[int, bytes]
    current: int

    @classmethod
    def single(cls, kid: int, secret: str | bytes) -> JwtKeys:
        """A key set of one secret, as test mode and unit tests use.

        Args:
            kid: Its key id.
            secret: The secret; text is UTF-8 encoded.

        Returns:
            The key set.
        """
        raw = secret.encode() if isinstance(secret, str) else secret
        return cls({kid: raw}, kid)


TEST_MODE_KEYS: Final = JwtKeys.single(0, "secret")
"""What the original's `-testMode` uses instead of Vault: kid 0, secret "secret"."""


@dataclass(frozen=True, slots=True)
class SessionKey:
    """What a session cookie says about its holder (the original's `CookieKey`).

    Handlers take the calling app from it; it is attached to the request by the auth step.

    Attributes:
        peer_ip: The IP the client registered from (no port).
        org_name: App organisation.
        app_name: App name.
        app_vers: App version.
        unique_id_type: Device id type (`dme-ksuid`, `<org>:<app>` or client-chosen).
        unique_id: Device id.
        kid: Key id the cookie was signed with (set when signing).
    """

    peer_ip: str = ""
    org_name: str = ""
    app_name: str = ""
    app_vers: str = ""
    unique_id_type: str = ""
    unique_id: str = ""
    kid: int = 0


@dataclass(frozen=True, slots=True)
class EdgeEventsKey:
    """What an edge-events cookie names: the AppInst a client was sent to and from where.

    Attributes:
        app_inst_name: The AppInst key name.
        cluster_org: Its cluster's organisation.
        cluster_name: Its cluster's name.
        cloudlet_org: Its cloudlet's organisation (the operator).
        cloudlet_name: Its cloudlet's name.
        location: The client location of the request that issued the cookie; treat as
            read-only.
        kid: Key id the cookie was signed with (set when signing).
    """

    app_inst_name: str = ""
    cluster_org: str = ""
    cluster_name: str = ""
    cloudlet_org: str = ""
    cloudlet_name: str = ""
    location: loc_pb2.Loc = field(default_factory=loc_pb2.Loc)
    kid: int = 0

    def same_cluster(self, other: EdgeEventsKey) -> bool:
        """Whether two cookies point at the same cluster on the same cloudlet.

        Edge events use it to decide that a FindCloudlet result is a *different* instance
        worth an `EVENT_CLOUDLET_UPDATE` (the original's `IsTheSameCluster`).

        Args:
            other: The other cookie's key.

        Returns:
            True when cloudlet and cluster organisation and name all match.
        """
        return (
            self.cloudlet_org == other.cloudlet_org
            and self.cloudlet_name == other.cloudlet_name
            and self.cluster_org == other.cluster_org
            and self.cluster_name == other.cluster_name
        )


# --- the Go structs the claims decode into -----------------------------------------------

_TIMESTAMP: Final = Struct(
    "Timestamp", (Field("seconds", "int64"), Field("nanos", "int32")), "dme.Timestamp"
)
_LOC: Final = Struct(
    "Loc",
    (
        Field("latitude", "float64"),
        Field("longitude", "float64"),
        Field("horizontal_accuracy", "float64"),
        Field("vertical_accuracy", "float64"),
        Field("altitude", "float64"),
        Field("course", "float64"),
        Field("speed", "float64"),
        Field("timestamp", _TIMESTAMP, pointer=True),
    ),
    "dme.Loc",
)
_STANDARD_CLAIMS: Final = (
    Field("aud", "string"),
    Field("exp", "int64"),
    Field("jti", "string"),
    Field("iat", "int64"),
    Field("iss", "string"),
    Field("nbf", "int64"),
    Field("sub", "string"),
)
_COOKIE_KEY: Final = Struct(
    "CookieKey",
    (
        Field("peerip", "string"),
        Field("orgname", "string"),
        Field("appname", "string"),
        Field("appvers", "string"),
        Field("uniqueidtype", "string"),
        Field("uniqueid", "string"),
        Field("kid", "int"),
    ),
)
_SESSION_CLAIMS: Final = Struct(
    "dmeClaims",
    (*_STANDARD_CLAIMS, Field("key", _COOKIE_KEY, pointer=True)),
    "dmecommon.dmeClaims",
)
_EDGE_KEY: Final = Struct(
    "EdgeEventsCookieKey",
    (
        Field("appinstname", "string"),
        Field("clusterorg", "string"),
        Field("clustername", "string"),
        Field("cloudletorg", "string"),
        Field("cloudletname", "string"),
        Field("location", _LOC),
        Field("kid", "int"),
    ),
)
_EDGE_CLAIMS: Final = Struct(
    "edgeEventsClaims",
    (*_STANDARD_CLAIMS, Field("key", _EDGE_KEY, pointer=True)),
    "dmecommon.edgeEventsClaims",
)
_APP_KEY: Final = Struct(
    "AppKey",
    (Field("organization", "string"), Field("name", "string"), Field("version", "string")),
    "edgeproto.AppKey",
)
_CLIENT_TOKEN: Final = Struct(
    "ClientToken",
    (Field("Location", _LOC), Field("AppKey", _APP_KEY)),
    "dmecommon.ClientToken",
)


# --- encoding ------------------------------------------------------------------------------


def _json_object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{go_quote(k)}:{v}" for k, v in pairs) + "}"


def _strings(*pairs: tuple[str, str]) -> list[tuple[str, str]]:
    """`omitempty` string fields."""
    return [(k, go_quote(v)) for k, v in pairs if v]


def loc_json(loc: loc_pb2.Loc) -> str:
    """Go `json.Marshal` of the original's `dme.Loc` struct (proto names, `omitempty`).

    Args:
        loc: The location.

    Returns:
        E.g. `{"latitude":52.5,"longitude":13.4}`; `{}` for an all-zero location.

    Raises:
        ValueError: When a value is NaN or infinite, which Go cannot marshal.
    """
    lat, lon = loc.latitude, loc.longitude
    # the usual device location, latitude and longitude only, is written directly, as every
    # FindCloudlet signs one (NaN is truthy, so NaN values take the full path and its error)
    if (
        lat
        and lon
        and not (
            loc.horizontal_accuracy
            or loc.vertical_accuracy
            or loc.altitude
            or loc.course
            or loc.speed
            or loc.HasField("timestamp")
        )
    ):
        return f'{{"latitude":{go_float(lat)},"longitude":{go_float(lon)}}}'
    pairs = [
        (name, go_float(value))
        for name, value in (
            ("latitude", loc.latitude),
            ("longitude", loc.longitude),
            ("horizontal_accuracy", loc.horizontal_accuracy),
            ("vertical_accuracy", loc.vertical_accuracy),
            ("altitude", loc.altitude),
            ("course", loc.course),
            ("speed", loc.speed),
        )
        if value != 0 or math.isnan(value)
    ]
    if loc.HasField("timestamp"):
        ts = loc.timestamp
        parts = [(k, str(v)) for k, v in (("seconds", ts.seconds), ("nanos", ts.nanos)) if v]
        pairs.append(("timestamp", _json_object(parts)))
    return _json_object(pairs)


def _loc_from(values: Mapping[str, Any]) -> loc_pb2.Loc:
    loc = loc_pb2.Loc()
    for name in (
        "latitude",
        "longitude",
        "horizontal_accuracy",
        "vertical_accuracy",
        "altitude",
        "course",
        "speed",
    ):
        if name in values:
            setattr(loc, name, values[name])
    ts = values.get("timestamp")
    if ts is not None:
        loc.timestamp.seconds = ts.get("seconds", 0)
        loc.timestamp.nanos = ts.get("nanos", 0)
    return loc


def loc_is_valid(loc: loc_pb2.Loc) -> bool:
    """The original's range check (`util.IsLatitudeValid`/`IsLongitudeValid`).

    Args:
        loc: A location.

    Returns:
        True when latitude is in [-90, 90] and longitude in [-180, 180] (NaN is not).
    """
    return -90 <= loc.latitude <= 90 and -180 <= loc.longitude <= 180


# --- the codec -----------------------------------------------------------------------------


class CookieCodec:
    """Issues and verifies the DME's cookies with one key set and one clock.

    Thread-compatible, not thread-safe: the daemon uses it from its event loop.

    Args:
        keys: The signing secrets.
        session_lifetime: Seconds a session cookie is valid.
        edge_events_lifetime: Seconds an edge-events cookie is valid.
        clock: Wall-clock seconds (JWT times are Unix seconds); injectable for tests.
        on_newer_kid: Called with a kid newer than `keys.current` before it is looked up:
            another DME has rotated to a key this one has not read yet. The original
            re-reads Vault inline; here the daemon refreshes the keys (`set_keys`) in the
            background and this cookie fails unless the callback already updated them.
    """

    def __init__(
        self,
        keys: JwtKeys,
        *,
        session_lifetime: float = SESSION_COOKIE_LIFETIME,
        edge_events_lifetime: float = EDGE_EVENTS_COOKIE_LIFETIME,
        clock: Callable[[], float] = time.time,
        on_newer_kid: Callable[[int], None] | None = None,
    ) -> None:
        self._keys = keys
        self._session_lifetime = session_lifetime
        self._edge_events_lifetime = edge_events_lifetime
        self._clock = clock
        self._on_newer_kid = on_newer_kid
        # FindCloudlet signs an edge-events cookie per call: the JSON of the instance part
        # (five quoted strings) is the same for every client of an instance, so it is built
        # once per instance and only the location and times are written per call
        self._edge_prefixes: dict[tuple[str, str, str, str, str], str] = {}

    @property
    def keys(self) -> JwtKeys:
        """The key set in use."""
        return self._keys

    def set_keys(self, keys: JwtKeys) -> None:
        """Swap in a newly read key set (after a Vault refresh).

        Args:
            keys: The new set; it should keep the old ids so live cookies stay valid.
        """
        self._keys = keys

    # -- session cookies --

    def session_cookie(self, key: SessionKey) -> str:
        """Sign a session cookie for a registered client.

        Args:
            key: The client's identity; `kid` is replaced by the current key id.

        Returns:
            The JWT.

        Raises:
            EdgeError: INTERNAL "no signing key" when the current kid has no secret.
        """
        secret, kid = self._signing_secret()
        body = _json_object(
            [
                *_strings(
                    ("peerip", key.peer_ip),
                    ("orgname", key.org_name),
                    ("appname", key.app_name),
                    ("appvers", key.app_vers),
                    ("uniqueidtype", key.unique_id_type),
                    ("uniqueid", key.unique_id),
                ),
                *([("kid", str(kid))] if kid else []),
            ]
        )
        return self._sign(self._session_lifetime, body, secret)

    def verify_session_cookie(
        self, cookie: str, *, app_exists: Callable[[str, str, str], bool]
    ) -> SessionKey:
        """Check a session cookie as the auth step of every call but RegisterClient does.

        Args:
            cookie: The request's `session_cookie`.
            app_exists: Whether (org, name, version) is still a known App; a cookie of an
                app deleted since it was issued is refused.

        Returns:
            The cookie's key: "the calling app" for the handler.

        Raises:
            Unauthenticated: With the exact texts of dme.md §2.1.3.
        """
        values = self._verified_claims(cookie, _SESSION_CLAIMS)
        raw = values.get("key")
        if raw is None:
            raise Unauthenticated("No Key data in cookie")
        key = SessionKey(
            peer_ip=raw.get("peerip", ""),
            org_name=raw.get("orgname", ""),
            app_name=raw.get("appname", ""),
            app_vers=raw.get("appvers", ""),
            unique_id_type=raw.get("uniqueidtype", ""),
            unique_id=raw.get("uniqueid", ""),
            kid=raw.get("kid", 0),
        )
        if not app_exists(key.org_name, key.app_name, key.app_vers):
            raise Unauthenticated(
                f"app not found -- developer: {key.org_name}, app: {key.app_name}, "
                f"appvers: {key.app_vers}"
            )
        return key

    # -- edge-events cookies --

    def edge_events_cookie(self, key: EdgeEventsKey) -> str:
        """Sign an edge-events cookie for a FindCloudlet or GetAppInstList result.

        Args:
            key: The instance and the client location; `kid` is replaced.

        Returns:
            The JWT, or "" when the location holds NaN or an infinity: the original's
            marshalling fails there and it sends an empty cookie (GetAppInstList does not
            range-check its location, so a client can cause this).

        Raises:
            EdgeError: INTERNAL "no signing key" when the current kid has no secret.
        """
        try:
            location = loc_json(key.location)
        except ValueError:
            return ""
        secret, kid = self._signing_secret()
        ident = (
            key.app_inst_name,
            key.cluster_org,
            key.cluster_name,
            key.cloudlet_org,
            key.cloudlet_name,
        )
        prefix = self._edge_prefixes.get(ident)
        if prefix is None:
            if len(self._edge_prefixes) >= _EDGE_PREFIX_CACHE_SIZE:
                self._edge_prefixes.clear()
            strings = _strings(
                ("appinstname", key.app_inst_name),
                ("clusterorg", key.cluster_org),
                ("clustername", key.cluster_name),
                ("cloudletorg", key.cloudlet_org),
                ("cloudletname", key.cloudlet_name),
            )
            prefix = "{" + "".join(f"{go_quote(k)}:{v}," for k, v in strings) + '"location":'
            self._edge_prefixes[ident] = prefix
        body = f"{prefix}{location},{_KID}{kid}}}" if kid else f"{prefix}{location}}}"
        return self._sign(self._edge_events_lifetime, body, secret)

    def verify_edge_events_cookie(self, cookie: str) -> EdgeEventsKey:
        """Check the edge-events cookie of a StreamEdgeEvent init message.

        Args:
            cookie: `ClientEdgeEvent.edge_events_cookie`.

        Returns:
            The cookie's key.

        Raises:
            Unauthenticated: The JWT texts of §2.1.3; "No Key data in cookie" when the
                cookie names no cluster or cloudlet (what a *session* cookie gives);
                "invalid location in cookie".
        """
        values = self._verified_claims(cookie, _EDGE_CLAIMS)
        raw = values.get("key")
        if raw is None or not any(
            raw.get(name) for name in ("clusterorg", "clustername", "cloudletorg", "cloudletname")
        ):
            raise Unauthenticated("No Key data in cookie")
        key = EdgeEventsKey(
            app_inst_name=raw.get("appinstname", ""),
            cluster_org=raw.get("clusterorg", ""),
            cluster_name=raw.get("clustername", ""),
            cloudlet_org=raw.get("cloudletorg", ""),
            cloudlet_name=raw.get("cloudletname", ""),
            location=_loc_from(raw.get("location", {})),
            kid=raw.get("kid", 0),
        )
        if not loc_is_valid(key.location):
            raise Unauthenticated("invalid location in cookie")
        return key

    # -- JWT --

    def _signing_secret(self) -> tuple[bytes, int]:
        keys = self._keys
        secret = keys.secrets.get(keys.current)
        if secret is None:
            raise EdgeError("no signing key")
        return secret, keys.current

    def _sign(self, lifetime: float, key_json: str, secret: bytes) -> str:
        now = self._clock()
        iat = math.floor(now)
        exp = math.floor(now + lifetime)
        if exp and iat:  # always, but for a clock at the epoch
            claims = f'{{"exp":{exp},"iat":{iat},"key":{key_json}}}'
        else:
            claims = _json_object(
                [
                    *([("exp", str(exp))] if exp else []),
                    *([("iat", str(iat))] if iat else []),
                    ("key", key_json),
                ]
            )
        signing_input = f"{_HEADER}.{b64encode(claims.encode())}"
        # one-shot HMAC (OpenSSL in one call), much cheaper than an `hmac.new` object
        mac = hmac.digest(secret, signing_input.encode("ascii"), "sha512")
        return f"{signing_input}.{b64encode(mac)}"

    def _verified_claims(self, cookie: str, claims_type: Struct) -> dict[str, Any]:
        """golang-jwt v4 `ParseWithClaims` with the original's key function.

        Returns:
            The decoded claims.

        Raises:
            Unauthenticated: With the library's (or the key function's) message.
        """
        if not cookie:
            raise Unauthenticated("VerifyCookie failed: missing cookie")
        parts = cookie.split(".")
        if len(parts) != 3:
            raise Unauthenticated("token contains an invalid number of segments")
        try:
            header = self._header(cookie, parts[0])
            claims = claims_type.decode(go_loads(b64decode(parts[1], url=True, pad_segment=True)))
        except GoError as exc:
            raise Unauthenticated(str(exc)) from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise Unauthenticated("signing method (alg) is unspecified.")
        if alg not in _HMAC_ALGS and alg not in _OTHER_ALGS and alg != "none":
            raise Unauthenticated("signing method (alg) is unavailable.")
        secret = self._verification_secret(cookie, claims)
        error = _claims_error(claims, math.floor(self._clock()))
        signature_error = _signature_error(alg, parts, secret)
        if signature_error is not None:  # the last error wins, as in golang-jwt
            error = signature_error
        if error is not None:
            raise Unauthenticated(error)
        return claims

    @staticmethod
    def _header(cookie: str, segment: str) -> dict[str, Any]:
        try:
            raw = b64decode(segment, url=True, pad_segment=True)
        except GoError:
            if cookie.lower().startswith("bearer "):
                raise GoError("tokenstring should not contain 'bearer '") from None
            raise
        value = go_loads(raw)
        if value is None:
            return {}
        if not isinstance(value, Obj):
            kind = json_kind(value).split(" ")[0]  # into a map: "number", not "number 5"
            raise GoError(
                f"json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
            )
        return dict(value)

    def _verification_secret(self, cookie: str, claims: Mapping[str, Any]) -> bytes:
        key = claims.get("key")
        if key is None:
            raise Unauthenticated("VerifyCookie failed: Invalid cookie, no key")
        kid: int = key.get("kid", 0)
        if kid > self._keys.current and self._on_newer_kid is not None:
            self._on_newer_kid(kid)
        secret = self._keys.secrets.get(kid)
        if secret is None:
            raise Unauthenticated(
                f"VerifyCookie failed: no secret for kid {kid} in cookie {cookie}"
            )
        return secret


def _claims_error(claims: Mapping[str, Any], now: int) -> str | None:
    """golang-jwt v4 `StandardClaims.Valid`: exp, then iat, then nbf; the last one wins."""
    error = None
    exp = claims.get("exp", 0)
    if exp and not now < exp:
        error = f"token is expired by {format_duration((now - exp) * SECOND)}"
    iat = claims.get("iat", 0)
    if iat and now < iat:
        error = "token used before issued"
    nbf = claims.get("nbf", 0)
    if nbf and now < nbf:
        error = "token is not valid yet"
    return error


def _signature_error(alg: str, parts: list[str], secret: bytes) -> str | None:
    if alg == "none":
        return "'none' signature type is not allowed"
    try:
        signature = b64decode(parts[2], url=True, pad_segment=True)
    except GoError as exc:
        return str(exc)
    digest = _HMAC_ALGS.get(alg)
    if digest is None:  # an asymmetric algorithm given an HMAC secret
        return "key is of invalid type"
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), digest).digest()
    return None if hmac.compare_digest(signature, expected) else "signature is invalid"


# --- client tokens (PlatformFindCloudlet) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientToken:
    """The app and location a platform app asks PlatformFindCloudlet about.

    Attributes:
        organization: App organisation.
        name: App name.
        version: App version.
        location: The device location; treat as read-only.
    """

    organization: str
    name: str
    version: str
    location: loc_pb2.Loc


def encode_client_token(organization: str, name: str, version: str, loc: loc_pb2.Loc) -> str:
    """Make the `client_token` of a GetAppOfficialFqdn reply.

    Args:
        organization: The calling app's organisation.
        name: Its name.
        version: Its version.
        loc: The request's GPS location.

    Returns:
        Standard base64 of `{"Location":{...},"AppKey":{"organization":...,...}}`, the
        JSON Go's `json.Marshal` produces for the original's `ClientToken`.

    Raises:
        ValueError: When the location holds NaN or an infinity (the original then fails
            the reply with AOF_FAIL).
    """
    app_key = _json_object(
        _strings(("organization", organization), ("name", name), ("version", version))
    )
    text = _json_object([("Location", loc_json(loc)), ("AppKey", app_key)])
    return b64encode(text.encode(), url=False, pad=True)


def decode_client_token(token: str) -> ClientToken:
    """Read a client token as the original's `GetClientDataFromToken` does.

    Go's decoding is lenient where clients may rely on it (field names in any case,
    unknown fields ignored, CR/LF inside the base64) and strict where it refuses (padding,
    type mismatches), and this reproduces both.

    Args:
        token: `PlatformFindCloudletRequest.client_token`.

    Returns:
        The app key and location inside, not yet validated.

    Raises:
        InvalidArgument: "Invalid ClientToken" for anything that is not base64 of JSON of
            the right shape.
    """
    try:
        values = _CLIENT_TOKEN.decode(go_loads(b64decode(token, url=False)))
    except GoError:
        raise InvalidArgument("Invalid ClientToken") from None
    app = values.get("AppKey", {})
    return ClientToken(
        organization=app.get("organization", ""),
        name=app.get("name", ""),
        version=app.get("version", ""),
        location=_loc_from(values.get("Location", {})),
    )


def check_platform_request(
    caller: SessionKey, client_token: str, *, app_exists: Callable[[str, str, str], bool]
) -> ClientToken:
    """PlatformFindCloudlet's checks after the cookie, in the original's order (§2.3).

    Args:
        caller: The verified session cookie of the caller.
        client_token: The request's token.
        app_exists: Whether (org, name, version) is a known App.

    Returns:
        The token's app and location, ready for the FindCloudlet search.

    Raises:
        PermissionDenied: "API Not allowed for developer: <org> app: <app>" unless the
            caller is the platform app.
        InvalidArgument: "Missing ClientToken", "Invalid ClientToken", "OrgName in token
            cannot be empty" (and AppName, AppVers), "Requested app does not exist".
    """
    if not is_platform_app(caller.org_name, caller.app_name):
        raise PermissionDenied(
            f"API Not allowed for developer: {caller.org_name} app: {caller.app_name}"
        )
    if not client_token:
        raise InvalidArgument("Missing ClientToken")
    token = decode_client_token(client_token)
    if not token.organization:
        raise InvalidArgument("OrgName in token cannot be empty")
    if not token.name:
        raise InvalidArgument("AppName in token cannot be empty")
    if not token.version:
        raise InvalidArgument("AppVers in token cannot be empty")
    if not app_exists(token.organization, token.name, token.version):
        raise InvalidArgument("Requested app does not exist")
    if not loc_is_valid(token.location):
        raise InvalidArgument("Invalid ClientToken")
    return token
