"""`SyncNotifySource`: the Controller's notify server fed from its caches, not a second watch.

The Controller follows etcd once, in `Sync`, which decodes every change it applies. The
notify server used to follow the same keys with a watch of its own (`EtcdNotifySource`):
etcd sent every event twice and the Controller parsed and decoded each twice, for every
write (issue 4: an AppInst create rewrites its ClusterRefs, AppInstRefs and the instance,
records that grow with the cluster). This source hands the notify server the objects Sync
already holds:

- **Snapshot**: the cached objects of the replicated types at the revision Sync has applied
  in full. Objects not decoded yet (loaded at start) go over as `Encoded`, decoded through
  the cache entry, so both share one decoded object and the decode happens once. It is
  built a thousand objects at a time (100,000 objects take most of a second): what Sync
  applies meanwhile is recorded from the snapshot's revision on and replayed after it, so
  an object the build met already changed is sent once more, never missed.
- **Changes**: each change Sync applies (a listener; etcd revision order), with the object
  the cache holds; a DELETE carries the object as it was (the server sends its key only).
- **Compaction**: when Sync replaces its caches from a fresh listing (etcd compacted the
  history its watch needed), the changes of the replacement are not passed on one by one
  (they come in listing order, not commit order); a `Snapshot` of the replaced caches is,
  which the server diffs against what it holds, as with `EtcdNotifySource`.
- **History** for delta resync (`deleted_since`) is etcd's, read as `EtcdNotifySource` does.

Values Sync cannot decode are skipped (the cached object stays as it was), as the etcd
source skipped them; one difference: the delete of an object whose stored value never
decoded is not passed on either (the server never sent that object, so no client has it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

from google.protobuf.message import Message

from edge_cloud.notify import Action, EtcdNotifySource
from edge_cloud.notify.source import Change, Encoded, Snapshot, Stored
from edge_cloud.objects import registry
from edge_cloud.objects.registry import ObjectType
from edge_cloud.store import Store
from services.controller._sync import Entry, Sync

__all__ = ["SyncNotifySource"]

#: Objects put into a snapshot between two yields to the event loop.
YIELD_EVERY: Final = 1000


class SyncNotifySource:
    """A `NotifySource` over a started (or starting) `Sync`, for one `NotifyServer`.

    Args:
        sync: The Controller's caches; the source subscribes to it at once.
        store: The object store, for delete history (`deleted_since`).
        types: The replicated types.
        history_timeout: Seconds a history replay may take before delta is given up.
    """

    def __init__(
        self,
        sync: Sync,
        store: Store,
        types: Sequence[type[Message]],
        *,
        history_timeout: float = 10.0,
    ) -> None:
        self._sync = sync
        self._types = [registry.by_class(cls) for cls in types]
        self._names = {otype.full_name for otype in self._types}
        self._history = EtcdNotifySource(store, types, history_timeout=history_timeout)
        # what happened since the last snapshot, for the one `changes` reader; None until a
        # snapshot was taken (nobody reads yet, so nothing is kept)
        self._pending: deque[Change | _Resnapshot] | None = None
        self._wake = asyncio.Event()
        sync.subscribe(self._changed)
        sync.subscribe_replaced(self._replaced)

    async def snapshot(self) -> Snapshot:
        """The cached objects of the replicated types, at the revision Sync applied in full.

        Waits for Sync's initial listing. Changes applied from here on are kept for
        `changes`.
        """
        await self._sync.wait_loaded()
        self._pending = deque()
        return await self._build_snapshot()

    async def changes(self, after: int) -> AsyncIterator[Change | Snapshot]:
        """The changes Sync applies after `after` (kept since the last snapshot), forever.

        Once the reader stops, nothing is kept until the next snapshot.
        """
        pending = self._pending
        if pending is None:
            await self._sync.wait_loaded()
            pending = self._pending = deque()
            if self._sync.revision > after:  # changes before now are not kept: start over
                pending.append(_RESNAPSHOT)
        try:
            while True:
                while pending:
                    item = pending.popleft()
                    if isinstance(item, _Resnapshot):
                        yield await self._build_snapshot()
                    elif item.mod_rev > after:
                        yield item
                self._wake.clear()
                await self._wake.wait()
        finally:
            if self._pending is pending:
                self._pending = None

    async def deleted_since(self, revision: int, until: int) -> Sequence[Change] | None:
        """Objects that existed at `revision` and are gone at `until`, from etcd's history."""
        return await self._history.deleted_since(revision, until)

    # -- Sync's side ---------------------------------------------------------------------------

    def _changed(
        self,
        otype: ObjectType[Any],
        key: str,
        old: Message | None,
        new: Message | None,
        revision: int,
    ) -> None:
        pending = self._pending
        if pending is None or self._sync.replacing or otype.full_name not in self._names:
            return
        if new is not None:
            pending.append(Change(otype.full_name, Action.UPDATE, new, revision, key))
        elif old is not None:
            pending.append(Change(otype.full_name, Action.DELETE, old, revision, key))
        self._wake.set()

    def _replaced(self, revision: int) -> None:
        """After Sync replaced its caches from a listing: a snapshot, to diff."""
        pending = self._pending
        if pending is None:
            return
        pending.clear()  # all of it will be in the snapshot
        pending.append(_RESNAPSHOT)  # built by the reader, a slice at a time
        self._wake.set()

    async def _build_snapshot(self) -> Snapshot:
        """The replicated objects at Sync's revision now (see the module docstring)."""
        revision = self._sync.revision
        caches = self._sync.caches
        objects: dict[str, list[Stored | Encoded]] = {}
        for otype in self._types:
            items: list[Stored | Encoded] = []
            entries = caches.entries(otype)
            for start in range(0, len(entries), YIELD_EVERY):
                if start:
                    await asyncio.sleep(0)
                for key, entry in entries[start : start + YIELD_EVERY]:
                    raw = entry.encoded_value()
                    if raw is None:
                        items.append(Stored(entry.obj, entry.mod_revision, key))
                    else:
                        items.append(Encoded(key, entry.mod_revision, raw, _Shared(entry).decode))
            if items:
                objects[otype.full_name] = items
        return Snapshot(objects, revision)


class _Resnapshot:
    """In the pending changes: the reader builds a snapshot here (after a replacement)."""


_RESNAPSHOT = _Resnapshot()


class _Shared:
    """Decodes a snapshot object through its cache entry: one decode, one shared object."""

    __slots__ = ("_entry",)

    def __init__(self, entry: Entry) -> None:
        self._entry = entry

    def decode(self, raw: bytes) -> Message:
        """The entry's object (`raw` is its bytes); raises as `codec.decode` would."""
        return self._entry.obj
