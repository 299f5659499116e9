"""Follow-on effects of Cloudlet and TrustPolicy changes on the AppInsts they host (issue 4).

The original applies these after (location) or inside (trust policy) the triggering update,
reading the AppInsts from its caches. Here each is one guarded etcd transaction over the
objects it reads, so a concurrent change to one of them makes it re-run on fresh data
instead of acting on a stale view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from edgeproto import (
    app_pb2,
    appinst_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    flavor_pb2,
    trustpolicy_pb2,
)

from edge_cloud.errors import AlreadyExists, EdgeError, FailedPrecondition, NotFound
from edge_cloud.objects import fields, keys, registry
from services.controller import _app, _cloudlet, _clusterinst
from services.controller._engine import Engine, Txn
from services.controller._inst_ops import ClusterInstOps
from services.controller._sync import Caches
from services.controller._tracked import CallContext, TrackedRuntime

__all__ = [
    "check_cloudlet_app_insts_trust",
    "check_cloudlets_using_trust_policy",
    "cloudlets_using_trust_policy",
    "default_mt_cluster_key",
    "default_mt_cluster_on_ready",
    "largest_cpu_flavor",
    "propagate_cloudlet_location",
    "schedule_default_mt_cluster",
    "update_default_mt_cluster",
]

log = logging.getLogger(__name__)

CLOUDLET: Final = registry.by_class(cloudlet_pb2.Cloudlet)
APP: Final = registry.by_class(app_pb2.App)
APP_INST: Final = registry.by_class(appinst_pb2.AppInst)


def _insts_on(caches: Caches, cloudlet_key: cloudletkey_pb2.CloudletKey) -> list[str]:
    """Key strings of the cached AppInsts on a cloudlet, sorted for stable transactions."""
    return sorted(key for key, inst in caches.items(APP_INST) if inst.cloudlet_key == cloudlet_key)


async def propagate_cloudlet_location(
    engine: Engine, cloudlet_key: cloudletkey_pb2.CloudletKey, updated: fields.FieldSet
) -> int:
    """Copy an updated cloudlet location onto the `cloudlet_loc` of its AppInsts.

    The DME ranks AppInsts by `cloudlet_loc`, so a moved cloudlet must move its instances.
    Run after the cloudlet update committed and the caches caught up with it: every AppInst
    created before that commit is then in the caches, and every later one copied the new
    location when it was created. The coordinates are read from the cloudlet inside the
    same transaction, so two racing location updates cannot leave the instances behind.

    Args:
        engine: The object engine.
        cloudlet_key: The updated cloudlet.
        updated: The field paths of the update; only the listed coordinates are copied
            (`location` itself means both), as in the original.

    Returns:
        How many AppInsts were changed (0 if the transaction failed; that is logged).
    """
    whole = updated.has(_cloudlet.LOCATION)
    latitude = whole or updated.has(_cloudlet.LATITUDE)
    longitude = whole or updated.has(_cloudlet.LONGITUDE)
    if not (latitude or longitude):
        return 0
    names = _insts_on(engine.caches, cloudlet_key)
    if not names:
        return 0

    def fn(txn: Txn) -> int:
        cloudlet = txn.get(CLOUDLET, cloudlet_key)
        if cloudlet is None:
            return 0  # deleted meanwhile: its AppInsts are gone or going too
        changed = 0
        for inst in txn.get_many(APP_INST, names):
            if inst is None or inst.cloudlet_key != cloudlet_key:
                continue
            before = (inst.cloudlet_loc.latitude, inst.cloudlet_loc.longitude)
            if latitude:
                inst.cloudlet_loc.latitude = cloudlet.location.latitude
            if longitude:
                inst.cloudlet_loc.longitude = cloudlet.location.longitude
            if before != (inst.cloudlet_loc.latitude, inst.cloudlet_loc.longitude):
                txn.put(inst)
                changed += 1
        return changed

    try:
        return await engine.apply(fn)
    except EdgeError as err:
        # the cloudlet update itself stands, as in the original, which only logs this
        log.warning(
            "could not update the AppInst locations of cloudlet %s: %s",
            keys.key_string(cloudlet_key),
            err,
        )
        return 0


def cloudlets_using_trust_policy(
    caches: Caches, policy_key: autoscalepolicy_pb2.PolicyKey
) -> list[str]:
    """Key strings of the cloudlets of the policy's organization that name it, sorted."""
    return sorted(
        key
        for key, cloudlet in caches.items(CLOUDLET)
        if cloudlet.key.organization == policy_key.organization
        and cloudlet.trust_policy == policy_key.name
    )


