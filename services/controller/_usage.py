"""Resource usage and flavor mapping answers of the Controller (controller.md §4, §3.6, §3.7).

The RPCs `GetCloudletResourceUsage`, `ShowCloudletResourceUsage`, `ShowCloudletGPUUsage`,
`FindFlavorMatch`, `ShowFlavorsForZone`, `ShowZonesForAppDeployment` and
`ShowClusterResourceUsage` only read the caches:
they report, they never reserve. So that a report can never disagree with what a create would
decide, every number here comes from the same accounting the create transactions use
(`_clusterinst.used_resources`, `limits`, `fit_resources`, `select_infra_flavor`); this module
only gathers the inputs from the caches and shapes the answer as the original does:

- usage rows are `InfraResource`s sorted by resource key, limits merged in, limited but
  unused resources listed with value 0;
- `resource_score` is the original's average weighted free amount (vCPUs x1000, RAM MB x1)
  over the resources that have a limit, the maximum uint64 when none has.

The accounting (`_clusterinst.Tally`) counts platform VMs, whole infra flavors, root LBs,
External IPs, flavor-count platforms and the CCRM's per-VM counters (§4.1); the reports pass
it the cloudlet's CloudletInfo and the CCRM's sizing facts (`_sizing`) as the creates do.
Placement scores (`_inst_common.cloudlet_score`) leave out the CCRM's facts: no root LBs,
no counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    flavor_pb2,
    infraresources_pb2,
    refs_pb2,
    resources_pb2,
)

from edge_cloud.errors import EdgeError, InvalidArgument, NotFound
from edge_cloud.objects import keys, registry
from services.controller import _clusterinst
from services.controller._cloudlet import zone_key
from services.controller._cloudletinfo import CLOUDLET, CLOUDLET_INFO
from services.controller._clusterinst import NO_SIZING, SiteSizing
from services.controller._sync import Caches

__all__ = [
    "ResLimit",
    "cloudlet_gpu_usage",
    "cloudlet_members",
    "cloudlet_resource_usage",
    "cluster_resource_usage",
    "controller_used",
    "find_flavor_match",
    "flavors_for_zone",
    "resource_limits",
    "resource_score",
    "zones_for_app_deployment",
]

CLUSTER_INST: Final = registry.by_class(clusterinst_pb2.ClusterInst)
APP_INST: Final = registry.by_class(appinst_pb2.AppInst)
FLAVOR: Final = registry.by_class(flavor_pb2.Flavor)
CLOUDLET_REFS: Final = registry.by_class(refs_pb2.CloudletRefs)
CLUSTER_REFS: Final = registry.by_class(refs_pb2.ClusterRefs)
APP: Final = registry.by_class(app_pb2.App)
PLATFORM_FEATURES: Final = registry.by_class(cloudlet_pb2.PlatformFeatures)

RES_TYPE_GPU: Final = "gpu"
MAX_SCORE: Final = 2**64 - 1
# the original's resourceWeights: one vCPU weighs as much as 1000 MB of RAM
_WEIGHTS: Final = {_clusterinst.RES_VCPUS: 1000, _clusterinst.RES_RAM: 1}
DEFAULT_NUM_NODES: Final = 2


@dataclass
class ResLimit:
    """The limits of one resource: what the infra offers and what the operator allows.

    Attributes:
        name: Resource name (`vCPUs`, `RAM`, a GPU model, ...).
        res_type: `""` for common resources, `gpu` for GPU models.
        units: Display units (`MB`, `GB` or none).
        infra_max: Infra maximum (snapshot `infra_max_value` plus node-pool totals).
        quota_max: The cloudlet's quota.
        alert_threshold: Percentage above which usage is worth an alert (quotas only).
    """

    name: str
    res_type: str = ""
    units: str = ""
    infra_max: int = 0
    quota_max: int = 0
    alert_threshold: int = 0


def res_key(res_type: str, name: str) -> str:
    """The original's resource key: the bare name, or `<type>/<name>` for typed resources."""
    return f"{res_type}/{name}" if res_type else name


