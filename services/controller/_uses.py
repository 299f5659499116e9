"""Who uses an object: reverse lookups over the caches for the in-use checks of deletes.

Each function answers for one referenced type and raises `FailedPrecondition` with the
original's message naming the first user found (in key order, so the answer is stable).
They read only the caches: the delete-prepare protocol (see `_engine`) makes that safe.
Types served by later slices (Cloudlet, ClusterInst, App, AppInst) are already looked at, so
their objects are protected as soon as those slices store them.
"""

from __future__ import annotations

from typing import Final

from edgeproto import (
    alertpolicy_pb2,
    app_pb2,
    appinst_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    restagtable_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
    zonepool_pb2,
)

from edge_cloud.errors import FailedPrecondition
from edge_cloud.objects import registry
from services.controller._sync import Caches

__all__ = [
    "alert_policy_users",
    "app_users",
    "autoprov_policy_users",
    "autoscale_policy_users",
    "res_tag_table_users",
    "trust_policy_users",
    "zone_pool_users",
    "zone_users",
]

APP: Final = registry.by_class(app_pb2.App)
APP_INST: Final = registry.by_class(appinst_pb2.AppInst)
AUTOPROV: Final = registry.by_class(autoprovpolicy_pb2.AutoProvPolicy)
CLOUDLET: Final = registry.by_class(cloudlet_pb2.Cloudlet)
CLUSTER_INST: Final = registry.by_class(clusterinst_pb2.ClusterInst)
TPE: Final = registry.by_class(trustpolicyexception_pb2.TrustPolicyException)
ZONE_POOL: Final = registry.by_class(zonepool_pb2.ZonePool)


def zone_users(caches: Caches, zone: cloudletkey_pb2.ZoneKey) -> None:
    """Zone: AutoProvPolicies listing it, Cloudlets in it, ZonePools holding it."""
    policies = [k for k, p in caches.items(AUTOPROV) if any(z == zone for z in p.zones)]
    if policies:
        raise FailedPrecondition(f"zone in use by AutoProvPolicy {', '.join(policies)}")
    cloudlets = [
        c.key.name
        for _, c in caches.items(CLOUDLET)
        if c.key.organization == zone.organization
        and c.key.federated_organization == zone.federated_organization
        and c.zone == zone.name
    ]
    if cloudlets:
        raise FailedPrecondition(f"zone in use by cloudlets {', '.join(cloudlets)}")
    pools = [
        k
        for k, p in caches.items(ZONE_POOL)
        if p.key.organization == zone.organization and any(z == zone for z in p.zones)
    ]
    if pools:
        raise FailedPrecondition(f"zone in use by ZonePool {', '.join(pools)}")


def tpe_for_zone_pool(caches: Caches, pool: zonepool_pb2.ZonePoolKey) -> str | None:
    """The key string of a TrustPolicyException applied to the pool, or None."""
    for key, tpe in caches.items(TPE):
        if tpe.key.zone_pool_key == pool:
            return key
    return None


def zone_pool_users(caches: Caches, pool: zonepool_pb2.ZonePool) -> None:
    """ZonePool: TrustPolicyExceptions applied to it."""
    tpe = tpe_for_zone_pool(caches, pool.key)
    if tpe is not None:
        raise FailedPrecondition(f"ZonePool in use by Trust Policy Exception {tpe}")


def app_users(caches: Caches, app: app_pb2.App) -> None:
    """App: TrustPolicyExceptions naming it.

    Its AppInsts are checked by the delete itself, from AppInstRefs read in its first
    transaction (race-free, and they may be auto-deleted).
    """
    for key, tpe in caches.items(TPE):
        if tpe.key.app_key == app.key:
            raise FailedPrecondition(f"Application in use by Trust Policy Exception {key}")


def res_tag_table_users(caches: Caches, table: restagtable_pb2.ResTagTable) -> None:
    """ResTagTable: Cloudlets mapping a resource to it."""
    for key, cloudlet in caches.items(CLOUDLET):
        if any(ref == table.key for ref in cloudlet.res_tag_map.values()):
            raise FailedPrecondition(f"ResTagTable in use by Cloudlet {key}")


def autoprov_policy_users(caches: Caches, policy: autoprovpolicy_pb2.AutoProvPolicy) -> None:
    """AutoProvPolicy: Apps of the same organization naming it."""
    for key, app in caches.items(APP):
        if app.key.organization != policy.key.organization:
            continue
        if policy.key.name in (app.auto_prov_policy, *app.auto_prov_policies):
            raise FailedPrecondition(f"Policy in use by App {key}")


def autoscale_policy_users(caches: Caches, policy: autoscalepolicy_pb2.AutoScalePolicy) -> None:
    """AutoScalePolicy: ClusterInsts naming it (by name, as the original does)."""
    for key, cluster in caches.items(CLUSTER_INST):
        if cluster.auto_scale_policy == policy.key.name:
            raise FailedPrecondition(f"Policy in use by ClusterInst {key}")


def trust_policy_users(caches: Caches, policy: trustpolicy_pb2.TrustPolicy) -> None:
    """TrustPolicy: Cloudlets of the same organization using it, in any state."""
    for key, cloudlet in caches.items(CLOUDLET):
        if (
            cloudlet.key.organization == policy.key.organization
            and cloudlet.trust_policy == policy.key.name
        ):
            raise FailedPrecondition(f"Policy in use by Cloudlet {key}")


def alert_policy_users(caches: Caches, policy: alertpolicy_pb2.AlertPolicy) -> None:
    """AlertPolicy: Apps of the same organization listing it."""
    for key, app in caches.items(APP):
        if (
            app.key.organization == policy.key.organization
            and policy.key.name in app.alert_policies
        ):
            raise FailedPrecondition(f"Alert is in use by App {key}")
