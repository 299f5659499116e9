"""Wire constants and the per-object helpers notify needs: type names, keys, `Any` packing.

Keys and key-only objects go through `key_string` and `key_only`, which defer to the shared
object layer (`edge_cloud.objects.keys`), so key strings are the original's byte for byte.
"""

from __future__ import annotations

import enum
from typing import Final

from edgeproto import notice_pb2
from google.protobuf import any_pb2, message

from edge_cloud.objects import keys
from edge_cloud.objects.registry import descriptor_of

#: The notify protocol version the original speaks; the lower of both sides' is used.
PROTOCOL_VERSION: Final = 1

TYPE_URL_PREFIX: Final = "type.googleapis.com/"

#: VERSION tag: the peer's name (original).
TAG_NAME: Final = "name"
#: Client VERSION tag: "my cache holds every change up to this revision" (delta resync).
TAG_DELTA_SINCE: Final = "delta-since-rev"
#: SENDALL_END tag: revision of the state the send-all describes (our servers only).
TAG_SNAPSHOT_REV: Final = "snapshot-rev"
#: SENDALL_END tag of a delta: types that were nevertheless sent in full (prune those).
TAG_FULL_TYPES: Final = "full-types"

Message = message.Message


class Action(enum.IntEnum):
    """What a data notice does; values are the wire's `NoticeAction`."""

    UPDATE = notice_pb2.UPDATE
    DELETE = notice_pb2.DELETE


def type_name(cls_or_obj: type[Message] | Message) -> str:
    """The full proto name of a message type (`edgeproto.App`), as used in `want_objs`."""
    return descriptor_of(cls_or_obj).full_name


def pack(obj: Message) -> any_pb2.Any:
    """`obj` in an `Any` with the type URL the original uses."""
    packed = any_pb2.Any()
    packed.Pack(obj, type_url_prefix=TYPE_URL_PREFIX)
    return packed


def any_type_name(packed: any_pb2.Any) -> str:
    """The full message name inside an `Any` (empty for an empty `Any`)."""
    return packed.type_url.rpartition("/")[2]


def data_notice(action: Action, obj: Message, mod_rev: int = 0) -> notice_pb2.Notice:
    """An UPDATE or DELETE notice carrying `obj`."""
    return notice_pb2.Notice(action=action.value, any=pack(obj), mod_rev=mod_rev)


# --- identity ---------------------------------------------------------------------------------


def key_string(obj: Message) -> str:
    """The original's key string of an object (`{"name":"x1.small"}`, `settings`, ...)."""
    return keys.key_string(obj)


def key_only(obj: Message) -> Message:
    """A new object of `obj`'s type with only its identity set (what a DELETE carries)."""
    out = type(obj)()
    keys.set_key(out, keys.key_of(obj))
    return out
