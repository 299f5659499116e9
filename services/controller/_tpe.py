"""Applying TrustPolicyExceptions to the instances they cover (controller.md §3.12, §6).

A TrustPolicyException (TPE) opens extra egress rules for one App on the zones of one
ZonePool. What actually gets opened is per instance: for each AppInst of the App on a
cloudlet of those zones, a `TPEInstanceState` record (key: TPE, AppInst, its cluster, its
cloudlet) says whether the exception is enabled there (`tpe_enable`) or why not
(`disable_reason`). Enabled needs, as in the original: the AppInst READY, the TPE ACTIVE,
the cluster with dedicated IP access, the cloudlet under a trust policy, and the cloudlet's
zone in the pool.

Why a record per instance and a counter: a CRM on the edge site learns of changes only
through notify, so each evaluation bumps `run_count` in the same write that sets
`tpe_enable`; a CRM acts on a higher count (`edge_cloud.crmutil.TpeWork`). For cloudlets
run by a CCRM the Controller calls `ApplyTrustPolicyException` itself after each write.

Several triggers may ask for the same instance at once (a TPE update, a pool change, the
AppInst becoming ready). As the original's `runTPEChange`, one runner owns a record at a
time (`owner`, taken in an etcd transaction); a second trigger only sets `run_requested`
and the owner runs once more. An owner is `<controller id>/<random>`: a record whose
runner's controller has lost its leased Controller record is taken over at once (when that
record goes, and when a Controller starts), any other after an hour as in the original.

Unlike the original, a record whose TPE, AppInst, cluster, cloudlet or pool is gone is
first disabled (one more run with `tpe_enable` false, so the platform closes the rules)
and only then deleted: the original deleted it straight away, which left an active
exception open on the cloudlet after a TPE delete.

`TpeApplier.follow` hooks the applier to the Controller's caches, so every trigger is
seen whichever API (or worker report) caused it: TPE state changes and deletes, ZonePool
membership changes, AppInsts becoming ready or going away, cloudlets changing trust policy
or zone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from edgeproto import (
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    controller_pb2,
    trustpolicyexception_pb2,
    zonepool_pb2,
)
from google.protobuf.message import Message

from edge_cloud.errors import EdgeError
from edge_cloud.objects import keys, registry
from edge_cloud.objects.registry import ObjectType
from services.controller import _ids
from services.controller._engine import Txn
from services.controller._inst_common import features_of
from services.controller._runtime import Runtime
from services.controller._sync import Caches
from services.controller._tracked import CONTROLLER, TrackedRuntime, live_controllers

__all__ = [
    "APPLY_TIMEOUT",
    "STALE_OWNER",
    "TPE",
    "TPE_INSTANCE",
    "Target",
    "TpeApplier",
    "enabled",
    "targets_for_tpe",
]

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=Message)

TPE: Final = registry.by_class(trustpolicyexception_pb2.TrustPolicyException)
TPE_INSTANCE: Final = registry.by_class(trustpolicyexception_pb2.TPEInstanceState)
APP_INST: Final = registry.by_class(appinst_pb2.AppInst)
CLOUDLET: Final = registry.by_class(cloudlet_pb2.Cloudlet)
CLUSTER_INST: Final = registry.by_class(clusterinst_pb2.ClusterInst)
ZONE_POOL: Final = registry.by_class(zonepool_pb2.ZonePool)

TS = common_pb2
ACTIVE: Final = trustpolicyexception_pb2.TRUST_POLICY_EXCEPTION_STATE_ACTIVE
STALE_OWNER: Final = 3600.0
"""Seconds after which a runner that never finished is presumed dead and taken over."""
APPLY_TIMEOUT: Final = 60.0
"""Deadline in seconds of one `ApplyTrustPolicyException` call to a CCRM."""


@dataclass(frozen=True, slots=True)
class Target:
    """One instance a TPE may apply to: the TPEInstanceKey, as its key string."""

    key: str

    @staticmethod
    def of(
        tpe_key: trustpolicyexception_pb2.TrustPolicyExceptionKey,
        inst: appinst_pb2.AppInst,
    ) -> Target:
        """The target of a TPE on one AppInst (its cluster and cloudlet from the AppInst)."""
        key = trustpolicyexception_pb2.TPEInstanceKey()
        key.tpe_key.CopyFrom(tpe_key)
        key.app_inst_key.CopyFrom(inst.key)
        key.cluster_key.CopyFrom(inst.cluster_key)
        key.cloudlet_key.CopyFrom(inst.cloudlet_key)
        return Target(keys.key_string(key))

    def parsed(self) -> trustpolicyexception_pb2.TPEInstanceKey:
        """The key message."""
        return keys.parse_key_string(trustpolicyexception_pb2.TPEInstanceKey, self.key)


def enabled(
    inst: appinst_pb2.AppInst,
    tpe: trustpolicyexception_pb2.TrustPolicyException,
    cluster: clusterinst_pb2.ClusterInst,
    cloudlet: cloudlet_pb2.Cloudlet,
    pool: zonepool_pb2.ZonePool,
) -> tuple[bool, str]:
    """Whether the TPE is open on this instance, else why not (the original's reasons)."""
    if inst.state != TS.READY:
        return False, "appInst state not ready"
    if tpe.state != ACTIVE:
        return False, "trust policy exception state is not active"
    if cluster.ip_access != common_pb2.IP_ACCESS_DEDICATED:
        return False, "clusterInst IP Access is not dedicated"
    if not cloudlet.trust_policy:
        return False, "cloudlet has no trust policy"
    if not cloudlet.zone or _zone_of(cloudlet) not in list(pool.zones):
        return False, "zone not in trust policy exception zone pool"
    return True, ""


def _zone_of(cloudlet: cloudlet_pb2.Cloudlet) -> cloudletkey_pb2.ZoneKey:
    return cloudletkey_pb2.ZoneKey(
        organization=cloudlet.key.organization,
        name=cloudlet.zone,
        federated_organization=cloudlet.key.federated_organization,
    )


def _cloudlets_in(caches: Caches, zones: Iterable[cloudletkey_pb2.ZoneKey]) -> set[str]:
    wanted = list(zones)
    return {
        k for k, c in caches.items(CLOUDLET) if c.zone and any(_zone_of(c) == z for z in wanted)
    }


def targets_for_tpe(
    caches: Caches,
    tpe_key: trustpolicyexception_pb2.TrustPolicyExceptionKey,
    zones: Iterable[cloudletkey_pb2.ZoneKey] | None = None,
) -> list[Target]:
    """Instances a TPE covers in `zones` (default: its pool's), plus records it already has.

    The existing records are included so that instances no longer covered (a zone left the
    pool, an AppInst moved away) are evaluated again and closed.
    """
    restricted = zones is not None
    if zones is None:
        pool = caches.get(ZONE_POOL, keys.key_string(tpe_key.zone_pool_key))
        zones = list(pool.zones) if pool is not None else []
    cloudlets = _cloudlets_in(caches, zones)
    found: dict[str, None] = {}
    for _, inst in caches.items(APP_INST):
        if inst.app_key == tpe_key.app_key and keys.key_string(inst.cloudlet_key) in cloudlets:
            found[Target.of(tpe_key, inst).key] = None
    for key, state in caches.items(TPE_INSTANCE):
        if state.key.tpe_key != tpe_key:
            continue
        if not restricted or keys.key_string(state.key.cloudlet_key) in cloudlets:
            found[key] = None
    return [Target(k) for k in found]


class TpeApplier:
    """Keeps TPEInstanceState records (and the platforms) in line with the TPEs.

    Args:
        runtime: The Controller runtime; CCRM calls need a `TrackedRuntime`.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._tasks: set[asyncio.Task[None]] = set()

    # -- triggers ----------------------------------------------------------------------------

    def follow(self) -> None:
        """Re-evaluate on every relevant change the Controller's caches see (see module doc).

        Records a runner of a controller that is gone left owned are taken over now, and
        whenever a controller's record goes away later.
        """
        self._rt.engine.sync.subscribe(self._changed)
        self.apply(self._orphans())

    def _me(self) -> str:
        """A new runner id: `<controller id>/<random>`, so a dead controller's are known."""
        rt = self._rt
        prefix = rt.tracked.controller_id if isinstance(rt, TrackedRuntime) else ""
        return f"{prefix}/{uuid.uuid4().hex}"

    def _orphaned(self, owner: str, started: int, live: set[str]) -> bool:
        """Whether a record's runner is presumed dead: too old, or its controller is gone."""
        if time.time() - started >= STALE_OWNER:
            return True
        controller, sep, _ = owner.rpartition("/")
        return bool(sep and controller) and controller not in live

    def _orphans(self, gone: str | None = None) -> list[Target]:
        """Records whose runner is presumed dead (only those of controller `gone` if given)."""
        caches = self._rt.engine.caches
        live = live_controllers(caches)
        out: list[Target] = []
        for key, state in caches.items(TPE_INSTANCE):
            if not state.owner:
                continue
            if gone is not None and not state.owner.startswith(f"{gone}/"):
                continue
            if self._orphaned(state.owner, state.started_at.seconds, live):
                out.append(Target(key))
        return out

    def apply(self, targets: Iterable[Target]) -> None:
        """Evaluate each target again, in the background (one runner per record)."""
        for target in targets:
            task = asyncio.get_running_loop().create_task(self._run_logged(target))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def wait_idle(self, timeout: float) -> bool:  # noqa: ASYNC109 - bounded wait
        """Wait until no run is in flight (tests, shutdown), at most `timeout` seconds.

        Returns:
            Whether every run had ended in time.
        """
        try:
            async with asyncio.timeout(timeout):
                while self._tasks:  # a run may start others (triggers fired by its writes)
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Cancel the runs in flight.

        A record left owned is taken over by another Controller once this one's leased
        Controller record goes (revoked at shutdown, expired after a crash).
        """
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _changed(
        self, otype: ObjectType[Any], key: str, old: Message | None, new: Message | None, _: int
    ) -> None:
        try:
            targets = self._triggered(otype, old, new)
        except EdgeError as err:  # a listener must not raise into the sync task
            log.warning("TPE trigger on %s %s failed: %s", otype.name, key, err)
            return
        if targets:
            self.apply(targets)

    def _triggered(
        self, otype: ObjectType[Any], old: Message | None, new: Message | None
    ) -> list[Target]:
        caches = self._rt.engine.caches
        if otype is TPE:
            tpe_cls = trustpolicyexception_pb2.TrustPolicyException
            return self._tpe_changed(caches, _as(tpe_cls, old), _as(tpe_cls, new))
        if otype is ZONE_POOL:
            pool_cls = zonepool_pb2.ZonePool
            return self._pool_changed(caches, _as(pool_cls, old), _as(pool_cls, new))
        if otype is APP_INST:
            inst_cls = appinst_pb2.AppInst
            return self._app_inst_changed(caches, _as(inst_cls, old), _as(inst_cls, new))
        if otype is CLOUDLET:
            c_cls = cloudlet_pb2.Cloudlet
            return self._cloudlet_changed(caches, _as(c_cls, old), _as(c_cls, new))
        gone = _as(controller_pb2.Controller, old)
        if otype is CONTROLLER and new is None and gone is not None:
            return self._orphans(f"{gone.hostname}@{gone.key.addr}")
        return []

    @staticmethod
    def _tpe_changed(
        caches: Caches,
        old: trustpolicyexception_pb2.TrustPolicyException | None,
        new: trustpolicyexception_pb2.TrustPolicyException | None,
    ) -> list[Target]:
        if new is None:
            # deleted: what it opened must be closed (it was open only when ACTIVE)
            return targets_for_tpe(caches, old.key) if old is not None else []
        if old is None and new.state != ACTIVE:
            return []  # a new request waits for approval: nothing to apply yet
        if old is not None and old.state == new.state:
            return []  # rules change only while approval is requested: nothing applied yet
        return targets_for_tpe(caches, new.key)

    @staticmethod
    def _pool_changed(
        caches: Caches, old: zonepool_pb2.ZonePool | None, new: zonepool_pb2.ZonePool | None
    ) -> list[Target]:
        before = list(old.zones) if old is not None else []
        after = list(new.zones) if new is not None else []
        changed = [z for z in before if z not in after] + [z for z in after if z not in before]
        pool = new or old
        if not changed or pool is None:
            return []
        out: list[Target] = []
        for _, tpe in caches.items(TPE):
            if tpe.key.zone_pool_key == pool.key:
                out.extend(targets_for_tpe(caches, tpe.key, changed))
        return out

    @staticmethod
    def _app_inst_changed(
        caches: Caches, old: appinst_pb2.AppInst | None, new: appinst_pb2.AppInst | None
    ) -> list[Target]:
        was = old is not None and old.state == TS.READY
        now = new is not None and new.state == TS.READY
        inst = new or old
        if was == now or inst is None:
            return []
        tpes = [tpe for _, tpe in caches.items(TPE) if tpe.key.app_key == inst.app_key]
        if not tpes:
            return []  # the usual case: no cloudlet lookup on every instance going READY
        cloudlet = caches.get(CLOUDLET, keys.key_string(inst.cloudlet_key))
        out: list[Target] = []
        for tpe in tpes:
            target = Target.of(tpe.key, inst)
            pool = caches.get(ZONE_POOL, keys.key_string(tpe.key.zone_pool_key))
            covered = (
                cloudlet is not None
                and pool is not None
                and bool(cloudlet.zone)
                and _zone_of(cloudlet) in list(pool.zones)
            )
            if covered or caches.has(TPE_INSTANCE, target.key):
                out.append(target)
        return out

    @staticmethod
    def _cloudlet_changed(
        caches: Caches, old: cloudlet_pb2.Cloudlet | None, new: cloudlet_pb2.Cloudlet | None
    ) -> list[Target]:
        if old is None or new is None:
            return []  # a new cloudlet has no instances; a gone one has none left
        if old.trust_policy == new.trust_policy and old.zone == new.zone:
            return []
        zones = [z for z in (_zone_of(old), _zone_of(new)) if z.name]
        out: list[Target] = []
        for _, tpe in caches.items(TPE):
            pool = caches.get(ZONE_POOL, keys.key_string(tpe.key.zone_pool_key))
            if pool is None or not any(z in list(pool.zones) for z in zones):
                continue
            for target in targets_for_tpe(caches, tpe.key, zones):
                if target.parsed().cloudlet_key == new.key:
                    out.append(target)
        return out

    # -- one runner --------------------------------------------------------------------------

    async def _run_logged(self, target: Target) -> None:
        try:
            await self.run(target)
        except EdgeError as err:
            log.warning("applying trust policy exception instance %s failed: %s", target.key, err)

    async def run(self, target: Target) -> None:
        """Evaluate one record until no more runs are requested (the original's runTPEChange).

        Returns at once when another runner owns the record: that one runs again for us.
        """
        engine = self._rt.engine
        me = self._me()
        skey = keys.store_key(TPE_INSTANCE.name, target.key)
        key = target.parsed()

        def claim(txn: Txn) -> bool:
            state = txn.get(TPE_INSTANCE, target.key)
            if state is None:
                state = trustpolicyexception_pb2.TPEInstanceState()
                state.key.CopyFrom(key)
            live = live_controllers(engine.caches)
            if state.owner and not self._orphaned(state.owner, state.started_at.seconds, live):
                state.run_requested = True  # the owner runs once more
                txn.put(state)
                return False
            state.owner = me
            state.run_requested = True
            state.started_at.CopyFrom(_ids.now_timestamp())
            txn.put(state)
            return True

        if not await engine.apply(claim, reads=[skey]):
            log.debug("TPE instance %s: another runner owns it", target.key)
            return
        errors = [""]  # the last push's outcome, stored when the runner finishes
        while True:
            step = await engine.apply(lambda txn: self._step(txn, target, key, me, errors[-1]))
            if step is None:
                return
            errors.append(await self._push(step))

    def _step(
        self,
        txn: Txn,
        target: Target,
        key: trustpolicyexception_pb2.TPEInstanceKey,
        me: str,
        apply_error: str,
    ) -> trustpolicyexception_pb2.TPEInstanceState | None:
        """One evaluation, in one transaction; returns the state to push, or None when done."""
        state = txn.get(TPE_INSTANCE, target.key)
        if state is None or state.owner != me:
            return None
        if not state.run_requested:
            # done: release the record, keeping the last push's outcome
            gone = state.disable_reason.startswith(_GONE)
            state.owner = ""
            state.run_count = 0 if not gone else state.run_count
            state.error = apply_error
            if gone:
                txn.delete(TPE_INSTANCE, target.key)
            else:
                txn.put(state)
            return None
        cloudlet = txn.get(CLOUDLET, key.cloudlet_key)
        pool = txn.get(ZONE_POOL, key.tpe_key.zone_pool_key)
        inst = txn.get(APP_INST, key.app_inst_key)
        cluster = txn.get(CLUSTER_INST, key.cluster_key)
        tpe = txn.get(TPE, key.tpe_key)
        missing = _first_missing(
            (cloudlet, key.cloudlet_key),
            (pool, key.tpe_key.zone_pool_key),
            (inst, key.app_inst_key),
            (cluster, key.cluster_key),
            (tpe, key.tpe_key),
        )
        if cloudlet is None or pool is None or inst is None or cluster is None or tpe is None:
            if not state.tpe_enable:
                txn.delete(TPE_INSTANCE, target.key)  # nothing open: nothing to close
                return None
            enable, reason = False, f"{_GONE}{missing}"
        else:
            enable, reason = enabled(inst, tpe, cluster, cloudlet, pool)
        # run_count moves with every evaluation, in the same write as tpe_enable: a CRM on
        # the edge site acts on a higher count and reads the flag from the same record
        state.run_requested = False
        state.run_count += 1
        state.tpe_enable = enable
        state.disable_reason = reason
        state.started_at.CopyFrom(_ids.now_timestamp())
        txn.put(state)
        return state

    async def _push(self, state: trustpolicyexception_pb2.TPEInstanceState) -> str:
        """Hand the state to the platform: CCRM call, or nothing (notify carries it to a CRM).

        Returns:
            The CCRM's error message, "" on success or when nothing was called.
        """
        rt = self._rt
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(state.key.cloudlet_key))
        if cloudlet is None or cloudlet.crm_on_edge or not isinstance(rt, TrackedRuntime):
            return ""
        try:
            node_type = features_of(rt.caches, cloudlet.platform_type).node_type
            await rt.tracked.ccrm.apply_trust_policy_exception(
                node_type, state, timeout=APPLY_TIMEOUT
            )
        except EdgeError as err:
            log.warning("CCRM ApplyTrustPolicyException %s: %s", keys.key_string(state.key), err)
            return err.message
        return ""


_GONE: Final = "removed: "
"""Prefix of the disable reason of a record whose objects are gone (deleted once pushed)."""


def _as(cls: type[_M], msg: Message | None) -> _M | None:
    """`msg` as a `cls` (the caches hand listeners their objects as plain messages)."""
    return msg if isinstance(msg, cls) else None


def _first_missing(*pairs: tuple[Message | None, Message]) -> str:
    """`<Type> key <key> not found` for the first absent object, "" when all are there."""
    for obj, key in pairs:
        if obj is None:
            return keys.not_found(key).message
    return ""
