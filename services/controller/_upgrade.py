"""Data-model upgrades (controller.md §2.8): the original's list up to id 62 and its runner.

A database written by an older controller carries an older `1/VersionV2`; with
`--auto-upgrade` the Controller runs, in ascending id order, every entry whose id is above
the stored one and records each id as it completes, so a failure leaves the version at the
last finished step and a later start resumes there. Entries without a function only move
the version (the original changed the data model without needing to touch stored data).

Each function walks the keys of the types it concerns (listed with `edge_cloud.listing`,
paged when the database is large) and rewrites every object in its own etcd transaction
guarded by the object's mod revision, so a concurrent writer is never overwritten and a
crash mid-way loses nothing. Stored objects are handled as JSON dicts, not decoded into our
messages: the old formats carry fields our protos no longer have, and a decode-encode round
trip would drop them. Every function skips objects it already upgraded (an `obj_id`, a
`db_model_id` at least the upgrade's id, the new field present), so running one again
changes nothing; that is what makes a resumed or duplicated upgrade safe.

Several controllers may start on the same old database: only one upgrades at a time (an
etcd lock key held under a lease), and each version write compares the version it read, so
two controllers both started with `--auto-upgrade` cannot interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from edgeproto import (
    app_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    decimal_pb2,
    flavor_pb2,
    resources_pb2,
    trustpolicyexception_pb2,
    zonepool_pb2,
)

from edge_cloud.errors import (
    Aborted,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from edge_cloud.listing import list_prefix
from edge_cloud.objects import codec, keys
from edge_cloud.store import (
    Delete,
    Get,
    KeyValue,
    ModRevisionIs,
    Op,
    Put,
    Snapshot,
    Store,
)
from services.controller._clusterinst import resolve_node_resources
from services.controller._ids import ulid

__all__ = [
    "LOCK_KEY",
    "UPGRADES",
    "Tally",
    "Upgrade",
    "UpgradeFn",
    "Version",
    "run_upgrades",
    "upgrade_lock",
]

log = logging.getLogger(__name__)

LOCK_KEY: Final = "1/VersionUpgradeLock"
"""Held (under a lease) by the controller that runs the upgrades; no cache type matches it."""
LOCK_TTL: Final = 10
LOCK_POLL: Final = 0.5
_KUBERNETES: Final = frozenset({"kubernetes", "helm"})
DEFAULT_NODE_POOL: Final = "defaultpool"
"""The pool the original's 57 makes of a Kubernetes cluster's flavor (`DefaultNodePoolName`)."""


@dataclass(frozen=True, slots=True)
class Version:
    """A data-model version as `1/VersionV2` stores it (`{"Hash":…,"ID":…}`)."""

    hash: str
    id: int

    def encode(self) -> bytes:
        """The Go JSON of the original's struct (no JSON tags: Go field names)."""
        return json.dumps({"Hash": self.hash, "ID": self.id}, separators=(",", ":")).encode()


@dataclass(slots=True)
class Tally:
    """What one upgrade function did, for its start-up log line."""

    read: int = 0
    rewritten: int = 0
    created: int = 0
    deleted: int = 0
    types: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        walked = ", ".join(self.types) or "nothing"
        return (
            f"{self.read} objects read ({walked}), {self.rewritten} rewritten, "
            f"{self.created} created, {self.deleted} deleted"
        )


UpgradeFn = Callable[[Store, int], Awaitable[Tally]]
"""An upgrade function: the store and the upgrade's id (the `db_model_id` it stamps)."""


@dataclass(frozen=True, slots=True)
class Upgrade:
    """One entry of the upgrade list: id, the data-model hash it leads to, its function."""

    id: int
    hash: str
    name: str = ""
    fn: UpgradeFn | None = None


# --- the runner ------------------------------------------------------------------------------