def _cloudlet_deps(
    caches: Caches, key: cloudletkey_pb2.CloudletKey
) -> tuple[cloudlet_pb2.Cloudlet, cloudlet_pb2.CloudletInfo]:
    """The cloudlet and its CloudletInfo, as the original's `InitDeps`.

    Raises:
        NotFound: `Cloudlet key ... not found`, or `cloudletInfo for Cloudlet key ... not found`.
    """
    cloudlet = caches.get(CLOUDLET, keys.key_string(key))
    if cloudlet is None:
        raise keys.not_found(key)
    info = caches.get(CLOUDLET_INFO, keys.key_string(key))
    if info is None:
        raise NotFound(f"cloudletInfo for {keys.not_found(key).message}")
    return cloudlet, info


def cloudlet_members(
    caches: Caches, cloudlet: cloudlet_pb2.Cloudlet
) -> tuple[list[clusterinst_pb2.ClusterInst], list[appinst_pb2.AppInst]]:
    """The ClusterInsts and VM AppInsts the cloudlet's refs hold (what the fit check counts)."""
    refs = caches.get(CLOUDLET_REFS, keys.key_string(cloudlet.key))
    if refs is None:
        return [], []
    clusters = [
        c
        for c in (caches.get(CLUSTER_INST, keys.key_string(k)) for k in refs.cluster_insts)
        if c is not None
    ]
    vm_apps = [
        a
        for a in (caches.get(APP_INST, keys.key_string(k)) for k in refs.vm_app_insts)
        if a is not None
    ]
    return clusters, vm_apps


def controller_used(
    caches: Caches, cloudlet: cloudlet_pb2.Cloudlet, sizing: SiteSizing = NO_SIZING
) -> dict[str, int]:
    """The Controller's own (theoretical) usage of a cloudlet, exactly as a create counts it."""
    clusters, vm_apps = cloudlet_members(caches, cloudlet)
    features = caches.get(PLATFORM_FEATURES, cloudlet.platform_type)
    info = caches.get(CLOUDLET_INFO, keys.key_string(cloudlet.key))
    return _clusterinst.used_resources(
        clusters, [a.node_resources for a in vm_apps], features, info=info, sizing=sizing
    )


def resource_limits(
    cloudlet: cloudlet_pb2.Cloudlet, info: cloudlet_pb2.CloudletInfo
) -> dict[str, ResLimit]:
    """Every limited resource of a cloudlet by resource key (infra maxima, node pools, quotas)."""
    out: dict[str, ResLimit] = {}

    def limit(name: str, res_type: str, units: str) -> ResLimit:
        found = out.get(res_key(res_type, name))
        if found is None:
            found = out[res_key(res_type, name)] = ResLimit(name, res_type, units)
        return found

    for res in info.resources_snapshot.info:
        if res.infra_max_value:
            limit(res.name, res.type, res.units).infra_max += res.infra_max_value
    # a Kubernetes cluster used as a cloudlet is limited by its node pools
    pool_totals: dict[str, int] = {}
    gpu_totals: dict[str, int] = {}
    for pool in info.node_pools:
        _clusterinst.add_nodes(pool_totals, pool.node_resources, pool.num_nodes)
        for gpu in pool.node_resources.gpus:
            gpu_totals[gpu.model_id] = gpu_totals.get(gpu.model_id, 0) + gpu.count * pool.num_nodes
    for name, value in pool_totals.items():
        limit(name, "", _clusterinst.UNITS.get(name, "")).infra_max += value
    for model, value in gpu_totals.items():
        limit(model, RES_TYPE_GPU, "").infra_max += value
    for quota in cloudlet.resource_quotas:
        if not quota.value and not quota.alert_threshold:
            continue
        entry = limit(quota.name, quota.resource_type, _clusterinst.UNITS.get(quota.name, ""))
        entry.quota_max += quota.value
        entry.alert_threshold = quota.alert_threshold or cloudlet.default_resource_alert_threshold
    return out


