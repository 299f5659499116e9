"""ClusterInst rules of controller.md §3.8: pre-checks, defaults, IP access, node resources.

Pure functions over protos (no I/O), so the operations in `_inst_ops` can run them inside
guarded transactions and unit tests can check every message. Error texts are the original's.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from edgeproto import (
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    refs_pb2,
    resources_pb2,
    restagtable_pb2,
)

from edge_cloud.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from services.controller._cloudlet import hostname_sanitize
from services.controller._dns import dns_sanitize, numbered_labels

__all__ = [
    "EDGECLOUD_ORG",
    "ClusterInst",
    "VmSpec",
    "add_nodes",
    "allocate_ip",
    "check_cloudlet_support",
    "check_pools",
    "cloudlet_object_label_key",
    "cluster_fqdn",
    "cluster_label_candidates",
    "delta_resources",
    "fit_resources",
    "free_ip",
    "ip_access_default",
    "offered_resources",
    "precheck_user_create",
    "res_tag_tables",
    "reservable_name",
    "reserve_auto_cluster_id",
    "resolve_node_resources",
    "select_infra_flavor",
    "used_resources",
    "validate_cluster",
    "vm_spec",
]

ClusterInst = clusterinst_pb2.ClusterInst

EDGECLOUD_ORG: Final = "edgecloudorg"
RESERVABLE_PREFIX: Final = "reservable"
DEFAULT_CLUST_PREFIX: Final = "defaultclust"
MAX_NAME_LEN: Final = 40
DEFAULT_POOL: Final = "cpupool"
"""The pool an autocluster gets from an App's Kubernetes CPU resources."""
FLAVOR_POOL: Final = "defaultpool"
"""The pool a cluster created from a flavor gets (the original's `DefaultNodePoolName`)."""
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


def precheck_user_create(cluster: ClusterInst, *, registering: bool = False) -> None:
    """The user-facing create's extra checks; also forces `auto` off.

    Args:
        cluster: The requested cluster.
        registering: The create comes from RegisterCloudletManagedCluster, the only caller
            that may set the cloudlet-managed-cluster fields: a cluster with them skips node
            sizing and the resource check, so a user setting them would bypass quotas.

    Raises:
        InvalidArgument: Reserved name prefixes; cloudlet managed cluster fields set by a
            plain create.
    """
    if not registering and (
        cluster.cloudlet_managed_cluster_id or cluster.cloudlet_managed_cluster_name
    ):
        raise InvalidArgument(
            "cloudlet managed cluster fields are set by RegisterCloudletManagedCluster, "
            "not CreateClusterInst"
        )
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
            pool = cluster.node_pools.add(Name=FLAVOR_POOL, num_nodes=nodes)
            node_from_flavor(pool.node_resources, flavor)
            cluster.num_nodes = nodes
        elif not cluster.node_pools:
            raise InvalidArgument("missing flavor or node pools")
        check_pools(cluster)
        if cluster.num_nodes and len(cluster.node_pools) == 1:
            cluster.node_pools[0].num_nodes = cluster.num_nodes
        cluster.num_nodes = sum(p.num_nodes for p in cluster.node_pools)
        return
    if flavor is not None:
        if cluster.node_resources.vcpus:
            raise InvalidArgument("cannot specify both flavor and node resources")
        node_from_flavor(cluster.node_resources, flavor)
    elif not cluster.node_resources.vcpus:
        raise InvalidArgument("missing flavor or node resources")


def check_pools(cluster: ClusterInst) -> None:
    """Every node pool needs a name, nodes and vCPUs (create and update alike).

    Raises:
        InvalidArgument: The original's texts for the first pool that lacks one.
    """
    for pool in cluster.node_pools:
        if not pool.Name:
            raise InvalidArgument("pool  missing name")
        if pool.num_nodes == 0:
            raise InvalidArgument(f"pool {pool.Name} num nodes must be greater than 0")
        if pool.node_resources.vcpus == 0:
            raise InvalidArgument(f"pool {pool.Name} missing vcpus")


