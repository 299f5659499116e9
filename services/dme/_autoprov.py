"""Auto-provisioning demand: "a cloudlet in a policy zone would have served this client better".

dme.md §2.2.2, aux_services.md §3.3. On every FindCloudlet and GetAppInstList of an App with
AutoProvPolicies, the cloudlets of each policy's zones (searched under the same carrier
filter and public-cloud padding as instances) that are strictly closer than the best
instance found (100,000 km when none) are candidates. Within one policy, a cloudlet with a
free reservable ClusterInst of a compatible deployment wins regardless of distance, else the
closest; across policies the closest wins, ties going to the smaller interval count (0 counts
as 1), then the smaller deploy client count. The winner's (App, zone) counter goes up.

Counts reach the Controller as `AutoProvCounts` messages: at once (one count,
`process_now`) when the policy deploys on one interval and the count grew by its deploy
client count since the last send; otherwise every `AutoDeployIntervalSec`, wall-clock
aligned, for the keys that changed.

Fixed and documented: the original does not move the "last sent" count on an immediate send,
so every later call re-sends `process_now` until the next interval; here it moves, so one
burst of demand asks for one instance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple

from edgeproto import app_pb2, autoprovpolicy_pb2, cloudlet_pb2, clusterinst_pb2

from services.dme._names import PUBLIC_CLOUDS
from services.dme._ranking import distance_km, pad_km

__all__ = ["NO_INSTANCE_KM", "AutoProvStats", "ZoneKey"]

NO_INSTANCE_KM: Final = 100_000.0
"""The best distance when no instance was found: any policy cloudlet is closer."""

_AppKey = tuple[str, str, str]
_CloudletKey = tuple[str, str, str]


class ZoneKey(NamedTuple):
    """A zone: (organisation, name, federated organisation)."""

    organization: str
    name: str
    federated_organization: str = ""


@dataclass(frozen=True, slots=True)
class _Policy:
    deploy_client_count: int
    interval_count: int
    zones: tuple[ZoneKey, ...]


@dataclass(slots=True)
class _Count:
    count: int = 0
    last_sent: int = 0


def _cluster_deployment(app_deployment: str) -> str:
    """The ClusterInst deployment an App deployment runs on (`AppInstToClusterDeployment`)."""
    return "kubernetes" if app_deployment == "helm" else app_deployment


class AutoProvStats:
    """Demand counters and the policy, zone and cluster data they are computed from.

    Args:
        node_name: This DME's name (`dme_node_name` of the counts).
        send: Sends an `AutoProvCounts` message upstream.
        clock: Wall-clock time in Unix seconds.
    """

    def __init__(
        self,
        node_name: str,
        send: Callable[[autoprovpolicy_pb2.AutoProvCounts], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._node = node_name
        self._send = send
        self._clock = clock
        self._policies: dict[tuple[str, str], _Policy] = {}
        self._zones: dict[ZoneKey, dict[_CloudletKey, tuple[float, float]]] = {}
        self._cloudlet_zone: dict[_CloudletKey, ZoneKey] = {}
        self._free: dict[_CloudletKey, dict[tuple[str, str], str]] = {}
        self._counts: dict[tuple[_AppKey, ZoneKey], _Count] = {}

    # -- data from notify --

    def update_policy(self, policy: autoprovpolicy_pb2.AutoProvPolicy) -> None:
        """Keep an AutoProvPolicy (key, deploy counts, zones)."""
        self._policies[policy.key.organization, policy.key.name] = _Policy(
            policy.deploy_client_count,
            max(policy.deploy_interval_count, 1),
            tuple(ZoneKey(z.organization, z.name, z.federated_organization) for z in policy.zones),
        )

    def delete_policy(self, organization: str, name: str) -> None:
        """Forget a policy."""
        self._policies.pop((organization, name), None)

    def update_cloudlet(self, cloudlet: cloudlet_pb2.Cloudlet) -> None:
        """Place a cloudlet in its zone (by the Cloudlet object's location)."""
        key = (
            cloudlet.key.organization,
            cloudlet.key.name,
            cloudlet.key.federated_organization,
        )
        self.delete_cloudlet(key)
        if not cloudlet.zone:
            return
        zone = ZoneKey(
            cloudlet.key.organization, cloudlet.zone, cloudlet.key.federated_organization
        )
        self._cloudlet_zone[key] = zone
        self._zones.setdefault(zone, {})[key] = (
            cloudlet.location.latitude,
            cloudlet.location.longitude,
        )

    def delete_cloudlet(self, key: _CloudletKey) -> None:
        """Take a cloudlet out of its zone."""
        zone = self._cloudlet_zone.pop(key, None)
        if zone is not None:
            members = self._zones.get(zone, {})
            members.pop(key, None)
            if not members:
                self._zones.pop(zone, None)

    def update_cluster_inst(self, inst: clusterinst_pb2.ClusterInst) -> None:
        """Track free reservable clusters per cloudlet."""
        cloudlet = (
            inst.cloudlet_key.organization,
            inst.cloudlet_key.name,
            inst.cloudlet_key.federated_organization,
        )
        key = (inst.key.organization, inst.key.name)
        free = self._free.setdefault(cloudlet, {})
        if inst.reservable and not inst.reserved_by:
            free[key] = inst.deployment
        else:
            free.pop(key, None)
        if not free:
            del self._free[cloudlet]

    def delete_cluster_inst(self, inst: clusterinst_pb2.ClusterInst) -> None:
        """Forget a cluster."""
        cloudlet = (
            inst.cloudlet_key.organization,
            inst.cloudlet_key.name,
            inst.cloudlet_key.federated_organization,
        )
        free = self._free.get(cloudlet)
        if free is not None:
            free.pop((inst.key.organization, inst.key.name), None)
            if not free:
                del self._free[cloudlet]

    def forget_app(self, app: app_pb2.AppKey) -> None:
        """Drop the counters of a deleted App."""
        key = (app.organization, app.name, app.version)
        for counted in [k for k in self._counts if k[0] == key]:
            del self._counts[counted]

    # -- counting --

    def searched(
        self,
        app: _AppKey,
        policies: Iterable[str],
        deployment: str,
        req_carrier: str,
        lat: float,
        lon: float,
        best_km: float | None,
    ) -> ZoneKey | None:
        """Count the demand one search showed, if a policy zone would have been closer.

        Args:
            app: The App searched for.
            policies: The App's policy names (organisation: the App's).
            deployment: The App's deployment (for free-cluster compatibility).
            req_carrier: The request's carrier, translated ("" searches all).
            lat: Device latitude.
            lon: Device longitude.
            best_km: Distance of the best instance found (padded), None when none.

        Returns:
            The zone counted, if any.
        """
        best = NO_INSTANCE_KM if best_km is None else best_km
        winner: tuple[float, int, int, ZoneKey, _Policy] | None = None
        for name in policies:
            policy = self._policies.get((app[0], name))
            if policy is None or policy.deploy_client_count <= 0:
                continue
            found = self._search_policy(policy, deployment, req_carrier, lat, lon, best)
            if found is None:
                continue
            distance, zone = found
            rank = (distance, policy.interval_count, policy.deploy_client_count)
            if winner is None or rank < winner[:3]:
                winner = (*rank, zone, policy)
        if winner is None:
            return None
        zone, policy = winner[3], winner[4]
        self._increment(app, zone, policy)
        return zone

    def _search_policy(
        self,
        policy: _Policy,
        deployment: str,
        req_carrier: str,
        lat: float,
        lon: float,
        best: float,
    ) -> tuple[float, ZoneKey] | None:
        found: tuple[float, ZoneKey] | None = None
        found_free = False
        cluster_deployment = _cluster_deployment(deployment)
        for zone in policy.zones:
            carrier = zone.organization
            public = carrier in PUBLIC_CLOUDS
            if req_carrier and not public and carrier != req_carrier:
                continue
            pad = pad_km(req_carrier, carrier)
            for cloudlet, (clat, clon) in self._zones.get(zone, {}).items():
                distance = distance_km(lat, lon, clat, clon) + pad
                if distance >= best:
                    continue
                free = any(
                    not cluster_deployment or d == cluster_deployment
                    for d in self._free.get(cloudlet, {}).values()
                )
                if found_free and not free:
                    continue
                if found is not None and found_free == free and distance > found[0]:
                    continue
                found, found_free = (distance, zone), free
        return found

    def _increment(self, app: _AppKey, zone: ZoneKey, policy: _Policy) -> None:
        counter = self._counts.get((app, zone))
        if counter is None:
            counter = self._counts[app, zone] = _Count()
        counter.count += 1
        if (
            counter.count - counter.last_sent >= policy.deploy_client_count
            and policy.interval_count <= 1
        ):
            counter.last_sent = counter.count
            message = autoprovpolicy_pb2.AutoProvCounts(dme_node_name=self._node)
            self._add(message, app, zone, counter.count, process_now=True)
            self._stamp(message)
            self._send(message)

    # -- reporting --

    def report(self) -> autoprovpolicy_pb2.AutoProvCounts | None:
        """Send the counts that changed since the last report (the interval's message).

        Returns:
            The message sent, or None when nothing changed.
        """
        message = autoprovpolicy_pb2.AutoProvCounts(dme_node_name=self._node)
        for (app, zone), counter in self._counts.items():
            if counter.count == counter.last_sent:
                continue
            counter.last_sent = counter.count
            self._add(message, app, zone, counter.count, process_now=False)
        if not message.counts:
            return None
        self._stamp(message)
        self._send(message)
        return message

    def counts(self) -> dict[tuple[_AppKey, ZoneKey], int]:
        """The running counts (for tests and debugging)."""
        return {k: c.count for k, c in self._counts.items()}

    def _stamp(self, message: autoprovpolicy_pb2.AutoProvCounts) -> None:
        now = self._clock()
        message.timestamp.seconds = int(now)
        message.timestamp.nanos = int((now - int(now)) * 1e9)

    @staticmethod
    def _add(
        message: autoprovpolicy_pb2.AutoProvCounts,
        app: _AppKey,
        zone: ZoneKey,
        count: int,
        *,
        process_now: bool,
    ) -> None:
        entry = message.counts.add(count=count, process_now=process_now)
        entry.app_key.organization, entry.app_key.name, entry.app_key.version = app
        entry.zone_key.organization = zone.organization
        entry.zone_key.name = zone.name
        entry.zone_key.federated_organization = zone.federated_organization
