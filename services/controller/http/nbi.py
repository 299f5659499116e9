"""The CAMARA Edge Application Management NBI of the Controller (controller.md §9(b), dme.md §3).

Application providers who speak CAMARA rather than edgeproto submit Apps, instantiate them in
edge-cloud zones and read back clusters and zones here. Every request becomes calls on the
Controller's own gRPC API (the channel given to `make_nbi_app`), so the NBI applies exactly
the validation, placement and state machine of a gRPC client and never reaches into the
Controller's internals. The HTTP server mounts the returned application under
`/edge-application-management/vwip`.

Ids are the objects' `obj_id`s (appId = App, appInstanceId = AppInst, edgeCloudZoneId = Zone,
clusterRef = ClusterInst), as in the original. Errors are CAMARA `ErrorInfo` bodies
`{"status", "code", "message"}` with the HTTP status text as `code`, like the original's; the
request header `x-correlator` is echoed on every response.

Where this differs from the original, on purpose:

- gRPC error codes keep their meaning instead of all becoming 400: ALREADY_EXISTS and
  FAILED_PRECONDITION (in use, being deleted) are 409 as CAMARA lists them, NOT_FOUND 404,
  RESOURCE_EXHAUSTED 429 (CAMARA's QUOTA_EXCEEDED), UNAVAILABLE 503.
- `GET /appinstances/{appInstanceId}` answers one instance (CAMARA has only the query form).
- `GET /appinstances?appId=<unknown>` is a 404 (the original dereferences a missing App).
- A `region` query naming another region yields an empty list (all objects here belong to
  this Controller's region); `GET /edge-cloud-zones` fills in `edgeCloudZoneStatus` from the
  zone's cloudlets and honours the `status` filter, which the original leaves unimplemented.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
from aiohttp import web
from edgeproto import (
    app_pb2,
    app_pb2_grpc,
    appinst_pb2,
    appinst_pb2_grpc,
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    clusterinst_pb2,
    clusterinst_pb2_grpc,
    zone_pb2,
    zone_pb2_grpc,
)
from google.protobuf.message import Message

from services.controller.http.nbi_convert import (
    ZONE_STATUSES,
    NbiError,
    app_from_manifest,
    app_instance_info,
    app_instance_request,
    cluster_info,
    error_body,
    manifest_from_app,
    zone_info,
    zone_key_tuple,
    zone_status,
)

__all__ = ["make_nbi_app"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Reads come from the Controller's caches: a deadline only guards against a wedged Controller.
SHOW_TIMEOUT = 30.0
# App create/delete are single etcd transactions.
UNARY_TIMEOUT = 60.0
# AppInst create/delete streams have no deadline here: the Controller bounds them with its
# own create/delete timeouts (settings), which an operator may set well beyond minutes.

CORRELATOR = "x-correlator"

_HTTP_OF_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status a gRPC status code of the Controller becomes (500 for internal ones)."""
    return _HTTP_OF_GRPC.get(code, 500)


def _error(status: int, message: str) -> web.Response:
    return web.json_response(error_body(status, message), status=status)