def saturate(value: int) -> int:
    """`value` capped at the uint64 maximum, for the proto fields that report usage.

    Python sums never overflow, but uint64 fields refuse bigger values: a few ClusterInsts
    of a flavor near the limit (valid one by one) would otherwise make the report fail with
    INTERNAL. The original's uint64 arithmetic wraps; a capped value is at least readable.
    """
    return min(value, MAX_SCORE)


def resource_score(
    cloudlet: cloudlet_pb2.Cloudlet, info: cloudlet_pb2.CloudletInfo, used: dict[str, int]
) -> int:
    """The original's free-resource score (higher is better), for comparing cloudlets.

    The limit of a resource is the lower of infra maximum and quota. Unlike the original, a
    zero maximum or quota means "unlimited" here (as in `_clusterinst.limits`), so an infra
    that reports no maximum does not score as full.
    """
    maxima: dict[str, int] = {}
    for res in info.resources_snapshot.info:
        if res.infra_max_value:
            maxima[res_key(res.type, res.name)] = res.infra_max_value
    for quota in cloudlet.resource_quotas:
        name = res_key(quota.resource_type, quota.name)
        if quota.value and (name not in maxima or maxima[name] > quota.value):
            maxima[name] = quota.value
    score = 0
    scored = 0
    for name, weight in _WEIGHTS.items():
        if name not in maxima:
            continue
        score += max(maxima[name] * weight - used.get(name, 0) * weight, 0)
        scored += 1
    return score // scored if scored else MAX_SCORE


def cloudlet_resource_usage(
    caches: Caches,
    key: cloudletkey_pb2.CloudletKey,
    infra_usage: bool,
    sizing: SiteSizing = NO_SIZING,
) -> cloudlet_pb2.CloudletResourceUsage:
    """GetCloudletResourceUsage: used values against limits, one row per resource.

    Args:
        caches: The Controller's caches.
        key: The cloudlet.
        infra_usage: True for what the infra reports (CloudletInfo resources snapshot), False
            for the Controller's own accounting of its ClusterInsts and VM AppInsts.
        sizing: The CCRM's sizing facts of the cloudlet (root LB flavor, platform counters).

    Raises:
        NotFound: The cloudlet or its CloudletInfo does not exist.
    """
    cloudlet, info = _cloudlet_deps(caches, key)
    rows: dict[str, infraresources_pb2.InfraResource] = {}
    if infra_usage:
        for res in info.resources_snapshot.info:
            name = res_key(res.type, res.name)
            row = rows.setdefault(
                name, infraresources_pb2.InfraResource(name=res.name, type=res.type)
            )
            row.value = saturate(row.value + res.value)
            row.units = res.units or row.units
            row.description = res.description or row.description
        used = {name: row.value for name, row in rows.items()}
    else:
        used = controller_used(caches, cloudlet, sizing)
        for name, value in used.items():
            rows[name] = infraresources_pb2.InfraResource(
                name=name, value=saturate(value), units=_clusterinst.UNITS.get(name, "")
            )
        # the total `GPUs` above, and per model as the original reports them
        for model, count in _gpus_used(caches, cloudlet).items():
            rows[res_key(RES_TYPE_GPU, model)] = infraresources_pb2.InfraResource(
                name=model, type=RES_TYPE_GPU, value=saturate(count)
            )
    for name, lim in resource_limits(cloudlet, info).items():
        row = rows.setdefault(
            name, infraresources_pb2.InfraResource(name=lim.name, type=lim.res_type)
        )
        row.units = row.units or lim.units
        row.infra_max_value = saturate(lim.infra_max)
        row.quota_max_value = saturate(lim.quota_max)
        row.alert_threshold = lim.alert_threshold
    usage = cloudlet_pb2.CloudletResourceUsage(
        key=cloudlet.key,
        infra_usage=infra_usage,
        resource_score=saturate(resource_score(cloudlet, info, used)),
    )
    usage.info.extend(rows[name] for name in sorted(rows))
    return usage


