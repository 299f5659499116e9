"""The REST gateway at `/edgeproto/v1`: grpc-gateway's translation of every object service.

Like the original's grpc-gateway v1 mux, it is a reverse proxy: each `POST
/edgeproto/v1/<verb>/<object>` decodes the JSON body into the method's request message,
calls the Controller's own gRPC port over a loopback channel, and renders the reply, so
every check, interceptor and error of the gRPC API applies unchanged. Calls are made
generically from the proto descriptors; no service has code of its own here.

Paths are the original's `google.api.http` annotations (`post: "/create/flavor"`, all with
`body: "*"`), typos included (`/delete/cloudet` deletes a Cloudlet), since clients of the
original call exactly those. Methods the original leaves without an annotation (the refs
shows, CloudletInfo inject/evict, StreamAppInstClientsLocal, ExecApi) get no route, as in
the original, and are listed in `NO_REST`.

Unary replies are the message; server streams (Create/Update/Delete of Cloudlet,
ClusterInst, AppInst, every Show) are newline-delimited `{"result": ...}` lines written as
they arrive, ending with grpc-gateway v1's `{"error": ...}` chunk when the call fails (see
`edge_cloud.restgw`). As in grpc-gateway v1 with the proto error handler: an unknown path is
404 with code 5 "Not Found", a known path with another HTTP method is 501
(UNIMPLEMENTED, "Method Not Allowed"), and a body that does not decode is 400 before any
call. Request headers reach the gRPC call as grpc-gateway's default matcher forwards them:
`Grpc-Metadata-<Key>` as `<key>`, `Authorization` as `authorization`, plus
`x-forwarded-for` and `x-forwarded-host`; `Grpc-Timeout` sets the call's deadline.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.restgw import (
    ResultStream,
    error_response,
    message_from_json,
    message_to_json,
    read_json,
    status_of,
)

__all__ = ["NO_REST", "PATHS", "PREFIX", "Route", "gateway_app", "routes", "unrouted"]

log = logging.getLogger(__name__)

PREFIX: Final = "/edgeproto/v1"
"""Where the gateway is mounted (the original's `ControllerEdgeprotoRESTPath`)."""

PATHS: Final[Mapping[str, tuple[str, Mapping[str, str]]]] = {
    "AlertApi": (
        "alert_pb2",
        {
            "ShowAlert": "/show/alert",
        },
    ),
    "AlertPolicyApi": (
        "alertpolicy_pb2",
        {
            "CreateAlertPolicy": "/create/alertpolicy",
            "DeleteAlertPolicy": "/delete/alertpolicy",
            "ShowAlertPolicy": "/show/alertpolicy",
            "UpdateAlertPolicy": "/update/alertpolicy",
        },
    ),
    "AppApi": (
        "app_pb2",
        {
            "AddAppAlertPolicy": "/add/appalertpolicy",
            "AddAppAutoProvPolicy": "/add/appautoprovpolicy",
            "CreateApp": "/create/app",
            "DeleteApp": "/delete/app",
            "RemoveAppAlertPolicy": "/remove/appalertpolicy",
            "RemoveAppAutoProvPolicy": "/remove/appautoprovpolicy",
            "ShowApp": "/show/app",
            "ShowPublicApp": "/show/publicapps",
            "ShowZonesForAppDeployment": "/showmapping/deploymentzones",
            "UpdateApp": "/update/app",
        },
    ),
    "AppInstApi": (
        "appinst_pb2",
        {
            "CreateAppInst": "/create/appinst",
            "DeleteAppInst": "/delete/appinst",
            "HandleFedAppInstEvent": "/fedevent/appinstinfo",
            "RefreshAppInst": "/refresh/appinst",
            "ShowAppInst": "/show/appinst",
            "UpdateAppInst": "/update/appinst",
        },
    ),
    "AppInstClientApi": (
        "appinstclient_pb2",
        {
            "ShowAppInstClient": "/show/appinstclient",
        },
    ),
    "AppInstLatencyApi": (
        "appinst_pb2",
        {
            "RequestAppInstLatency": "/request/appinstlatency",
        },
    ),
    "AutoProvPolicyApi": (
        "autoprovpolicy_pb2",
        {
            "AddAutoProvPolicyZone": "/add/autoprovpolicyzone",
            "CreateAutoProvPolicy": "/create/autoprovpolicy",
            "DeleteAutoProvPolicy": "/delete/autoprovpolicy",
            "RemoveAutoProvPolicyZone": "/rm/autoprovpolicyzone",
            "ShowAutoProvPolicy": "/show/autoprovpolicy",
            "UpdateAutoProvPolicy": "/update/autoprovpolicy",
        },
    ),
    "AutoScalePolicyApi": (
        "autoscalepolicy_pb2",
        {
            "CreateAutoScalePolicy": "/create/autoscalepolicy",
            "DeleteAutoScalePolicy": "/delete/autoscalepolicy",
            "ShowAutoScalePolicy": "/show/autoscalepolicy",
            "UpdateAutoScalePolicy": "/update/autoscalepolicy",
        },
    ),
    "BareMetalHostApi": (
        "baremetalhost_pb2",
        {
            "ShowBareMetalHost": "/show/baremetalhost",
        },
    ),
    "CloudletApi": (
        "cloudlet_pb2",
        {
            "AddCloudletAllianceOrg": "/addallianceorg/cloudlet",
            "AddCloudletResMapping": "/addmapping/cloudlet",
            "ChangeCloudletDNS": "/change/cloudlet/dns",
            "CreateCloudlet": "/create/cloudlet",
            "DeleteCloudlet": "/delete/cloudet",
            "FindFlavorMatch": "/findmapping/cloudlet",
            "GenerateAccessKey": "/generate/cloudletaccesskey",
            "GetCloudletGPUDriverLicenseConfig": "/get/cloudlet/gpudriverlicenseconfig",
            "GetCloudletManifest": "/get/cloudlet/manifest",
            "GetCloudletProps": "/get/cloudlet/props",
            "GetCloudletResourceQuotaProps": "/get/cloudlet/resource/props",
            "GetCloudletResourceUsage": "/get/cloudlet/resource/usage",
            "GetOrganizationsOnZone": "/get/zones/organizations",
            "RefreshCerts": "/cloudlet/refreshcert",
            "RefreshCloudletResources": "/refresh/cloudlet/resources",
            "RemoveCloudletAllianceOrg": "/rmallianceorg/cloudlet",
            "RemoveCloudletResMapping": "/rmmapping/cloudlet",
            "RevokeAccessKey": "/revoke/cloudletaccesskey",
            "ShowCloudlet": "/show/cloudlet",
            "ShowCloudletGPUUsage": "/show/cloudletgpuusage",
            "ShowCloudletResourceUsage": "/show/cloudlet/resource/usage",
            "ShowFlavorsForZone": "/showmapping/zoneflavors",
            "UpdateCloudlet": "/update/cloudlet",
        },
    ),
    "CloudletInfoApi": (
        "cloudlet_pb2",
        {
            "ShowCloudletInfo": "/show/cloudletinfo",
        },
    ),
    "CloudletManagedClusterApi": (
        "cloudlet_pb2",
        {
            "DeregisterCloudletManagedCluster": "/cloudletmanagedcluster/deregister",
            "RegisterCloudletManagedCluster": "/cloudletmanagedcluster/register",
            "ShowCloudletManagedCluster": "/cloudletmanagedcluster/retract",
        },
    ),
    "CloudletNodeApi": (
        "cloudletnode_pb2",
        {
            "CreateCloudletNode": "/create/cloudletnode",
            "DeleteCloudletNode": "/delete/cloudetnode",
            "ShowCloudletNode": "/show/cloudletnode",
            "UpdateCloudletNode": "/update/cloudletnode",
        },
    ),
    "ClusterInstApi": (
        "clusterinst_pb2",
        {
            "CreateClusterInst": "/create/clusterinst",
            "DeleteClusterInst": "/delete/clusterinst",
            "DeleteIdleReservableClusterInsts": "/delete/idlereservableclusterinsts",
            "GetClusterCredentials": "/get/clusterinst/kubeconfig",
            "ShowClusterInst": "/show/clusterinst",
            "ShowClusterResourceUsage": "/show/clusterinst/resource/usage",
            "UpdateClusterInst": "/update/clusterinst",
        },
    ),
    "ControllerApi": (
        "controller_pb2",
        {
            "ShowController": "/show/controller",
        },
    ),
    "DebugApi": (
        "debug_pb2",
        {
            "DisableDebugLevels": "/debug/disablelevels",
            "EnableDebugLevels": "/debug/enablelevels",
            "RunDebug": "/debug/run",
            "ShowDebugLevels": "/debug/showlevels",
        },
    ),
    "DeviceApi": (
        "device_pb2",
        {
            "EvictDevice": "/evict/device",
            "InjectDevice": "/create/device",
            "ShowDevice": "/show/device",
            "ShowDeviceReport": "/show/devicereport",
        },
    ),
    "FlavorApi": (
        "flavor_pb2",
        {
            "AddFlavorRes": "/addres/flavor",
            "CreateFlavor": "/create/flavor",
            "DeleteFlavor": "/delete/flavor",
            "RemoveFlavorRes": "/removeres/flavor",
            "ShowFlavor": "/show/flavor",
            "UpdateFlavor": "/update/flavor",
        },
    ),
    "GPUDriverApi": (
        "cloudlet_pb2",
        {
            "AddGPUDriverBuild": "/add/gpudriverbuild",
            "CreateGPUDriver": "/create/gpudriver",
            "DeleteGPUDriver": "/delete/gpudriver",
            "GetGPUDriverBuildURL": "/get/gpudriverbuildurl",
            "GetGPUDriverLicenseConfig": "/get/gpudriverlicenseconfig",
            "RemoveGPUDriverBuild": "/remove/gpudriverbuild",
            "ShowGPUDriver": "/show/gpudriver",
            "UpdateGPUDriver": "/update/gpudriver",
        },
    ),
    "NetworkApi": (
        "network_pb2",
        {
            "CreateNetwork": "/create/network",
            "DeleteNetwork": "/delete/network",
            "ShowNetwork": "/show/network",
            "UpdateNetwork": "/update/network",
        },
    ),
    "OperatorCodeApi": (
        "operatorcode_pb2",
        {
            "CreateOperatorCode": "/create/operatorcode",
            "DeleteOperatorCode": "/delete/operatorcode",
            "ShowOperatorCode": "/show/operatorcode",
        },
    ),
    "OrganizationApi": (
        "org_pb2",
        {
            "OrganizationInUse": "/inuse/organization",
        },
    ),
    "PlatformFeaturesApi": (
        "cloudlet_pb2",
        {
            "DeletePlatformFeatures": "/delete/platformfeatures",
            "ShowPlatformFeatures": "/show/platformfeatures",
            "ShowPlatformFeaturesForZone": "/zone/platformfeatures",
        },
    ),
    "RateLimitSettingsApi": (
        "ratelimit_pb2",
        {
            "CreateFlowRateLimitSettings": "/create/flowratelimitsettings",
            "CreateMaxReqsRateLimitSettings": "/create/maxreqsratelimitsettings",
            "DeleteFlowRateLimitSettings": "/delete/flowratelimitsettings",
            "DeleteMaxReqsRateLimitSettings": "/delete/maxreqsratelimitsettings",
            "ShowFlowRateLimitSettings": "/show/flowratelimitsettings",
            "ShowMaxReqsRateLimitSettings": "/show/maxreqsratelimitsettings",
            "ShowRateLimitSettings": "/show/ratelimitsettings",
            "UpdateFlowRateLimitSettings": "/update/flowratelimitsettings",
            "UpdateMaxReqsRateLimitSettings": "/update/maxreqsratelimitsettings",
        },
    ),
    "ResTagTableApi": (
        "restagtable_pb2",
        {
            "AddResTag": "/add/gputagtbl",
            "CreateResTagTable": "/create/gputagtbl",
            "DeleteResTagTable": "/delete/gputagtbl",
            "GetResTagTable": "/get/gputagtbl",
            "RemoveResTag": "/rm/gputagtbl",
            "ShowResTagTable": "/show/gputagtbl",
            "UpdateResTagTable": "/update/gputagtbl",
        },
    ),
    "SettingsApi": (
        "settings_pb2",
        {
            "ResetSettings": "/reset/settings",
            "ShowSettings": "/show/settings",
            "UpdateSettings": "/update/settings",
        },
    ),
    "StreamObjApi": (
        "stream_pb2",
        {
            "StreamAppInst": "/stream/appinst",
            "StreamCloudlet": "/stream/cloudlet",
            "StreamClusterInst": "/stream/clusterinst",
            "StreamGPUDriver": "/stream/gpudriver",
        },
    ),
    "SvcNodeApi": (
        "svcnode_pb2",
        {
            "ShowSvcNode": "/show/svcnode",
        },
    ),
    "TrustPolicyApi": (
        "trustpolicy_pb2",
        {
            "CreateTrustPolicy": "/create/trustpolicy",
            "DeleteTrustPolicy": "/delete/trustpolicy",
            "ShowTrustPolicy": "/show/trustpolicy",
            "UpdateTrustPolicy": "/update/trustpolicy",
        },
    ),
    "TrustPolicyExceptionApi": (
        "trustpolicyexception_pb2",
        {
            "CreateTrustPolicyException": "/create/trustpolicyexception",
            "DeleteTrustPolicyException": "/delete/trustpolicyexception",
            "ShowTrustPolicyException": "/show/trustpolicyexception",
            "UpdateTrustPolicyException": "/update/trustpolicyexception",
        },
    ),
    "VMPoolApi": (
        "vmpool_pb2",
        {
            "AddVMPoolMember": "/add/vmpoolmember",
            "CreateVMPool": "/create/vmpool",
            "DeleteVMPool": "/delete/cloudetvmpool",
            "RemoveVMPoolMember": "/rm/vmpoolmember",
            "ShowVMPool": "/show/vmpool",
            "UpdateVMPool": "/update/vmpool",
        },
    ),
    "ZoneApi": (
        "zone_pb2",
        {
            "CreateZone": "/create/zone",
            "DeleteZone": "/delete/zone",
            "ShowZone": "/show/zone",
            "ShowZoneGPUs": "/show/zonegpus",
            "UpdateZone": "/update/zone",
        },
    ),
    "ZonePoolApi": (
        "zonepool_pb2",
        {
            "AddZonePoolMember": "/add/zonepoolmember",
            "CreateZonePool": "/create/zonepool",
            "DeleteZonePool": "/delete/zonepool",
            "RemoveZonePoolMember": "/remove/zonepoolmember",
            "ShowZonePool": "/show/zonepool",
            "UpdateZonePool": "/update/zonepool",
        },
    ),
}
"""Service → (its `edgeproto` module, method → REST path), from the original's annotations."""

NO_REST: Final[Mapping[str, frozenset[str]]] = {
    "AppInstClientApi": frozenset({"StreamAppInstClientsLocal"}),
    "AppInstRefsApi": frozenset({"ShowAppInstRefs"}),
    "CloudletIPsApi": frozenset({"ShowCloudletIPs"}),
    "CloudletInfoApi": frozenset({"EvictCloudletInfo", "InjectCloudletInfo"}),
    "CloudletRefsApi": frozenset({"ShowCloudletRefs"}),
    "ClusterRefsApi": frozenset({"ShowClusterRefs"}),
    "ExecApi": frozenset(
        {"AccessCloudlet", "RunCommand", "RunConsole", "SendLocalRequest", "ShowLogs"}
    ),
}
"""Methods the original serves over gRPC only (no `google.api.http` annotation)."""

_PACKAGE: Final = "edgeproto"


@dataclass(frozen=True, slots=True)
class Route:
    """One REST path and the gRPC method behind it.

    Attributes:
        path: The path under `PREFIX` (`/create/flavor`).
        service: The service's full name (`edgeproto.FlavorApi`).
        method: The method's descriptor.
        request: The request message class.
        response: The response message class.
    """

    path: str
    service: str
    method: MethodDescriptor
    request: type[Message]
    response: type[Message]

    @property
    def rpc(self) -> str:
        """The gRPC method path, `/edgeproto.FlavorApi/CreateFlavor`."""
        return f"/{self.service}/{self.method.name}"


def _descriptor(full_name: str) -> ServiceDescriptor | None:
    """The service's descriptor, importing its module when the table names it."""
    entry = PATHS.get(full_name.removeprefix(f"{_PACKAGE}."))
    if entry is not None:
        module = importlib.import_module(f"{_PACKAGE}.{entry[0]}")
        found: ServiceDescriptor = module.DESCRIPTOR.services_by_name[full_name.rsplit(".")[-1]]
        return found
    try:
        return descriptor_pool.Default().FindServiceByName(full_name)
    except KeyError:
        return None


def routes(services: Iterable[str]) -> Iterator[Route]:
    """The routes of the registered services, in registration and declaration order.

    Args:
        services: Full names of the services the Controller registers.

    Yields:
        One route per annotated method; a client-streaming method never has one (the
        original has none either: grpc-gateway v1 cannot carry them over one POST).
    """
    for full_name in services:
        short = full_name.removeprefix(f"{_PACKAGE}.")
        paths = PATHS.get(short, ("", {}))[1]
        service = _descriptor(full_name)
        if service is None:
            continue
        for method in service.methods:
            path = paths.get(method.name)
            if path is None or method.client_streaming:
                continue
            yield Route(
                path=path,
                service=full_name,
                method=method,
                request=message_factory.GetMessageClass(method.input_type),
                response=message_factory.GetMessageClass(method.output_type),
            )


def unrouted(services: Iterable[str]) -> list[str]:
    """Methods of the registered services with neither a route nor a `NO_REST` entry.

    A service added to the Controller without its paths here shows up in this list, which
    `gateway_app` logs and the tests require to be empty.

    Args:
        services: Full names of the services the Controller registers.

    Returns:
        `Service.Method` names, sorted.
    """
    routed = {(r.service, r.method.name) for r in routes(services)}
    missing: list[str] = []
    for full_name in services:
        short = full_name.removeprefix(f"{_PACKAGE}.")
        service = _descriptor(full_name)
        names = [m.name for m in service.methods] if service is not None else ["*"]
        for name in names:
            if (full_name, name) not in routed and name not in NO_REST.get(short, ()):
                missing.append(f"{short}.{name}")
    return sorted(missing)


# --- request metadata and deadline ---------------------------------------------------------

_METADATA_PREFIX: Final = "grpc-metadata-"
_KEY: Final = re.compile(r"^[0-9a-z_.-]+$")
_TIMEOUT: Final = re.compile(r"^(\d{1,8})([HMSmun])$")
_UNITS: Final = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def _forwardable(key: str, value: str) -> bool:
    if not _KEY.match(key) or key.startswith("grpc-") or key.endswith("-bin"):
        return False
    return value.isascii() and value.isprintable()


def _metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata grpc-gateway's default header matcher would forward."""
    pairs: list[tuple[str, str]] = []
    for name, value in request.headers.items():
        key = name.lower()
        if key == "authorization":
            pairs.append((key, value))
        elif key.startswith(_METADATA_PREFIX):
            key = key.removeprefix(_METADATA_PREFIX)
            # binary and reserved keys, and values gRPC refuses, cannot be forwarded as text
            if _forwardable(key, value):
                pairs.append((key, value))
    forwarded = request.headers.get("X-Forwarded-For")
    remote = request.remote or ""
    if remote:
        pairs.append(("x-forwarded-for", f"{forwarded}, {remote}" if forwarded else remote))
    if request.host:
        pairs.append(("x-forwarded-host", request.host))
    return tuple(pairs)


def _timeout(request: web.Request) -> float | None:
    """The deadline a client asked for with `Grpc-Timeout` (`10S`, `500m`), or None."""
    value = request.headers.get("Grpc-Timeout")
    if value is None:
        return None
    match = _TIMEOUT.match(value)
    if match is None:
        raise InvalidArgument(
            f"invalid grpc-timeout: {value} (want an integer and a unit H, M, S, m, u or n)"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


# --- handlers -----------------------------------------------------------------------------

Handler = Callable[[web.Request], Any]


def _not_allowed() -> web.Response:
    return error_response(grpc.StatusCode.UNIMPLEMENTED, "Method Not Allowed")


async def _prepare(request: web.Request, route: Route) -> tuple[Message, Any, float | None]:
    """Decode the body and read the headers, before any call (errors are unary-shaped)."""
    message = message_from_json(await read_json(request), route.request)
    return message, _metadata(request), _timeout(request)


def _unary(channel: grpc.aio.Channel, route: Route) -> Handler:
    call = channel.unary_unary(
        route.rpc,
        request_serializer=route.request.SerializeToString,
        response_deserializer=route.response.FromString,
    )

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return _not_allowed()
        try:
            message, metadata, timeout = await _prepare(request, route)
            reply = await call(message, metadata=metadata, timeout=timeout)
        except (EdgeError, grpc.aio.AioRpcError) as err:
            return error_response(*status_of(err))
        return web.json_response(message_to_json(reply))

    return handle


def _server_stream(channel: grpc.aio.Channel, route: Route) -> Handler:
    call = channel.unary_stream(
        route.rpc,
        request_serializer=route.request.SerializeToString,
        response_deserializer=route.response.FromString,
    )

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return _not_allowed()
        try:
            message, metadata, timeout = await _prepare(request, route)
        except EdgeError as err:
            return error_response(*status_of(err))
        stream = ResultStream(request)
        replies = call(message, metadata=metadata, timeout=timeout)
        try:
            try:
                async for reply in replies:
                    await stream.send(reply)
            except grpc.aio.AioRpcError as err:
                return await stream.fail(*status_of(err))
            return await stream.finish()
        except ConnectionResetError:
            # the HTTP client went away mid-stream (a Ctrl-C'd curl): not a server error
            log.info("REST client left during %s", route.rpc)
            return stream.response
        finally:
            replies.cancel()  # stop the call with the request (a no-op once it has ended)

    return handle


async def _unknown(request: web.Request) -> web.Response:
    return error_response(grpc.StatusCode.NOT_FOUND, "Not Found")


def gateway_app(channel: grpc.aio.Channel, services: Sequence[str]) -> web.Application:
    """The gateway application, to be mounted at `PREFIX` with `add_subapp`.

    Args:
        channel: A channel to the Controller's own gRPC port.
        services: Full names of the services the Controller registers.

    Returns:
        The application: one POST route per annotated method, and the gateway's 404 for
        every other path under the prefix.
    """
    app = web.Application()
    for route in routes(services):
        make = _server_stream if route.method.server_streaming else _unary
        app.router.add_route("*", route.path, make(channel, route))
    app.router.add_route("*", "/{tail:.*}", _unknown)
    missing = unrouted(services)
    if missing:
        log.warning("no REST route for %s: add their paths to PATHS or NO_REST", missing)
    return app
