"""Alerts the Controller keeps: from its notify children and of its own (aux_services.md §1.9).

Alerts live in etcd under the Controller's keep-alive lease, so a dead Controller's alerts
vanish with it. Everything a child (CRM, Shepherd, ClusterSvc) reported, and the alerts the
Controller raises itself, first go into a per-controller *source cache* (`Alerts`); that
cache is written back to etcd whenever the lease is replaced (a lease lost to congestion
takes the alerts with it, the source cache brings them back), as the original's
`syncSourceData`.

The Controller raises:

- `CloudletDown` ("Cloudlet resource manager is offline") and one cloudlet-offline
  `AppInstDown` per non-sidecar AppInst when a READY cloudlet's CRM disconnects; both are
  cleared when its CloudletInfo becomes READY again;
- `CloudletResourceUsage`, one per resource warning of the fit check (§4.2), written in the
  create and removal commits of a ClusterInst or AppInst and on every READY CloudletInfo,
  stale ones of that cloudlet deleted in the same transaction (the original refreshes them
  on creates and READY reports only, so a delete left a warning standing until then). As
  the original, these are not leased and not in the source cache: they are derived from
  stored state and re-derived from it.

An `AppInstDown` alert sets the AppInst's `health_check` from its `status` label (camel
name of `HealthCheck`, or an old numeric value); its removal sets it back to OK.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import (
    alert_pb2,
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    refs_pb2,
)

from edge_cloud.errors import EdgeError
from edge_cloud.objects import keys, registry
from edge_cloud.objects.gojson import enum_from_go, enum_go_name
from services.controller import _clusterinst
from services.controller._engine import Txn
from services.controller._sizing import sizer
from services.controller._sync import Caches
from services.controller._tracked import TrackedRuntime
from services.controller._usage import ResLimit, controller_used, resource_limits

__all__ = [
    "ALERT",
    "ALERT_APPINST_DOWN",
    "ALERT_CLOUDLET_DOWN",
    "ALERT_CLOUDLET_RESOURCE_USAGE",
    "CLOUDLET_DOWN_DESCRIPTION",
    "Alerts",
    "alert_hub",
    "appinst_tags",
    "cluster_tags",
    "commit_usage_alerts",
    "put_usage_alerts",
    "refresh_in_commit",
    "refresh_usage_alerts",
    "usage_warnings",
]

log = logging.getLogger(__name__)

ALERT: Final = registry.by_class(alert_pb2.Alert)
APP_INST: Final = registry.by_class(appinst_pb2.AppInst)
APP: Final = registry.by_class(app_pb2.App)
CLOUDLET: Final = registry.by_class(cloudlet_pb2.Cloudlet)
CLOUDLET_INFO: Final = registry.by_class(cloudlet_pb2.CloudletInfo)
CLUSTER_INST: Final = registry.by_class(clusterinst_pb2.ClusterInst)
PLATFORM_FEATURES: Final = registry.by_class(cloudlet_pb2.PlatformFeatures)

ALERT_APPINST_DOWN: Final = "AppInstDown"
ALERT_CLOUDLET_DOWN: Final = "CloudletDown"
ALERT_CLOUDLET_RESOURCE_USAGE: Final = "CloudletResourceUsage"
CLOUDLET_DOWN_DESCRIPTION: Final = "Cloudlet resource manager is offline"
APPINST_CLOUDLET_DOWN_DESCRIPTION: Final = "AppInst down due to cloudlet offline"
SCOPE_APP: Final = "Application"
SCOPE_CLOUDLET: Final = "Cloudlet"
FIRING: Final = "firing"
EDGECLOUD_ORG: Final = "edgecloudorg"
HC = appcommon_pb2
_LEASE_POLL: Final = 0.5


def _now() -> loc_pb2.Timestamp:
    now = time.time_ns()
    return loc_pb2.Timestamp(seconds=now // 10**9, nanos=now % 10**9)


def _firing(labels: Mapping[str, str], title: str, description: str) -> alert_pb2.Alert:
    alert = alert_pb2.Alert(state=FIRING, active_at=_now())
    alert.labels.update(labels)
    alert.annotations["title"] = title
    alert.annotations["description"] = description
    return alert


def cloudlet_down_labels(key: cloudletkey_pb2.CloudletKey) -> dict[str, str]:
    """Labels (= key) of a cloudlet's `CloudletDown` alert, as the original's."""
    return {
        "alertname": ALERT_CLOUDLET_DOWN,
        "scope": SCOPE_CLOUDLET,
        "cloudlet": key.name,
        "cloudletorg": key.organization,
    }


def appinst_tags(inst: appinst_pb2.AppInst) -> dict[str, str]:
    """The original's `AppInstKey.GetTags()`: the instance's name and organization."""
    return {"appinst": inst.key.name, "appinstorg": inst.key.organization}


def cluster_tags(cluster: clusterinst_pb2.ClusterInst) -> dict[str, str]:
    """The labels that tie an alert to one ClusterInst (cluster and cloudlet keys)."""
    return {
        "cluster": cluster.key.name,
        "clusterorg": cluster.key.organization,
        "cloudlet": cluster.cloudlet_key.name,
        "cloudletorg": cluster.cloudlet_key.organization,
    }


def appinst_down_labels(inst: appinst_pb2.AppInst) -> dict[str, str]:
    """Labels of the cloudlet-offline `AppInstDown` alert of one instance."""
    labels = appinst_tags(inst)
    labels["alertname"] = ALERT_APPINST_DOWN
    labels["status"] = enum_go_name(HC.HealthCheck.DESCRIPTOR, HC.HEALTH_CHECK_CLOUDLET_OFFLINE)
    labels["scope"] = SCOPE_APP
    return labels


def _on_cloudlet(labels: Mapping[str, str], key: cloudletkey_pb2.CloudletKey) -> bool:
    return labels.get("cloudlet") == key.name and labels.get("cloudletorg") == key.organization


def _health_state(status: str) -> int | None:
    """A `status` label as a HealthCheck value (camel name, or an old alert's number)."""
    try:
        return enum_from_go(HC.HealthCheck.DESCRIPTOR, status)
    except ValueError:
        return None


def usage_warnings(
    limits: Mapping[str, ResLimit],
    used: Mapping[str, int],
    infra_used: Mapping[str, int],
) -> list[str]:
    """The warnings of the original's fit check (§4.2), resources sorted by key.

    Args:
        limits: `_usage.resource_limits` of the cloudlet.
        used: The Controller's (theoretical) usage by resource key.
        infra_used: What the infra reports in use (CloudletInfo's resource snapshot).

    Returns:
        Texts such as `more than 80% of vCPUs (9 of 10) is used by the cloudlet`.
    """
    warnings: list[str] = []
    names = sorted(limits)
    for name in names:
        res = limits[name]
        maximum = res.quota_max or res.infra_max
        if not maximum:
            continue
        if res.quota_max and res.infra_max and res.quota_max > res.infra_max:
            warnings.append(
                f"[quota] invalid quota set for {name}, quota max value {res.quota_max} is "
                f"more than infra max value {res.infra_max}"
            )
        value = used.get(name, 0)
        if value > maximum:
            warnings.append(
                f"[quota] invalid quota set for {name}, quota max value {maximum} is less than "
                f"used resource value {value}"
            )
        if res.alert_threshold > 0 and value * 100 / maximum > res.alert_threshold:
            warnings.append(
                f"more than {res.alert_threshold}% of {name} ({value}{res.units} of "
                f"{maximum}{res.units}) is used by the cloudlet"
            )
    for name in names:
        res = limits[name]
        if not res.infra_max:
            continue
        value = infra_used.get(name, 0)
        if res.alert_threshold > 0 and value * 100 / res.infra_max > res.alert_threshold:
            warnings.append(
                f"more than {res.alert_threshold}% of {name} ({value}{res.units} of "
                f"{res.infra_max}{res.units}) is used on the infra managed by the cloudlet"
            )
    return warnings


def infra_used(info: cloudlet_pb2.CloudletInfo) -> dict[str, int]:
    """What the infra reports in use, by resource name (the original's infra check input)."""
    return {res.name: res.value for res in info.resources_snapshot.info}


def put_usage_alerts(
    txn: Txn,
    caches: Caches,
    key: cloudletkey_pb2.CloudletKey,
    warnings: Iterable[str],
    *,
    region: str,
    controller_id: str,
) -> None:
    """Write a cloudlet's `CloudletResourceUsage` alerts and delete its stale ones.

    Runs inside the caller's transaction, so the alerts change with the usage that caused
    them. Stale alerts are found in the cache (as the original's `handleResourceUsageAlerts`).
    A warning already alerted is left as it is (the original rewrites it with a new
    `active_at` on every READY report, a revision per report for nothing).
    """
    fresh: set[str] = set()
    for warning in warnings:
        labels = {
            "alertname": ALERT_CLOUDLET_RESOURCE_USAGE,
            "scope": SCOPE_CLOUDLET,
            "cloudlet": key.name,
            "cloudletorg": key.organization,
            "warning": warning,
            "region": region,
        }
        alert = _firing(labels, ALERT_CLOUDLET_RESOURCE_USAGE, warning)
        alert.controller = controller_id
        key_string = keys.key_string(alert)
        fresh.add(key_string)
        if txn.get(ALERT, key_string) is None:  # a standing one keeps its active_at
            txn.put(alert)
    for key_string, alert in caches.items(ALERT):
        if key_string in fresh:
            continue
        if alert.labels.get("alertname") != ALERT_CLOUDLET_RESOURCE_USAGE:
            continue
        if _on_cloudlet(alert.labels, key):
            txn.delete(ALERT, key_string)


def commit_usage_alerts(
    txn: Txn,
    runtime: TrackedRuntime,
    cloudlet: cloudlet_pb2.Cloudlet,
    info: cloudlet_pb2.CloudletInfo | None,
    used: Mapping[str, int],
    change: Mapping[str, int] | None = None,
    *,
    removed: bool = False,
) -> None:
    """Inside a create or delete commit: the cloudlet's usage alerts after that commit.

    Args:
        txn: The commit's transaction.
        runtime: The runtime (caches, region, controller id).
        cloudlet: The cloudlet, as the commit read it.
        info: Its CloudletInfo (no info: no limits, no warnings).
        used: What the commit counted as used by the others (`_clusterinst.used_resources`).
        change: What the committed instance takes (added, or taken away with `removed`).
        removed: The instance is being removed rather than added.
    """
    totals = dict(used)
    sign = -1 if removed else 1
    for name, value in (change or {}).items():
        totals[name] = max(totals.get(name, 0) + sign * value, 0)
    warnings: list[str] = []
    if info is not None:
        warnings = usage_warnings(resource_limits(cloudlet, info), totals, infra_used(info))
    put_usage_alerts(
        txn,
        runtime.caches,
        cloudlet.key,
        warnings,
        region=runtime.config.region,
        controller_id=runtime.tracked.controller_id,
    )


def refresh_in_commit(
    txn: Txn,
    runtime: TrackedRuntime,
    refs: refs_pb2.CloudletRefs,
    gone: Mapping[str, str],
) -> None:
    """Inside a removal commit: the removed instance's alerts go, usage alerts follow.

    As the original's `CleanupAppInstAlerts` / `CleanupClusterInstAlerts`, every alert
    carrying all of the instance's labels is deleted (from etcd in this transaction, and
    from the source cache so no replay brings it back); then the cloudlet's
    CloudletResourceUsage alerts are re-evaluated for what its refs now hold.

    Args:
        txn: The commit's transaction.
        runtime: The runtime (caches, region, controller id).
        refs: The cloudlet's refs as the commit leaves them (the removed instance gone).
        gone: The removed instance's labels (`appinst`, `appinstorg`; or `cluster`,
            `clusterorg`, `cloudlet`, `cloudletorg`).
    """
    hub = alert_hub(runtime)
    for key_string, alert in runtime.caches.items(ALERT):
        if all(alert.labels.get(k) == v for k, v in gone.items()):
            txn.delete(ALERT, key_string)
            hub.forget(key_string)
    cloudlet = txn.get(CLOUDLET, refs.key)
    if cloudlet is None:
        return
    features = txn.get(PLATFORM_FEATURES, cloudlet.platform_type)
    clusters = [c for c in txn.peek_many(CLUSTER_INST, list(refs.cluster_insts)) if c]
    vm_apps = [a for a in txn.peek_many(APP_INST, list(refs.vm_app_insts)) if a]
    info = txn.get(CLOUDLET_INFO, refs.key)
    used = _clusterinst.used_resources(
        clusters,
        [a.node_resources for a in vm_apps],
        features,
        info=info,
        sizing=sizer(runtime).cached(keys.key_string(refs.key)),
    )
    commit_usage_alerts(txn, runtime, cloudlet, info, used)


async def refresh_usage_alerts(runtime: TrackedRuntime, key: cloudletkey_pb2.CloudletKey) -> None:
    """A READY CloudletInfo re-evaluates the cloudlet's usage warnings (from the caches)."""
    cloudlet = runtime.caches.get(CLOUDLET, keys.key_string(key))
    info = runtime.caches.get(CLOUDLET_INFO, keys.key_string(key))
    if cloudlet is None or info is None:
        return
    used = controller_used(runtime.caches, cloudlet, sizer(runtime).cached(keys.key_string(key)))
    warnings = usage_warnings(resource_limits(cloudlet, info), used, infra_used(info))

    def write(txn: Txn) -> None:
        put_usage_alerts(
            txn,
            runtime.caches,
            key,
            warnings,
            region=runtime.config.region,
            controller_id=runtime.tracked.controller_id,
        )

    try:
        await runtime.engine.apply(write)
    except EdgeError as err:
        log.warning("resource usage alerts of %s not refreshed: %s", key, err)


class Alerts:
    """The source cache of one Controller and the writes it drives.

    Args:
        runtime: The runtime (engine, caches, controller id, region).
    """

    def __init__(self, runtime: TrackedRuntime) -> None:
        self._rt = runtime
        self._source: dict[str, alert_pb2.Alert] = {}
        self.lease_id: Callable[[], int | None] = lambda: None
        self.region = runtime.config.region
        self._written_lease: int | None = None
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._source)

    def forget(self, key_string: str) -> None:
        """Drop an alert from the source cache (its object is being deleted)."""
        self._source.pop(key_string, None)

    def source(self) -> list[alert_pb2.Alert]:
        """Copies of what the source cache holds."""
        out = []
        for alert in self._source.values():
            copy = alert_pb2.Alert()
            copy.CopyFrom(alert)
            out.append(copy)
        return out

    # -- lease replay ------------------------------------------------------------------------

    def start(self) -> None:
        """Follow the lease: each new lease id gets the source cache written back under it."""
        if self._task is None:
            self._written_lease = self.lease_id()
            self._task = asyncio.get_running_loop().create_task(self._follow_lease())

    async def close(self) -> None:
        """Stop following the lease."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow_lease(self) -> None:
        while True:
            await asyncio.sleep(_LEASE_POLL)
            lease = self.lease_id()
            if lease is None or lease == self._written_lease:
                continue
            try:
                await self.replay()
            except EdgeError as err:
                log.warning("alerts not replayed under lease %x yet: %s", lease, err)
                continue
            self._written_lease = lease

    async def replay(self) -> None:
        """Write every alert of the source cache under the current lease (`syncSourceData`)."""
        lease = self.lease_id()
        for alert in self.source():
            await self._store_update(alert, lease)
        log.info("replayed %d alerts under controller lease %x", len(self._source), lease or 0)

    # -- updates -----------------------------------------------------------------------------

    async def update(self, alert: alert_pb2.Alert) -> None:
        """Keep an alert (stamped with this controller and region) and store it under the lease."""
        alert.controller = self._rt.tracked.controller_id
        alert.labels["region"] = self.region
        stored = alert_pb2.Alert()
        stored.CopyFrom(alert)
        self._source[keys.key_string(stored)] = stored
        self.start()
        try:
            await self._store_update(stored, self.lease_id())
        except EdgeError as err:  # e.g. the lease just expired: the replay writes it
            log.warning("alert %s kept for the next lease: %s", stored.labels, err)

    async def _store_update(self, alert: alert_pb2.Alert, lease: int | None) -> None:
        if lease is None:
            # between a lost lease and its replacement: written by the replay, not unleased
            log.debug("alert %s waits for the controller lease", alert.labels)
            return

        def put(txn: Txn) -> None:
            txn.put(alert, lease=lease)

        await self._rt.engine.apply(put)
        if alert.labels.get("alertname") == ALERT_APPINST_DOWN:
            state = _health_state(alert.labels.get("status", ""))
            if state is None:
                log.info("AppInstDown alert without a health check status: %s", alert.labels)
                return
            await self._set_health(alert.labels, state)

    async def delete_reported(self, alert: alert_pb2.Alert, notify_id: int) -> None:
        """A child withdrew an alert: forget it if that connection still owns it; unstore it."""
        alert.labels["region"] = self.region
        key_string = keys.key_string(alert)
        held = self._source.get(key_string)
        if held is not None and held.notify_id == notify_id:
            del self._source[key_string]
        await self._store_delete(alert, notify_id)

    async def _store_delete(self, alert: alert_pb2.Alert, notify_id: int) -> None:
        controller_id = self._rt.tracked.controller_id
        key_string = keys.key_string(alert)

        def remove(txn: Txn) -> bool:
            current = txn.get(ALERT, key_string)
            if current is None:
                return False
            if current.notify_id != notify_id or current.controller != controller_id:
                return False  # updated by another connection or controller since
            txn.delete(ALERT, key_string)
            return True

        found = await self._rt.engine.apply(remove)
        if found and alert.labels.get("alertname") == ALERT_APPINST_DOWN:
            await self._set_health(alert.labels, HC.HEALTH_CHECK_OK)

    async def flush(self, notify_id: int) -> None:
        """A child's connection ended: every alert it reported goes."""
        gone = [a for a in self._source.values() if a.notify_id == notify_id]
        for alert in gone:
            self._source.pop(keys.key_string(alert), None)
            await self._store_delete(alert, notify_id)

    async def delete_own(self, labels: Mapping[str, str]) -> None:
        """Remove an alert whatever wrote it (controller-created alerts, cleanups)."""
        alert = alert_pb2.Alert()
        alert.labels.update(labels)
        alert.labels["region"] = self.region
        key_string = keys.key_string(alert)
        self._source.pop(key_string, None)

        def remove(txn: Txn) -> bool:
            if txn.get(ALERT, key_string) is None:
                return False
            txn.delete(ALERT, key_string)
            return True

        await self._rt.engine.apply(remove)
        if alert.labels.get("alertname") == ALERT_APPINST_DOWN:
            await self._set_health(alert.labels, HC.HEALTH_CHECK_OK)

    # -- what the Controller raises ------------------------------------------------------------

    def _cloudlet_app_insts(
        self, key: cloudletkey_pb2.CloudletKey, *, skip_sidecars: bool
    ) -> list[appinst_pb2.AppInst]:
        caches = self._rt.caches
        out = []
        for inst in caches.values(APP_INST):
            if inst.cloudlet_key != key:
                continue
            if skip_sidecars:
                app = caches.get(APP, keys.key_string(inst.app_key))
                if (
                    app is not None
                    and app.key.organization == EDGECLOUD_ORG
                    and app.del_opt == app_pb2.AUTO_DELETE
                ):
                    continue
            out.append(inst)
        return out

    async def cloudlet_down(self, key: cloudletkey_pb2.CloudletKey) -> None:
        """A READY cloudlet's CRM went away: `CloudletDown` and its AppInsts' `AppInstDown`."""
        await self.update(
            _firing(cloudlet_down_labels(key), ALERT_CLOUDLET_DOWN, CLOUDLET_DOWN_DESCRIPTION)
        )
        for inst in self._cloudlet_app_insts(key, skip_sidecars=True):
            await self.update(
                _firing(
                    appinst_down_labels(inst),
                    ALERT_APPINST_DOWN,
                    APPINST_CLOUDLET_DOWN_DESCRIPTION,
                )
            )

    async def cloudlet_up(self, key: cloudletkey_pb2.CloudletKey) -> None:
        """The cloudlet is READY again: clear what `cloudlet_down` raised."""
        await self.delete_own(cloudlet_down_labels(key))
        for inst in self._cloudlet_app_insts(key, skip_sidecars=False):
            await self.delete_own(appinst_down_labels(inst))

    async def cleanup_cloudlet(self, key: cloudletkey_pb2.CloudletKey) -> None:
        """A deleted cloudlet's alerts go, whoever raised them (`CleanupCloudletAlerts`)."""
        matches = [
            dict(alert.labels)
            for alert in self._rt.caches.values(ALERT)
            if _on_cloudlet(alert.labels, key)
        ]
        matches.extend(dict(a.labels) for a in self._source.values() if _on_cloudlet(a.labels, key))
        for labels in matches:
            await self.delete_own(labels)

    # -- AppInst health ------------------------------------------------------------------------

    async def _set_health(self, labels: Mapping[str, str], state: int) -> None:
        """The original's `HealthCheckUpdate`: the AppInst named by the labels gets `state`."""
        name, org = labels.get("appinst"), labels.get("appinstorg")
        if not name or org is None:
            log.debug("AppInstDown alert names no AppInst: %s", labels)
            return
        inst_key = appinst_pb2.AppInstKey(name=name, organization=org)

        def update(txn: Txn) -> int | None:
            inst = txn.get(APP_INST, inst_key)
            if inst is None or inst.health_check == state:
                return None
            old = inst.health_check
            inst.health_check = state  # type: ignore[assignment]
            txn.put(inst)
            return old

        try:
            old = await self._rt.engine.apply(update)
        except EdgeError as err:
            log.warning("health check of AppInst %s/%s not updated: %s", org, name, err)
            return
        if old is None:
            return
        online = (HC.HEALTH_CHECK_OK, HC.HEALTH_CHECK_UNKNOWN)
        if old in online and state not in online:
            log.info("AppInst %s/%s offline (%s)", org, name, labels.get("status", ""))
        elif old not in online and state == HC.HEALTH_CHECK_OK:
            log.info("AppInst %s/%s online", org, name)


_HUBS: Final[weakref.WeakKeyDictionary[TrackedRuntime, Alerts]] = weakref.WeakKeyDictionary()


def alert_hub(runtime: TrackedRuntime) -> Alerts:
    """The source cache of `runtime`'s controller, created on first use.

    Notify handlers, the CloudletInfo path and cloudlet deletes all reach the same cache
    through the runtime they share.
    """
    hub = _HUBS.get(runtime)
    if hub is None:
        hub = _HUBS[runtime] = Alerts(runtime)
    return hub