async def run_upgrades(
    store: Store,
    stored: Version,
    version_rev: int,
    upgrades: Sequence[Upgrade],
    *,
    version_key: str,
) -> Version:
    """Run every upgrade above `stored.id` in ascending order, recording each one.

    Args:
        store: The store.
        stored: The version the database holds.
        version_rev: Mod revision of `version_key` as read (0: absent, a legacy database);
            every version write compares it, so a concurrent upgrader makes this one stop.
        upgrades: The list, ascending by id.
        version_key: Where the version lives (`1/VersionV2`).

    Returns:
        The version written last (the target when all ran).

    Raises:
        FailedPrecondition: An upgrade failed; the message names it and the version the
            database stays at.
        Aborted: Another controller changed the version meanwhile.
    """
    current = stored
    for upgrade in sorted(upgrades, key=lambda u: u.id):
        if upgrade.id <= current.id:
            continue
        if upgrade.fn is not None:
            started = time.monotonic()
            try:
                tally = await upgrade.fn(store, upgrade.id)
            except UpgradeNotSupported:
                raise
            except EdgeError as err:
                raise FailedPrecondition(
                    f"upgrade {upgrade.id} {upgrade.name} failed: {err.message}; the database "
                    f"stays at data model version {current.id}, fix the data and start again "
                    "with --auto-upgrade"
                ) from err
            log.info(
                "upgrade %d %s: %s in %.2f s",
                upgrade.id,
                upgrade.name,
                tally,
                time.monotonic() - started,
            )
        nxt = Version(upgrade.hash, upgrade.id)
        result = await store.txn(
            [ModRevisionIs(version_key, version_rev)],
            [Put(version_key, nxt.encode())],
            [Get(version_key)],
        )
        if not result.succeeded:
            raise Aborted(
                f"the data model version changed while upgrading it (another controller?); "
                f"stopped after version {current.id}, start again"
            )
        version_rev = result.revision
        current = nxt
        if upgrade.fn is None:
            log.debug("data model version %d (no upgrade function)", upgrade.id)
    return current


@contextlib.asynccontextmanager
async def upgrade_lock(store: Store, holder: str) -> AsyncIterator[None]:
    """Hold `LOCK_KEY` while upgrading; wait for another holder to finish first.

    The key lives under a lease kept alive while held, so a controller that dies mid-way
    releases it within `LOCK_TTL` seconds and the next one resumes from the version the
    dead one recorded last.

    Args:
        store: The store.
        holder: Who holds it (written as the value, for whoever waits).
    """
    lease = await store.grant(LOCK_TTL)
    # kept alive from the start: waiting for another holder may outlast the TTL
    keeper = asyncio.create_task(store.keepalive(lease, LOCK_TTL))
    try:
        waited = False
        while True:
            result = await store.txn(
                [ModRevisionIs(LOCK_KEY, 0)],
                [Put(LOCK_KEY, holder.encode(), lease=lease)],
                [Get(LOCK_KEY)],
            )
            if result.succeeded:
                break
            if not waited:
                other = result.values.get(LOCK_KEY)
                log.info(
                    "waiting for %s to finish upgrading the data model",
                    other.value.decode(errors="replace") if other else "another controller",
                )
                waited = True
            await asyncio.sleep(LOCK_POLL)
        yield
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError, EdgeError):
            await keeper
        with contextlib.suppress(EdgeError):
            await store.revoke(lease)  # releases the lock at once, or the lease never used


class UpgradeNotSupported(FailedPrecondition):
    """The database holds data an upgrade this build does not implement would have to move."""


# --- walking objects ---------------------------------------------------------------------------

Step = Callable[[str, dict[str, Any], Mapping[str, KeyValue | None]], list[Op]]
"""Rewrite one object: its etcd key, its JSON as a dict, the other keys read → ops."""
ExtraKeys = Callable[[str, dict[str, Any]], list[str]]
"""Other keys a step reads (and so guards), from the object as listed."""


def _load(key: str, value: bytes) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except ValueError as err:
        raise InvalidArgument(f"{key} does not hold JSON: {err}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{key} does not hold a JSON object")
    return data