def _gpus_used(caches: Caches, cloudlet: cloudlet_pb2.Cloudlet) -> dict[str, int]:
    """GPUs by model that the cloudlet's clusters and VM apps take (the same nodes as the fit)."""
    counts: dict[str, int] = {}

    def add(nodes: resources_pb2.NodeResources, times: int) -> None:
        for gpu in nodes.gpus:
            counts[gpu.model_id] = counts.get(gpu.model_id, 0) + gpu.count * times

    clusters, vm_apps = cloudlet_members(caches, cloudlet)
    for cluster in clusters:
        if cluster.deployment == "docker":
            add(cluster.node_resources, 1)
        for pool in cluster.node_pools:
            add(pool.node_resources, pool.num_nodes)
    for app in vm_apps:
        add(app.node_resources, 1)
    return counts


def cloudlet_gpu_usage(
    caches: Caches, cloudlet: cloudlet_pb2.Cloudlet
) -> cloudlet_pb2.CloudletGPUUsage | None:
    """ShowCloudletGPUUsage for one cloudlet: per GPU model, used against limits.

    Returns:
        None when the cloudlet offers no GPU (its infra flavors and node pools list none) or
        has no CloudletInfo yet: the original leaves such cloudlets out of the stream.
    """
    info = caches.get(CLOUDLET_INFO, keys.key_string(cloudlet.key))
    if info is None:
        return None
    models: dict[str, resources_pb2.GPUResource] = {}
    for flavor in info.flavors:
        for gpu in flavor.gpus:
            models[gpu.model_id] = gpu
    for pool in info.node_pools:
        for gpu in pool.node_resources.gpus:
            models[gpu.model_id] = gpu
    if not models:
        return None
    used = _gpus_used(caches, cloudlet)
    limits = resource_limits(cloudlet, info)
    out = cloudlet_pb2.CloudletGPUUsage(key=cloudlet.key)
    for model in sorted(models):
        entry = out.gpus.add()
        entry.gpu.CopyFrom(models[model])
        entry.gpu.count = 0  # the model, not a count: the count is in `usage`
        entry.usage.name = model
        entry.usage.type = RES_TYPE_GPU
        entry.usage.value = saturate(used.get(model, 0))
        lim = limits.get(res_key(RES_TYPE_GPU, model))
        if lim is not None:
            entry.usage.infra_max_value = saturate(lim.infra_max)
            entry.usage.quota_max_value = saturate(lim.quota_max)
            entry.usage.alert_threshold = lim.alert_threshold
    return out


def _flavor_nodes(flavor: flavor_pb2.Flavor) -> resources_pb2.NodeResources:
    nodes = resources_pb2.NodeResources(vcpus=flavor.vcpus, ram=flavor.ram, disk=flavor.disk)
    for name, value in flavor.opt_res_map.items():
        nodes.opt_res_map[name] = value
    nodes.gpus.extend(flavor.gpus)
    return nodes


def find_flavor_match(
    caches: Caches, key: cloudletkey_pb2.CloudletKey, flavor_name: str
) -> cloudlet_pb2.FlavorMatch:
    """FindFlavorMatch: the infra flavor a Controller flavor maps to on a cloudlet.

    The match is `_clusterinst.select_infra_flavor`, the one cluster creates use, so the answer
    is the flavor a create would pick. A GPU flavor also names the first availability zone
    whose name mentions `gpu`, as the original.

    Raises:
        NotFound: Cloudlet, CloudletInfo or flavor missing; or `failed to find flavor match for
            <cloudlet>, no suitable infra flavor found ...` when no infra flavor is big enough.
    """
    cloudlet, info = _cloudlet_deps(caches, key)
    flavor_key = flavor_pb2.FlavorKey(name=flavor_name)
    flavor = caches.get(FLAVOR, keys.key_string(flavor_key))
    if flavor is None:
        raise keys.not_found(flavor_key)
    nodes = _flavor_nodes(flavor)
    try:
        infra_flavor = _clusterinst.select_infra_flavor(nodes, info.flavors)
    except InvalidArgument as err:
        raise NotFound(
            f"failed to find flavor match for {cloudlet.key.name}, {err.message}"
        ) from None
    match = cloudlet_pb2.FlavorMatch(key=cloudlet.key, flavor_name=infra_flavor)
    if nodes.gpus or any("gpu" in name.lower() for name in nodes.opt_res_map):
        for zone in info.availability_zones:
            if "gpu" in zone.name.lower():
                match.availability_zone = zone.name
                break
    return match


