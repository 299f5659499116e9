"""Where a notify server's objects come from: the `NotifySource` protocol and an in-memory one.

A source is the server's view of the database: a consistent snapshot of every replicated
object with the revision it describes, then the changes after it in commit order. Etcd is
the production source (`EtcdNotifySource`); `MemorySource` has the same semantics for unit
tests and for daemons that replicate objects they hold only in memory.

Revisions are the database's (etcd's `mod_revision`): they increase with every commit, several
objects changed by one commit share one, and they mean the same on every server of a region,
which is what lets a client resume from a revision with any of them (delta resync).

A source that knows an object's key string says so (`key`), sparing the server from computing
it; one whose objects are costly to decode may hand snapshot objects over still encoded
(`Encoded`), and the server decodes each the first time it needs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge_cloud.notify._wire import Action, Message, key_only, key_string, type_name

__all__ = ["Change", "Encoded", "MemorySource", "NotifySource", "Snapshot", "Stored"]


@dataclass(frozen=True, slots=True)
class Stored:
    """One object as the source holds it.

    Attributes:
        obj: The whole object. Never mutated once handed over.
        mod_rev: Revision of the commit that last wrote it.
        key: Its key string (`key_string(obj)`), or empty when the source leaves it to the
            server.
    """

    obj: Message
    mod_rev: int
    key: str = ""


@dataclass(frozen=True, slots=True)
class Encoded:
    """One object of a snapshot, not decoded yet: decoding is most of what loading costs.

    Attributes:
        key: Its key string.
        mod_rev: Revision of the commit that last wrote it.
        value: The stored bytes.
        decode: Makes the object from `value`; raises when the bytes are not one.
    """

    key: str
    mod_rev: int
    value: bytes
    decode: Callable[[bytes], Message]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Every replicated object at one revision.

    Attributes:
        objects: Objects by full type name (`edgeproto.App`); types with no objects may be
            missing. Each is decoded (`Stored`) or not yet (`Encoded`).
        revision: The revision the snapshot describes: every change up to it is included.
    """

    objects: Mapping[str, Sequence[Stored | Encoded]]
    revision: int


@dataclass(frozen=True, slots=True)
class Change:
    """One object changed by one commit.

    Attributes:
        type_name: Full proto name of the object's type.
        action: UPDATE (created or changed) or DELETE.
        obj: The whole new object for an UPDATE; for a DELETE at least its key.
        mod_rev: Revision of the commit.
        key: Its key string, or empty when the source leaves it to the server.
    """

    type_name: str
    action: Action
    obj: Message
    mod_rev: int
    key: str = ""


class NotifySource(Protocol):
    """What feeds a `NotifyServer`."""

    async def snapshot(self) -> Snapshot:
        """Every replicated object, consistent at one revision."""
        ...

    def changes(self, after: int) -> AsyncIterator[Change | Snapshot]:
        """Changes with revisions above `after`, in commit order, forever.

        When the source cannot replay what happened since `after` (etcd compacted it), it
        yields a `Snapshot` instead: the complete state at a later revision, to replace
        everything held (keys missing from it were deleted meanwhile); changes follow it.
        """
        ...

    async def deleted_since(self, revision: int, until: int) -> Sequence[Change] | None:
        """The DELETE changes with revisions in `(revision, until]`, from history.

        Lets a freshly started server resync a client from a revision older than its own
        start. None when that history is gone (compacted) or not kept.
        """
        ...


@dataclass(eq=False, slots=True)
class _Subscriber:
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class MemorySource:
    """A `NotifySource` backed by a dict, with a history log and etcd-like revisions.

    Writes are synchronous and each is one commit (`commit` writes several objects at one
    revision). `compact` forgets history, as etcd compaction does, so the fallbacks can be
    exercised without etcd.
    """

    def __init__(self, objects: Iterable[Message] = ()) -> None:
        self._objects: dict[str, dict[str, Stored]] = {}
        self._log: list[Change] = []
        self._log_start = 0  # revisions <= this are forgotten
        self._revision = 0
        self._subscribers: set[_Subscriber] = set()
        if objects:
            self.commit(puts=objects)

    @property
    def revision(self) -> int:
        """The revision of the last commit."""
        return self._revision

    def get(self, obj_type: type[Message], key: str) -> Message | None:
        """The stored object of `obj_type` with key string `key`, or None."""
        stored = self._objects.get(type_name(obj_type), {}).get(key)
        return None if stored is None else stored.obj

    def objects(self, obj_type: type[Message]) -> dict[str, Message]:
        """A copy of every stored object of `obj_type` by key string."""
        return {k: s.obj for k, s in self._objects.get(type_name(obj_type), {}).items()}

    def put(self, obj: Message) -> int:
        """Create or replace one object; returns the commit's revision."""
        return self.commit(puts=[obj])

    def delete(self, obj: Message) -> int:
        """Delete one object (by its key); returns the commit's revision."""
        return self.commit(deletes=[obj])

    def commit(self, puts: Iterable[Message] = (), deletes: Iterable[Message] = ()) -> int:
        """Write several objects in one commit, sharing one revision.

        Args:
            puts: Objects to create or replace (copied).
            deletes: Objects to delete, by key; absent ones are skipped.

        Returns:
            The new revision (unchanged if nothing was written).
        """
        revision = self._revision + 1
        changes: list[Change] = []
        for obj in puts:
            copy = type(obj)()
            copy.CopyFrom(obj)
            name, key = type_name(obj), key_string(copy)
            self._objects.setdefault(name, {})[key] = Stored(copy, revision, key)
            changes.append(Change(name, Action.UPDATE, copy, revision, key))
        for obj in deletes:
            name, key = type_name(obj), key_string(obj)
            gone = self._objects.get(name, {}).pop(key, None)
            if gone is not None:
                changes.append(Change(name, Action.DELETE, key_only(obj), revision, key))
        if not changes:
            return self._revision
        self._revision = revision
        self._log.extend(changes)
        for subscriber in self._subscribers:
            subscriber.wake.set()
        return revision

    def compact(self, revision: int | None = None) -> None:
        """Forget the history up to `revision` (default: all of it)."""
        upto = self._revision if revision is None else min(revision, self._revision)
        self._log = [c for c in self._log if c.mod_rev > upto]
        self._log_start = max(self._log_start, upto)

    # -- NotifySource ----------------------------------------------------------------------

    async def snapshot(self) -> Snapshot:
        """Every object at the current revision."""
        return self._snapshot()

    async def changes(self, after: int) -> AsyncIterator[Change | Snapshot]:
        """Replay the log after `after`, then follow new commits; a snapshot if compacted."""
        subscriber = _Subscriber()
        self._subscribers.add(subscriber)
        try:
            position = after
            if after < self._log_start:
                snap = self._snapshot()
                position = snap.revision
                yield snap
            while True:
                subscriber.wake.clear()
                if position < self._log_start:
                    snap = self._snapshot()
                    position = snap.revision
                    yield snap
                    continue
                pending = [c for c in self._log if c.mod_rev > position]
                for change in pending:
                    position = change.mod_rev
                    yield change
                if not pending:
                    await subscriber.wake.wait()
        finally:
            self._subscribers.discard(subscriber)

    async def deleted_since(self, revision: int, until: int) -> Sequence[Change] | None:
        """Deletes in `(revision, until]` from the log; None if compacted."""
        if revision < self._log_start:
            return None
        return [c for c in self._log if c.action is Action.DELETE and revision < c.mod_rev <= until]

    def _snapshot(self) -> Snapshot:
        return Snapshot(
            {name: list(objs.values()) for name, objs in self._objects.items()}, self._revision
        )