def node_from_flavor(nodes: resources_pb2.NodeResources, flavor: flavor_pb2.Flavor) -> None:
    """A node's size from a flavor: vCPUs, RAM, disk, GPUs and optional resources."""
    nodes.SetInParent()
    nodes.vcpus, nodes.ram, nodes.disk = flavor.vcpus, flavor.ram, flavor.disk
    del nodes.gpus[:]
    nodes.gpus.extend(flavor.gpus)
    nodes.opt_res_map.clear()
    nodes.opt_res_map.update(flavor.opt_res_map)


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


@dataclass(frozen=True)
class VmSpec:
    """The infra flavor chosen for requested node resources (the original's VMCreationSpec).

    Attributes:
        flavor_name: The infra flavor (`noderesources` on platforms without flavors).
        external_volume_size: Disk (GB) to allocate as a separate volume, for flavors that
            come without a disk.
        availability_zone: First availability zone whose name mentions `gpu`, when optional
            resources were requested (legacy behaviour kept for OpenStack).
        image_name: First OS image whose name mentions `gpu`, likewise.
    """

    flavor_name: str
    external_volume_size: int = 0
    availability_zone: str = ""
    image_name: str = ""


ResTagTables = Mapping[str, restagtable_pb2.ResTagTable]


def res_tag_tables(
    cloudlet: cloudlet_pb2.Cloudlet,
    lookup: Callable[[restagtable_pb2.ResTagTableKey], restagtable_pb2.ResTagTable | None],
) -> dict[str, restagtable_pb2.ResTagTable] | None:
    """The cloudlet's res-tag tables by resource name, None when it maps none.

    None and an empty dict differ as in the original: a cloudlet without a `res_tag_map`
    refuses every optional-resource request, one whose tables are gone only matches nothing.

    Args:
        cloudlet: The cloudlet whose `res_tag_map` names the tables.
        lookup: Reads one table (a transaction or the caches); None when it does not exist.
    """
    if not cloudlet.res_tag_map:
        return None
    out: dict[str, restagtable_pb2.ResTagTable] = {}
    for res, key in cloudlet.res_tag_map.items():
        table = lookup(key)
        if table is not None:
            out[res] = table
    return out


def _split_spec(text: str) -> list[str]:
    """A `type:count` / `type:spec:count` request or an `alias:count` property, split."""
    if ":" in text:
        return text.split(":")
    if "=" in text:  # VIO syntax
        return text.split("=")
    return [text]


def offered_resources(flavor: cloudlet_pb2.FlavorInfo, tables: ResTagTables | None) -> set[str]:
    """The optional resources an infra flavor offers, judged by the cloudlet's tag tables.

    A flavor offers a resource when one of its property values contains one of the
    resource table's tag values (e.g. property `pci_passthrough = "alias=t4gpu:1"` and tag
    `pci: t4gpu:1`).
    """
    offered: set[str] = set()
    if not flavor.prop_map or not tables:
        return offered
    for res, table in tables.items():
        for prop_val in flavor.prop_map.values():
            if any(tag_val in prop_val for tag_val in table.tags.values()):
                offered.add(res)
    return offered


def _opt_res_matches(
    request: str, flavor: cloudlet_pb2.FlavorInfo, table: restagtable_pb2.ResTagTable
) -> bool:
    """Whether the flavor's properties satisfy one optional-resource request (§8.3 step 4).

    `gpu:N` is a wildcard: any property whose key contains a tag key and whose count is at
    least N. `type:N` and `type:spec:N` must name a tag key, and the property must carry that
    tag's value (and the spec, if given) with a count of at least N.
    """
    parts = _split_spec(request)
    if len(parts) == 2:
        res_type, spec, count = parts[0], "", parts[1]
    elif len(parts) == 3:
        res_type, spec, count = parts
    else:
        return False
    try:
        wanted = int(count)
    except ValueError:
        return False
    if wanted <= 0:
        return False
    wildcard = len(parts) == 2 and res_type == "gpu"
    for tag_key, tag_val in table.tags.items():
        for prop_key, prop_val in flavor.prop_map.items():
            alias = _split_spec(prop_val)
            if len(alias) != 2:
                continue
            try:
                offered = int(alias[1].strip('"').strip("'"))
            except ValueError:
                continue
            if tag_key not in prop_key or offered < wanted:
                continue
            if wildcard:
                return True
            if res_type == tag_key and tag_val in prop_val and (not spec or spec in prop_val):
                return True
    return False


