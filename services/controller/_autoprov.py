"""Auto-provisioning inside the Controller: the caller's intent, its checks, process-now.

The AutoProv service (and the DME, through the Controller) create and delete AppInsts on
data that may be stale, so the Controller checks their *intent* against the current state
inside the AppInst transaction instead of tracking revisions (aux_services.md §3.3, the
original's `appInstCheck`):

- the intent travels as gRPC metadata (`caller-auto-prov`, `auto-prov-reason`,
  `auto-prov-policy-name`) on CreateAppInst/DeleteAppInst, or is set in-process for the
  DME's process-now requests; the servicer (or the process-now worker) puts it in the
  `INTENT` context variable so the AppInst operations see it without new parameters;
- an auto-prov create gets LIVENESS_AUTOPROV and may use the reserved `autoprov-` prefix;
- a create is refused when the App already has an instance in the zone, when it would
  exceed a policy's `max_instances` (reason demand) or when the policy's minimum is already
  met (reason minmax); a delete when it would go below a policy's `min_active_instances`
  (demand), when the maximum is already met (minmax) or when the zone is still in one of the
  App's policies (orphaned).

A DME's `AutoProvCounts` with one count and `process_now` (aux_services.md §3.1) is handed
to `ProcessNow`, which creates `autoprov-<app><version>-<zone hash>` in that zone at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

from distributed_match_engine import appcommon_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    common_pb2,
    refs_pb2,
)

from edge_cloud.errors import EdgeError, FailedPrecondition, NotFound
from edge_cloud.objects import keys, registry
from services.controller._dns import dns_sanitize
from services.controller._engine import Txn
from services.controller._sync import Caches

__all__ = [
    "AUTOPROV_PREFIX",
    "CALLER_AUTO_PROV",
    "INTENT",
    "PROCESS_NOW",
    "PROCESS_NOW_POLICY",
    "AutoProvIntent",
    "ProcessNow",
    "app_inst_key",
    "check_create",
    "check_create_cached",
    "check_delete",
    "current_intent",
    "intent_from_metadata",
    "run_as",
    "zone_key_hash",
]

log = logging.getLogger(__name__)

CALLER_AUTO_PROV: Final = "caller-auto-prov"
AUTO_PROV_REASON: Final = "auto-prov-reason"
AUTO_PROV_POLICY_NAME: Final = "auto-prov-policy-name"
REASON_DEMAND: Final = "demand"
REASON_MINMAX: Final = "minmax"
REASON_ORPHANED: Final = "orphaned"
AUTOPROV_PREFIX: Final = "autoprov-"
PROCESS_NOW_POLICY: Final = "dme-process-now"
#: The original's `AutoProvMinAlreadyMetError` text (the AutoProv service matches it).
MIN_ALREADY_MET: Final = "Create to satisfy min already met, ignoring"

APP_INST: Final = registry.by_class(appinst_pb2.AppInst)
APP_INST_REFS: Final = registry.by_class(refs_pb2.AppInstRefs)
AUTOPROV_POLICY: Final = registry.by_class(autoprovpolicy_pb2.AutoProvPolicy)
CLOUDLET: Final = registry.by_class(cloudlet_pb2.Cloudlet)
CLOUDLET_INFO: Final = registry.by_class(cloudlet_pb2.CloudletInfo)

TS = common_pb2
_BEING_DELETED: Final = frozenset(
    {TS.DELETE_REQUESTED, TS.DELETING, TS.DELETE_DONE, TS.NOT_PRESENT}
)


@dataclass(frozen=True, slots=True)
class AutoProvIntent:
    """What an auto-prov caller means to do.

    Attributes:
        reason: `demand`, `minmax` or `orphaned`; empty when the caller sent none (the
            original then skips every check and the AUTOPROV liveness).
        policy_name: The AutoProvPolicy the call serves (`dme-process-now` for the DME).
    """

    reason: str = ""
    policy_name: str = ""

    @property
    def checked(self) -> bool:
        """Whether the intent checks run: the original needs both a reason and a policy."""
        return bool(self.reason and self.policy_name)


#: The intent of the process-now worker's creates.
PROCESS_NOW: Final = AutoProvIntent(reason=REASON_DEMAND, policy_name=PROCESS_NOW_POLICY)

#: The intent of the running AppInst call; None for every other caller.
INTENT: ContextVar[AutoProvIntent | None] = ContextVar("autoprov_intent", default=None)


def current_intent() -> AutoProvIntent | None:
    """The intent of the AppInst call running in this context, if it is an auto-prov one."""
    return INTENT.get()


def intent_from_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> AutoProvIntent | None:
    """The intent carried by a call's gRPC metadata, as the AutoProv service sends it.

    Args:
        metadata: The call's invocation metadata (key, value) pairs.

    Returns:
        None unless `caller-auto-prov` is present; else the first reason and policy name.
    """
    if metadata is None:
        return None
    found: dict[str, str] = {}
    for key, value in metadata:
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        found.setdefault(key.lower(), text)
    if CALLER_AUTO_PROV not in found:
        return None
    return AutoProvIntent(
        reason=found.get(AUTO_PROV_REASON, ""),
        policy_name=found.get(AUTO_PROV_POLICY_NAME, ""),
    )


async def run_as(intent: AutoProvIntent | None, work: Awaitable[None]) -> None:
    """Await `work` with `intent` as the current intent (for this task only).

    Meant to run as the task of one AppInst call: the variable is set inside it, so the
    caller's context and other calls never see it.
    """
    token = INTENT.set(intent)
    try:
        await work
    finally:
        INTENT.reset(token)


def zone_key_hash(zone: cloudletkey_pb2.ZoneKey) -> str:
    """The original's `GetZoneKeyHash`: 8 hex digits of sha256("<name>::<organization>").

    Stable and short, and names no cloudlet (zones hide their sites from developers).
    """
    return hashlib.sha256(f"{zone.name}::{zone.organization}".encode()).hexdigest()[:8]


def app_inst_key(app: app_pb2.AppKey, zone: cloudletkey_pb2.ZoneKey) -> appinst_pb2.AppInstKey:
    """The original's `GetAutoProvAppInstKey`: one deterministic name per App and zone.

    `autoprov-<app name><version>-<zone hash>`, DNS-sanitised, in the App's organization.
    """
    name = dns_sanitize(f"{AUTOPROV_PREFIX}{app.name}{app.version}-{zone_key_hash(zone)}")
    return appinst_pb2.AppInstKey(name=name, organization=app.organization)


# --- the intent checks (inside the AppInst transactions) ----------------------------------


def _instances(txn: Txn, app_key: app_pb2.AppKey) -> list[appinst_pb2.AppInst]:
    """The App's instances, from its AppInstRefs.

    The refs are read guarded, so a new or removed instance fails the commit; the members
    are peeked (unguarded): their zone never changes.
    """
    refs = txn.get(APP_INST_REFS, app_key)
    if refs is None:
        return []
    return [inst for inst in txn.peek_many(APP_INST, sorted(refs.insts), shared=True) if inst]


def _online(txn: Txn, inst: appinst_pb2.AppInst) -> bool:
    """The original's `AutoProvAppInstOnline`: healthy (or unknown) on a working site."""
    if inst.health_check not in (appcommon_pb2.HEALTH_CHECK_UNKNOWN, appcommon_pb2.HEALTH_CHECK_OK):
        return False
    info = txn.get(CLOUDLET_INFO, inst.cloudlet_key)
    cloudlet = txn.get(CLOUDLET, inst.cloudlet_key)
    if info is None or cloudlet is None:
        raise keys.not_found(inst.cloudlet_key)
    if info.state == appcommon_pb2.CLOUDLET_STATE_OFFLINE:
        return False
    return cloudlet.maintenance_state == appcommon_pb2.NORMAL_OPERATION


