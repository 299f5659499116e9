"""What the DME knows of its region: apps, instances, cloudlets and operator codes.

Everything here arrives from the Controller over notify (dme.md §2.12) and is replaced or
dropped by the update/delete/prune methods, which take the edgeproto messages and keys as
notify delivers them. Nothing is persisted: after a reconnect the Controller sends it all
again and `prune_*` drops what it did not send.

The search (`_ranking`) reads `Instance` objects. Each carries what ranking needs, already
converted (cloudlet location as floats, ports as the reply's `AppPort`s) and a `usable`
flag the world keeps current from the instance's own state and its cloudlet's, so a search
only tests one attribute. Listeners (the spatial index) are told when an instance is
*placed* or *unplaced*: when it appears, disappears, moves, or its cloudlet's alliance
organisations change; usability changes are not placements, the flag is read at search time.

Deviations from the original, all invisible to clients in a healthy region (documented for
the reviewer, see also dme.md §2.2.3):

- Instances are kept whether or not their App is known yet (the original drops an AppInst
  that arrives before its App until the AppInst changes again), and deleting an App keeps
  its instances (the Controller refuses to delete an App that has instances).
- Usability is derived, not copied: an instance is usable when its own tracked state and
  health allow it *and* its cloudlet is known, READY, and under maintenance neither by the
  Controller's Cloudlet object nor by the CRM's CloudletInfo. The original copies states onto
  instances as messages arrive (last writer wins), so a CloudletInfo update during
  maintenance could make instances usable again, and a re-created Cloudlet left its
  instances NOT_PRESENT until they were updated.
- Pruning AppInsts also drops their alliance placements (the original left them behind).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    common_pb2,
    operatorcode_pb2,
    settings_pb2,
)

from edge_cloud.objects.keys import key_string
from services.dme._names import is_platform_app

__all__ = [
    "AppInstKey",
    "AppKey",
    "AppRecord",
    "CloudletKey",
    "CloudletRecord",
    "ClusterKey",
    "Instance",
    "PlacementListener",
    "World",
    "app_ports",
]

_READY: Final = common_pb2.TrackedState.READY
_HEALTH_OK: Final = frozenset(
    {appcommon_pb2.HealthCheck.HEALTH_CHECK_OK, appcommon_pb2.HealthCheck.HEALTH_CHECK_UNKNOWN}
)
_CLOUDLET_READY: Final = appcommon_pb2.CloudletState.CLOUDLET_STATE_READY
_NOT_PRESENT: Final = appcommon_pb2.CloudletState.CLOUDLET_STATE_NOT_PRESENT
_UNDER_MAINTENANCE: Final = appcommon_pb2.MaintenanceState.UNDER_MAINTENANCE
_NORMAL_OPERATION: Final = appcommon_pb2.MaintenanceState.NORMAL_OPERATION


class AppKey(NamedTuple):
    """`edgeproto.AppKey` as a hashable value."""

    organization: str
    name: str
    version: str

    @classmethod
    def of(cls, key: app_pb2.AppKey) -> AppKey:
        """Convert the message.

        Args:
            key: The edgeproto key.

        Returns:
            The tuple.
        """
        return cls(key.organization, key.name, key.version)


class AppInstKey(NamedTuple):
    """`edgeproto.AppInstKey` as a hashable value."""

    name: str
    organization: str

    @classmethod
    def of(cls, key: appinst_pb2.AppInstKey) -> AppInstKey:
        """Convert the message.

        Args:
            key: The edgeproto key.

        Returns:
            The tuple.
        """
        return cls(key.name, key.organization)


class CloudletKey(NamedTuple):
    """`edgeproto.CloudletKey` as a hashable value."""

    organization: str
    name: str
    federated_organization: str = ""

    @classmethod
    def of(cls, key: cloudletkey_pb2.CloudletKey) -> CloudletKey:
        """Convert the message.

        Args:
            key: The edgeproto key.

        Returns:
            The tuple.
        """
        return cls(key.organization, key.name, key.federated_organization)


class ClusterKey(NamedTuple):
    """`edgeproto.ClusterKey` as a hashable value."""

    name: str
    organization: str


@dataclass(frozen=True, slots=True)
class AppRecord:
    """The fields of an App the DME uses (dme.md §2.12).

    Attributes:
        key: The App key.
        auth_public_key: PEM RSA key that RegisterClient tokens must be signed with.
        android_package_name: Reported by GetFqdnList.
        official_fqdn: Comma-separated FQDNs (GetAppOfficialFqdn, GetFqdnList).
        deployment: Deployment type (auto-provisioning cluster matching).
        access_ports: The App's port spec, e.g. `tcp:80,udp:10002`.
        qos_session_profile: `QosSessionProfile` number for FindCloudlet's QoS step.
        qos_session_duration: Nanoseconds; 0 means 24 h.
        auto_prov_policies: Names of the App's auto-provisioning policies.
    """

    key: AppKey
    auth_public_key: str = ""
    android_package_name: str = ""
    official_fqdn: str = ""
    deployment: str = ""
    access_ports: str = ""
    qos_session_profile: int = 0
    qos_session_duration: int = 0
    auto_prov_policies: frozenset[str] = frozenset()

    @classmethod
    def of(cls, app: app_pb2.App) -> AppRecord:
        """Keep what the DME needs of an App message.

        Args:
            app: The App as notify delivers it.

        Returns:
            The record.
        """
        policies = set(app.auto_prov_policies)
        if app.auto_prov_policy:
            policies.add(app.auto_prov_policy)
        return cls(
            key=AppKey.of(app.key),
            auth_public_key=app.auth_public_key,
            android_package_name=app.android_package_name,
            official_fqdn=app.official_fqdn,
            deployment=app.deployment,
            access_ports=app.access_ports,
            qos_session_profile=app.qos_session_profile,
            qos_session_duration=app.qos_session_duration,
            auto_prov_policies=frozenset(policies),
        )


@dataclass(slots=True)
class CloudletRecord:
    """A cloudlet as the DME tracks it: the Controller's object plus the CRM's state.

    Attributes:
        key: The cloudlet key.
        location: The Cloudlet object's location (auto-provisioning uses it; instances
            carry their own `cloudlet_loc`, which ranking uses).
        zone: The Cloudlet's zone name.
        alliance_orgs: Other operators whose clients may be sent here, deduplicated.
        maintenance_state: From the Cloudlet object (the Controller's view).
        state: `CloudletState` from CloudletInfo; UNKNOWN until the first one arrives.
        info_maintenance_state: The CRM's maintenance state from CloudletInfo.
    """

    key: CloudletKey
    location: loc_pb2.Loc
    zone: str = ""
    alliance_orgs: tuple[str, ...] = ()
    maintenance_state: int = _NORMAL_OPERATION
    state: int = appcommon_pb2.CloudletState.CLOUDLET_STATE_UNKNOWN
    info_maintenance_state: int = _NORMAL_OPERATION

    @property
    def usable(self) -> bool:
        """Whether instances on this cloudlet may be returned (given their own state)."""
        return (
            self.state == _CLOUDLET_READY
            and self.maintenance_state != _UNDER_MAINTENANCE
            and self.info_maintenance_state != _UNDER_MAINTENANCE
        )


class Instance:
    """One AppInst as ranking sees it; mutable, owned and updated by `World`.

    Listeners may keep references; the object stays the same while the AppInst exists.

    Attributes:
        key: The AppInst key.
        key_string: Go JSON of the key, the original's tie-break for equal distances.
        app_key: The App it instantiates.
        cloudlet_key: Where it runs; `cloudlet_key.organization` is its operator.
        cluster_key: Its cluster (edge-events cookies name it).
        zone_key: Its zone, as (organization, name, federated organization).
        uri: The FQDN clients connect to.
        location: `AppInst.cloudlet_loc`, returned as the reply's cloudlet location.
        lat: Latitude in degrees (distance is computed to this, as in the original).
        lon: Longitude in degrees.
        cos_lat: cos of the latitude in radians, computed once for the haversine formula.
        ports: Mapped ports as `AppPort`s, internal-only ones dropped.
        tracked_state: `TrackedState` number.
        health: `HealthCheck` number.
        usable: Kept current by `World`: may a search return it?
        operator: The cloudlet organisation (placement).
        alliances: The cloudlet's alliance organisations when last placed (placement).
        reply_template: A serialized FIND_FOUND reply for it without the cookie, built by
            ranking on first use and dropped by `World` on every update.
    """

    __slots__ = (
        "alliances",
        "app_key",
        "cloudlet_key",
        "cluster_key",
        "cos_lat",
        "health",
        "key",
        "key_string",
        "lat",
        "location",
        "lon",
        "operator",
        "ports",
        "reply_template",
        "tracked_state",
        "uri",
        "usable",
        "zone_key",
    )

    def __init__(self, key: AppInstKey) -> None:
        self.key = key
        self.key_string = key_string(
            appinst_pb2.AppInstKey(name=key.name, organization=key.organization)
        )
        self.app_key = AppKey("", "", "")
        self.cloudlet_key = CloudletKey("", "")
        self.cluster_key = ClusterKey("", "")
        self.zone_key: tuple[str, str, str] = ("", "", "")
        self.uri = ""
        self.location = loc_pb2.Loc()
        self.lat = 0.0
        self.lon = 0.0
        self.cos_lat = 1.0
        self.ports: tuple[appcommon_pb2.AppPort, ...] = ()
        self.tracked_state = 0
        self.health = 0
        self.usable = False
        self.operator = ""
        self.alliances: tuple[str, ...] = ()
        self.reply_template: bytes | None = None

    def __repr__(self) -> str:
        return f"Instance({self.key.organization}/{self.key.name} @ {self.lat},{self.lon})"


def _cos_lat(lat: float) -> float:
    """cos(lat) exactly as the haversine formula computes it (NaN where Go gives NaN)."""
    try:
        return math.cos(lat * math.pi / 180)
    except ValueError:  # infinite latitude: Go's math.Cos returns NaN
        return math.nan


def app_ports(ports: Iterable[appinst_pb2.InstPort]) -> tuple[appcommon_pb2.AppPort, ...]:
    """The original's `copyPorts`: mapped ports as the reply shows them.

    Args:
        ports: `AppInst.mapped_ports`.

    Returns:
        One `AppPort` per port that is not internal-visibility-only, fields copied (proto,
        internal and public port, FQDN prefix, end port, TLS, nginx, max packet size).
    """
    return tuple(
        appcommon_pb2.AppPort(
            proto=p.proto,
            internal_port=p.internal_port,
            public_port=p.public_port,
            fqdn_prefix=p.fqdn_prefix,
            end_port=p.end_port,
            tls=p.tls,
            nginx=p.nginx,
            max_pkt_size=p.max_pkt_size,
        )
        for p in ports
        if not p.internal_vis_only
    )


class PlacementListener(Protocol):
    """Told when an instance enters or leaves its places in the search space.

    `unplaced` is called with the instance's *old* placement fields still set, before they
    change or the instance goes; `placed` after. Usability changes are not reported.
    """

    def placed(self, inst: Instance) -> None:
        """The instance now sits at its location under its operator and alliances."""

    def unplaced(self, inst: Instance) -> None:
        """The instance is leaving the placement its fields still describe."""


class World:
    """The DME's in-memory model of the region, fed by notify.

    Not thread-safe; the daemon applies notify updates and serves searches on one event
    loop, so a search never sees a half-applied update.
    """

    def __init__(self) -> None:
        self._apps: dict[AppKey, AppRecord] = {}
        self._insts: dict[AppInstKey, Instance] = {}
        self._insts_by_app: dict[AppKey, dict[AppInstKey, Instance]] = {}
        self._insts_by_cloudlet: dict[CloudletKey, dict[AppInstKey, Instance]] = {}
        self._cloudlets: dict[CloudletKey, CloudletRecord] = {}
        self._operator_codes: dict[str, str] = {}
        self._listeners: list[PlacementListener] = []
        self.settings = settings_pb2.Settings()
        """The last Settings received (defaults are the Controller's business)."""

    # -- listeners --

    def add_listener(self, listener: PlacementListener) -> None:
        """Register a listener and place every current instance with it.

        Args:
            listener: E.g. a spatial index built after the world was filled.
        """
        self._listeners.append(listener)
        for inst in self._insts.values():
            listener.placed(inst)

    def _placed(self, inst: Instance) -> None:
        for listener in self._listeners:
            listener.placed(inst)

    def _unplaced(self, inst: Instance) -> None:
        for listener in self._listeners:
            listener.unplaced(inst)

    # -- reads --

    def app(self, key: AppKey) -> AppRecord | None:
        """The App with this key, if known.

        Args:
            key: The App key.

        Returns:
            Its record or None.
        """
        return self._apps.get(key)

    def app_exists(self, organization: str, name: str, version: str) -> bool:
        """Whether an App is known (cookie checks and PlatformFindCloudlet use it).

        Args:
            organization: App organisation.
            name: App name.
            version: App version.

        Returns:
            True when the App has been received and not deleted.
        """
        return AppKey(organization, name, version) in self._apps

    def apps(self) -> Collection[AppRecord]:
        """All known Apps, in no particular order."""
        return self._apps.values()

    def instances_of(self, app: AppKey) -> Collection[Instance]:
        """All known instances of an App, usable or not.

        Args:
            app: The App key.

        Returns:
            A live view; do not hold it across updates.
        """
        return self._insts_by_app.get(app, {}).values()

    def instance(self, key: AppInstKey) -> Instance | None:
        """The instance with this key, if known.

        Args:
            key: The AppInst key.

        Returns:
            It or None.
        """
        return self._insts.get(key)

    def cloudlet(self, key: CloudletKey) -> CloudletRecord | None:
        """The cloudlet with this key, if its Cloudlet object is known.

        Args:
            key: The cloudlet key.

        Returns:
            Its record or None.
        """
        return self._cloudlets.get(key)

    def translate_carrier(self, carrier_name: str) -> str:
        """Replace an operator code (MCC-MNC, "wifi") by its operator organisation.

        Args:
            carrier_name: What the device sent.

        Returns:
            The organisation the code maps to, or the name unchanged.
        """
        return self._operator_codes.get(carrier_name, carrier_name)

    def fqdn_list(self) -> list[AppRecord]:
        """The Apps GetFqdnList reports: not platform apps, official FQDN set.

        Returns:
            Sorted by (organisation, name, version); the original's order was Go map order.
        """
        return sorted(
            (
                a
                for a in self._apps.values()
                if a.official_fqdn and not is_platform_app(a.key.organization, a.key.name)
            ),
            key=lambda a: a.key,
        )

    # -- Apps --

    def update_app(self, app: app_pb2.App) -> None:
        """Add or replace an App.

        Args:
            app: The App message.
        """
        record = AppRecord.of(app)
        self._apps[record.key] = record

    def delete_app(self, key: app_pb2.AppKey) -> None:
        """Forget an App (its instances stay; the Controller deletes those first).

        Args:
            key: The App key.
        """
        self._apps.pop(AppKey.of(key), None)

    def prune_apps(self, keep: Iterable[app_pb2.AppKey]) -> None:
        """Forget Apps the Controller did not send in its last full sync.

        Args:
            keep: The keys it sent.
        """
        wanted = {AppKey.of(k) for k in keep}
        for key in [k for k in self._apps if k not in wanted]:
            del self._apps[key]

    # -- AppInsts --

    def update_app_inst(self, app_inst: appinst_pb2.AppInst) -> Instance:
        """Add or replace an AppInst.

        Args:
            app_inst: The AppInst message (full object, as notify sends updates).

        Returns:
            The instance as the world now holds it.
        """
        key = AppInstKey.of(app_inst.key)
        inst = self._insts.get(key)
        app_key = AppKey.of(app_inst.app_key)
        cloudlet_key = CloudletKey.of(app_inst.cloudlet_key)
        lat, lon = app_inst.cloudlet_loc.latitude, app_inst.cloudlet_loc.longitude
        cloudlet = self._cloudlets.get(cloudlet_key)
        alliances = cloudlet.alliance_orgs if cloudlet is not None else ()
        if inst is None:
            inst = Instance(key)
            moved = True
        else:
            moved = (inst.app_key, inst.cloudlet_key, inst.lat, inst.lon, inst.alliances) != (
                app_key,
                cloudlet_key,
                lat,
                lon,
                alliances,
            )
            if moved:
                self._unplaced(inst)
                self._unlink(inst)
        inst.reply_template = None
        inst.cluster_key = ClusterKey(app_inst.cluster_key.name, app_inst.cluster_key.organization)
        zone = app_inst.zone_key
        inst.zone_key = (zone.organization, zone.name, zone.federated_organization)
        inst.uri = app_inst.uri
        inst.location = loc_pb2.Loc()
        inst.location.CopyFrom(app_inst.cloudlet_loc)
        inst.ports = app_ports(app_inst.mapped_ports)
        inst.tracked_state = app_inst.state
        inst.health = app_inst.health_check
        if moved:
            inst.app_key = app_key
            inst.cloudlet_key = cloudlet_key
            inst.operator = cloudlet_key.organization
            inst.alliances = alliances
            inst.lat, inst.lon = lat, lon
            inst.cos_lat = _cos_lat(lat)
            self._insts[key] = inst
            self._insts_by_app.setdefault(app_key, {})[key] = inst
            self._insts_by_cloudlet.setdefault(cloudlet_key, {})[key] = inst
        inst.usable = self._usable(inst, cloudlet)
        if moved:
            self._placed(inst)
        return inst

    def delete_app_inst(self, key: appinst_pb2.AppInstKey) -> Instance | None:
        """Forget an AppInst.

        Args:
            key: The AppInst key (notify deletes may carry nothing else).

        Returns:
            The instance that was removed (edge events tell its clients), or None.
        """
        inst = self._insts.pop(AppInstKey.of(key), None)
        if inst is not None:
            self._unplaced(inst)
            self._unlink(inst)
            inst.usable = False
        return inst

    def prune_app_insts(self, keep: Iterable[appinst_pb2.AppInstKey]) -> list[Instance]:
        """Forget AppInsts the Controller did not send in its last full sync.

        Args:
            keep: The keys it sent.

        Returns:
            The instances removed.
        """
        wanted = {AppInstKey.of(k) for k in keep}
        gone = [inst for k, inst in self._insts.items() if k not in wanted]
        for inst in gone:
            del self._insts[inst.key]
            self._unplaced(inst)
            self._unlink(inst)
            inst.usable = False
        return gone

    def _unlink(self, inst: Instance) -> None:
        by_app = self._insts_by_app.get(inst.app_key)
        if by_app is not None:
            by_app.pop(inst.key, None)
            if not by_app:
                del self._insts_by_app[inst.app_key]
        by_cloudlet = self._insts_by_cloudlet.get(inst.cloudlet_key)
        if by_cloudlet is not None:
            by_cloudlet.pop(inst.key, None)
            if not by_cloudlet:
                del self._insts_by_cloudlet[inst.cloudlet_key]

    @staticmethod
    def _usable(inst: Instance, cloudlet: CloudletRecord | None) -> bool:
        return (
            inst.tracked_state == _READY
            and inst.health in _HEALTH_OK
            and cloudlet is not None
            and cloudlet.usable
        )

    # -- Cloudlets and CloudletInfo --

    def update_cloudlet(self, cloudlet: cloudlet_pb2.Cloudlet) -> None:
        """Add or update a cloudlet from the Controller's Cloudlet object.

        Args:
            cloudlet: The Cloudlet message.
        """
        key = CloudletKey.of(cloudlet.key)
        record = self._cloudlets.get(key)
        location = loc_pb2.Loc()
        location.CopyFrom(cloudlet.location)
        alliances = tuple(dict.fromkeys(cloudlet.alliance_orgs))
        if record is None:
            record = CloudletRecord(key=key, location=location)
            self._cloudlets[key] = record
        record.location = location
        record.zone = cloudlet.zone
        record.maintenance_state = cloudlet.maintenance_state
        if record.alliance_orgs != alliances or any(
            inst.alliances != alliances for inst in self._on(key)
        ):
            record.alliance_orgs = alliances
            for inst in self._on(key):
                self._unplaced(inst)
                inst.alliances = alliances
                self._placed(inst)
        self._refresh(key)

    def delete_cloudlet(self, key: cloudletkey_pb2.CloudletKey) -> None:
        """Forget a cloudlet; its instances become unusable (NOT_PRESENT).

        Args:
            key: The cloudlet key.
        """
        ckey = CloudletKey.of(key)
        if self._cloudlets.pop(ckey, None) is not None:
            self._refresh(ckey)

    def prune_cloudlets(self, keep: Iterable[cloudletkey_pb2.CloudletKey]) -> None:
        """Forget cloudlets the Controller did not send in its last full sync.

        Args:
            keep: The keys it sent.
        """
        wanted = {CloudletKey.of(k) for k in keep}
        for key in [k for k in self._cloudlets if k not in wanted]:
            del self._cloudlets[key]
            self._refresh(key)

    def update_cloudlet_info(self, info: cloudlet_pb2.CloudletInfo) -> None:
        """Take the CRM's cloudlet state; ignored before the Cloudlet object is known.

        Args:
            info: The CloudletInfo message.
        """
        key = CloudletKey.of(info.key)
        record = self._cloudlets.get(key)
        if record is None:
            return
        record.state = info.state
        record.info_maintenance_state = info.maintenance_state
        self._refresh(key)

    def delete_cloudlet_info(self, key: cloudletkey_pb2.CloudletKey) -> None:
        """The CRM's info is gone: the cloudlet is NOT_PRESENT.

        Args:
            key: The cloudlet key.
        """
        ckey = CloudletKey.of(key)
        record = self._cloudlets.get(ckey)
        if record is not None:
            record.state = _NOT_PRESENT
            record.info_maintenance_state = _NORMAL_OPERATION
            self._refresh(ckey)

    def prune_cloudlet_infos(self, keep: Iterable[cloudletkey_pb2.CloudletKey]) -> None:
        """Mark cloudlets whose info was not sent in the last full sync NOT_PRESENT.

        Args:
            keep: The keys whose CloudletInfo was sent.
        """
        wanted = {CloudletKey.of(k) for k in keep}
        for key, record in self._cloudlets.items():
            if key not in wanted:
                record.state = _NOT_PRESENT
                self._refresh(key)

    def instances_on(self, key: CloudletKey) -> Collection[Instance]:
        """The instances on a cloudlet (read-only).

        Args:
            key: The cloudlet.

        Returns:
            Its instances, usable or not.
        """
        return self._on(key)

    def _on(self, key: CloudletKey) -> Collection[Instance]:
        return self._insts_by_cloudlet.get(key, {}).values()

    def _refresh(self, key: CloudletKey) -> None:
        cloudlet = self._cloudlets.get(key)
        for inst in self._on(key):
            inst.usable = self._usable(inst, cloudlet)

    # -- OperatorCodes --

    def update_operator_code(self, code: operatorcode_pb2.OperatorCode) -> None:
        """Map an operator code (MCC-MNC) to its operator organisation.

        Args:
            code: The OperatorCode message.
        """
        self._operator_codes[code.code] = code.organization

    def delete_operator_code(self, code: str) -> None:
        """Forget an operator code.

        Args:
            code: The code (OperatorCode's key is the bare string).
        """
        self._operator_codes.pop(code, None)

    def prune_operator_codes(self, keep: Iterable[str]) -> None:
        """Forget operator codes not sent in the last full sync.

        Args:
            keep: The codes sent.
        """
        wanted = set(keep)
        for code in [c for c in self._operator_codes if c not in wanted]:
            del self._operator_codes[code]

    @property
    def operator_codes(self) -> Mapping[str, str]:
        """Code -> operator organisation, read-only."""
        return self._operator_codes

    # -- Settings --

    def update_settings(self, settings: settings_pb2.Settings) -> None:
        """Keep the region's Settings (rate limiting reads its own copy).

        Args:
            settings: The Settings message.
        """
        self.settings = settings_pb2.Settings()
        self.settings.CopyFrom(settings)
