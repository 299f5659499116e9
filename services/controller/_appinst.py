"""AppInst rules of controller.md §3.9: pre-checks, port mapping, URI rules, ids and labels.

Pure functions over protos, run inside the transactions of `_inst_ops` and unit-tested on
their own. Error texts are the original's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from distributed_match_engine import appcommon_pb2
from edgeproto import app_pb2, appinst_pb2, clusterinst_pb2, common_pb2, refs_pb2

from edge_cloud.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from services.controller._cloudlet import hostname_sanitize
from services.controller._clusterinst import EDGECLOUD_ORG, cluster_label_candidates
from services.controller._dns import dns_sanitize
from services.controller._ports import parse_app_ports

__all__ = [
    "APP_INST_ID_PREFIX",
    "PROTO_TCP",
    "PROTO_UDP",
    "app_inst_uri",
    "check_cluster_use",
    "check_duplicate",
    "free_root_lb_ports",
    "id_candidates",
    "label_candidates",
    "map_ports",
    "precheck_create",
    "vm_cluster_checks",
]

APP_INST_ID_PREFIX: Final = "1/AppInstId/"
PROTO_TCP: Final = 1
PROTO_UDP: Final = 2
FIRST_FREE_PORT: Final = 10000
LAST_FREE_PORT: Final = 65000
PROXY_METRICS_PORT: Final = 65121
_NEVER_REUSED: Final = frozenset({22, PROXY_METRICS_PORT})
_VALID_NAME: Final = re.compile(r"^[0-9a-zA-Z][-_0-9a-zA-Z .&,!]*$")
_DNS_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_ID_SALTS: Final = 10
DNS_LABEL_MAX_LEN: Final = 63

AppInst = appinst_pb2.AppInst


def precheck_create(inst: AppInst, *, autoprov: bool = False) -> None:
    """Pre-checks of §3.9 (fills Static liveness).

    Args:
        inst: The requested instance.
        autoprov: The caller is auto-provisioning (`_autoprov.current_intent()`): only it
            may use the reserved `autoprov-` prefix, whose names it derives per App and zone.

    Raises:
        InvalidArgument: With the original's text.
    """
    if inst.cluster_key.name and not inst.cluster_key.organization:
        raise InvalidArgument("cluster organization must also be specified with cluster name")
    if inst.cluster_key.organization and not inst.cluster_key.name:
        raise InvalidArgument("cluster name must also be specified with cluster organization")
    if not _VALID_NAME.match(inst.key.name):
        raise InvalidArgument("Invalid app instance name")
    if not _VALID_NAME.match(inst.key.organization):
        raise InvalidArgument("Invalid app instance organization")
    if not inst.app_key.name or not inst.app_key.organization:
        raise InvalidArgument("App key must be specified")
    if inst.liveness == common_pb2.LIVENESS_UNKNOWN:
        inst.liveness = common_pb2.LIVENESS_STATIC
    if inst.namespace and not _DNS_NAME.match(inst.namespace):
        raise InvalidArgument(
            f"invalid namespace: {inst.namespace!r} is not a valid DNS-1123 label"
        )
    if inst.key.name.startswith("autoprov-") and not autoprov:
        raise InvalidArgument(
            "AppInst name prefix autoprov- is reserved for auto-provisioned instances, "
            "please choose a different name"
        )


def vm_cluster_checks(inst: AppInst, app: app_pb2.App) -> None:
    """VM apps take no cluster; sidecars must name one.

    Raises:
        InvalidArgument: The original's texts.
    """
    if app.deployment == "vm":
        if inst.cluster_key.name:
            raise InvalidArgument("Cluster name must be blank for App deployment type vm")
        if inst.cluster_key.organization:
            raise InvalidArgument("Cluster organization must be blank for App deployment type vm")
        return
    sidecar = app.key.organization == EDGECLOUD_ORG and app.del_opt == app_pb2.AUTO_DELETE
    if sidecar and not inst.cluster_key.name:
        raise InvalidArgument(
            "Sidecar AppInst (AutoDelete App) must specify the Cluster name and organization "
            "to deploy to"
        )


def deployment_matches(app_deployment: str, cluster_deployment: str) -> bool:
    """Helm ≡ kubernetes."""
    norm = {"helm": "kubernetes"}
    return norm.get(app_deployment, app_deployment) == norm.get(
        cluster_deployment, cluster_deployment
    )


def check_cluster_use(
    inst: AppInst, app: app_pb2.App, cluster: clusterinst_pb2.ClusterInst
) -> bool:
    """Whether the instance may use `cluster`; returns True when it reserves it now.

    Raises:
        FailedPrecondition: The original's texts (not ready, reserved, org mismatch...).
    """
    key_text = f'{{"name":"{cluster.key.name}","organization":"{cluster.key.organization}"}}'
    if cluster.delete_prepare:
        raise FailedPrecondition(f"Cluster {key_text} is being deleted")
    if cluster.state != common_pb2.READY:
        raise FailedPrecondition(
            f"ClusterInst {key_text} not ready, it is {common_pb2.TrackedState.Name(cluster.state)}"
        )
    if not deployment_matches(app.deployment, cluster.deployment):
        raise FailedPrecondition(
            f"Cannot deploy {app.deployment} App into {cluster.deployment} ClusterInst"
        )
    if cluster.reservable:
        if cluster.reserved_by and cluster.reserved_by != inst.key.organization:
            raise FailedPrecondition("ClusterInst already reserved")
        return not cluster.reserved_by
    if cluster.multi_tenant:
        if not app.allow_serverless:
            raise FailedPrecondition(
                f"App must allow serverless deployment to deploy to multi-tenant cluster "
                f"{cluster.key.name}"
            )
        return False
    sidecar = app.key.organization == EDGECLOUD_ORG and app.del_opt == app_pb2.AUTO_DELETE
    if not sidecar and cluster.key.organization != inst.key.organization:
        raise FailedPrecondition(
            f"developer organization mismatch between AppInst: {inst.key.organization} and "
            f"ClusterInst: {cluster.key.organization}"
        )
    return False


def check_duplicate(
    inst: AppInst, app: app_pb2.App, others: Iterable[AppInst], app_key_text: str
) -> None:
    """Never two instances of an App per cluster (kubernetes: per namespace).

    Raises:
        FailedPrecondition: The original's texts.
    """
    for other in others:
        if other.key == inst.key or other.app_key != inst.app_key:
            continue
        if app.deployment in ("kubernetes", "helm"):
            if other.namespace == inst.namespace:
                raise FailedPrecondition(
                    f"cannot deploy another instance of App {app_key_text} to the same "
                    f'namespace "{inst.namespace}" in the same cluster'
                )
            continue
        raise FailedPrecondition(
            f"cannot deploy another instance of App {app_key_text} in the cluster"
        )


def _bits(proto: int) -> int:
    return PROTO_UDP if proto == appcommon_pb2.L_PROTO_UDP else PROTO_TCP


def map_ports(
    app: app_pb2.App,
    *,
    shared: bool,
    refs: refs_pb2.CloudletRefs,
    others_on_cluster: Iterable[AppInst] = (),
    uses_ingress: bool = False,
) -> list[appinst_pb2.InstPort]:
    """The instance's `mapped_ports` (§3.9 phase 3), allocating shared root-LB ports in refs.

    Args:
        app: The App (its `access_ports`).
        shared: Behind the cloudlet's shared root LB (not VM, not dedicated).
        refs: The cloudlet's refs; `root_lb_ports[port] |= protoBits` for what is taken.
        others_on_cluster: Instances on the same dedicated LB, for overlap checks.
        uses_ingress: HTTP ports go through an ingress (else they are TCP).

    Raises:
        InvalidArgument: `Shared IP access with port range not allowed`.
        ResourceExhausted: `no free external ports`.
        FailedPrecondition: Port overlaps on a dedicated cluster.
    """
    ports = parse_app_ports(app.access_ports)
    for port in ports:
        if port.proto == appcommon_pb2.L_PROTO_HTTP and not uses_ingress:
            port.proto = appcommon_pb2.L_PROTO_TCP
        if port.internal_vis_only:
            continue
        if not shared:
            _check_dedicated_overlap(port, others_on_cluster)
            port.public_port = port.internal_port
            continue
        if port.end_port:
            raise InvalidArgument("Shared IP access with port range not allowed")
        bit = _bits(port.proto)
        wanted = port.internal_port
        if wanted not in _NEVER_REUSED and not refs.root_lb_ports.get(wanted, 0) & bit:
            public = wanted
        else:
            public = 0
            for candidate in range(FIRST_FREE_PORT, LAST_FREE_PORT):
                if not refs.root_lb_ports.get(candidate, 0) & bit:
                    public = candidate
                    break
            if not public:
                raise ResourceExhausted("no free external ports")
        refs.root_lb_ports[public] = refs.root_lb_ports.get(public, 0) | bit
        port.public_port = public
    return ports


def _check_dedicated_overlap(port: appinst_pb2.InstPort, others: Iterable[AppInst]) -> None:
    lo, hi = port.internal_port, port.end_port or port.internal_port
    for other in others:
        for used in other.mapped_ports:
            if used.internal_vis_only or _bits(used.proto) != _bits(port.proto):
                continue
            ulo = used.public_port
            uhi = used.public_port + (used.end_port - used.internal_port if used.end_port else 0)
            if lo <= uhi and ulo <= hi:
                if port.end_port:
                    raise FailedPrecondition(
                        f"port range {lo}-{hi} overlaps with ports in use on the cluster"
                    )
                raise FailedPrecondition(
                    f"port {lo} is already in use on the cluster by AppInst {other.key.name}"
                )


def free_root_lb_ports(inst: AppInst, refs: refs_pb2.CloudletRefs) -> None:
    """Release the shared root-LB port bits an instance took."""
    for port in inst.mapped_ports:
        if port.internal_vis_only or not port.public_port or port.end_port:
            continue
        current = refs.root_lb_ports.get(port.public_port, 0)
        left = current & ~_bits(port.proto)
        if left:
            refs.root_lb_ports[port.public_port] = left
        elif port.public_port in refs.root_lb_ports:
            del refs.root_lb_ports[port.public_port]


def app_inst_uri(
    inst: AppInst,
    app: app_pb2.App,
    *,
    cluster: clusterinst_pb2.ClusterInst | None,
    cloudlet_label: str,
    root_lb_fqdn: str,
    region: str,
    app_dns_root: str,
    per_service_ip: bool,
) -> str:
    """The URI rules of §3.9.1."""
    ports = list(inst.mapped_ports)
    if not ports or all(p.internal_vis_only for p in ports):
        return ""
    own = f"{inst.dns_label}.{cloudlet_label}.{hostname_sanitize(region)}.{app_dns_root}"
    has_http = any(p.proto == appcommon_pb2.L_PROTO_HTTP for p in ports)
    if app.deployment == "vm" or inst.dedicated_ip or has_http:
        return own
    if cluster is None:
        return own
    if cluster.ip_access != common_pb2.IP_ACCESS_DEDICATED:
        return root_lb_fqdn
    if not per_service_ip:
        return cluster.fqdn
    return own


def id_candidates(inst: AppInst, cloudlet_name: str, cloudlet_org: str) -> list[str]:
    """`<org>-<name>-<cloudletName>-<cloudletOrg>[-<n>]`, DNS-sanitised (§3.9)."""
    base = dns_sanitize(f"{inst.key.organization}-{inst.key.name}-{cloudlet_name}-{cloudlet_org}")
    return [base] + [f"{base}-{i}" for i in range(1, MAX_ID_SALTS)]


def label_candidates(inst: AppInst) -> list[str]:
    """`<name>-<org>` sanitised (≤63 chars), then numeric suffixes."""
    return cluster_label_candidates(inst.key.name, inst.key.organization)


def default_namespace(inst: AppInst) -> str:
    """`<name>-<org>`, sanitised (kubernetes only)."""
    return dns_sanitize(f"{inst.key.name}-{inst.key.organization}")[:DNS_LABEL_MAX_LEN]


def check_dns_name(name: str) -> None:
    """The DNS length checks of phase 3.

    Raises:
        InvalidArgument: The original's texts.
    """
    if len(name) > 253:
        raise InvalidArgument(f'DNS name "{name}" exceeds 253 chars, please shorten some names')
    for label in name.split("."):
        if len(label) > 63:
            raise InvalidArgument(
                f'Label "{label}" of DNS name "{name}" exceeds 63 chars, please shorten it'
            )
