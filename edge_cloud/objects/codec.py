"""Value encoding for etcd, and dict conversion for the CLI's YAML and JSON.

Values are proto3 JSON under the original proto field names, enums by name, the `fields`
mask dropped (it describes a request, never stored state). Output is compact and stable:
fields in field-number order, map entries sorted by key, so equal objects give equal bytes
and a rewrite of an unchanged object is visibly a no-op. Decoding ignores unknown fields and
enum values, so a controller can read what a newer one wrote.

`to_dict`/`from_dict` are the same mapping for humans: `from_dict` also accepts Go duration
strings ("15m") for the duration fields of objects.md §1.4, as the original's YAML does.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.objects.durations import format_duration, is_duration_field, parse_duration
from edge_cloud.objects.registry import ObjectType, descriptor_of

__all__ = ["decode", "encode", "from_dict", "to_dict"]

M = TypeVar("M", bound=Message)


def encode(obj: Message) -> bytes:
    """Encode an object as the JSON value stored in etcd.

    Args:
        obj: The object; it is not modified (its `fields` are dropped from a copy).

    Returns:
        Compact UTF-8 JSON.

    Raises:
        InvalidArgument: When a well-known type holds a value proto3 JSON cannot express,
            such as a `google.protobuf.Timestamp` with nanos outside 0..999999999 (Device
            and DeviceReport times come from DMEs).
    """
    msg = obj
    if _has_mask(descriptor_of(obj)) and len(cast("Any", obj).fields):
        msg = type(obj)()
        msg.CopyFrom(obj)
        msg.ClearField("fields")
    try:
        data = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    except json_format.SerializeToJsonError as err:
        raise InvalidArgument(f"cannot encode {descriptor_of(obj).full_name}: {err}") from err
    _sort_maps(descriptor_of(msg), data)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode(objtype: ObjectType[M] | type[M], data: bytes | str) -> M:
    """Decode a stored value.

    Args:
        objtype: The object type or message class.
        data: What `encode` wrote (or a newer version's encoding).

    Returns:
        A new message; unknown fields and enum names are skipped.

    Raises:
        EdgeError: When the bytes are not a JSON encoding of that type; stored data should
            never be, so this is an internal error naming the type.
    """
    cls = objtype.message if isinstance(objtype, ObjectType) else objtype
    msg = cls()
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        json_format.Parse(text, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, UnicodeDecodeError) as err:
        raise EdgeError(f"cannot decode stored {descriptor_of(cls).full_name}: {err}") from err
    return msg


def to_dict(obj: Message, *, durations_as_text: bool = False) -> dict[str, Any]:
    """A message as a plain dict for YAML or JSON output.

    Args:
        obj: Any message.
        durations_as_text: Show duration fields as Go duration text ("1h30m0s") instead of
            nanosecond counts.

    Returns:
        Proto3 JSON structure with original field names and enum names.
    """
    data = json_format.MessageToDict(obj, preserving_proto_field_name=True)
    _sort_maps(descriptor_of(obj), data)
    if durations_as_text:
        _map_durations(descriptor_of(obj), data, lambda v: format_duration(int(v)))
    return data


def from_dict(cls: type[M], data: Mapping[str, Any], *, ignore_unknown_fields: bool = False) -> M:
    """Build a message from a dict read from YAML or JSON.

    Args:
        cls: The message class.
        data: Field names as declared (or their lowerCamel JSON names); duration fields may
            be Go duration strings.
        ignore_unknown_fields: Skip names the message does not have instead of failing.

    Returns:
        The message.

    Raises:
        InvalidArgument: For unknown fields (unless ignored), wrong value types, unknown
            enum names and bad durations.
    """
    copied = copy.deepcopy(dict(data))
    _map_durations(descriptor_of(cls), copied, _duration_in)
    msg = cls()
    try:
        json_format.ParseDict(copied, msg, ignore_unknown_fields=ignore_unknown_fields)
    except json_format.ParseError as err:
        raise InvalidArgument(f"invalid {descriptor_of(cls).name}: {err}") from err
    return msg


def _has_mask(desc: Descriptor) -> bool:
    fields = desc.fields
    return bool(fields) and fields[0].name == "fields"


def _duration_in(value: Any) -> Any:
    """A duration string becomes nanoseconds; numbers (and numeric strings) pass through."""
    if isinstance(value, str) and not value.lstrip("+-").isdigit():
        return parse_duration(value)
    return value


def _sub_dicts(desc: Descriptor, data: dict[str, Any]) -> list[tuple[Descriptor, Any]]:
    """Each nested message dict in `data`, with its descriptor."""
    out: list[tuple[Descriptor, Any]] = []
    for field in desc.fields:
        mt = field.message_type
        if mt is None:
            continue
        value = _get(data, field)
        if value is None:
            continue
        if mt.GetOptions().map_entry:
            vt = mt.fields_by_name["value"].message_type
            if vt is not None and isinstance(value, dict):
                out.extend((vt, v) for v in value.values())
        elif field.is_repeated:
            if isinstance(value, list):
                out.extend((mt, v) for v in value)
        else:
            out.append((mt, value))
    return out


def _get(data: dict[str, Any], field: FieldDescriptor) -> Any:
    if field.name in data:
        return data[field.name]
    return data.get(field.json_name)


def _sort_maps(desc: Descriptor, data: Any) -> None:
    if not isinstance(data, dict):
        return
    for field in desc.fields:
        mt = field.message_type
        if mt is not None and mt.GetOptions().map_entry and field.name in data:
            data[field.name] = dict(sorted(data[field.name].items()))
    for sub_desc, sub in _sub_dicts(desc, data):
        _sort_maps(sub_desc, sub)


def _map_durations(desc: Descriptor, data: Any, fn: Callable[[Any], Any]) -> None:
    if not isinstance(data, dict):
        return
    for field in desc.fields:
        if field.message_type is None and is_duration_field(field):
            # a set: when the JSON name equals the proto name, convert the value only once
            for name in {field.name, field.json_name}:
                if name in data and data[name] is not None:
                    data[name] = fn(data[name])
    for sub_desc, sub in _sub_dicts(desc, data):
        _map_durations(sub_desc, sub, fn)
