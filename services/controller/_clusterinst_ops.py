"""ClusterInst create, update and delete (controller.md §3.8, §4, §5).

A create commits the object, `CloudletRefs` (cluster list, dynamic IP, reservable id bit)
and its DNS label in one guarded transaction after the resource fit against the cloudlet's
CloudletInfo and quotas; the worker (CCRM or CRM on the edge) then builds it. A delete
marks it, auto-deletes its auto-delete AppInsts, runs the worker and removes the object
with its refs in one transaction. See `_inst_common` for what both instance types share.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from edgeproto import (
    app_pb2,
    appinst_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    common_pb2,
    refs_pb2,
    resources_pb2,
)

from edge_cloud.errors import (
    AlreadyExists,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)
from edge_cloud.objects import fields, keys, registry
from services.controller import _alerts, _clusterinst, _ids
from services.controller._cloudlet import zone_key
from services.controller._cloudletinfo import CLOUDLET, CLOUDLET_INFO
from services.controller._clusterinst import NO_SIZING, SiteSizing
from services.controller._create_undo import gone_check, mark_cancelled, record_and_remove
from services.controller._engine import Txn
from services.controller._inst_common import (
    APP,
    APP_INST,
    AUTOSCALE,
    CLOUDLET_REFS,
    CLUSTER_ALL_FIELDS,
    CLUSTER_CREATE_WAIT,
    CLUSTER_CREATED,
    CLUSTER_DELETE_WAIT,
    CLUSTER_DELETED,
    CLUSTER_INST,
    CLUSTER_REFS,
    CLUSTER_STATE_FIELD,
    CLUSTER_UPDATE_WAIT,
    CLUSTER_UPDATED,
    FLAVOR,
    PLATFORM_FEATURES,
    InstOpsBase,
    NoFit,
    check_cloudlet_ready,
    cloudlet_res_tags,
    cloudlet_score,
    cloudlet_usable,
    copy_msg,
    receive_cluster_inst_info,
    store_key_of,
    zone_cloudlets,
)
from services.controller._progress import OpStream
from services.controller._sizing import sizer
from services.controller._tracked import (
    TRANSIENT,
    CallContext,
    Sink,
    seconds,
    validate_delete_state,
)

__all__ = ["ClusterInstOps"]

log = logging.getLogger(__name__)

TS = common_pb2

# §3.8: num_nodes, node_pools, autoscale policy, skip-cleanup flags, enable_ipv6,
# annotations, disable dynamic placement, managed-cluster id/name, single namespace, tags,
# crm_override
UPDATABLE_CLUSTER: Final = (
    "6", "14", "18", "26", "37", "42", "46", "49", "50", "51", "52", "53", "100"
)  # fmt: skip


def _refit_cluster(
    txn: Txn,
    stored: clusterinst_pb2.ClusterInst,
    merged: clusterinst_pb2.ClusterInst,
    sizing: SiteSizing = NO_SIZING,
) -> None:
    """Re-resolve and re-fit a kubernetes cluster whose nodes an update changes (§3.8, §4.2).

    Pools whose node resources changed get their infra flavor chosen again (a flavor name
    the request gives explicitly is kept, and must exist); the cloudlet must then hold what
    the update adds: only the growth is checked, so shrinking always succeeds.

    Raises:
        InvalidArgument: A pool without name, nodes or vCPUs, or no infra flavor fits.
        FailedPrecondition: The cloudlet has no CloudletInfo.
        ResourceExhausted: The growth does not fit the cloudlet's limits.
    """
    _clusterinst.check_pools(merged)
    merged.num_nodes = sum(p.num_nodes for p in merged.node_pools)
    cl = txn.require(CLOUDLET, merged.cloudlet_key)
    pf = txn.get(PLATFORM_FEATURES, cl.platform_type)
    info = txn.get(CLOUDLET_INFO, cl.key)
    if info is None:
        raise FailedPrecondition(
            f"No resource information found for Cloudlet {keys.key_string(cl.key)}"
        )
    tables = cloudlet_res_tags(txn, cl)
    old_pools = {p.Name: p for p in stored.node_pools}
    for pool in merged.node_pools:
        old = old_pools.get(pool.Name)
        if old is not None and old.node_resources == pool.node_resources:
            continue
        nodes = pool.node_resources
        if old is not None and nodes.infra_node_flavor == old.node_resources.infra_node_flavor:
            nodes.infra_node_flavor = ""  # chosen for the old size: choose again
        try:
            nodes.infra_node_flavor = _clusterinst.select_infra_flavor(
                nodes, info.flavors, tables, cloudlet_name=cl.key.name
            )
        except InvalidArgument as err:
            raise InvalidArgument(
                f"failed to select infra flavor for pool {pool.Name}, {err.message}"
            ) from None
    if merged.node_pools:
        merged.node_flavor = merged.node_pools[0].node_resources.infra_node_flavor
    refs = txn.get(CLOUDLET_REFS, cl.key) or refs_pb2.CloudletRefs(key=cl.key)
    members = [c for c in txn.peek_many(CLUSTER_INST, list(refs.cluster_insts)) if c is not None]
    others = [c for c in members if c.key != stored.key] + [stored]
    vm_apps = [a for a in txn.peek_many(APP_INST, list(refs.vm_app_insts)) if a]
    vm_nodes = [a.node_resources for a in vm_apps]
    used = _clusterinst.used_resources(others, vm_nodes, pf, info=info, sizing=sizing)
    growth = _clusterinst.delta_resources(
        _clusterinst.cluster_resources(merged, pf, info=info, sizing=sizing),
        _clusterinst.cluster_resources(stored, pf, info=info, sizing=sizing),
    )
    _clusterinst.fit_resources(growth, used, _clusterinst.limits(cl, info))


class ClusterInstOps(InstOpsBase):
    """ClusterInst create, update and delete (§3.8)."""

    async def create(
        self, request: clusterinst_pb2.ClusterInst, sink: Sink, *, registering: bool = False
    ) -> None:
        """CreateClusterInst: user pre-checks, then the internal create.

        `registering` marks RegisterCloudletManagedCluster's create, the one allowed to set
        the cloudlet-managed-cluster fields.
        """
        cluster = copy_msg(request)
        _clusterinst.precheck_user_create(cluster, registering=registering)
        await self.create_internal(CallContext(), cluster, sink)

    def _candidates(
        self, cctx: CallContext, cluster: clusterinst_pb2.ClusterInst, stream: OpStream
    ) -> list[cloudlet_pb2.Cloudlet]:
        caches = self._rt.caches
        if cluster.cloudlet_key.name:
            found = caches.get(CLOUDLET, keys.key_string(cluster.cloudlet_key))
            if found is None:
                raise keys.not_found(cluster.cloudlet_key)
            if not cctx.ignore_crm and not cloudlet_usable(caches, found):
                check_cloudlet_ready(caches, found.key)
            return [found]
        zone = cluster.zone_key
        cloudlets = zone_cloudlets(caches, zone)
        if not cloudlets:
            raise FailedPrecondition(f"no available edge sites in zone {zone.name}")
        out: list[cloudlet_pb2.Cloudlet] = []
        reasons: set[str] = set()
        for cl in cloudlets:
            features = caches.get(PLATFORM_FEATURES, cl.platform_type)
            reason = _clusterinst.check_cloudlet_support(
                cluster, features, cloudlet_usable(caches, cl)
            )
            if reason:
                reasons.add(reason)
                continue
            out.append(cl)
        if not out:
            if reasons:
                raise FailedPrecondition(
                    "no available edge sites in zone, some sites were skipped because "
                    f"{', '.join(sorted(reasons))}"
                )
            raise FailedPrecondition("no available edge sites in zone")
        out.sort(key=lambda c: (-cloudlet_score(caches, c), keys.key_string(c.key)))
        return out

    def _commit_fn(
        self,
        cctx: CallContext,
        cluster: clusterinst_pb2.ClusterInst,
        cloudlet_key: cloudletkey_pb2.CloudletKey,
        notes: list[str],
        *,
        auto_reservable: bool,
    ) -> Callable[[Txn], clusterinst_pb2.ClusterInst]:
        rt = self._rt
        cfg = rt.config
        settings = rt.settings()

        def commit(txn: Txn) -> clusterinst_pb2.ClusterInst:
            notes.clear()
            new = copy_msg(cluster)
            cl = txn.require(CLOUDLET, cloudlet_key)
            refs = txn.get(CLOUDLET_REFS, cl.key) or refs_pb2.CloudletRefs(key=cl.key)
            if auto_reservable:
                bit = _clusterinst.reserve_auto_cluster_id(refs)
                new.key.name = _clusterinst.reservable_name(bit, cl.key)
            existing = txn.get(CLUSTER_INST, new.key)
            if existing is not None:
                if not (existing.state == TS.DELETE_ERROR or cctx.undo or cctx.ignore_transient):
                    if existing.state == TS.CREATE_ERROR:
                        notes.append(f"Previous create failed, [{' '.join(existing.errors)}]")
                        notes.append("Use DeleteClusterInst to remove and try again")
                    raise keys.already_exists(new.key)
                # a re-create over a failed delete: drop the old bookkeeping first
                if existing.key in refs.cluster_insts:
                    _clusterinst.free_ip(existing, refs)
                    kept = [k for k in refs.cluster_insts if k != existing.key]
                    del refs.cluster_insts[:]
                    refs.cluster_insts.extend(kept)
                if existing.dns_label:
                    txn.delete_key(
                        _clusterinst.cloudlet_object_label_key(
                            keys.key_string(cl.key), existing.dns_label
                        )
                    )
                new.ClearField("errors")
            new.cloudlet_key.CopyFrom(cl.key)
            zk = zone_key(cl)
            if zk is not None:
                new.zone_key.CopyFrom(zk)
            pf = txn.get(PLATFORM_FEATURES, cl.platform_type)
            if pf is None:
                raise keys.not_found(cloudlet_pb2.PlatformFeatures(platform_type=cl.platform_type))
            if new.enable_ipv6 and new.deployment == "kubernetes":
                raise InvalidArgument("no support for IPv6 on Kubernetes yet")
            # a registered cloudlet-managed cluster exists already: nothing to size or fit
            managed = bool(new.cloudlet_managed_cluster_id or new.cloudlet_managed_cluster_name)
            if pf.kubernetes_managed_control_plane or managed:
                new.num_masters = 0
            flavor = None
            if new.flavor.name:
                flavor = txn.require(FLAVOR, new.flavor)
            if not managed:
                _clusterinst.resolve_node_resources(new, flavor)
            if new.auto_scale_policy:
                policy = txn.require(
                    AUTOSCALE,
                    autoscalepolicy_pb2.PolicyKey(
                        organization=new.key.organization, name=new.auto_scale_policy
                    ),
                )
                if new.deployment != "kubernetes":
                    raise InvalidArgument(
                        "Cannot add auto scale policy to non-kubernetes ClusterInst"
                    )
                nodes = min(max(new.num_nodes, policy.min_nodes), policy.max_nodes)
                if nodes != new.num_nodes and new.node_pools:
                    new.node_pools[0].num_nodes += nodes - new.num_nodes
                    new.num_nodes = nodes
            info = txn.get(CLOUDLET_INFO, cl.key)
            if info is None:
                raise FailedPrecondition(
                    f"No resource information found for Cloudlet {keys.key_string(cl.key)}"
                )
            _clusterinst.ip_access_default(new, cl, pf)
            tables = cloudlet_res_tags(txn, cl)
            for pool in new.node_pools:
                try:
                    pool.node_resources.infra_node_flavor = _clusterinst.select_infra_flavor(
                        pool.node_resources, info.flavors, tables, cloudlet_name=cl.key.name
                    )
                except InvalidArgument as err:
                    raise InvalidArgument(
                        f"failed to select infra flavor for pool {pool.Name}, {err.message}"
                    ) from None
            if new.deployment == "docker":
                new.node_resources.infra_node_flavor = _clusterinst.select_infra_flavor(
                    new.node_resources, info.flavors, tables, cloudlet_name=cl.key.name
                )
                new.node_flavor = new.node_resources.infra_node_flavor
            elif new.node_pools:
                new.node_flavor = new.node_pools[0].node_resources.infra_node_flavor
            if new.deployment == "kubernetes" and new.num_masters:
                if settings.master_node_flavor:
                    names = {f.name for f in info.flavors}
                    if info.flavors and settings.master_node_flavor not in names:
                        raise FailedPrecondition(
                            f'default master node flavor "{settings.master_node_flavor}" in '
                            "settings is not found, please contact your administrator"
                        )
                    new.master_node_flavor = settings.master_node_flavor
                else:
                    new.master_node_flavor = _clusterinst.select_infra_flavor(
                        resources_pb2.NodeResources(
                            vcpus=_clusterinst.MASTER_VCPUS,
                            ram=_clusterinst.MASTER_RAM,
                            disk=_clusterinst.MASTER_DISK,
                        ),
                        info.flavors,
                        tables,
                        cloudlet_name=cl.key.name,
                    )
            # resource fit (§4.2): every cluster in the refs regardless of state, VM apps
            # members of the guarded CloudletRefs, unguarded themselves: their resources
            # change only with a write of the refs (create, removal, `update`)
            others = [
                c
                for c in txn.peek_many(CLUSTER_INST, list(refs.cluster_insts))
                if c is not None and c.key != new.key
            ]
            vm_apps = [a for a in txn.peek_many(APP_INST, list(refs.vm_app_insts)) if a]
            sizing = sizer(rt).cached(keys.key_string(cl.key))
            used = _clusterinst.used_resources(
                others, [a.node_resources for a in vm_apps], pf, info=info, sizing=sizing
            )
            required = _clusterinst.cluster_resources(new, pf, info=info, sizing=sizing)
            try:
                _clusterinst.fit_resources(required, used, _clusterinst.limits(cl, info))
            except ResourceExhausted as err:
                raise NoFit(err.message) from None
            _alerts.commit_usage_alerts(txn, rt, cl, info, used, required)
            _clusterinst.allocate_ip(new, cl, pf, refs)
            refs.cluster_insts.append(new.key)
            label = ""
            for candidate in _clusterinst.cluster_label_candidates(
                new.key.name, new.key.organization
            ):
                label_key = _clusterinst.cloudlet_object_label_key(
                    keys.key_string(cl.key), candidate
                )
                if not txn.has_key(label_key):
                    label = candidate
                    break
            if not label:
                raise InvalidArgument(
                    "Unable to compute unique DNS label for ClusterInst, please change key values"
                )
            new.dns_label = label
            new.fqdn = _clusterinst.cluster_fqdn(label, cl.dns_label, cfg.region, cfg.app_dns_root)
            new.static_fqdn = new.fqdn
            now = _ids.now_timestamp()
            new.created_at.CopyFrom(now)
            if new.reservable and not new.reserved_by:
                new.reservation_ended_at.CopyFrom(now)
            new.obj_id = _ids.ulid()
            new.state = TS.READY if cctx.ignore_crm else TS.CREATE_REQUESTED
            new.delete_prepare = False
            txn.put(new)
            txn.put(refs)
            txn.put_key(
                _clusterinst.cloudlet_object_label_key(keys.key_string(cl.key), label),
                label.encode(),
            )
            return new

        return commit

    def _commit_reads(
        self,
        cluster: clusterinst_pb2.ClusterInst,
        cloudlet: cloudlet_pb2.Cloudlet,
        *,
        auto_reservable: bool,
    ) -> list[str]:
        """What the commit on `cloudlet` will read, fetched in one round.

        A guess from the request: a miss costs one more read round, never correctness.
        """
        reads = [
            store_key_of(CLOUDLET, cloudlet.key),
            store_key_of(CLOUDLET_REFS, cloudlet.key),
            store_key_of(CLOUDLET_INFO, cloudlet.key),
            store_key_of(PLATFORM_FEATURES, cloudlet.platform_type),
        ]
        if cluster.flavor.name:
            reads.append(store_key_of(FLAVOR, cluster.flavor))
        if not auto_reservable:
            reads.append(store_key_of(CLUSTER_INST, cluster.key))
            labels = _clusterinst.cluster_label_candidates(
                cluster.key.name, cluster.key.organization
            )
            if labels:
                reads.append(
                    _clusterinst.cloudlet_object_label_key(keys.key_string(cloudlet.key), labels[0])
                )
        return reads

    async def create_internal(
        self,
        cctx: CallContext,
        cluster: clusterinst_pb2.ClusterInst,
        sink: Sink,
        *,
        auto_reservable: bool = False,
        on_commit: Callable[[clusterinst_pb2.ClusterInst], Awaitable[None]] | None = None,
    ) -> clusterinst_pb2.ClusterInst:
        """The internal create (also autoclusters): commit on a candidate cloudlet, then work.

        Args:
            cctx: The call context.
            cluster: The cluster; for `auto_reservable` its name is chosen in the commit.
            sink: Progress lines.
            auto_reservable: Name it `reservable<id>-<hash>` with a fresh id bit.
            on_commit: Told the committed cluster before the worker runs.

        Returns:
            The committed cluster.
        """
        rt = self._rt
        cctx.take_override(cluster)
        _clusterinst.validate_cluster(cluster)
        stream_obj = self._stream(cctx, cluster.key, sink)
        candidates = self._candidates(cctx, cluster, stream_obj)
        notes: list[str] = []
        failures: list[str] = []
        committed: tuple[clusterinst_pb2.ClusterInst, int | None] | None = None
        for cl in candidates:
            try:
                if not cctx.ignore_crm:
                    await sizer(rt).prepare(rt.caches, cl)
                committed = await rt.engine.apply_at(
                    self._commit_fn(cctx, cluster, cl.key, notes, auto_reservable=auto_reservable),
                    reads=self._commit_reads(cluster, cl, auto_reservable=auto_reservable),
                    serialize=[store_key_of(CLOUDLET_REFS, cl.key)],
                    from_caches=True,
                )
                break
            except NoFit as err:
                failures.append(err.message)
            except AlreadyExists:
                for note in notes:
                    await stream_obj.send(note)
                raise
        if committed is None:
            if len(failures) == 1:
                raise ResourceExhausted(failures[0])
            for i, failure in enumerate(failures):
                await stream_obj.send(f"potential cloudlet {i} {failure}")
            raise ResourceExhausted("not enough resources available to create the cluster")
        stored, revision = committed
        if auto_reservable:
            stream_obj = self._stream(cctx, stored.key, sink)
        if on_commit is not None:
            await on_commit(stored)
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(stored.cloudlet_key))
        on_edge = cloudlet is not None and cloudlet.crm_on_edge
        stream = stream_obj

        async def work() -> None:
            if cctx.ignore_crm:
                await stream.send(CLUSTER_CREATED)
                return
            try:
                await self._apply(stored, TS.CREATE_REQUESTED, CLUSTER_ALL_FIELDS, stream, on_edge)
            except EdgeError as err:
                if cctx.ignore_crm_errors:
                    await stream.send(f"Create ClusterInst ignoring CRM failure: {err.message}")
                    await self._set_state(CLUSTER_INST, stored.key, TS.READY)
                else:
                    raise
            await stream.send(CLUSTER_CREATED)

        async def on_error(err: BaseException) -> None:
            if await mark_cancelled(self._set_state, CLUSTER_INST, stored.key, err):
                return
            await record_and_remove(
                self._set_state,
                CLUSTER_INST,
                stored.key,
                err,
                stream,
                "DELETING ClusterInst due to failures",
                functools.partial(self._remove, stored.key),
                log,
                "cluster",
            )

        await self._run(
            stream,
            revision,
            work,
            on_error=on_error,
            cleanup_on_error=gone_check(rt, CLUSTER_INST, stored.key),
            subscribe=on_edge and not cctx.ignore_crm,
        )
        return stored

    async def _apply(
        self,
        cluster: clusterinst_pb2.ClusterInst,
        state: int,
        paths: list[str],
        stream: OpStream,
        on_edge: bool,
    ) -> None:
        """Run the worker for a requested state; returns when it reached its target."""
        rt = self._rt
        settings = rt.settings()
        if state == TS.CREATE_REQUESTED:
            wait, timeout = CLUSTER_CREATE_WAIT, settings.create_cluster_inst_timeout
        elif state == TS.UPDATE_REQUESTED:
            wait, timeout = CLUSTER_UPDATE_WAIT, settings.update_cluster_inst_timeout
        else:
            wait, timeout = CLUSTER_DELETE_WAIT, settings.delete_cluster_inst_timeout
        await self._run_worker(
            CLUSTER_INST,
            cluster,
            state,
            paths,
            stream,
            on_edge=on_edge,
            wait=wait,
            timeout=seconds(timeout),
            info_type=registry.by_class(clusterinst_pb2.ClusterInstInfo),
            receive=receive_cluster_inst_info,
            ccrm_apply=rt.tracked.ccrm.apply_cluster_inst,
        )

    async def _remove(self, key: cluster_pb2.ClusterKey) -> None:
        """Delete the object with its refs, IP, id bit and DNS label, in one transaction."""

        def remove(txn: Txn) -> None:
            current = txn.get(CLUSTER_INST, key)
            if current is None:
                return
            refs = txn.get(CLOUDLET_REFS, current.cloudlet_key)
            if refs is not None:
                _clusterinst.free_ip(current, refs)
                kept = [k for k in refs.cluster_insts if k != current.key]
                del refs.cluster_insts[:]
                refs.cluster_insts.extend(kept)
                if current.auto and current.reservable:
                    _clusterinst.release_auto_cluster_id(current.key.name, refs)
                txn.put(refs)
                _alerts.refresh_in_commit(txn, self._rt, refs, _alerts.cluster_tags(current))
            if current.dns_label:
                txn.delete_key(
                    _clusterinst.cloudlet_object_label_key(
                        keys.key_string(current.cloudlet_key), current.dns_label
                    )
                )
            if txn.get(CLUSTER_REFS, key) is not None:
                txn.delete(CLUSTER_REFS, key)
            txn.delete(CLUSTER_INST, key)

        cached = self._rt.caches.get(CLUSTER_INST, keys.key_string(key))
        turns = [] if cached is None else [store_key_of(CLOUDLET_REFS, cached.cloudlet_key)]
        reads = [store_key_of(CLUSTER_INST, key), store_key_of(CLUSTER_REFS, key), *turns]
        await self._rt.engine.apply_at(remove, reads=reads, serialize=turns, from_caches=True)

    async def delete(self, request: clusterinst_pb2.ClusterInst, sink: Sink) -> None:
        """DeleteClusterInst: in-use and state checks, delete-prepare, worker, removal."""
        await self.delete_internal(CallContext(), copy_msg(request), sink)

    async def delete_internal(
        self, cctx: CallContext, request: clusterinst_pb2.ClusterInst, sink: Sink
    ) -> None:
        """The delete, also used for idle reservable clusters and autocluster undo."""
        rt = self._rt
        cctx.take_override(request)
        key = copy_msg(request.key)
        if not key.name or not key.organization:
            raise InvalidArgument(
                "Invalid cluster name" if not key.name else "Invalid cluster organization"
            )
        current = rt.caches.get(CLUSTER_INST, keys.key_string(key))
        if current is None:
            raise keys.not_found(key)
        if not (cctx.ignore_crm or cctx.undo or cctx.skip_cloudlet_ready_check):
            check_cloudlet_ready(rt.caches, current.cloudlet_key, deleting=True)
        stream = self._stream(cctx, key, sink)
        previous: list[int] = []
        auto_delete: list[appinst_pb2.AppInstKey] = []

        def mark(txn: Txn) -> clusterinst_pb2.ClusterInst:
            previous.clear()
            cluster = txn.get(CLUSTER_INST, key)
            if cluster is None:
                raise keys.not_found(key)
            if not cctx.ignore_transient and cluster.delete_prepare:
                raise keys.being_deleted(key)
            validate_delete_state(cctx, "ClusterInst", cluster.state)
            crefs = txn.get(CLUSTER_REFS, key)
            auto_delete.clear()
            if crefs is not None and crefs.apps and not cctx.undo:
                users = txn.get_many(APP_INST, list(crefs.apps))
                for user_key, user in zip(crefs.apps, users, strict=True):
                    if user is None:
                        continue
                    user_app = txn.get(APP, user.app_key)
                    if user_app is not None and user_app.del_opt == app_pb2.AUTO_DELETE:
                        auto_delete.append(copy_msg(user_key))
                        continue
                    raise FailedPrecondition(
                        f"ClusterInst in use by AppInst {keys.key_string(user_key)}"
                    )
            previous.append(cluster.state)
            cluster.delete_prepare = True
            cluster.state = TS.DELETE_PREPARE
            txn.put(cluster)
            return cluster

        cluster, revision = await rt.engine.apply_at(mark)
        prev_state = previous[0]
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(cluster.cloudlet_key))
        on_edge = cloudlet is not None and cloudlet.crm_on_edge

        async def work() -> None:
            if auto_delete:
                from services.controller._appinst_ops import AppInstOps

                apps = AppInstOps(rt, self)
                for inst_key in auto_delete:
                    await stream.send(f"Deleting auto-delete AppInst {inst_key.name}")
                    sub = CallContext(
                        override=TS.IGNORE_CRM_ERRORS
                        if not cctx.ignore_crm
                        else TS.IGNORE_CRM_AND_TRANSIENT_STATE,
                        skip_cloudlet_ready_check=True,
                    )
                    await apps.delete_internal(sub, appinst_pb2.AppInst(key=inst_key), sink)
            if not cctx.ignore_crm and not cctx.undo:
                await self._set_state(CLUSTER_INST, key, TS.DELETE_REQUESTED)
                try:
                    await self._apply(
                        cluster, TS.DELETE_REQUESTED, [CLUSTER_STATE_FIELD], stream, on_edge
                    )
                except EdgeError as err:
                    if not cctx.ignore_crm_errors:
                        raise
                    await stream.send(f"Delete ClusterInst ignoring CRM failure: {err.message}")
            await self._remove(key)
            await stream.send(CLUSTER_DELETED)

        async def on_error(err: BaseException) -> None:
            if not isinstance(err, asyncio.CancelledError):
                await stream.send("Recreating ClusterInst due to failure")
            try:
                await self._set_state(CLUSTER_INST, key, prev_state, errors=[], clear_prepare=True)
            except EdgeError as undo_err:
                log.warning("could not undo delete of %s: %s", key, undo_err)

        await self._run(
            stream,
            revision,
            work,
            on_error=on_error,
            cleanup_on_success=True,
            subscribe=on_edge and not cctx.ignore_crm and not cctx.undo,
        )

    async def update(self, request: clusterinst_pb2.ClusterInst, sink: Sink) -> None:
        """UpdateClusterInst: the listed updatable fields; worker run when anything changed."""
        rt = self._rt
        cctx = CallContext()
        req = copy_msg(request)
        cctx.take_override(req)
        paths = [p for p in req.fields if p != "6"]
        if not paths:
            raise InvalidArgument("nothing specified to update")
        fields.check_updatable(paths, UPDATABLE_CLUSTER, clusterinst_pb2.ClusterInst.DESCRIPTOR)
        key = req.key
        current = rt.caches.get(CLUSTER_INST, keys.key_string(key))
        if current is None:
            raise keys.not_found(key)
        cloudlet_ks = keys.key_string(current.cloudlet_key)
        if not cctx.ignore_crm:
            check_cloudlet_ready(rt.caches, current.cloudlet_key)
            cloudlet = rt.caches.get(CLOUDLET, cloudlet_ks)
            if cloudlet is not None:
                await sizer(rt).prepare(rt.caches, cloudlet)
        stream = self._stream(cctx, key, sink)
        notes: list[str] = []

        def commit(txn: Txn) -> clusterinst_pb2.ClusterInst | None:
            notes.clear()
            stored = txn.get(CLUSTER_INST, key)
            if stored is None:
                raise keys.not_found(key)
            if stored.delete_prepare:
                raise keys.being_deleted(key)
            merged = copy_msg(stored)
            fields.apply_fields(merged, req, paths)
            if merged.deployment != "kubernetes":
                if merged.auto_scale_policy != stored.auto_scale_policy:
                    raise InvalidArgument(
                        "Cannot add auto scale policy to non-kubernetes ClusterInst"
                    )
                if merged.num_nodes != stored.num_nodes:
                    raise InvalidArgument("Cannot update number of nodes in non-kubernetes cluster")
                if list(merged.node_pools) != list(stored.node_pools):
                    raise InvalidArgument("Cannot update node pools in non-kubernetes cluster")
            elif merged.num_nodes != stored.num_nodes and len(merged.node_pools) == 1:
                merged.node_pools[0].num_nodes = merged.num_nodes
            if "37" in paths and req.enable_ipv6:
                cl = txn.require(CLOUDLET, stored.cloudlet_key)
                pf = txn.get(PLATFORM_FEATURES, cl.platform_type)
                if pf is None or not pf.supports_ipv6:
                    raise InvalidArgument("cloudlet platform does not support IPv6")
            if merged.enable_ipv6 != stored.enable_ipv6 and merged.deployment == "kubernetes":
                raise InvalidArgument("cannot change IPv6 setting on Kubernetes clusters")
            if merged == stored:
                return None
            if stored.state == TS.UPDATE_ERROR:
                notes.append(f"previous update failed, [{' '.join(stored.errors)}], trying again")
            elif stored.state != TS.READY:
                raise FailedPrecondition("ClusterInst busy, cannot update")
            if merged.deployment == "kubernetes" and (
                merged.num_nodes != stored.num_nodes or merged.node_pools != stored.node_pools
            ):
                _refit_cluster(txn, stored, merged, sizer(rt).cached(cloudlet_ks))
            merged.updated_at.CopyFrom(_ids.now_timestamp())
            merged.state = TS.READY if cctx.ignore_crm else TS.UPDATE_REQUESTED
            txn.put(merged)
            refs = txn.get(CLOUDLET_REFS, stored.cloudlet_key)
            if refs is not None:
                # Rewritten as is: a concurrent create on the cloudlet that fitted itself
                # against the old node counts (read unguarded) fails on the refs and re-runs.
                txn.put(refs)
            return merged

        updated, revision = await rt.engine.apply_at(commit)
        for note in notes:
            await stream.send(note)
        if updated is None:
            await stream.send(CLUSTER_UPDATED)
            return
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(updated.cloudlet_key))
        on_edge = cloudlet is not None and cloudlet.crm_on_edge

        async def work() -> None:
            if not cctx.ignore_crm:
                await self._apply(updated, TS.UPDATE_REQUESTED, paths, stream, on_edge)
            await stream.send(CLUSTER_UPDATED)

        async def on_error(err: BaseException) -> None:
            message = err.message if isinstance(err, EdgeError) else str(err)
            await self._set_state(
                CLUSTER_INST, key, TS.UPDATE_ERROR, errors=[message], only_from=TRANSIENT
            )

        await self._run(
            stream, revision, work, on_error=on_error, subscribe=on_edge and not cctx.ignore_crm
        )

    async def delete_idle_reservable(self, idle_ns: int) -> None:
        """Delete auto reservable clusters unreserved for at least `idle_ns`."""
        now = time.time_ns()
        for _, cluster in self._rt.caches.items(CLUSTER_INST):
            if not (cluster.auto and cluster.reservable) or cluster.reserved_by:
                continue
            if cluster.state != TS.READY or cluster.delete_prepare:
                continue
            ended = cluster.reservation_ended_at
            ended_ns = ended.seconds * 1_000_000_000 + ended.nanos
            if now - ended_ns < idle_ns:
                continue
            try:
                await self.delete_internal(CallContext(), copy_msg(cluster), lambda _line: None)
            except EdgeError as err:
                log.info("idle reservable cluster %s not deleted: %s", cluster.key, err)


# --- AppInst ------------------------------------------------------------------------------
