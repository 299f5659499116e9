"""Value encoding for etcd, and dict conversion for the CLI's YAML and JSON.

Values are proto3 JSON under the original proto field names, enums by name, the `fields`
mask dropped (it describes a request, never stored state). Output is compact and stable:
fields in field-number order, map entries sorted by key, so equal objects give equal bytes
and a rewrite of an unchanged object is visibly a no-op. Decoding ignores unknown fields and
enum values, so a controller can read what a newer one wrote.

Decoding also reads what the original Controller stored (controller.md §2.3: Go
`encoding/json` of its structs, with CamelCase enum names, `Udec64` numbers, RFC 3339
timestamps, duration text and nulls), so a database the original wrote loads as it is; what
we write does not change.

`to_dict`/`from_dict` are the same mapping for humans: `from_dict` also accepts Go duration
strings ("15m") for the duration fields of objects.md §1.4, as the original's YAML does.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar, cast

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.objects.durations import format_duration, is_duration_field, parse_duration
from edge_cloud.objects.gojson import (
    enum_from_go,
    enum_go_name,
    enum_json_name,
    timestamp_from_go,
    udec64_from_go,
)
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
    try:
        data = _fast_dict(obj, skip_mask=True)
    except (_Unsupported, ValueError, TypeError):
        data = _reference_dict(obj)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _reference_dict(obj: Message) -> dict[str, Any]:
    """What `encode` serializes, through json_format: the definition the fast path follows."""
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
    return data


def decode(objtype: ObjectType[M] | type[M], data: bytes | str) -> M:
    """Decode a stored value.

    Args:
        objtype: The object type or message class.
        data: What `encode` wrote (or a newer version's encoding), or what the original
            Controller stored for the same type (Go `encoding/json`).

    Returns:
        A new message; unknown fields and enum names are skipped.

    Raises:
        EdgeError: When the bytes are not a JSON encoding of that type; stored data should
            never be, so this is an internal error naming the type.
    """
    return _decode_new(objtype.message if isinstance(objtype, ObjectType) else objtype, data)


def _decode_new(cls: type[M], data: bytes | str) -> M:
    msg = cls()
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        loaded = _load_object(text)
        if loaded is not None:
            fast = _fast_from(cls, loaded)
            if fast is not None:
                return fast
            go = _go_build(cls, text, loaded)  # the original's encoding, or json_format's
            if go is not None:
                return go
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


# --- the fast JSON -> message path ------------------------------------------------------------
#
# `json_format.Parse` interprets every field through generic Python code; loading a database
# of 100,000 objects spends many seconds in it. What `encode` writes is a narrow subset of
# proto3 JSON: proto field names, enums by name, 64-bit integers as decimal strings, no
# nulls, no well-known types. For that subset the message constructor (C code) does the
# work: `json.loads`, then a pass over the few fields the constructor would read differently
# (64-bit integers from strings, integer map keys) or more leniently than json_format (a
# bool from 1, a repeated field from a string), then `cls(**data)`. Anything else (unknown
# or lowerCamel field names, unknown enum names, wrong JSON types, well-known types) makes
# the constructor or the pass refuse, and the caller parses with `json_format` from
# scratch: the result, errors included, is what `json_format` would have produced. One
# difference, for text `encode` never writes: a key repeated inside one JSON object keeps
# its last value instead of failing.

_Check = Callable[[dict[str, Any]], None]


class _Unsupported(Exception):
    """The value is outside the fast path's subset; parse it with json_format instead."""


def _fast_build(cls: type[M], text: str) -> M | None:
    """The message encoded by `text` if it is in the subset `encode` writes; else None."""
    data = _load_object(text)
    return None if data is None else _fast_from(cls, data)


def _load_object(text: str) -> dict[str, Any] | None:
    """The JSON object `text` holds; None for anything else (json_format reports it)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if type(data) is dict else None


def _fast_from(cls: type[M], data: dict[str, Any]) -> M | None:
    """`_fast_build` from the decoded JSON object.

    When it refuses, `data` may be partly converted for the constructor; the pass can run on
    it again (each step takes its own output), which `_go_build` relies on.
    """
    try:
        _check(cls.DESCRIPTOR)(data)
        return cls(**data)
    except (_Unsupported, ValueError, TypeError, OverflowError, RecursionError):
        return None


def _no_check(data: dict[str, Any]) -> None:
    return None


@functools.cache
def _check(desc: Descriptor) -> _Check:
    """The pass that makes a decoded JSON object of `desc` fit the constructor, in place."""
    steps = [step for f in desc.fields if (step := _field_step(f)) is not None]
    if desc.oneofs or desc.full_name.startswith("google.protobuf."):
        steps = [_refuse_all]  # oneof exclusivity, well-known JSON forms: json_format
    if not steps:
        return _no_check

    def check(data: dict[str, Any]) -> None:
        for step in steps:
            step(data)

    return check


def _present(data: dict[str, Any], name: str) -> Any:
    """The field's value, None if it is absent; an explicit null is for json_format to judge."""
    value = data.get(name)
    if value is None and name in data:
        raise _Unsupported
    return value


def _refuse_all(data: dict[str, Any]) -> None:
    raise _Unsupported


def _field_step(field: FieldDescriptor) -> _Check | None:
    """What one field's value needs before the constructor takes it (None: nothing)."""
    name = field.name
    mt = field.message_type
    if mt is not None and mt.GetOptions().map_entry:
        return _map_step(field)
    if field.is_repeated:
        if mt is not None:
            inner = _message_step(field)

            def messages(data: dict[str, Any]) -> None:
                value = _present(data, name)
                if value is None:
                    return
                if type(value) is not list:
                    raise _Unsupported
                for item in value:
                    if type(item) is not dict:
                        raise _Unsupported
                    inner(item)

            return messages
        convert = _scalar_fix(field)

        def scalars(data: dict[str, Any]) -> None:
            value = _present(data, name)
            if value is None:
                return
            if type(value) is not list:
                raise _Unsupported  # a string would be split into characters
            if convert is not None:
                data[name] = [convert(v) for v in value]

        return scalars
    if mt is not None and mt.full_name == "google.protobuf.Timestamp":
        return _timestamp_step(name)
    if mt is not None:
        inner = _message_step(field)

        def message(data: dict[str, Any]) -> None:
            value = _present(data, name)
            if value is None:
                return
            if type(value) is not dict:
                raise _Unsupported
            inner(value)

        return message
    fix = _scalar_fix(field)
    if fix is None:
        return None

    def scalar(data: dict[str, Any]) -> None:
        value = _present(data, name)
        if value is None:
            return
        data[name] = fix(value)

    return scalar


def _timestamp_step(name: str) -> _Check:
    """RFC 3339 text → a Timestamp, as json_format reads it (DMEs' device times)."""

    def timestamp(data: dict[str, Any]) -> None:
        value = _present(data, name)
        if value is None or type(value) is timestamp_pb2.Timestamp:
            return  # unset, or converted by an earlier pass over the same object
        if type(value) is not str:
            raise _Unsupported
        stamp = timestamp_pb2.Timestamp()
        stamp.FromJsonString(value)
        data[name] = stamp

    return timestamp


def _message_step(field: FieldDescriptor) -> _Check:
    mt = field.message_type
    assert mt is not None  # noqa: S101 - a message field's type
    return _check(mt)


def _map_step(field: FieldDescriptor) -> _Check:
    name = field.name
    entry = field.message_type
    assert entry is not None  # noqa: S101 - a map field's entry type
    key_field = entry.fields_by_name["key"]
    value_field = entry.fields_by_name["value"]
    if key_field.cpp_type in _INT_TYPES:
        fix_key: Callable[[Any], Any] | None = _to_int  # JSON object keys are decimal strings
    elif key_field.type == FieldDescriptor.TYPE_STRING:
        fix_key = None
    else:
        return _refuse_all  # bool keys: json_format's "true"/"false" rules
    vt = value_field.message_type
    inner = None if vt is None else _check(vt)
    fix_value = None if vt is not None else _scalar_fix(value_field)

    def map_value(data: dict[str, Any]) -> None:
        value = _present(data, name)
        if value is None:
            return
        if type(value) is not dict:
            raise _Unsupported
        if inner is not None:
            for v in value.values():
                if type(v) is not dict:
                    raise _Unsupported
                inner(v)
        if fix_key is not None or fix_value is not None:
            data[name] = {
                (k if fix_key is None else fix_key(k)): (v if fix_value is None else fix_value(v))
                for k, v in value.items()
            }
        elif None in value.values():
            raise _Unsupported

    return map_value


_INT_TYPES: Final = frozenset(
    {
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
    }
)


def _scalar_fix(field: FieldDescriptor) -> Callable[[Any], Any] | None:
    """The conversion or check one scalar value needs; None when the constructor agrees.

    The constructor itself refuses, as json_format does, strings for numbers and bools,
    numbers for strings, booleans for integers and unknown enum names; it accepts what
    these functions rule out.
    """
    cpp = field.cpp_type
    if cpp in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64):
        return _to_int  # written as decimal strings
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return _to_bool  # the constructor would take 0 and 1
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return _to_double  # the constructor would take booleans
    if cpp == FieldDescriptor.CPPTYPE_FLOAT or field.type == FieldDescriptor.TYPE_BYTES:
        return _unsupported_value  # json_format's float range checks and base64
    return None  # strings, enums, 32-bit integers: the constructor decides as json_format