def _dump(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


async def _walk(
    store: Store,
    type_name: str,
    tally: Tally,
    step: Step,
    extra_keys: ExtraKeys | None = None,
) -> None:
    """Apply `step` to every object of a type, each in its own guarded transaction.

    An object deleted since the listing is skipped; one changed since is rewritten from
    its new value (the transaction re-reads and runs `step` again).
    """
    tally.types.append(type_name)
    items, revision = await list_prefix(store, keys.store_prefix(type_name))
    for listed in items:
        tally.read += 1
        extra = extra_keys(listed.key, _load(listed.key, listed.value)) if extra_keys else []
        done: list[Op] = []

        def fn(
            values: Mapping[str, KeyValue | None],
            listed: KeyValue = listed,
            done: list[Op] = done,
        ) -> list[Op]:
            done.clear()
            current = values.get(listed.key)
            if current is None:
                return []  # deleted meanwhile
            ops = step(listed.key, _load(listed.key, current.value), values)
            done.extend(ops)
            return ops

        initial = None if extra else Snapshot({listed.key: listed}, revision=revision)
        await store.update([listed.key, *extra], fn, initial=initial)
        for op in done:
            if isinstance(op, Put):
                if op.key == listed.key:
                    tally.rewritten += 1
                else:
                    tally.created += 1
            elif isinstance(op, Delete):
                tally.deleted += 1


def _has(data: Mapping[str, Any], name: str) -> bool:
    """Whether a field is set the way Go's `encoding/json` tells (absent and null are not)."""
    return data.get(name) is not None


def _key_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}


# --- 53 UpgradeCrmOnEdge -------------------------------------------------------------------


async def upgrade_crm_on_edge(store: Store, upgrade_id: int) -> Tally:
    """Every existing cloudlet ran its CRM on the edge site; cloudlets and instances get ids.

    Cloudlets without an `obj_id` get `crm_on_edge=true` and a new ULID; AppInsts and
    ClusterInsts without one get a ULID.
    """
    tally = Tally()

    def cloudlet(key: str, data: dict[str, Any], _: Mapping[str, KeyValue | None]) -> list[Op]:
        if data.get("obj_id"):
            return []
        data["crm_on_edge"] = True
        data["obj_id"] = ulid()
        return [Put(key, _dump(data))]

    def instance(key: str, data: dict[str, Any], _: Mapping[str, KeyValue | None]) -> list[Op]:
        if "obj_id" in data:
            return []
        data["obj_id"] = ulid()
        return [Put(key, _dump(data))]

    await _walk(store, "Cloudlet", tally, cloudlet)
    await _walk(store, "AppInst", tally, instance)
    await _walk(store, "ClusterInst", tally, instance)
    return tally


# --- 54 AddStaticFqdn ------------------------------------------------------------------------


def _copy_field(source: str, target: str) -> Step:
    """A step that fills `target` from `source` unless already set (or nothing to copy)."""

    def step(key: str, data: dict[str, Any], _: Mapping[str, KeyValue | None]) -> list[Op]:
        if data.get(target) or not data.get(source):
            return []
        data[target] = data[source]
        return [Put(key, _dump(data))]

    return step


async def add_static_fqdn(store: Store, upgrade_id: int) -> Tally:
    """Freeze the FQDNs in use: `static_root_lb_fqdn`, `static_fqdn`, `static_uri`.

    Later FQDN formats changed; the static copies keep running instances reachable under
    the names they were given.
    """
    tally = Tally()
    await _walk(store, "Cloudlet", tally, _copy_field("root_lb_fqdn", "static_root_lb_fqdn"))
    await _walk(store, "ClusterInst", tally, _copy_field("fqdn", "static_fqdn"))
    await _walk(store, "AppInst", tally, _copy_field("uri", "static_uri"))
    return tally


# --- 55 InstanceKeysRegionScopedName ------------------------------------------------------

_OLD_INSTANCE_KEY: Final = '"cloudlet_key":'


