"""CAMARA Edge Application Management objects <-> the Controller's App, AppInst, ClusterInst, Zone.

The NBI (`nbi.py`) speaks CAMARA JSON; the Controller speaks edgeproto. This module holds the
pure translations in both directions and the explicit validation of request bodies, so that a
malformed body is refused with a 400 naming the offending field (`componentSpec[0].port`)
before anything reaches the Controller. The mapping follows the original's
`nbiconvert_*.go` (dme.md §3):

- `packageType` CONTAINER -> Kubernetes deployment of a Docker image (serverless allowed),
  HELM -> Helm chart, OVA / QCOW2 -> VM images;
- exactly one `componentSpec`; its network interfaces become the App's access ports
  (`tcp:443:tls:id=web`: TCP implies TLS, internal visibility adds `intvis`);
- the component name, repository type and operating system are kept as App annotations so a
  read gives back what was submitted;
- `requiredResources` must be Kubernetes resources (node pools, minimum version).

Patterns of the CAMARA schema that the original does not enforce (names of 8+ characters,
instance names without dashes) are not enforced here either: the Controller validates names
with its own rules, and refusing what the original accepts would break its clients.
"""

from __future__ import annotations

import http
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distributed_match_engine import appcommon_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    decimal_pb2,
    resources_pb2,
    zone_pb2,
)

__all__ = [
    "PACKAGE_TYPES",
    "ZONE_STATUSES",
    "AppInstRequest",
    "NbiError",
    "app_from_manifest",
    "app_instance_info",
    "app_instance_request",
    "cluster_info",
    "error_body",
    "manifest_from_app",
    "zone_info",
    "zone_key_tuple",
    "zone_status",
]

# App annotations that keep the CAMARA-only parts of a manifest (the original's names).
ANNOTATION_COMPONENT = "NBIAppComponentName"
ANNOTATION_OS_ARCH = "NBIAppOSArch"
ANNOTATION_OS_FAMILY = "NBIAppOSFamily"
ANNOTATION_OS_LICENSE = "NBIAppOSLicense"
ANNOTATION_OS_VERSION = "NBIAppOSVersion"
ANNOTATION_REPO_TYPE = "NBIAppRepoType"

PACKAGE_TYPES = ("QCOW2", "OVA", "CONTAINER", "HELM")
REPO_TYPES = ("PRIVATEREPO", "PUBLICREPO")
PROTOCOLS = ("TCP", "UDP", "ANY")
VISIBILITIES = ("VISIBILITY_EXTERNAL", "VISIBILITY_INTERNAL")
OS_ARCHITECTURES = ("x86_64", "x86")
OS_FAMILIES = ("RHEL", "UBUNTU", "COREOS", "WINDOWS", "OTHER")
OS_VERSIONS = ("OS_VERSION_UBUNTU_2204_LTS", "OS_VERSION_RHEL_8", "OS_MS_WINDOWS_2022", "OTHER")
OS_LICENSES = ("OS_LICENSE_TYPE_FREE", "OS_LICENSE_TYPE_ON_DEMAND", "OTHER")
INFRA_KINDS = ("kubernetes", "virtualMachine", "container", "dockerCompose")
ZONE_STATUSES = ("active", "inactive", "unknown")

# (deployment, image type, allow serverless) of each package type.
_PACKAGES: dict[str, tuple[str, app_pb2.ImageType.ValueType, bool]] = {
    "CONTAINER": ("kubernetes", app_pb2.IMAGE_TYPE_DOCKER, True),
    "HELM": ("helm", app_pb2.IMAGE_TYPE_HELM, False),
    "OVA": ("vm", app_pb2.IMAGE_TYPE_OVA, False),
    "QCOW2": ("vm", app_pb2.IMAGE_TYPE_QCOW, False),
}
# Resource kinds the original refuses, with its texts.
_UNHANDLED_KINDS = {
    "virtualMachine": "vm resources not handled yet",
    "container": "container resources not handled yet",
    "dockerCompose": "docker compose resources not handled yet",
}
# An interface id ends up inside an access-port list (`id=<x>`), so it must not contain the
# list's separators; this is the CAMARA pattern loosened to what the original accepts (`web`).
_INTERFACE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
_INT32_MAX = 2**31 - 1

