"""ClusterInst and AppInst operations: commit, worker, undo (controller.md §3.8, §3.9, §5).

Every create commits the object together with its references in ONE guarded transaction:

- ClusterInst: the object, `CloudletRefs` (cluster list, dynamic IP, reservable id bit) and
  its DNS label `1/CloudletObjectDnsLabel/{"Cloudlet":<key>,"Label":"<l>"}`, after the
  resource fit against the cloudlet's CloudletInfo and quotas (§4);
- AppInst: the object, its unique id `1/AppInstId/<id>`, DNS label, `AppInstRefs.insts`,
  `ClusterRefs.apps`, `CloudletRefs` (shared root-LB ports, VM apps), the reservation of a
  reservable cluster.

So two controllers racing on one cloudlet can never both take a port, an IP or the last
resources: the loser's transaction re-runs on fresh refs. Deletes free all of it in the same
transaction that removes the object.

After the commit the worker does the work: the CCRM of the platform's node type through
`ClusterPlatformAPI.ApplyClusterInst` / `AppInstPlatformAPI.ApplyAppInst` (streamed Info
merged into etcd with the legal-transition table of §5.2), or a CRM on the edge which
reports Info over notify (`receive_*_info`), followed through Redis pub/sub. A create that
fails is undone by a DB-only removal (§5.7); a reservable autocluster made for a failed
AppInst is deleted with its worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from distributed_match_engine import appcommon_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    refs_pb2,
    resources_pb2,
    zone_pb2,
)
from google.protobuf.message import Message

from edge_cloud.errors import (
    AlreadyExists,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from edge_cloud.objects import codec, fields, keys, registry
from services.controller import _appinst, _clusterinst, _ids
from services.controller._cloudlet import zone_key
from services.controller._cloudletinfo import CLOUDLET, CLOUDLET_INFO
from services.controller._engine import Txn
from services.controller._progress import ERROR, OpStream, stream_key
from services.controller._sync import Caches
from services.controller._tracked import (
    TRANSIENT,
    CallContext,
    InfoWait,
    Sink,
    TrackedOps,
    TrackedRuntime,
    seconds,
    validate_delete_state,
    wait_for_info,
)

__all__ = [
    "AppInstOps",
    "ClusterInstOps",
    "InstRecovery",
    "merge_info",
    "receive_app_inst_info",
    "receive_cluster_inst_info",
]

log = logging.getLogger(__name__)

TS = common_pb2
CLUSTER_INST: Final = registry.by_class(clusterinst_pb2.ClusterInst)
APP_INST: Final = registry.by_class(appinst_pb2.AppInst)
APP: Final = registry.by_class(app_pb2.App)
FLAVOR: Final = registry.by_class(flavor_pb2.Flavor)
ZONE: Final = registry.by_class(zone_pb2.Zone)
PLATFORM_FEATURES: Final = registry.by_class(cloudlet_pb2.PlatformFeatures)
AUTOSCALE: Final = registry.by_class(autoscalepolicy_pb2.AutoScalePolicy)
CLOUDLET_REFS: Final = registry.by_class(refs_pb2.CloudletRefs)
CLUSTER_REFS: Final = registry.by_class(refs_pb2.ClusterRefs)
APP_INST_REFS: Final = registry.by_class(refs_pb2.AppInstRefs)

CLUSTER_ALL_FIELDS: Final = list(fields.all_field_paths(clusterinst_pb2.ClusterInst.DESCRIPTOR))
APP_INST_ALL_FIELDS: Final = list(fields.all_field_paths(appinst_pb2.AppInst.DESCRIPTOR))
CLUSTER_STATE_FIELD: Final = "4"
APP_INST_STATE_FIELD: Final = "14"
CLUSTER_CREATED: Final = "Created ClusterInst successfully"
CLUSTER_DELETED: Final = "Deleted ClusterInst successfully"
CLUSTER_UPDATED: Final = "Updated ClusterInst successfully"
APP_INST_CREATED: Final = "Created AppInst successfully"
APP_INST_DELETED: Final = "Deleted AppInst successfully"
APP_INST_UPDATED: Final = "Updated AppInst successfully"

# §5.2: the states a worker may move an object to, by current state.
_LEGAL: Final[dict[int, frozenset[int]]] = {
    TS.CREATE_REQUESTED: frozenset({TS.CREATING, TS.READY, TS.CREATE_ERROR}),
    TS.CREATING: frozenset({TS.READY, TS.CREATE_ERROR}),
    TS.UPDATE_REQUESTED: frozenset({TS.UPDATING, TS.READY, TS.UPDATE_ERROR}),
    TS.UPDATING: frozenset({TS.READY, TS.UPDATE_ERROR}),
    TS.DELETE_REQUESTED: frozenset({TS.DELETING, TS.NOT_PRESENT, TS.DELETE_ERROR, TS.DELETE_DONE}),
    TS.DELETING: frozenset({TS.NOT_PRESENT, TS.DELETE_ERROR, TS.DELETE_DONE}),
}
_ERROR_STATES: Final = frozenset({TS.CREATE_ERROR, TS.UPDATE_ERROR, TS.DELETE_ERROR})
_TERMINAL: Final = frozenset(
    {TS.READY, TS.CREATE_ERROR, TS.UPDATE_ERROR, TS.DELETE_ERROR, TS.NOT_PRESENT, TS.DELETE_DONE}
)
_UPDATABLE_CLUSTER: Final = ("14", "46", "18", "37", "42", "100", "26", "49", "6")


def _state_name(state: int) -> str:
    try:
        return common_pb2.TrackedState.Name(state)  # type: ignore[arg-type]
    except ValueError:
        return str(state)


def _camel(state: int) -> str:
    return "".join(p.capitalize() for p in _state_name(state).split("_"))


def _wait(target: int, error: int, transition: int, show: str) -> InfoWait:
    return InfoWait(
        target=target,
        error=error,
        transitions=frozenset({transition}),
        state_name=_camel,
        show=show,
    )


_CLUSTER_CREATE_WAIT: Final = _wait(TS.READY, TS.CREATE_ERROR, TS.CREATING, "ShowClusterInst")
_CLUSTER_UPDATE_WAIT: Final = _wait(TS.READY, TS.UPDATE_ERROR, TS.UPDATING, "ShowClusterInst")
_CLUSTER_DELETE_WAIT: Final = _wait(TS.NOT_PRESENT, TS.DELETE_ERROR, TS.DELETING, "ShowClusterInst")
_APP_CREATE_WAIT: Final = _wait(TS.READY, TS.CREATE_ERROR, TS.CREATING, "ShowAppInst")
_APP_DELETE_WAIT: Final = _wait(TS.NOT_PRESENT, TS.DELETE_ERROR, TS.DELETING, "ShowAppInst")


M = TypeVar("M", bound=Message)


class _NoFit(ResourceExhausted):
    """The resource fit failed on one candidate cloudlet (the next one is tried)."""


def _copy(msg: M) -> M:
    out = type(msg)()
    out.CopyFrom(msg)
    return out


# --- worker reports ---------------------------------------------------------------------


def merge_info(obj: Any, info: Any) -> bool:
    """Apply a worker's Info to its object following §5.2; returns whether it changed.

    Illegal transitions are ignored (late or duplicated reports are harmless); error states
    copy the info's errors, other states clear them. AppInst reports also carry the URI,
    power state and runtime info.
    """
    before = _copy(obj)
    state = int(info.state)
    if state and state != obj.state:
        if state not in _LEGAL.get(int(obj.state), frozenset()):
            log.info(
                "ignoring transition %s -> %s of %s",
                _state_name(obj.state),
                _state_name(state),
                keys.key_string(obj),
            )
            return False
        obj.state = state
    if state:
        del obj.errors[:]
        if state in _ERROR_STATES:
            obj.errors.extend(info.errors)
    if isinstance(obj, appinst_pb2.AppInst):
        if info.uri:
            obj.uri = info.uri
        if info.power_state:
            obj.power_state = info.power_state
        if info.HasField("runtime_info"):
            obj.runtime_info.CopyFrom(info.runtime_info)
    elif isinstance(obj, clusterinst_pb2.ClusterInst):
        if info.HasField("resources") and info.resources != obj.resources:
            obj.resources.CopyFrom(info.resources)
        for k, v in info.infra_annotations.items():
            obj.infra_annotations[k] = v
    return bool(obj != before)


async def _receive(rt: TrackedRuntime, otype: Any, info: Any) -> None:
    published = _copy(info)
    published.ClearField("fields")
    if published.state == TS.DELETE_DONE:
        published.state = TS.NOT_PRESENT  # what a waiting delete looks for
    await rt.tracked.progress.publish_info(
        stream_key(info.key), codec.encode(published), terminal=info.state in _TERMINAL
    )

    def fn(txn: Txn) -> None:
        obj = txn.get(otype, info.key)
        if obj is None:
            return
        if merge_info(obj, info):
            txn.put(obj)

    await rt.engine.apply(fn)


async def receive_cluster_inst_info(
    rt: TrackedRuntime, info: clusterinst_pb2.ClusterInstInfo
) -> None:
    """A ClusterInstInfo from a CRM (notify) or a CCRM stream: publish, merge into etcd."""
    await _receive(rt, CLUSTER_INST, info)


async def receive_app_inst_info(rt: TrackedRuntime, info: appinst_pb2.AppInstInfo) -> None:
    """An AppInstInfo from a CRM (notify) or a CCRM stream: publish, merge into etcd."""
    await _receive(rt, APP_INST, info)


# --- shared machinery -------------------------------------------------------------------


def features_of(caches: Caches, platform_type: str) -> cloudlet_pb2.PlatformFeatures:
    """The stored features of a platform.

    Raises:
        NotFound: `PlatformFeatures key <t> not found`.
    """
    found = caches.get(PLATFORM_FEATURES, platform_type)
    if found is None:
        raise keys.not_found(cloudlet_pb2.PlatformFeatures(platform_type=platform_type))
    return found


def check_cloudlet_ready(
    caches: Caches, key: cloudletkey_pb2.CloudletKey, *, deleting: bool = False
) -> cloudlet_pb2.Cloudlet:
    """The cloudlet readiness gate of §5.5.

    Raises:
        NotFound, FailedPrecondition: With the original's texts.
    """
    cloudlet = caches.get(CLOUDLET, keys.key_string(key))
    if cloudlet is None:
        raise keys.not_found(key)
    info = caches.get(CLOUDLET_INFO, keys.key_string(key))
    if info is None:
        raise FailedPrecondition(f"CloudletInfo not found for Cloudlet {keys.key_string(key)}")
    if deleting and cloudlet.delete_prepare:
        raise keys.being_deleted(key)
    if cloudlet.state in (TS.UPDATE_REQUESTED, TS.UPDATING):
        raise FailedPrecondition(f"cloudlet {keys.key_string(key)} is upgrading")
    if cloudlet.maintenance_state != appcommon_pb2.NORMAL_OPERATION:
        raise FailedPrecondition("cloudlet under maintenance, please try again later")
    if cloudlet.state == TS.UPDATE_ERROR:
        raise FailedPrecondition(
            f"cloudlet {keys.key_string(key)} is in failed upgrade state, please upgrade it "
            "manually"
        )
    if info.state != appcommon_pb2.CLOUDLET_STATE_READY:
        raise FailedPrecondition(
            f"cloudlet {keys.key_string(key)} not ready, state is "
            f"{appcommon_pb2.CloudletState.Name(info.state)}"
        )
    return cloudlet


def zone_cloudlets(caches: Caches, zone: cloudletkey_pb2.ZoneKey) -> list[cloudlet_pb2.Cloudlet]:
    """The cloudlets of a zone, by key.

    Raises:
        InvalidArgument: `zone not specified`.
        NotFound: The zone does not exist.
    """
    if not zone.name:
        raise InvalidArgument("zone not specified")
    if caches.get(ZONE, keys.key_string(zone)) is None:
        raise keys.not_found(zone)
    found = [c for _, c in caches.items(CLOUDLET) if zone_key(c) == zone]
    return sorted(found, key=lambda c: keys.key_string(c.key))


def _cloudlet_usable(caches: Caches, cloudlet: cloudlet_pb2.Cloudlet) -> bool:
    info = caches.get(CLOUDLET_INFO, keys.key_string(cloudlet.key))
    return (
        not cloudlet.delete_prepare
        and cloudlet.state == TS.READY
        and info is not None
        and info.state == appcommon_pb2.CLOUDLET_STATE_READY
    )


def _score(caches: Caches, cloudlet: cloudlet_pb2.Cloudlet) -> int:
    """Free-resource score: vCPU weight 1000, RAM MB weight 1 (higher is better)."""
    info = caches.get(CLOUDLET_INFO, keys.key_string(cloudlet.key))
    limit = _clusterinst.limits(cloudlet, info)
    refs = caches.get(CLOUDLET_REFS, keys.key_string(cloudlet.key))
    clusters = []
    if refs is not None:
        for ck in refs.cluster_insts:
            found = caches.get(CLUSTER_INST, keys.key_string(ck))
            if found is not None:
                clusters.append(found)
    used = _clusterinst.used_resources(clusters)
    free_cpu = limit.get(_clusterinst.RES_VCPUS, 0) - used.get(_clusterinst.RES_VCPUS, 0)
    free_ram = limit.get(_clusterinst.RES_RAM, 0) - used.get(_clusterinst.RES_RAM, 0)
    return free_cpu * 1000 + free_ram


class _OpsBase(TrackedOps):
    async def _run_worker(
        self,
        otype: Any,
        obj: Any,
        state: int,
        paths: list[str],
        stream: OpStream,
        *,
        on_edge: bool,
        wait: InfoWait,
        timeout: float,  # noqa: ASYNC109 - the worker's deadline, in seconds
        info_type: Any,
        receive: Callable[[TrackedRuntime, Any], Awaitable[None]],
        ccrm_apply: Callable[..., Awaitable[None]],
    ) -> None:
        """Run the worker for a requested state; returns when it reached its target.

        A CRM on the edge site is waited for through its `*Info` objects; otherwise the
        cloudlet's CCRM is called with the object (`ccrm_apply`), its infos merged with
        `receive` and their status lines forwarded.
        """
        rt = self._rt
        if on_edge:
            await wait_for_info(
                wait,
                current=self._state(otype, obj.key),
                subscription=stream.subscription,
                decode=lambda data: codec.decode(info_type, data),
                send=stream.send,
                success_msg="",
                timeout=timeout,
            )
            return
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(obj.cloudlet_key))
        if cloudlet is None:
            raise keys.not_found(obj.cloudlet_key)
        features = features_of(rt.caches, cloudlet.platform_type)
        request = _copy(obj)
        request.state = state
        del request.fields[:]
        request.fields.extend(paths)

        async def receive_info(info: Any) -> None:
            await receive(rt, info)

        await ccrm_apply(
            features.node_type,
            request,
            timeout=timeout,
            on_info=self._forward(stream, receive_info),
        )
        if state != TS.DELETE_REQUESTED:
            # the stream closing cleanly is success, whatever the last info said
            await self._set_state(otype, obj.key, TS.READY, only_from=TRANSIENT)

    def _state(self, otype: Any, key: Message) -> int:
        obj = self._rt.caches.get(otype, keys.key_string(key))
        if obj is None or obj.state == TS.DELETE_DONE:
            return TS.NOT_PRESENT
        return int(obj.state)


# --- ClusterInst --------------------------------------------------------------------------


class ClusterInstOps(_OpsBase):
    """ClusterInst create, update and delete (§3.8)."""

    async def create(self, request: clusterinst_pb2.ClusterInst, sink: Sink) -> None:
        """CreateClusterInst: user pre-checks, then the internal create."""
        cluster = _copy(request)
        _clusterinst.precheck_user_create(cluster)
        await self.create_internal(CallContext(), cluster, sink)

    def _candidates(
        self, cctx: CallContext, cluster: clusterinst_pb2.ClusterInst, stream: OpStream
    ) -> list[cloudlet_pb2.Cloudlet]:
        caches = self._rt.caches
        if cluster.cloudlet_key.name:
            found = caches.get(CLOUDLET, keys.key_string(cluster.cloudlet_key))
            if found is None:
                raise keys.not_found(cluster.cloudlet_key)
            if not cctx.ignore_crm and not _cloudlet_usable(caches, found):
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
                cluster, features, _cloudlet_usable(caches, cl)
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
        out.sort(key=lambda c: (-_score(caches, c), keys.key_string(c.key)))
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
            new = _copy(cluster)
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
            if pf.kubernetes_managed_control_plane:
                new.num_masters = 0
            flavor = None
            if new.flavor.name:
                flavor = txn.require(FLAVOR, new.flavor)
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
            for pool in new.node_pools:
                try:
                    pool.node_resources.infra_node_flavor = _clusterinst.select_infra_flavor(
                        pool.node_resources, info.flavors
                    )
                except InvalidArgument as err:
                    raise InvalidArgument(
                        f"failed to select infra flavor for pool {pool.Name}, {err.message}"
                    ) from None
            if new.deployment == "docker":
                new.node_resources.infra_node_flavor = _clusterinst.select_infra_flavor(
                    new.node_resources, info.flavors
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
                    )
            # resource fit (§4.2): every cluster in the refs regardless of state, VM apps
            others = [
                c
                for c in txn.get_many(CLUSTER_INST, list(refs.cluster_insts))
                if c is not None and c.key != new.key
            ]
            vm_apps = [a for a in txn.get_many(APP_INST, list(refs.vm_app_insts)) if a]
            used = _clusterinst.used_resources(others, [a.node_resources for a in vm_apps], pf)
            try:
                _clusterinst.fit_resources(
                    _clusterinst.cluster_resources(new, pf),
                    used,
                    _clusterinst.limits(cl, info),
                )
            except ResourceExhausted as err:
                raise _NoFit(err.message) from None
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
                committed = await rt.engine.apply_at(
                    self._commit_fn(cctx, cluster, cl.key, notes, auto_reservable=auto_reservable),
                )
                break
            except _NoFit as err:
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
            if isinstance(err, asyncio.CancelledError):
                await self._set_state(
                    CLUSTER_INST,
                    stored.key,
                    TS.CREATE_ERROR,
                    errors=["operation cancelled"],
                    only_from=TRANSIENT,
                )
                return
            message = err.message if isinstance(err, EdgeError) else str(err)
            await self._set_state(CLUSTER_INST, stored.key, TS.CREATE_ERROR, errors=[message])
            await stream.send("DELETING ClusterInst due to failures")
            try:
                await self._remove(stored.key)
            except EdgeError as undo_err:
                log.warning("undo of cluster create %s failed: %s", stored.key, undo_err)

        async def gone() -> bool:
            return rt.caches.get(CLUSTER_INST, keys.key_string(stored.key)) is None

        await self._run(
            stream,
            revision,
            work,
            on_error=on_error,
            cleanup_on_error=gone,
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
            wait, timeout = _CLUSTER_CREATE_WAIT, settings.create_cluster_inst_timeout
        elif state == TS.UPDATE_REQUESTED:
            wait, timeout = _CLUSTER_UPDATE_WAIT, settings.update_cluster_inst_timeout
        else:
            wait, timeout = _CLUSTER_DELETE_WAIT, settings.delete_cluster_inst_timeout
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
            if current.dns_label:
                txn.delete_key(
                    _clusterinst.cloudlet_object_label_key(
                        keys.key_string(current.cloudlet_key), current.dns_label
                    )
                )
            if txn.get(CLUSTER_REFS, key) is not None:
                txn.delete(CLUSTER_REFS, key)
            txn.delete(CLUSTER_INST, key)

        await self._rt.engine.apply_at(remove)

    async def delete(self, request: clusterinst_pb2.ClusterInst, sink: Sink) -> None:
        """DeleteClusterInst: in-use and state checks, delete-prepare, worker, removal."""
        await self.delete_internal(CallContext(), _copy(request), sink)

    async def delete_internal(
        self, cctx: CallContext, request: clusterinst_pb2.ClusterInst, sink: Sink
    ) -> None:
        """The delete, also used for idle reservable clusters and autocluster undo."""
        rt = self._rt
        cctx.take_override(request)
        key = _copy(request.key)
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
                        auto_delete.append(_copy(user_key))
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
        req = _copy(request)
        cctx.take_override(req)
        paths = [p for p in req.fields if p != "6"]
        if not paths:
            raise InvalidArgument("nothing specified to update")
        fields.check_updatable(paths, _UPDATABLE_CLUSTER, clusterinst_pb2.ClusterInst.DESCRIPTOR)
        key = req.key
        current = rt.caches.get(CLUSTER_INST, keys.key_string(key))
        if current is None:
            raise keys.not_found(key)
        if not cctx.ignore_crm:
            check_cloudlet_ready(rt.caches, current.cloudlet_key)
        stream = self._stream(cctx, key, sink)
        notes: list[str] = []

        def commit(txn: Txn) -> clusterinst_pb2.ClusterInst | None:
            notes.clear()
            stored = txn.get(CLUSTER_INST, key)
            if stored is None:
                raise keys.not_found(key)
            if stored.delete_prepare:
                raise keys.being_deleted(key)
            merged = _copy(stored)
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
            if merged.enable_ipv6 != stored.enable_ipv6 and merged.deployment == "kubernetes":
                raise InvalidArgument("cannot change IPv6 setting on Kubernetes clusters")
            if merged == stored:
                return None
            if stored.state == TS.UPDATE_ERROR:
                notes.append(f"previous update failed, [{' '.join(stored.errors)}], trying again")
            elif stored.state != TS.READY:
                raise FailedPrecondition("ClusterInst busy, cannot update")
            merged.updated_at.CopyFrom(_ids.now_timestamp())
            merged.state = TS.READY if cctx.ignore_crm else TS.UPDATE_REQUESTED
            txn.put(merged)
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
                await self.delete_internal(CallContext(), _copy(cluster), lambda _line: None)
            except EdgeError as err:
                log.info("idle reservable cluster %s not deleted: %s", cluster.key, err)


# --- AppInst ------------------------------------------------------------------------------


def _app_key_text(key: app_pb2.AppKey) -> str:
    return keys.key_string(key)


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


def _has_resources(app: app_pb2.App) -> bool:
    if app.deployment in ("kubernetes", "helm"):
        kr = app.kubernetes_resources
        return bool(kr.cpu_pool.total_vcpus.whole or kr.cpu_pool.total_vcpus.nanos)
    return bool(app.node_resources.vcpus)


class AppInstOps(_OpsBase):
    """AppInst create, update and delete (§3.9)."""

    def __init__(self, runtime: TrackedRuntime, clusters: ClusterInstOps) -> None:
        super().__init__(runtime)
        self._clusters = clusters

    # -- create ------------------------------------------------------------------------------

    async def create(self, request: appinst_pb2.AppInst, sink: Sink) -> None:
        """CreateAppInst: pre-checks, cluster choice (or autocluster), commit, worker."""
        rt = self._rt
        cctx = CallContext()
        inst = _copy(request)
        cctx.take_override(inst)
        _appinst.precheck_create(inst)
        app = rt.caches.get(APP, keys.key_string(inst.app_key))
        if app is None:
            raise keys.not_found(inst.app_key)
        if app.delete_prepare:
            raise keys.being_deleted(inst.app_key)
        _appinst.vm_cluster_checks(inst, app)
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
                        CallContext(override=TS.IGNORE_CRM_ERRORS), _copy(auto_cluster), sink
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
            if not cctx.ignore_crm and not _cloudlet_usable(caches, found):
                raise FailedPrecondition(
                    f"cannot deploy to cloudlet {inst.cloudlet_key.name}, site is unavailable"
                )
            return [found]
        zone = inst.zone_key
        cloudlets = zone_cloudlets(caches, zone)
        usable = [c for c in cloudlets if cctx.ignore_crm or _cloudlet_usable(caches, c)]
        if not usable:
            if cloudlets:
                raise FailedPrecondition(
                    f"no available edge sites in zone {zone.name}, some sites were skipped "
                    "because site is unavailable"
                )
            raise FailedPrecondition(f"no available edge sites in zone {zone.name}")
        usable.sort(key=lambda c: (-_score(caches, c), keys.key_string(c.key)))
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
                    probe = _copy(inst)
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
            attempt = _copy(cluster)
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
            try:
                committed = await rt.engine.apply_at(self._commit_fn(cctx, inst, target))
                break
            except _NoFit as err:
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
            if isinstance(err, asyncio.CancelledError):
                await self._set_state(
                    APP_INST,
                    stored.key,
                    TS.CREATE_ERROR,
                    errors=["operation cancelled"],
                    only_from=TRANSIENT,
                )
                return
            message = err.message if isinstance(err, EdgeError) else str(err)
            await self._set_state(APP_INST, stored.key, TS.CREATE_ERROR, errors=[message])
            await stream.send("Deleting AppInst due to failure")
            try:
                await self._remove(stored.key)
            except EdgeError as undo_err:
                log.warning("undo of AppInst create %s failed: %s", stored.key, undo_err)

        async def gone() -> bool:
            return rt.caches.get(APP_INST, keys.key_string(stored.key)) is None

        await self._run(
            stream,
            revision,
            work,
            on_error=on_error,
            cleanup_on_error=gone,
            subscribe=on_edge and not cctx.ignore_crm,
        )

    def _commit_fn(
        self,
        cctx: CallContext,
        inst: appinst_pb2.AppInst,
        vm_cloudlet: cloudletkey_pb2.CloudletKey | None,
    ) -> Callable[[Txn], appinst_pb2.AppInst]:
        rt = self._rt
        cfg = rt.config

        def commit(txn: Txn) -> appinst_pb2.AppInst:
            new = _copy(inst)
            existing = txn.get(APP_INST, new.key)
            if existing is not None and not (
                existing.state == TS.DELETE_ERROR or cctx.undo or cctx.ignore_transient
            ):
                raise keys.already_exists(new.key)
            if existing is not None:
                raise FailedPrecondition(
                    f"AppInst {keys.key_string(new.key)} still exists in state "
                    f"{_state_name(existing.state)}, delete it first"
                )
            app = txn.require(APP, new.app_key)
            cluster: clusterinst_pb2.ClusterInst | None = None
            others: list[appinst_pb2.AppInst] = []
            crefs: refs_pb2.ClusterRefs | None = None
            if app.deployment == "vm":
                assert vm_cloudlet is not None  # noqa: S101 - VM apps get cloudlet targets
                cloudlet_key = vm_cloudlet
            else:
                cluster = txn.require(CLUSTER_INST, new.cluster_key)
                reserve = _appinst.check_cluster_use(new, app, cluster)
                cloudlet_key = cluster.cloudlet_key
                crefs = txn.get(CLUSTER_REFS, cluster.key) or refs_pb2.ClusterRefs(key=cluster.key)
                others = [o for o in txn.get_many(APP_INST, list(crefs.apps)) if o is not None]
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
            refs = txn.get(CLOUDLET_REFS, cl.key) or refs_pb2.CloudletRefs(key=cl.key)
            if app.deployment == "vm":
                info = txn.get(CLOUDLET_INFO, cl.key)
                if info is None:
                    raise FailedPrecondition(
                        f"No resource information found for Cloudlet {keys.key_string(cl.key)}"
                    )
                new.node_resources.infra_node_flavor = _clusterinst.select_infra_flavor(
                    new.node_resources, info.flavors
                )
                new.vm_flavor = new.node_resources.infra_node_flavor
                clusters = [c for c in txn.get_many(CLUSTER_INST, list(refs.cluster_insts)) if c]
                vms = [a for a in txn.get_many(APP_INST, list(refs.vm_app_insts)) if a]
                used = _clusterinst.used_resources(clusters, [a.node_resources for a in vms], pf)
                want: dict[str, int] = {}
                _clusterinst.add_nodes(want, new.node_resources, 1)
                try:
                    _clusterinst.fit_resources(want, used, _clusterinst.limits(cl, info))
                except ResourceExhausted as err:
                    raise _NoFit(err.message) from None
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
            air = txn.get(APP_INST_REFS, app.key) or refs_pb2.AppInstRefs(key=app.key)
            air.insts[keys.key_string(new.key)] = 1
            txn.put(air)
            if crefs is not None:
                if new.key not in crefs.apps:
                    crefs.apps.append(new.key)
                txn.put(crefs)
            txn.put(refs)
            txn.put_key(
                _appinst.APP_INST_ID_PREFIX + new.unique_id,
                keys.key_string(new.key).encode(),
            )
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
            wait, timeout = _APP_CREATE_WAIT, settings.create_app_inst_timeout
        elif state == TS.UPDATE_REQUESTED:
            wait = _wait(TS.READY, TS.UPDATE_ERROR, TS.UPDATING, "ShowAppInst")
            timeout = settings.update_app_inst_timeout
        else:
            wait, timeout = _APP_DELETE_WAIT, settings.delete_app_inst_timeout
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

        await self._rt.engine.apply_at(remove)

    # -- delete ------------------------------------------------------------------------------

    async def delete(self, request: appinst_pb2.AppInst, sink: Sink) -> None:
        """DeleteAppInst: state checks, DeleteRequested, worker, removal with its refs."""
        await self.delete_internal(CallContext(), _copy(request), sink)

    async def delete_internal(
        self, cctx: CallContext, request: appinst_pb2.AppInst, sink: Sink
    ) -> None:
        """The delete, also for App auto-deletes."""
        rt = self._rt
        cctx.take_override(request)
        key = _copy(request.key)
        current = rt.caches.get(APP_INST, keys.key_string(key))
        if current is None:
            raise keys.not_found(key)
        validate_delete_state(cctx, "AppInst", current.state)
        if not (cctx.ignore_crm or cctx.undo or cctx.skip_cloudlet_ready_check):
            check_cloudlet_ready(rt.caches, current.cloudlet_key, deleting=True)
        stream = self._stream(cctx, key, sink)

        def mark(txn: Txn) -> appinst_pb2.AppInst:
            inst = txn.get(APP_INST, key)
            if inst is None:
                raise keys.not_found(key)
            validate_delete_state(cctx, "AppInst", inst.state)
            if txn.get(APP, inst.app_key) is None:
                raise NotFound(f"For AppInst, {keys.not_found(inst.app_key).message}")
            if inst.cluster_key.name and txn.get(CLUSTER_INST, inst.cluster_key) is None:
                raise NotFound(f"For AppInst, {keys.not_found(inst.cluster_key).message}")
            inst.state = TS.DELETE_REQUESTED
            txn.put(inst)
            air = txn.get(APP_INST_REFS, inst.app_key)
            if air is not None:
                air.delete_requested_insts[keys.key_string(key)] = 1
                txn.put(air)
            return inst

        inst, revision = await rt.engine.apply_at(mark)
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
                await rt.engine.apply(restore)
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
        self, request: appinst_pb2.AppInst, sink: Sink, *, force: bool = False
    ) -> None:
        """UpdateAppInst: power-state rules; stored field changes, pushed by a refresh.

        Args:
            request: Key, `fields` and new values.
            sink: Progress lines.
            force: Run the worker even when nothing stored changes (forced refresh).
        """
        rt = self._rt
        cctx = CallContext()
        req = _copy(request)
        cctx.take_override(req)
        paths = [p for p in req.fields if p != "16"]
        if not paths:
            raise InvalidArgument("nothing specified to update")
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
        if ("55" in paths or "56" in paths) and app is not None and app.deployment == "vm":
            raise InvalidArgument("cannot modify resources allocated to VM deployments")
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
            merged = _copy(stored)
            fields.apply_fields(merged, req, paths)
            if merged == stored and not force:
                return None
            if stored.state not in (TS.READY, TS.UPDATE_ERROR):
                raise FailedPrecondition("AppInst busy, cannot update")
            merged.updated_at.CopyFrom(_ids.now_timestamp())
            merged.state = TS.READY if cctx.ignore_crm else TS.UPDATE_REQUESTED
            txn.put(merged)
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
            forced = _copy(inst)
            forced.fields.append("24")
            forced.revision = app.revision if app is not None else inst.revision
            try:
                await self.update(forced, sink, force=request.force_update)
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


# --- recovery -------------------------------------------------------------------------------

_FAILED_STATE: Final[dict[int, int]] = {
    TS.CREATE_REQUESTED: TS.CREATE_ERROR,
    TS.CREATING: TS.CREATE_ERROR,
    TS.CREATING_DEPENDENCIES: TS.CREATE_ERROR,
    TS.UPDATE_REQUESTED: TS.UPDATE_ERROR,
    TS.UPDATING: TS.UPDATE_ERROR,
    TS.DELETE_PREPARE: TS.DELETE_ERROR,
    TS.DELETE_REQUESTED: TS.DELETE_ERROR,
    TS.DELETING: TS.DELETE_ERROR,
}


class InstRecovery:
    """Recovery (§5.8) of ClusterInst or AppInst operations whose controller is gone.

    A CRM on the edge keeps working without the API call (its report reaches some
    controller), so such objects are left alone until the operation's timeout has passed;
    everything else died with its controller and gets the error state of its operation
    (delete-prepare cleared), from which a user may delete or re-create it. The progress
    stream gets an error entry so `Stream<Obj>` readers end.

    Args:
        runtime: The runtime.
        otype: `CLUSTER_INST` or `APP_INST`.
    """

    def __init__(self, runtime: TrackedRuntime, otype: Any) -> None:
        self._rt = runtime
        self._otype = otype

    def stuck(self, caches: Caches) -> list[tuple[str, Message]]:
        """Objects in transient states, with their stream names."""
        return [
            (stream_key(obj.key), obj)
            for _, obj in caches.items(self._otype)
            if obj.state in _FAILED_STATE
        ]

    def _timeout(self, state: int) -> float:
        s = self._rt.settings()
        cluster = self._otype is CLUSTER_INST
        if state in (TS.CREATE_REQUESTED, TS.CREATING, TS.CREATING_DEPENDENCIES):
            return seconds(s.create_cluster_inst_timeout if cluster else s.create_app_inst_timeout)
        if state in (TS.UPDATE_REQUESTED, TS.UPDATING):
            return seconds(s.update_cluster_inst_timeout if cluster else s.update_app_inst_timeout)
        return seconds(s.delete_cluster_inst_timeout if cluster else s.delete_app_inst_timeout)

    async def recover(self, obj: Message, start: Any, reason: str) -> None:
        """Fail (or, for a CRM on the edge still in time, leave) one orphaned object."""
        rt = self._rt
        inst: Any = obj
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(inst.cloudlet_key))
        on_edge = cloudlet is not None and cloudlet.crm_on_edge
        worker_states = {TS.CREATE_REQUESTED, TS.CREATING, TS.UPDATE_REQUESTED, TS.UPDATING}
        worker_states |= {TS.DELETE_REQUESTED, TS.DELETING}
        if (
            on_edge
            and inst.state in worker_states
            and time.time() < start.started_at + self._timeout(inst.state)
        ):
            return
        message = f"{reason}; operation abandoned in state {_state_name(inst.state)}"
        expected = int(inst.state)
        failed = _FAILED_STATE[expected]
        otype = self._otype

        def fail(txn: Txn) -> bool:
            current = txn.get(otype, inst.key)
            if current is None or current.state != expected:
                return False
            current.state = failed
            del current.errors[:]
            current.errors.append(message)
            if getattr(current, "delete_prepare", False):
                current.delete_prepare = False
            txn.put(current)
            return True

        if not await rt.engine.apply(fail):
            return
        log.warning("%s %s: %s", otype.name, keys.key_string(inst.key), message)
        await rt.tracked.progress.add(stream_key(inst.key), {ERROR: message}, start.op_id)
