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
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudletkey_pb2,
    cluster_pb2,
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
WALK_PARALLEL: Final = 8
"""Object transactions in flight while walking a type: etcd's commit latency, not CPU, is
what an upgrade waits on."""


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
    *,
    parallel: int = WALK_PARALLEL,
) -> None:
    """Apply `step` to every object of a type, each in its own guarded transaction.

    An object deleted since the listing is skipped; one changed since is rewritten from
    its new value (the transaction re-reads and runs `step` again). Objects are taken in
    key order by `parallel` workers; steps whose outcome depends on the order (55's
    renames) walk with one.
    """
    tally.types.append(type_name)
    items, revision = await list_prefix(store, keys.store_prefix(type_name))
    tally.read += len(items)
    queue = iter(items)

    async def one(listed: KeyValue) -> None:
        extra = extra_keys(listed.key, _load(listed.key, listed.value)) if extra_keys else []
        done: list[Op] = []

        def fn(values: Mapping[str, KeyValue | None]) -> list[Op]:
            done.clear()
            current = values.get(listed.key)
            if current is None:
                return []  # deleted meanwhile
            done.extend(step(listed.key, _load(listed.key, current.value), values))
            return list(done)

        initial = None if extra else Snapshot({listed.key: listed}, revision=revision)
        await store.update(list(dict.fromkeys([listed.key, *extra])), fn, initial=initial)
        _count(tally, done, listed.key)

    async def worker() -> None:
        for listed in queue:  # one iterator shared by the workers: each object once
            await one(listed)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, parallel))]
    try:
        await asyncio.gather(*workers)
    finally:  # a failure stops the other workers before it propagates
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def _committed(
    store: Store, reads: Sequence[str], fn: Callable[[Mapping[str, KeyValue | None]], list[Op]]
) -> list[Op]:
    """Run one guarded read-modify-write; returns the ops of the run that committed."""
    done: list[Op] = []

    def run(values: Mapping[str, KeyValue | None]) -> list[Op]:
        done.clear()
        done.extend(fn(values))
        return list(done)

    await store.update(list(dict.fromkeys(reads)), run)
    return done


def _count(tally: Tally, ops: Sequence[Op], own_key: str) -> None:
    for op in ops:
        if isinstance(op, Put):
            if op.key == own_key:
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

SCOPED_NAME_ANNOTATION: Final = "cloudlet-scoped-name"
"""Where a renamed instance keeps the name it had within its cloudlet."""
BAD_NAME_ANNOTATION: Final = "bad-upgrade55-name"
"""The invalid reservable-cluster name an earlier build of 55 gave a cluster."""
_RESERVABLE: Final = "reservable"
_RENAME_TRIES: Final = 7
_OLD_KEY: Final = '"cloudlet_key":{'

CloudletId = tuple[str, str, str]
ScopedName = tuple[CloudletId, str, str]
"""(cloudlet, organization, name within the cloudlet): an instance's identity before 55."""


def _cloudlet_id(value: Any) -> CloudletId:
    key = _key_dict(value)
    return (
        str(key.get("organization", "")),
        str(key.get("name", "")),
        str(key.get("federated_organization", "")),
    )


def cloudlet_key_hash(value: Any) -> str:
    """The original's `GetCloudletKeyHash`: 8 hex digits of sha256("name::organization")."""
    organization, name, _ = _cloudlet_id(value)
    return hashlib.sha256(f"{name}::{organization}".encode()).hexdigest()[:8]


def _name_key(value: Any) -> dict[str, Any]:
    """A ClusterKey or AppInstKey dict as Go writes it: name, organization, empty omitted."""
    key = _key_dict(value)
    return {n: key[n] for n in ("name", "organization") if key.get(n)}


def _cluster_store_key(key: Mapping[str, Any], type_name: str = "ClusterInst") -> str:
    message = cluster_pb2.ClusterKey(
        name=str(key.get("name", "")), organization=str(key.get("organization", ""))
    )
    return keys.store_key(type_name, keys.key_string(message))