@web.middleware
async def _camara_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into an `ErrorInfo` body and echo `x-correlator`."""
    try:
        response = await handler(request)
    except NbiError as err:
        response = _error(err.status, err.message)
    except grpc.aio.AioRpcError as err:
        response = _error(http_status(err.code()), err.details() or err.code().name)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        response = _error(err.status, f"{request.method} {request.path}: {err.reason}")
    except Exception:
        log.exception("NBI %s %s failed", request.method, request.path)
        response = _error(500, "internal error in the Controller's NBI; see the Controller log")
    correlator = request.headers.get(CORRELATOR)
    if correlator:
        response.headers[CORRELATOR] = correlator
    return response


async def _collect(call: AsyncIterable[M]) -> list[M]:
    return [item async for item in call]


def _first(found: list[M]) -> M | None:
    return found[0] if found else None


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        raise NbiError(400, "the request body is empty; send a JSON object")
    try:
        return json.loads(raw)  # bytes: UTF-8/16/32 detected as RFC 8259 allows
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise NbiError(400, f"the request body is not valid JSON: {err}") from None


class _Nbi:
    """The handlers, holding the Controller's stubs and this region's name."""

    def __init__(self, channel: grpc.aio.Channel, region: str) -> None:
        self.region = region
        self.apps = app_pb2_grpc.AppApiStub(channel)
        self.insts = appinst_pb2_grpc.AppInstApiStub(channel)
        self.clusters = clusterinst_pb2_grpc.ClusterInstApiStub(channel)
        self.zones = zone_pb2_grpc.ZoneApiStub(channel)
        self.cloudlets = cloudlet_pb2_grpc.CloudletApiStub(channel)
        self.cloudlet_infos = cloudlet_pb2_grpc.CloudletInfoApiStub(channel)

    # -- lookups -------------------------------------------------------------------------------

    async def app_by_id(self, app_id: str) -> app_pb2.App | None:
        """The App whose obj_id is `app_id`; an empty id names nothing (it would match all)."""
        if not app_id:
            return None
        request = app_pb2.App(obj_id=app_id)
        return _first(await _collect(self.apps.ShowApp(request, timeout=SHOW_TIMEOUT)))

    async def zone_by_id(self, zone_id: str) -> zone_pb2.Zone | None:
        """The Zone whose obj_id is `zone_id`."""
        if not zone_id:
            return None
        request = zone_pb2.Zone(obj_id=zone_id)
        return _first(await _collect(self.zones.ShowZone(request, timeout=SHOW_TIMEOUT)))

    async def cluster_by_id(self, ref: str) -> clusterinst_pb2.ClusterInst | None:
        """The ClusterInst whose obj_id is `ref`."""
        if not ref:
            return None
        request = clusterinst_pb2.ClusterInst(obj_id=ref)
        call = self.clusters.ShowClusterInst(request, timeout=SHOW_TIMEOUT)
        return _first(await _collect(call))

    async def inst_by_id(self, inst_id: str) -> appinst_pb2.AppInst | None:
        """The AppInst whose obj_id is `inst_id`."""
        if not inst_id:
            return None
        request = appinst_pb2.AppInst(obj_id=inst_id)
        call = self.insts.ShowAppInst(request, timeout=SHOW_TIMEOUT)
        return _first(await _collect(call))

    async def zone_ids(self) -> dict[tuple[str, str, str], str]:
        """The obj_id of every Zone by its key."""
        zones = await _collect(self.zones.ShowZone(zone_pb2.Zone(), timeout=SHOW_TIMEOUT))
        return {zone_key_tuple(z.key): z.obj_id for z in zones}

    async def instance_infos(self, insts: list[appinst_pb2.AppInst]) -> list[dict[str, Any]]:
        """`AppInstanceInfo`s of instances, their App, Zone and cluster ids looked up once.

        For a single instance (create, get by id) only its own App, Zone and cluster are
        read, not every one of the region.
        """
        if not insts:
            return []
        one = insts[0] if len(insts) == 1 else None
        app_flt = app_pb2.App(key=one.app_key) if one else app_pb2.App()
        apps = await _collect(self.apps.ShowApp(app_flt, timeout=SHOW_TIMEOUT))
        app_ids = {(a.key.organization, a.key.name, a.key.version): a.obj_id for a in apps}
        zone_ids: dict[tuple[str, str, str], str] = {}
        if one is None or one.zone_key.name:
            zone_flt = zone_pb2.Zone(key=one.zone_key) if one else zone_pb2.Zone()
            zones = await _collect(self.zones.ShowZone(zone_flt, timeout=SHOW_TIMEOUT))
            zone_ids = {zone_key_tuple(z.key): z.obj_id for z in zones}
        cluster_ids: dict[tuple[str, str], str] = {}
        if one is None or one.cluster_key.name:
            cluster_flt = clusterinst_pb2.ClusterInst()
            if one:
                cluster_flt.key.CopyFrom(one.cluster_key)
            call = self.clusters.ShowClusterInst(cluster_flt, timeout=SHOW_TIMEOUT)
            found = await _collect(call)
            cluster_ids = {(c.key.organization, c.key.name): c.obj_id for c in found}
        out = []
        for inst in insts:
            app_key = (inst.app_key.organization, inst.app_key.name, inst.app_key.version)
            cluster_key = (inst.cluster_key.organization, inst.cluster_key.name)
            out.append(
                app_instance_info(
                    inst,
                    app_id=app_ids.get(app_key, ""),
                    zone_id=zone_ids.get(zone_key_tuple(inst.zone_key), ""),
                    cluster_ref=cluster_ids.get(cluster_key, "") if inst.cluster_key.name else "",
                )
            )
        out.sort(key=lambda info: info["name"] + info["appProvider"])
        return out

    def _other_region(self, request: web.Request) -> bool:
        """Whether the `region` query names another region (nothing here belongs to it)."""
        region = request.query.get("region")
        return bool(region) and region != self.region

    # -- apps ----------------------------------------------------------------------------------

    async def get_apps(self, request: web.Request) -> web.Response:
        """`GET /apps`: every App as an AppManifest, sorted by provider and name."""
        apps = await _collect(self.apps.ShowApp(app_pb2.App(), timeout=SHOW_TIMEOUT))
        manifests = [manifest_from_app(app) for app in apps]
        manifests.sort(key=lambda m: m["appProvider"] + m["name"])
        return web.json_response(manifests)

    async def submit_app(self, request: web.Request) -> web.Response:
        """`POST /apps`: create the App of a manifest; 201 with its appId."""
        app = app_from_manifest(await _json_body(request))
        await self.apps.CreateApp(app, timeout=UNARY_TIMEOUT)
        found = await _collect(self.apps.ShowApp(app_pb2.App(key=app.key), timeout=SHOW_TIMEOUT))
        if not found:
            raise NbiError(409, f"App {app.key.name} was deleted right after it was created")
        return web.json_response({"appId": found[0].obj_id}, status=201)

    async def _app_or_404(self, request: web.Request) -> app_pb2.App:
        app_id = request.match_info["appId"]
        app = await self.app_by_id(app_id)
        if app is None:
            raise NbiError(404, f"app {app_id} not found")
        return app

    async def get_app(self, request: web.Request) -> web.Response:
        """`GET /apps/{appId}`: `{"appManifest": ...}`."""
        app = await self._app_or_404(request)
        return web.json_response({"appManifest": manifest_from_app(app)})

    async def delete_app(self, request: web.Request) -> web.Response:
        """`DELETE /apps/{appId}`: 202 once deleted; 409 while instances use it."""
        app = await self._app_or_404(request)
        await self.apps.DeleteApp(app_pb2.App(key=app.key), timeout=UNARY_TIMEOUT)
        return web.Response(status=202)

    # -- app instances -------------------------------------------------------------------------

    async def create_app_instance(self, request: web.Request) -> web.Response:
        """`POST /appinstances`: create the AppInst and wait for it, as the original does.

        The instance's organization is its App's. Unknown app, zone or cluster ids in the
        body are 400 (the body is wrong, not the URL). The answer is 202 with the instance's
        `AppInstanceInfo` and its URL in `Location`.
        """
        body = app_instance_request(await _json_body(request))
        app = await self.app_by_id(body.app_id)
        if app is None:
            raise NbiError(400, f"app ID {body.app_id} not found")
        zone = await self.zone_by_id(body.zone_id)
        if zone is None:
            raise NbiError(400, f"zone ID {body.zone_id} not found")
        inst = appinst_pb2.AppInst(
            key=appinst_pb2.AppInstKey(name=body.name, organization=app.key.organization),
            app_key=app.key,
            zone_key=zone.key,
        )
        if body.cluster_ref:
            cluster = await self.cluster_by_id(body.cluster_ref)
            if cluster is None:
                raise NbiError(400, f"cluster ID {body.cluster_ref} not found")
            inst.cluster_key.CopyFrom(cluster.key)
        async for result in self.insts.CreateAppInst(inst):
            log.debug("NBI create of AppInst %s: %s", body.name, result.message)
        call = self.insts.ShowAppInst(appinst_pb2.AppInst(key=inst.key), timeout=SHOW_TIMEOUT)
        stored = await _collect(call)
        if not stored:
            raise NbiError(409, f"app instance {body.name} was deleted right after its creation")
        info = (await self.instance_infos(stored))[0]
        location = f"{request.path.rstrip('/')}/{info['appInstanceId']}"
        return web.json_response(info, status=202, headers={"Location": location})

    async def get_app_instances(self, request: web.Request) -> web.Response:
        """`GET /appinstances[?appId=&appInstanceId=&region=]`: matching instances."""
        if self._other_region(request):
            return web.json_response([])
        flt = appinst_pb2.AppInst()
        app_id = request.query.get("appId")
        if app_id is not None:
            app = await self.app_by_id(app_id)
            if app is None:
                raise NbiError(404, f"app ID {app_id} not found")
            flt.app_key.CopyFrom(app.key)
        inst_id = request.query.get("appInstanceId")
        if inst_id:
            flt.obj_id = inst_id
        insts = await _collect(self.insts.ShowAppInst(flt, timeout=SHOW_TIMEOUT))
        return web.json_response(await self.instance_infos(insts))

    async def _inst_or_404(self, request: web.Request) -> appinst_pb2.AppInst:
        inst_id = request.match_info["appInstanceId"]
        inst = await self.inst_by_id(inst_id)
        if inst is None:
            raise NbiError(404, f"app instance {inst_id} not found")
        return inst

    async def get_app_instance(self, request: web.Request) -> web.Response:
        """`GET /appinstances/{appInstanceId}`: one `AppInstanceInfo`."""
        inst = await self._inst_or_404(request)
        return web.json_response((await self.instance_infos([inst]))[0])

    async def delete_app_instance(self, request: web.Request) -> web.Response:
        """`DELETE /appinstances/{appInstanceId}`: delete it, waiting as the original; 202."""
        inst = await self._inst_or_404(request)
        async for result in self.insts.DeleteAppInst(appinst_pb2.AppInst(key=inst.key)):
            log.debug("NBI delete of AppInst %s: %s", inst.key.name, result.message)
        return web.Response(status=202)

    # -- clusters and zones --------------------------------------------------------------------

    async def get_clusters(self, request: web.Request) -> web.Response:
        """`GET /clusters[?clusterRef=&region=]`: ClusterInsts as `ClusterInfo`."""
        if self._other_region(request):
            return web.json_response([])
        flt = clusterinst_pb2.ClusterInst(obj_id=request.query.get("clusterRef", ""))
        clusters = await _collect(self.clusters.ShowClusterInst(flt, timeout=SHOW_TIMEOUT))
        zone_ids = await self.zone_ids() if clusters else {}
        infos = [
            cluster_info(c, zone_id=zone_ids.get(zone_key_tuple(c.zone_key), "")) for c in clusters
        ]
        infos.sort(key=lambda info: info["provider"] + info["name"])
        return web.json_response(infos)

    async def get_edge_cloud_zones(self, request: web.Request) -> web.Response:
        """`GET /edge-cloud-zones[?region=&status=]`: Zones with a status from their cloudlets."""
        wanted = request.query.get("status")
        if wanted is not None and wanted not in ZONE_STATUSES:
            raise NbiError(400, f"status must be one of {', '.join(ZONE_STATUSES)}, not {wanted!r}")
        if self._other_region(request):
            return web.json_response([])
        zones = await _collect(self.zones.ShowZone(zone_pb2.Zone(), timeout=SHOW_TIMEOUT))
        cloudlets = await _collect(
            self.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(), timeout=SHOW_TIMEOUT)
        )
        infos = await _collect(
            self.cloudlet_infos.ShowCloudletInfo(cloudlet_pb2.CloudletInfo(), timeout=SHOW_TIMEOUT)
        )
        reported = {
            (i.key.organization, i.key.name, i.key.federated_organization): i.state for i in infos
        }
        members: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
        for cl in cloudlets:
            if not cl.zone:
                continue
            key = (cl.key.organization, cl.key.name, cl.key.federated_organization)
            member_of = (cl.key.organization, cl.zone, cl.key.federated_organization)
            members.setdefault(member_of, []).append((reported.get(key, 0), cl.maintenance_state))
        out = []
        for zone in zones:
            status = zone_status(members.get(zone_key_tuple(zone.key), []))
            if wanted is None or status == wanted:
                out.append(zone_info(zone, region=self.region, status=status))
        out.sort(key=lambda z: z["edgeCloudProvider"] + z["edgeCloudZoneName"])
        return web.json_response(out)


def make_nbi_app(channel: grpc.aio.Channel, *, region: str, app_dns_root: str) -> web.Application:
    """The NBI as an aiohttp application, to mount at `/edge-application-management/vwip`.

    Args:
        channel: A channel to the Controller's own gRPC API; every request is served through
            it. The caller owns (and closes) it.
        region: This Controller's region, reported as `edgeCloudRegion` and matched against
            `region` queries.
        app_dns_root: The Controller's DNS root for App instances. Accepted so the mount hands
            over the Controller's settings in one place; the NBI needs nothing more from it,
            because the Controller already builds instance URIs (the endpoint fqdns) under it.

    Returns:
        The application (routes relative to the mount point).
    """
    del app_dns_root  # see Args: instance URIs already end in it
    nbi = _Nbi(channel, region)
    app = web.Application(middlewares=[_camara_errors])
    app.add_routes(
        [
            web.get("/apps", nbi.get_apps),
            web.post("/apps", nbi.submit_app),
            web.get("/apps/{appId}", nbi.get_app),
            web.delete("/apps/{appId}", nbi.delete_app),
            web.get("/appinstances", nbi.get_app_instances),
            web.post("/appinstances", nbi.create_app_instance),
            web.get("/appinstances/{appInstanceId}", nbi.get_app_instance),
            web.delete("/appinstances/{appInstanceId}", nbi.delete_app_instance),
            web.get("/clusters", nbi.get_clusters),
            web.get("/edge-cloud-zones", nbi.get_edge_cloud_zones),
        ]
    )
    return app
