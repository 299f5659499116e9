"""The `fields` update mask (objects.md §1.6): dotted paths of decimal field numbers.

Update requests say what they change with `fields`, e.g. `["5.1", "8"]` for a Cloudlet's
`location.latitude` and `num_dynamic_ips`. The entries are field numbers, not names, so
everything here walks descriptors; the original generated the same tables per message, and
deriving them keeps them right for every message at once.

Rules, as in the original:

- a listed path selects itself and every descendant; a listed descendant marks its ancestors
  as touched (`FieldSet.has` / `FieldSet.has_or_child`);
- paths go through repeated message fields to the element type (`9.1` is AppInst
  `mapped_ports[*].proto`) and through maps as `.1` key / `.2` value (`38.1`), yet lists and
  maps are applied as a whole;
- the first field of a message, when it is the `fields` mask itself, is never a path;
- key paths are ignored by updates.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from edge_cloud.errors import InvalidArgument
from edge_cloud.objects import registry
from edge_cloud.objects.gojson import go_field_name
from edge_cloud.objects.keys import key_json
from edge_cloud.objects.registry import AnyDescriptor, Identity, descriptor_of

__all__ = [
    "LIST_ACTIONS",
    "FieldPath",
    "FieldSet",
    "all_field_paths",
    "apply_fields",
    "check_updatable",
    "diff_fields",
    "field_path_ident",
    "field_path_name",
    "field_paths",
    "is_selected",
    "key_field_number",
    "set_fields",
]

LIST_ACTIONS: Final = ("add", "remove", "replace")
"""`App.update_list_action` values; anything else (the empty default too) means replace."""


@dataclass(frozen=True, slots=True)
class FieldPath:
    """One entry of a message's path table.

    Attributes:
        path: Dotted field numbers, `5.1`.
        ident: The original's constant suffix, `LocationLatitude`
            (`CloudletFieldLocationLatitude` in Go).
        name: The readable name the original puts in errors, `Location Latitude`.
        field: The descriptor of the last field on the path.
    """

    path: str
    ident: str
    name: str
    field: FieldDescriptor


class FieldSet:
    """A `fields` list with the original's ancestor and descendant rules (Go `FieldMap`)."""

    __slots__ = ("_fields", "_touched")

    def __init__(self, fields: Iterable[str]) -> None:
        self._fields = frozenset(fields)
        touched: set[str] = set()
        for path in self._fields:
            parts = path.split(".")
            touched.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
        self._touched = frozenset(touched)

    def has(self, path: str) -> bool:
        """Whether the path or one of its ancestors is listed: the field is selected."""
        while True:
            if path in self._fields:
                return True
            path, sep, _ = path.rpartition(".")
            if not sep:
                return False

    def has_or_child(self, path: str) -> bool:
        """Whether the path is selected or any descendant of it is listed: it is touched."""
        return path in self._touched or self.has(path)

    def __iter__(self) -> Iterator[str]:
        """The listed paths in Go's `sort.Strings` order (byte order: `10` before `2`)."""
        return iter(sorted(self._fields))

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, path: object) -> bool:
        return path in self._fields


def is_selected(path: str, fields: Iterable[str]) -> bool:
    """Whether an update mask touches a field: the path, an ancestor or a descendant is listed.

    Args:
        path: A field path, e.g. `5` for Cloudlet `location`.
        fields: The `fields` list; `["5.1"]`, `["5"]` and `["5.8.1"]` all touch `5`.

    Returns:
        True when the field is touched. Use `FieldSet.has` for "selected as a whole".
    """
    return FieldSet(fields).has_or_child(path)


def field_paths(descriptor: AnyDescriptor) -> Mapping[str, FieldPath]:
    """Every field path of a message with its names, in declaration order, parents first.

    Repeated messages are walked into their element type, maps into `1` (key) and `2`
    (value, and the value message's fields). A message type already being walked on the
    way down is not entered again, so recursive types end.

    Args:
        descriptor: The message descriptor.

    Returns:
        Path -> entry; the original's `<Msg>AllFieldsStringMap` plus constant names.
    """
    return _table(descriptor_of(descriptor))


