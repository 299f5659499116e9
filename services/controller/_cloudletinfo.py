"""CloudletInfo: what a cloudlet's worker reports, and how it drives the Cloudlet (§5.2, §6.4).

Reports arrive two ways: from the CRM on the edge site over notify (every field is the
CRM's) and streamed back by a CCRM's `ApplyCloudlet` (only the listed `fields`). Both go
through `apply_info`:

1. merge the listed fields into the stored CloudletInfo in one transaction, with the
   Redis-only `status` cleared and this controller's id stamped; an unchanged report writes
   nothing (so a CRM re-sending its state after a reconnect costs no revision);
2. drive the Cloudlet's state: INIT → CrmInitok, READY → Ready (errors cleared), UPGRADE →
   Updating, ERRORS → UpdateError or CreateError depending on what was requested; copy the
   trust policy state, container version and infra flavors. Reports for a cloudlet being
   deleted change nothing (the original would move it back to Ready). A READY report
   clears the CloudletDown alerts when the cloudlet came back online and re-evaluates the
   CloudletResourceUsage warnings (`_alerts`);
3. publish the report, status included, on the cloudlet's Redis channel, where the API call
   waiting for it listens (possibly on another controller); a terminal report also ends the
   info part of the progress stream. (The original publishes before step 2; after it, a
   caller told "done" finds the cloudlet in its new state.)

When a CRM's notify connection ends, every CloudletInfo it reported that this controller
stamped goes OFFLINE (`mark_offline`), as the original's flush does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Final

from distributed_match_engine import appcommon_pb2
from edgeproto import cloudlet_pb2, cloudletkey_pb2, common_pb2

from edge_cloud.errors import EdgeError
from edge_cloud.objects import codec, fields, keys, registry
from edge_cloud.objects.gojson import enum_go_name
from services.controller._engine import Txn
from services.controller._progress import stream_key
from services.controller._tracked import DELETE_STATES, TrackedRuntime

__all__ = [
    "ALL_FIELDS",
    "CLOUDLET",
    "CLOUDLET_INFO",
    "apply_info",
    "cleanup_info",
    "mark_offline",
    "report_payload",
    "state_name",
]

log = logging.getLogger(__name__)

CLOUDLET: Final = registry.by_class(cloudlet_pb2.Cloudlet)
CLOUDLET_INFO: Final = registry.by_class(cloudlet_pb2.CloudletInfo)
CS = appcommon_pb2
TS = common_pb2
ALL_FIELDS: Final = tuple(
    str(f.number) for f in cloudlet_pb2.CloudletInfo.DESCRIPTOR.fields if f.name != "fields"
)
"""Every top-level field path of CloudletInfo (what a CRM's report carries)."""
STATE: Final = "3"
FLAVORS: Final = "10"
TERMINAL: Final = frozenset({CS.CLOUDLET_STATE_READY, CS.CLOUDLET_STATE_ERRORS})
_OFFLINE_POLL: Final = 0.2


def state_name(state: int) -> str:
    """The CamelName of a CloudletState (`CloudletStateReady`), as the original prints it."""
    return enum_go_name(appcommon_pb2.CloudletState.DESCRIPTOR, state)


def _cloudlet_state(info: cloudlet_pb2.CloudletInfo, current: int) -> int | None:
    """The Cloudlet state a report asks for, None for no change."""
    if info.state == CS.CLOUDLET_STATE_INIT:
        return TS.CRM_INITOK
    if info.state == CS.CLOUDLET_STATE_READY:
        return TS.READY
    if info.state == CS.CLOUDLET_STATE_UPGRADE:
        return TS.UPDATING
    if info.state == CS.CLOUDLET_STATE_ERRORS:
        if current in (TS.UPDATE_REQUESTED, TS.UPDATING):
            return TS.UPDATE_ERROR
        if current in (TS.CREATE_REQUESTED, TS.CREATING):
            return TS.CREATE_ERROR
    return None


async def apply_info(
    runtime: TrackedRuntime,
    report: cloudlet_pb2.CloudletInfo,
    *,
    paths: Sequence[str] | None = None,
) -> cloudlet_pb2.CloudletInfo | None:
    """Merge one report into etcd, publish it, and drive the Cloudlet's state.

    Args:
        runtime: The runtime.
        report: The CloudletInfo as received (its `status` is published, never stored).
        paths: The fields to merge; None means the report's own `fields`, and every field
            when it lists none (a CRM's notify report, or a CCRM that sets no mask).

    Returns:
        The stored CloudletInfo after the merge, or None when the report was skipped.
    """
    if report.standby_crm:
        log.debug("skipping CloudletInfo of %s from a standby CRM", report.key)
        return None
    services = runtime.tracked
    selected = list(paths if paths is not None else report.fields) or list(ALL_FIELDS)
    incoming = cloudlet_pb2.CloudletInfo()
    incoming.CopyFrom(report)
    incoming.controller = services.controller_id
    incoming.ClearField("status")
    incoming.ClearField("fields")

    def merge(txn: Txn) -> tuple[cloudlet_pb2.CloudletInfo, bool]:
        current = txn.get(CLOUDLET_INFO, report.key)
        stored = current if current is not None else cloudlet_pb2.CloudletInfo(key=report.key)
        stored.ClearField("status")
        merged = cloudlet_pb2.CloudletInfo()
        merged.CopyFrom(stored)
        if fields.apply_fields(merged, incoming, selected):
            merged.controller = services.controller_id  # whoever wrote it last owns it
            txn.put(merged)
        online = (
            STATE in selected
            and merged.state == CS.CLOUDLET_STATE_READY
            and (current is None or current.state != CS.CLOUDLET_STATE_READY)
        )
        return merged, online

    merged, came_online = await runtime.engine.apply(merge)
    try:
        await _drive_cloudlet(runtime, merged, selected)
    except EdgeError as err:
        log.warning("CloudletInfo state transition of %s failed: %s", report.key, err)
    if merged.state == CS.CLOUDLET_STATE_READY:
        await _on_ready(runtime, merged.key, came_online=came_online)
    # Published after both commits: whoever waits on it sees the cloudlet's new state.
    await services.progress.publish_info(
        stream_key(report.key), report_payload(report), terminal=merged.state in TERMINAL
    )
    return merged


async def _on_ready(
    runtime: TrackedRuntime, key: cloudletkey_pb2.CloudletKey, *, came_online: bool
) -> None:
    """A READY report: clear CloudletDown when it came back, re-evaluate usage warnings.

    A cloudlet that came online also gets its default multi-tenant cluster if it asks for
    one (in the background; `_followons`).
    """
    # imported here: _alerts needs _usage, which needs this module
    from services.controller._alerts import alert_hub, refresh_usage_alerts

    if came_online:
        try:
            await alert_hub(runtime).cloudlet_up(key)
        except EdgeError as err:
            log.warning("CloudletDown alerts of %s not cleared: %s", key, err)
        # imported here: _followons needs the ClusterInst operations, which need this module
        from services.controller._followons import default_mt_cluster_on_ready

        default_mt_cluster_on_ready(runtime, key)
    await refresh_usage_alerts(runtime, key)


def report_payload(report: cloudlet_pb2.CloudletInfo) -> bytes:
    """What is published for a report on the cloudlet's channel (status included)."""
    published = cloudlet_pb2.CloudletInfo()
    published.CopyFrom(report)
    published.ClearField("fields")
    return codec.encode(published)


async def _drive_cloudlet(
    runtime: TrackedRuntime, info: cloudlet_pb2.CloudletInfo, paths: Sequence[str]
) -> None:
    selected = fields.FieldSet(paths)

    def drive(txn: Txn) -> None:
        cloudlet = txn.get(CLOUDLET, info.key)
        if cloudlet is None or cloudlet.state in DELETE_STATES:
            return
        new_state = _cloudlet_state(info, cloudlet.state)
        if new_state is None and info.state not in (CS.CLOUDLET_STATE_ERRORS,):
            return
        changed = cloudlet_pb2.Cloudlet()
        changed.CopyFrom(cloudlet)
        if (
            info.trust_policy_state != TS.TRACKED_STATE_UNKNOWN
            and changed.trust_policy_state != info.trust_policy_state
        ):
            changed.trust_policy_state = info.trust_policy_state
        if new_state is not None and changed.state != new_state:
            changed.state = new_state  # type: ignore[assignment]
            if info.errors:
                del changed.errors[:]
                changed.errors.extend(info.errors)
        if info.state == CS.CLOUDLET_STATE_READY:
            del changed.errors[:]
        if changed.container_version != info.container_version:
            changed.container_version = info.container_version
        if not changed.key.federated_organization and selected.has_or_child(FLAVORS):
            del changed.infra_flavors[:]
            changed.infra_flavors.extend(info.flavors)
        if changed != cloudlet:
            txn.put(changed)

    await runtime.engine.apply(drive)


async def mark_offline(
    runtime: TrackedRuntime, keys: Iterable[cloudletkey_pb2.CloudletKey], notify_id: int
) -> None:
    """A CRM's notify connection ended: its CloudletInfos (ours, same connection) go OFFLINE.

    Infos since re-stamped by another connection or controller are left alone: the CRM has
    already reconnected there.
    """
    controller_id = runtime.tracked.controller_id
    for key in keys:

        def offline(txn: Txn, key: cloudletkey_pb2.CloudletKey = key) -> None:
            info = txn.get(CLOUDLET_INFO, key)
            if info is None or info.notify_id != notify_id or info.controller != controller_id:
                return
            if info.state == CS.CLOUDLET_STATE_OFFLINE:
                return
            info.state = CS.CLOUDLET_STATE_OFFLINE
            txn.put(info)

        try:
            await runtime.engine.apply(offline)
            log.info("cloudlet %s offline (notify connection %d ended)", key, notify_id)
        except EdgeError as err:
            log.warning("could not mark cloudlet %s offline: %s", key, err)


async def cleanup_info(
    runtime: TrackedRuntime,
    cloudlet: cloudlet_pb2.Cloudlet,
    *,
    timeout: float,  # noqa: ASYNC109 - how long a CRM gets to go away
) -> None:
    """After a cloudlet's delete: remove its CloudletInfo (the original's cleanupCloudletInfo).

    Without a CRM on the edge (or restricted access, or federated) the info goes at once.
    Otherwise the CRM, shut down by the delete, disconnects and its info goes OFFLINE;
    wait up to `timeout` for that and delete the info only if it is OFFLINE (a CRM that
    still runs keeps its info). An info no CRM ever reported over notify (`notify_id`
    unset: only the CCRM wrote it, e.g. an onboarding that failed before the CRM came up)
    has no CRM to wait for and goes at once too; the original waits the full timeout
    there, which made a failed CreateCloudlet hang for five minutes.
    """
    key = cloudlet.key
    wait = cloudlet.crm_on_edge and not (
        cloudlet.infra_api_access == cloudlet_pb2.RESTRICTED_ACCESS or key.federated_organization
    )
    if wait:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = runtime.caches.get(CLOUDLET_INFO, keys.key_string(key))
            if info is None or info.state == CS.CLOUDLET_STATE_OFFLINE or not info.notify_id:
                break
            await asyncio.sleep(_OFFLINE_POLL)
        else:
            log.info("timed out waiting for CloudletInfo of %s to go offline", key)

    def remove(txn: Txn) -> None:
        info = txn.get(CLOUDLET_INFO, key)
        if info is None:
            return
        if wait and info.notify_id and info.state != CS.CLOUDLET_STATE_OFFLINE:
            return
        txn.delete(CLOUDLET_INFO, key)

    try:
        await runtime.engine.apply(remove)
    except EdgeError as err:
        log.warning("cleanup of CloudletInfo %s failed: %s", key, err)