def flavors_for_zone(caches: Caches, zone: cloudletkey_pb2.ZoneKey) -> list[flavor_pb2.FlavorKey]:
    """ShowFlavorsForZone: the Controller flavors that map on at least one cloudlet of the zone.

    Empty fields of the zone key match anything, as the original's cloudlet filter.
    """
    cloudlets = [
        c
        for _, c in caches.items(CLOUDLET)
        if (not zone.organization or c.key.organization == zone.organization)
        and (
            not zone.federated_organization
            or c.key.federated_organization == zone.federated_organization
        )
        and (not zone.name or c.zone == zone.name)
    ]
    found: dict[str, flavor_pb2.FlavorKey] = {}
    flavors = [f for _, f in caches.items(FLAVOR)]
    for cloudlet in cloudlets:
        for flavor in flavors:
            name = keys.key_string(flavor.key)
            if name in found:
                continue
            try:
                find_flavor_match(caches, cloudlet.key, flavor.key.name)
            except NotFound:
                continue
            found[name] = flavor.key
    return [found[name] for name in sorted(found)]


def _dry_run_fits(
    caches: Caches,
    app: app_pb2.App,
    cloudlet: cloudlet_pb2.Cloudlet,
    flavor: flavor_pb2.Flavor,
    num_nodes: int,
) -> bool:
    """Whether an instance of `app` could be created on `cloudlet` now.

    As the original's `tryDeployApp`: a free reservable cluster of the deployment, or room for
    a new cluster (docker: one node; kubernetes: one master and `num_nodes` nodes) or the VM.
    """
    info = caches.get(CLOUDLET_INFO, keys.key_string(cloudlet.key))
    if info is None:
        return False
    deployment = "kubernetes" if app.deployment == "helm" else app.deployment
    features = caches.get(PLATFORM_FEATURES, cloudlet.platform_type)
    if deployment in ("kubernetes", "docker"):
        for _, cluster in caches.items(CLUSTER_INST):
            if (
                cluster.cloudlet_key == cloudlet.key
                and cluster.reservable
                and not cluster.reserved_by
                and cluster.deployment == deployment
            ):
                return True
        target = clusterinst_pb2.ClusterInst(deployment=deployment)
        if deployment == "kubernetes":
            target.num_masters = 1
            target.num_nodes = num_nodes
        try:
            _clusterinst.resolve_node_resources(target, flavor)
            required = _clusterinst.cluster_resources(target, features)
        except EdgeError:
            return False
    elif deployment == "vm":
        required = {}
        _clusterinst.add_nodes(required, _flavor_nodes(flavor), 1)
    else:
        return False
    try:
        _clusterinst.fit_resources(
            required, controller_used(caches, cloudlet), _clusterinst.limits(cloudlet, info)
        )
    except EdgeError:
        return False
    return True