@functools.cache
def _table(descriptor: Descriptor) -> Mapping[str, FieldPath]:
    table: dict[str, FieldPath] = {}
    _walk(descriptor, "", "", table, (descriptor.full_name,))
    return MappingProxyType(table)


def all_field_paths(descriptor: AnyDescriptor) -> tuple[str, ...]:
    """Every path to every leaf and intermediate field (the original's `<Msg>AllFields`).

    Args:
        descriptor: The message descriptor.

    Returns:
        Paths in declaration order, each parent before its children.
    """
    return tuple(field_paths(descriptor))


def field_path_name(descriptor: AnyDescriptor, path: str) -> str:
    """The readable name the original uses for a path in errors.

    Args:
        descriptor: The message the path belongs to.
        path: E.g. `5.1` of Cloudlet.

    Returns:
        `Location Latitude`; map parts read `Key`/`Value` (`Res Tag Map Value Name`).

    Raises:
        KeyError: When the message has no such path.
    """
    return _entry(descriptor, path).name


def field_path_ident(descriptor: AnyDescriptor, path: str) -> str:
    """The CamelCase name of a path, as in the original's `<Msg>Field<Ident>` constants.

    Args:
        descriptor: The message the path belongs to.
        path: E.g. `9.1` of AppInst.

    Returns:
        `MappedPortsProto` (`AppInstFieldMappedPortsProto` in Go).

    Raises:
        KeyError: When the message has no such path.
    """
    return _entry(descriptor, path).ident


def key_field_number(descriptor: AnyDescriptor) -> int | None:
    """The number of the field holding an object's identity, when updates must skip it.

    Args:
        descriptor: A message descriptor.

    Returns:
        The key (or key-string) field's number for registered object types with one,
        else None (Settings, AppInstClientKey and non-object messages).
    """
    objtype = registry.find(descriptor)
    if objtype is None or objtype.identity in (Identity.SINGLETON, Identity.SELF):
        return None
    field = objtype.key_field_descriptor
    return None if field is None else field.number


def check_updatable(
    fields: Iterable[str], allowed_paths: Iterable[str], descriptor: AnyDescriptor
) -> None:
    """Reject an update mask that names fields the type does not let users change.

    As in the original: key paths are skipped, a path is allowed when it or an ancestor is
    in `allowed_paths`, paths the message does not have are ignored, and the offending
    fields are listed in sorted path order by their readable names.

    Args:
        fields: The request's `fields`.
        allowed_paths: The type's updatable paths (a parent allows its children).
        descriptor: The object's message descriptor.

    Raises:
        InvalidArgument: `nothing specified to update` for an empty mask, or
            `specified field(s) State,Location Latitude cannot be modified`.
    """
    wanted = FieldSet(fields)
    if not wanted:
        raise InvalidArgument("nothing specified to update")
    allowed = FieldSet(allowed_paths)
    table = field_paths(descriptor)
    key_number = key_field_number(descriptor)
    key_path = None if key_number is None else str(key_number)
    bad = [
        table[path].name
        for path in wanted
        if path in table
        and not (key_path is not None and (path == key_path or path.startswith(key_path + ".")))
        and not allowed.has(path)
    ]
    if bad:
        raise InvalidArgument(f"specified field(s) {','.join(bad)} cannot be modified")


def apply_fields(
    dst: Message, src: Message, fields: Iterable[str], *, list_action: str = "replace"
) -> list[str]:
    """Copy the fields an update mask selects from `src` into `dst` (the original's CopyInFields).

    Singular fields are copied when selected; a selected message is copied whole (cleared
    when `src` lacks it), a message with only some descendants listed is walked into.
    Repeated and map fields are handled as a whole as soon as they are touched, following
    `list_action`: `replace` (default) takes `src`'s collection; `add` appends the entries
    `dst` lacks (map entries are set); `remove` drops the entries `src` lists (map keys).
    List entries are the same when their key is (GPUs by `model_id`, key messages by key
    string) or else when they are equal. The key field and the `fields` mask are never
    touched.

    Args:
        dst: The stored object, modified in place.
        src: The request.
        fields: The request's `fields`.
        list_action: How to apply lists and maps (App's `update_list_action`).

    Returns:
        The paths of the fields that actually changed, in declaration order; empty means
        nothing to write.

    Raises:
        TypeError: When `dst` and `src` are different message types.
    """
    desc = descriptor_of(dst)
    if descriptor_of(src).full_name != desc.full_name:
        raise TypeError(f"cannot apply a {descriptor_of(src).full_name} to a {desc.full_name}")
    key_number = key_field_number(desc)
    skip = frozenset() if key_number is None else frozenset({key_number})
    changed: list[str] = []
    action = list_action if list_action in LIST_ACTIONS else "replace"
    _apply(dst, src, FieldSet(fields), "", skip, action, changed)
    return changed