TS = common_pb2.TrackedState
_INSTANTIATING = (
    TS.CREATE_REQUESTED,
    TS.CREATING_DEPENDENCIES,
    TS.CREATING,
    TS.UPDATE_REQUESTED,
    TS.UPDATING,
)
_TERMINATING = (TS.DELETE_REQUESTED, TS.DELETE_PREPARE, TS.DELETING)
_FAILED = (TS.CREATE_ERROR, TS.UPDATE_ERROR, TS.DELETE_ERROR)


class NbiError(Exception):
    """A request the NBI refuses, with the HTTP status and the message for the caller.

    Attributes:
        status: The HTTP status code.
        message: What went wrong, in words a person can act on.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str) -> dict[str, Any]:
    """The CAMARA `ErrorInfo`; `code` is the HTTP status text, as the original sends it."""
    return {"status": status, "code": http.HTTPStatus(status).phrase, "message": message}


def _bad(message: str) -> NbiError:
    return NbiError(400, message)


# --- reading JSON with field paths ---------------------------------------------------------


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{path} must be a JSON object")
    return value


def _field(obj: Mapping[str, Any], name: str, path: str, *, required: bool) -> Any:
    value = obj.get(name)
    if value is None and required:
        raise _bad(f"{_join(path, name)} is required")
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _string(obj: Mapping[str, Any], name: str, path: str = "", *, required: bool = True) -> str:
    """A string member; required ones must also be non-empty."""
    value = _field(obj, name, path, required=required)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(f"{_join(path, name)} must be a string")
    if required and not value:
        raise _bad(f"{_join(path, name)} must not be empty")
    return value


def _choice(obj: Mapping[str, Any], name: str, path: str, allowed: tuple[str, ...]) -> str:
    value = _string(obj, name, path)
    if value not in allowed:
        raise _bad(f"{_join(path, name)} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _integer(
    obj: Mapping[str, Any], name: str, path: str, *, minimum: int = 0, maximum: int = _INT32_MAX
) -> int:
    value = _field(obj, name, path, required=True)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{_join(path, name)} must be an integer")
    if not minimum <= value <= maximum:
        raise _bad(f"{_join(path, name)} must be between {minimum} and {maximum}, not {value}")
    return value


def _boolean(obj: Mapping[str, Any], name: str, path: str) -> bool:
    value = _field(obj, name, path, required=True)
    if not isinstance(value, bool):
        raise _bad(f"{_join(path, name)} must be true or false")
    return value


def _array(obj: Mapping[str, Any], name: str, path: str = "") -> list[Any]:
    value = _field(obj, name, path, required=True)
    if not isinstance(value, list):
        raise _bad(f"{_join(path, name)} must be an array")
    return value


# --- AppManifest -> App --------------------------------------------------------------------


def app_from_manifest(body: Any) -> app_pb2.App:
    """The App to create for a submitted `AppManifest`.

    Args:
        body: The decoded JSON request body.

    Returns:
        An App ready for `AppApi.CreateApp` (the Controller assigns its `obj_id`, the appId).

    Raises:
        NbiError: 400 naming the first field that is missing, mistyped or not supported.
    """
    manifest = _object(body, "the request body")
    app = app_pb2.App(
        key=app_pb2.AppKey(
            organization=_string(manifest, "appProvider"),
            name=_string(manifest, "name"),
            version=_string(manifest, "version"),
        )
    )
    deployment, image_type, serverless = _PACKAGES[
        _choice(manifest, "packageType", "", PACKAGE_TYPES)
    ]
    app.deployment = deployment
    app.image_type = image_type
    app.allow_serverless = serverless
    repo = _object(_field(manifest, "appRepo", "", required=True), "appRepo")
    app.image_path = _string(repo, "imagePath", "appRepo")
    app.app_annotations[ANNOTATION_REPO_TYPE] = _choice(repo, "type", "appRepo", REPO_TYPES)
    specs = _array(manifest, "componentSpec")
    if len(specs) != 1:
        raise _bad(f"componentSpec must hold exactly one component, not {len(specs)}")
    spec = _object(specs[0], "componentSpec[0]")
    component = _string(spec, "componentName", "componentSpec[0]")
    app.app_annotations[ANNOTATION_COMPONENT] = component
    app.access_ports = ",".join(
        _access_port(item, f"componentSpec[0].networkInterfaces[{i}]")
        for i, item in enumerate(_array(spec, "networkInterfaces", "componentSpec[0]"))
    )
    system = manifest.get("operatingSystem")
    if system is not None:
        system = _object(system, "operatingSystem")
        path = "operatingSystem"
        app.app_annotations[ANNOTATION_OS_ARCH] = _choice(
            system, "architecture", path, OS_ARCHITECTURES
        )
        app.app_annotations[ANNOTATION_OS_FAMILY] = _choice(system, "family", path, OS_FAMILIES)
        app.app_annotations[ANNOTATION_OS_LICENSE] = _choice(system, "license", path, OS_LICENSES)
        app.app_annotations[ANNOTATION_OS_VERSION] = _choice(system, "version", path, OS_VERSIONS)
    resources = _object(
        _field(manifest, "requiredResources", "", required=True), "requiredResources"
    )
    kind = _choice(resources, "infraKind", "requiredResources", INFRA_KINDS)
    if kind in _UNHANDLED_KINDS:
        raise _bad(_UNHANDLED_KINDS[kind])
    app.is_standalone = _boolean(resources, "isStandalone", "requiredResources")
    _kubernetes_resources(resources, app.kubernetes_resources)
    return app


def _access_port(value: Any, path: str) -> str:
    """One network interface as an access-port token, `tcp:443:tls:id=web` (the original's)."""
    intf = _object(value, path)
    interface_id = _string(intf, "interfaceId", path)
    if not _INTERFACE_ID.match(interface_id):
        raise _bad(
            f"{path}.interfaceId {interface_id!r} must start with a letter and hold at most 32 "
            "letters, digits, '_' or '-'"
        )
    protocol = _choice(intf, "protocol", path, PROTOCOLS)
    if protocol == "ANY":
        raise _bad(f"{path}: protocol ANY is not supported, give TCP or UDP")
    port = _integer(intf, "port", path, minimum=1, maximum=65535)
    visibility = _choice(intf, "visibilityType", path, VISIBILITIES)
    tags = []
    if protocol == "TCP":
        tags.append("tls")  # the original assumes TLS on TCP
    if visibility == "VISIBILITY_INTERNAL":
        tags.append("intvis")
    tags.append(f"id={interface_id}")
    return ":".join([protocol.lower(), str(port), *tags])


def _kubernetes_resources(
    resources: Mapping[str, Any], out: resources_pb2.KubernetesResources
) -> None:
    path = "requiredResources"
    for name, what in (
        ("additionalStorage", "kubernetes resources additional storage not supported"),
        ("addons", "kubernetes resources addons not supported yet"),
        ("networking", "kubernetes networking not supported yet"),
    ):
        if resources.get(name) is not None:
            raise _bad(what)
    out.min_kubernetes_version = _string(resources, "version", path, required=False)
    pools = _object(
        _field(resources, "applicationResources", path, required=True),
        f"{path}.applicationResources",
    )
    for name, target in (("cpuPool", out.cpu_pool), ("gpuPool", out.gpu_pool)):
        pool = pools.get(name)
        if pool is None:
            continue
        pool_path = f"{path}.applicationResources.{name}"
        pool = _object(pool, pool_path)
        target.total_vcpus.CopyFrom(decimal_pb2.Udec64(whole=_integer(pool, "numCPU", pool_path)))
        target.total_memory = _integer(pool, "memory", pool_path)
        topo_path = f"{pool_path}.topology"
        topology = _object(_field(pool, "topology", pool_path, required=True), topo_path)
        target.topology.min_number_of_nodes = _integer(topology, "minNumberOfNodes", topo_path)
        target.topology.min_node_vcpus = _integer(topology, "minNodeCpu", topo_path)
        target.topology.min_node_memory = _integer(topology, "minNodeMemory", topo_path)


# --- App -> AppManifest --------------------------------------------------------------------


def manifest_from_app(app: app_pb2.App) -> dict[str, Any]:
    """The `AppManifest` of a stored App (also of Apps created through the gRPC API)."""
    notes = app.app_annotations
    manifest: dict[str, Any] = {
        "name": app.key.name,
        "appProvider": app.key.organization,
        "version": app.key.version,
        "packageType": _package_type(app),
        "appRepo": {"type": notes.get(ANNOTATION_REPO_TYPE, ""), "imagePath": app.image_path},
        "requiredResources": None,
        "componentSpec": [
            {
                "componentName": notes.get(ANNOTATION_COMPONENT) or app.key.name,
                "networkInterfaces": _interfaces(app.access_ports),
            }
        ],
    }
    if app.obj_id:
        manifest["appId"] = app.obj_id
    if ANNOTATION_OS_ARCH in notes:
        manifest["operatingSystem"] = {
            "architecture": notes[ANNOTATION_OS_ARCH],
            "family": notes.get(ANNOTATION_OS_FAMILY, ""),
            "version": notes.get(ANNOTATION_OS_VERSION, ""),
            "license": notes.get(ANNOTATION_OS_LICENSE, ""),
        }
    if app.HasField("kubernetes_resources"):
        manifest["requiredResources"] = _camara_kubernetes(
            app.kubernetes_resources, app.is_standalone
        )
    return manifest


def _package_type(app: app_pb2.App) -> str:
    """CAMARA's package type; empty where CAMARA has no name (Docker, VM images but OVA/QCOW2).

    The original fails the whole `GET /apps` on a VM App of another image type; one such App
    (made through the gRPC API) should not hide every other App from NBI users.
    """
    if app.deployment == "kubernetes":
        return "CONTAINER"
    if app.deployment == "helm":
        return "HELM"
    if app.deployment == "vm":
        if app.image_type == app_pb2.IMAGE_TYPE_OVA:
            return "OVA"
        if app.image_type == app_pb2.IMAGE_TYPE_QCOW:
            return "QCOW2"
    return ""


def _interfaces(access_ports: str) -> list[dict[str, Any]]:
    """Network interfaces of an access-port list; an entry without `id=` gets `<PROTO><port>`."""
    out: list[dict[str, Any]] = []
    for entry in filter(None, access_ports.split(",")):
        proto, _, rest = entry.partition(":")
        port_text, *options = rest.split(":")
        protocol = "UDP" if proto.lower() == "udp" else "TCP"
        port = int(port_text.partition("-")[0])
        interface_id = ""
        for option in options:
            name, _, value = option.partition("=")
            if name == "id":
                interface_id = value
        out.append(
            {
                "interfaceId": interface_id or f"{protocol}{port}",
                "protocol": protocol,
                "port": port,
                "visibilityType": (
                    "VISIBILITY_INTERNAL" if "intvis" in options else "VISIBILITY_EXTERNAL"
                ),
            }
        )
    return out


def _camara_kubernetes(kr: resources_pb2.KubernetesResources, standalone: bool) -> dict[str, Any]:
    pools: dict[str, Any] = {}
    for name, has, pool in (
        ("cpuPool", kr.HasField("cpu_pool"), kr.cpu_pool),
        ("gpuPool", kr.HasField("gpu_pool"), kr.gpu_pool),
    ):
        if has:
            pools[name] = {
                "numCPU": pool.total_vcpus.whole,
                "memory": pool.total_memory,
                "topology": {
                    "minNumberOfNodes": pool.topology.min_number_of_nodes,
                    "minNodeCpu": pool.topology.min_node_vcpus,
                    "minNodeMemory": pool.topology.min_node_memory,
                },
            }
    out: dict[str, Any] = {
        "infraKind": "kubernetes",
        "applicationResources": pools,
        "isStandalone": standalone,
    }
    if kr.min_kubernetes_version:
        out["version"] = kr.min_kubernetes_version
    return out


# --- app instances, clusters, zones --------------------------------------------------------


@dataclass(frozen=True)
class AppInstRequest:
    """The body of `POST /appinstances`.

    Attributes:
        name: The instance name (the AppInst key name; its organization is the App's).
        app_id: The App's obj_id.
        zone_id: The Zone's obj_id.
        cluster_ref: The ClusterInst's obj_id, or "" to let the Controller place it.
    """

    name: str
    app_id: str
    zone_id: str
    cluster_ref: str


def app_instance_request(body: Any) -> AppInstRequest:
    """Validate the body of `POST /appinstances`.

    Raises:
        NbiError: 400 naming the missing or mistyped member.
    """
    obj = _object(body, "the request body")
    ref = obj.get("kubernetesClusterRef")
    if ref is not None and (not isinstance(ref, str) or not ref):
        raise _bad("kubernetesClusterRef must be a non-empty string when given")
    return AppInstRequest(
        _string(obj, "name"), _string(obj, "appId"), _string(obj, "edgeCloudZoneId"), ref or ""
    )


def _instance_status(state: int) -> str:
    if state in _INSTANTIATING:
        return "instantiating"
    if state in _TERMINATING:
        return "terminating"
    if state == TS.READY:
        return "ready"
    if state in _FAILED:
        return "failed"
    return "unknown"


def app_instance_info(
    inst: appinst_pb2.AppInst, *, app_id: str, zone_id: str, cluster_ref: str
) -> dict[str, Any]:
    """The `AppInstanceInfo` of a stored AppInst.

    Args:
        inst: The instance.
        app_id: Its App's obj_id ("" when the App is gone).
        zone_id: Its Zone's obj_id ("" when its cloudlet left the zone).
        cluster_ref: Its ClusterInst's obj_id ("" for VM instances, which have none).
    """
    endpoints = []
    for port in inst.mapped_ports:
        access: dict[str, Any] = {"port": port.public_port}
        fqdn = port.fqdn_prefix + inst.uri
        if fqdn:  # internal-only instances have no URI: CAMARA wants a name or no member
            access["fqdn"] = fqdn
        endpoints.append({"interfaceId": port.id, "accessPoints": access})
    info: dict[str, Any] = {
        "name": inst.key.name,
        "appId": app_id,
        "appInstanceId": inst.obj_id,
        "appProvider": inst.key.organization,
        "status": _instance_status(inst.state),
        "componentEndpointInfo": endpoints,
        "edgeCloudZoneId": zone_id,
    }
    if cluster_ref:
        info["kubernetesClusterRef"] = cluster_ref
    return info


def cluster_info(cluster: clusterinst_pb2.ClusterInst, *, zone_id: str) -> dict[str, Any]:
    """The `ClusterInfo` of a ClusterInst (its zone's obj_id given by the caller)."""
    return {
        "clusterRef": cluster.obj_id,
        "name": cluster.key.name,
        "provider": cluster.key.organization,
        "edgeCloudZoneId": zone_id,
    }


def zone_info(zone: zone_pb2.Zone, *, region: str, status: str) -> dict[str, Any]:
    """The `EdgeCloudZone` of a Zone, in this Controller's region."""
    return {
        "edgeCloudZoneId": zone.obj_id,
        "edgeCloudZoneName": zone.key.name,
        "edgeCloudZoneStatus": status,
        "edgeCloudProvider": zone.key.organization,
        "edgeCloudRegion": region,
    }


def zone_status(cloudlet_states: list[tuple[int, int]]) -> str:
    """A zone's CAMARA status from its cloudlets' (CloudletInfo state, maintenance state).

    `active` when at least one cloudlet is Ready and in normal operation (an instance can be
    placed there), `inactive` when the zone has cloudlets but none is, `unknown` when it has
    none (nothing reports on it).
    """
    if not cloudlet_states:
        return "unknown"
    for state, maintenance in cloudlet_states:
        if (
            state == appcommon_pb2.CLOUDLET_STATE_READY
            and maintenance == appcommon_pb2.NORMAL_OPERATION
        ):
            return "active"
    return "inactive"


def zone_key_tuple(key: cloudletkey_pb2.ZoneKey) -> tuple[str, str, str]:
    """A hashable zone key."""
    return (key.organization, key.name, key.federated_organization)