def check_cloudlet_app_insts_trust(
    txn: Txn,
    caches: Caches,
    cloudlet: cloudlet_pb2.Cloudlet,
    policy: trustpolicy_pb2.TrustPolicy,
) -> None:
    """Refuse unless every AppInst on `cloudlet` complies with `policy`.

    The AppInsts and their Apps are read in `txn`, so the caller's write commits only if
    none of them changed meanwhile (an App turned untrusted, a new outbound connection).

    Args:
        txn: The transaction the caller writes in.
        caches: For the cloudlet's AppInst keys and its zone pools' exceptions.
        cloudlet: The cloudlet as read in `txn`.
        policy: The policy it uses or is about to use.

    Raises:
        NotFound: An AppInst's App is missing.
        FailedPrecondition: The original's text for the first instance that does not comply.
    """
    for inst in txn.get_many(APP_INST, _insts_on(caches, cloudlet.key)):
        if inst is None or inst.cloudlet_key != cloudlet.key:
            continue
        app = txn.get(APP, inst.app_key)
        if app is None:
            raise keys.not_found(inst.app_key)
        _app._check_trust_policy(caches, cloudlet, app, policy)


def check_cloudlets_using_trust_policy(
    txn: Txn, caches: Caches, policy: trustpolicy_pb2.TrustPolicy
) -> None:
    """Refuse a policy change that an AppInst on a cloudlet using the policy would break.

    Args:
        txn: The transaction writing the policy.
        caches: The read side, for the cloudlets and their AppInsts.
        policy: The policy as it will be stored.

    Raises:
        FailedPrecondition: `AppInst on cloudlet <key> not compatible with trust policy - <why>`.
    """
    for name in cloudlets_using_trust_policy(caches, policy.key):
        cloudlet = txn.get(CLOUDLET, name)
        if cloudlet is None or cloudlet.trust_policy != policy.key.name:
            continue
        try:
            check_cloudlet_app_insts_trust(txn, caches, cloudlet, policy)
        except EdgeError as err:
            raise FailedPrecondition(
                f"AppInst on cloudlet {_app._go_text(cloudlet.key).strip()} not compatible "
                f"with trust policy - {err.message}"
            ) from err


# --- the default multi-tenant cluster ------------------------------------------------------

DEFAULT_MT_CLUSTER: Final = "defaultmtclust"
EDGE_CLOUD_ORG: Final = "edgecloudorg"
FLAVOR: Final = registry.by_class(flavor_pb2.Flavor)
PLATFORM_FEATURES: Final = registry.by_class(cloudlet_pb2.PlatformFeatures)
_pending: dict[tuple[int, str], bool] = {}
_tasks: set[asyncio.Task[None]] = set()

#: Seconds before each retry of a failed default-cluster run; then it waits for the next
#: trigger (the setting toggled, the cloudlet online again) and says so in the log.
RETRY_DELAYS: Final = (1.0, 2.0, 5.0, 15.0, 30.0)


def default_mt_cluster_key(cloudlet_key: cloudletkey_pb2.CloudletKey) -> cluster_pb2.ClusterKey:
    """The default multi-tenant cluster's key: `defaultmtclust-<cloudlet key hash>`.

    Of `edgecloudorg`; unique in the region, and the hash keeps the cloudlet's name from
    developers (the original's GetDefaultMTClustKey).
    """
    return cluster_pb2.ClusterKey(
        name=f"{DEFAULT_MT_CLUSTER}-{_clusterinst.cloudlet_key_hash(cloudlet_key)}",
        organization=EDGE_CLOUD_ORG,
    )


def largest_cpu_flavor(caches: Caches) -> flavor_pb2.Flavor:
    """The flavor with most vCPUs, then RAM, then disk, GPU flavors left out.

    The original sizes the default cluster's nodes this way; an empty flavor when there is
    none (the cluster create then refuses, and that is logged).
    """
    largest = flavor_pb2.Flavor()
    for _, flavor in sorted(caches.items(FLAVOR)):
        if "gpu" in flavor.key.name or "gpu" in flavor.opt_res_map:
            continue
        if (flavor.vcpus, flavor.ram, flavor.disk) > (largest.vcpus, largest.ram, largest.disk):
            largest = flavor
    return largest