def zones_for_app_deployment(
    caches: Caches, request: app_pb2.DeploymentZoneRequest
) -> list[cloudletkey_pb2.ZoneKey]:
    """ShowZonesForAppDeployment: zones where an instance of the App could go.

    A zone is listed when one of its cloudlets maps the App's default flavor and, with
    `dry_run_deploy`, has room for an instance now (`num_nodes` nodes, default 2, for a new
    Kubernetes cluster).

    Raises:
        InvalidArgument: `No flavor specified for App`; `No deployment found on candidate App`.
        NotFound: The App's default flavor does not exist.
    """
    app = request.app
    if not app.default_flavor.name:
        raise InvalidArgument("No flavor specified for App")
    flavor = caches.get(FLAVOR, keys.key_string(app.default_flavor))
    if flavor is None:
        raise keys.not_found(app.default_flavor)
    if request.dry_run_deploy and not app.deployment:
        raise InvalidArgument("No deployment found on candidate App")
    num_nodes = request.num_nodes or DEFAULT_NUM_NODES
    zones: dict[str, cloudletkey_pb2.ZoneKey] = {}
    for _, cloudlet in caches.items(CLOUDLET):
        zk = zone_key(cloudlet)
        if zk is None or keys.key_string(zk) in zones:
            continue
        try:
            find_flavor_match(caches, cloudlet.key, flavor.key.name)
        except NotFound:
            continue
        if request.dry_run_deploy and not _dry_run_fits(caches, app, cloudlet, flavor, num_nodes):
            continue
        zones[keys.key_string(zk)] = zk
    return [zones[name] for name in sorted(zones)]


# --- cluster usage (ShowClusterResourceUsage) -----------------------------------------------

_NANOS: Final = 1_000_000_000


def _add_gpus(totals: dict[str, int], gpus: Iterable[resources_pb2.GPUResource], n: int) -> None:
    for gpu in gpus:
        name = res_key(RES_TYPE_GPU, gpu.model_id)
        totals[name] = totals.get(name, 0) + gpu.count * n


def _add_node(totals: dict[str, int], nodes: resources_pb2.NodeResources, n: int) -> None:
    """Node resources times `n`; vCPUs in nano-vCPUs so pool requests keep their fractions."""
    totals[_clusterinst.RES_VCPUS] = (
        totals.get(_clusterinst.RES_VCPUS, 0) + nodes.vcpus * _NANOS * n
    )
    totals[_clusterinst.RES_RAM] = totals.get(_clusterinst.RES_RAM, 0) + nodes.ram * n
    totals[_clusterinst.RES_DISK] = totals.get(_clusterinst.RES_DISK, 0) + nodes.disk * n
    _add_gpus(totals, nodes.gpus, n)


def _add_pool_request(totals: dict[str, int], pool: resources_pb2.NodePoolResources) -> None:
    cpus = pool.total_vcpus.whole * _NANOS + pool.total_vcpus.nanos
    for name, value in (
        (_clusterinst.RES_VCPUS, cpus),
        (_clusterinst.RES_RAM, pool.total_memory),
        (_clusterinst.RES_DISK, pool.total_disk),
    ):
        if value:
            totals[name] = totals.get(name, 0) + value
    _add_gpus(totals, pool.total_gpus, 1)


def _infra_nodes(
    nodes: resources_pb2.NodeResources, flavors: Mapping[str, cloudlet_pb2.FlavorInfo]
) -> resources_pb2.NodeResources:
    """What a node really has: its infra flavor's size when it has one, else what was asked.

    The original skips the cluster when the infra flavor is not in the CloudletInfo; here the
    requested size stands in (it is what the fit check counted), so the cluster still shows.
    """
    flavor = flavors.get(nodes.infra_node_flavor)
    if flavor is None:
        return nodes
    out = resources_pb2.NodeResources(vcpus=flavor.vcpus, ram=flavor.ram, disk=flavor.disk)
    out.gpus.extend(flavor.gpus)
    return out


