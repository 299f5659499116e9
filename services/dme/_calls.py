"""The DME's calls, shared by the gRPC servicers and the REST gateway.

Every call goes through the pipeline of dme.md §2.0 in order (and is counted by the
stats step, `_stats`, whatever its outcome): rate limiting (by the full
gRPC method path the client used, so legacy `MatchEngineApi` callers see their own path in
the error), then the session cookie (every request but RegisterClient; the verified key is
"the calling app"), then the handler. Handlers raise `EdgeError`s, which the gRPC
interceptor and the REST layer turn into status codes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from distributed_match_engine import (
    app_client_pb2,
    app_client_platos_pb2,
    appcommon_pb2,
    dynamic_location_group_pb2,
    loc_pb2,
    locverify_pb2,
    qos_pb2,
    qos_position_pb2,
    session_pb2,
)
from google.protobuf.message import Message

from edge_cloud.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from services.dme._authtoken import TokenError, ksuid, verify_auth_token
from services.dme._autoprov import AutoProvStats
from services.dme._clients import AppInstClients, Devices
from services.dme._cookies import (
    CookieCodec,
    EdgeEventsKey,
    SessionKey,
    check_platform_request,
    encode_client_token,
)
from services.dme._names import is_platform_app
from services.dme._operators import LocationOperator, QosOperator
from services.dme._ranking import (
    APPINST_ORG_TAG,
    APPINST_TAG,
    Candidate,
    MatchEngine,
    app_inst_list_reply,
    find_cloudlet_reply,
    require_list_location,
    validate_location,
)
from services.dme._ratelimit import RateLimitManager
from services.dme._stats import ApiStats, StatKey
from services.dme._world import AppInstKey, AppKey, AppRecord, Instance, World

__all__ = ["SERVICES", "Call", "DmeCalls", "app_access_ports"]

log = logging.getLogger(__name__)

PACKAGE: Final = "distributed_match_engine"

SERVICES: Final[dict[str, tuple[str, ...]]] = {
    "Session": ("RegisterClient",),
    "MatchEngineApi": ("FindCloudlet", "GetAppInstList", "GetAppOfficialFqdn", "StreamEdgeEvent"),
    "Location": ("VerifyLocation", "GetLocation"),
    "QualityOfService": ("QosPrioritySessionCreate", "QosPrioritySessionDelete"),
    "QosPositionKpi": ("GetQosPositionKpi",),
    "PlatformOS": ("PlatformFindCloudlet", "GetFqdnList"),
}
"""The split (edgexr) services and their methods; the legacy `MatchEngineApi` has all."""

_PROTOS: Final = {
    "tcp": appcommon_pb2.LProto.L_PROTO_TCP,
    "udp": appcommon_pb2.LProto.L_PROTO_UDP,
    "http": appcommon_pb2.LProto.L_PROTO_HTTP,
}


@dataclass(frozen=True, slots=True)
class Call:
    """Who calls what: the pipeline's inputs besides the request.

    Attributes:
        method: The method name (`FindCloudlet`).
        full_method: The path the client used (`/distributed_match_engine.MatchEngineApi/...`).
        peer_ip: The caller's bare IP ("" when unknown).
    """

    method: str
    full_method: str
    peer_ip: str

    @classmethod
    def of(cls, service: str, method: str, peer_ip: str) -> Call:
        """A call of `method` through `service` (short name, e.g. `Session`).

        Args:
            service: The service's short name.
            method: The method name.
            peer_ip: The caller's bare IP.

        Returns:
            The call.
        """
        return cls(method, f"/{PACKAGE}.{service}/{method}", peer_ip)


def app_access_ports(access_ports: str) -> list[appcommon_pb2.AppPort]:
    """An App's `access_ports` spec (`tcp:80,udp:10002-10010:tls`) as unmapped AppPorts.

    Args:
        access_ports: The spec.

    Returns:
        One port per entry, `public_port` = internal port; unparsable entries are skipped.
    """
    ports: list[appcommon_pb2.AppPort] = []
    for entry in filter(None, (e.strip() for e in access_ports.split(","))):
        proto, _, rest = entry.partition(":")
        number, *options = rest.split(":")
        start, _, end = number.partition("-")
        try:
            internal = int(start)
            end_port = int(end) if end else 0
        except ValueError:
            continue
        port = appcommon_pb2.AppPort(
            proto=_PROTOS.get(proto.lower(), appcommon_pb2.LProto.L_PROTO_UNKNOWN),
            internal_port=internal,
            public_port=internal,
            end_port=end_port,
        )
        for option in options:
            if option.lower() == "tls":
                port.tls = True
            elif option.lower() == "nginx":
                port.nginx = True
        ports.append(port)
    return ports


_VERIFIED_CACHE_SIZE: Final = 100_000


def _expiry(cookie: str) -> float | None:
    """The `exp` claim of a cookie that has just been verified, or None."""
    try:
        payload = cookie.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims["exp"]
    except (IndexError, ValueError, KeyError, TypeError):
        return None
    return float(exp) if isinstance(exp, int | float) else None


Handler: TypeAlias = Callable[[Call, SessionKey | None, Any], Awaitable[Message]]


class DmeCalls:
    """The unary calls and the pipeline in front of them.

    Args:
        world: What the DME knows of the region.
        engine: The FindCloudlet / GetAppInstList search.
        codec: Session and edge-events cookies.
        limiter: Rate limits.
        location: The operator's location interface.
        qos: The operator's QoS interface.
        token_server_uri: `toksrvurl`, returned by RegisterClient.
        qos_session_addr: `qossesaddr`; FindCloudlet tries a QoS session only with it.
        clients: Where clients sent to an instance are recorded (AppInstClient), if anywhere.
        devices: Where platform devices are recorded (Device), if anywhere.
        autoprov: Where auto-provisioning demand is counted, if anywhere.
    """

    def __init__(
        self,
        world: World,
        engine: MatchEngine,
        codec: CookieCodec,
        limiter: RateLimitManager,
        location: LocationOperator,
        qos: QosOperator,
        *,
        token_server_uri: str = "",
        qos_session_addr: str = "",
        clients: AppInstClients | None = None,
        devices: Devices | None = None,
        autoprov: AutoProvStats | None = None,
    ) -> None:
        self.world = world
        self.engine = engine
        self.codec = codec
        self.limiter = limiter
        self.location = location
        self.qos = qos
        self._token_server_uri = token_server_uri
        # cookie -> (key, exp): a cookie string verified once needs no second HMAC and JSON
        # parse until it expires; misses, expiry and deleted apps take the full path (and
        # its exact error texts)
        self._verified: dict[str, tuple[SessionKey, float]] = {}
        self._cache_keys = codec.keys
        self.stats = ApiStats()
        self._qos_addr = qos_session_addr
        self.clients = clients
        self.devices = devices
        self.autoprov = autoprov
        self._handlers: dict[str, tuple[Handler, bool]] = {
            "RegisterClient": (self.register_client, False),
            "FindCloudlet": (self.find_cloudlet, True),
            "PlatformFindCloudlet": (self.platform_find_cloudlet, True),
            "GetAppInstList": (self.get_app_inst_list, True),
            "GetFqdnList": (self.get_fqdn_list, True),
            "GetAppOfficialFqdn": (self.get_app_official_fqdn, True),
            "VerifyLocation": (self.verify_location, True),
            "GetLocation": (self.get_location, True),
            "QosPrioritySessionCreate": (self.qos_session_create, True),
            "QosPrioritySessionDelete": (self.qos_session_delete, True),
            "AddUserToGroup": (self.add_user_to_group, True),
        }

    # -- pipeline --

    async def admit(self, call: Call) -> None:
        """The rate-limit step; leaky buckets make the caller wait here.

        Args:
            call: The call.

        Raises:
            ResourceExhausted: "Request for <path> rate limited, please retry later. ..."
        """
        wait_ns = self.limiter.limit_call(call.full_method, call.peer_ip)
        if wait_ns > 0:
            await asyncio.sleep(wait_ns / 1e9)

    def authenticate(self, cookie: str) -> SessionKey:
        """The cookie step: verify a session cookie, and that its App still exists.

        Args:
            cookie: The request's `session_cookie`.

        Returns:
            The calling app's key.

        Raises:
            Unauthenticated: With the verification text of dme.md §2.1.3.
        """
        keys = self.codec.keys
        if keys is not self._cache_keys:  # rotated: verify everything afresh
            self._verified.clear()
            self._cache_keys = keys
        hit = self._verified.get(cookie)
        if hit is not None and time.time() <= hit[1]:
            key = hit[0]
            if self.world.app_exists(key.org_name, key.app_name, key.app_vers):
                return key
        key = self.codec.verify_session_cookie(cookie, app_exists=self.world.app_exists)
        expires = _expiry(cookie)
        if expires is not None:
            if len(self._verified) >= _VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[cookie] = (key, expires)
        return key

    async def unary(self, call: Call, request: Any) -> Message:
        """Run a unary call through the pipeline.

        Args:
            call: Which method, through which path, from whom.
            request: The request message.

        Returns:
            The reply message.
        """
        started = time.monotonic()
        app = ("", "", "")
        reply: Message | None = None
        try:
            wait_ns = self.limiter.limit_call(call.full_method, call.peer_ip)  # `admit`, inline
            if wait_ns > 0:
                await asyncio.sleep(wait_ns / 1e9)
            handler, needs_cookie = self._handlers[call.method]
            if needs_cookie:
                key = self.authenticate(request.session_cookie)
                app = (key.org_name, key.app_name, key.app_vers)
            else:
                key = None
                app = (request.org_name, request.app_name, request.app_vers)
            reply = await handler(call, key, request)
            return reply
        finally:
            self.stats.record(
                self._stat_key(call.method, app, reply),
                time.monotonic() - started,
                failed=reply is None,
            )

    def _stat_key(self, method: str, app: tuple[str, str, str], reply: Message | None) -> StatKey:
        if not isinstance(reply, app_client_pb2.FindCloudletReply) or not reply.tags:
            return StatKey(method, app)
        name, org = reply.tags.get(APPINST_TAG, ""), reply.tags.get(APPINST_ORG_TAG, "")
        inst = self.world.instance(AppInstKey(name, org))
        if inst is None:
            return StatKey(method, app, (name, org))
        zone = (inst.zone_key[0], inst.zone_key[1])
        return StatKey(method, app, (name, org), zone, inst.cloudlet_key.organization)

    async def qos_position_kpi(
        self, call: Call, request: qos_position_pb2.QosPositionRequest
    ) -> list[qos_position_pb2.QosPositionKpiReply]:
        """GetQosPositionKpi: rate limit, cookie on receipt, then the operator's replies.

        Args:
            call: The call.
            request: The positions.

        Returns:
            The replies to stream.
        """
        await self.admit(call)
        self.authenticate(request.session_cookie)
        return await self.qos.position_kpi(request)

    # -- helpers --

    def edge_cookie(self, inst: Instance, loc: loc_pb2.Loc) -> str:
        """An edge-events cookie for an instance found for a client at `loc`.

        Args:
            inst: The instance.
            loc: The client's location.

        Returns:
            The cookie.
        """
        return self.codec.edge_events_cookie(
            EdgeEventsKey(
                app_inst_name=inst.key.name,
                cluster_org=inst.cluster_key.organization,
                cluster_name=inst.cluster_key.name,
                cloudlet_org=inst.cloudlet_key.organization,
                cloudlet_name=inst.cloudlet_key.name,
                location=loc,
            )
        )

    def find(self, app: AppKey, carrier: str, loc: loc_pb2.Loc) -> app_client_pb2.FindCloudletReply:
        """FindCloudlet's search and reply for an app at a location (no QoS step).

        Args:
            app: The app.
            carrier: The requested carrier (untranslated).
            loc: The validated location.

        Returns:
            FIND_FOUND or FIND_NOTFOUND.
        """
        found = self.engine.find_cloudlet(app, carrier, loc.latitude, loc.longitude)
        if self.autoprov is not None:
            self._count_demand(app, carrier, loc, found)
        return find_cloudlet_reply(found, lambda inst: self.edge_cookie(inst, loc))

    def _count_demand(
        self, app: AppKey, carrier: str, loc: loc_pb2.Loc, best: Candidate | None
    ) -> None:
        """Auto-provisioning demand of one search (dme.md §2.2.2), for Apps with policies."""
        record = self.world.app(app)
        if record is None or not record.auto_prov_policies or self.autoprov is None:
            return
        self.autoprov.searched(
            (app.organization, app.name, app.version),
            record.auto_prov_policies,
            record.deployment,
            self.world.translate_carrier(carrier),
            loc.latitude,
            loc.longitude,
            None if best is None else best.distance,
        )

    def _record_client(
        self,
        app: AppKey,
        key: SessionKey,
        loc: loc_pb2.Loc,
        reply: app_client_pb2.FindCloudletReply,
    ) -> None:
        """Keep the client a FindCloudlet sent to an instance (AppInstClient, §2.12)."""
        if self.clients is None or reply.status != app_client_pb2.FindCloudletReply.FIND_FOUND:
            return
        self.clients.record(
            app=(app.organization, app.name, app.version),
            app_inst=(reply.tags.get(APPINST_TAG, ""), reply.tags.get(APPINST_ORG_TAG, "")),
            unique_id=key.unique_id,
            unique_id_type=key.unique_id_type,
            location=loc,
        )

    @staticmethod
    def _app_of(key: SessionKey | None) -> AppKey:
        assert key is not None  # noqa: S101 - the pipeline verified the cookie
        return AppKey(key.org_name, key.app_name, key.app_vers)

    # -- handlers --

    async def register_client(
        self, call: Call, _: SessionKey | None, req: session_pb2.RegisterClientRequest
    ) -> session_pb2.RegisterClientReply:
        """RegisterClient (dme.md §2.1)."""
        if not req.org_name:
            raise InvalidArgument("OrgName cannot be empty")
        if not req.app_name:
            raise InvalidArgument("AppName cannot be empty")
        if not req.app_vers:
            raise InvalidArgument("AppVers cannot be empty")
        app = self.world.app(AppKey(req.org_name, req.app_name, req.app_vers))
        if app is None:
            raise NotFound("app not found")
        self._check_auth_token(app, req)
        if bool(req.unique_id) != bool(req.unique_id_type):
            raise InvalidArgument("Both, or none of UniqueId and UniqueIdType should be set")
        reply = session_pb2.RegisterClientReply(
            status=appcommon_pb2.ReplyStatus.RS_SUCCESS, token_server_uri=self._token_server_uri
        )
        if req.unique_id:
            unique_id, unique_id_type = req.unique_id, req.unique_id_type
        else:
            unique_id = ksuid()
            unique_id_type = (
                f"{req.org_name}:{req.app_name}"
                if is_platform_app(req.org_name, req.app_name)
                else "dme-ksuid"
            )
            reply.unique_id, reply.unique_id_type = unique_id, unique_id_type
        if self.devices is not None:
            self.devices.registered(req.org_name, req.app_name, req.unique_id_type, req.unique_id)
        reply.session_cookie = self.codec.session_cookie(
            SessionKey(
                peer_ip=call.peer_ip,
                org_name=req.org_name,
                app_name=req.app_name,
                app_vers=req.app_vers,
                unique_id_type=unique_id_type,
                unique_id=unique_id,
            )
        )
        return reply

    @staticmethod
    def _check_auth_token(app: AppRecord, req: session_pb2.RegisterClientRequest) -> None:
        if not req.auth_token:
            if app.auth_public_key:
                raise InvalidArgument("No authtoken received")
            return
        if not app.auth_public_key:
            raise Unauthenticated("No authkey found to validate token")
        try:
            verify_auth_token(
                req.auth_token, app.auth_public_key, req.org_name, req.app_name, req.app_vers
            )
        except TokenError as err:
            raise Unauthenticated(f"failed to verify token - {err}") from None

    async def find_cloudlet(
        self, call: Call, key: SessionKey | None, req: app_client_pb2.FindCloudletRequest
    ) -> app_client_pb2.FindCloudletReply:
        """FindCloudlet (dme.md §2.2); FIND_NOTFOUND is a successful reply."""
        loc = validate_location(req.gps_location if req.HasField("gps_location") else None)
        app = self._app_of(key)
        reply = self.find(app, req.carrier_name, loc)
        if self._qos_addr and reply.status == app_client_pb2.FindCloudletReply.FIND_FOUND:
            record = self.world.app(app)
            if record is not None and record.qos_session_profile:
                reply.qos_result = app_client_pb2.FindCloudletReply.QOS_SESSION_FAILED
                reply.qos_error_msg = "QoS priority sessions are not supported by the operator"
        if self.clients is not None:
            assert key is not None  # noqa: S101 - the pipeline verified the cookie
            self._record_client(app, key, loc, reply)
        return reply

    async def platform_find_cloudlet(
        self,
        call: Call,
        key: SessionKey | None,
        req: app_client_platos_pb2.PlatformFindCloudletRequest,
    ) -> app_client_pb2.FindCloudletReply:
        """PlatformFindCloudlet (dme.md §2.3)."""
        assert key is not None  # noqa: S101 - the pipeline verified the cookie
        token = check_platform_request(key, req.client_token, app_exists=self.world.app_exists)
        app = AppKey(token.organization, token.name, token.version)
        reply = self.find(app, req.carrier_name, token.location)
        self._record_client(app, key, token.location, reply)
        return reply

    async def get_app_inst_list(
        self, call: Call, key: SessionKey | None, req: app_client_pb2.AppInstListRequest
    ) -> app_client_pb2.AppInstListReply:
        """GetAppInstList (dme.md §2.6)."""
        loc = require_list_location(req.gps_location if req.HasField("gps_location") else None)
        app = self._app_of(key)
        found = self.engine.app_inst_list(
            app, req.carrier_name, loc.latitude, loc.longitude, req.limit
        )
        if self.autoprov is not None:
            self._count_demand(app, req.carrier_name, loc, found[0] if found else None)
        return app_inst_list_reply(app, found, lambda inst: self.edge_cookie(inst, loc))

    async def get_fqdn_list(
        self, call: Call, key: SessionKey | None, req: app_client_platos_pb2.FqdnListRequest
    ) -> app_client_platos_pb2.FqdnListReply:
        """GetFqdnList (dme.md §2.5), sorted by (org, name, version)."""
        assert key is not None  # noqa: S101 - the pipeline verified the cookie
        if not is_platform_app(key.org_name, key.app_name):
            raise PermissionDenied(
                f"API Not allowed for developer: {key.org_name} app: {key.app_name}"
            )
        reply = app_client_platos_pb2.FqdnListReply(
            status=app_client_platos_pb2.FqdnListReply.FL_SUCCESS
        )
        for app in self.world.fqdn_list():
            reply.app_fqdns.add(
                app_name=app.key.name,
                app_vers=app.key.version,
                org_name=app.key.organization,
                fqdns=app.official_fqdn.split(","),
                android_package_name=app.android_package_name,
            )
        return reply

    async def get_app_official_fqdn(
        self, call: Call, key: SessionKey | None, req: app_client_pb2.AppOfficialFqdnRequest
    ) -> app_client_pb2.AppOfficialFqdnReply:
        """GetAppOfficialFqdn (dme.md §2.4); a missing App or FQDN is AOF_FAIL."""
        loc = validate_location(req.gps_location if req.HasField("gps_location") else None)
        app = self._app_of(key)
        reply = app_client_pb2.AppOfficialFqdnReply(
            status=app_client_pb2.AppOfficialFqdnReply.AOF_FAIL
        )
        record = self.world.app(app)
        if record is None or not record.official_fqdn:
            return reply
        try:
            reply.client_token = encode_client_token(app.organization, app.name, app.version, loc)
        except ValueError:
            return reply
        reply.app_official_fqdn = record.official_fqdn
        reply.ports.extend(app_access_ports(record.access_ports))
        reply.status = app_client_pb2.AppOfficialFqdnReply.AOF_SUCCESS
        return reply

    async def verify_location(
        self, call: Call, key: SessionKey | None, req: locverify_pb2.VerifyLocationRequest
    ) -> locverify_pb2.VerifyLocationReply:
        """VerifyLocation (dme.md §2.7) through the operator's location interface."""
        reply = locverify_pb2.VerifyLocationReply(
            gps_location_status=locverify_pb2.VerifyLocationReply.LOC_UNKNOWN,
            gps_location_accuracy_km=-1,
        )
        loc = req.gps_location
        if not req.HasField("gps_location") or (loc.latitude == 0 and loc.longitude == 0):
            raise InvalidArgument("Missing GPS location")
        validate_location(loc)
        status, accuracy = await self.location.verify_location(
            loc, req.verify_loc_token, call.peer_ip
        )
        reply.gps_location_status = status  # type: ignore[assignment]  # enum number
        reply.gps_location_accuracy_km = accuracy
        return reply

    async def get_location(
        self, call: Call, key: SessionKey | None, req: locverify_pb2.GetLocationRequest
    ) -> locverify_pb2.GetLocationReply:
        """GetLocation (dme.md §2.7): the operator's network location, LOC_FOUND."""
        loc = await self.location.get_location(call.peer_ip)
        reply = locverify_pb2.GetLocationReply(
            status=locverify_pb2.GetLocationReply.LOC_FOUND, carrier_name=req.carrier_name
        )
        reply.network_location.CopyFrom(loc)
        return reply

    async def qos_session_create(
        self,
        call: Call,
        key: SessionKey | None,
        req: qos_pb2.QosPrioritySessionCreateRequest,
    ) -> qos_pb2.QosPrioritySessionReply:
        """QosPrioritySessionCreate (dme.md §2.8) through the operator's QoS interface."""
        return await self.qos.create_session(req)

    async def qos_session_delete(
        self,
        call: Call,
        key: SessionKey | None,
        req: qos_pb2.QosPrioritySessionDeleteRequest,
    ) -> qos_pb2.QosPrioritySessionDeleteReply:
        """QosPrioritySessionDelete (dme.md §2.8)."""
        return await self.qos.delete_session(req)

    async def add_user_to_group(
        self,
        call: Call,
        key: SessionKey | None,
        req: dynamic_location_group_pb2.DynamicLocGroupRequest,
    ) -> dynamic_location_group_pb2.DynamicLocGroupReply:
        """AddUserToGroup: the original's stub handler, RS_SUCCESS after the cookie check.

        Reachable only through the legacy all-in-one `MatchEngineApi` (and REST), as in
        MobiledgeX; `DynamicLocGroupApi` itself is not registered (dme.md §1.1).
        """
        return dynamic_location_group_pb2.DynamicLocGroupReply(
            status=appcommon_pb2.ReplyStatus.RS_SUCCESS
        )