def _app_inst_key_string(key: Mapping[str, Any]) -> str:
    return keys.key_string(
        appinst_pb2.AppInstKey(
            name=str(key.get("name", "")), organization=str(key.get("organization", ""))
        )
    )


def _scoped_name(data: Mapping[str, Any]) -> str:
    annotations = _key_dict(data.get("annotations"))
    return str(
        annotations.get(SCOPED_NAME_ANNOTATION) or _key_dict(data.get("key")).get("name", "")
    )


def _annotate(data: dict[str, Any], name: str, value: str) -> None:
    """The original's `AddAnnotationNoClobber`: set unless already there."""
    annotations = _key_dict(data.get("annotations"))
    if name not in annotations:
        annotations[name] = value
        data["annotations"] = annotations


def _parse_reservable(name: str, etcd_key: str) -> tuple[int, str]:
    """`reservable<id>[-<cloudlet hash>]` → (id, hash); the original's parser."""
    parts = name.removeprefix(_RESERVABLE).split("-")
    try:
        number = int(parts[0])
    except ValueError:
        raise InvalidArgument(
            f"upgrade clusterInst {etcd_key} failed, parse reservable cluster name failed to "
            f"extract numeric id {parts[0]} from {name}"
        ) from None
    return number, parts[1] if len(parts) > 1 else ""


def _candidates(name: str, cloudlet_key: Any) -> list[str]:
    """The names tried in turn when a cloudlet-scoped name clashes region-wide."""
    return [
        name,
        *(f"{name}{i}" for i in range(1, _RENAME_TRIES - 1)),
        f"{name}-{cloudlet_key_hash(cloudlet_key)}",
    ]


def _bind_instance(data: dict[str, Any], *, cluster: bool) -> None:
    """Move an old key's cloudlet key into the body (the original's `BindJSON*V2`)."""
    key = _key_dict(data.get("key"))
    if _cloudlet_id(data.get("cloudlet_key"))[:2] == ("", "") and isinstance(
        key.get("cloudlet_key"), dict
    ):
        data["cloudlet_key"] = key["cloudlet_key"]
    if cluster and isinstance(key.get("cluster_key"), dict) and not key.get("name"):
        data["key"] = _name_key(key["cluster_key"])
    else:
        data["key"] = _name_key(key)


@dataclass(slots=True)
class _Renames:
    """What 55 renamed, so references to the old names can follow.

    Indexed by the identity an instance had before 55 (cloudlet, organization, name within
    the cloudlet), as the references being rewritten still name it.
    """

    clusters: dict[ScopedName, dict[str, Any]] = field(default_factory=dict)
    bad_clusters: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    app_insts: dict[ScopedName, dict[str, Any]] = field(default_factory=dict)

    def cluster(self, cloudlet: CloudletId, key: Any) -> dict[str, Any] | None:
        k = _name_key(key)
        return self.clusters.get((cloudlet, str(k.get("organization", "")), str(k.get("name", ""))))

    def bad_cluster(self, key: Any) -> dict[str, Any] | None:
        k = _name_key(key)
        return self.bad_clusters.get((str(k.get("organization", "")), str(k.get("name", ""))))

    def app_inst(self, cloudlet: CloudletId, key: Any) -> dict[str, Any] | None:
        k = _name_key(key)
        return self.app_insts.get(
            (cloudlet, str(k.get("organization", "")), str(k.get("name", "")))
        )


def _track(data: Mapping[str, Any]) -> tuple[ScopedName, dict[str, Any]]:
    key = _name_key(data.get("key"))
    cloudlet = _cloudlet_id(data.get("cloudlet_key"))
    return (cloudlet, str(key.get("organization", "")), _scoped_name(data)), key


def _new_or_same(etcd_key: str, before: Mapping[str, Any], target: str, data: Any) -> list[Op]:
    """Ops writing `data` at `target` (and dropping `etcd_key`), none when nothing changes."""
    if target == etcd_key and data == before:
        return []
    ops: list[Op] = [Put(target, _dump(data))]
    if target != etcd_key:
        ops.append(Delete(etcd_key))
    return ops


