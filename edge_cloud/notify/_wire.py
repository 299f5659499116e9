"""Wire constants and the per-object helpers notify needs: type names, keys, `Any` packing.

Keys and key-only objects go through `key_string` and `key_only`, which defer to the shared
object layer (`edge_cloud.objects.keys`), so key strings are the original's byte for byte.
Notify computes a key for every object it moves, so `key_encoder` works out once per type
where its identity lives (what `keys.key_of` looks up for every call) and `key_string` uses it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final

from edgeproto import notice_pb2
from google.protobuf import any_pb2, message

from edge_cloud.objects import keys, registry
from edge_cloud.objects.registry import SETTINGS_KEY, Identity, descriptor_of

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
    return key_encoder(type(obj))(obj)


#: Turns an object of one type into its key string.
KeyEncoder = Callable[[Message], str]


_ENCODERS: dict[type[Message], KeyEncoder] = {}


def key_encoder(cls: type[Message]) -> KeyEncoder:
    """The key-string function of one message type, equal to `keys.key_string` on it.

    Args:
        cls: An object type (or a key message) class.

    Returns:
        A function of an object of exactly that type; it raises what `keys.key_string`
        raises for types that have no key. Worked out once per type.
    """
    encoder = _ENCODERS.get(cls)
    if encoder is None:
        encoder = _ENCODERS[cls] = _resolve_encoder(cls)
    return encoder


def _resolve_encoder(cls: type[Message]) -> KeyEncoder:
    objtype = registry.find(descriptor_of(cls))
    if objtype is None:
        return keys.key_json  # a key message (or what keys.key_string treats as one)
    field = objtype.key_field
    match objtype.identity:
        case Identity.SELF:
            return keys.key_json
        case Identity.SINGLETON:
            return lambda _obj: SETTINGS_KEY
        case Identity.KEY if field is not None:
            return lambda obj: keys.key_json(getattr(obj, field))
        case Identity.STRING if field is not None:
            return lambda obj: str(getattr(obj, field))
        case Identity.LABELS if field is not None:
            return lambda obj: keys.labels_key(getattr(obj, field))
    return keys.key_string  # pragma: no cover - every table row names its key field


def key_only(obj: Message) -> Message:
    """A new object of `obj`'s type with only its identity set (what a DELETE carries)."""
    out = type(obj)()
    keys.set_key(out, keys.key_of(obj))
    return out
