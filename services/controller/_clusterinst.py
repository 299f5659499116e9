"""ClusterInst rules of controller.md §3.8: pre-checks, defaults, IP access, node resources.

Pure functions over protos (no I/O), so the operations in `_inst_ops` can run them inside
guarded transactions and unit tests can check every message. Error texts are the original's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from edgeproto import (
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    refs_pb2,
    resources_pb2,
)

from edge_cloud.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from services.controller._cloudlet import hostname_sanitize
from services.controller._dns import dns_sanitize, numbered_labels

__all__ = [
    "EDGECLOUD_ORG",
    "ClusterInst",
    "add_nodes",
    "allocate_ip",
    "check_cloudlet_support",
    "cloudlet_object_label_key",
    "cluster_fqdn",
    "cluster_label_candidates",
    "fit_resources",
    "free_ip",
    "ip_access_default",
    "precheck_user_create",
    "reservable_name",
    "reserve_auto_cluster_id",
    "resolve_node_resources",
    "select_infra_flavor",
    "used_resources",
    "validate_cluster",
]

ClusterInst = clusterinst_pb2.ClusterInst

EDGECLOUD_ORG: Final = "edgecloudorg"
RESERVABLE_PREFIX: Final = "reservable"
DEFAULT_CLUST_PREFIX: Final = "defaultclust"
MAX_NAME_LEN: Final = 40
DEFAULT_POOL: Final = "cpupool"
DNS_LABEL_MAX_LEN: Final = 63
MAX_RESERVABLE_IDS: Final = 64
OBJECT_LABEL_PREFIX: Final = "1/CloudletObjectDnsLabel/"
# default master-node infra flavor when Settings name none (§3.8)
MASTER_VCPUS: Final = 1
MASTER_RAM: Final = 2048
MASTER_DISK: Final = 10

RES_RAM: Final = "RAM"
RES_VCPUS: Final = "vCPUs"
RES_DISK: Final = "Disk"
RES_GPUS: Final = "GPUs"
UNITS: Final[Mapping[str, str]] = {RES_RAM: "MB", RES_DISK: "GB"}

_CLUSTER_NAME: Final = re.compile(r"^[0-9a-zA-Z][-0-9a-zA-Z.]*$")
_VALID_NAME: Final = re.compile(r"^[0-9a-zA-Z][-_0-9a-zA-Z .&,!]*$")
_SEMVER: Final = re.compile(r"^v?\d+(\.\d+){0,2}([-+].*)?$")

TS = common_pb2


# --- pre-checks and defaults ----------------------------------------------------------------


def precheck_user_create(cluster: ClusterInst) -> None:
    """The user-facing create's extra checks; also forces `auto` off.

    Raises:
        InvalidArgument: Reserved name prefixes.
    """
    if cluster.key.name.startswith(RESERVABLE_PREFIX):
        raise InvalidArgument(
            'Invalid cluster name, prefix "reservable" is reserved for internal use'
        )
    if cluster.key.name.startswith(DEFAULT_CLUST_PREFIX):
        raise InvalidArgument("Invalid cluster name, defaultclust is reserved for internal use")
    cluster.auto = False


def validate_cluster(cluster: ClusterInst) -> None:
    """Key, deployment, masters/nodes and liveness rules of the internal create (§3.8).

    Fills defaults in place: deployment `kubernetes`, one master, Static liveness, a legacy
    `ip_access` 2 read as unknown.

    Raises:
        InvalidArgument: With the original's text for the first problem.
    """
    key = cluster.key
    if not key.organization:
        raise InvalidArgument("ClusterInst Organization cannot be empty")
    if not _CLUSTER_NAME.match(key.name):
        raise InvalidArgument("Invalid cluster name")
    if not _VALID_NAME.match(key.organization):
        raise InvalidArgument("Invalid cluster organization")
    if not cluster.cloudlet_key.name:
        if not cluster.zone_key.name:
            raise InvalidArgument("zone name must be specified")
        if not cluster.zone_key.organization:
            raise InvalidArgument("zone organization must be specified")
    if cluster.reservable and key.organization != EDGECLOUD_ORG:
        raise InvalidArgument("Only edgecloudorg ClusterInsts may be reservable")
    if cluster.multi_tenant and key.organization != EDGECLOUD_ORG:
        raise InvalidArgument("Only edgecloudorg ClusterInsts may be multi-tenant")
    if not cluster.deployment or cluster.deployment == "helm":
        cluster.deployment = "kubernetes"
    if cluster.deployment == "vm":
        raise InvalidArgument(
            "ClusterInst is not needed for deployment type vm, just create an AppInst directly"
        )
    if cluster.deployment not in ("kubernetes", "docker"):
        raise InvalidArgument(f"Invalid deployment type {cluster.deployment} for ClusterInst")
    if cluster.multi_tenant and cluster.deployment != "kubernetes":
        raise InvalidArgument("Multi-tenant clusters must be of deployment type Kubernetes")
    if cluster.deployment == "kubernetes":
        if cluster.num_masters == 0:
            cluster.num_masters = 1
        if cluster.num_masters > 1:
            raise InvalidArgument("NumMasters cannot be greater than 1")
        if cluster.kubernetes_version and not _SEMVER.match(cluster.kubernetes_version):
            raise InvalidArgument(
                f"Invalid kubernetes version {cluster.kubernetes_version!r}, must be semver"
            )
    else:
        if cluster.num_masters != 0:
            raise InvalidArgument("NumMasters cannot be specified for deployment type docker")
        if cluster.shared_volume_size != 0:
            raise InvalidArgument("SharedVolumeSize not supported for deployment type docker")
        if cluster.kubernetes_version:
            raise InvalidArgument("Kubernetes version only applies to kubernetes deployments")
        if cluster.num_nodes != 0:
            raise InvalidArgument("NumNodes not applicable for deployment type docker")
        if cluster.node_pools:
            raise InvalidArgument("cannot specify node pools for docker deployment")
    if cluster.ip_access == 2:  # legacy "dedicated or shared"
        cluster.ip_access = common_pb2.IP_ACCESS_UNKNOWN
    if cluster.liveness == common_pb2.LIVENESS_UNKNOWN:
        cluster.liveness = common_pb2.LIVENESS_STATIC
    if cluster.reservable and not cluster.HasField("reservation_ended_at"):
        pass  # stamped by the caller, which knows the time
    if len(key.name) > MAX_NAME_LEN:
        raise InvalidArgument(f"Cluster name limited to {MAX_NAME_LEN} characters")


def resolve_node_resources(cluster: ClusterInst, flavor: flavor_pb2.Flavor | None) -> None:
    """Flavor → node pool 0 (kubernetes) or node resources (docker); num_nodes kept in sync.

    Raises:
        InvalidArgument: Missing or conflicting resource specs (the original's texts).
    """
    if cluster.deployment == "kubernetes":
        if cluster.HasField("node_resources") and cluster.node_resources.vcpus:
            raise InvalidArgument("cannot specify node resources for Kubernetes deployment")
        if flavor is not None:
            if cluster.node_pools:
                raise InvalidArgument("cannot specify both flavor and node pools")
            nodes = cluster.num_nodes or 1
            pool = cluster.node_pools.add(Name=DEFAULT_POOL, num_nodes=nodes)
            _node_from_flavor(pool.node_resources, flavor)
            cluster.num_nodes = nodes
        elif not cluster.node_pools:
            raise InvalidArgument("missing flavor or node pools")
        for pool in cluster.node_pools:
            if not pool.Name:
                raise InvalidArgument("pool  missing name")
            if pool.num_nodes == 0:
                raise InvalidArgument(f"pool {pool.Name} num nodes must be greater than 0")
            if pool.node_resources.vcpus == 0:
                raise InvalidArgument(f"pool {pool.Name} missing vcpus")
        if cluster.num_nodes and len(cluster.node_pools) == 1:
            cluster.node_pools[0].num_nodes = cluster.num_nodes
        cluster.num_nodes = sum(p.num_nodes for p in cluster.node_pools)
        return
    if flavor is not None:
        if cluster.node_resources.vcpus:
            raise InvalidArgument("cannot specify both flavor and node resources")
        _node_from_flavor(cluster.node_resources, flavor)
    elif not cluster.node_resources.vcpus:
        raise InvalidArgument("missing flavor or node resources")


def _node_from_flavor(nodes: resources_pb2.NodeResources, flavor: flavor_pb2.Flavor) -> None:
    nodes.vcpus = flavor.vcpus
    nodes.ram = flavor.ram
    nodes.disk = flavor.disk
    for name, value in flavor.opt_res_map.items():
        nodes.opt_res_map[name] = value


def check_cloudlet_support(
    cluster: ClusterInst, features: cloudlet_pb2.PlatformFeatures | None, ready: bool
) -> str:
    """Why a candidate cloudlet cannot host the cluster ("" when it can), §3.8 skip reasons."""
    if not ready:
        return "site is unavailable"
    if features is None:
        return "site features are missing"
    if features.is_single_kubernetes_cluster:
        return "site only supports AppInst creates"
    if features.supports_kubernetes_only and cluster.deployment != "kubernetes":
        return "platform only supports kubernetes"
    if cluster.shared_volume_size and not features.supports_shared_volume:
        return "site does not support shared volumes"
    if cluster.enable_ipv6 and not features.supports_ipv6:
        return "platform does not support IPV6"
    if (
        (features.kubernetes_requires_worker_nodes or features.kubernetes_managed_control_plane)
        and cluster.deployment == "kubernetes"
        and not cluster.node_pools
    ):
        return "site requires at least one node pool"
    if len(cluster.node_pools) > 1 and not features.supports_multiple_node_pools:
        return "site does not support multiple node pools"
    if cluster.multi_tenant and not features.supports_multi_tenant_cluster:
        return "site does not support multi-tenant clusters"
    if cluster.ip_access == common_pb2.IP_ACCESS_SHARED and features.ip_allocated_per_service:
        return "site does not support shared IP access"
    if cluster.ip_access == common_pb2.IP_ACCESS_DEDICATED and features.cloudlet_services_local:
        return "site does not support dedicated IP access"
    return ""


_PER_SERVICE_OPERATORS: Final = frozenset({"gcp", "azure", "aws"})


def per_service_ip(
    cloudlet: cloudlet_pb2.Cloudlet, features: cloudlet_pb2.PlatformFeatures
) -> bool:
    """Whether the platform gives each service its own IP (fake platforms: by operator)."""
    if features.is_fake and cloudlet.key.organization in _PER_SERVICE_OPERATORS:
        return True
    return features.ip_allocated_per_service


def ip_access_default(
    cluster: ClusterInst,
    cloudlet: cloudlet_pb2.Cloudlet,
    features: cloudlet_pb2.PlatformFeatures,
) -> None:
    """IP access defaulting of §3.8.1 (in place).

    Raises:
        InvalidArgument: An access the platform does not offer.
    """
    if per_service_ip(cloudlet, features):
        if cluster.ip_access == common_pb2.IP_ACCESS_SHARED:
            raise InvalidArgument(
                f"IpAccessShared not supported for platform: {cloudlet.platform_type}"
            )
        cluster.ip_access = common_pb2.IP_ACCESS_DEDICATED
        return
    if features.cloudlet_services_local and not features.is_fake:
        if cluster.ip_access == common_pb2.IP_ACCESS_DEDICATED:
            raise InvalidArgument(
                f"IpAccessDedicated not supported platform: {cloudlet.platform_type}"
            )
        cluster.ip_access = common_pb2.IP_ACCESS_SHARED
        return
    if cluster.ip_access == common_pb2.IP_ACCESS_UNKNOWN:
        cluster.ip_access = common_pb2.IP_ACCESS_SHARED


def allocate_ip(
    cluster: ClusterInst,
    cloudlet: cloudlet_pb2.Cloudlet,
    features: cloudlet_pb2.PlatformFeatures,
    refs: refs_pb2.CloudletRefs,
) -> None:
    """Reserve a dedicated cluster's IP in the cloudlet's refs (§3.8.1).

    Raises:
        FailedPrecondition: `Static IPs not supported yet`.
        ResourceExhausted: `No more dynamic IPs left`.
    """
    if cluster.ip_access != common_pb2.IP_ACCESS_DEDICATED or per_service_ip(cloudlet, features):
        return
    if cloudlet.ip_support == common_pb2.IP_SUPPORT_STATIC:
        raise FailedPrecondition("Static IPs not supported yet")
    # one IP is reserved for the global LB
    if refs.used_dynamic_ips + 1 >= cloudlet.num_dynamic_ips:
        raise ResourceExhausted("No more dynamic IPs left")
    refs.used_dynamic_ips += 1
    cluster.allocated_ip = "dynamic"


def free_ip(cluster: ClusterInst, refs: refs_pb2.CloudletRefs) -> None:
    """Give back a dedicated cluster's dynamic IP."""
    if cluster.allocated_ip == "dynamic":
        refs.used_dynamic_ips = max(refs.used_dynamic_ips - 1, 0)
        cluster.allocated_ip = ""


# --- reservable autoclusters ----------------------------------------------------------------


def reserve_auto_cluster_id(refs: refs_pb2.CloudletRefs) -> int:
    """Take the lowest free reservable-autocluster id bit of the cloudlet.

    Raises:
        ResourceExhausted: All 64 are taken (the original's text).
    """
    mask = refs.reserved_auto_cluster_ids
    for bit in range(MAX_RESERVABLE_IDS):
        if not mask & (1 << bit):
            refs.reserved_auto_cluster_ids = mask | (1 << bit)
            return bit
    raise ResourceExhausted("Requested new reservable autocluster but maximum number reached")


def release_auto_cluster_id(cluster_name: str, refs: refs_pb2.CloudletRefs) -> None:
    """Clear the id bit of a `reservable<N>-...` autocluster."""
    m = re.match(rf"^{RESERVABLE_PREFIX}(\d+)-", cluster_name)
    if m is None:
        return
    bit = int(m.group(1))
    if bit < MAX_RESERVABLE_IDS:
        refs.reserved_auto_cluster_ids &= ~(1 << bit) & ((1 << 64) - 1)


def cloudlet_key_hash(key: cloudletkey_pb2.CloudletKey) -> str:
    """A short stable hash of a cloudlet key for generated cluster names."""
    import hashlib

    text = f"{key.organization}/{key.name}/{key.federated_organization}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def reservable_name(bit: int, cloudlet: cloudletkey_pb2.CloudletKey) -> str:
    """`reservable<id>-<cloudletKeyHash>`."""
    return f"{RESERVABLE_PREFIX}{bit}-{cloudlet_key_hash(cloudlet)}"


# --- DNS ------------------------------------------------------------------------------------


def cloudlet_object_label_key(cloudlet_key_json: str, label: str) -> str:
    """`1/CloudletObjectDnsLabel/{"Cloudlet":<key>,"Label":"<label>"}`."""
    return f'{OBJECT_LABEL_PREFIX}{{"Cloudlet":{cloudlet_key_json},"Label":"{label}"}}'


def cluster_label_candidates(name: str, org: str) -> list[str]:
    """`<name>-<org>` sanitised, then with numeric suffixes on collision."""
    base = dns_sanitize(f"{name}-{org}")[:DNS_LABEL_MAX_LEN]
    return numbered_labels(base, DNS_LABEL_MAX_LEN, 100)


def cluster_fqdn(label: str, cloudlet_label: str, region: str, app_dns_root: str) -> str:
    """`<label>.<cloudletLabel>.<region>.<appDNSRoot>`."""
    return f"{label}.{cloudlet_label}.{hostname_sanitize(region)}.{app_dns_root}"


# --- resources ------------------------------------------------------------------------------


def select_infra_flavor(
    nodes: resources_pb2.NodeResources, flavors: Iterable[cloudlet_pb2.FlavorInfo]
) -> str:
    """The smallest infra flavor with enough vCPU, RAM and disk (§4.4).

    Returns:
        Its name, or `noderesources` on platforms without flavors.

    Raises:
        InvalidArgument: `no suitable infra flavor found for requested node resources, ...`.
    """
    candidates = sorted(flavors, key=lambda f: (f.vcpus, f.ram, f.disk, f.name))
    if not candidates:
        return "noderesources"
    short: dict[str, int] = {}
    for flavor in candidates:
        reasons = []
        if flavor.vcpus < nodes.vcpus:
            reasons.append("vcpu")
        if flavor.ram < nodes.ram:
            reasons.append("mem")
        if nodes.disk and flavor.disk and flavor.disk < nodes.disk:
            reasons.append("disk")
        if not reasons:
            return flavor.name
        for reason in reasons:
            short[reason] = short.get(reason, 0) + 1
    detail = ", ".join(f"{n} with not enough {r}" for r, n in sorted(short.items()))
    raise InvalidArgument(f"no suitable infra flavor found for requested node resources, {detail}")


def add_nodes(totals: dict[str, int], nodes: resources_pb2.NodeResources, count: int) -> None:
    totals[RES_VCPUS] = totals.get(RES_VCPUS, 0) + nodes.vcpus * count
    totals[RES_RAM] = totals.get(RES_RAM, 0) + nodes.ram * count
    totals[RES_DISK] = totals.get(RES_DISK, 0) + nodes.disk * count
    gpus = sum(g.count for g in nodes.gpus)
    if gpus:
        totals[RES_GPUS] = totals.get(RES_GPUS, 0) + gpus * count


def cluster_resources(
    cluster: ClusterInst, features: cloudlet_pb2.PlatformFeatures | None = None
) -> dict[str, int]:
    """What a cluster takes from its cloudlet (§4.1), by resource name."""
    totals: dict[str, int] = {}
    if cluster.deployment == "docker":
        add_nodes(totals, cluster.node_resources, 1)
        return totals
    managed = features is not None and features.kubernetes_managed_control_plane
    if not managed and cluster.num_masters:
        master = resources_pb2.NodeResources(vcpus=MASTER_VCPUS, ram=MASTER_RAM, disk=MASTER_DISK)
        add_nodes(totals, master, cluster.num_masters)
    for pool in cluster.node_pools:
        add_nodes(totals, pool.node_resources, pool.num_nodes)
    return totals


def used_resources(
    clusters: Iterable[ClusterInst],
    vm_nodes: Iterable[resources_pb2.NodeResources] = (),
    features: cloudlet_pb2.PlatformFeatures | None = None,
) -> dict[str, int]:
    """The cloudlet's theoretical usage: every cluster regardless of state, every VM app."""
    totals: dict[str, int] = {}
    for cluster in clusters:
        for name, value in cluster_resources(cluster, features).items():
            totals[name] = totals.get(name, 0) + value
    for nodes in vm_nodes:
        add_nodes(totals, nodes, 1)
    return totals


def limits(
    cloudlet: cloudlet_pb2.Cloudlet, info: cloudlet_pb2.CloudletInfo | None
) -> dict[str, int]:
    """Per-resource limit: the cloudlet's quota, else the infra maximum (0 = unlimited)."""
    out: dict[str, int] = {}
    if info is not None:
        for res in info.resources_snapshot.info:
            if res.infra_max_value:
                out[res.name] = res.infra_max_value
    for quota in cloudlet.resource_quotas:
        if quota.value:
            out[quota.name] = quota.value
    return out


def fit_resources(
    required: Mapping[str, int], used: Mapping[str, int], limit: Mapping[str, int]
) -> None:
    """The theoretical fit check of §4.2 (resources without a limit are not checked).

    Raises:
        ResourceExhausted: `not enough resources available: required <res> is <n><u> but only
            <a><u> out of <max><u> is available[, ...]`, resources sorted by name.
    """
    problems = []
    for name in sorted(required):
        want = required[name]
        maximum = limit.get(name, 0)
        if not want or not maximum:
            continue
        available = max(maximum - used.get(name, 0), 0)
        if want > available:
            unit = UNITS.get(name, "")
            problems.append(
                f"required {name} is {want}{unit} but only {available}{unit} out of "
                f"{maximum}{unit} is available"
            )
    if problems:
        raise ResourceExhausted(f"not enough resources available: {', '.join(problems)}")
