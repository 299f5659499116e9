"""The object-API engine: guarded transactions over etcd plus the standard CRUD protocols.

Every API mutation is a function of a `Txn` — reads from one etcd snapshot, buffered
writes — committed by `Engine.apply` as ONE etcd transaction that compares the mod revision
of every key the function read (absent keys must still be absent). On a lost race the
function runs again on fresh data (so it must be re-entrant: no side effects, no state kept
between runs); when it reads a key that was not fetched yet, the engine fetches it and runs
the function again. This is the original's STM (controller.md §2.4) on `Store.update`.

Why this closes the create-vs-delete race between two controllers: a create that adds a
reference reads the referenced object in its transaction (`Txn.require`), so it commits only
if that object is unchanged since the read and had no `delete_prepare`; a delete first sets
`delete_prepare` (changing the mod revision), waits until its own caches have caught up with
that revision, and only then checks the caches for users. A referrer committed before the
mark is in the caches by then; one that tries after it fails with "is being deleted".

The generic protocols built on `apply`:

- `create`: validate fully first (the caller), then one transaction requiring the key to be
  absent, running the caller's reference checks, writing the object;
- `update`: `fields` required, non-updatable paths refused, listed fields copied onto the
  stored object, re-validated; an unchanged object is not written;
- `delete`: the delete-prepare protocol (mark, wait, in-use checks on the caches, delete;
  on failure clear the mark); types without `delete_prepare` are deleted in one step;
- `show`: the cached objects matching a filter.

After each committing transaction the engine waits for its caches to reach the commit
revision, so a Show right after a Create sees the object (read-your-writes).

What keeps hot transactions cheap (issue 6, a burst of AppInst creates on one cluster):

- Values read whose mod revision equals the cached entry's are taken from the caches (a
  protobuf copy) instead of being decoded from JSON again on every run.
- `Txn.peek_many` reads objects from the caches without guarding them. It is for the
  members of a refs record (the AppInsts of a ClusterRefs): the caller guards the record
  itself, and every change to what it looks at in the members also writes the record, so
  a commit on a stale member view fails on the record instead. The caches must be at
  least as new as the snapshot for that; otherwise the engine waits for them and re-runs.
- `apply(..., serialize=names)` makes commits of this process that share a name take turns
  (per-name asyncio locks, taken in sorted order): creates on one cloudlet all write its
  refs, so letting them race each other through etcd only burns retries. Other writers
  (another Controller) are still handled by the guarded commit, now retried for a time
  budget instead of a fixed count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from typing import Any, Final, TypeVar

from google.protobuf.message import Message

from edge_cloud.errors import AlreadyExists, EdgeError, FailedPrecondition, InvalidArgument
from edge_cloud.objects import codec, fields, keys, match, registry
from edge_cloud.objects.registry import ObjectType
from edge_cloud.store import Delete, KeyValue, Op, Put, Snapshot, Store
from services.controller._sync import Caches, Sync, split_store_key

__all__ = ["DELETE_PREPARE", "Engine", "Txn"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
R = TypeVar("R")

DELETE_PREPARE: Final = "delete_prepare"
_MAX_READ_ROUNDS: Final = 20
_TXN_RETRIES: Final = 10
_FROM_CACHE: Final = 0
"""`KeyValue.version` of values guessed from the caches (etcd's versions start at 1)."""
_TXN_BUDGET: Final = 20.0
"""Seconds a transaction keeps retrying lost races after its first `_TXN_RETRIES`."""


class _NeedReads(Exception):
    """Raised inside a transaction function that read keys not fetched yet."""

    def __init__(self, store_keys: Iterable[str]) -> None:
        super().__init__("transaction needs more keys")
        self.store_keys = list(store_keys)


class _StaleCaches(Exception):
    """Raised inside a transaction function that peeked at caches older than its snapshot."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"caches behind revision {revision}")
        self.revision = revision


def _copy(obj: M) -> M:
    out = type(obj)()
    out.CopyFrom(obj)
    return out


def has_delete_prepare(otype: ObjectType[Any]) -> bool:
    """Whether objects of this type take part in the delete-prepare protocol."""
    return DELETE_PREPARE in otype.descriptor.fields_by_name


class Txn:
    """One run of a transaction function: reads from a snapshot, writes buffered.

    Reads of keys outside the snapshot stop the run; the engine fetches them and runs the
    function again, so a function may read whatever it needs. Every key read is compared at
    commit time. Reads see this run's own earlier writes.

    Besides registered objects, a transaction may read and write bare keys that are not
    objects (`has_key`/`put_key`/`delete_key`: reservations such as a cloudlet's DNS label
    or an App's global id), guarded and committed like the rest.
    """

    def __init__(
        self,
        values: Mapping[str, KeyValue | None],
        caches: Caches | None = None,
        cache_revision: Callable[[], int] | None = None,
    ) -> None:
        """Start a run on `values` (a `Snapshot` carries its revision).

        Args:
            values: The snapshot read for this run.
            caches: Decoded objects to reuse for values with the same mod revision, and
                what `peek_many` reads.
            cache_revision: The revision the caches are at (`peek_many` needs it).
        """
        self._values = values
        self._caches = caches
        self._cache_revision = cache_revision
        self._writes: dict[str, Op] = {}
        self._written: dict[str, Message | None] = {}
        self._raw: dict[str, bytes | None] = {}

    # -- reads -------------------------------------------------------------------------------

    def get(self, otype: ObjectType[M], key: Message | str) -> M | None:
        """The current object, or None if absent.

        Args:
            otype: Its type.
            key: Its key message or key string.
        """
        return self.get_many(otype, [key])[0]

    def get_many(self, otype: ObjectType[M], keys_: Iterable[Message | str]) -> list[M | None]:
        """Several objects of one type (fetched in one round when not read yet)."""
        key_strings = [keys.key_string(k) for k in keys_]
        store_keys = [keys.store_key(otype.name, k) for k in key_strings]
        missing = [k for k in store_keys if k not in self._written and k not in self._values]
        if missing:
            raise _NeedReads(missing)
        out: list[M | None] = []
        for key_string, skey in zip(key_strings, store_keys, strict=True):
            if skey in self._written:
                written = self._written[skey]
                out.append(None if written is None else _copy(written))  # type: ignore[arg-type]
                continue
            kv = self._values[skey]
            out.append(None if kv is None else self._decode(otype, key_string, kv))
        return out

    def _decode(self, otype: ObjectType[M], key_string: str, kv: KeyValue) -> M:
        """The value as an object: a copy of the cached one when it is the same write."""
        if self._caches is not None:
            entry = self._caches.entry(otype, key_string)
            if entry is not None and entry.mod_revision == kv.mod_revision:
                return entry.copy()  # type: ignore[return-value]  # cached under its type
        if kv.version == _FROM_CACHE:
            # a guess taken from the caches, which moved on since: read etcd instead
            raise _NeedReads([])
        return codec.decode(otype, kv.value)

    def peek_many(
        self, otype: ObjectType[M], keys_: Iterable[Message | str], *, shared: bool = False
    ) -> list[M | None]:
        """Objects from the caches, NOT guarded: their changes do not fail the commit.

        Only for objects whose relevant changes always also write a key this transaction
        reads guarded (the members of a refs record the caller reads with `get`): then a
        commit computed from a member that changed since fails on that record and runs
        again. Needs the caches to be at least as new as the snapshot (a member committed
        with the record must be in them); if they are behind, the engine waits and re-runs.
        This run's own writes are seen, as with `get_many`.

        Args:
            otype: Their type.
            keys_: Their keys.
            shared: Return the cached objects themselves instead of copies, for a caller
                that only reads them: the members of a refs record grow with it (hundreds
                of AppInsts on one cluster), and copying each on every create of another
                member was most of that create's cost. They must not be changed.

        Returns:
            The objects (copies unless `shared`), None for those absent.
        """
        if self._caches is None or self._cache_revision is None:
            return self.get_many(otype, keys_)
        revision = getattr(self._values, "revision", None)
        if revision is None:
            return self.get_many(otype, keys_)
        if self._cache_revision() < revision:
            raise _StaleCaches(revision)
        out: list[M | None] = []
        written_all = self._written
        caches = self._caches
        for k in keys_:
            key_string = keys.key_string(k)
            if written_all:
                skey = keys.store_key(otype.name, key_string)
                if skey in written_all:
                    written = written_all[skey]
                    if written is None or shared:
                        out.append(written)  # type: ignore[arg-type]  # written under its type
                    else:
                        out.append(_copy(written))  # type: ignore[arg-type]
                    continue
            if shared:
                entry = caches.entry(otype, key_string)
                out.append(None if entry is None else entry.obj)  # type: ignore[arg-type]
            else:
                out.append(caches.get(otype, key_string))
        return out

    def require(
        self,
        otype: ObjectType[M],
        key: Message,
        *,
        missing: Callable[[], EdgeError] | None = None,
    ) -> M:
        """A referenced object: it must exist and must not be being deleted.

        Args:
            otype: The referenced type.
            key: Its key message.
            missing: The error when it is absent; default `<Type> key <key> not found`.

        Raises:
            NotFound: (or `missing()`) when absent.
            FailedPrecondition: `<Type> <key> is being deleted`.
        """
        obj = self.get(otype, key)
        if obj is None:
            raise missing() if missing is not None else keys.not_found(key)
        if getattr(obj, DELETE_PREPARE, False):
            raise keys.being_deleted(key)
        return obj

    # -- writes ------------------------------------------------------------------------------

    def put(self, obj: Message, *, lease: int | None = None) -> None:
        """Write an object (its `fields` mask is never stored)."""
        otype = registry.of(obj)
        stored = _copy(obj)
        if otype.has_fields:
            stored.ClearField("fields")
        skey = keys.object_store_key(stored)
        self._writes[skey] = Put(skey, codec.encode(stored), lease)
        self._written[skey] = stored

    def delete(self, otype: ObjectType[Any], key: Message | str) -> None:
        """Delete an object."""
        skey = keys.store_key(otype.name, keys.key_string(key))
        self._writes[skey] = Delete(skey)
        self._written[skey] = None

    # -- bare keys ---------------------------------------------------------------------------

    def has_key(self, store_key: str) -> bool:
        """Whether a bare key exists (this run's own writes included)."""
        if store_key in self._raw:
            return self._raw[store_key] is not None
        if store_key not in self._values:
            raise _NeedReads([store_key])
        return self._values[store_key] is not None

    def put_key(self, store_key: str, value: bytes) -> None:
        """Write a bare key."""
        self._writes[store_key] = Put(store_key, value)
        self._raw[store_key] = value

    def delete_key(self, store_key: str) -> None:
        """Delete a bare key."""
        self._writes[store_key] = Delete(store_key)
        self._raw[store_key] = None

    def ops(self) -> list[Op]:
        """The buffered writes, in order."""
        return list(self._writes.values())


class Engine:
    """Transactions and the generic object protocols for one Controller process.

    Args:
        store: The object store.
        sync: The sync that feeds `caches`; waited on after each write.
    """

    def __init__(self, store: Store, sync: Sync) -> None:
        self.store = store
        self.sync = sync
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def serialized(self, names: Iterable[str]) -> AsyncIterator[None]:
        """Hold the per-name locks of `names` (sorted order, so two holders never deadlock).

        Locks exist only while someone holds or waits for them.
        """
        registered: list[str] = []
        held: list[asyncio.Lock] = []
        try:
            for name in sorted(set(names)):
                lock, users = self._locks.setdefault(name, (asyncio.Lock(), [0]))
                users[0] += 1
                registered.append(name)
                await lock.acquire()
                held.append(lock)
            yield
        finally:
            for lock in reversed(held):
                lock.release()
            for name in registered:
                users = self._locks[name][1]
                users[0] -= 1
                if not users[0]:
                    del self._locks[name]

    @property
    def caches(self) -> Caches:
        """The read side: objects as of the last applied etcd revision."""
        return self.sync.caches

    # -- transactions ------------------------------------------------------------------------

    async def apply(
        self,
        fn: Callable[[Txn], R],
        *,
        reads: Iterable[str] = (),
        wait: bool = True,
        serialize: Iterable[str] = (),
        from_caches: bool = False,
    ) -> R:
        """Run `fn` as one guarded etcd transaction and return what its last run returned.

        Args:
            fn: Reads and writes through the `Txn`; may raise `EdgeError` to refuse
                (nothing is written). Must be re-entrant: it may run several times.
            reads: etcd keys to fetch up front (saves a round per key read).
            wait: After a commit, wait for the caches to reach its revision.
            serialize: Names of hot records the commit writes; commits of this process
                naming the same one take turns (the wait for the caches is outside).
            from_caches: Start from the cached values of `reads` instead of reading them
                (one etcd round trip less per write; the commit verifies them, and a
                decision to write nothing is re-taken on a real read). For writes that
                follow the caches closely, such as worker reports, and for hot records
                written in turns (`serialize`), which keep the turn until the caches have
                the commit.

        Returns:
            The value of the run that committed (or of the run that wrote nothing).

        Raises:
            Aborted: Other writers kept winning the race.
        """
        result, _ = await self.apply_at(
            fn, reads=reads, wait=wait, serialize=serialize, from_caches=from_caches
        )
        return result

    async def apply_at(
        self,
        fn: Callable[[Txn], R],
        *,
        reads: Iterable[str] = (),
        wait: bool = True,
        serialize: Iterable[str] = (),
        from_caches: bool = False,
    ) -> tuple[R, int | None]:
        """`apply`, also returning the commit revision (None when nothing was written)."""
        waited = False
        async with self.serialized(serialize):
            result, revision = await self._commit(fn, reads, from_caches)
            if revision is not None and wait and from_caches and serialize:
                # the next turn starts from the caches: hand it over once they have this
                # commit, or its guess is stale and costs it a lost race
                await self.sync.wait_for_revision(revision)
                waited = True
        if revision is not None and wait and not waited:
            await self.sync.wait_for_revision(revision)
        return result, revision

    async def _commit(
        self, fn: Callable[[Txn], R], reads: Iterable[str], from_caches: bool
    ) -> tuple[R, int | None]:
        wanted: dict[str, None] = dict.fromkeys(reads)
        results: list[R] = []
        wrote: list[bool] = []

        def attempt(values: Mapping[str, KeyValue | None]) -> list[Op]:
            # runs once per attempt: keep only the last run's outcome
            results.clear()
            wrote.clear()
            txn = Txn(values, self.caches, self._cache_revision)
            results.append(fn(txn))
            ops = txn.ops()
            wrote.append(bool(ops))
            return ops

        for _ in range(_MAX_READ_ROUNDS):
            initial = self._from_caches(list(wanted)) if from_caches else None
            try:
                outcome = await self.store.update(
                    list(wanted),
                    attempt,
                    retries=_TXN_RETRIES,
                    budget=_TXN_BUDGET,
                    initial=initial,
                )
            except _NeedReads as need:
                wanted.update(dict.fromkeys(need.store_keys))
                from_caches = False
                continue
            except _StaleCaches as stale:
                await self.sync.wait_for_revision(stale.revision)
                from_caches = False
                continue
            if not (wrote and wrote[0]):
                return results[0], None
            return results[0], outcome.revision
        raise EdgeError(f"transaction kept reading new keys after {_MAX_READ_ROUNDS} rounds")

    def _from_caches(self, store_keys: list[str]) -> Snapshot | None:
        """The keys as the caches have them, for an update that skips its first read.

        Values stay empty: `Txn` takes the cached objects by mod revision. Keys that are not
        cached objects (reservations such as ids and DNS labels) are guessed absent, which
        they nearly always are; the commit's compares catch a wrong guess.
        """
        if not store_keys:
            return None
        values: dict[str, KeyValue | None] = {}
        for skey in store_keys:
            where = split_store_key(skey)
            otype = None
            if where is not None:
                with contextlib.suppress(KeyError):
                    otype = registry.by_name(where[0])
            if where is None or otype is None or not otype.stored:
                values[skey] = None
                continue
            entry = self.caches.entry(otype, where[1])
            values[skey] = (
                None if entry is None else KeyValue(skey, b"", 0, entry.mod_revision, _FROM_CACHE)
            )
        return Snapshot(values, revision=self.sync.revision)

    def _cache_revision(self) -> int:
        return self.sync.revision

    # -- reads from the caches ---------------------------------------------------------------

    def get(self, otype: ObjectType[M], key: Message | str) -> M | None:
        """A copy of a cached object, or None."""
        return self.caches.get(otype, keys.key_string(key))

    def show(self, filter_: M) -> list[M]:
        """Cached objects of the filter's type matching it (empty fields match anything)."""
        otype = registry.of(filter_)
        return [_copy(obj) for _, obj in self.caches.items(otype) if match.matches(filter_, obj)]

    # -- the generic protocols ---------------------------------------------------------------

    async def create(
        self,
        obj: M,
        *,
        check: Callable[[Txn, M], None] | None = None,
        plain: bool = False,
    ) -> None:
        """Store a new, already validated object in one transaction.

        Args:
            obj: The object (its `fields` are not stored).
            check: Runs inside the transaction on a copy of `obj` before it is written:
                read referenced objects with `Txn.require`, fill in derived fields.
            plain: Use the original's store-level message `key <key> already exists`
                (types it created without an STM) instead of `<Type> key <key> ...`.

        Raises:
            AlreadyExists: The key is taken.
        """
        otype = registry.of(obj)
        key = keys.key_string(obj)

        def fn(txn: Txn) -> None:
            new = _copy(obj)
            if has_delete_prepare(otype):
                setattr(new, DELETE_PREPARE, False)  # server-only, never from the request
            if txn.get(otype, key) is not None:
                if plain:
                    raise AlreadyExists(f"key {key} already exists")
                raise keys.already_exists(new)
            if check is not None:
                check(txn, new)
            txn.put(new)

        # From the caches: a new key is guessed absent as the caches say, and the commit's
        # compare (create revision 0) verifies it, so a create is one etcd round trip instead
        # of a read and a transaction. A refusal on a stale guess (the key cached but gone
        # since) is re-taken on a real read by the store's update.
        await self.apply(fn, reads=[keys.store_key(otype.name, key)], from_caches=True)

    async def update(
        self,
        obj: M,
        *,
        updatable: Collection[str] | None = None,
        check: Callable[[Txn, M, M], None] | None = None,
        refuse_deleting: bool = False,
    ) -> bool:
        """Copy the fields listed in `obj.fields` onto the stored object.

        Args:
            obj: The request: key, `fields` and the new values.
            updatable: Field paths that may change (None: every non-key field).
            check: Runs inside the transaction with the merged object and the stored one;
                validates (and may normalise) the merged object, reads references.
            refuse_deleting: Refuse when the object's `delete_prepare` is set.

        Returns:
            Whether anything changed (nothing is written otherwise).

        Raises:
            InvalidArgument: No fields, or fields that may not change.
            NotFound: The object does not exist.
        """
        otype = registry.of(obj)
        paths = list(getattr(obj, "fields", ()))
        if not paths:
            raise InvalidArgument("nothing specified to update")
        if updatable is not None:
            fields.check_updatable(paths, updatable, otype.descriptor)
        key = keys.key_string(obj)

        def fn(txn: Txn) -> bool:
            current = txn.get(otype, key)
            if current is None:
                raise keys.not_found(obj)
            if refuse_deleting and getattr(current, DELETE_PREPARE, False):
                raise keys.being_deleted(obj)
            merged = _copy(current)
            fields.apply_fields(merged, obj, paths)
            if check is not None:
                check(txn, merged, current)
            if merged == current:
                return False  # nothing changed: no write, no new revision
            txn.put(merged)
            return True

        return await self.apply(fn, reads=[keys.store_key(otype.name, key)])

    async def modify(
        self,
        otype: ObjectType[M],
        key: Message | str,
        change: Callable[[Txn, M], None],
        *,
        missing: Callable[[], EdgeError] | None = None,
    ) -> bool:
        """Read-modify-write one stored object (Add/Remove member RPCs and the like).

        Args:
            otype: Its type.
            key: Its key.
            change: Mutates the object in place inside the transaction; may raise.
            missing: The error when it is absent; default `<Type> key <key> not found`.

        Returns:
            Whether anything changed (nothing is written otherwise).
        """
        key_str = keys.key_string(key)

        def fn(txn: Txn) -> bool:
            current = txn.get(otype, key_str)
            if current is None:
                if missing is not None:
                    raise missing()
                raise keys.not_found(keys.object_from_key_string(otype, key_str))
            changed = _copy(current)
            change(txn, changed)
            if changed == current:
                return False
            txn.put(changed)
            return True

        return await self.apply(fn, reads=[keys.store_key(otype.name, key_str)])

    async def delete(
        self,
        obj: M,
        *,
        prepare: Callable[[Txn, M], None] | None = None,
        in_use: Callable[[M], None] | None = None,
    ) -> None:
        """Delete an object, with the delete-prepare protocol when its type has the flag.

        Args:
            obj: The request; only its key is used.
            prepare: Runs inside the first transaction with the stored object (checks
                that must be race-free, e.g. Settings naming a flavor).
            in_use: Runs after the mark is in the caches; raises `FailedPrecondition`
                naming a user of the object.

        Raises:
            NotFound: The object does not exist.
            FailedPrecondition: It is being deleted already, or in use.
        """
        otype = registry.of(obj)
        key = keys.key_string(obj)
        reads = [keys.store_key(otype.name, key)]

        if not has_delete_prepare(otype):

            def remove_now(txn: Txn) -> None:
                current = txn.get(otype, key)
                if current is None:
                    raise keys.not_found(obj)
                if prepare is not None:
                    prepare(txn, current)
                if in_use is not None:
                    in_use(current)
                txn.delete(otype, key)

            await self.apply(remove_now, reads=reads)
            return

        def mark(txn: Txn) -> M:
            current = txn.get(otype, key)
            if current is None:
                raise keys.not_found(obj)
            if getattr(current, DELETE_PREPARE):
                raise keys.being_deleted(obj)
            if prepare is not None:
                prepare(txn, current)
            setattr(current, DELETE_PREPARE, True)
            txn.put(current)
            return current

        marked, revision = await self.apply_at(mark, reads=reads, wait=False)
        try:
            if revision is not None:
                # in-use checks read the caches: they must include every referrer
                # committed before the mark
                await self.sync.wait_for_revision(revision)
            if in_use is not None:
                in_use(marked)

            def remove(txn: Txn) -> None:
                current = txn.get(otype, key)
                if current is None:
                    raise keys.not_found(obj)
                if not getattr(current, DELETE_PREPARE):
                    raise FailedPrecondition(
                        f"delete {otype.name} {key} expected it to be in delete prepare, "
                        "but it was not"
                    )
                txn.delete(otype, key)

            await self.apply(remove, reads=reads)
        except BaseException:
            # Shielded: a cancelled request must not leave the object marked for good.
            await asyncio.shield(self._undo_prepare(otype, key))
            raise

    async def _undo_prepare(self, otype: ObjectType[Any], key: str) -> None:
        def clear(txn: Txn) -> None:
            current = txn.get(otype, key)
            if current is not None and getattr(current, DELETE_PREPARE):
                setattr(current, DELETE_PREPARE, False)
                txn.put(current)

        try:
            await self.apply(clear, reads=[keys.store_key(otype.name, key)])
        except EdgeError as err:
            log.warning("could not clear delete_prepare of %s %s: %s", otype.name, key, err)