def _cluster_rows(
    used: Mapping[str, int], total: Mapping[str, int]
) -> list[infraresources_pb2.InfraResource]:
    """The original's `clusterResValToInfra`: used values, total as maximum, rows by name."""
    out = []
    for name in set(used) | set(total):
        res_type, _, res_name = name.rpartition("/")
        scale = _NANOS if name == _clusterinst.RES_VCPUS else 1
        out.append(
            infraresources_pb2.InfraResource(
                name=res_name,
                type=res_type,
                value=saturate(used.get(name, 0) // scale),
                infra_max_value=saturate(total.get(name, 0) // scale),
                units=_clusterinst.UNITS.get(name, ""),
            )
        )
    return sorted(out, key=lambda r: r.name)


def _free_score(used: Mapping[str, int], total: Mapping[str, int]) -> int:
    """The original's cluster score: the average weighted free amount of vCPUs and RAM."""
    score = 0
    scored = 0
    for name, weight in _WEIGHTS.items():
        if name not in total:
            continue
        free = max(total[name] - used.get(name, 0), 0) * weight
        score += free // _NANOS if name == _clusterinst.RES_VCPUS else free
        scored += 1
    return saturate(score // scored) if scored else 0


def _merged(*maps: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for values in maps:
        for name, value in values.items():
            out[name] = out.get(name, 0) + value
    return out


def cluster_resource_usage(
    caches: Caches, cluster: clusterinst_pb2.ClusterInst
) -> clusterinst_pb2.ClusterResourceUsage | None:
    """ShowClusterResourceUsage for one cluster: what its AppInsts take of what it has.

    Kubernetes clusters are split as the placement decides: CPU pools (no GPUs) against the
    instances' CPU-pool requests, GPU pools against their GPU-pool requests; docker and VM
    clusters compare the instances' node resources with the cluster's node. Sidecar apps are
    not counted, as in the AppInst placement (§4.3).

    Returns:
        None when the cloudlet has no CloudletInfo (the original leaves such clusters out).
    """
    info = caches.get(CLOUDLET_INFO, keys.key_string(cluster.cloudlet_key))
    if info is None:
        return None
    flavors = {f.name: f for f in info.flavors}
    refs = caches.get(CLUSTER_REFS, keys.key_string(cluster.key))
    insts = [
        (inst, caches.get(APP, keys.key_string(inst.app_key)))
        for inst in (caches.get(APP_INST, keys.key_string(k)) for k in (refs.apps if refs else ()))
        if inst is not None
    ]
    usage = clusterinst_pb2.ClusterResourceUsage(
        key=cluster.key, zone_key=cluster.zone_key, cloudlet_key=cluster.cloudlet_key
    )
    if cluster.reservable:
        usage.ReservedBy = cluster.reserved_by
    if cluster.deployment == "kubernetes":
        cpu_used: dict[str, int] = {}
        gpu_used: dict[str, int] = {}
        for inst, app in insts:
            if app is not None and _is_sidecar(app):
                continue
            _add_pool_request(cpu_used, inst.kubernetes_resources.cpu_pool)
            _add_pool_request(gpu_used, inst.kubernetes_resources.gpu_pool)
        cpu_total: dict[str, int] = {}
        gpu_total: dict[str, int] = {}
        for pool in cluster.node_pools:
            has_gpus = any(g.count for g in pool.node_resources.gpus)
            nodes = _infra_nodes(pool.node_resources, flavors)
            _add_node(gpu_total if has_gpus else cpu_total, nodes, pool.num_nodes)
        usage.cpu_pools_resources.extend(_cluster_rows(cpu_used, cpu_total))
        usage.gpu_pools_resources.extend(_cluster_rows(gpu_used, gpu_total))
        usage.cpu_pools_resource_score = _free_score(cpu_used, cpu_total)
        usage.gpu_pools_resource_score = _free_score(gpu_used, gpu_total)
        used = _merged(cpu_used, gpu_used)
        total = _merged(cpu_total, gpu_total)
    else:
        used = {}
        for inst, _ in insts:
            _add_node(used, inst.node_resources, 1)
        total = {}
        if cluster.HasField("node_resources"):
            _add_node(total, _infra_nodes(cluster.node_resources, flavors), 1)
    usage.total_resources.extend(_cluster_rows(used, total))
    usage.resource_score = _free_score(used, total)
    return usage


def _is_sidecar(app: app_pb2.App) -> bool:
    """The original's `IsSideCarApp`: a platform app that is deleted with its cluster."""
    return app.key.organization == _clusterinst.EDGECLOUD_ORG and app.del_opt == app_pb2.AUTO_DELETE
