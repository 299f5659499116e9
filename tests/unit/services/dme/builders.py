"""Small helpers that put Apps, Cloudlets and AppInsts into a DME `World` as notify would."""

from __future__ import annotations

from collections.abc import Iterable

from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    common_pb2,
    operatorcode_pb2,
)

from services.dme._world import AppKey, World

APP = AppKey("devorg", "app", "1.0")
READY = appcommon_pb2.CloudletState.CLOUDLET_STATE_READY
OK = appcommon_pb2.HealthCheck.HEALTH_CHECK_OK
NORMAL = appcommon_pb2.MaintenanceState.NORMAL_OPERATION


def app_key_pb(app: AppKey) -> app_pb2.AppKey:
    return app_pb2.AppKey(organization=app.organization, name=app.name, version=app.version)


def add_app(world: World, app: AppKey = APP, **fields: object) -> None:
    world.update_app(app_pb2.App(key=app_key_pb(app), **fields))  # type: ignore[arg-type]


def cloudlet_key(org: str, name: str) -> cloudletkey_pb2.CloudletKey:
    return cloudletkey_pb2.CloudletKey(organization=org, name=name)


def add_cloudlet(
    world: World,
    org: str,
    name: str,
    lat: float,
    lon: float,
    *,
    alliances: Iterable[str] = (),
    state: int | None = READY,
    maintenance: int = NORMAL,
    info_maintenance: int = NORMAL,
) -> cloudletkey_pb2.CloudletKey:
    """A Cloudlet object and (unless `state` is None) its CloudletInfo."""
    key = cloudlet_key(org, name)
    world.update_cloudlet(
        cloudlet_pb2.Cloudlet(
            key=key,
            location=loc_pb2.Loc(latitude=lat, longitude=lon),
            alliance_orgs=list(alliances),
            maintenance_state=maintenance,  # type: ignore[arg-type]
        )
    )
    if state is not None:
        world.update_cloudlet_info(
            cloudlet_pb2.CloudletInfo(key=key, state=state, maintenance_state=info_maintenance)  # type: ignore[arg-type]
        )
    return key


def app_inst(
    name: str,
    cloudlet: cloudletkey_pb2.CloudletKey,
    lat: float,
    lon: float,
    *,
    app: AppKey = APP,
    health: int = OK,
    state: int = common_pb2.TrackedState.READY,
    ports: Iterable[appinst_pb2.InstPort] = (),
    cluster: str = "cluster1",
) -> appinst_pb2.AppInst:
    return appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name=name, organization=app.organization),
        app_key=app_key_pb(app),
        cloudlet_key=cloudlet,
        cluster_key=cluster_pb2.ClusterKey(name=cluster, organization=app.organization),
        cloudlet_loc=loc_pb2.Loc(latitude=lat, longitude=lon),
        uri=f"{name}.{cloudlet.name}.{cloudlet.organization}.example.net",
        state=state,  # type: ignore[arg-type]
        health_check=health,  # type: ignore[arg-type]
        mapped_ports=list(ports),
    )


def add_inst(
    world: World,
    name: str,
    cloudlet: cloudletkey_pb2.CloudletKey,
    lat: float,
    lon: float,
    **kwargs: object,
) -> None:
    world.update_app_inst(app_inst(name, cloudlet, lat, lon, **kwargs))  # type: ignore[arg-type]


def add_site(
    world: World,
    org: str,
    name: str,
    lat: float,
    lon: float,
    *,
    app: AppKey = APP,
    alliances: Iterable[str] = (),
) -> None:
    """A READY cloudlet with one healthy instance of `app` named after the cloudlet."""
    key = add_cloudlet(world, org, name, lat, lon, alliances=alliances)
    add_inst(world, f"{name}-inst", key, lat, lon, app=app)


def add_operator_code(world: World, code: str, org: str) -> None:
    world.update_operator_code(operatorcode_pb2.OperatorCode(code=code, organization=org))
