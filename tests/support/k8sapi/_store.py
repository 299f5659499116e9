"""The object store behind the test server: resourceVersions, uids, watches.

One global, monotonic resourceVersion like etcd's revision; a bounded event history so a
watch can start from a recent resourceVersion (older ones get 410 Expired, as a compacted
etcd would answer).
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.support.k8sapi._errors import (
    ApiError,
    already_exists,
    conflict,
    gone,
    not_found,
)
from tests.support.k8sapi._resources import BY_PATH, ResourceType

ObjKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped


def now_rfc3339() -> str:
    """The API server's timestamp format (seconds, UTC, `Z`)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Event:
    """One change, as a watch reports it."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    rt: ResourceType
    obj: dict[str, Any]
    old: dict[str, Any] | None = None  # the previous version, for MODIFIED


@dataclass(slots=True, eq=False)
class Watcher:
    """One open watch: a resource type, an optional namespace, a filter and a queue."""

    rt: ResourceType
    namespace: str | None
    accept: Callable[[dict[str, Any]], bool]
    queue: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)


class Store:
    """Objects by resource type and (namespace, name), with watches and change callbacks."""

    def __init__(self, history: int = 10_000) -> None:
        self._rv = 0
        self._objects: dict[ResourceType, dict[ObjKey, dict[str, Any]]] = {
            rt: {} for rt in BY_PATH.values()
        }
        self._history: deque[Event] = deque(maxlen=history)
        self._watchers: set[Watcher] = set()
        self._listeners: list[Callable[[Event], None]] = []
        # The last version each object was announced with: a filtered watch needs the old
        # version to turn "no longer matches" into DELETED and "now matches" into ADDED.
        self._announced: dict[tuple[ResourceType, ObjKey], dict[str, Any]] = {}

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion handed out."""
        return self._rv

    def on_change(self, listener: Callable[[Event], None]) -> None:
        """Call `listener` after every change (the controller loop wakes up on these)."""
        self._listeners.append(listener)

    def _emit(self, event_type: str, rt: ResourceType, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (rt, (meta.get("namespace", ""), meta["name"]))
        snapshot = copy.deepcopy(obj)
        old = self._announced.pop(key, None) if event_type == "DELETED" else None
        if event_type == "MODIFIED":
            old = self._announced.get(key)
        if event_type != "DELETED":
            self._announced[key] = snapshot
        event = Event(self._rv, event_type, rt, snapshot, old)
        self._history.append(event)
        for watcher in list(self._watchers):
            seen = self._as_seen_by(watcher, event)
            if seen is not None:
                watcher.queue.put_nowait(seen)
        for listener in self._listeners:
            listener(event)

    @staticmethod
    def _as_seen_by(watcher: Watcher, event: Event) -> Event | None:
        """The event as a filtered watch reports it, or None when it does not concern it.

        As on the real server, a modification that moves an object into a watch's selector
        is ADDED for that watch, one that moves it out is DELETED.
        """
        if watcher.rt is not event.rt:
            return None
        ns = event.obj["metadata"].get("namespace", "")
        if watcher.namespace is not None and ns != watcher.namespace:
            return None
        now = watcher.accept(event.obj)
        if event.type != "MODIFIED" or event.old is None:
            return event if now else None
        before = watcher.accept(event.old)
        if now and before:
            return event
        if now:
            return Event(event.rv, "ADDED", event.rt, event.obj)
        if before:
            return Event(event.rv, "DELETED", event.rt, event.obj)
        return None

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    # Reads ------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        """A copy of one object.

        Raises:
            ApiError: 404 NotFound.
        """
        obj = self._objects[rt].get((namespace, name))
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return copy.deepcopy(obj)

    def find(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object itself (not a copy), or None; for the controller's reads."""
        return self._objects[rt].get((namespace, name))

    def items(self, rt: ResourceType, namespace: str | None = None) -> Iterator[dict[str, Any]]:
        """Stored objects (not copies) of a type, optionally in one namespace, by key order."""
        for (ns, _name), obj in sorted(self._objects[rt].items()):
            if namespace is None or ns == namespace:
                yield obj

    def list_objects(
        self,
        rt: ResourceType,
        namespace: str | None,
        accept: Callable[[dict[str, Any]], bool],
    ) -> tuple[list[dict[str, Any]], str]:
        """Copies of matching objects and the list's resourceVersion."""
        found = [copy.deepcopy(o) for o in self.items(rt, namespace) if accept(o)]
        return found, str(self._rv)

    def uids(self) -> set[str]:
        """Every stored object's uid (ownerReferences resolve against these)."""
        return {obj["metadata"]["uid"] for objs in self._objects.values() for obj in objs.values()}

    # Writes -----------------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a new object, filling uid, resourceVersion, creationTimestamp, generation.

        Raises:
            ApiError: 409 AlreadyExists.
        """
        meta = obj["metadata"]
        key = (namespace, meta["name"])
        if key in self._objects[rt]:
            raise already_exists(rt.plural, rt.group, meta["name"])
        if rt.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["resourceVersion"] = self._bump()
        for stale in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(stale, None)
        if rt.tracks_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        self._objects[rt][key] = obj
        self._emit("ADDED", rt, obj)
        return copy.deepcopy(obj)

    def replace(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        obj: dict[str, Any],
        *,
        status_only: bool = False,
    ) -> dict[str, Any]:
        """Replace a stored object (PUT semantics), keeping what a client cannot change.

        A main-resource write keeps the stored status of types with a status subresource;
        a status write keeps everything but the status. Unchanged writes do not bump the
        resourceVersion, as the real server skips no-op updates.

        Raises:
            ApiError: 404 NotFound, 409 Conflict on a stale resourceVersion.
        """
        old = self._objects[rt].get((namespace, name))
        if old is None:
            raise not_found(rt.plural, rt.group, name)
        meta = obj.setdefault("metadata", {})
        sent_rv = meta.get("resourceVersion")
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, rt.group, name)
        if status_only:
            new = copy.deepcopy(old)
            new["status"] = obj.get("status") or {}
        else:
            new = obj
            for keep in (
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "namespace",
            ):
                if keep in old["metadata"]:
                    meta[keep] = old["metadata"][keep]
                else:
                    meta.pop(keep, None)
            meta["name"] = name
            if rt.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            if rt.tracks_generation and new.get("spec") != old.get("spec"):
                meta["generation"] = old["metadata"].get("generation", 1) + 1
        new["kind"], new["apiVersion"] = rt.kind, rt.api_version
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return copy.deepcopy(old)
        new["metadata"]["resourceVersion"] = self._bump()
        self._objects[rt][(namespace, name)] = new
        self._emit("MODIFIED", rt, new)
        return copy.deepcopy(new)

    def set_status(self, rt: ResourceType, obj: dict[str, Any], status: Mapping[str, Any]) -> None:
        """Controller-side status write on a stored object; no event when nothing changed."""
        if obj.get("status") == status:
            return
        obj["status"] = copy.deepcopy(dict(status))
        obj["metadata"]["resourceVersion"] = self._bump()
        self._emit("MODIFIED", rt, obj)

    def touch(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        """Record a controller-side change to a stored object (new resourceVersion, event)."""
        obj["metadata"]["resourceVersion"] = self._bump()
        self._emit("MODIFIED", rt, obj)

    def delete(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        """Remove an object now; returns it with the deletion's resourceVersion.

        Raises:
            ApiError: 404 NotFound.
        """
        obj = self._objects[rt].pop((namespace, name), None)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        obj["metadata"]["resourceVersion"] = self._bump()
        self._emit("DELETED", rt, obj)
        return copy.deepcopy(obj)

    # Watches ----------------------------------------------------------------------------

    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        accept: Callable[[dict[str, Any]], bool],
        since: str | None,
    ) -> tuple[Watcher, list[Event]]:
        """Open a watch; returns it with the events to send first.

        `since` empty or "0" means "current state, then changes" (synthetic ADDED events);
        a number means "changes after that resourceVersion".

        Raises:
            ApiError: 410 Expired when `since` is older than the kept history; 400 when it
                is not a number.
        """
        watcher = Watcher(rt, namespace, accept)
        initial: list[Event] = []
        if not since or since == "0":
            for obj in self.items(rt, namespace):
                if accept(obj):
                    initial.append(Event(self._rv, "ADDED", rt, copy.deepcopy(obj)))
        else:
            try:
                start = int(since)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resource version: {since}") from None
            oldest = self._history[0].rv if self._history else self._rv + 1
            if start < oldest - 1 and start < self._rv:
                raise gone(f"too old resource version: {start} ({oldest - 1})")
            for past in self._history:
                seen = self._as_seen_by(watcher, past) if past.rv > start else None
                if seen is not None:
                    initial.append(seen)
        self._watchers.add(watcher)
        return watcher, initial

    def unwatch(self, watcher: Watcher) -> None:
        """Close a watch."""
        self._watchers.discard(watcher)