def _counts_by_zone(
    txn: Txn, instances: Iterable[appinst_pb2.AppInst], *, online_only: bool
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for inst in instances:
        if inst.state in _BEING_DELETED:
            continue
        if online_only and not _online(txn, inst):
            continue
        zone = keys.key_string(inst.zone_key)
        counts[zone] = counts.get(zone, 0) + 1
    return counts


def _policy(txn: Txn, name: str, organization: str) -> autoprovpolicy_pb2.AutoProvPolicy | None:
    key = autoscalepolicy_pb2.PolicyKey(name=name, organization=organization)
    return txn.get(AUTOPROV_POLICY, key)


def _policy_missing(name: str, organization: str) -> NotFound:
    return keys.not_found(autoscalepolicy_pb2.PolicyKey(name=name, organization=organization))


def _app_policy_names(app: app_pb2.App) -> list[str]:
    legacy = [app.auto_prov_policy] if app.auto_prov_policy else []
    return list(dict.fromkeys([*legacy, *app.auto_prov_policies]))


def _zone_count(policy: autoprovpolicy_pb2.AutoProvPolicy, counts: dict[str, int]) -> int:
    return sum(counts.get(keys.key_string(z), 0) for z in policy.zones)


def _in_policy(policy: autoprovpolicy_pb2.AutoProvPolicy, zone: cloudletkey_pb2.ZoneKey) -> bool:
    return any(z == zone for z in policy.zones)


def _refuse_same_zone(
    inst: appinst_pb2.AppInst, others: Iterable[appinst_pb2.AppInst | None]
) -> None:
    """Refuse a create in a zone where another instance of the App is already.

    Raises:
        FailedPrecondition: `already an AppInst on Zone <zone key>`.
    """
    for other in others:
        if other is not None and other.key != inst.key and other.zone_key == inst.zone_key:
            raise FailedPrecondition(
                f"already an AppInst on Zone {keys.key_string(other.zone_key)}"
            )


def check_create(
    txn: Txn, app: app_pb2.App, inst: appinst_pb2.AppInst, intent: AutoProvIntent
) -> None:
    """The original's `appInstCheck` for a create, inside the create's transaction.

    `inst.zone_key` is the zone the instance lands in. Every read is guarded or covered by
    the App's AppInstRefs, so two racing auto-prov creates for one zone cannot both commit:
    the second one's commit fails on the refs record, runs again and sees the first.

    Raises:
        FailedPrecondition: Another instance of the App is in the zone; a policy's maximum
            would be exceeded (demand); the policy's minimum is already met (minmax).
        NotFound: A policy named by the App (or the minmax caller) does not exist.
    """
    if not intent.checked:
        return
    instances = _instances(txn, app.key)
    _refuse_same_zone(inst, instances)
    if intent.reason == REASON_DEMAND:
        counts = _counts_by_zone(txn, instances, online_only=False)
        for name in _app_policy_names(app):
            policy = _policy(txn, name, app.key.organization)
            if policy is None:
                raise _policy_missing(name, app.key.organization)
            if not _in_policy(policy, inst.zone_key) or not policy.max_instances:
                continue
            if _zone_count(policy, counts) >= policy.max_instances:
                raise FailedPrecondition(
                    f"Create would exceed max instances {policy.max_instances} of policy {name}"
                )
    elif intent.reason == REASON_MINMAX:
        policy = _policy(txn, intent.policy_name, app.key.organization)
        if policy is None:
            raise _policy_missing(intent.policy_name, app.key.organization)
        counts = _counts_by_zone(txn, instances, online_only=True)
        if policy.min_active_instances and (
            _zone_count(policy, counts) >= policy.min_active_instances
        ):
            raise FailedPrecondition(MIN_ALREADY_MET)


def check_create_cached(caches: Caches, inst: appinst_pb2.AppInst, intent: AutoProvIntent) -> None:
    """The zone check of `check_create` against the caches, before any cluster is chosen.

    A create in a zone that already has an instance of the App would otherwise build a
    reservable autocluster first and remove it again when the commit refuses the instance;
    refusing early keeps a repeated process-now request from touching anything. The check
    in the transaction stays the authoritative one (the caches may lag).

    Raises:
        FailedPrecondition: Another instance of the App is in the requested zone.
    """
    if not intent.checked or not inst.zone_key.name:
        return
    refs = caches.get(APP_INST_REFS, keys.key_string(inst.app_key))
    if refs is None:
        return
    _refuse_same_zone(inst, (caches.get(APP_INST, member) for member in refs.insts))


def check_delete(
    txn: Txn, app: app_pb2.App, inst: appinst_pb2.AppInst, intent: AutoProvIntent
) -> None:
    """The original's `appInstCheck` for a delete, inside the delete-mark transaction.

    Raises:
        FailedPrecondition: The delete would break a policy's minimum of online instances
            (demand), the maximum is already met (minmax), or the instance's zone is still
            in one of the App's policies (orphaned).
        NotFound: A policy, or the instance's cloudlet, is missing.
    """
    if not intent.checked:
        return
    if intent.reason == REASON_DEMAND:
        if not _online(txn, inst):
            return  # an offline instance does not count towards the minimum
        counts = _counts_by_zone(txn, _instances(txn, app.key), online_only=True)
        for name in _app_policy_names(app):
            policy = _policy(txn, name, app.key.organization)
            if policy is None:
                raise _policy_missing(name, app.key.organization)
            if not _in_policy(policy, inst.zone_key) or not policy.min_active_instances:
                continue
            if _zone_count(policy, counts) <= policy.min_active_instances:
                raise FailedPrecondition(
                    f"Delete would violate min active instances {policy.min_active_instances} "
                    f"of policy {name}"
                )
    elif intent.reason == REASON_MINMAX:
        policy = _policy(txn, intent.policy_name, app.key.organization)
        if policy is None:
            raise _policy_missing(intent.policy_name, app.key.organization)
        counts = _counts_by_zone(txn, _instances(txn, app.key), online_only=False)
        if policy.max_instances and _zone_count(policy, counts) <= policy.max_instances:
            raise FailedPrecondition("Delete to satisfy max already met, ignoring")
    elif intent.reason == REASON_ORPHANED:
        for name in _app_policy_names(app):
            policy = _policy(txn, name, app.key.organization)
            if policy is not None and _in_policy(policy, inst.zone_key):
                raise FailedPrecondition(
                    f"AppInst {keys.key_string(inst.key)} on Zone in policy {name} on App, "
                    "not orphaned"
                )


# --- process now ---------------------------------------------------------------------------

CreateFn = Callable[[appinst_pb2.AppInst, Callable[[str], None]], Awaitable[None]]


class ProcessNow:
    """Creates the AppInsts DMEs ask for with `process_now`, one run per (App, zone).

    The original queues the key on a worker (`deployImmediate`); here each key gets a task,
    and a request for a key whose create is still running is dropped: that create already
    serves it, and a second one would be refused by the zone check anyway.

    Args:
        create: The AppInst create of the API (`AppInstOps.create`), run with the
            `PROCESS_NOW` intent.
    """

    def __init__(self, create: Callable[[], CreateFn]) -> None:
        self._create = create
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.done = 0  # finished runs, successful or not

    def request(self, app: app_pb2.AppKey, zone: cloudletkey_pb2.ZoneKey) -> bool:
        """Start the create for (App, zone) unless one is running; says whether it started."""
        key = (keys.key_string(app), keys.key_string(zone))
        if key in self._running:
            log.debug("auto-prov now for %s in %s already running", *key)
            return False
        task = asyncio.get_running_loop().create_task(self._deploy(app, zone))
        self._running[key] = task
        task.add_done_callback(lambda _: self._finished(key))
        return True

    def _finished(self, key: tuple[str, str]) -> None:
        self._running.pop(key, None)
        self.done += 1

    async def _deploy(self, app: app_pb2.AppKey, zone: cloudletkey_pb2.ZoneKey) -> None:
        inst = appinst_pb2.AppInst(key=app_inst_key(app, zone), app_key=app, zone_key=zone)
        name = keys.key_string(inst.key)

        def sink(line: str) -> None:
            log.debug("auto-prov now %s: %s", name, line)

        try:
            await run_as(PROCESS_NOW, self._create()(inst, sink))
        except EdgeError as err:
            log.info("auto-prov now: AppInst %s not created: %s", name, err.message)
        except Exception:
            log.exception("auto-prov now: AppInst %s failed", name)
        else:
            log.info("auto-prov now: AppInst %s created", name)

    @property
    def running(self) -> int:
        """Creates under way."""
        return len(self._running)

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - bounded cleanup
        """Cancel the running creates and wait (bounded) for their clean-up."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout)
