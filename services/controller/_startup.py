"""Start-up steps on etcd: the data-model version, Settings defaults, the leased registration.

- Version (controller.md §2.8): `1/VersionV2` holds `{"Hash":"…","ID":62}` (Go field names);
  an empty database gets the compiled version, a matching one is left alone, anything else
  refuses to start (upgrades are a later slice, as is `-autoUpgrade`).
- Settings (§3.3): the whole default object when absent, else zero fields filled.
- Registration (§2.6): `1/Controller/{"addr":…}` under a 5 s lease kept alive; when the lease
  is lost the record is written again under a new one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Mapping
from typing import Final

from edgeproto import controller_pb2, settings_pb2

from edge_cloud.errors import DeadlineExceeded, EdgeError, FailedPrecondition, NotFound, Unavailable
from edge_cloud.objects import codec, keys, registry
from edge_cloud.objects.registry import SETTINGS_KEY
from edge_cloud.store import KeyValue, Op, Put, Store
from services.controller import _settings
from services.controller._engine import Engine, Txn

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
    return json.dumps({"Hash": hash_, "ID": id_}, separators=(",", ":")).encode()


def _stored_version(values: Mapping[str, KeyValue | None]) -> tuple[str, int] | None:
    current = values.get(VERSION_KEY)
    if current is not None:
        data = json.loads(current.value)
        return str(data.get("Hash", "")), int(data.get("ID", 0))
    legacy = values.get(LEGACY_VERSION_KEY)
    if legacy is not None:
        return legacy.value.decode(), 0
    return None


async def check_version(store: Store) -> None:
    """Write the data-model version on an empty database, refuse a different one.

    Raises:
        FailedPrecondition: The database holds another version (upgrades come later).
    """
    found: list[tuple[str, int] | None] = []

    def fn(values: Mapping[str, KeyValue | None]) -> list[Op]:
        found.clear()
        found.append(_stored_version(values))
        if found[0] is None:
            return [Put(VERSION_KEY, version_value())]
        return []

    await store.update([VERSION_KEY, LEGACY_VERSION_KEY], fn)
    stored = found[0]
    if stored is None:
        log.info("empty database: wrote data model version %s (%d)", VERSION_HASH, VERSION_ID)
        return
    if stored[0] != VERSION_HASH:
        raise FailedPrecondition(
            f"Running version {VERSION_HASH} doesn't match the etcd database version "
            f"{stored[0]}, and autoUpgrade is not enabled"
        )


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