def _unsupported_value(value: Any) -> Any:
    raise _Unsupported


def _to_int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        return int(value)
    if kind is str and (value.isdigit() or (value[:1] == "-" and value[1:].isdigit())):
        return int(value)
    raise _Unsupported


def _to_str(value: Any) -> str:
    if type(value) is str:
        return str(value)
    raise _Unsupported


def _to_bool(value: Any) -> bool:
    if type(value) is bool:
        return bool(value)
    raise _Unsupported


def _to_double(value: Any) -> float:
    kind = type(value)
    if (kind is float and math.isfinite(value)) or kind is int:
        return float(value)
    raise _Unsupported  # "NaN", "Infinity" and the like: json_format


# --- the fast message -> JSON path ------------------------------------------------------------
#
# The mirror image of the fast decode: `json_format.MessageToDict` plus `_sort_maps`, with a
# converter per field compiled once per message type, for the kinds stored objects use.
# Anything else (bytes, 32-bit floats, NaN and infinities, well-known types) raises
# `_Unsupported` and the whole object goes through `_reference_dict` instead.

_Dumper = Callable[[Any], Any]


def _fast_dict(msg: Message, *, skip_mask: bool = False) -> dict[str, Any]:
    dumpers = _dumpers(msg.DESCRIPTOR)
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():  # field-number order, as json_format's
        name, dump = dumpers[field.number]
        if skip_mask and field.number == 1 and name == "fields":
            continue  # a request's update mask is never stored
        out[name] = dump(value)
    return out


