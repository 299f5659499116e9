"""Start-up steps on etcd: the data-model version, Settings defaults, the leased registration.

- Version (controller.md §2.8): `1/VersionV2` holds `{"Hash":"…","ID":62}` (Go field names),
  else the legacy `1/Version` holds a bare hash (id 0); an empty database gets the compiled
  version, a matching one is left alone, an older one is upgraded with `--auto-upgrade`
  (`_upgrade`), and without it the start is refused with the original's message.
- Settings (§3.3): the whole default object when absent, else zero fields filled.
- Registration (§2.6): `1/Controller/{"addr":…}` under a 5 s lease kept alive; when the lease
  is lost the record is written again under a new one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Final

from edgeproto import controller_pb2, settings_pb2

from edge_cloud.errors import DeadlineExceeded, EdgeError, FailedPrecondition, NotFound, Unavailable
from edge_cloud.objects import codec, keys, registry
from edge_cloud.objects.registry import SETTINGS_KEY
from edge_cloud.store import KeyValue, Op, Put, Store
from services.controller import _settings
from services.controller._engine import Engine, Txn
from services.controller._upgrade import UPGRADES, Upgrade, Version, run_upgrades, upgrade_lock

__all__ = [
    "LEASE_TTL",
    "VERSION_HASH",
    "VERSION_ID",
    "VERSION_KEY",
    "ControllerLease",
    "check_version",
    "ensure_settings",
]

log = logging.getLogger(__name__)

VERSION_KEY: Final = "1/VersionV2"
LEGACY_VERSION_KEY: Final = "1/Version"
VERSION_HASH: Final = "6851436bc9cb6e0e5180d600dd9a0187"
VERSION_ID: Final = 62
LEASE_TTL: Final = 5
REGRANT_DELAY: Final = 1.0

SETTINGS: Final = registry.by_class(settings_pb2.Settings)


def version_value(hash_: str = VERSION_HASH, id_: int = VERSION_ID) -> bytes:
    """The Go JSON of the original's version struct (no JSON tags: Go field names)."""
    return Version(hash_, id_).encode()


def _stored_version(values: Mapping[str, KeyValue | None]) -> tuple[Version, int] | None:
    """The stored version and the mod revision of `1/VersionV2` (0: only the legacy key)."""
    current = values.get(VERSION_KEY)
    if current is not None:
        try:
            data = json.loads(current.value)
            return Version(str(data.get("Hash", "")), int(data.get("ID", 0))), current.mod_revision
        except (ValueError, TypeError, AttributeError) as err:
            raise FailedPrecondition(
                f"failed to unmarshal data model version string {current.value!r}, {err}"
            ) from None
    legacy = values.get(LEGACY_VERSION_KEY)
    if legacy is not None:
        return Version(legacy.value.decode(errors="replace"), 0), 0
    return None


async def _read_version(store: Store, target: Version) -> tuple[Version, int] | None:
    """Read the version; on an empty database write `target` and return None."""
    found: list[tuple[Version, int] | None] = []

    def fn(values: Mapping[str, KeyValue | None]) -> list[Op]:
        found.clear()
        found.append(_stored_version(values))
        if found[0] is None:
            return [Put(VERSION_KEY, target.encode())]
        return []

    await store.update([VERSION_KEY, LEGACY_VERSION_KEY], fn)
    return found[0]


