"""The CRM's Info objects: kept locally, every update sent upstream (crm_platforms.md §2).

The original's `CacheUpdater`: a handler's `InfoSender` writes into the CRM's local Info
cache, and notify forwards the cache's changes to the Controller. Here the cache calls
`upstream` (the notify client's `send`) with each new copy; the notify client re-sends the
latest copy of every Info after a reconnect, so nothing reported is lost with a connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

from edge_cloud.crmutil._fields import info_fields
from edge_cloud.objects import keys
from edge_cloud.platform import InfoSender

__all__ = ["InfoCache"]

InfoT = TypeVar("InfoT", bound=Message)


class InfoCache(Generic[InfoT]):
    """Info objects of one type by key string, mirrored upstream.

    Args:
        cls: The Info message class (`ClusterInstInfo`, ...).
        state_enum: The enum of its `state` field.
        upstream: Called with a copy of each new or changed Info.
        upstream_delete: Called with an Info (key only) that is gone.
    """

    def __init__(
        self,
        cls: type[InfoT],
        state_enum: EnumDescriptor,
        upstream: Callable[[InfoT], None],
        upstream_delete: Callable[[InfoT], None],
    ) -> None:
        self._cls = cls
        self._state_enum = state_enum
        self._upstream = upstream
        self._upstream_delete = upstream_delete
        self._fields = info_fields(cls)
        self._data: dict[str, InfoT] = {}

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def get(self, key: Message) -> InfoT | None:
        """The Info of an object key (a ClusterKey, ...), or None."""
        return self._data.get(keys.key_string(key))

    def _new(self, key: Message) -> InfoT:
        info: Any = self._cls()
        info.key.CopyFrom(key)
        out: InfoT = info
        return out

    def sender(self, key: Message) -> InfoSender[InfoT]:
        """An `InfoSender` that starts from the current Info of `key` and updates the cache.

        Each update the sender emits replaces the cached Info and goes upstream.
        """
        start = self._new(key)
        current = self._data.get(keys.key_string(key))
        if current is not None:
            start.CopyFrom(current)
        name = keys.key_string(key)

        def emit(info: InfoT) -> None:
            self._data[name] = info
            self._upstream(info)

        return InfoSender(start, emit, state_enum=self._state_enum, fields=self._fields)

    def seed(self, key: Message, state: int) -> None:
        """Record an object's state without sending it (first sight of a READY object)."""
        name = keys.key_string(key)
        if name in self._data:
            return
        info: Any = self._new(key)
        info.state = state
        self._data[name] = info

    def delete(self, key: Message) -> None:
        """Forget the Info of `key` and tell upstream it is gone (if it was ever known)."""
        gone = self._data.pop(keys.key_string(key), None)
        if gone is not None:
            self._upstream_delete(self._new(key))