def diff_fields(old: Message, new: Message) -> list[str]:
    """The paths of the leaf fields whose values differ between two objects of one type.

    Singular messages are compared field by field (an absent and an empty message are the
    same); lists and maps are compared as a whole and reported by their own path. Feeding
    the result to `apply_fields` turns `old` into `new` (key aside).

    Args:
        old: One version.
        new: The other.

    Returns:
        Paths in declaration order; empty when the objects are equal.

    Raises:
        TypeError: When the two are different message types.
    """
    if descriptor_of(old).full_name != descriptor_of(new).full_name:
        raise TypeError(
            f"cannot diff {descriptor_of(old).full_name} with {descriptor_of(new).full_name}"
        )
    out: list[str] = []
    _diff(old, new, "", out)
    return out


def set_fields(obj: Message) -> list[str]:
    """The paths of every field that is not at its default: a `fields` list for a whole object.

    Clients that send a complete object instead of a mask use this; lists and maps count
    when non-empty and are named by their own path, messages are walked into.

    Args:
        obj: Any message.

    Returns:
        Leaf paths in declaration order; the `fields` mask itself never appears.
    """
    out: list[str] = []
    _set(obj, "", out)
    return out


# --- internals -----------------------------------------------------------------------------


def _entry(descriptor: AnyDescriptor, path: str) -> FieldPath:
    try:
        return field_paths(descriptor)[path]
    except KeyError:
        raise KeyError(f"{descriptor.full_name} has no field path {path!r}") from None


def _is_mask(index: int, field: FieldDescriptor) -> bool:
    """The original skips a message's first field when it is named `fields`."""
    return index == 0 and field.name == "fields"


def _fields(desc: Descriptor) -> Iterator[FieldDescriptor]:
    for i, field in enumerate(desc.fields):
        if not _is_mask(i, field):
            yield field


def _is_map(field: FieldDescriptor) -> bool:
    mt = field.message_type
    return mt is not None and mt.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def _walk(
    desc: Descriptor,
    prefix: str,
    ident: str,
    table: dict[str, FieldPath],
    stack: tuple[str, ...],
) -> None:
    for field in _fields(desc):
        path = f"{prefix}{field.number}"
        name = ident + go_field_name(field.name)
        table[path] = FieldPath(path, name, _readable(name), field)
        sub = field.message_type
        if sub is not None and sub.full_name not in stack:
            _walk(sub, path + ".", name, table, (*stack, sub.full_name))


def _readable(ident: str) -> str:
    """Split a CamelCase name before each capital, as the original's generator does."""
    words: list[str] = []
    start = 0
    for i in range(1, len(ident)):
        if ident[i].isupper():
            words.append(ident[start:i])
            start = i
    words.append(ident[start:])
    return " ".join(w for w in words if w)


def _same(a: Any, b: Any) -> bool:
    """Equality as protobuf sees it for floats: NaN equals NaN, -0.0 differs from 0.0.

    Without the first a NaN field would always count as changed; without the second a
    -0.0 (which proto3 writes, unlike 0.0) would never be copied.
    """
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