def _gpus_exact(
    wanted: Iterable[resources_pb2.GPUResource],
    offered: Iterable[resources_pb2.GPUResource],
    missing: dict[str, int],
    extra: dict[str, int],
) -> bool:
    """GPUs must match exactly by model and count, so no GPU is wasted (§8.3 step 3)."""
    provides: dict[str, int] = {}
    for gpu in offered:
        provides[gpu.model_id] = provides.get(gpu.model_id, 0) + gpu.count
    for req in wanted:
        have = provides.pop(req.model_id, 0)
        if req.count > have:
            missing[req.model_id] = missing.get(req.model_id, 0) + req.count - have
            return False
        if req.count < have:
            extra[req.model_id] = extra.get(req.model_id, 0) + have - req.count
            return False
    for model, count in provides.items():
        extra[model] = extra.get(model, 0) + count
    return not provides


def _check_gpu_request(
    nodes: resources_pb2.NodeResources, tables: ResTagTables | None, cloudlet_name: str
) -> None:
    """The legacy `gpu` optional resource needs a `gpu` table naming its type (§8.3 step 1)."""
    request = nodes.opt_res_map.get("gpu")
    if request is None:
        return
    if tables is None or "gpu" not in tables:
        raise InvalidArgument(f"Cloudlet {cloudlet_name} doesn't support GPU")
    parts = _split_spec(request)
    if len(parts) < 2:
        raise InvalidArgument(f"Invalid optresmap {request!r} in node resources")
    if not any(parts[0] in table.tags for table in tables.values()):
        raise InvalidArgument(
            f'cloudlet "{cloudlet_name}" doesn\'t support GPU resource "{parts[0]}"'
        )