@functools.cache
def _dumpers(desc: Descriptor) -> dict[int, tuple[str, _Dumper]]:
    if desc.full_name.startswith("google.protobuf."):
        return {f.number: (f.name, _unsupported_value) for f in desc.fields}
    return {f.number: (f.name, _dumper(f)) for f in desc.fields}


def _dumper(field: FieldDescriptor) -> _Dumper:
    mt = field.message_type
    if mt is not None and mt.GetOptions().map_entry:
        key_field = mt.fields_by_name["key"]
        dump_value = _value_dumper(mt.fields_by_name["value"])
        if key_field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:

            def bool_key(key: Any) -> str:
                return "true" if key else "false"

            dump_key: Callable[[Any], str] = bool_key
        else:
            dump_key = str

        def dump_map(value: Any) -> dict[str, Any]:
            return dict(sorted((dump_key(k), dump_value(v)) for k, v in value.items()))

        return dump_map
    dump = _value_dumper(field)
    if field.is_repeated:

        def dump_list(value: Any) -> list[Any]:
            return [dump(v) for v in value]

        return dump_list
    return dump


def _value_dumper(field: FieldDescriptor) -> _Dumper:
    """One value of a field (an element, for repeated fields and map values)."""
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_MESSAGE:
        mt = field.message_type
        assert mt is not None  # noqa: S101 - a message field's type
        if mt.full_name.startswith("google.protobuf."):
            return _unsupported_value
        return _flat_string_dumper(mt) or _fast_dict
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        enum_type = field.enum_type
        assert enum_type is not None  # noqa: S101 - an enum field's type
        if enum_type.full_name.startswith("google.protobuf.") or enum_type.is_closed:
            return _unsupported_value
        names = {number: value.name for number, value in enum_type.values_by_number.items()}

        def dump_enum(value: Any) -> Any:
            return names.get(value, value)  # an unknown number of an open enum: the number

        return dump_enum
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        return _unsupported_value if field.type == FieldDescriptor.TYPE_BYTES else _same
    if cpp in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64):
        return str
    if cpp in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32):
        return _same
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return _same
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return _finite
    return _unsupported_value  # 32-bit floats: json_format's shortest-repr rounding


