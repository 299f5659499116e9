"""Sync: etcd → in-memory caches, by one list-then-watch of the prefix `1/` (controller.md §2.5).

The caches are the Controller's read side: Show RPCs stream from them, in-use checks scan
them, later the notify server sends from them. They change only here, in etcd revision order,
so every reader sees a state etcd really had. A write path that needs read-your-writes waits
with `wait_for_revision(rev)` for the revision its transaction committed at.

Why one watcher for all types: cross-type changes (a ZonePool and the Zone it names) are
applied in the order etcd committed them, never the other way round.

How a revision is known to be applied in full: etcd delivers all events of one revision in
one watch response, and the store's watch yields the events of a response without
suspending in between; `_apply` does not suspend either. Waiters woken by an event of
revision R therefore only run after every event of R has been applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeVar

from google.protobuf.message import DecodeError, Message

from edge_cloud.errors import EdgeError, Unavailable
from edge_cloud.listing import current_revision, list_prefix
from edge_cloud.objects import codec, registry
from edge_cloud.objects.registry import ObjectType
from edge_cloud.store import (
    EventType,
    KeyValue,
    Resync,
    RevisionCompacted,
    Store,
    WatchEvent,
)

__all__ = ["PREFIX", "Caches", "Entry", "Listener", "ReplacedListener", "Sync", "split_store_key"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

PREFIX: Final = "1/"
DEFAULT_WAIT: Final = 10.0
#: Listings of the start-up snapshot tried before giving up (a compaction between the
#: revision and the reads of one attempt makes it start over).
LIST_ATTEMPTS: Final = 3
#: Type prefixes read at once while loading.
LIST_IN_FLIGHT: Final = 4

#: Called after each applied change: type, key string, old object (None: created),
#: new object (None: deleted), revision. Must not block; runs in the sync task.
Listener = Callable[[ObjectType[Any], str, Message | None, Message | None, int], None]
#: Called after the caches were replaced from a listing (at start, and when etcd compacted
#: the history the watch needed), with the listing's revision. Must not block.
ReplacedListener = Callable[[int], None]


class Entry:
    """One cached object, decoded when first read.

    The listing at start-up keeps each value as the bytes etcd returned and decodes it on
    first use: a Controller on 100,000 objects serves once etcd has answered instead of
    after seconds of JSON decoding, and objects nobody reads never cost a decoded copy.
    Once decoded, the bytes are dropped, so memory holds one form of each object.

    Attributes:
        mod_revision: The etcd revision of its last change.
    """

    __slots__ = ("_obj", "_otype", "_raw", "mod_revision")

    def __init__(self, obj: Message, mod_revision: int) -> None:
        self._obj: Message | None = obj
        self._otype: ObjectType[Any] | None = None
        self._raw: bytes | None = None
        self.mod_revision = mod_revision

    @classmethod
    def encoded(cls, otype: ObjectType[Any], raw: bytes, mod_revision: int) -> Entry:
        """An entry holding the stored bytes of an object of `otype`, decoded on first use."""
        entry = cls.__new__(cls)
        entry._obj = None
        entry._otype = otype
        entry._raw = raw
        entry.mod_revision = mod_revision
        return entry

    @property
    def obj(self) -> Message:
        """The decoded object; never mutate it (take `copy()`).

        Raises:
            EdgeError: The stored bytes are not a valid encoding (the caches drop such
                entries with a warning the first time they are read).
        """
        obj = self._obj
        if obj is None:
            otype, raw = self._otype, self._raw
            if otype is None or raw is None:  # cannot happen: made by __init__ or encoded()
                raise RuntimeError("a cache entry holds neither an object nor its encoding")
            obj = self._obj = codec.decode(otype, raw)
            self._raw = None
        return obj

    @property
    def is_decoded(self) -> bool:
        """Whether the object was decoded already (reading `obj` cannot fail then)."""
        return self._obj is not None

    def encoded_value(self) -> bytes | None:
        """The stored bytes while not decoded yet, else None (then `obj` is at hand)."""
        return self._raw

    def copy(self) -> Message:
        """A private copy of the object, safe to change."""
        obj = self.obj
        out = type(obj)()
        out.CopyFrom(obj)
        return out


def split_store_key(key: str) -> tuple[str, str] | None:
    """`1/<Type>/<key-string>` → (type name, key string); None for other keys (`1/VersionV2`)."""
    if not key.startswith(PREFIX):
        return None
    type_name, sep, key_string = key[len(PREFIX) :].partition("/")
    if not sep:
        return None
    return type_name, key_string


def _stored_type(type_name: str) -> ObjectType[Any] | None:
    try:
        otype = registry.by_name(type_name)
    except KeyError:
        return None
    return otype if otype.stored else None


class Caches:
    """The objects of every stored type, by type name and key string. Read-only to callers."""

    def __init__(self) -> None:
        self._objs: dict[str, dict[str, Entry]] = {}

    def entry(self, otype: ObjectType[Any], key: str) -> Entry | None:
        """The cached entry of one object (decoded), or None."""
        objs = self._objs.get(otype.name)
        if objs is None:
            return None
        entry = objs.get(key)
        if entry is None or entry.is_decoded or _decodes(otype, key, entry):
            return entry
        objs.pop(key, None)
        return None

    def get(self, otype: ObjectType[M], key: str) -> M | None:
        """A copy of one object, or None when it is not cached."""
        entry = self.entry(otype, key)
        return None if entry is None else _copy(otype, entry.obj)

    def has(self, otype: ObjectType[Any], key: str) -> bool:
        """Whether the object is cached."""
        return self.entry(otype, key) is not None

    def items(self, otype: ObjectType[M]) -> Iterator[tuple[str, M]]:
        """Key strings and objects of one type, in key order (objects are shared: don't mutate).

        Iterates over a snapshot of the keys, so the caller may await between items; an
        object deleted meanwhile is skipped.
        """
        objs = self._objs.get(otype.name)
        if not objs:
            return
        for key in sorted(objs):
            entry = objs.get(key)
            if entry is None:
                continue
            if not entry.is_decoded and not _decodes(otype, key, entry):
                if objs.get(key) is entry:
                    del objs[key]
                continue
            yield key, entry.obj  # type: ignore[misc]  # stored by type, so an M

    def items_containing(
        self, otype: ObjectType[M], tokens: Iterable[bytes]
    ) -> Iterator[tuple[str, M]]:
        """Like `items`, but skips still-encoded objects whose bytes hold none of `tokens`.

        Why: a scan for a rare condition (a transient state, after a restart) would otherwise
        decode every object of the type at once, which on a large database is seconds of
        start-up during which nothing else runs. The stored bytes of an object that cannot
        match hold none of the tokens, so it is never decoded; objects already decoded, and
        encoded ones holding a token, are yielded for the caller's exact check.

        Args:
            otype: The type to scan.
            tokens: Byte strings of which a matching object's encoding holds at least one
                (for example an enum value's quoted name); a false positive only costs a
                decode.
        """
        wanted = tuple(tokens)
        objs = self._objs.get(otype.name)
        if not objs:
            return
        for key in sorted(objs):
            entry = objs.get(key)
            if entry is None:
                continue
            raw = entry._raw
            if raw is not None and not any(token in raw for token in wanted):
                continue
            if not entry.is_decoded and not _decodes(otype, key, entry):
                if objs.get(key) is entry:
                    del objs[key]
                continue
            yield key, entry.obj  # type: ignore[misc]  # stored by type, so an M

    def values(self, otype: ObjectType[M]) -> list[M]:
        """Copies of every object of one type, in key order."""
        return [_copy(otype, obj) for _, obj in self.items(otype)]

    def count(self, otype: ObjectType[Any]) -> int:
        """How many objects of a type are cached (undecodable ones count until first read)."""
        return len(self._objs.get(otype.name, {}))

    def entries(self, otype: ObjectType[Any]) -> list[tuple[str, Entry]]:
        """The cached entries of one type, decoded or not, by key string (a copy, no order).

        For readers that hand objects on without needing them decoded now (the notify
        snapshot); entries are shared: never change them.
        """
        return list(self._objs.get(otype.name, {}).items())

    # -- the sync's side -------------------------------------------------------------------

    def _put(self, otype: ObjectType[Any], key: str, entry: Entry) -> Entry | None:
        objs = self._objs.setdefault(otype.name, {})
        old = objs.get(key)
        objs[key] = entry
        return old

    def _delete(self, otype: ObjectType[Any], key: str) -> Entry | None:
        return self._objs.get(otype.name, {}).pop(key, None)

    def _peek(self, otype: ObjectType[Any], key: str) -> Entry | None:
        """The entry as stored, without decoding it."""
        return self._objs.get(otype.name, {}).get(key)

    def _any(self) -> bool:
        return any(self._objs.values())

    def _all_keys(self) -> set[tuple[str, str]]:
        return {(t, k) for t, objs in self._objs.items() for k in objs}


def _decodes(otype: ObjectType[Any], key: str, entry: Entry) -> bool:
    """Decode a lazily loaded entry; False (and a warning) when its bytes are not valid."""
    try:
        entry.obj  # noqa: B018 - decodes and keeps the object
    except (EdgeError, ValueError, DecodeError) as err:
        log.warning("ignoring %s%s/%s: cannot decode its value: %s", PREFIX, otype.name, key, err)
        return False
    return True


def _copy(otype: ObjectType[M], obj: Message) -> M:
    out = otype.new()
    out.MergeFrom(obj)  # type: ignore[arg-type]  # cached under its type, so an M
    return out


class Sync:
    """Keeps `Caches` equal to etcd under `1/`: an initial listing, then a watch.

    Args:
        store: The object store.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self.caches = Caches()
        self._revision = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._listeners: list[Listener] = []
        self._replaced_listeners: list[ReplacedListener] = []
        self._started = False
        self._loaded = asyncio.Event()
        #: True while the caches are being replaced from a listing: the changes listeners
        #: see then come in listing order, not commit order.
        self.replacing = False

    @property
    def revision(self) -> int:
        """The last etcd revision fully applied to the caches."""
        return self._revision

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` after every applied change (notify sends from here)."""
        self._listeners.append(listener)

    def subscribe_replaced(self, listener: ReplacedListener) -> None:
        """Call `listener` after each replacement of the caches from a listing."""
        self._replaced_listeners.append(listener)

    async def wait_loaded(self) -> None:
        """Wait until the initial listing is in the caches (`start` returned)."""
        await self._loaded.wait()

    async def start(self) -> int:
        """List the stored types into the caches; returns the revision of the listing.

        Each type's prefix is read separately, all at one revision (one snapshot): keys
        under `1/` that are not objects (id and DNS-label reservations, versions) are not
        transferred at all, and a type too large for one etcd response is paged.

        Raises:
            Unavailable: etcd cannot be read.
        """
        for attempt in range(LIST_ATTEMPTS):
            revision = await current_revision(self._store)
            gate = asyncio.Semaphore(LIST_IN_FLIGHT)

            async def one(
                otype: ObjectType[Any], revision: int = revision, gate: asyncio.Semaphore = gate
            ) -> list[KeyValue]:
                async with gate:
                    items, _ = await list_prefix(self._store, otype.store_prefix, revision=revision)
                    return items

            try:
                parts = await asyncio.gather(*(one(t) for t in registry.stored_types()))
            except RevisionCompacted:
                if attempt + 1 == LIST_ATTEMPTS:
                    raise
                log.info("etcd compacted revision %d while the caches loaded; again", revision)
                continue
            self._replace(itertools.chain.from_iterable(parts), revision)
            break
        self._started = True
        self._loaded.set()
        cached = sum(self.caches.count(t) for t in registry.stored_types())
        log.info("caches loaded: %d objects at etcd revision %d", cached, self._revision)
        return self._revision

    async def run(self) -> None:
        """Follow etcd from the listed revision on, forever (run as a background task)."""
        if not self._started:
            await self.start()
        watch = self._store.watch(PREFIX, self._revision + 1)
        async with contextlib.aclosing(watch):
            async for item in watch:
                if isinstance(item, Resync):
                    log.warning("etcd history was compacted; caches replaced at %d", item.revision)
                    self._replace(item.items, item.revision)
                else:
                    self._apply(item)
                    self._advance(item.mod_revision)

    async def wait_for_revision(self, revision: int, timeout: float = DEFAULT_WAIT) -> None:  # noqa: ASYNC109 - bounded by design
        """Wait until the caches reflect etcd at `revision` (read-your-writes).

        Raises:
            Unavailable: The caches did not catch up within `timeout` seconds.
        """
        if self._revision >= revision:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, waiter))
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise Unavailable(
                f"the object caches did not reach etcd revision {revision} within {timeout:g}s "
                f"(at {self._revision})"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove((revision, waiter))

    # -- applying changes ------------------------------------------------------------------

    def _advance(self, revision: int) -> None:
        """Record `revision` as applied and release its waiters.

        Resolving a future does not suspend: the waiters run once the sync task next
        suspends, i.e. after every event of this revision has been applied.
        """
        if revision <= self._revision:
            return
        self._revision = revision
        for wanted, waiter in list(self._waiters):
            if wanted <= revision and not waiter.done():
                waiter.set_result(None)

    def _apply(self, event: WatchEvent) -> None:
        where = split_store_key(event.key)
        if where is None:
            return
        otype = _stored_type(where[0])
        if otype is None:
            return
        key = where[1]
        if event.type is EventType.DELETE:
            old = self.caches._delete(otype, key)
            if old is not None:
                self._fire(otype, key, old, None, event.mod_revision)
            return
        # decoded now: a value that cannot be decoded leaves the cached object as it was
        obj = self._decode(otype, event.key, event.value)
        if obj is None:
            return
        new = Entry(obj, event.mod_revision)
        old = self.caches._put(otype, key, new)
        self._fire(otype, key, old, new, event.mod_revision)

    def _replace(self, items: Iterable[KeyValue], revision: int) -> None:
        """Make the caches equal to a listing; values are kept encoded until first read."""
        self.replacing = True
        try:
            self._replace_items(items, revision)
        finally:
            self.replacing = False
        for listener in self._replaced_listeners:
            try:
                listener(self._revision)
            except Exception:
                log.exception("cache replacement listener failed at revision %d", revision)

    def _replace_items(self, items: Iterable[KeyValue], revision: int) -> None:
        had_objects = self.caches._any()
        seen: set[tuple[str, str]] = set()
        for kv in items:
            where = split_store_key(kv.key)
            if where is None:
                continue
            otype = _stored_type(where[0])
            if otype is None:
                continue
            key = where[1]
            if had_objects:
                seen.add((otype.name, key))
                current = self.caches._peek(otype, key)
                if current is not None and current.mod_revision == kv.mod_revision:
                    continue
            new = Entry.encoded(otype, kv.value, kv.mod_revision)
            old = self.caches._put(otype, key, new)
            self._fire(otype, key, old, new, kv.mod_revision)
        if had_objects:
            for type_name, key in self.caches._all_keys() - seen:
                otype = registry.by_name(type_name)
                gone = self.caches._delete(otype, key)
                if gone is not None:
                    self._fire(otype, key, gone, None, revision)
        self._advance(revision)

    def _decode(self, otype: ObjectType[Any], key: str, value: bytes) -> Message | None:
        try:
            obj: Message = codec.decode(otype, value)
        except (EdgeError, ValueError, DecodeError) as err:
            log.warning("ignoring %s: cannot decode its value: %s", key, err)
            return None
        return obj

    def _fire(
        self,
        otype: ObjectType[Any],
        key: str,
        old: Entry | None,
        new: Entry | None,
        revision: int,
    ) -> None:
        if not self._listeners:
            return  # nothing to hand objects to: encoded entries stay encoded
        old_obj = None if old is None or not _decodes(otype, key, old) else old.obj
        new_obj = None if new is None or not _decodes(otype, key, new) else new.obj
        if old_obj is None and new_obj is None:
            return
        for listener in self._listeners:
            try:
                listener(otype, key, old_obj, new_obj, revision)
            except Exception:
                log.exception("cache listener failed on %s %s", otype.name, key)