async def check_version(
    store: Store,
    *,
    auto_upgrade: bool = False,
    upgrades: Sequence[Upgrade] = UPGRADES,
    holder: str = "",
) -> None:
    """Write the data-model version on an empty database, upgrade or refuse an older one.

    Args:
        store: The store.
        auto_upgrade: Run the upgrades (`-autoUpgrade`) instead of refusing a mismatch.
        upgrades: The upgrade list, ascending by id; its last entry is the target version.
        holder: Who upgrades, shown to controllers waiting for the upgrade lock.

    Raises:
        FailedPrecondition: The database holds another version and auto-upgrade is off, or
            a newer one, or an upgrade failed (the message names it).
        Aborted: Another controller changed the version while this one upgraded.
    """
    target = Version(upgrades[-1].hash, upgrades[-1].id)
    read = await _read_version(store, target)
    if read is None:
        log.info("empty database: wrote data model version %s (%d)", target.hash, target.id)
        return
    stored = read[0]
    if stored.hash == target.hash:
        return
    if not auto_upgrade:
        raise FailedPrecondition(
            f"Running version {target.hash} doesn't match the etcd database version "
            f"{stored.hash}, and autoUpgrade is not enabled"
        )
    if stored.id >= target.id:
        raise FailedPrecondition(
            f"the etcd database holds data model version {stored.hash} ({stored.id}), not "
            f"older than this controller's {target.hash} ({target.id}); run a controller "
            "built for that version"
        )
    async with upgrade_lock(store, holder or socket.gethostname()):
        # whoever held the lock before may have upgraded already
        read = await _read_version(store, target)
        if read is None or read[0].hash == target.hash:
            log.info("data model already upgraded to %d by another controller", target.id)
            return
        stored, revision = read
        log.info("upgrading the data model from version %d to %d", stored.id, target.id)
        done = await run_upgrades(store, stored, revision, upgrades, version_key=VERSION_KEY)
        log.info("data model upgraded to version %s (%d)", done.hash, done.id)


async def ensure_settings(engine: Engine, *, wait: bool = True) -> None:
    """Store the default Settings, or fill the zero fields of the stored ones.

    Args:
        engine: The engine.
        wait: Wait for the caches to show the write (False before the watch runs).
    """

    def fn(txn: Txn) -> None:
        filled = _settings.fill_defaults(txn.get(SETTINGS, SETTINGS_KEY))
        if filled is not None:
            txn.put(filled)

    await engine.apply(fn, wait=wait)


def external_addr(configured: str, api_addr: str, port: int) -> str:
    """The address other controllers reach this one at.

    `--external-api-addr` when given, else the bound API address with a wildcard host
    replaced by the host name.
    """
    if configured:
        return configured
    host = api_addr.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
        host = socket.gethostname()
    return f"{host}:{port}"


class ControllerLease:
    """Keeps `1/Controller/{"addr":…}` in etcd for as long as this process lives.

    Args:
        store: The object store.
        addr: This controller's external API address (the record's key).
    """

    def __init__(self, store: Store, addr: str) -> None:
        self._store = store
        self.record = controller_pb2.Controller(
            key=controller_pb2.ControllerKey(addr=addr), hostname=socket.gethostname()
        )
        self.lease_id: int | None = None

    @property
    def store_key(self) -> str:
        """The etcd key of the record."""
        return keys.object_store_key(self.record)

    async def register(self) -> None:
        """Grant a lease and write the record under it."""
        lease_id = await self._store.grant(LEASE_TTL)
        await self._store.put(self.store_key, codec.encode(self.record), lease=lease_id)
        self.lease_id = lease_id
        log.info("registered as controller %s (lease %x)", self.record.key.addr, lease_id)

    async def keep_alive(self) -> None:
        """Refresh the lease until cancelled; a lost lease is replaced and the record rewritten."""
        while True:
            lease_id = self.lease_id
            if lease_id is None:
                try:
                    await self.register()
                except (Unavailable, DeadlineExceeded) as err:
                    log.warning("cannot register the controller in etcd, retrying: %s", err)
                    await asyncio.sleep(REGRANT_DELAY)
                continue
            try:
                await self._store.keepalive(lease_id, LEASE_TTL)  # returns only by raising
            except NotFound:
                log.warning("controller lease %x expired; registering again", lease_id)
                self.lease_id = None

    async def revoke(self) -> None:
        """End the lease now, so peers see this controller gone at once."""
        if self.lease_id is None:
            return
        try:
            await self._store.revoke(self.lease_id)
        except EdgeError as err:
            log.warning("could not revoke controller lease %x: %s", self.lease_id, err)
        self.lease_id = None