def vm_spec(
    nodes: resources_pb2.NodeResources,
    info: cloudlet_pb2.CloudletInfo,
    tables: ResTagTables | None = None,
    *,
    cloudlet_name: str = "",
) -> VmSpec:
    """The smallest infra flavor that fits the node resources, as `resspec.GetVMSpec` (§8.3).

    Flavors are tried in (vCPUs, RAM, disk) order; the first with enough vCPUs, RAM and disk
    (a disk-less flavor gets an external volume), exactly the requested GPUs, and exactly the
    requested optional resources wins. Picking the smallest keeps big (GPU) flavors for the
    requests that need them; the exact GPU match keeps a CPU request off GPU hardware and a
    GPU request off hardware without it.

    Args:
        nodes: The requested resources (`infra_node_flavor` names a flavor explicitly).
        info: The cloudlet's report: flavors, availability zones, images.
        tables: The cloudlet's res-tag tables (`res_tag_tables`), None when it maps none.
        cloudlet_name: For error messages.

    Raises:
        InvalidArgument: `no suitable infra flavor found for requested node resources, <n>
            with not enough <res>, ...`, an unknown explicit flavor, or an optional resource
            the cloudlet cannot offer.
    """
    if not info.flavors:
        return VmSpec(flavor_name="noderesources")
    if nodes.infra_node_flavor:
        if not any(f.name == nodes.infra_node_flavor for f in info.flavors):
            raise InvalidArgument(
                f"Cloudlet flavor {nodes.infra_node_flavor} not found on cloudlet"
            )
        return VmSpec(
            flavor_name=nodes.infra_node_flavor,
            availability_zone=_first_named(info.availability_zones, "gpu"),
            image_name=_first_named(info.os_images, "gpu"),
        )
    _check_gpu_request(nodes, tables, cloudlet_name)
    if nodes.opt_res_map and tables is None:
        raise InvalidArgument(
            f"Optional resource requested, cloudlet {cloudlet_name} supports none"
        )
    candidates = sorted(info.flavors, key=lambda f: (f.vcpus, f.ram, f.disk, f.name))
    skipped: dict[str, int] = {}
    extra_gpus: dict[str, int] = {}
    extra_res = 0
    for flavor in candidates:
        short = ""
        if flavor.vcpus < nodes.vcpus:
            short = RES_VCPUS
        elif flavor.ram < nodes.ram:
            short = RES_RAM
        elif flavor.disk and flavor.disk < nodes.disk:
            short = RES_DISK
        if short:
            skipped[short] = skipped.get(short, 0) + 1
            continue
        if not _gpus_exact(nodes.gpus, flavor.gpus, skipped, extra_gpus):
            continue
        matched: set[str] = set()
        failed = ""
        for res, request in nodes.opt_res_map.items():
            table = (tables or {}).get(res)
            if table is None:
                continue
            if not _opt_res_matches(request, flavor, table):
                failed = res
                break
            matched.add(res)
        if failed:
            skipped[failed] = skipped.get(failed, 0) + 1
            continue
        if matched != offered_resources(flavor, tables):
            extra_res += 1
            continue
        optional = bool(nodes.opt_res_map)
        return VmSpec(
            flavor_name=flavor.name,
            external_volume_size=nodes.disk if flavor.disk == 0 else 0,
            availability_zone=_first_named(info.availability_zones, "gpu") if optional else "",
            image_name=_first_named(info.os_images, "gpu") if optional else "",
        )
    reasons = sorted(f"{n} with not enough {res}" for res, n in skipped.items())
    if extra_res:
        reasons.append(f"{extra_res} with optional resources not requested")
    reasons.extend(f"{n} with {model} not requested" for model, n in sorted(extra_gpus.items()))
    raise InvalidArgument(
        "no suitable infra flavor found for requested node resources, " + ", ".join(reasons)
    )


def _first_named(items: Iterable[Any], part: str) -> str:
    return next((i.name for i in items if part in i.name.lower()), "")


def select_infra_flavor(
    nodes: resources_pb2.NodeResources,
    flavors: Iterable[cloudlet_pb2.FlavorInfo],
    tables: ResTagTables | None = None,
    *,
    cloudlet_name: str = "",
) -> str:
    """The name of the infra flavor `vm_spec` chooses, for callers that need only that.

    Raises:
        InvalidArgument: As `vm_spec`.
    """
    info = cloudlet_pb2.CloudletInfo(flavors=list(flavors))
    return vm_spec(nodes, info, tables, cloudlet_name=cloudlet_name).flavor_name


def add_nodes(totals: dict[str, int], nodes: resources_pb2.NodeResources, count: int) -> None:
    totals[RES_VCPUS] = totals.get(RES_VCPUS, 0) + nodes.vcpus * count
    totals[RES_RAM] = totals.get(RES_RAM, 0) + nodes.ram * count
    totals[RES_DISK] = totals.get(RES_DISK, 0) + nodes.disk * count
    gpus = sum(g.count for g in nodes.gpus)
    if gpus:
        totals[RES_GPUS] = totals.get(RES_GPUS, 0) + gpus * count


@dataclass(frozen=True, slots=True)
class SiteSizing:
    """What only the cloudlet's CCRM knows about sizing, fetched before a transaction.

    Attributes:
        lb_flavor: The infra flavor a root LB VM takes ("" when the platform has none or
            it is not known, e.g. under a CRM override).
        extras: Platform counters (`Instances`, `Floating IPs`, ...) one VM of a
            (node type, infra flavor) adds, from the CCRM's `GetClusterAdditionalResources`.
    """

    lb_flavor: str = ""
    extras: Mapping[tuple[str, str], Mapping[str, int]] = dataclasses.field(default_factory=dict)


