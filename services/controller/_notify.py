"""The Controller's notify server: objects down to CRMs, DMEs and CCRMs, reports back up (§6).

A `NotifyServer` fed from the Controller's caches (`SyncNotifySource`: no second etcd
watch, each object decoded once for both) sends the types of
controller.md §6.4 in their dependency order; cloudlet-scoped types reach a CRM only for its
cloudlet, once that cloudlet is far enough (`edge_cloud.notify.filters`).

Upstream objects are handled per type:

| type | update | delete | connection gone (flush) |
|---|---|---|---|
| CloudletInfo | merged into etcd, drives the Cloudlet (`_cloudletinfo`) | OFFLINE | OFFLINE |
| PlatformFeatures | stored (CCRMs and CRMs register their platforms) | ignored | ignored |
| VMPoolInfo | published; VMs, state and errors copied to the VMPool | - | - |
| AutoProvInfo | stored | deleted | - |
| Alert | monitored ones stored under the controller lease | deleted (same sender) | deleted |
| ClusterInstInfo, AppInstInfo | published; legal state moves merged (`_inst_ops`) | - | - |
| Device (DMEs) | stored once per key, never deleted by notify (§5.6) | ignored | ignored |

Upstream messages (uncached, `NotifyServer(receive_messages=...)`):

- Metric: one InfluxDB point (measurement = name, tags, typed fields, its timestamp) in
  `metrics`, or in `edgeevents_metrics` for the DME's edge-events measurements
  (aux_services.md §1.13).
- AutoProvCounts: a message of one count with `process_now` creates the App's instance
  in that zone at once (`_autoprov.ProcessNow`, the original's `deployImmediate`); other
  counts become `auto-prov-counts` points in `metrics` (tags `apporg`, `app`, `ver`,
  `zoneorg`, `zone`, `dmeid`; field `count`).
- AppInstClient: kept in a ring of the latest `max_tracked_dme_clients` per App (latest per
  unique id) and handed to the ShowAppInstClient watches (`api.appinstclient`).

Points are queued per database and written by one flush task (every second, or at once above
50 queued); above 5,000 queued new points are dropped and counted, as the original's queue.
An unreachable InfluxDB is retried every 10 s without holding up notify.

Ownership: records written from a connection carry its notify id and this controller's id,
and disconnect handling touches only records with both, so a CRM that reconnected to
another controller meanwhile is not marked offline (§8).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from distributed_match_engine import appcommon_pb2
from edgeproto import (
    alert_pb2,
    alertpolicy_pb2,
    app_pb2,
    appinst_pb2,
    appinstclient_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cloudletnode_pb2,
    clusterinst_pb2,
    common_pb2,
    debug_pb2,
    device_pb2,
    flavor_pb2,
    metric_pb2,
    network_pb2,
    operatorcode_pb2,
    ratelimit_pb2,
    refs_pb2,
    restagtable_pb2,
    settings_pb2,
    svcnode_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
    vmpool_pb2,
    zone_pb2,
    zonepool_pb2,
)
from google.protobuf.message import Message

from edge_cloud.errors import EdgeError
from edge_cloud.influx import InfluxV1Writer, Point
from edge_cloud.notify import Action, NotifyServer, Peer, type_name
from edge_cloud.objects import codec, fields, keys, registry
from edge_cloud.store import Store
from services.controller import _autoprov
from services.controller._alerts import alert_hub
from services.controller._appinst_ops import AppInstOps
from services.controller._cloudletinfo import ALL_FIELDS, CLOUDLET_INFO, apply_info, mark_offline
from services.controller._clusterinst_ops import ClusterInstOps
from services.controller._engine import Txn
from services.controller._inst_ops import receive_app_inst_info, receive_cluster_inst_info
from services.controller._progress import stream_key
from services.controller._sync_notify import SyncNotifySource
from services.controller._tracked import TrackedRuntime
from services.controller.api.appinstclient import AppInstClients, client_hub
from services.controller.api.svcnode import NodeReceiver

__all__ = [
    "EDGE_EVENTS_MEASUREMENTS",
    "RECEIVE_MESSAGES",
    "RECEIVE_TYPES",
    "SEND_TYPES",
    "ControllerNotify",
    "Handler",
    "MetricsQueue",
    "is_monitored_alert",
    "metric_point",
]

log = logging.getLogger(__name__)

SEND_TYPES: Final[tuple[type[Message], ...]] = (
    settings_pb2.Settings,
    ratelimit_pb2.FlowRateLimitSettings,
    ratelimit_pb2.MaxReqsRateLimitSettings,
    operatorcode_pb2.OperatorCode,
    flavor_pb2.Flavor,
    alertpolicy_pb2.AlertPolicy,
    cloudlet_pb2.GPUDriver,
    vmpool_pb2.VMPool,
    restagtable_pb2.ResTagTable,
    trustpolicy_pb2.TrustPolicy,
    zone_pb2.Zone,
    cloudlet_pb2.Cloudlet,
    cloudletnode_pb2.CloudletNode,
    zonepool_pb2.ZonePool,
    cloudlet_pb2.CloudletInfo,
    autoscalepolicy_pb2.AutoScalePolicy,
    autoprovpolicy_pb2.AutoProvPolicy,
    network_pb2.Network,
    clusterinst_pb2.ClusterInst,
    app_pb2.App,
    appinst_pb2.AppInst,
    refs_pb2.AppInstRefs,
    alert_pb2.Alert,
    appinstclient_pb2.AppInstClientKey,
    trustpolicyexception_pb2.TrustPolicyException,
    trustpolicyexception_pb2.TPEInstanceState,
)
"""What the Controller sends, in the original's registration (= dependency) order (§6.4)."""