async def instance_keys_region_scoped_name(store: Store, upgrade_id: int) -> Tally:
    """Upgrade 55, in the part this build supports.

    The original moves the cloudlet key out of AppInst, ClusterInst and ClusterRefs keys,
    renames instances whose names now clash region-wide, and rewrites every reference. This
    build re-runs 53 (the original does too, to assign ids 53 missed) and accepts databases
    with no instance in the old key format, where the rest has nothing to do; any old-format
    key stops the upgrade rather than leaving instances the Controller cannot address.

    Raises:
        UpgradeNotSupported: Old-format instance keys exist.
    """
    tally = await upgrade_crm_on_edge(store, upgrade_id)
    old = 0
    for type_name in ("ClusterInst", "AppInst", "ClusterRefs"):
        names, _ = await store.range(keys.store_prefix(type_name), keys_only=True)
        tally.read += len(names)
        tally.types.append(f"{type_name} keys")
        old += sum(1 for kv in names if _OLD_INSTANCE_KEY in keys.strip_store_prefix(kv.key))
    if old:
        # TODO(#4, upgrade 55): rename and re-key old-format instances and their references.
        raise UpgradeNotSupported(
            "upgrade 55 InstanceKeysRegionScopedName is not supported by this build "
            f"({old} AppInst/ClusterInst/ClusterRefs keys still hold a cloudlet key); "
            "migrate with the original's controller first"
        )
    return tally


# --- 56 ZoneFeature ------------------------------------------------------------------------


def _zone_key(cloudlet_key: Any) -> dict[str, Any]:
    """The Zone key of a pre-zone cloudlet: same organization, name and federation."""
    source = _key_dict(cloudlet_key)
    return {
        name: source[name]
        for name in ("organization", "name", "federated_organization")
        if source.get(name)
    }


def _zone_store_key(zone_key: Mapping[str, Any]) -> str:
    message = cloudletkey_pb2.ZoneKey(
        organization=str(zone_key.get("organization", "")),
        name=str(zone_key.get("name", "")),
        federated_organization=str(zone_key.get("federated_organization", "")),
    )
    return keys.store_key("Zone", keys.key_string(message))


def _stamp_zone_key(upgrade_id: int) -> Step:
    """ClusterInst/AppInst: `zone_key` from `cloudlet_key`, `db_model_id` stamped."""

    def step(key: str, data: dict[str, Any], _: Mapping[str, KeyValue | None]) -> list[Op]:
        if int(data.get("db_model_id") or 0) >= upgrade_id:
            return []
        data["db_model_id"] = upgrade_id
        data["zone_key"] = _zone_key(data.get("cloudlet_key"))
        return [Put(key, _dump(data))]

    return step


