"""The simulated infrastructure behind the fake platforms: sites, VMs, clusters, instances.

This is the "cloud" the fake platform objects talk to, kept apart from them so that, like
a real cloud, it outlives any one platform object (the CCRM builds and drops those freely).
One `FakeInfra` holds one `Site` per cloudlet; a process shares `FakeInfra.shared()`, tests
build their own.

Resources are never counted separately: usage is the sum over the VMs that exist, so
create, delete, cleanup and restarts cannot make the numbers drift. A VM that would exceed
the site's RAM, vCPU, disk, external IP or GPU capacity is refused with
`PlatformResourceExhausted`.

Failure injection and pauses are *controls* per cloudlet, from two sources merged: the
cloudlet's env vars (`FAKE_FAIL_AT`, `FAKE_PAUSE_AT`, replaced at every platform init) and
the admin methods here (`fail_at`, `pause_at`, `resume`), for in-process tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Final, Literal

from edgeproto import cloudlet_pb2, infraresources_pb2

from edge_cloud.errors import InvalidArgument
from edge_cloud.platform import (
    RESOURCE_DISK,
    RESOURCE_DISK_UNITS,
    RESOURCE_EXTERNAL_IPS,
    RESOURCE_INSTANCES,
    RESOURCE_RAM,
    RESOURCE_RAM_UNITS,
    RESOURCE_TYPE_GPU,
    RESOURCE_VCPUS,
    NodeType,
    PlatformPermanentError,
    PlatformResourceExhausted,
    PlatformTransientError,
)

__all__ = [
    "OPERATIONS",
    "Controls",
    "FakeInfra",
    "Fault",
    "Limits",
    "Record",
    "Site",
    "VmRecord",
    "parse_points",
]

OPERATIONS: Final[Mapping[str, int]] = {
    "init": 1,
    "create_cloudlet": 2,
    "update_cloudlet": 1,
    "delete_cloudlet": 2,
    "create_cluster": 3,
    "update_cluster": 2,
    "delete_cluster": 2,
    "create_appinst": 2,
    "update_appinst": 1,
    "delete_appinst": 2,
}
"""Operations with failure/pause points, and how many steps each has (README lists them)."""

PAUSE_POLL: Final = 0.01
_POINT_RE: Final = re.compile(r"^(?P<op>[a-z_]+):step(?P<step>[1-9][0-9]*)(?::(?P<kind>\w+))?$")


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected failure at one point.

    Attributes:
        point: `operation:stepN`.
        transient: Raise `PlatformTransientError` instead of `PlatformPermanentError`.
    """

    point: str
    transient: bool = False


def parse_points(text: str, *, source: str) -> dict[str, Fault]:
    """Parse `op:stepN[:transient]` entries, comma separated.

    Args:
        text: The property value; empty means none.
        source: Where it came from, for the error message (`FAKE_FAIL_AT`).

    Returns:
        Fault by point.

    Raises:
        InvalidArgument: An entry names an unknown operation or step.
    """
    out: dict[str, Fault] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        m = _POINT_RE.match(item)
        if m is None or m["kind"] not in (None, "transient", "permanent"):
            raise InvalidArgument(
                f"{source}: {item!r} is not operation:stepN[:transient], e.g. create_cluster:step2"
            )
        op, step = m["op"], int(m["step"])
        if op not in OPERATIONS:
            raise InvalidArgument(
                f"{source}: unknown operation {op!r}; known: {', '.join(OPERATIONS)}"
            )
        if step > OPERATIONS[op]:
            raise InvalidArgument(f"{source}: {op} has steps 1 to {OPERATIONS[op]}, not {step}")
        point = f"{op}:step{step}"
        out[point] = Fault(point, transient=m["kind"] == "transient")
    return out


