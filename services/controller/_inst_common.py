"""What the ClusterInst and AppInst operations share (controller.md §3.8, §3.9, §5).

The operations themselves live in `_clusterinst_ops` and `_appinst_ops`; this module holds
their common ground: the state names and waits, the legal worker transitions of §5.2 and
the merge of worker reports (`receive_*_info`), the cloudlet readiness gate and candidate
scoring, the worker runner (`InstOpsBase`) and the recovery of orphaned operations.

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
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    refs_pb2,
    restagtable_pb2,
    zone_pb2,
)
from google.protobuf.message import Message

from edge_cloud.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)
from edge_cloud.objects import codec, fields, keys, registry
from services.controller import _clusterinst, _usage
from services.controller._cloudlet import zone_key
from services.controller._cloudletinfo import CLOUDLET, CLOUDLET_INFO
from services.controller._engine import Txn
from services.controller._progress import ERROR, OpStream, stream_key
from services.controller._sync import Caches
from services.controller._tracked import (
    TRANSIENT,
    InfoWait,
    TrackedOps,
    TrackedRuntime,
    seconds,
    wait_for_info,
)

__all__ = [
    "APP",
    "APP_CREATE_WAIT",
    "APP_DELETE_WAIT",
    "APP_INST",
    "APP_INST_ALL_FIELDS",
    "APP_INST_CREATED",
    "APP_INST_DELETED",
    "APP_INST_REFS",
    "APP_INST_STATE_FIELD",
    "APP_INST_UPDATED",
    "AUTOSCALE",
    "CLOUDLET_REFS",
    "CLUSTER_ALL_FIELDS",
    "CLUSTER_CREATED",
    "CLUSTER_CREATE_WAIT",
    "CLUSTER_DELETED",
    "CLUSTER_DELETE_WAIT",
    "CLUSTER_INST",
    "CLUSTER_REFS",
    "CLUSTER_STATE_FIELD",
    "CLUSTER_UPDATED",
    "CLUSTER_UPDATE_WAIT",
    "FLAVOR",
    "PLATFORM_FEATURES",
    "RES_TAG_TABLE",
    "TERMINAL",
    "InstOpsBase",
    "InstRecovery",
    "NoFit",
    "check_cloudlet_ready",
    "cloudlet_res_tags",
    "cloudlet_score",
    "cloudlet_usable",
    "copy_msg",
    "features_of",
    "info_wait",
    "merge_info",
    "receive_app_inst_info",
    "receive_cluster_inst_info",
    "state_name",
    "store_key_of",
    "zone_cloudlets",
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
RES_TAG_TABLE: Final = registry.by_class(restagtable_pb2.ResTagTable)

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
TERMINAL: Final = frozenset(
    {TS.READY, TS.CREATE_ERROR, TS.UPDATE_ERROR, TS.DELETE_ERROR, TS.NOT_PRESENT, TS.DELETE_DONE}
)


def state_name(state: int) -> str:
    try:
        return common_pb2.TrackedState.Name(state)  # type: ignore[arg-type]
    except ValueError:
        return str(state)


def _camel(state: int) -> str:
    return "".join(p.capitalize() for p in state_name(state).split("_"))


def info_wait(target: int, error: int, transition: int, show: str) -> InfoWait:
    return InfoWait(
        target=target,
        error=error,
        transitions=frozenset({transition}),
        state_name=_camel,
        show=show,
    )


CLUSTER_CREATE_WAIT: Final = info_wait(TS.READY, TS.CREATE_ERROR, TS.CREATING, "ShowClusterInst")
CLUSTER_UPDATE_WAIT: Final = info_wait(TS.READY, TS.UPDATE_ERROR, TS.UPDATING, "ShowClusterInst")
CLUSTER_DELETE_WAIT: Final = info_wait(
    TS.NOT_PRESENT, TS.DELETE_ERROR, TS.DELETING, "ShowClusterInst"
)
APP_CREATE_WAIT: Final = info_wait(TS.READY, TS.CREATE_ERROR, TS.CREATING, "ShowAppInst")
APP_DELETE_WAIT: Final = info_wait(TS.NOT_PRESENT, TS.DELETE_ERROR, TS.DELETING, "ShowAppInst")


M = TypeVar("M", bound=Message)


class NoFit(ResourceExhausted):
    """The resource fit failed on one candidate cloudlet (the next one is tried)."""


def copy_msg(msg: M) -> M:
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
    before = copy_msg(obj)
    state = int(info.state)
    if state and state != obj.state:
        if state not in _LEGAL.get(int(obj.state), frozenset()):
            log.info(
                "ignoring transition %s -> %s of %s",
                state_name(obj.state),
                state_name(state),
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
        if info.HasField("cloudlet_managed_cluster_info"):  # a registered pre-existing cluster
            obj.kubernetes_version = info.cloudlet_managed_cluster_info.kubernetes_version
            del obj.node_pools[:]
            obj.node_pools.extend(info.cloudlet_managed_cluster_info.node_pools)
    return bool(obj != before)


async def _receive(rt: TrackedRuntime, otype: Any, info: Any) -> None:
    """Merge a worker's report into etcd, then publish it to the waiting caller.

    In this order, a caller that sees the terminal report (and returns success) can rely
    on etcd, and this controller's caches, holding the new state already: a Show right
    after it lists READY, and a delete right after a create is not refused as busy.
    """
    if not _changes_nothing(rt, otype, info):

        def fn(txn: Txn) -> None:
            obj = txn.get(otype, info.key)
            if obj is None:
                return
            if merge_info(obj, info):
                txn.put(obj)

        await rt.engine.apply(fn, reads=[store_key_of(otype, info.key)], from_caches=True)

    published = copy_msg(info)
    published.ClearField("fields")
    if published.state == TS.DELETE_DONE:
        published.state = TS.NOT_PRESENT  # what a waiting delete looks for
    await rt.tracked.progress.publish_info(
        stream_key(info.key), codec.encode(published), terminal=info.state in TERMINAL
    )


def _changes_nothing(rt: TrackedRuntime, otype: Any, info: Any) -> bool:
    """Whether a report can be dropped without asking etcd: it repeats the cached state.

    Most reports of a CCRM stream only carry new status lines (already forwarded). The
    caches lag etcd, never lead it, and the legal moves of §5.2 only go forward: if the
    report's state (or none) changes nothing on the cached object, it cannot change the
    stored one either, except when the object was re-created since, and then the report
    belongs to the old operation and must not be merged anyway.
    """
    cached = rt.caches.get(otype, keys.key_string(info.key))
    if cached is None or (info.state and info.state != cached.state):
        return False
    return not merge_info(cached, info)


async def receive_cluster_inst_info(
    rt: TrackedRuntime, info: clusterinst_pb2.ClusterInstInfo
) -> None:
    """A ClusterInstInfo from a CRM (notify) or a CCRM stream: publish, merge into etcd."""
    await _receive(rt, CLUSTER_INST, info)


async def receive_app_inst_info(rt: TrackedRuntime, info: appinst_pb2.AppInstInfo) -> None:
    """An AppInstInfo from a CRM (notify) or a CCRM stream: publish, merge into etcd."""
    await _receive(rt, APP_INST, info)


# --- shared machinery -------------------------------------------------------------------


def store_key_of(otype: Any, key: Message | str) -> str:
    """The etcd key of an object of `otype` (for prefetch lists and commit turns)."""
    return keys.store_key(otype.name, keys.key_string(key))


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


def cloudlet_usable(caches: Caches, cloudlet: cloudlet_pb2.Cloudlet) -> bool:
    info = caches.get(CLOUDLET_INFO, keys.key_string(cloudlet.key))
    return (
        not cloudlet.delete_prepare
        and cloudlet.state == TS.READY
        and info is not None
        and info.state == appcommon_pb2.CLOUDLET_STATE_READY
    )


def cloudlet_res_tags(
    txn: Txn, cloudlet: cloudlet_pb2.Cloudlet
) -> dict[str, restagtable_pb2.ResTagTable] | None:
    """The cloudlet's res-tag tables read in the transaction, for infra flavor matching.

    Read with `get`, so a table edited meanwhile re-runs the transaction and the flavor
    chosen always matches the tables in force at commit.
    """
    return _clusterinst.res_tag_tables(cloudlet, lambda key: txn.get(RES_TAG_TABLE, key))


def cloudlet_score(caches: Caches, cloudlet: cloudlet_pb2.Cloudlet) -> int:
    """Placement order of candidate cloudlets: the original's free-resource score.

    The same number `GetCloudletResourceUsage` reports (`_usage.resource_score` over
    `_usage.controller_used`: ClusterInsts and VM AppInsts), so placement never disagrees
    with what an operator is shown. Higher is better; a cloudlet without limits scores
    the maximum.
    """
    info = caches.get(CLOUDLET_INFO, keys.key_string(cloudlet.key))
    if info is None:
        return 0
    return _usage.resource_score(cloudlet, info, _usage.controller_used(caches, cloudlet))


class InstOpsBase(TrackedOps):
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
                refresh=lambda: self._stored(otype, obj.key),
            )
            return
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(obj.cloudlet_key))
        if cloudlet is None:
            raise keys.not_found(obj.cloudlet_key)
        features = features_of(rt.caches, cloudlet.platform_type)
        request = copy_msg(obj)
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
        if state != TS.DELETE_REQUESTED and self._state(otype, obj.key) != TS.READY:
            # the stream closing cleanly is success, whatever the last info said (when its
            # READY report was merged, the caches already say so: nothing to write)
            await self._set_state(otype, obj.key, TS.READY, only_from=TRANSIENT)

    def _state(self, otype: Any, key: Message) -> int:
        obj = self._rt.caches.get(otype, keys.key_string(key))
        if obj is None or obj.state == TS.DELETE_DONE:
            return TS.NOT_PRESENT
        return int(obj.state)


# --- ClusterInst --------------------------------------------------------------------------


# --- recovery -------------------------------------------------------------------------------

FAILED_STATE: Final[dict[int, int]] = {
    TS.CREATE_REQUESTED: TS.CREATE_ERROR,
    TS.CREATING: TS.CREATE_ERROR,
    TS.CREATING_DEPENDENCIES: TS.CREATE_ERROR,
    TS.UPDATE_REQUESTED: TS.UPDATE_ERROR,
    TS.UPDATING: TS.UPDATE_ERROR,
    TS.DELETE_PREPARE: TS.DELETE_ERROR,
    TS.DELETE_REQUESTED: TS.DELETE_ERROR,
    TS.DELETING: TS.DELETE_ERROR,
}

#: What the stored encoding of an object in a transient state holds: the state by name (as
#: the codec writes enums) or, written by another encoder, by number. Lets the start-up
#: recovery pass skip the stored bytes of READY objects without decoding them.
_STATE_TOKENS: Final[tuple[bytes, ...]] = tuple(
    token
    for state in FAILED_STATE
    for token in (
        f'"{state_name(state)}"'.encode(),
        f'"state":{state}'.encode(),
        f'"state": {state}'.encode(),
    )
)


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
            for _, obj in caches.items_containing(self._otype, _STATE_TOKENS)
            if obj.state in FAILED_STATE
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
        message = f"{reason}; operation abandoned in state {state_name(inst.state)}"
        expected = int(inst.state)
        failed = FAILED_STATE[expected]
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