def _apply(
    dst: Message,
    src: Message,
    fs: FieldSet,
    prefix: str,
    skip: frozenset[int],
    action: str,
    changed: list[str],
) -> None:
    for field in _fields(descriptor_of(dst)):
        if field.number in skip:
            continue
        path = f"{prefix}{field.number}"
        if not fs.has_or_child(path):
            continue
        name = field.name
        if _is_repeated(field):
            if _apply_collection(dst, src, field, action):
                changed.append(path)
        elif field.message_type is not None:
            if fs.has(path):
                if src.HasField(name):
                    if not dst.HasField(name) or getattr(dst, name) != getattr(src, name):
                        getattr(dst, name).CopyFrom(getattr(src, name))
                        changed.append(path)
                elif dst.HasField(name):
                    dst.ClearField(name)
                    changed.append(path)
            else:
                _apply(
                    getattr(dst, name),
                    getattr(src, name),
                    fs,
                    path + ".",
                    frozenset(),
                    action,
                    changed,
                )
        elif fs.has(path):
            if field.containing_oneof is not None:
                if src.HasField(name):
                    if not dst.HasField(name) or not _same(getattr(dst, name), getattr(src, name)):
                        setattr(dst, name, getattr(src, name))
                        changed.append(path)
                elif dst.HasField(name):
                    dst.ClearField(name)
                    changed.append(path)
            elif not _same(getattr(dst, name), getattr(src, name)):
                setattr(dst, name, getattr(src, name))
                changed.append(path)


def _apply_collection(dst: Message, src: Message, field: FieldDescriptor, action: str) -> bool:
    """Apply one list or map whole; True when `dst` changed."""
    have = getattr(dst, field.name)
    want = getattr(src, field.name)
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        value_is_msg = entry.fields_by_name["value"].message_type is not None
        return _apply_map(have, want, action, value_is_msg=value_is_msg)
    is_msg = entry is not None
    if action == "replace":
        if _same_list(have, want):
            return False
        del have[:]
        have.extend(want)
        return True
    have_ids = [_identity(v) for v in have]
    if action == "add":
        added = False
        for value in want:
            ident = _identity(value)
            if ident in have_ids:
                continue
            if is_msg:
                have.add().CopyFrom(value)
            else:
                have.append(value)
            have_ids.append(ident)
            added = True
        return added
    drop = {_identity(v) for v in want}
    keep = [i for i, ident in enumerate(have_ids) if ident not in drop]
    if len(keep) == len(have_ids):
        return False
    for i in sorted(set(range(len(have_ids))) - set(keep), reverse=True):
        del have[i]
    return True


def _apply_map(have: Any, want: Any, action: str, *, value_is_msg: bool) -> bool:
    def put(k: Any, v: Any) -> bool:
        if k in have and _same(have[k], v):
            return False
        if value_is_msg:
            have[k].CopyFrom(v)
        else:
            have[k] = v
        return True

    if action == "remove":
        present = [k for k in want if k in have]
        for k in present:
            del have[k]
        return bool(present)
    if action == "add":
        results = [put(k, want[k]) for k in want]
        return any(results)
    if _same_map(have, want):
        return False
    have.clear()
    for k in want:
        put(k, want[k])
    return True


def _same_list(a: Any, b: Any) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))


def _same_map(a: Any, b: Any) -> bool:
    return len(a) == len(b) and all(k in a and _same(a[k], b[k]) for k in b)


def _identity(value: Any) -> Any:
    """What makes two list entries "the same one" for add and remove."""
    if not isinstance(value, Message):
        return value
    desc = descriptor_of(value)
    if desc.full_name == "edgeproto.GPUResource":
        return ("model_id", cast("Any", value).model_id)
    if registry.is_key_message(desc):
        return ("key", key_json(value))
    return ("msg", value.SerializeToString(deterministic=True))


def _diff(old: Message, new: Message, prefix: str, out: list[str]) -> None:
    for field in _fields(descriptor_of(old)):
        path = f"{prefix}{field.number}"
        a = getattr(old, field.name)
        b = getattr(new, field.name)
        if _is_repeated(field):
            same = _same_map(a, b) if _is_map(field) else _same_list(a, b)
            if not same:
                out.append(path)
        elif field.message_type is not None:
            _diff(a, b, path + ".", out)
        elif not _same(a, b):
            out.append(path)


def _set(obj: Message, prefix: str, out: list[str]) -> None:
    present = {field.number for field, _ in obj.ListFields()}
    for field in _fields(descriptor_of(obj)):
        if field.number not in present:
            continue
        path = f"{prefix}{field.number}"
        if not _is_repeated(field) and field.message_type is not None:
            _set(getattr(obj, field.name), path + ".", out)
        else:
            out.append(path)
