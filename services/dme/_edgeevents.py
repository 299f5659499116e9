"""StreamEdgeEvent: the persistent connection of a device (dme.md §2.10).

A client opens the stream with EVENT_INIT_CONNECTION carrying its session and edge-events
cookies; it is then attached to the AppInst its edge cookie names. Later messages are
latency samples (answered with statistics), location updates (answered with a better
cloudlet when there is one), custom events and termination. Changes arriving over notify
are pushed to attached clients: AppInst health, cloudlet state and maintenance, AppInst
deletion. The real handler always runs (the edgexr `standalone` no-op with its fake
statistics is not reproduced, see §2.10 Quirk c).

When an instance becomes usable (new, healthy again, or its cloudlet READY / out of
maintenance), every client of the same App whose FindCloudlet result (its carrier, last
location) is now a different instance than its current one gets `EVENT_CLOUDLET_UPDATE`.

Statistics (`EdgeEventStats`, when given): a session per connection, and per move to another
location tile or change of device details; latency samples; custom events, all under the
client's AppInst, location tile and device (dme.md §2.10, §2.12).

The Controller's `request-appinst-latency` debug command (`request_latency_command`, args
the AppInstKey JSON) sends `EVENT_LATENCY_REQUEST` to every client of that AppInst, which
then measures and answers with `EVENT_LATENCY_SAMPLES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Final

from distributed_match_engine import app_client_pb2, appcommon_pb2, loc_pb2

from edge_cloud.errors import EdgeError, ResourceExhausted
from services.dme._calls import Call, DmeCalls
from services.dme._ranking import validate_location
from services.dme._ratelimit import PERSISTENT_CONNECTION_API
from services.dme._stats import DeviceInfo, EdgeEventStats, EdgeStatKey, location_tile
from services.dme._world import AppInstKey, AppKey, CloudletKey, Instance

__all__ = [
    "LATENCY_REQUEST_SENT",
    "REQUEST_APPINST_LATENCY",
    "EdgeEvents",
    "StreamError",
    "latency_statistics",
]

log = logging.getLogger(__name__)

_C = app_client_pb2.ClientEdgeEvent
_S = app_client_pb2.ServerEdgeEvent
_OK_HEALTH: Final = frozenset(
    {appcommon_pb2.HealthCheck.HEALTH_CHECK_OK, appcommon_pb2.HealthCheck.HEALTH_CHECK_UNKNOWN}
)
_READY: Final = appcommon_pb2.CloudletState.CLOUDLET_STATE_READY
REQUEST_APPINST_LATENCY: Final = "request-appinst-latency"
"""The debug command name (the original's uaemcommon.RequestAppInstLatency)."""
LATENCY_REQUEST_SENT: Final = "successfully sent latency request"
"""Its output, the original's words (also when no client is connected)."""
_NORMAL: Final = appcommon_pb2.MaintenanceState.NORMAL_OPERATION


class StreamError(Exception):
    """Ends the stream with gRPC UNKNOWN and this text (the original's plain errors)."""


def latency_statistics(samples: Iterable[float], now: float | None = None) -> loc_pb2.Statistics:
    """Statistics over latency samples as the original computes them (§2.10 step 4).

    Args:
        samples: Sample values; negative ones are ignored.
        now: Timestamp in Unix seconds (default: now).

    Returns:
        avg, min, max, unbiased variance, std_dev and num_samples.
    """
    values = [v for v in samples if v >= 0]
    stats = loc_pb2.Statistics(num_samples=len(values))
    if values:
        stats.avg = sum(values) / len(values)
        stats.min = min(values)
        stats.max = max(values)
        if len(values) > 1:
            stats.variance = sum((v - stats.avg) ** 2 for v in values) / (len(values) - 1)
            stats.std_dev = math.sqrt(stats.variance)
    stamp = time.time() if now is None else now
    stats.timestamp.seconds = int(stamp)
    stats.timestamp.nanos = int((stamp - int(stamp)) * 1e9)
    return stats


def _device(msg: app_client_pb2.ClientEdgeEvent, before: DeviceInfo) -> DeviceInfo:
    """The device tags after a message: what it carries, else what was known."""
    static = msg.device_info_static if msg.HasField("device_info_static") else None
    dynamic = msg.device_info_dynamic if msg.HasField("device_info_dynamic") else None
    return DeviceInfo(
        carrier=dynamic.carrier_name if dynamic is not None else before.carrier,
        data_network_type=(
            dynamic.data_network_type if dynamic is not None else before.data_network_type
        ),
        os=static.device_os if static is not None else before.os,
        model=static.device_model if static is not None else before.model,
        signal_strength=dynamic.signal_strength if dynamic is not None else before.signal_strength,
    )


@dataclass(eq=False)
class _Client:
    app: AppKey
    inst: AppInstKey
    carrier: str
    location: loc_pb2.Loc
    queue: asyncio.Queue[app_client_pb2.ServerEdgeEvent | BaseException | None] = field(
        default_factory=asyncio.Queue
    )
    attached: bool = False
    cloudlet: tuple[str, str, str] = ("", "", "")
    device: DeviceInfo = field(default_factory=DeviceInfo)
    tile: str = ""


class EdgeEvents:
    """The connected clients by AppInst, and the stream handler.

    Args:
        calls: The DME's calls (cookies, search, rate limits).
        stats: Where edge-events statistics are counted, if anywhere.
    """

    def __init__(self, calls: DmeCalls, stats: EdgeEventStats | None = None) -> None:
        self._calls = calls
        self.stats = stats
        self._clients: dict[AppInstKey, set[_Client]] = {}

    def clients(self) -> int:
        """How many clients are attached."""
        return sum(len(c) for c in self._clients.values())

    # -- the stream --

    async def stream(
        self, call: Call, requests: AsyncIterator[app_client_pb2.ClientEdgeEvent]
    ) -> AsyncIterator[app_client_pb2.ServerEdgeEvent]:
        """Serve one StreamEdgeEvent call.

        Args:
            call: The call (rate limited as a whole first).
            requests: The client's messages.

        Yields:
            Server events, in order.

        Raises:
            StreamError: For a bad first message (gRPC UNKNOWN).
        """
        await self._calls.admit(call)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            raise StreamError("Initial message is nil") from None
        if first.event_type != _C.EVENT_INIT_CONNECTION:
            raise StreamError("First message should have event type EVENT_INIT_CONNECTION")
        session = self._calls.authenticate(first.session_cookie)
        edge = self._calls.codec.verify_edge_events_cookie(first.edge_events_cookie)
        client = _Client(
            app=AppKey(session.org_name, session.app_name, session.app_vers),
            inst=AppInstKey(edge.app_inst_name, session.org_name),
            carrier=first.device_info_dynamic.carrier_name,
            location=edge.location,
            cloudlet=(edge.cloudlet_org, edge.cloudlet_name, ""),
            device=_device(first, DeviceInfo()),
        )
        if self.stats is not None:
            client.tile = self._tile(edge.location)
            self.stats.record_device(self._stat_key(client))
        if self._calls.world.instance(client.inst) is not None:  # §2.10 Quirk b
            client.attached = True
            self._clients.setdefault(client.inst, set()).add(client)
        self._send(client, _S(event_type=_S.EVENT_INIT_CONNECTION))
        reader = asyncio.create_task(self._read(client, call, requests, edge))
        try:
            while True:
                item = await client.queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._detach(client)

    def _detach(self, client: _Client) -> None:
        group = self._clients.get(client.inst)
        if group is not None:
            group.discard(client)
            if not group:
                del self._clients[client.inst]

    @staticmethod
    def _send(client: _Client, event: app_client_pb2.ServerEdgeEvent) -> None:
        if client.attached:
            client.queue.put_nowait(event)

    async def _read(
        self,
        client: _Client,
        call: Call,
        requests: AsyncIterator[app_client_pb2.ClientEdgeEvent],
        edge: object,
    ) -> None:
        try:
            async for msg in requests:
                if msg.event_type == _C.EVENT_TERMINATE_CONNECTION:
                    break
                try:
                    self._calls.limiter.limit_api(PERSISTENT_CONNECTION_API, call.peer_ip)
                except ResourceExhausted as err:
                    self._error(
                        client,
                        "Limiting client messages. Most recent ClientEdgeEvent will not be "
                        f"processed: {err.message}",
                    )
                    continue
                self._handle(client, msg, edge)
            client.queue.put_nowait(None)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            client.queue.put_nowait(err)

    def _tile(self, loc: loc_pb2.Loc) -> str:
        side = self._calls.world.settings.location_tile_side_length_km or 2
        return location_tile(loc, side)

    @staticmethod
    def _stat_key(client: _Client) -> EdgeStatKey:
        return EdgeStatKey(
            app_inst=(client.inst.name, client.inst.organization),
            app=(client.app.organization, client.app.name, client.app.version),
            cloudlet=client.cloudlet,
            tile=client.tile,
            device=client.device,
        )

    def _error(self, client: _Client, text: str) -> None:
        self._send(client, _S(event_type=_S.EVENT_ERROR, error_msg=text))

    def _handle(self, client: _Client, msg: app_client_pb2.ClientEdgeEvent, edge: object) -> None:
        kind = msg.event_type
        if kind == _C.EVENT_LATENCY_SAMPLES:
            try:
                validate_location(msg.gps_location if msg.HasField("gps_location") else None)
            except EdgeError as err:
                self._error(
                    client,
                    "Invalid EVENT_LATENCY_SAMPLES, invalid location: rpc error: code = "
                    f"InvalidArgument desc = {err.message}",
                )
                return
            stats = latency_statistics(s.value for s in msg.samples)
            self._send(client, _S(event_type=_S.EVENT_LATENCY_PROCESSED, statistics=stats))
            if self.stats is not None:
                client.device = _device(msg, client.device)
                client.tile = self._tile(msg.gps_location)
                self.stats.record_latency(self._stat_key(client), (s.value for s in msg.samples))
        elif kind == _C.EVENT_LOCATION_UPDATE:
            try:
                loc = validate_location(msg.gps_location if msg.HasField("gps_location") else None)
            except EdgeError as err:
                self._error(
                    client,
                    "Invalid EVENT_LOCATION_UPDATE, invalid location: rpc error: code = "
                    f"InvalidArgument desc = {err.message}",
                )
                return
            if msg.device_info_dynamic.carrier_name:
                client.carrier = msg.device_info_dynamic.carrier_name
            if self.stats is not None:
                device, tile = _device(msg, client.device), self._tile(loc)
                if device != client.device or tile != client.tile:
                    client.device, client.tile = device, tile
                    self.stats.record_device(self._stat_key(client))
            client.location = loc_pb2.Loc()
            client.location.CopyFrom(loc)
            reply = self._calls.find(client.app, client.carrier, loc)
            if reply.status == app_client_pb2.FindCloudletReply.FIND_FOUND:
                new = self._calls.codec.verify_edge_events_cookie(reply.edge_events_cookie)
                if not new.same_cluster(edge):  # type: ignore[arg-type]
                    self._send(client, _S(event_type=_S.EVENT_CLOUDLET_UPDATE, new_cloudlet=reply))
        elif kind == _C.EVENT_CUSTOM_EVENT:
            if self.stats is not None:
                self.stats.record_custom(
                    self._stat_key(client), msg.custom_event, (s.value for s in msg.samples)
                )
        else:
            name = (
                _C.ClientEventType.Name(kind) if kind in _C.ClientEventType.values() else str(kind)
            )
            self._error(client, f"Received unknown event type: {name}")

    # -- pushes from notify --

    def _new_cloudlet(self, client: _Client, event: app_client_pb2.ServerEdgeEvent) -> None:
        reply = self._calls.find(client.app, client.carrier, client.location)
        if reply.status == app_client_pb2.FindCloudletReply.FIND_FOUND:
            event.new_cloudlet.CopyFrom(reply)
        else:
            event.error_msg = (
                "Current appinst is unusable. Unable to find any cloudlets doing FindCloudlet "
                "- FindStatus is FIND_NOTFOUND"
            )

    def app_inst_changed(self, inst: Instance, old_health: int | None) -> None:
        """An AppInst was updated: push health changes to its clients.

        Args:
            inst: The instance after the update.
            old_health: Its health before, None when it is new.
        """
        if old_health is None or inst.health == old_health or inst.health in _OK_HEALTH:
            return
        for client in list(self._clients.get(inst.key, ())):
            event = _S(event_type=_S.EVENT_APPINST_HEALTH, health_check=inst.health)  # type: ignore[arg-type]
            if not inst.usable:
                self._new_cloudlet(client, event)
            self._send(client, event)

    def app_inst_deleted(self, key: AppInstKey) -> None:
        """An AppInst was deleted: tell its clients (SERVER_FAIL) and find them another.

        Args:
            key: The deleted instance.
        """
        for client in list(self._clients.pop(key, ())):
            event = _S(
                event_type=_S.EVENT_APPINST_HEALTH,
                health_check=appcommon_pb2.HealthCheck.HEALTH_CHECK_SERVER_FAIL,
            )
            self._new_cloudlet(client, event)
            self._send(client, event)

    def request_latency(self, key: AppInstKey) -> int:
        """Ask every client attached to an AppInst to measure its latency.

        Each gets `EVENT_LATENCY_REQUEST`; it answers with `EVENT_LATENCY_SAMPLES`, which
        `_handle` turns into statistics as for samples it sends on its own.

        Returns:
            How many clients were asked.
        """
        clients = list(self._clients.get(key, ()))
        for client in clients:
            self._send(client, _S(event_type=_S.EVENT_LATENCY_REQUEST))
        return len(clients)

    def request_latency_command(self, args: str) -> str:
        """The `request-appinst-latency` debug command: `args` is the AppInstKey as JSON.

        Returns:
            The reply's output: the original's confirmation, or why the args were refused.
        """
        if not args:
            return "appinst info in args required"
        try:
            decoded = json.loads(args)
        except json.JSONDecodeError as err:
            return f"invalid AppInstKey JSON in args: {err}"
        if not isinstance(decoded, dict):
            return 'args must be an AppInstKey JSON object, {"name":...,"organization":...}'
        key = AppInstKey(str(decoded.get("name", "")), str(decoded.get("organization", "")))
        asked = self.request_latency(key)
        log.info("latency request for AppInst %s sent to %d clients", key, asked)
        return LATENCY_REQUEST_SENT

    def _all(self) -> list[_Client]:
        return [c for group in self._clients.values() for c in group]

    def cloudlet_state_changed(self, key: CloudletKey, state: int) -> None:
        """A cloudlet's state changed: non-READY states go to every client (§2.10 Quirk a).

        Args:
            key: The cloudlet.
            state: Its new `CloudletState`.
        """
        if state == _READY:
            return
        for client in self._all():
            event = _S(event_type=_S.EVENT_CLOUDLET_STATE, cloudlet_state=state)  # type: ignore[arg-type]
            inst = self._calls.world.instance(client.inst)
            if inst is None or not inst.usable:
                self._new_cloudlet(client, event)
            self._send(client, event)

    def cloudlet_maintenance_changed(self, key: CloudletKey, state: int) -> None:
        """A cloudlet's maintenance state changed: anything but NORMAL goes to every client.

        Args:
            key: The cloudlet.
            state: Its new `MaintenanceState`.
        """
        if state == _NORMAL:
            return
        for client in self._all():
            event = _S(event_type=_S.EVENT_CLOUDLET_MAINTENANCE, maintenance_state=state)  # type: ignore[arg-type]
            if state == appcommon_pb2.MaintenanceState.UNDER_MAINTENANCE:
                self._new_cloudlet(client, event)
            self._send(client, event)

    def instances_usable(self, apps: Iterable[AppKey]) -> None:
        """Instances of these Apps became usable: offer clients a better one, if it is.

        Args:
            apps: The Apps whose instances became usable.
        """
        wanted = set(apps)
        if not wanted:
            return
        for client in self._all():
            if client.app not in wanted:
                continue
            reply = self._calls.find(client.app, client.carrier, client.location)
            if reply.status != app_client_pb2.FindCloudletReply.FIND_FOUND:
                continue
            if reply.tags.get("appinst") == client.inst.name:
                continue
            self._send(client, _S(event_type=_S.EVENT_CLOUDLET_UPDATE, new_cloudlet=reply))