async def instance_keys_region_scoped_name(store: Store, upgrade_id: int) -> Tally:
    """Instance names become region-scoped; the cloudlet key leaves the instance keys.

    AppInst, ClusterInst and ClusterRefs keys lose their cloudlet key (it moves into the
    body). A name now taken by an instance on another cloudlet gets a digit 1-5 or, failing
    that, the cloudlet key hash appended, and the old name goes into the
    `cloudlet-scoped-name` annotation; reservable clusters get `reservable<id>-<hash>`.
    CloudletRefs, ClusterRefs and AppInstRefs follow the renames. Like the original it first
    re-runs 53 (which once missed instance ids) and ends with its ClusterRefs repair.
    """
    tally = await upgrade_crm_on_edge(store, upgrade_id)
    renames = _Renames()

    def cluster_names(etcd_key: str, data: dict[str, Any]) -> list[str]:
        _bind_instance(data, cluster=True)
        name = str(data["key"].get("name", ""))
        org = {"organization": data["key"].get("organization", "")}
        return [
            _cluster_store_key({"name": n, **org})
            for n in _candidates(name, data.get("cloudlet_key"))
        ]

    def cluster(
        etcd_key: str, data: dict[str, Any], values: Mapping[str, KeyValue | None]
    ) -> list[Op]:
        before = json.loads(_dump(data))
        _bind_instance(data, cluster=True)
        key = data["key"]
        bad_name = ""
        reservable = bool(data.get("reservable"))
        if reservable:
            _, hash_ = _parse_reservable(str(key.get("name", "")), etcd_key)
            if not hash_:
                scoped = _scoped_name(data)
                if key["name"] != scoped:  # renamed by an earlier, broken build of 55
                    bad_name, key["name"] = str(key["name"]), scoped
        for candidate in _candidates(str(key.get("name", "")), data.get("cloudlet_key")):
            if reservable:
                number, hash_ = _parse_reservable(str(key["name"]), etcd_key)
                target_name = (
                    f"{_RESERVABLE}{number}-{cloudlet_key_hash(data.get('cloudlet_key'))}"
                    if not hash_
                    else str(key["name"])
                )
            else:
                target_name = candidate
                existing = values.get(_cluster_store_key({**key, "name": target_name}))
                if existing is not None:
                    if _load(existing.key, existing.value).get("obj_id") != data.get("obj_id"):
                        continue  # another cluster has that name
                    renames.clusters.update([_track(data)])
                    return []
            if key["name"] != target_name:
                _annotate(data, SCOPED_NAME_ANNOTATION, str(key["name"]))
            key["name"] = target_name
            if bad_name:
                _annotate(data, BAD_NAME_ANNOTATION, bad_name)
            renames.clusters.update([_track(data)])
            annotated_bad = _key_dict(data.get("annotations")).get(BAD_NAME_ANNOTATION)
            if annotated_bad:
                bad_key = (str(key.get("organization", "")), str(annotated_bad))
                renames.bad_clusters[bad_key] = _name_key(key)
            return _new_or_same(etcd_key, before, _cluster_store_key(key), data)
        raise InvalidArgument(
            f"failed to upgrade AppInst {json.dumps(key)} on Cloudlet "
            f"{json.dumps(data.get('cloudlet_key'))}, unable to assign new non-conflicting name"
        )

    def app_inst_names(etcd_key: str, data: dict[str, Any]) -> list[str]:
        _bind_instance(data, cluster=False)
        org = {"organization": data["key"].get("organization", "")}
        return [
            keys.store_key("AppInst", _app_inst_key_string({"name": n, **org}))
            for n in _candidates(str(data["key"].get("name", "")), data.get("cloudlet_key"))
        ]

    def app_inst(
        etcd_key: str, data: dict[str, Any], values: Mapping[str, KeyValue | None]
    ) -> list[Op]:
        before = json.loads(_dump(data))
        _bind_instance(data, cluster=False)
        key = data["key"]
        new_cluster = renames.cluster(
            _cloudlet_id(data.get("cloudlet_key")), data.get("cluster_key")
        )
        if new_cluster is not None and new_cluster == _name_key(data.get("cluster_key")):
            new_cluster = None
        for candidate in _candidates(str(key.get("name", "")), data.get("cloudlet_key")):
            target = keys.store_key("AppInst", _app_inst_key_string({**key, "name": candidate}))
            existing = values.get(target)
            if existing is not None:
                found = _load(existing.key, existing.value)
                if found.get("obj_id") != data.get("obj_id"):
                    continue  # another instance has that name
                if new_cluster is None:
                    renames.app_insts.update([_track(found)])
                    return []
            if key["name"] != candidate:
                _annotate(data, SCOPED_NAME_ANNOTATION, str(key["name"]))
            if new_cluster is not None:
                data["cluster_key"] = new_cluster
            key["name"] = candidate
            renames.app_insts.update([_track(data)])
            return _new_or_same(etcd_key, before, target, data)
        raise InvalidArgument(
            f"failed to upgrade AppInst {json.dumps(key)} on Cloudlet "
            f"{json.dumps(data.get('cloudlet_key'))}, unable to assign new non-conflicting name"
        )

    def cloudlet_refs(
        etcd_key: str, data: dict[str, Any], _: Mapping[str, KeyValue | None]
    ) -> list[Op]:
        cloudlet = _cloudlet_id(data.get("key"))
        changed = False

        def follow(entry: Any, new: dict[str, Any] | None) -> Any:
            nonlocal changed
            if new is not None and new != entry:
                changed = True
                return new
            return entry

        if isinstance(data.get("cluster_insts"), list):
            data["cluster_insts"] = [
                follow(follow(e, renames.cluster(cloudlet, e)), renames.bad_cluster(e))
                for e in data["cluster_insts"]
            ]
        for name in ("vm_app_insts", "k8s_app_insts"):
            if isinstance(data.get(name), list):
                data[name] = [follow(e, renames.app_inst(cloudlet, e)) for e in data[name]]
        return [Put(etcd_key, _dump(data))] if changed else []

    def cluster_refs(
        etcd_key: str, data: dict[str, Any], _: Mapping[str, KeyValue | None]
    ) -> list[Op]:
        before = json.loads(_dump(data))
        key = _key_dict(data.get("key"))
        in_name = str(key.get("name", ""))
        cloudlet = _cloudlet_id(key.get("cloudlet_key"))
        new_key = _name_key(
            key.get("cluster_key") if isinstance(key.get("cluster_key"), dict) else key
        )
        new_key = renames.cluster(cloudlet, new_key) or new_key
        new_key = renames.bad_cluster(new_key) or new_key
        data["key"] = new_key
        apps = data.get("apps")
        if isinstance(apps, list):
            data["apps"] = [renames.app_inst(cloudlet, a) or _name_key(a) for a in apps]
        target = _cluster_store_key(new_key, "ClusterRefs")
        ops: list[Op] = [] if data == before and target == etcd_key else [Put(target, _dump(data))]
        if in_name != new_key.get("name", "") and target != etcd_key:
            ops.append(Delete(etcd_key))
        return ops

    def app_inst_refs(
        etcd_key: str, data: dict[str, Any], _: Mapping[str, KeyValue | None]
    ) -> list[Op]:
        insts = data.get("insts")
        if not isinstance(insts, dict):
            return []
        changed = False
        for text in list(insts):
            if _OLD_KEY not in text:
                continue
            try:
                old = json.loads(text)
            except ValueError as err:
                raise InvalidArgument(
                    f"{etcd_key}: cannot read AppInst key {text}: {err}"
                ) from None
            new = renames.app_inst(_cloudlet_id(_key_dict(old).get("cloudlet_key")), old)
            if new is not None:
                insts[_app_inst_key_string(new)] = insts.pop(text)
                changed = True
        return [Put(etcd_key, _dump(data))] if changed else []

    # in key order, one at a time: who keeps a clashing name must not depend on timing
    await _walk(store, "ClusterInst", tally, cluster, cluster_names, parallel=1)
    await _walk(store, "AppInst", tally, app_inst, app_inst_names, parallel=1)
    await _walk(store, "CloudletRefs", tally, cloudlet_refs)
    await _walk(store, "ClusterRefs", tally, cluster_refs, parallel=1)
    await _walk(store, "AppInstRefs", tally, app_inst_refs)
    await _repair_cluster_refs(store, tally)
    return tally