NO_SIZING: Final = SiteSizing()
RES_EXTERNAL_IPS: Final = "External IPs"
LB_NODE_TYPES: Final = frozenset({"sharedrootlb", "dedicatedrootlb"})
PLATFORM_NODE_TYPES: Final = frozenset(
    {
        "platformvm",
        "platformhost",
        "platform-k8s-cluster-master",
        "platform-k8s-cluster-primary-node",
        "platform-k8s-cluster-secondary-node",
    }
)


class Tally:
    """The VMs a set of clusters and VM apps take on one cloudlet, summed as §4.1 says.

    Nodes sized by an infra flavor the cloudlet reports count as whole units of that flavor
    (its full size, or `flavor/<name>` on flavor-counting platforms); other nodes count
    their requested size. Root LBs and platform VMs take one external IP each; the CCRM's
    per-VM extras are added per (node type, flavor).

    Args:
        features: The cloudlet's platform features (None: a plain VM platform).
        info: The cloudlet's CloudletInfo (None: requested sizes only).
        sizing: The CCRM's sizing facts for the cloudlet.
    """

    def __init__(
        self,
        features: cloudlet_pb2.PlatformFeatures | None,
        info: cloudlet_pb2.CloudletInfo | None = None,
        sizing: SiteSizing = NO_SIZING,
    ) -> None:
        self._features = features
        self._flavors = {f.name: f for f in info.flavors} if info is not None else {}
        self._sizing = sizing
        self.values: dict[str, int] = {}
        self.vms: dict[tuple[str, str], int] = {}
        self._ips = 0

    @property
    def managed(self) -> bool:
        """Whether the platform runs Kubernetes control planes itself (no masters, no LB)."""
        return self._features is not None and self._features.kubernetes_managed_control_plane

    def nodes(self, nodes: resources_pb2.NodeResources, node_type: str, count: int) -> None:
        """Count `count` VMs of a requested size (its infra flavor when the cloudlet has it)."""
        if count <= 0:
            return
        flavor = self._flavors.get(nodes.infra_node_flavor)
        if flavor is None:
            add_nodes(self.values, nodes, count)
            self.vms[(node_type, nodes.infra_node_flavor)] = (
                self.vms.get((node_type, nodes.infra_node_flavor), 0) + count
            )
            self._count_ips(node_type)
            return
        self.flavor(flavor, node_type, count)

    def flavor(self, flavor: cloudlet_pb2.FlavorInfo, node_type: str, count: int) -> None:
        """Count `count` VMs of an infra flavor."""
        if count <= 0:
            return
        if self._features is not None and self._features.resource_calc_by_flavor_counts:
            name = f"flavor/{flavor.name}"
            self.values[name] = self.values.get(name, 0) + count
        else:
            self.values[RES_VCPUS] = self.values.get(RES_VCPUS, 0) + flavor.vcpus * count
            self.values[RES_RAM] = self.values.get(RES_RAM, 0) + flavor.ram * count
            self.values[RES_DISK] = self.values.get(RES_DISK, 0) + flavor.disk * count
            gpus = sum(g.count for g in flavor.gpus)
            if gpus:
                self.values[RES_GPUS] = self.values.get(RES_GPUS, 0) + gpus * count
        self.vms[(node_type, flavor.name)] = self.vms.get((node_type, flavor.name), 0) + count
        self._count_ips(node_type)

    def _count_ips(self, node_type: str) -> None:
        # one per group of LB or platform VMs, as the original counts them
        if node_type in LB_NODE_TYPES or node_type in PLATFORM_NODE_TYPES:
            self._ips += 1

    def root_lb(self) -> None:
        """A dedicated root LB, when the platform has one and its flavor is known."""
        flavor = self._flavors.get(self._sizing.lb_flavor)
        if flavor is not None and not self.managed:
            self.flavor(flavor, "dedicatedrootlb", 1)

    def platform_vms(self, info: cloudlet_pb2.CloudletInfo | None) -> None:
        """The cloudlet's own VMs (CRM, Shepherd, shared LB) its snapshot reports."""
        if info is None:
            return
        for vm in info.resources_snapshot.platform_vms:
            flavor = self._flavors.get(vm.infraFlavor)
            if flavor is not None:
                self.flavor(flavor, vm.type, 1)

    def cluster(self, cluster: ClusterInst) -> None:
        """A ClusterInst's nodes, masters and dedicated root LB."""
        if cluster.deployment == "docker":
            self.nodes(cluster.node_resources, "docker-cluster-node", 1)
        else:
            if not self.managed and cluster.num_masters:
                master = resources_pb2.NodeResources(
                    vcpus=MASTER_VCPUS,
                    ram=MASTER_RAM,
                    disk=MASTER_DISK,
                    infra_node_flavor=cluster.master_node_flavor,
                )
                self.nodes(master, "k8s-cluster-master", cluster.num_masters)
            for pool in cluster.node_pools:
                self.nodes(pool.node_resources, "k8s-cluster-node", pool.num_nodes)
        if cluster.ip_access == TS.IP_ACCESS_DEDICATED:
            self.root_lb()

    def vm_app(self, nodes: resources_pb2.NodeResources) -> None:
        """A VM AppInst: its VM and the root LB in front of it."""
        self.nodes(nodes, "appvm", 1)
        self.root_lb()

    def totals(self) -> dict[str, int]:
        """Resource name → amount, external IPs and the CCRM's extras included."""
        out = dict(self.values)
        if self._ips:
            out[RES_EXTERNAL_IPS] = out.get(RES_EXTERNAL_IPS, 0) + self._ips
        for pair, count in self.vms.items():
            for name, value in self._sizing.extras.get(pair, {}).items():
                out[name] = out.get(name, 0) + value * count
        return out