@dataclass(slots=True)
class Controls:
    """Failure and pause points of one cloudlet (env-var ones and admin ones)."""

    env_faults: dict[str, Fault] = field(default_factory=dict)
    env_pauses: set[str] = field(default_factory=set)
    admin_faults: dict[str, Fault] = field(default_factory=dict)
    admin_pauses: set[str] = field(default_factory=set)
    snapshot_override: infraresources_pb2.InfraResourcesSnapshot | None = None

    def fault(self, point: str) -> Fault | None:
        """The fault set at a point, if any (admin first)."""
        return self.admin_faults.get(point) or self.env_faults.get(point)

    def paused(self, point: str) -> bool:
        """Whether a pause is set at a point."""
        return point in self.admin_pauses or point in self.env_pauses


@dataclass(frozen=True, slots=True)
class Limits:
    """A site's capacity.

    Attributes:
        ram: MB.
        vcpus: vCPUs.
        disk: GB.
        external_ips: Public addresses.
        gpus: Count by GPU model.
    """

    ram: int
    vcpus: int
    disk: int
    external_ips: int
    gpus: Mapping[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class VmRecord:
    """One simulated VM.

    Attributes:
        name: Unique within the site.
        type: Node type.
        flavor: The flavor it was built with (its resources are what it uses).
        owner: `platform`, `cluster:<key>` or `appinst:<key>`.
        internal_ip: Its internal address.
        external_ip: Its public address, empty if none (each one counts).
    """

    name: str
    type: NodeType
    flavor: cloudlet_pb2.FlavorInfo
    owner: str
    internal_ip: str
    external_ip: str = ""

    def to_proto(self) -> infraresources_pb2.VmInfo:
        """As reported in snapshots and cluster resources."""
        vm = infraresources_pb2.VmInfo(
            name=self.name, type=str(self.type), status="ACTIVE", infraFlavor=self.flavor.name
        )
        vm.ipaddresses.add(externalIp=self.external_ip, internalIp=self.internal_ip)
        return vm


@dataclass(slots=True)
class Record:
    """A cluster or app instance the site knows about.

    Attributes:
        key: Its key string.
        state: `creating`, `ready`, `updating` or `deleting`.
        vm_names: The VMs it owns.
        detail: What it was built from (deployment, node pools), to tell a repeat
            create from a conflicting one, and to answer runtime questions.
        annotations: Infrastructure annotations handed back on create.
    """

    key: str
    state: Literal["creating", "ready", "updating", "deleting"]
    vm_names: list[str] = field(default_factory=list)
    detail: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Usage:
    """What the site's VMs use."""

    ram: int = 0
    vcpus: int = 0
    disk: int = 0
    external_ips: int = 0
    instances: int = 0
    gpus: dict[str, int] = field(default_factory=dict)


class Site:
    """One cloudlet's simulated infrastructure.

    Args:
        key: The cloudlet key string.
        limits: Capacity.
        flavors: The flavors it offers, in order (the second is the root LB's).
    """

    def __init__(
        self, key: str, limits: Limits, flavors: Iterable[cloudlet_pb2.FlavorInfo]
    ) -> None:
        self.key = key
        self.limits = limits
        self.flavors: dict[str, cloudlet_pb2.FlavorInfo] = {f.name: f for f in flavors}
        self.vms: dict[str, VmRecord] = {}
        self.clusters: dict[str, Record] = {}
        self.app_insts: dict[str, Record] = {}
        self.trust_policy = ""
        self.trust_policy_exceptions: set[tuple[str, str]] = set()
        self._next_ip = 10

    # -- accounting --------------------------------------------------------------------------

    def usage(self) -> Usage:
        """Sum of every VM's flavor, and their external IPs."""
        used = Usage()
        for vm in self.vms.values():
            used.ram += vm.flavor.ram
            used.vcpus += vm.flavor.vcpus
            used.disk += vm.flavor.disk
            used.instances += 1
            used.external_ips += 1 if vm.external_ip else 0
            for gpu in vm.flavor.gpus:
                used.gpus[gpu.model_id] = used.gpus.get(gpu.model_id, 0) + gpu.count
        return used

    def flavor(self, name: str) -> cloudlet_pb2.FlavorInfo:
        """A flavor by name.

        Raises:
            PlatformPermanentError: The site has no such flavor (names the ones it has).
        """
        found = self.flavors.get(name)
        if found is None:
            offered = ", ".join(self.flavors) or "none"
            shown = repr(name) if name else "(empty)"
            raise PlatformPermanentError(
                f"flavor {shown} not found on fake cloudlet {self.key} (flavors: {offered})"
            )
        return found

    def _check_room(self, flavor: cloudlet_pb2.FlavorInfo, external: bool) -> None:
        used, lim = self.usage(), self.limits
        short: list[str] = []
        if used.ram + flavor.ram > lim.ram:
            short.append(f"RAM: needs {flavor.ram} MB, {max(lim.ram - used.ram, 0)} MB free")
        if used.vcpus + flavor.vcpus > lim.vcpus:
            short.append(f"vCPUs: needs {flavor.vcpus}, {max(lim.vcpus - used.vcpus, 0)} free")
        if used.disk + flavor.disk > lim.disk:
            short.append(f"Disk: needs {flavor.disk} GB, {max(lim.disk - used.disk, 0)} GB free")
        if external and used.external_ips + 1 > lim.external_ips:
            short.append(f"External IPs: all {lim.external_ips} in use")
        for gpu in flavor.gpus:
            have = lim.gpus.get(gpu.model_id, 0) - used.gpus.get(gpu.model_id, 0)
            if gpu.count > have:
                short.append(f"GPU {gpu.model_id}: needs {gpu.count}, {max(have, 0)} free")
        if short:
            raise PlatformResourceExhausted(
                f"not enough resources on fake cloudlet {self.key} for a {flavor.name} VM: "
                + "; ".join(short)
            )

    def add_vm(
        self,
        name: str,
        node_type: NodeType,
        flavor_name: str,
        owner: str,
        *,
        external: bool = False,
        force: bool = False,
    ) -> VmRecord:
        """Create a VM, if the site has room.

        Args:
            name: VM name; must be new.
            node_type: Its role.
            flavor_name: One of the site's flavors.
            owner: Who it belongs to (removed together).
            external: Give it a public address.
            force: Skip the capacity check (adopting VMs that already exist).

        Returns:
            The VM.

        Raises:
            PlatformPermanentError: Unknown flavor, or the name is taken.
            PlatformResourceExhausted: Not enough capacity.
        """
        flavor = self.flavor(flavor_name)
        if name in self.vms:
            raise PlatformPermanentError(f"VM {name} already exists on fake cloudlet {self.key}")
        if not force:
            self._check_room(flavor, external)
        self._next_ip += 1
        vm = VmRecord(
            name=name,
            type=node_type,
            flavor=flavor,
            owner=owner,
            internal_ip=f"10.0.0.{self._next_ip}",
            external_ip=f"10.101.100.{self._next_ip}" if external else "",
        )
        self.vms[name] = vm
        return vm

    def remove_owner(self, owner: str) -> list[str]:
        """Delete every VM of an owner; the names removed."""
        gone = [name for name, vm in self.vms.items() if vm.owner == owner]
        for name in gone:
            del self.vms[name]
        return gone

    def vms_of(self, owner: str) -> list[VmRecord]:
        """The VMs of an owner, in creation order."""
        return [vm for vm in self.vms.values() if vm.owner == owner]

    # -- reports -------------------------------------------------------------------------------

    def snapshot(self) -> infraresources_pb2.InfraResourcesSnapshot:
        """Used and maximum resources, and the platform VMs (`GetCloudletInfraResources`)."""
        used, lim = self.usage(), self.limits
        snap = infraresources_pb2.InfraResourcesSnapshot()
        snap.platform_vms.extend(vm.to_proto() for vm in self.vms_of("platform"))
        rows = (
            (RESOURCE_RAM, used.ram, lim.ram, RESOURCE_RAM_UNITS),
            (RESOURCE_VCPUS, used.vcpus, lim.vcpus, ""),
            (RESOURCE_DISK, used.disk, lim.disk, RESOURCE_DISK_UNITS),
            (RESOURCE_EXTERNAL_IPS, used.external_ips, lim.external_ips, ""),
            (RESOURCE_INSTANCES, used.instances, 0, ""),
        )
        for name, value, max_value, units in rows:
            snap.info.add(name=name, value=value, infra_max_value=max_value, units=units)
        for model, count in sorted(lim.gpus.items()):
            snap.info.add(
                name=model,
                value=used.gpus.get(model, 0),
                infra_max_value=count,
                type=RESOURCE_TYPE_GPU,
            )
        return snap


class FakeInfra:
    """All simulated sites of a process, plus their failure and pause controls."""

    _shared: ClassVar[FakeInfra | None] = None

    def __init__(self) -> None:
        self.sites: dict[str, Site] = {}
        self._controls: dict[str, Controls] = {}

    @classmethod
    def shared(cls) -> FakeInfra:
        """The process-wide infrastructure that platforms built with no arguments use."""
        if cls._shared is None:
            cls._shared = FakeInfra()
        return cls._shared

    def controls(self, key: str) -> Controls:
        """The controls of a cloudlet, created empty on first use."""
        return self._controls.setdefault(key, Controls())

    # -- admin API (tests, in-process users) ---------------------------------------------------

    def fail_at(self, key: str, point: str, *, transient: bool = False) -> None:
        """Make the cloudlet's operations fail at `operation:stepN` until `clear`ed.

        Raises:
            InvalidArgument: Unknown point.
        """
        (fault,) = parse_points(point, source="fail_at").values()
        self.controls(key).admin_faults[fault.point] = dataclasses.replace(
            fault, transient=transient
        )

    def pause_at(self, key: str, point: str) -> None:
        """Make the cloudlet's operations wait at `operation:stepN` until `resume`d.

        Raises:
            InvalidArgument: Unknown point.
        """
        (fault,) = parse_points(point, source="pause_at").values()
        self.controls(key).admin_pauses.add(fault.point)

    def resume(self, key: str, point: str | None = None) -> None:
        """Release one admin pause point, or all of them."""
        pauses = self.controls(key).admin_pauses
        if point is None:
            pauses.clear()
        else:
            pauses.discard(point)

    def clear(self, key: str) -> None:
        """Drop every admin fault and pause and any snapshot override of a cloudlet."""
        controls = self.controls(key)
        controls.admin_faults.clear()
        controls.admin_pauses.clear()
        controls.snapshot_override = None

    def override_snapshot(
        self, key: str, snapshot: infraresources_pb2.InfraResourcesSnapshot | None
    ) -> None:
        """Report `snapshot` instead of the real one (None: back to the real one)."""
        self.controls(key).snapshot_override = snapshot

    # -- checkpoints ---------------------------------------------------------------------------

    async def checkpoint(self, key: str, op: str, step: int, delay: float) -> None:
        """One step of an operation: its delay, any pause, any injected failure.

        Args:
            key: The cloudlet key string.
            op: The operation (`create_cluster`).
            step: The step number.
            delay: Seconds the step takes.

        Raises:
            PlatformPermanentError: A permanent fault is set at this point.
            PlatformTransientError: A transient fault is set at this point.
        """
        point = f"{op}:step{step}"
        if delay > 0:
            await asyncio.sleep(delay)
        controls = self.controls(key)
        # polled, not an Event: a pause is lifted by a plain assignment (a re-init with new
        # env vars, an admin call), possibly from another event loop in tests
        while controls.paused(point):  # noqa: ASYNC110
            await asyncio.sleep(PAUSE_POLL)
        fault = controls.fault(point)
        if fault is None:
            return
        message = f"fake platform {op.replace('_', ' ')} failed at step {step} (injected)"
        if fault.transient:
            raise PlatformTransientError(message)
        raise PlatformPermanentError(message)