def schedule_default_mt_cluster(
    rt: TrackedRuntime, cloudlet_key: cloudletkey_pb2.CloudletKey
) -> None:
    """Create or delete the cloudlet's default multi-tenant cluster in the background.

    The original's defaultMTClustWorkers: the cloudlet update does not wait for a cluster
    create, one run per cloudlet at a time, and a request during a run makes it run once
    more, so the last toggle wins.
    """
    slot = (id(rt), keys.key_string(cloudlet_key))
    if slot in _pending:
        _pending[slot] = True
        return
    _pending[slot] = False

    async def run() -> None:
        failures = 0
        try:
            while True:
                _pending[slot] = False
                try:
                    await update_default_mt_cluster(rt, cloudlet_key)
                    failures = 0
                except Exception as err:
                    # a CCRM that is down, caches that have not seen the cloudlet READY yet:
                    # worth another try; a run that succeeds elsewhere meanwhile makes the
                    # retry find the cluster there ("already exists": nothing to do)
                    if failures >= len(RETRY_DELAYS):
                        log.error(
                            "default multi-tenant cluster of %s still failing after %d "
                            "retries, waiting for the next change: %s",
                            slot[1],
                            failures,
                            err,
                        )
                    else:
                        delay = RETRY_DELAYS[failures]
                        failures += 1
                        log.warning(
                            "default multi-tenant cluster of %s failed, retry %d in %gs: %s",
                            slot[1],
                            failures,
                            delay,
                            err,
                        )
                        await asyncio.sleep(delay)
                        _pending[slot] = True
                if not _pending[slot]:
                    return
        finally:
            del _pending[slot]

    task = asyncio.get_running_loop().create_task(run())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def default_mt_cluster_on_ready(
    rt: TrackedRuntime, cloudlet_key: cloudletkey_pb2.CloudletKey
) -> bool:
    """A cloudlet came online: create its default cluster if the cloudlet asks for one.

    The original's CloudletInfo update does this, so a cloudlet created with
    `enable_default_serverless_cluster` gets its cluster once it can host one. Only the
    controller whose transaction moved the CloudletInfo to READY calls this; should two
    run it anyway, the cluster create's own transaction lets one of them win and the other
    sees "already exists".

    Returns:
        Whether a run was scheduled.
    """
    cloudlet = rt.caches.get(CLOUDLET, keys.key_string(cloudlet_key))
    if cloudlet is None or not cloudlet.enable_default_serverless_cluster:
        return False
    features = rt.caches.get(PLATFORM_FEATURES, cloudlet.platform_type)
    if features is None or not features.supports_multi_tenant_cluster:
        return False
    schedule_default_mt_cluster(rt, cloudlet_key)
    return True


async def update_default_mt_cluster(
    rt: TrackedRuntime, cloudlet_key: cloudletkey_pb2.CloudletKey
) -> None:
    """Make the default multi-tenant cluster match the cloudlet's setting now.

    Creates it (with its autoscale policy unless the platform cannot autoscale) when
    `enable_default_serverless_cluster` is set, deletes it otherwise; "already exists" and
    "not found" mean there is nothing to do. Other failures are raised for the caller
    to log: the cloudlet update that asked for this has already succeeded.
    """
    cloudlet = rt.caches.get(CLOUDLET, keys.key_string(cloudlet_key))
    if cloudlet is None or cloudlet.delete_prepare:
        return  # gone or going: its delete removes the cluster
    features = rt.caches.get(PLATFORM_FEATURES, cloudlet.platform_type)
    if features is None or not features.supports_multi_tenant_cluster:
        return
    key = default_mt_cluster_key(cloudlet_key)
    ops = ClusterInstOps(rt)
    if not cloudlet.enable_default_serverless_cluster:
        with contextlib.suppress(NotFound):
            await ops.delete_internal(
                CallContext(), clusterinst_pb2.ClusterInst(key=key), lambda _line: None
            )
        return
    cluster = clusterinst_pb2.ClusterInst(
        key=key,
        cloudlet_key=cloudlet_key,
        deployment="kubernetes",
        multi_tenant=True,
        num_masters=1,
    )
    if not features.no_kubernetes_cluster_auto_scale:
        policy = autoscalepolicy_pb2.AutoScalePolicy(
            key=autoscalepolicy_pb2.PolicyKey(organization=EDGE_CLOUD_ORG, name=key.name),
            target_cpu=70,
            target_mem=80,
            stabilization_window_sec=300,
            min_nodes=1,
            max_nodes=4,
        )
        with contextlib.suppress(AlreadyExists):
            await rt.engine.create(policy, plain=True)
        cluster.auto_scale_policy = key.name
    flavor = largest_cpu_flavor(rt.caches)
    pool = cluster.node_pools.add(Name=_clusterinst.FLAVOR_POOL, num_nodes=3)
    _clusterinst.node_from_flavor(pool.node_resources, flavor)
    with contextlib.suppress(AlreadyExists):
        await ops.create_internal(CallContext(), cluster, lambda _line: None)