async def _repair_cluster_refs(store: Store, tally: Tally) -> None:
    """The original's fixed `AppInstKeyName`: ClusterRefs list exactly the existing AppInsts.

    Every cluster's refs gain the AppInsts on it they miss and lose the ones that are gone;
    refs of clusters that do not exist (left by bad earlier upgrades) are deleted.
    """
    tally.types.append("ClusterRefs repair")
    items, _ = await list_prefix(store, keys.store_prefix("AppInst"))
    by_cluster: dict[str, list[dict[str, Any]]] = {}
    for kv in items:
        data = _load(kv.key, kv.value)
        cluster_key = _name_key(data.get("cluster_key"))
        if not cluster_key.get("name") or not cluster_key.get("organization"):
            continue  # a VM AppInst
        by_cluster.setdefault(_cluster_store_key(cluster_key, "ClusterRefs"), []).append(
            {"key": _name_key(data.get("key")), "cluster": cluster_key}
        )

    def app_key(entry: Any) -> str:
        return keys.store_key("AppInst", _app_inst_key_string(_name_key(entry)))

    tally.read += len(items)
    for refs_key, insts in sorted(by_cluster.items()):
        current = await store.get(refs_key)
        listed = _load(refs_key, current.value).get("apps") or [] if current else []
        cluster_key = insts[0]["cluster"]
        reads = [
            refs_key,
            _cluster_store_key(cluster_key),
            *sorted({app_key(e) for e in [*listed, *(i["key"] for i in insts)]}),
        ]

        def fix(
            values: Mapping[str, KeyValue | None],
            refs_key: str = refs_key,
            insts: list[dict[str, Any]] = insts,
            cluster_key: dict[str, Any] = cluster_key,
        ) -> list[Op]:
            if values.get(_cluster_store_key(cluster_key)) is None:
                return []  # no such cluster: the pass below removes its refs anyway
            kv = values.get(refs_key)
            refs: dict[str, Any] = _load(refs_key, kv.value) if kv else {"key": cluster_key}
            apps: list[Any] = [
                a for a in refs.get("apps") or [] if values.get(app_key(a)) is not None
            ]
            updated = len(apps) != len(refs.get("apps") or [])
            present = {app_key(a) for a in apps}
            for inst in insts:
                ai = values.get(app_key(inst["key"]))
                if app_key(inst["key"]) in present or ai is None:
                    continue
                if _name_key(_load(ai.key, ai.value).get("cluster_key")) != cluster_key:
                    continue
                apps.append(inst["key"])
                updated = True
            if not updated:
                return []
            refs["apps"] = sorted(apps, key=_app_inst_key_string)
            return [Put(refs_key, _dump(refs))]

        _count(tally, await _committed(store, reads, fix), refs_key)
    refs_items, _ = await list_prefix(store, keys.store_prefix("ClusterRefs"))
    tally.read += len(refs_items)
    for kv in refs_items:
        refs = _load(kv.key, kv.value)
        apps = refs.get("apps") or []
        reads = [kv.key, _cluster_store_key(_name_key(refs.get("key"))), *map(app_key, apps)]

        def prune(values: Mapping[str, KeyValue | None], refs_key: str = kv.key) -> list[Op]:
            current = values.get(refs_key)
            if current is None:
                return []
            refs = _load(refs_key, current.value)
            if values.get(_cluster_store_key(_name_key(refs.get("key")))) is None:
                return [Delete(refs_key)]  # no such cluster
            apps = refs.get("apps") or []
            kept = [a for a in apps if values.get(app_key(a)) is not None]
            if len(kept) == len(apps):
                return []
            if not kept:
                return [Delete(refs_key)]
            refs["apps"] = kept
            return [Put(refs_key, _dump(refs))]

        _count(tally, await _committed(store, reads, prune), kv.key)


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