def _tpe_new_key(etcd_key: str, data: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The ZonePool-based key of an old CloudletPool-based TrustPolicyException."""
    try:
        old = json.loads(keys.strip_store_prefix(etcd_key))
    except ValueError as err:
        raise InvalidArgument(f"cannot read trust policy exception key {etcd_key}: {err}") from None
    pool = _key_dict(old.get("cloudlet_pool_key") if isinstance(old, dict) else None)
    if not pool.get("name") or not pool.get("organization"):
        raise InvalidArgument(
            f"old trust policy exception key {etcd_key} lacks the cloudlet pool organization "
            "or name"
        )
    new_key: dict[str, Any] = {
        "app_key": old.get("app_key", {}),
        "zone_pool_key": {"organization": pool["organization"], "name": pool["name"]},
    }
    if old.get("name"):
        new_key["name"] = old["name"]
    message = codec.from_dict(
        trustpolicyexception_pb2.TrustPolicyExceptionKey, new_key, ignore_unknown_fields=True
    )
    return keys.store_key("TrustPolicyException", keys.key_string(message)), new_key


def _pool_store_key(pool_key: Mapping[str, Any]) -> str:
    message = zonepool_pb2.ZonePoolKey(
        organization=str(pool_key.get("organization", "")), name=str(pool_key.get("name", ""))
    )
    return keys.store_key("ZonePool", keys.key_string(message))


async def zone_feature(store: Store, upgrade_id: int) -> Tally:
    """Zones replace cloudlets as the unit of placement, ZonePools replace CloudletPools.

    One Zone per cloudlet (same organization and name, the cloudlet's location and creation
    time); cloudlets, ClusterInsts and AppInsts point at their zone; each CloudletPool
    becomes a ZonePool with the same members; AutoProvPolicy cloudlet lists become zone
    lists; TrustPolicyExceptions are re-keyed by ZonePool.
    """
    tally = Tally()

    def cloudlet(key: str, data: dict[str, Any], values: Mapping[str, KeyValue | None]) -> list[Op]:
        if int(data.get("db_model_id") or 0) >= upgrade_id:
            return []
        zone_key = _zone_key(data.get("key"))
        zone_store_key = _zone_store_key(zone_key)
        ops: list[Op] = []
        if values.get(zone_store_key) is None:
            zone: dict[str, Any] = {"key": zone_key}
            for name in ("location",):
                if _has(data, name):
                    zone[name] = data[name]
            zone["obj_id"] = ulid().lower()
            if _has(data, "created_at"):
                zone["created_at"] = data["created_at"]
            ops.append(Put(zone_store_key, _dump(zone)))
        data["db_model_id"] = upgrade_id
        data["zone"] = zone_key.get("name", "")
        ops.append(Put(key, _dump(data)))
        return ops

    def zone_of(_: str, data: dict[str, Any]) -> list[str]:
        return [_zone_store_key(_zone_key(data.get("key")))]

    def pool(key: str, data: dict[str, Any], values: Mapping[str, KeyValue | None]) -> list[Op]:
        pool_key = _key_dict(data.get("key"))
        target = _pool_store_key(pool_key)
        if values.get(target) is not None:
            return []  # already converted (the original leaves the old record then)
        zone_pool: dict[str, Any] = {
            "key": {n: pool_key[n] for n in ("organization", "name") if pool_key.get(n)}
        }
        members = [_zone_key(c) for c in data.get("cloudlets") or []]
        if members:
            zone_pool["zones"] = members
        for name in ("created_at", "updated_at", "delete_prepare"):
            if _has(data, name):
                zone_pool[name] = data[name]
        return [Delete(key), Put(target, _dump(zone_pool))]

    def pool_target(_: str, data: dict[str, Any]) -> list[str]:
        return [_pool_store_key(_key_dict(data.get("key")))]

    def auto_prov(key: str, data: dict[str, Any], _: Mapping[str, KeyValue | None]) -> list[Op]:
        if "cloudlets" not in data:
            return []
        cloudlets = data.pop("cloudlets") or []
        zones = list(data.get("zones") or [])
        zones.extend(_zone_key(_key_dict(c).get("key")) for c in cloudlets)
        if zones:
            data["zones"] = zones
        return [Put(key, _dump(data))]

    def tpe(key: str, data: dict[str, Any], values: Mapping[str, KeyValue | None]) -> list[Op]:
        if '"cloudlet_pool_key":{' not in key:
            return []
        target, new_key = _tpe_new_key(key, data)
        if values.get(target) is not None:
            return []
        data["key"] = new_key
        return [Put(target, _dump(data)), Delete(key)]

    def tpe_target(key: str, data: dict[str, Any]) -> list[str]:
        if '"cloudlet_pool_key":{' not in key:
            return []
        return [_tpe_new_key(key, data)[0]]

    await _walk(store, "Cloudlet", tally, cloudlet, zone_of)
    await _walk(store, "ClusterInst", tally, _stamp_zone_key(upgrade_id))
    await _walk(store, "AppInst", tally, _stamp_zone_key(upgrade_id))
    await _walk(store, "CloudletPool", tally, pool, pool_target)
    await _walk(store, "AutoProvPolicy", tally, auto_prov)
    await _walk(store, "TrustPolicyException", tally, tpe, tpe_target)
    return tally


# --- 57 NodePoolsFeature -------------------------------------------------------------------


def _flavor_store_key(name: str) -> str:
    return keys.store_key("Flavor", keys.key_string(flavor_pb2.FlavorKey(name=name)))


def _flavor_name(data: Mapping[str, Any], field_name: str) -> str:
    return str(_key_dict(data.get(field_name)).get("name", ""))


def _flavor(name: str, values: Mapping[str, KeyValue | None]) -> flavor_pb2.Flavor:
    kv = values.get(_flavor_store_key(name))
    if kv is None:
        raise NotFound(f'Flavor key {{"name":"{name}"}} not found')
    return codec.decode(flavor_pb2.Flavor, kv.value)


def _encoded(message: Any) -> Any:
    """A message as our codec stores it, as a JSON value to put into an old object's dict."""
    return json.loads(codec.encode(message))


def _node_resources(flavor: flavor_pb2.Flavor) -> resources_pb2.NodeResources:
    nodes = resources_pb2.NodeResources(vcpus=flavor.vcpus, ram=flavor.ram, disk=flavor.disk)
    nodes.gpus.extend(flavor.gpus)
    nodes.opt_res_map.update(flavor.opt_res_map)
    return nodes


def _kubernetes_resources(flavor: flavor_pb2.Flavor) -> resources_pb2.KubernetesResources:
    """The original's `KubernetesResources.SetFromFlavor`, plus validation's one-node default."""
    kr = resources_pb2.KubernetesResources()
    pool = kr.gpu_pool if flavor.gpus else kr.cpu_pool
    pool.total_vcpus.CopyFrom(decimal_pb2.Udec64(whole=flavor.vcpus))
    pool.total_memory, pool.total_disk = flavor.ram, flavor.disk
    pool.total_gpus.extend(flavor.gpus)
    pool.total_opt_res.update(flavor.opt_res_map)
    topology = pool.topology
    topology.min_node_vcpus, topology.min_node_memory = flavor.vcpus, flavor.ram
    topology.min_node_disk = flavor.disk
    topology.min_node_gpus.extend(flavor.gpus)
    topology.min_node_opt_res.update(flavor.opt_res_map)
    topology.min_number_of_nodes = 1
    return kr


def _app_resources(
    deployment: str, flavor_name: str, values: Mapping[str, KeyValue | None], what: str
) -> tuple[str, Any]:
    """(field, encoded value) of an App's or AppInst's resources from its flavor."""
    if not flavor_name:
        kind = "Kubernetes" if deployment in _KUBERNETES else "node"
        raise InvalidArgument(f"{what}: missing flavor or {kind} resources")
    flavor = _flavor(flavor_name, values)
    if deployment in _KUBERNETES:
        return "kubernetes_resources", _encoded(_kubernetes_resources(flavor))
    return "node_resources", _encoded(_node_resources(flavor))


def _app_store_key(app_key: Any) -> str:
    message = codec.from_dict(app_pb2.AppKey, _key_dict(app_key), ignore_unknown_fields=True)
    return keys.store_key("App", keys.key_string(message))


async def node_pools_feature(store: Store, upgrade_id: int) -> Tally:
    """Flavors become resource specs (the flavor alone no longer sizes anything).

    Apps and AppInsts get Kubernetes or node resources from their flavor, Kubernetes
    ClusterInsts a default node pool, other ClusterInsts node resources.
    """
    tally = Tally()

    def app(key: str, data: dict[str, Any], values: Mapping[str, KeyValue | None]) -> list[Op]:
        if _has(data, "kubernetes_resources") or _has(data, "node_resources"):
            return []
        name, value = _app_resources(
            str(data.get("deployment", "")), _flavor_name(data, "default_flavor"), values, key
        )
        data[name] = value
        data["default_flavor"] = {}  # the resources are the truth from now on
        return [Put(key, _dump(data))]

    def app_flavor(_: str, data: dict[str, Any]) -> list[str]:
        name = _flavor_name(data, "default_flavor")
        return [_flavor_store_key(name)] if name else []

    def cluster(key: str, data: dict[str, Any], values: Mapping[str, KeyValue | None]) -> list[Op]:
        if data.get("node_pools") or _has(data, "node_resources"):
            return []
        name = _flavor_name(data, "flavor")
        ci = clusterinst_pb2.ClusterInst(
            deployment=str(data.get("deployment", "")), num_nodes=int(data.get("num_nodes") or 0)
        )
        try:
            resolve_node_resources(ci, _flavor(name, values) if name else None)
        except InvalidArgument as err:
            raise InvalidArgument(f"{key}: {err.message}") from None
        if ci.deployment == "kubernetes":
            for pool in ci.node_pools:
                pool.Name = DEFAULT_NODE_POOL  # the original's name for a flavor's pool
            data["node_pools"] = [_encoded(pool) for pool in ci.node_pools]
            data["num_nodes"] = ci.num_nodes
        else:
            data["node_resources"] = _encoded(ci.node_resources)
        return [Put(key, _dump(data))]

    def cluster_flavor(_: str, data: dict[str, Any]) -> list[str]:
        name = _flavor_name(data, "flavor")
        return [_flavor_store_key(name)] if name else []

    def inst(key: str, data: dict[str, Any], values: Mapping[str, KeyValue | None]) -> list[Op]:
        if _has(data, "kubernetes_resources") or _has(data, "node_resources"):
            return []
        app_kv = values.get(_app_store_key(data.get("app_key")))
        if app_kv is None:
            raise NotFound(f"{key}: App key {_app_store_key(data.get('app_key'))} not found")
        deployment = str(_load(app_kv.key, app_kv.value).get("deployment", ""))
        name, value = _app_resources(deployment, _flavor_name(data, "flavor"), values, key)
        if name == "node_resources":
            if data.get("vm_flavor"):
                value["infra_node_flavor"] = data["vm_flavor"]
            if data.get("external_volume_size"):
                value["external_volume_size"] = data["external_volume_size"]
        data[name] = value
        return [Put(key, _dump(data))]

    def inst_refs(_: str, data: dict[str, Any]) -> list[str]:
        name = _flavor_name(data, "flavor")
        return [_app_store_key(data.get("app_key"))] + ([_flavor_store_key(name)] if name else [])

    await _walk(store, "App", tally, app, app_flavor)
    await _walk(store, "ClusterInst", tally, cluster, cluster_flavor)
    await _walk(store, "AppInst", tally, inst, inst_refs)
    return tally


# --- 58 AppObjID ---------------------------------------------------------------------------


async def app_obj_id(store: Store, upgrade_id: int) -> Tally:
    """Apps get an `obj_id` (ULID) like every other top-level object."""
    tally = Tally()

    def app(key: str, data: dict[str, Any], _: Mapping[str, KeyValue | None]) -> list[Op]:
        if data.get("obj_id"):
            return []
        data["obj_id"] = ulid()
        return [Put(key, _dump(data))]

    await _walk(store, "App", tally, app)
    return tally


# --- the list --------------------------------------------------------------------------------

UPGRADES: Final[tuple[Upgrade, ...]] = (
    Upgrade(0, "d41d8cd98f00b204e9800998ecf8427e"),
    Upgrade(52, "c2d882033b0c14f28cece41cf4010060"),
    Upgrade(53, "14ae4c721c1bace6e8379d0061a72a77", "UpgradeCrmOnEdge", upgrade_crm_on_edge),
    Upgrade(54, "eff9d3a6c74fd02840efce05d1984e8d", "AddStaticFqdn", add_static_fqdn),
    Upgrade(
        55,
        "eac56710c013d954db31eeb306b514a4",
        "InstanceKeysRegionScopedName",
        instance_keys_region_scoped_name,
    ),
    Upgrade(56, "75883d14000640b2ecf694fe8ef9192b", "ZoneFeature", zone_feature),
    Upgrade(57, "e65c39ec2a489834dd06e87f7239f9a8", "NodePoolsFeature", node_pools_feature),
    Upgrade(58, "b25b4e18e9a1dadfd3006e23fabfbf95", "AppObjID", app_obj_id),
    Upgrade(59, "abec45b13db5cd29e3bcf63d3b80be29"),
    Upgrade(60, "2d0b51b0cb6eaff42225cd1795e168e7"),
    Upgrade(61, "a757190c1d56f9c8cd3ad43f02d6aa56"),
    Upgrade(62, "6851436bc9cb6e0e5180d600dd9a0187"),
)
"""The original's `VersionHash_UpgradeFuncs`: ids, hashes and names as it has them."""