def cluster_resources(
    cluster: ClusterInst,
    features: cloudlet_pb2.PlatformFeatures | None = None,
    *,
    info: cloudlet_pb2.CloudletInfo | None = None,
    sizing: SiteSizing = NO_SIZING,
) -> dict[str, int]:
    """What a cluster takes from its cloudlet (§4.1), by resource name."""
    tally = Tally(features, info, sizing)
    tally.cluster(cluster)
    return tally.totals()


def vm_app_resources(
    nodes: resources_pb2.NodeResources,
    features: cloudlet_pb2.PlatformFeatures | None = None,
    *,
    info: cloudlet_pb2.CloudletInfo | None = None,
    sizing: SiteSizing = NO_SIZING,
) -> dict[str, int]:
    """What a VM AppInst takes from its cloudlet (§4.1): its VM and its root LB."""
    tally = Tally(features, info, sizing)
    tally.vm_app(nodes)
    return tally.totals()


def delta_resources(new: Mapping[str, int], old: Mapping[str, int]) -> dict[str, int]:
    """What an update adds (new - old, growing resources only), for its fit check (§4.2).

    Checking only the growth lets a cloudlet that is already over a lowered quota still
    shrink or reshape its clusters.
    """
    return {name: new[name] - old.get(name, 0) for name in new if new[name] > old.get(name, 0)}


def used_resources(
    clusters: Iterable[ClusterInst],
    vm_nodes: Iterable[resources_pb2.NodeResources] = (),
    features: cloudlet_pb2.PlatformFeatures | None = None,
    *,
    info: cloudlet_pb2.CloudletInfo | None = None,
    sizing: SiteSizing = NO_SIZING,
) -> dict[str, int]:
    """The cloudlet's theoretical usage (§4.1): platform VMs, clusters in any state, VM apps."""
    tally = Tally(features, info, sizing)
    tally.platform_vms(info)
    for cluster in clusters:
        tally.cluster(cluster)
    for nodes in vm_nodes:
        tally.vm_app(nodes)
    return tally.totals()


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