RECEIVE_TYPES: Final[tuple[type[Message], ...]] = (
    cloudlet_pb2.PlatformFeatures,
    cloudlet_pb2.CloudletInfo,
    appinst_pb2.AppInstInfo,
    vmpool_pb2.VMPoolInfo,
    clusterinst_pb2.ClusterInstInfo,
    alert_pb2.Alert,
    autoprovpolicy_pb2.AutoProvInfo,
    device_pb2.Device,
    svcnode_pb2.SvcNode,
)
"""What the Controller accepts from its clients."""

RECEIVE_MESSAGES: Final[tuple[type[Message], ...]] = (
    metric_pb2.Metric,
    autoprovpolicy_pb2.AutoProvCounts,
    appinstclient_pb2.AppInstClient,
    debug_pb2.DebugReply,
)
"""Uncached messages the Controller accepts (the original's notify message types)."""

#: Seconds after the notify server is ready before it decodes the cached objects loaded at
#: start in the background (they are shared with the caches; Show calls come first).
DECODE_AHEAD_AFTER: Final = 5.0
METRICS_DB: Final = "metrics"
EDGE_EVENTS_DB: Final = "edgeevents_metrics"
EDGE_EVENTS_MEASUREMENTS: Final = frozenset({"latency-metric", "device-metric", "custom-metric"})
AUTOPROV_MEASUREMENT: Final = "auto-prov-counts"
DEVICE: Final = registry.by_class(device_pb2.Device)

PLATFORM_FEATURES: Final = registry.by_class(cloudlet_pb2.PlatformFeatures)
VM_POOL: Final = registry.by_class(vmpool_pb2.VMPool)
AUTOPROV_INFO: Final = registry.by_class(autoprovpolicy_pb2.AutoProvInfo)
ALERT: Final = registry.by_class(alert_pb2.Alert)
CS = appcommon_pb2
_TERMINAL_TRACKED: Final = frozenset(
    {
        common_pb2.READY,
        common_pb2.CREATE_ERROR,
        common_pb2.UPDATE_ERROR,
        common_pb2.DELETE_ERROR,
        common_pb2.NOT_PRESENT,
    }
)
_MONITORED_ALERTS: Final = frozenset(
    {
        "ClusterAutoScale",
        "AutoScaleUp",
        "AutoScaleDown",
        "AppInstDown",
        "CloudletDown",
        "AutoProvUndeploy",
        "CloudletResourceUsage",
        "ClusterSvcAppInstFailure",
    }
)

