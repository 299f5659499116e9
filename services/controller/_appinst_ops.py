"""AppInst create, update, refresh and delete (controller.md §3.9, §4.3, §5).

A create chooses a cluster (or makes a reservable autocluster), then commits the object,
its unique id, DNS label, `AppInstRefs.insts`, `ClusterRefs.apps`, `CloudletRefs` (shared
root-LB ports, VM apps) and a cluster reservation in one guarded transaction; the worker
(CCRM or CRM on the edge) then deploys it. See `_inst_common` for what both instance types
share.

Bursts of creates on one cluster (issue 6) stay fast and race-free: the commit guards the
refs records (ClusterRefs, CloudletRefs, AppInstRefs) and reads the other instances of the
cluster from the caches without guarding them (their resources, namespace, App and ports
change only together with the ClusterRefs, see `update`); creates of this Controller on
one cloudlet or App take turns on those records, starting from the caches, so they do not
fail each other's commits; another Controller's are caught by the compares and retried.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    common_pb2,
    refs_pb2,
    resources_pb2,
)

from edge_cloud.errors import (
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from edge_cloud.objects import fields, keys, registry
from services.controller import _alerts, _app, _appinst, _autoprov, _clusterinst, _ids
from services.controller._cloudlet import zone_key
from services.controller._cloudletinfo import CLOUDLET, CLOUDLET_INFO
from services.controller._create_undo import gone_check, mark_cancelled, record_and_remove
from services.controller._engine import Txn
from services.controller._inst_common import (
    APP,
    APP_CREATE_WAIT,
    APP_DELETE_WAIT,
    APP_INST,
    APP_INST_ALL_FIELDS,
    APP_INST_CREATED,
    APP_INST_DELETED,
    APP_INST_REFS,
    APP_INST_STATE_FIELD,
    APP_INST_UPDATED,
    CLOUDLET_REFS,
    CLUSTER_INST,
    CLUSTER_REFS,
    PLATFORM_FEATURES,
    InstOpsBase,
    NoFit,
    check_cloudlet_ready,
    cloudlet_res_tags,
    cloudlet_score,
    cloudlet_usable,
    copy_msg,
    features_of,
    info_wait,
    receive_app_inst_info,
    state_name,
    store_key_of,
    zone_cloudlets,
)
from services.controller._progress import OpStream
from services.controller._sizing import sizer
from services.controller._sync import Caches
from services.controller._tracked import (
    TRANSIENT,
    CallContext,
    Sink,
    TrackedRuntime,
    seconds,
    validate_delete_state,
)

if TYPE_CHECKING:
    from services.controller._clusterinst_ops import ClusterInstOps

__all__ = ["AppInstOps"]

log = logging.getLogger(__name__)

TS = common_pb2


def _app_key_text(key: app_pb2.AppKey) -> str:
    return keys.key_string(key)


#: AppInstKey fields `_inst_key_text` caches by; a new key field must join them.
_INST_KEY_FIELDS: Final = ("name", "organization")
if tuple(f.name for f in appinst_pb2.AppInstKey.DESCRIPTOR.fields) != _INST_KEY_FIELDS:
    raise RuntimeError("AppInstKey gained fields: extend _inst_key_text's cache key")


def _inst_key_text(key: appinst_pb2.AppInstKey) -> str:
    """`keys.key_string` of an AppInstKey, remembered by its fields.

    Why: an AppInst create needs the key strings of every instance on its cluster (the
    ClusterRefs members) for the cache lookups and the membership test; computing each
    again (Go-style JSON in Python) was the largest item of the commit function, and the
    members are mostly the same from one create to the next.
    """
    return _key_text_of(key.name, key.organization)


@functools.lru_cache(maxsize=1 << 16)
def _key_text_of(name: str, organization: str) -> str:
    return keys.key_string(appinst_pb2.AppInstKey(name=name, organization=organization))


def _cluster_fit(
    inst: appinst_pb2.AppInst,
    cluster: clusterinst_pb2.ClusterInst,
    others: list[appinst_pb2.AppInst],
) -> None:
    """§4.3: the instance's resources against what is free in the cluster.

    Raises:
        ResourceExhausted: `not enough resources in cluster <key>, <detail>`.
    """

    def kube_cpu(kr: resources_pb2.KubernetesResources) -> float:
        total = kr.cpu_pool.total_vcpus
        return total.whole + total.nanos / 1e9

    if cluster.deployment == "kubernetes":
        cap_cpu = float(sum(p.node_resources.vcpus * p.num_nodes for p in cluster.node_pools))
        cap_mem = sum(p.node_resources.ram * p.num_nodes for p in cluster.node_pools)
        used_cpu = sum(kube_cpu(o.kubernetes_resources) for o in others)
        used_mem = sum(o.kubernetes_resources.cpu_pool.total_memory for o in others)
        want_cpu = kube_cpu(inst.kubernetes_resources)
        want_mem = inst.kubernetes_resources.cpu_pool.total_memory
    else:
        cap_cpu = float(cluster.node_resources.vcpus)
        cap_mem = cluster.node_resources.ram
        used_cpu = float(sum(o.node_resources.vcpus for o in others))
        used_mem = sum(o.node_resources.ram for o in others)
        want_cpu = float(inst.node_resources.vcpus)
        want_mem = inst.node_resources.ram
    problems = []
    if want_cpu and want_cpu > cap_cpu - used_cpu:
        problems.append(f"want {want_cpu:g} vcpus but only {max(cap_cpu - used_cpu, 0):g} free")
    if want_mem and want_mem > cap_mem - used_mem:
        problems.append(f"want {want_mem}MB memory but only {max(cap_mem - used_mem, 0)}MB free")
    if problems:
        raise ResourceExhausted(
            f"not enough resources in cluster {keys.key_string(cluster.key)}, "
            + ", ".join(problems)
        )


# The original's updatable AppInst fields (flavor, configs, power state, real cluster name,
# dedicated IP, cloudlet flavor, IPv6, annotations, Kubernetes and node resources,
# standalone, namespace, tags); obj_id, zone_key and db_model_id are internal and left out.
UPDATABLE_APP_INST: Final = (
    "12", "27", "31", "37", "39", "42", "48", "52", "55", "56", "57", "58", "100"
)  # fmt: skip
# flavor, kubernetes_resources, node_resources: an update of these re-resolves and re-fits
_RESOURCE_PATHS: Final = frozenset({"12", "55", "56"})


def _refit_app_inst(
    txn: Txn,
    caches: Caches,
    stored: appinst_pb2.AppInst,
    merged: appinst_pb2.AppInst,
    *,
    flavor_given: bool,
) -> None:
    """Resolve an updated AppInst's resources and check they fit its cluster (§3.9, §4.3).

    The resources only reserve room in the cluster (nothing is redeployed for them), so
    the check is what keeps a cluster from being promised more than it has. A flavor in
    the request replaces the resources with the flavor's, as on App create.

    Raises:
        InvalidArgument, NotFound, FailedPrecondition: Resolving failed (flavor missing,
            being deleted, conflicting resource specs).
        ResourceExhausted: `not enough resources in cluster <key>, <detail>`.
    """
    app = txn.require(APP, stored.app_key)
    spec = app_pb2.App(key=app.key, deployment=app.deployment)
    if flavor_given and merged.flavor.name:
        spec.default_flavor.CopyFrom(merged.flavor)
    else:
        if merged.HasField("kubernetes_resources"):
            spec.kubernetes_resources.CopyFrom(merged.kubernetes_resources)
        if merged.HasField("node_resources"):
            spec.node_resources.CopyFrom(merged.node_resources)
    _app.resolve_resources(spec, _app.TxnReferences(txn, caches))
    for name in ("kubernetes_resources", "node_resources"):
        if spec.HasField(name):
            getattr(merged, name).CopyFrom(getattr(spec, name))
        else:
            merged.ClearField(name)
    cluster = txn.require(CLUSTER_INST, stored.cluster_key)
    crefs = txn.get(CLUSTER_REFS, cluster.key) or refs_pb2.ClusterRefs(key=cluster.key)
    others = [
        o
        for o in txn.peek_many(APP_INST, list(crefs.apps), shared=True)
        if o is not None and o.key != stored.key
    ]
    _cluster_fit(merged, cluster, others)


def _has_resources(app: app_pb2.App) -> bool:
    if app.deployment in ("kubernetes", "helm"):
        kr = app.kubernetes_resources
        return bool(kr.cpu_pool.total_vcpus.whole or kr.cpu_pool.total_vcpus.nanos)
    return bool(app.node_resources.vcpus)


class AppInstOps(InstOpsBase):
    """AppInst create, update and delete (§3.9)."""

    def __init__(self, runtime: TrackedRuntime, clusters: ClusterInstOps) -> None:
        super().__init__(runtime)
        self._clusters = clusters

    # -- create ------------------------------------------------------------------------------

    async def create(self, request: appinst_pb2.AppInst, sink: Sink) -> None:
        """CreateAppInst: pre-checks, cluster choice (or autocluster), commit, worker."""
        rt = self._rt
        cctx = CallContext()
        inst = copy_msg(request)
        cctx.take_override(inst)
        intent = _autoprov.current_intent()  # set for auto-prov callers (`_autoprov`)
        _appinst.precheck_create(inst, autoprov=intent is not None)
        if intent is not None and intent.checked:
            inst.liveness = common_pb2.LIVENESS_AUTOPROV
        app = rt.caches.get(APP, keys.key_string(inst.app_key))
        if app is None:
            raise keys.not_found(inst.app_key)
        if app.delete_prepare:
            raise keys.being_deleted(inst.app_key)
        _appinst.vm_cluster_checks(inst, app)
        if intent is not None:
            _autoprov.check_create_cached(rt.caches, inst, intent)
        if app.access_type == app_pb2.ACCESS_TYPE_DIRECT:
            raise InvalidArgument(
                "Direct Access Apps are no longer supported, please re-create App as "
                "ACCESS_TYPE_LOAD_BALANCER"
            )
        if not inst.HasField("kubernetes_resources") and not inst.HasField("node_resources"):
            inst.kubernetes_resources.CopyFrom(app.kubernetes_resources)
            inst.node_resources.CopyFrom(app.node_resources)
            if app.deployment in ("kubernetes", "helm"):
                inst.ClearField("node_resources")
            else:
                inst.ClearField("kubernetes_resources")
        inst.is_standalone = app.is_standalone
        if app.deployment not in ("kubernetes", "helm") and inst.namespace:
            raise InvalidArgument("namespace can only be specified for kubernetes deployments")
        stream = self._stream(cctx, inst.key, sink)
        if rt.caches.get(APP_INST, keys.key_string(inst.key)) is not None:
            existing = rt.caches.get(APP_INST, keys.key_string(inst.key))
            assert existing is not None  # noqa: S101 - narrowing
            if existing.state != TS.DELETE_ERROR and not cctx.ignore_transient:
                raise keys.already_exists(inst.key)
        auto_cluster: clusterinst_pb2.ClusterInst | None = None
        cloudlets: list[cloudlet_pb2.Cloudlet] = []
        if app.deployment == "vm":
            cloudlets = self._candidate_cloudlets(cctx, inst)
            if not cctx.ignore_crm:
                for cl in cloudlets:  # the LB and VM kinds the fit check counts
                    await sizer(rt).prepare(rt.caches, cl)
        elif not inst.cluster_key.name:
            if not _has_resources(app):
                raise InvalidArgument(
                    "For auto-provisioning or auto-clusters (no cluster specified), App must "
                    "have desired resources specified"
                )
            cloudlets = self._candidate_cloudlets(cctx, inst)
            await stream.send(f"Found {len(cloudlets)} potential cloudlets for deployment")
            chosen = self._choose_cluster(inst, app, cloudlets)
            if chosen is not None:
                inst.cluster_key.CopyFrom(chosen.key)
                kind = (
                    "reservable "
                    if chosen.reservable
                    else "multi-tenant "
                    if chosen.multi_tenant
                    else ""
                )
                await stream.send(f"Chose {kind}cluster {chosen.key.name}")
            else:
                await stream.send("No existing cluster available")
                auto_cluster = await self._new_auto_cluster(cctx, inst, app, cloudlets, sink)
                inst.cluster_key.CopyFrom(auto_cluster.key)
        try:
            await self._create_committed(cctx, inst, app, cloudlets, stream, sink)
        except BaseException:
            if auto_cluster is not None:
                await stream.send(f"Deleting auto-ClusterInst {auto_cluster.key.name}")
                with contextlib.suppress(EdgeError):
                    await self._clusters.delete_internal(
                        CallContext(override=TS.IGNORE_CRM_ERRORS), copy_msg(auto_cluster), sink
                    )
            raise

    def _candidate_cloudlets(
        self, cctx: CallContext, inst: appinst_pb2.AppInst
    ) -> list[cloudlet_pb2.Cloudlet]:
        caches = self._rt.caches
        if inst.cloudlet_key.name:
            found = caches.get(CLOUDLET, keys.key_string(inst.cloudlet_key))
            if found is None:
                raise keys.not_found(inst.cloudlet_key)
            if not cctx.ignore_crm and not cloudlet_usable(caches, found):
                raise FailedPrecondition(
                    f"cannot deploy to cloudlet {inst.cloudlet_key.name}, site is unavailable"
                )
            return [found]
        zone = inst.zone_key
        cloudlets = zone_cloudlets(caches, zone)
        usable = [c for c in cloudlets if cctx.ignore_crm or cloudlet_usable(caches, c)]
        if not usable:
            if cloudlets:
                raise FailedPrecondition(
                    f"no available edge sites in zone {zone.name}, some sites were skipped "
                    "because site is unavailable"
                )
            raise FailedPrecondition(f"no available edge sites in zone {zone.name}")
        usable.sort(key=lambda c: (-cloudlet_score(caches, c), keys.key_string(c.key)))
        return usable

    def _choose_cluster(
        self,
        inst: appinst_pb2.AppInst,
        app: app_pb2.App,
        cloudlets: list[cloudlet_pb2.Cloudlet],
    ) -> clusterinst_pb2.ClusterInst | None:
        caches = self._rt.caches
        best: list[tuple[int, str, clusterinst_pb2.ClusterInst]] = []
        for cl in cloudlets:
            refs = caches.get(CLOUDLET_REFS, keys.key_string(cl.key))
            if refs is None:
                continue
            for ck in refs.cluster_insts:
                cluster = caches.get(CLUSTER_INST, keys.key_string(ck))
                if cluster is None or cluster.state != TS.READY or cluster.delete_prepare:
                    continue
                if inst.is_standalone:
                    continue  # standalone instances get a cluster of their own
                if cluster.reservable:
                    if cluster.reserved_by not in ("", inst.key.organization):
                        continue
                    rank = 2 if cluster.reserved_by else 4
                elif cluster.multi_tenant:
                    if not app.allow_serverless:
                        continue
                    rank = 3
                else:
                    if cluster.key.organization != inst.key.organization:
                        continue
                    if cluster.disable_dynamic_appinst_placement:
                        continue
                    rank = 1
                if not _appinst.deployment_matches(app.deployment, cluster.deployment):
                    continue
                crefs = caches.get(CLUSTER_REFS, keys.key_string(ck))
                others = []
                if crefs is not None:
                    others = [
                        o
                        for o in (caches.get(APP_INST, keys.key_string(a)) for a in crefs.apps)
                        if o is not None
                    ]
                try:
                    probe = copy_msg(inst)
                    if app.deployment in ("kubernetes", "helm") and not probe.namespace:
                        probe.namespace = _appinst.default_namespace(probe)
                    _appinst.check_duplicate(probe, app, others, _app_key_text(app.key))
                    _cluster_fit(probe, cluster, others)
                except EdgeError:
                    continue
                best.append((rank, keys.key_string(ck), cluster))
        if not best:
            return None
        best.sort(key=lambda item: (item[0], item[1]))
        return best[0][2]

    async def _new_auto_cluster(
        self,
        cctx: CallContext,
        inst: appinst_pb2.AppInst,
        app: app_pb2.App,
        cloudlets: list[cloudlet_pb2.Cloudlet],
        sink: Sink,
    ) -> clusterinst_pb2.ClusterInst:
        cluster = clusterinst_pb2.ClusterInst(
            key=cluster_pb2.ClusterKey(name="reservable", organization=_clusterinst.EDGECLOUD_ORG),
            auto=True,
            reservable=True,
            reserved_by=inst.key.organization,
            liveness=common_pb2.LIVENESS_DYNAMIC,
        )
        if app.deployment in ("kubernetes", "helm"):
            cluster.deployment = "kubernetes"
            pool = app.kubernetes_resources.cpu_pool
            topo = pool.topology
            vcpus = max(
                topo.min_node_vcpus, pool.total_vcpus.whole + (1 if pool.total_vcpus.nanos else 0)
            )
            cluster.node_pools.add(
                Name=_clusterinst.DEFAULT_POOL,
                num_nodes=max(topo.min_number_of_nodes, 1),
                node_resources=resources_pb2.NodeResources(
                    vcpus=vcpus,
                    ram=max(topo.min_node_memory, pool.total_memory),
                    disk=topo.min_node_disk,
                ),
                scalable=True,
            )
        else:
            cluster.deployment = "docker"
            cluster.node_resources.CopyFrom(app.node_resources)
            cluster.node_resources.infra_node_flavor = ""
        failures: list[str] = []
        for cl in cloudlets:
            attempt = copy_msg(cluster)
            attempt.cloudlet_key.CopyFrom(cl.key)
            announced: list[clusterinst_pb2.ClusterInst] = []

            async def on_commit(
                stored: clusterinst_pb2.ClusterInst,
                announced: list[clusterinst_pb2.ClusterInst] = announced,
            ) -> None:
                announced.append(stored)
                sink(f"Creating new auto-cluster named {stored.key.name} to deploy AppInst")

            try:
                return await self._clusters.create_internal(
                    CallContext(override=cctx.override),
                    attempt,
                    sink,
                    auto_reservable=True,
                    on_commit=on_commit,
                )
            except ResourceExhausted as err:
                if announced:
                    raise
                failures.append(err.message)
        log.info("no cloudlet fits an autocluster for %s: %s", inst.key, failures)
        raise ResourceExhausted("no resources available for deployment")

    async def _create_committed(
        self,
        cctx: CallContext,
        inst: appinst_pb2.AppInst,
        app: app_pb2.App,
        cloudlets: list[cloudlet_pb2.Cloudlet],
        stream: OpStream,
        sink: Sink,
    ) -> None:
        rt = self._rt
        targets: list[cloudletkey_pb2.CloudletKey | None]
        targets = [c.key for c in cloudlets] if app.deployment == "vm" else [None]
        failures: list[str] = []
        committed: tuple[appinst_pb2.AppInst, int | None] | None = None
        for target in targets:
            reads, turns = self._commit_plan(inst, target)
            try:
                committed = await rt.engine.apply_at(
                    self._commit_fn(cctx, inst, target),
                    reads=reads,
                    serialize=turns,
                    from_caches=True,
                )
                break
            except NoFit as err:
                failures.append(err.message)
        if committed is None:
            if len(failures) == 1:
                raise ResourceExhausted(failures[0])
            raise ResourceExhausted("no resources available for deployment")
        stored, revision = committed
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(stored.cloudlet_key))
        on_edge = cloudlet is not None and cloudlet.crm_on_edge

        async def work() -> None:
            if cctx.ignore_crm:
                await stream.send(APP_INST_CREATED)
                return
            try:
                await self._apply(stored, TS.CREATE_REQUESTED, APP_INST_ALL_FIELDS, stream, on_edge)
            except EdgeError as err:
                if not cctx.ignore_crm_errors:
                    raise
                await stream.send(f"Create AppInst ignoring CRM failure: {err.message}")
                await self._set_state(APP_INST, stored.key, TS.READY)
            await stream.send(APP_INST_CREATED)

        async def on_error(err: BaseException) -> None:
            if await mark_cancelled(self._set_state, APP_INST, stored.key, err):
                return
            await record_and_remove(
                self._set_state,
                APP_INST,
                stored.key,
                err,
                stream,
                "Deleting AppInst due to failure",
                functools.partial(self._remove, stored.key),
                log,
                "AppInst",
            )

        await self._run(
            stream,
            revision,
            work,
            on_error=on_error,
            cleanup_on_error=gone_check(rt, APP_INST, stored.key),
            subscribe=on_edge and not cctx.ignore_crm,
            defer=cctx.ignore_crm,  # nothing to wait for: the stream is written once, at the end
        )

    def _commit_plan(
        self, inst: appinst_pb2.AppInst, vm_cloudlet: cloudletkey_pb2.CloudletKey | None
    ) -> tuple[list[str], list[str]]:
        """What the commit will read (fetched in one round) and the hot records it writes.

        Guessed from the caches: a wrong guess costs one more read round, never correctness
        (the transaction reads what it needs). The hot records are the App's AppInstRefs and
        the cloudlet's CloudletRefs (its ClusterRefs live on the same cloudlet): creates of
        this Controller that share one take turns instead of failing each other's commits.
        """
        caches = self._rt.caches
        reads = [
            store_key_of(APP_INST, inst.key),
            store_key_of(APP, inst.app_key),
            store_key_of(APP_INST_REFS, inst.app_key),
        ]
        turns = [store_key_of(APP_INST_REFS, inst.app_key)]
        cloudlet_key = vm_cloudlet
        if vm_cloudlet is None:
            reads.append(store_key_of(CLUSTER_INST, inst.cluster_key))
            reads.append(store_key_of(CLUSTER_REFS, inst.cluster_key))
            cluster = caches.get(CLUSTER_INST, keys.key_string(inst.cluster_key))
            if cluster is not None:
                cloudlet_key = cluster.cloudlet_key
        if cloudlet_key is None:
            return reads, turns
        cloudlet_text = keys.key_string(cloudlet_key)
        turns.append(store_key_of(CLOUDLET_REFS, cloudlet_key))
        reads.append(store_key_of(CLOUDLET, cloudlet_key))
        reads.append(store_key_of(CLOUDLET_REFS, cloudlet_key))
        if vm_cloudlet is not None:
            reads.append(store_key_of(CLOUDLET_INFO, cloudlet_key))
        cloudlet = caches.get(CLOUDLET, cloudlet_text)
        if cloudlet is not None:
            reads.append(store_key_of(PLATFORM_FEATURES, cloudlet.platform_type))
            ids = _appinst.id_candidates(inst, cloudlet.key.name, cloudlet.key.organization)
            reads.append(_appinst.APP_INST_ID_PREFIX + ids[0])
        labels = _appinst.label_candidates(inst)
        if labels:
            reads.append(_clusterinst.cloudlet_object_label_key(cloudlet_text, labels[0]))
        return reads, turns

    def _commit_fn(
        self,
        cctx: CallContext,
        inst: appinst_pb2.AppInst,
        vm_cloudlet: cloudletkey_pb2.CloudletKey | None,
    ) -> Callable[[Txn], appinst_pb2.AppInst]:
        rt = self._rt
        cfg = rt.config
        intent = _autoprov.current_intent()  # read here: the commit may run in another task

        def commit(txn: Txn) -> appinst_pb2.AppInst:
            new = copy_msg(inst)
            existing = txn.get(APP_INST, new.key)
            if existing is not None and not (
                existing.state == TS.DELETE_ERROR or cctx.undo or cctx.ignore_transient
            ):
                raise keys.already_exists(new.key)
            if existing is not None:
                raise FailedPrecondition(
                    f"AppInst {keys.key_string(new.key)} still exists in state "
                    f"{state_name(existing.state)}, delete it first"
                )
            app = txn.require(APP, new.app_key)
            cluster: clusterinst_pb2.ClusterInst | None = None
            others: list[appinst_pb2.AppInst] = []
            crefs: refs_pb2.ClusterRefs | None = None
            member_keys: list[str] = []
            if app.deployment == "vm":
                assert vm_cloudlet is not None  # noqa: S101 - VM apps get cloudlet targets
                cloudlet_key = vm_cloudlet
            else:
                cluster = txn.require(CLUSTER_INST, new.cluster_key)
                reserve = _appinst.check_cluster_use(new, app, cluster)
                cloudlet_key = cluster.cloudlet_key
                crefs = txn.get(CLUSTER_REFS, cluster.key) or refs_pb2.ClusterRefs(key=cluster.key)
                # members, unguarded: whatever of them matters here changes only together
                # with the ClusterRefs read above (create, delete, resource update); their
                # key strings serve the lookup and the membership test below
                member_keys = [_inst_key_text(k) for k in crefs.apps]
                others = [o for o in txn.peek_many(APP_INST, member_keys, shared=True) if o]
                if app.deployment in ("kubernetes", "helm") and not new.namespace:
                    new.namespace = _appinst.default_namespace(new)
                _appinst.check_duplicate(new, app, others, _app_key_text(app.key))
                _cluster_fit(new, cluster, others)
                if reserve:
                    cluster.reserved_by = new.key.organization
                    txn.put(cluster)
            cl = txn.require(CLOUDLET, cloudlet_key)
            pf = txn.get(PLATFORM_FEATURES, cl.platform_type)
            if pf is None:
                raise keys.not_found(cloudlet_pb2.PlatformFeatures(platform_type=cl.platform_type))
            new.cloudlet_key.CopyFrom(cl.key)
            zk = zone_key(cl)
            if zk is not None:
                new.zone_key.CopyFrom(zk)
            if intent is not None:
                _autoprov.check_create(txn, app, new, intent)
            stored_refs = txn.get(CLOUDLET_REFS, cl.key)
            refs = copy_msg(stored_refs) if stored_refs else refs_pb2.CloudletRefs(key=cl.key)
            if app.deployment == "vm":
                info = txn.get(CLOUDLET_INFO, cl.key)
                if info is None:
                    raise FailedPrecondition(
                        f"No resource information found for Cloudlet {keys.key_string(cl.key)}"
                    )
                new.node_resources.infra_node_flavor = _clusterinst.select_infra_flavor(
                    new.node_resources,
                    info.flavors,
                    cloudlet_res_tags(txn, cl),
                    cloudlet_name=cl.key.name,
                )
                new.vm_flavor = new.node_resources.infra_node_flavor
                clusters = [c for c in txn.get_many(CLUSTER_INST, list(refs.cluster_insts)) if c]
                # members of the guarded refs; a VM app's resources never change
                vms = [a for a in txn.peek_many(APP_INST, list(refs.vm_app_insts)) if a]
                sizing = sizer(rt).cached(keys.key_string(cl.key))
                used = _clusterinst.used_resources(
                    clusters, [a.node_resources for a in vms], pf, info=info, sizing=sizing
                )
                want = _clusterinst.vm_app_resources(
                    new.node_resources, pf, info=info, sizing=sizing
                )
                try:
                    _clusterinst.fit_resources(want, used, _clusterinst.limits(cl, info))
                except ResourceExhausted as err:
                    raise NoFit(err.message) from None
                _alerts.commit_usage_alerts(txn, rt, cl, info, used, want)
                refs.vm_app_insts.append(new.key)
            shared = (
                cluster is not None
                and cluster.ip_access != common_pb2.IP_ACCESS_DEDICATED
                and not new.dedicated_ip
            )
            per_service = _clusterinst.per_service_ip(cl, pf)
            new.ClearField("mapped_ports")
            new.mapped_ports.extend(
                _appinst.map_ports(
                    app,
                    shared=shared,
                    refs=refs,
                    others_on_cluster=[] if per_service else others,
                    uses_ingress=pf.uses_ingress,
                )
            )
            new.unique_id = ""
            for candidate in _appinst.id_candidates(new, cl.key.name, cl.key.organization):
                if not txn.has_key(_appinst.APP_INST_ID_PREFIX + candidate):
                    new.unique_id = candidate
                    break
            if not new.unique_id:
                raise InvalidArgument(
                    "Unable to compute unique AppInstId, please change AppInst key values"
                )
            new.dns_label = ""
            for candidate in _appinst.label_candidates(new):
                label_key = _clusterinst.cloudlet_object_label_key(
                    keys.key_string(cl.key), candidate
                )
                if not txn.has_key(label_key):
                    new.dns_label = candidate
                    break
            if not new.dns_label:
                raise InvalidArgument(
                    "Unable to compute unique DNS label for AppInst, please change key values"
                )
            new.uri = _appinst.app_inst_uri(
                new,
                app,
                cluster=cluster,
                cloudlet_label=cl.dns_label,
                root_lb_fqdn=cl.root_lb_fqdn,
                region=cfg.region,
                app_dns_root=cfg.app_dns_root,
                per_service_ip=per_service,
            )
            if new.uri:
                _appinst.check_dns_name(new.uri)
            new.static_uri = new.uri
            new.cloudlet_loc.CopyFrom(cl.location)
            new.created_at.CopyFrom(_ids.now_timestamp())
            new.obj_id = _ids.ulid()
            new.revision = app.revision
            new.state = TS.READY if cctx.ignore_crm else TS.CREATE_REQUESTED
            del new.errors[:]
            new_key_text = _inst_key_text(new.key)
            air = txn.get(APP_INST_REFS, app.key) or refs_pb2.AppInstRefs(key=app.key)
            air.insts[new_key_text] = 1
            txn.put(air)
            if crefs is not None:
                if new_key_text not in member_keys:
                    crefs.apps.append(new.key)
                txn.put(crefs)
            if refs != stored_refs:
                # unchanged (no shared-LB port, not a VM app): no write, fewer conflicts
                txn.put(refs)
            txn.put_key(_appinst.APP_INST_ID_PREFIX + new.unique_id, new_key_text.encode())
            txn.put_key(
                _clusterinst.cloudlet_object_label_key(keys.key_string(cl.key), new.dns_label),
                new.dns_label.encode(),
            )
            txn.put(new)
            return new

        return commit

    async def _apply(
        self,
        inst: appinst_pb2.AppInst,
        state: int,
        paths: list[str],
        stream: OpStream,
        on_edge: bool,
    ) -> None:
        rt = self._rt
        settings = rt.settings()
        if state == TS.CREATE_REQUESTED:
            wait, timeout = APP_CREATE_WAIT, settings.create_app_inst_timeout
        elif state == TS.UPDATE_REQUESTED:
            wait = info_wait(TS.READY, TS.UPDATE_ERROR, TS.UPDATING, "ShowAppInst")
            timeout = settings.update_app_inst_timeout
        else:
            wait, timeout = APP_DELETE_WAIT, settings.delete_app_inst_timeout
        await self._run_worker(
            APP_INST,
            inst,
            state,
            paths,
            stream,
            on_edge=on_edge,
            wait=wait,
            timeout=seconds(timeout),
            info_type=registry.by_class(appinst_pb2.AppInstInfo),
            receive=receive_app_inst_info,
            ccrm_apply=rt.tracked.ccrm.apply_app_inst,
        )

    async def _remove(self, key: appinst_pb2.AppInstKey) -> None:
        """Delete the instance with its id, label, refs, ports and reservation, in one txn."""

        def remove(txn: Txn) -> None:
            current = txn.get(APP_INST, key)
            if current is None:
                return
            key_text = keys.key_string(key)
            air = txn.get(APP_INST_REFS, current.app_key)
            if air is not None:
                if key_text in air.insts:
                    del air.insts[key_text]
                if key_text in air.delete_requested_insts:
                    del air.delete_requested_insts[key_text]
                txn.put(air)
            refs = txn.get(CLOUDLET_REFS, current.cloudlet_key)
            if refs is not None:
                _appinst.free_root_lb_ports(current, refs)
                kept = [k for k in refs.vm_app_insts if k != current.key]
                del refs.vm_app_insts[:]
                refs.vm_app_insts.extend(kept)
                txn.put(refs)
                _alerts.refresh_in_commit(txn, self._rt, refs, _alerts.appinst_tags(current))
            if current.cluster_key.name:
                crefs = txn.get(CLUSTER_REFS, current.cluster_key)
                remaining: list[appinst_pb2.AppInstKey] = []
                if crefs is not None:
                    remaining = [k for k in crefs.apps if k != current.key]
                    if remaining:
                        del crefs.apps[:]
                        crefs.apps.extend(remaining)
                        txn.put(crefs)
                    else:
                        txn.delete(CLUSTER_REFS, current.cluster_key)
                cluster = txn.get(CLUSTER_INST, current.cluster_key)
                if (
                    cluster is not None
                    and cluster.reservable
                    and cluster.reserved_by == current.key.organization
                    and not any(k.organization == current.key.organization for k in remaining)
                ):
                    cluster.reserved_by = ""
                    cluster.reservation_ended_at.CopyFrom(_ids.now_timestamp())
                    txn.put(cluster)
            if current.unique_id:
                txn.delete_key(_appinst.APP_INST_ID_PREFIX + current.unique_id)
            if current.dns_label:
                txn.delete_key(
                    _clusterinst.cloudlet_object_label_key(
                        keys.key_string(current.cloudlet_key), current.dns_label
                    )
                )
            txn.delete(APP_INST, key)

        reads, turns = self._removal_plan(key)
        await self._rt.engine.apply_at(remove, reads=reads, serialize=turns, from_caches=True)

    def _removal_plan(self, key: appinst_pb2.AppInstKey) -> tuple[list[str], list[str]]:
        """Prefetch list and hot records of a removal (or delete mark), from the caches."""
        reads = [store_key_of(APP_INST, key)]
        cached = self._rt.caches.get(APP_INST, keys.key_string(key))
        if cached is None:
            return reads, []
        turns = [
            store_key_of(APP_INST_REFS, cached.app_key),
            store_key_of(CLOUDLET_REFS, cached.cloudlet_key),
        ]
        reads += [store_key_of(APP, cached.app_key), *turns]
        if cached.cluster_key.name:
            reads.append(store_key_of(CLUSTER_REFS, cached.cluster_key))
            reads.append(store_key_of(CLUSTER_INST, cached.cluster_key))
        return reads, turns

    # -- delete ------------------------------------------------------------------------------

    async def delete(self, request: appinst_pb2.AppInst, sink: Sink) -> None:
        """DeleteAppInst: state checks, DeleteRequested, worker, removal with its refs."""
        await self.delete_internal(CallContext(), copy_msg(request), sink)

    async def delete_internal(
        self, cctx: CallContext, request: appinst_pb2.AppInst, sink: Sink
    ) -> None:
        """The delete, also for App auto-deletes."""
        rt = self._rt
        cctx.take_override(request)
        key = copy_msg(request.key)
        current = rt.caches.get(APP_INST, keys.key_string(key))
        if current is None:
            raise keys.not_found(key)
        validate_delete_state(cctx, "AppInst", current.state)
        if not (cctx.ignore_crm or cctx.undo or cctx.skip_cloudlet_ready_check):
            check_cloudlet_ready(rt.caches, current.cloudlet_key, deleting=True)
        stream = self._stream(cctx, key, sink)
        intent = _autoprov.current_intent()

        def mark(txn: Txn) -> appinst_pb2.AppInst:
            inst = txn.get(APP_INST, key)
            if inst is None:
                raise keys.not_found(key)
            validate_delete_state(cctx, "AppInst", inst.state)
            app = txn.get(APP, inst.app_key)
            if app is None:
                raise NotFound(f"For AppInst, {keys.not_found(inst.app_key).message}")
            if inst.cluster_key.name and txn.get(CLUSTER_INST, inst.cluster_key) is None:
                raise NotFound(f"For AppInst, {keys.not_found(inst.cluster_key).message}")
            if intent is not None:
                _autoprov.check_delete(txn, app, inst, intent)
            inst.state = TS.DELETE_REQUESTED
            txn.put(inst)
            air = txn.get(APP_INST_REFS, inst.app_key)
            if air is not None:
                air.delete_requested_insts[keys.key_string(key)] = 1
                txn.put(air)
            return inst

        reads, turns = self._removal_plan(key)
        inst, revision = await rt.engine.apply_at(mark, reads=reads, serialize=turns)
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(inst.cloudlet_key))
        on_edge = cloudlet is not None and cloudlet.crm_on_edge

        async def work() -> None:
            if not cctx.ignore_crm and not cctx.undo:
                try:
                    await self._apply(
                        inst, TS.DELETE_REQUESTED, [APP_INST_STATE_FIELD], stream, on_edge
                    )
                except EdgeError as err:
                    if not cctx.ignore_crm_errors:
                        raise
                    await stream.send(f"Delete AppInst ignoring CRM failure: {err.message}")
            await self._remove(key)
            await stream.send(APP_INST_DELETED)

        async def on_error(err: BaseException) -> None:
            message = err.message if isinstance(err, EdgeError) else str(err)

            def restore(txn: Txn) -> None:
                obj = txn.get(APP_INST, key)
                if obj is None:
                    return
                if obj.state in (TS.DELETE_REQUESTED, TS.DELETING):
                    # the worker may have removed parts: leave DeleteError for a retry
                    obj.state = TS.DELETE_ERROR
                    del obj.errors[:]
                    obj.errors.append(message)
                    txn.put(obj)
                air = txn.get(APP_INST_REFS, obj.app_key)
                if air is not None and keys.key_string(key) in air.delete_requested_insts:
                    del air.delete_requested_insts[keys.key_string(key)]
                    txn.put(air)

            try:
                await rt.engine.apply(restore, reads=reads, serialize=turns)
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

    # -- update / refresh ----------------------------------------------------------------------

    async def update(
        self,
        request: appinst_pb2.AppInst,
        sink: Sink,
        *,
        force: bool = False,
        internal: bool = False,
    ) -> None:
        """UpdateAppInst: power-state rules; stored field changes, pushed by a refresh.

        Args:
            request: Key, `fields` and new values.
            sink: Progress lines.
            force: Run the worker even when nothing stored changes (forced refresh).
            internal: The Controller's own update (a refresh setting the revision): the
                user-facing updatable-field check does not apply.
        """
        rt = self._rt
        cctx = CallContext()
        req = copy_msg(request)
        cctx.take_override(req)
        paths = [p for p in req.fields if p != "16"]
        if not paths:
            raise InvalidArgument("nothing specified to update")
        if not internal:
            fields.check_updatable(paths, UPDATABLE_APP_INST, appinst_pb2.AppInst.DESCRIPTOR)
        power = "31" in paths
        if power and len(paths) > 1:
            raise InvalidArgument(
                "If powerstate is to be updated, then no other fields can be modified"
            )
        current = rt.caches.get(APP_INST, keys.key_string(req.key))
        if current is None:
            raise keys.not_found(req.key)
        app = rt.caches.get(APP, keys.key_string(current.app_key))
        if power:
            if req.power_state not in (
                appinst_pb2.POWER_ON,
                appinst_pb2.POWER_OFF,
                appinst_pb2.REBOOT,
            ):
                raise InvalidArgument("Invalid power state specified")
            if app is None or app.deployment != "vm":
                raise InvalidArgument("Updating powerstate is only supported for VM deployment")
        res_change = any(p.split(".")[0] in _RESOURCE_PATHS for p in paths)
        if res_change and app is not None and app.deployment == "vm":
            raise InvalidArgument("cannot modify resources allocated to VM deployments")
        if "48" in paths and req.enable_ipv6 and app is not None and app.deployment == "vm":
            cloudlet = rt.caches.get(CLOUDLET, keys.key_string(current.cloudlet_key))
            if cloudlet is None:
                raise keys.not_found(current.cloudlet_key)
            if not features_of(rt.caches, cloudlet.platform_type).supports_ipv6:
                raise InvalidArgument("cloudlet platform does not support IPv6")
        if "48" in paths and req.enable_ipv6 and current.cluster_key.name:
            cluster = rt.caches.get(CLUSTER_INST, keys.key_string(current.cluster_key))
            if cluster is not None and not cluster.enable_ipv6:
                raise InvalidArgument(
                    "cannot enable IPv6 when cluster does not have it enabled, please enable "
                    "on cluster first"
                )
        stream = self._stream(cctx, req.key, sink)

        def commit(txn: Txn) -> appinst_pb2.AppInst | None:
            stored = txn.get(APP_INST, req.key)
            if stored is None:
                raise keys.not_found(req.key)
            merged = copy_msg(stored)
            fields.apply_fields(merged, req, paths)
            if merged == stored and not force:
                return None
            if stored.state not in (TS.READY, TS.UPDATE_ERROR):
                raise FailedPrecondition("AppInst busy, cannot update")
            if res_change and merged != stored:
                _refit_app_inst(txn, rt.caches, stored, merged, flavor_given="12" in paths)
            merged.updated_at.CopyFrom(_ids.now_timestamp())
            merged.state = TS.READY if cctx.ignore_crm else TS.UPDATE_REQUESTED
            txn.put(merged)
            if stored.cluster_key.name:
                crefs = txn.get(CLUSTER_REFS, stored.cluster_key)
                if crefs is not None:
                    # Rewritten as is: a create on the cluster that computed its fit from
                    # the old resources (read unguarded, see `_commit_fn`) now fails its
                    # commit on the ClusterRefs revision and re-runs.
                    txn.put(crefs)
            return merged

        updated, revision = await rt.engine.apply_at(commit)
        if updated is None:
            await stream.send(APP_INST_UPDATED)
            return
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(updated.cloudlet_key))
        on_edge = cloudlet is not None and cloudlet.crm_on_edge

        async def work() -> None:
            if not cctx.ignore_crm:
                await self._apply(updated, TS.UPDATE_REQUESTED, paths, stream, on_edge)
            await stream.send(APP_INST_UPDATED)

        async def on_error(err: BaseException) -> None:
            message = err.message if isinstance(err, EdgeError) else str(err)
            await self._set_state(
                APP_INST, req.key, TS.UPDATE_ERROR, errors=[message], only_from=TRANSIENT
            )

        await self._run(
            stream, revision, work, on_error=on_error, subscribe=on_edge and not cctx.ignore_crm
        )

    async def refresh(self, request: appinst_pb2.AppInst, sink: Sink) -> None:
        """RefreshAppInst: push the App's current spec to Ready/UpdateError instances."""
        rt = self._rt
        targets: list[appinst_pb2.AppInst] = []
        if request.update_multiple:
            for _, inst in rt.caches.items(APP_INST):
                if inst.app_key == request.app_key:
                    targets.append(inst)
        else:
            found = rt.caches.get(APP_INST, keys.key_string(request.key))
            if found is None:
                raise keys.not_found(request.key)
            targets.append(found)
        updated = skipped = failed = 0
        for inst in targets:
            app = rt.caches.get(APP, keys.key_string(inst.app_key))
            if inst.state not in (TS.READY, TS.UPDATE_ERROR):
                if not request.update_multiple:
                    raise FailedPrecondition("AppInst is not ready or update_error")
                failed += 1
                sink(f"{inst.key.name}: AppInst is not ready or update_error")
                continue
            if app is not None and inst.revision == app.revision and not request.force_update:
                skipped += 1
                continue
            forced = copy_msg(inst)
            forced.fields.append("24")
            forced.revision = app.revision if app is not None else inst.revision
            try:
                await self.update(forced, sink, force=request.force_update, internal=True)
                updated += 1
            except EdgeError as err:
                if not request.update_multiple:
                    raise
                failed += 1
                sink(f"{inst.key.name}: {err.message}")
        total = len(targets)
        sink(
            f"Completed: {updated + skipped} of {total} AppInsts.  Updated: {updated} "
            f"Skipped: {skipped} Failed: {failed}"
        )
