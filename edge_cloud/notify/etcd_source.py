"""`EtcdNotifySource`: a notify server fed straight from the Controller's etcd keys.

Objects live at `1/<Type>/<key-string>` with the JSON written by `edge_cloud.objects.codec`
(controller.md §2.2). The snapshot is one (paged, `edge_cloud.listing`) read per type
prefix, all at one revision, so the server's state is consistent; changes are one watch
on `1/` from the revision after it, which the store keeps alive across etcd restarts and
turns into a fresh listing after a compaction. Keys of other types (versions, DNS labels,
ids) are skipped.

Loading is cheap: a snapshot's objects keep their key string from the etcd key and their value
undecoded (`Encoded`), so a server is ready once etcd has answered and decodes them afterwards
(JSON decoding costs ~60 µs an object: seconds for 100k). Building a snapshot gives the event
loop back every `YIELD_EVERY` keys. Watched changes are decoded as they come.

History for delta resync comes from etcd's multi-version store: the keys under `1/` as they
were at the client's revision, compared with the keys now, name every object deleted since;
updates are found by mod revision. If that revision was compacted away there is no delta.
"Now" is usually the revision of the last snapshot, whose keys the source keeps (a set of
the key strings the server holds anyway), so one listing does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

from edge_cloud.listing import current_revision, list_prefixes
from edge_cloud.notify._wire import Action, Message, type_name
from edge_cloud.notify.source import Change, Encoded, Snapshot
from edge_cloud.objects import codec, keys
from edge_cloud.store import EventType, KeyValue, Resync, RevisionCompacted, Store, WatchEvent

__all__ = ["EtcdNotifySource"]

log = logging.getLogger(__name__)

PREFIX: Final = f"{keys.REGION}/"
#: Keys handled between two yields to the event loop while a snapshot is built.
YIELD_EVERY: Final = 1000


class _Type:
    """One replicated type: its class, full name and value decoder."""

    __slots__ = ("cls", "decode", "full_name")

    def __init__(self, cls: type[Message]) -> None:
        self.cls = cls
        self.full_name = type_name(cls)
        self.decode: Callable[[bytes], Message] = functools.partial(codec.decode, cls)


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
        # etcd type segment (message name) → type
        self._types = {cls.DESCRIPTOR.name: _Type(cls) for cls in types}
        self._history_timeout = history_timeout
        # the last snapshot's revision and key strings by full type name (deleted_since)
        self._listed: tuple[int, dict[str, set[str]]] | None = None

    async def snapshot(self) -> Snapshot:
        """Every object of the registered types, read at one revision.

        One read per type prefix, all at one revision (a few at a time), each paged as
        needed. Why not one range over `1/`: on a large database (100,000 objects, ~75 MB)
        etcd builds and sends the whole answer only for the client to refuse it as too
        large, and keys of other types (reservations, versions) would be transferred too.
        """
        revision = await current_revision(self._store)
        prefixes = (f"{PREFIX}{name}/" for name in self._types)
        items = await list_prefixes(self._store, prefixes, revision=revision)
        return await self._snapshot(items, revision)

    async def changes(self, after: int) -> AsyncIterator[Change | Snapshot]:
        """Watch `1/` from `after` + 1; a compaction turns into a `Snapshot`."""
        async with contextlib.aclosing(self._store.watch(PREFIX, after + 1)) as events:
            async for event in events:
                if isinstance(event, Resync):
                    yield await self._snapshot(event.items, event.revision)
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
        listed = self._listed
        try:
            async with asyncio.timeout(self._history_timeout):
                then, _ = await self._store.range(PREFIX, revision=revision, keys_only=True)
                if listed is not None and listed[0] == until:
                    remaining = listed[1]
                else:
                    now, _ = await self._store.range(PREFIX, revision=until, keys_only=True)
                    remaining = self._key_sets(now)
        except RevisionCompacted:
            log.info("etcd history since revision %d is compacted", revision)
            return None
        deletes: list[Change] = []
        for kv in then:
            found = self._class(kv.key)
            if found is None or found[1] in remaining.get(found[0].full_name, ()):
                continue
            change = self._change(WatchEvent(EventType.DELETE, kv.key, b"", until))
            if change is not None:
                deletes.append(change)
        return deletes

    # -- decoding --------------------------------------------------------------------------

    def _class(self, etcd_key: str) -> tuple[_Type, str] | None:
        try:
            parsed = keys.parse_store_key(etcd_key)
        except ValueError:
            return None
        found = self._types.get(parsed.type_name)
        if found is None or not parsed.key:
            return None
        return found, parsed.key

    def _key_sets(self, items: Sequence[KeyValue]) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for kv in items:
            found = self._class(kv.key)
            if found is not None:
                out.setdefault(found[0].full_name, set()).add(found[1])
        return out

    async def _snapshot(self, items: Sequence[KeyValue], revision: int) -> Snapshot:
        objects: dict[str, list[Encoded]] = {}
        listed: dict[str, set[str]] = {}
        for i, kv in enumerate(items, 1):
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            found = self._class(kv.key)
            if found is None:
                continue
            t, key = found
            encoded = Encoded(key, kv.mod_revision, kv.value, t.decode)
            objects.setdefault(t.full_name, []).append(encoded)
            listed.setdefault(t.full_name, set()).add(key)
        self._listed = (revision, listed)
        return Snapshot(objects, revision)

    def _change(self, event: WatchEvent) -> Change | None:
        found = self._class(event.key)
        if found is None:
            return None
        t, key = found
        if event.type is EventType.DELETE:
            try:
                obj = keys.object_from_key_string(t.cls, key)
            except Exception as err:
                log.warning("skipping delete of unparsable etcd key %r: %s", event.key, err)
                return None
            return Change(t.full_name, Action.DELETE, obj, event.mod_revision, key)
        try:
            decoded = t.decode(event.value)
        except Exception as err:
            log.warning("skipping undecodable etcd value at %r: %s", event.key, err)
            return None
        return Change(t.full_name, Action.UPDATE, decoded, event.mod_revision, key)