UpdateFn = Callable[[Peer, Any], Awaitable[None]]
FlushFn = Callable[[Peer, Mapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Handler:
    """What to do with one upstream type."""

    update: UpdateFn | None = None
    delete: UpdateFn | None = None
    flush: FlushFn | None = None


def metric_point(metric: metric_pb2.Metric) -> Point | None:
    """A Metric as the InfluxDB point the original writes (aux_services.md §1.5).

    Args:
        metric: The record; values keep their kind (double, int, bool, string).

    Returns:
        The point, or None for a record with no values (InfluxDB needs one field).
    """
    values: dict[str, float | int | str | bool] = {}
    for val in metric.vals:
        kind = val.WhichOneof("value")
        if kind == "dval":
            values[val.name] = val.dval
        elif kind == "ival":
            values[val.name] = val.ival
        elif kind == "bval":
            values[val.name] = val.bval
        elif kind == "sval":
            values[val.name] = val.sval
    if not values:
        return None
    stamp = metric.timestamp
    when = stamp.seconds * 10**9 + stamp.nanos if stamp.seconds or stamp.nanos else None
    return Point(
        measurement=metric.name,
        fields=values,
        tags={t.name: t.val for t in metric.tags if t.val},
        time=when,
    )


class MetricsQueue:
    """Points waiting for InfluxDB, per database, written by one background flush.

    Args:
        address: `--influx-addr`.
        flush_interval: Seconds between flushes.
        flush_size: Queued points that trigger a flush at once.
        limit: Queued points above which new ones are dropped.
        retry: Seconds before an unreachable InfluxDB is tried again.
    """

    def __init__(
        self,
        address: str,
        *,
        flush_interval: float = 1.0,
        flush_size: int = 50,
        limit: int = 5000,
        retry: float = 10.0,
    ) -> None:
        self._address = address
        self._interval = flush_interval
        self._flush_size = flush_size
        self._limit = limit
        self._retry = retry
        self._queues: dict[str, list[Point]] = {}
        self._writers: dict[str, InfluxV1Writer] = {}
        self._down_until = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def add(self, database: str, point: Point) -> None:
        """Queue one point; starts the flush task on first use."""
        if len(self) >= self._limit:
            self.dropped += 1
            return
        self._queues.setdefault(database, []).append(point)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self) > self._flush_size:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write what is queued (kept for the next flush if InfluxDB is unreachable)."""
        if time.monotonic() < self._down_until:
            return
        for database in list(self._queues):
            points = self._queues[database]
            if not points:
                continue
            try:
                writer = self._writers.get(database)
                if writer is None:
                    writer = await InfluxV1Writer.connect(self._address, database)
                    self._writers[database] = writer
                await writer.write(points)
            except EdgeError as err:
                log.warning("metrics for %s not written yet: %s", database, err)
                self._down_until = time.monotonic() + self._retry
                return
            self.written += len(points)
            del points[: len(points)]

    async def close(self) -> None:
        """Write what is queued (one try), stop the flush task, close the writers."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._down_until = 0.0
        await self.flush()
        for writer in self._writers.values():
            await writer.close()
        self._writers.clear()


def is_monitored_alert(labels: Mapping[str, str]) -> bool:
    """The original's `IsMonitoredAlert`: which alerts the Controller keeps."""
    name = labels.get("alertname", "")
    if not name:
        return False
    if labels.get("scope", "") in ("Application", "Cloudlet", "Platform"):
        return True
    if labels.get("type", "") == "UserDefined":
        return True
    return name in _MONITORED_ALERTS


class ControllerNotify:
    """The notify server of one Controller and its upstream handlers.

    Args:
        runtime: The runtime (engine, caches, Redis, controller id).
        store: The etcd store the server's source reads.
        name: The server's name in its VERSION notices.
        region: The region label added to alerts.
        lease_id: The controller lease alerts are stored under (None while re-registering).
    """

    def __init__(
        self,
        runtime: TrackedRuntime,
        store: Store,
        *,
        name: str,
        region: str,
        lease_id: Callable[[], int | None],
    ) -> None:
        self._rt = runtime
        self._region = region
        self._lease_id = lease_id
        self._handlers: dict[str, Handler] = {}
        self.metrics = MetricsQueue(runtime.config.influx_addr)
        self.app_inst_clients: AppInstClients = client_hub(runtime)
        self.app_inst_clients.lease_id = lease_id  # watches' requests go with this controller
        self.alerts = alert_hub(runtime)
        self.alerts.lease_id = lease_id  # alerts live under the lease, replayed on a new one
        self.alerts.region = region
        self._app_insts: AppInstOps | None = None
        self.process_now = _autoprov.ProcessNow(self._app_inst_create)
        self.server = NotifyServer(
            SyncNotifySource(runtime.engine.sync, store, SEND_TYPES),
            name=name,
            send_types=SEND_TYPES,
            receive_types=RECEIVE_TYPES,
            receive_messages=RECEIVE_MESSAGES,
            on_receive=self._receive,
            on_flush=self._flush,
            send_messages=(debug_pb2.DebugRequest,),
            decode_ahead_after=DECODE_AHEAD_AFTER,  # the caches' objects: API calls first
        )
        self.register(
            cloudlet_pb2.CloudletInfo,
            Handler(self._cloudlet_info, self._cloudlet_info_delete, self._cloudlet_info_flush),
        )
        self.register(cloudlet_pb2.PlatformFeatures, Handler(self._platform_features))
        self.register(vmpool_pb2.VMPoolInfo, Handler(self._vm_pool_info))
        self.register(
            autoprovpolicy_pb2.AutoProvInfo,
            Handler(self._autoprov_info, self._autoprov_info_delete),
        )
        self.register(alert_pb2.Alert, Handler(self._alert, self._alert_delete, self._alert_flush))
        self.register(clusterinst_pb2.ClusterInstInfo, Handler(self._cluster_inst_info))
        self.register(appinst_pb2.AppInstInfo, Handler(self._app_inst_info))
        self.register(device_pb2.Device, Handler(self._device))
        self.register(metric_pb2.Metric, Handler(self._metric))
        self.register(autoprovpolicy_pb2.AutoProvCounts, Handler(self._autoprov_counts))
        self.register(appinstclient_pb2.AppInstClient, Handler(self._app_inst_client))
        nodes = NodeReceiver(runtime, self.server)  # SvcNode registry, debug requests
        self.register(svcnode_pb2.SvcNode, Handler(nodes.update, nodes.delete, nodes.flush))
        self.register(debug_pb2.DebugReply, Handler(nodes.reply))

    async def close(self) -> None:
        """Write the queued metrics, close the InfluxDB connections, stop the alert replay."""
        await self.process_now.close()
        await self.metrics.close()
        await self.alerts.close()

    def register(self, cls: type[Message], handler: Handler) -> None:
        """Handle an upstream type (one of `RECEIVE_TYPES`); replaces an earlier handler."""
        self._handlers[type_name(cls)] = handler

    async def _receive(self, peer: Peer, action: Action, obj: Message) -> None:
        handler = self._handlers.get(type_name(obj))
        call = None
        if handler is not None:
            call = handler.update if action is Action.UPDATE else handler.delete
        if call is None:
            log.debug(
                "notify: no handler for %s %s from %s", action.name, type_name(obj), peer.name
            )
            return
        try:
            await call(peer, obj)
        except EdgeError as err:
            log.warning(
                "notify %s of %s from %s failed: %s", action.name, type_name(obj), peer.name, err
            )

    async def _flush(self, peer: Peer, objects: Mapping[str, Mapping[str, Message]]) -> None:
        for name, objs in objects.items():
            handler = self._handlers.get(name)
            if handler is None or handler.flush is None or not objs:
                continue
            try:
                await handler.flush(peer, objs)
            except EdgeError as err:
                log.warning("notify flush of %s from %s failed: %s", name, peer.name, err)

    # -- CloudletInfo ----------------------------------------------------------------------

    def _info_state(self, key: cloudletkey_pb2.CloudletKey) -> int:
        info = self._rt.caches.get(CLOUDLET_INFO, keys.key_string(key))
        return info.state if info is not None else CS.CLOUDLET_STATE_NOT_PRESENT

    async def _cloudlet_info(self, peer: Peer, info: cloudlet_pb2.CloudletInfo) -> None:
        info.notify_id = peer.notify_id
        await apply_info(self._rt, info, paths=ALL_FIELDS)  # READY: alerts follow (§5.2)

    async def _cloudlet_info_delete(self, peer: Peer, info: cloudlet_pb2.CloudletInfo) -> None:
        await self._offline(peer, [info.key])

    async def _cloudlet_info_flush(
        self, peer: Peer, infos: Mapping[str, cloudlet_pb2.CloudletInfo]
    ) -> None:
        await self._offline(peer, [i.key for i in infos.values()])

    async def _offline(self, peer: Peer, cloudlets: list[cloudletkey_pb2.CloudletKey]) -> None:
        """Mark the connection's cloudlets OFFLINE; those that were READY raise CloudletDown."""
        ready = [k for k in cloudlets if self._info_state(k) == CS.CLOUDLET_STATE_READY]
        await mark_offline(self._rt, cloudlets, peer.notify_id)
        for key in ready:
            if self._info_state(key) == CS.CLOUDLET_STATE_OFFLINE:
                await self.alerts.cloudlet_down(key)

    # -- ClusterInstInfo / AppInstInfo --------------------------------------------------------

    async def _cluster_inst_info(self, peer: Peer, info: clusterinst_pb2.ClusterInstInfo) -> None:
        info.notify_id = peer.notify_id
        await receive_cluster_inst_info(self._rt, info)

    async def _app_inst_info(self, peer: Peer, info: appinst_pb2.AppInstInfo) -> None:
        await receive_app_inst_info(self._rt, info)

    # -- PlatformFeatures --------------------------------------------------------------------

    async def _platform_features(self, peer: Peer, features: cloudlet_pb2.PlatformFeatures) -> None:
        if not features.platform_type:
            return
        stored = cloudlet_pb2.PlatformFeatures()
        stored.CopyFrom(features)
        stored.delete_prepare = False

        def put(txn: Txn) -> None:
            if txn.get(PLATFORM_FEATURES, stored.platform_type) != stored:
                txn.put(stored)

        await self._rt.engine.apply(put)
        log.info(
            "platform %s registered by %s (node type %s)",
            stored.platform_type,
            peer.name,
            stored.node_type,
        )

    # -- VMPoolInfo --------------------------------------------------------------------------

    async def _vm_pool_info(self, peer: Peer, info: vmpool_pb2.VMPoolInfo) -> None:
        published = vmpool_pb2.VMPoolInfo()
        published.CopyFrom(info)
        published.ClearField("fields")
        await self._rt.tracked.progress.publish_info(
            stream_key(info.key), codec.encode(published), terminal=info.state in _TERMINAL_TRACKED
        )
        selected = fields.FieldSet(info.fields) if info.fields else None

        def has(path: str) -> bool:
            return selected is None or selected.has_or_child(path)

        def copy_in(txn: Txn) -> None:
            pool = txn.get(VM_POOL, info.key)
            if pool is None:
                return
            changed = vmpool_pb2.VMPool()
            changed.CopyFrom(pool)
            if has("4"):
                del changed.vms[:]
                changed.vms.extend(info.vms)
            if has("5"):
                changed.state = info.state
            if has("6"):
                del changed.errors[:]
                changed.errors.extend(info.errors)
            if changed != pool:
                txn.put(changed)

        await self._rt.engine.apply(copy_in)

    # -- AutoProvInfo ------------------------------------------------------------------------

    async def _autoprov_info(self, peer: Peer, info: autoprovpolicy_pb2.AutoProvInfo) -> None:
        info.notify_id = peer.notify_id

        def put(txn: Txn) -> None:
            txn.put(info)

        await self._rt.engine.apply(put)

    async def _autoprov_info_delete(
        self, peer: Peer, info: autoprovpolicy_pb2.AutoProvInfo
    ) -> None:
        def remove(txn: Txn) -> None:
            if txn.get(AUTOPROV_INFO, info.key) is not None:
                txn.delete(AUTOPROV_INFO, info.key)

        await self._rt.engine.apply(remove)

    # -- Alert ---------------------------------------------------------------------------------

    async def _alert(self, peer: Peer, alert: alert_pb2.Alert) -> None:
        if not is_monitored_alert(alert.labels):
            return
        alert.notify_id = peer.notify_id
        await self.alerts.update(alert)  # source cache, then etcd under the lease

    async def _alert_delete(self, peer: Peer, alert: alert_pb2.Alert) -> None:
        await self.alerts.delete_reported(alert, peer.notify_id)

    async def _alert_flush(self, peer: Peer, alerts: Mapping[str, alert_pb2.Alert]) -> None:
        await self.alerts.flush(peer.notify_id)
        for alert in alerts.values():  # stored but no longer in the source cache
            await self.alerts.delete_reported(alert, peer.notify_id)

    # -- DME reports -------------------------------------------------------------------------

    async def _metric(self, peer: Peer, metric: metric_pb2.Metric) -> None:
        point = metric_point(metric)
        if point is None:
            return
        database = EDGE_EVENTS_DB if metric.name in EDGE_EVENTS_MEASUREMENTS else METRICS_DB
        self.metrics.add(database, point)

    def _app_inst_create(self) -> _autoprov.CreateFn:
        """The API's AppInst create, built on first use (the runtime is attached by then)."""
        if self._app_insts is None:
            self._app_insts = AppInstOps(self._rt, ClusterInstOps(self._rt))
        return self._app_insts.create

    async def _autoprov_counts(self, peer: Peer, counts: autoprovpolicy_pb2.AutoProvCounts) -> None:
        if len(counts.counts) == 1 and counts.counts[0].process_now:
            target = counts.counts[0]
            log.info(
                "auto-provisioning demand from %s for %s in zone %s: %d (process now)",
                counts.dme_node_name,
                keys.key_string(target.app_key),
                keys.key_string(target.zone_key),
                target.count,
            )
            self.process_now.request(target.app_key, target.zone_key)
            return
        stamp = counts.timestamp
        when = stamp.seconds * 10**9 + stamp.nanos if stamp.seconds or stamp.nanos else None
        for count in counts.counts:
            self.metrics.add(
                METRICS_DB,
                Point(
                    measurement=AUTOPROV_MEASUREMENT,
                    fields={"count": count.count},
                    tags={
                        "apporg": count.app_key.organization,
                        "app": count.app_key.name,
                        "ver": count.app_key.version,
                        "zoneorg": count.zone_key.organization,
                        "zone": count.zone_key.name,
                        "dmeid": counts.dme_node_name,
                    },
                    time=when,
                ),
            )

    async def _app_inst_client(self, peer: Peer, client: appinstclient_pb2.AppInstClient) -> None:
        self.app_inst_clients.add(client)

    async def _device(self, peer: Peer, device: device_pb2.Device) -> None:
        device.notify_id = 0

        def put(txn: Txn) -> None:
            if txn.get(DEVICE, keys.key_string(device)) is None:
                txn.put(device)

        await self._rt.engine.apply(put)