def _flat_string_dumper(desc: Descriptor) -> _Dumper | None:
    """A faster dumper for messages of plain strings only (most keys), else None.

    Refs objects hold long lists of keys; for such a message the fields `ListFields` would
    report are exactly its non-empty strings, in field-number order.
    """
    fields = sorted(desc.fields, key=lambda f: f.number)
    if not fields or any(
        f.type != FieldDescriptor.TYPE_STRING or f.is_repeated or f.has_presence for f in fields
    ):
        return None
    names = tuple(f.name for f in fields)

    def dump_strings(msg: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in names:
            value = getattr(msg, name)
            if value:
                out[name] = value
        return out

    return dump_strings


def _same(value: Any) -> Any:
    return value


def _finite(value: Any) -> Any:
    if math.isfinite(value):
        return value
    raise _Unsupported  # "NaN", "Infinity", "-Infinity": json_format


# --- the original's encoding -> proto3 JSON ---------------------------------------------------
#
# The original Controller stores Go `encoding/json` of its structs (controller.md §2.3). That
# differs from proto3 JSON in a few value forms only: enums by CamelCase name with the common
# prefix trimmed ("Docker"), `Udec64` as a number or decimal string (4, "0.5"), its
# `distributed_match_engine.Timestamp` as RFC 3339 text ("" when zero), gogo's
# `google.protobuf.Timestamp` as a {"seconds","nanos"} object, durations as Go text
# ("30m0s") and null for empty lists and maps. The fast path refuses all of these; then
# `_from_go` rewrites them, in place, into the proto3 JSON forms and the fast path (or, for
# anything else it refuses, json_format) reads the result. A value that is neither form is
# left as it is, for json_format to report.

_Fix = Callable[[Any], Any]
"""One value's rewrite: the new value, `_SAME` (nothing to change) or `_DROP` (unset)."""
_SAME: Final = object()
_DROP: Final = object()
_DECIMAL: Final = re.compile(r"[+-]?[0-9]+")


def _go_build(cls: type[M], text: str, data: dict[str, Any]) -> M | None:
    """The message `text` encodes if it holds forms of the original's; else None.

    `data` is `text` loaded, as the refused fast pass left it. None means json_format
    decides alone (nothing needed rewriting), so its errors stay what they were.
    """
    desc = descriptor_of(cls)
    try:
        if not _from_go(desc, data):
            return None
        fast = _fast_from(cls, data)
        if fast is not None:
            return fast
        data = json.loads(text)  # the refused attempt may have converted part of it
        _from_go(desc, data)
    except RecursionError:
        return None
    msg = cls()
    json_format.ParseDict(data, msg, ignore_unknown_fields=True)
    return msg


def _from_go(desc: Descriptor, data: dict[str, Any]) -> bool:
    """Rewrite the original's value forms in one JSON object of `desc`; whether any were."""
    fixes = _go_fixes(desc)
    changed = False
    for name, value in list(data.items()):
        fix = fixes.get(name)
        if fix is None or value is None:
            # a name this version does not know (json_format would skip it), or Go's nil
            # slice, map or pointer (the field is unset): the constructor takes neither
            del data[name]
            changed = True
            continue
        new = fix(value)
        if new is _SAME:
            continue
        changed = True
        if new is _DROP:
            del data[name]
        else:
            data[name] = new
    return changed


@functools.cache
def _go_fixes(desc: Descriptor) -> dict[str, _Fix]:
    """Each field's rewrite, under its proto and its lowerCamel JSON name."""
    fixes: dict[str, _Fix] = {}
    for field in desc.fields:
        fix = _go_field_fix(field)
        fixes[field.name] = fixes[field.json_name] = fix
    return fixes


def _go_field_fix(field: FieldDescriptor) -> _Fix:
    mt = field.message_type
    if mt is not None and mt.GetOptions().map_entry:
        value_fix = _go_value_fix(mt.fields_by_name["value"])
        return _keep if value_fix is _keep else _each_value(value_fix)
    fix = _go_value_fix(field)
    if field.is_repeated:
        return _keep if fix is _keep else _each_item(fix)
    return fix


def _go_value_fix(field: FieldDescriptor) -> _Fix:
    """The rewrite of one value of a field (an element, for lists and maps)."""
    mt = field.message_type
    if mt is not None:
        if mt.full_name == "edgeproto.Udec64":
            return _udec64
        if mt.full_name == "distributed_match_engine.Timestamp":
            return _dme_timestamp
        if mt.full_name == "google.protobuf.Timestamp":
            return _google_timestamp
        if mt.full_name.startswith("google.protobuf."):
            return _keep
        return _message_fix(mt)
    if field.enum_type is not None:
        return _enum_fix(field.enum_type)
    if is_duration_field(field):
        return _duration
    return _keep


def _keep(value: Any) -> Any:
    return _SAME


def _message_fix(desc: Descriptor) -> _Fix:
    def message(value: Any) -> Any:
        # looked up per call, not while building: message types may nest themselves
        if type(value) is dict and _from_go(desc, value):
            return value
        return _SAME

    return message


def _each_item(fix: _Fix) -> _Fix:
    def items(value: Any) -> Any:
        if type(value) is not list:
            return _SAME
        changed = False
        for i, item in enumerate(value):
            new = _SAME if item is None else fix(item)
            if new is not _SAME:
                value[i] = {} if new is _DROP else new  # a list keeps its length
                changed = True
        return value if changed else _SAME

    return items


def _each_value(fix: _Fix) -> _Fix:
    def values(value: Any) -> Any:
        if type(value) is not dict:
            return _SAME
        changed = False
        for key, item in value.items():
            new = _SAME if item is None else fix(item)
            if new is not _SAME:
                value[key] = {} if new is _DROP else new
                changed = True
        return value if changed else _SAME

    return values


def _enum_fix(enum: EnumDescriptor) -> _Fix:
    """CamelCase names ("LoadBalancer", "ImageTypeDocker") and "7" → the number.

    Proto names stay as they are; a name neither form knows is left for json_format,
    which skips it (a newer version's value).
    """
    proto_names = frozenset(enum.values_by_name)
    spelled: dict[str, int] = {}
    for value in enum.values:
        spelled.setdefault(enum_json_name(enum, value.number), value.number)
        spelled.setdefault(enum_go_name(enum, value.number), value.number)

    def enum_value(value: Any) -> Any:
        if type(value) is not str or value in proto_names:
            return _SAME
        number = spelled.get(value)
        if number is not None:
            return number
        try:
            return enum_from_go(enum, value)  # other spellings the original's parser takes
        except ValueError:
            pass
        if _DECIMAL.fullmatch(value):
            return int(value)  # how Go writes a value its enum does not define
        return _SAME

    return enum_value


def _udec64(value: Any) -> Any:
    if type(value) is dict:
        return _SAME
    try:
        whole, nanos = udec64_from_go(value)
    except ValueError:
        return _SAME
    return {"whole": whole, "nanos": nanos}


def _dme_timestamp(value: Any) -> Any:
    if type(value) is not str:
        return _SAME  # {"seconds","nanos"}: the proto3 form, which Go also reads
    try:
        stamp = timestamp_from_go(value)
    except ValueError:
        return _SAME
    if stamp is None:
        return _DROP
    return {"seconds": stamp[0], "nanos": stamp[1]}


def _google_timestamp(value: Any) -> Any:
    """Read a Timestamp gogo wrote: it has no JSON marshaler, so Go writes the struct."""
    if type(value) is str:
        return _DROP if not value.strip() else _SAME
    if type(value) is not dict or not set(value) <= {"seconds", "nanos"}:
        return _SAME
    seconds, nanos = value.get("seconds", 0), value.get("nanos", 0)
    try:
        stamp = timestamp_pb2.Timestamp(seconds=_to_int(seconds), nanos=_to_int(nanos))
        return stamp.ToJsonString()
    except (_Unsupported, ValueError, TypeError, OverflowError):
        return _SAME


def _duration(value: Any) -> Any:
    if type(value) is not str or _DECIMAL.fullmatch(value):
        return _SAME
    try:
        return parse_duration(value)
    except ValueError:
        return _SAME
