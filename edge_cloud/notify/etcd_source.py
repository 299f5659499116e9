"""`EtcdNotifySource`: a notify server fed straight from the Controller's etcd keys.

Objects live at `1/<Type>/<key-string>` with the JSON written by `edge_cloud.objects.codec`
(controller.md §2.2). The snapshot is one range over `1/` (one revision for every type, so
the server's state is consistent); changes are one watch on `1/` from the revision after
it, which the store keeps alive across etcd restarts and turns into a fresh listing after a
compaction. Keys of other types (versions, DNS labels, ids) are skipped.

History for delta resync comes from etcd's multi-version store: the keys under `1/` as they
were at the client's revision, compared with the keys now, name every object deleted since;
updates are found by mod revision. If that revision was compacted away there is no delta.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Final

from edge_cloud.notify._wire import Action, Message, type_name
from edge_cloud.notify.source import Change, Snapshot, Stored
from edge_cloud.objects import codec, keys
from edge_cloud.store import EventType, KeyValue, Resync, RevisionCompacted, Store, WatchEvent

__all__ = ["EtcdNotifySource"]

log = logging.getLogger(__name__)

PREFIX: Final = f"{keys.REGION}/"


class EtcdNotifySource:
    """A `NotifySource` reading objects of the given types from etcd.

    Args:
        store: The store (its namespace, if any, applies).
        types: The replicated types to read; other keys are skipped.
        history_timeout: Seconds a history replay may take before delta is given up.
    """

    def __init__(
        self,
        store: Store,
        types: Sequence[type[Message]],
        *,
        history_timeout: float = 10.0,
    ) -> None:
        self._store = store
        # etcd type segment (message name) → class
        self._types = {cls.DESCRIPTOR.name: cls for cls in types}
        self._history_timeout = history_timeout

    async def snapshot(self) -> Snapshot:
        """Every object of the registered types, from one range over `1/`."""
        items, revision = await self._store.range(PREFIX)
        return self._snapshot(items, revision)

    async def changes(self, after: int) -> AsyncIterator[Change | Snapshot]:
        """Watch `1/` from `after` + 1; a compaction turns into a `Snapshot`."""
        async with contextlib.aclosing(self._store.watch(PREFIX, after + 1)) as events:
            async for event in events:
                if isinstance(event, Resync):
                    yield self._snapshot(event.items, event.revision)
                    continue
                change = self._change(event)
                if change is not None:
                    yield change

    async def deleted_since(self, revision: int, until: int) -> Sequence[Change] | None:
        """Objects that existed at `revision` and are gone at `until`; None if compacted.

        Args:
            revision: The client's last fully applied revision.
            until: The server's revision (at most the store's current revision).

        Returns:
            One DELETE change per vanished object (stamped with `until`), or None when etcd
            no longer keeps the older revision.
        """
        try:
            async with asyncio.timeout(self._history_timeout):
                then, _ = await self._store.range(PREFIX, revision=revision, keys_only=True)
                now, _ = await self._store.range(PREFIX, revision=until, keys_only=True)
        except RevisionCompacted:
            log.info("etcd history since revision %d is compacted", revision)
            return None
        remaining = {kv.key for kv in now}
        deletes: list[Change] = []
        for kv in then:
            if kv.key in remaining:
                continue
            change = self._change(WatchEvent(EventType.DELETE, kv.key, b"", until))
            if change is not None:
                deletes.append(change)
        return deletes

    # -- decoding --------------------------------------------------------------------------

    def _class(self, etcd_key: str) -> tuple[type[Message], str] | None:
        try:
            parsed = keys.parse_store_key(etcd_key)
        except ValueError:
            return None
        cls = self._types.get(parsed.type_name)
        if cls is None or not parsed.key:
            return None
        return cls, parsed.key

    def _snapshot(self, items: Sequence[KeyValue], revision: int) -> Snapshot:
        objects: dict[str, list[Stored]] = {}
        for kv in items:
            found = self._class(kv.key)
            if found is None:
                continue
            obj = self._decode(found[0], kv.key, kv.value)
            if obj is not None:
                objects.setdefault(type_name(obj), []).append(Stored(obj, kv.mod_revision))
        return Snapshot(objects, revision)

    def _change(self, event: WatchEvent) -> Change | None:
        found = self._class(event.key)
        if found is None:
            return None
        cls, key = found
        if event.type is EventType.DELETE:
            try:
                obj = keys.object_from_key_string(cls, key)
            except Exception as err:
                log.warning("skipping delete of unparsable etcd key %r: %s", event.key, err)
                return None
            return Change(type_name(cls), Action.DELETE, obj, event.mod_revision)
        decoded = self._decode(cls, event.key, event.value)
        if decoded is None:
            return None
        return Change(type_name(cls), Action.UPDATE, decoded, event.mod_revision)

    def _decode(self, cls: type[Message], etcd_key: str, value: bytes) -> Message | None:
        try:
            return codec.decode(cls, value)
        except Exception as err:
            log.warning("skipping undecodable etcd value at %r: %s", etcd_key, err)
            return None
