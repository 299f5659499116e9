"""The Controller API as the `edge ctl` command sees it, derived from the proto descriptors.

Every `<Object>Api` service of package `edgeproto` becomes an object (`flavor`, `appinst`),
every method a verb: the method name without the object name, lower-cased (`CreateFlavor`
-> `create`, `AddFlavorRes` -> `addres`). Arguments are `path=value` pairs over the request
message, with dotted paths into nested messages and maps, short aliases derived from the key
message (`name=` -> `key.name`, `cloudlet=` -> `cloudlet_key.name`) and values parsed by
field type (enums by name, Go durations, bools, comma lists). Nothing here is written per
object type, so a new RPC or field is covered as soon as it is in the protos.
"""

from __future__ import annotations

import functools
import importlib
import json
import pkgutil
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import edgeproto
from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message

from edge_cloud.errors import InvalidArgument
from edge_cloud.objects import codec
from edge_cloud.objects import fields as field_masks
from edge_cloud.objects.durations import is_duration_field, parse_duration
from edge_cloud.objects.gojson import enum_common_prefix
from edge_cloud.objects.registry import descriptor_of

__all__ = [
    "Arguments",
    "ObjectApi",
    "Verb",
    "apis",
    "enum_short_names",
    "enum_value",
    "field_help",
    "find_api",
    "normalize_dict",
    "parse_assignments",
]

INTERNAL_MODULES: Final = frozenset({"ccrm_pb2", "notice_pb2"})
"""Internal services (CCRM, notify) that are no user API."""

_T = FieldDescriptor
_INT_TYPES: Final = frozenset(
    {
        _T.TYPE_INT32,
        _T.TYPE_INT64,
        _T.TYPE_UINT32,
        _T.TYPE_UINT64,
        _T.TYPE_SINT32,
        _T.TYPE_SINT64,
        _T.TYPE_FIXED32,
        _T.TYPE_FIXED64,
        _T.TYPE_SFIXED32,
        _T.TYPE_SFIXED64,
    }
)
_FLOAT_TYPES: Final = frozenset({_T.TYPE_DOUBLE, _T.TYPE_FLOAT})
_TRUE: Final = frozenset({"true", "t", "yes", "y", "1", "on"})
_FALSE: Final = frozenset({"false", "f", "no", "n", "0", "off"})

# Key messages referenced from other objects, and the short names they get on the command
# line: `cloudlet=paris cloudlet-org=op` for a `cloudlet_key` field.
_REF_KEYS: Final[dict[str, str]] = {
    "edgeproto.CloudletKey": "cloudlet",
    "edgeproto.ZoneKey": "zone",
    "edgeproto.AppKey": "app",
    "edgeproto.ClusterKey": "cluster",
    "edgeproto.AppInstKey": "appinst",
    "edgeproto.FlavorKey": "flavor",
    "edgeproto.ZonePoolKey": "zonepool",
    "edgeproto.PolicyKey": "policy",
    "edgeproto.VMPoolKey": "vmpool",
    "edgeproto.GPUDriverKey": "gpudriver",
}
_REF_SUFFIX: Final[dict[str, tuple[str, ...]]] = {
    "name": ("",),
    "organization": ("-org", "org"),
    "version": ("-vers", "vers", "-version"),
    "federated_organization": ("-fedorg",),
}


@dataclass(frozen=True)
class Verb:
    """One RPC as a verb of an object.

    Attributes:
        name: The verb on the command line (`create`, `addres`).
        method: The method descriptor.
        path: The gRPC method path, `/edgeproto.FlavorApi/CreateFlavor`.
        request: The request message class.
        response: The response message class.
        streaming: The server streams its replies.
    """

    name: str
    method: MethodDescriptor
    path: str
    request: type[Message]
    response: type[Message]
    streaming: bool

    @property
    def is_update(self) -> bool:
        """Update verbs get a `fields` mask computed from the arguments."""
        return self.method.name.startswith("Update")


@dataclass(frozen=True)
class ObjectApi:
    """One `<Object>Api` service as an object of the command line.

    Attributes:
        name: The object on the command line (`flavor`, `appinst`).
        object_name: The service name without `Api` (`Flavor`, `AppInst`).
        service: The service descriptor.
        verbs: Verb name -> verb, in declaration order.
    """

    name: str
    object_name: str
    service: ServiceDescriptor
    verbs: Mapping[str, Verb] = field(default_factory=dict)


def _verb_name(object_name: str, method_name: str) -> str:
    short = method_name.replace(object_name, "", 1) if object_name in method_name else method_name
    return (short or method_name).lower()


def _services() -> Iterator[ServiceDescriptor]:
    for info in sorted(pkgutil.iter_modules(edgeproto.__path__), key=lambda m: m.name):
        if not info.name.endswith("_pb2") or info.name in INTERNAL_MODULES:
            continue
        module = importlib.import_module(f"edgeproto.{info.name}")
        yield from module.DESCRIPTOR.services_by_name.values()


@functools.cache
def apis() -> Mapping[str, ObjectApi]:
    """Every user-facing object of the Controller API, by command-line name.

    Returns:
        `flavor` -> its verbs, for every `edgeproto` service except the internal ones
        (notify, CCRM); client-streaming methods are left out.
    """
    out: dict[str, ObjectApi] = {}
    for service in _services():
        object_name = service.name.removesuffix("Api").removesuffix("API")
        verbs: dict[str, Verb] = {}
        for method in service.methods:
            if method.client_streaming:
                continue
            name = _verb_name(object_name, method.name)
            if name in verbs:
                name = method.name.lower()
            verbs[name] = Verb(
                name=name,
                method=method,
                path=f"/{service.full_name}/{method.name}",
                request=message_factory.GetMessageClass(method.input_type),
                response=message_factory.GetMessageClass(method.output_type),
                streaming=bool(method.server_streaming),
            )
        if verbs:
            out[object_name.lower()] = ObjectApi(object_name.lower(), object_name, service, verbs)
    return dict(sorted(out.items()))


def _norm(text: str) -> str:
    return text.replace("-", "").replace("_", "").lower()


def find_api(name: str) -> ObjectApi | None:
    """Look an object up by name, ignoring case, dashes and underscores (`app-inst`)."""
    table = apis()
    if name in table:
        return table[name]
    wanted = _norm(name)
    return next((api for key, api in table.items() if _norm(key) == wanted), None)


# --- arguments -----------------------------------------------------------------------------


@dataclass
class Arguments:
    """The request built from `path=value` arguments.

    Attributes:
        message: The request message.
        paths: Numeric field paths (objects.md §1.6) of what the arguments set, in order.
    """

    message: Message
    paths: list[str]


def _is_map(fd: FieldDescriptor) -> bool:
    mt = fd.message_type
    return mt is not None and bool(mt.GetOptions().map_entry)


def _key_message_field(desc: Descriptor) -> FieldDescriptor | None:
    """The `key` field of an object (or `client_key`), when it is a message."""
    for name in ("key", "client_key"):
        fd = desc.fields_by_name.get(name)
        if fd is not None and fd.message_type is not None and not fd.is_repeated:
            return fd
    return None


def _ref_aliases(prefix: str, key_desc: Descriptor, word: str, out: dict[str, str]) -> None:
    for sub in key_desc.fields:
        for suffix in _REF_SUFFIX.get(sub.name, ()):
            out.setdefault(f"{word}{suffix}", f"{prefix}{sub.name}")


@functools.cache
def aliases(desc: Descriptor) -> Mapping[str, str]:
    """Short argument names of a request message and the dotted paths they stand for.

    Derived from the key: each key field by its own name (`name`, `organization`) and `org`;
    key messages inside the key or the message (`cloudlet_key`, `app_key`) by the object
    they name: `cloudlet`, `cloudlet-org`, `app`, `app-org`, `app-vers`. A message that is
    itself a key message (`CloudletKey` for RefreshCerts) gets the same from its fields.

    Args:
        desc: The request message descriptor.

    Returns:
        Alias -> dotted name path; real top-level field names never appear as aliases.
    """
    out: dict[str, str] = {}
    own = _REF_KEYS.get(desc.full_name)
    if own is not None:
        _ref_aliases("", desc, own, out)
    key = _key_message_field(desc)
    if key is not None and key.message_type is not None:
        kdesc = key.message_type
        word = _REF_KEYS.get(kdesc.full_name)
        if word is not None:
            _ref_aliases(f"{key.name}.", kdesc, word, out)
        for sub in kdesc.fields:
            if sub.message_type is None:
                out.setdefault(sub.name, f"{key.name}.{sub.name}")
            else:
                subword = _REF_KEYS.get(sub.message_type.full_name)
                if subword is not None:
                    _ref_aliases(f"{key.name}.{sub.name}.", sub.message_type, subword, out)
        if "organization" in kdesc.fields_by_name:
            out.setdefault("org", f"{key.name}.organization")
        if "version" in kdesc.fields_by_name:
            out.setdefault("vers", f"{key.name}.version")
    elif "organization" in desc.fields_by_name:
        out.setdefault("org", "organization")
    for fd in desc.fields:
        mt = fd.message_type
        if mt is None or fd.is_repeated or fd is key:
            continue
        word = _REF_KEYS.get(mt.full_name)
        if word is not None:
            _ref_aliases(f"{fd.name}.", mt, word, out)
    return {k: v for k, v in out.items() if k not in desc.fields_by_name}


def enum_value(enum: EnumDescriptor, text: str) -> int:
    """Parse an enum value: its name in any case, with or without the common prefix.

    `docker`, `Docker`, `IMAGE_TYPE_DOCKER` and `image-type-docker` all name
    `IMAGE_TYPE_DOCKER`; a unique abbreviation (`dock`) and the number work too.

    Args:
        enum: The enum descriptor.
        text: What the user wrote.

    Returns:
        The value's number.

    Raises:
        InvalidArgument: Naming the valid values.
    """
    wanted = _norm(text)
    prefix = _norm(enum_common_prefix(enum))
    names: dict[str, int] = {}
    for value in enum.values:
        full = _norm(value.name)
        names[full] = value.number
        if prefix and full.startswith(prefix) and full != prefix:
            names.setdefault(full[len(prefix) :], value.number)
    if wanted in names:
        return names[wanted]
    if re.fullmatch(r"[+-]?[0-9]+", text.strip()) and int(text) in enum.values_by_number:
        return int(text)
    matches = {n for name, n in names.items() if wanted and name.startswith(wanted)}
    if len(matches) == 1:
        return matches.pop()
    valid = ", ".join(v.name for v in enum.values)
    raise InvalidArgument(f"invalid {enum.name} value {text!r}: one of {valid}")


def _scalar(fd: FieldDescriptor, text: str, where: str) -> Any:
    try:
        if fd.enum_type is not None:
            return enum_value(fd.enum_type, text)
        kind = fd.type
        if kind == _T.TYPE_BOOL:
            low = text.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise InvalidArgument(f"{where}: {text!r} is not a bool (true or false)")
        if kind in _INT_TYPES:
            stripped = text.strip()
            if is_duration_field(fd) and not re.fullmatch(r"[+-]?[0-9]+", stripped):
                return parse_duration(stripped)
            return int(stripped, 0)
        if kind in _FLOAT_TYPES:
            return float(text)
        if kind == _T.TYPE_BYTES:
            return text.encode()
        return text
    except ValueError as err:
        raise InvalidArgument(f"{where}: {err}") from err


def _split_list(text: str) -> list[str]:
    return [part for part in (p.strip() for p in text.split(",")) if part]


def _map_key(fd: FieldDescriptor, text: str, where: str) -> Any:
    mt = fd.message_type
    assert mt is not None  # noqa: S101 -- only called for map fields
    return _scalar(mt.fields_by_name["key"], text, where)


def _field(desc: Descriptor, name: str, where: str) -> FieldDescriptor:
    fd = desc.fields_by_name.get(name) or desc.fields_by_name.get(name.replace("-", "_"))
    if fd is None:
        for cand in desc.fields:
            if cand.json_name == name or _norm(cand.name) == _norm(name):
                return cand
        raise InvalidArgument(f"{where}: {desc.name} has no field {name!r}")
    return fd


def _from_json(text: str, where: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidArgument(f"{where}: not JSON: {err}") from err
    return data


def _message_from_json(mt: Descriptor, data: Any, where: str) -> Message:
    if not isinstance(data, dict):
        raise InvalidArgument(f"{where}: expected a JSON object")
    cls: type[Message] = message_factory.GetMessageClass(mt)
    return codec.from_dict(cls, normalize_dict(mt, data))


def _assign(
    msg: Message, parts: Sequence[str], value: str, where: str, numbers: list[str]
) -> list[str]:
    """Set one dotted path in `msg`; returns the numeric path of the field set."""
    desc = descriptor_of(msg)
    fd = _field(desc, parts[0], where)
    numbers = [*numbers, str(fd.number)]
    rest = parts[1:]
    target: Any = msg
    if _is_map(fd):
        container = getattr(target, fd.name)
        mt = fd.message_type
        assert mt is not None  # noqa: S101 -- a map field has an entry type
        vfd = mt.fields_by_name["value"]
        if not rest:
            if value.lstrip().startswith("{"):
                for k, v in _from_json(value, where).items():
                    key = _map_key(fd, str(k), where)
                    if vfd.message_type is not None:
                        container[key].CopyFrom(_message_from_json(vfd.message_type, v, where))
                    else:
                        container[key] = _scalar(vfd, str(v), where)
                return numbers
            raise InvalidArgument(f"{where}: {fd.name} is a map: use {fd.name}.KEY=VALUE")
        if vfd.message_type is None:  # plain values: the key may hold dots (a.b/c=v)
            container[_map_key(fd, ".".join(rest), where)] = _scalar(vfd, value, where)
            return numbers
        key = _map_key(fd, rest[0], where)
        if len(rest) == 1:
            container[key].CopyFrom(
                _message_from_json(vfd.message_type, _from_json(value, where), where)
            )
        else:
            _assign(container[key], rest[1:], value, where, [])
        return numbers
    if fd.is_repeated:
        container = getattr(target, fd.name)
        if fd.message_type is None:
            if rest:
                raise InvalidArgument(f"{where}: {fd.name} is a list of plain values")
            container.extend(_scalar(fd, v, where) for v in _split_list(value))
            return numbers
        if not rest:
            data = _from_json(value, where)
            items = data if isinstance(data, list) else [data]
            for item in items:
                container.add().CopyFrom(_message_from_json(fd.message_type, item, where))
            return numbers
        if not rest[0].isdigit():
            raise InvalidArgument(
                f"{where}: {fd.name} is a list: use {fd.name}.INDEX.FIELD=VALUE (from 0)"
            )
        index = int(rest[0])
        if index > len(container):
            raise InvalidArgument(f"{where}: {fd.name} index {index} skips entries")
        element = container[index] if index < len(container) else container.add()
        if len(rest) == 1:
            element.CopyFrom(_message_from_json(fd.message_type, _from_json(value, where), where))
        else:
            _assign(element, rest[1:], value, where, [])
        return numbers
    if fd.message_type is not None:
        sub = getattr(target, fd.name)
        if not rest:
            if value.lstrip().startswith("{"):
                sub.CopyFrom(_message_from_json(fd.message_type, _from_json(value, where), where))
                return numbers
            raise InvalidArgument(f"{where}: {fd.name} is a message: use {fd.name}.FIELD=VALUE")
        return _assign(sub, rest, value, where, numbers)
    if rest:
        raise InvalidArgument(f"{where}: {fd.name} has no sub-fields")
    setattr(target, fd.name, _scalar(fd, value, where))
    return numbers


def parse_assignments(
    cls: type[Message], assignments: Iterable[str], *, update_mask: bool = False
) -> Arguments:
    """Build a request from `path=value` arguments.

    Args:
        cls: The request message class.
        assignments: `key.name=x`, `name=x` (alias), `tags=a,b`, `labels.k=v`,
            `location={"latitude": 1}` (JSON for a whole message, list or map).
        update_mask: Fill the request's `fields` with the numeric paths the arguments set
            (key paths left out), unless `fields=` was given explicitly.

    Returns:
        The request and the numeric paths set.

    Raises:
        InvalidArgument: For a malformed argument, an unknown field or a bad value; the
            message names the argument.
    """
    msg = cls()
    desc = descriptor_of(cls)
    alias = aliases(desc)
    paths: list[str] = []
    explicit_mask = False
    for arg in assignments:
        name, sep, value = arg.partition("=")
        if not sep or not name:
            raise InvalidArgument(f"argument {arg!r} is not FIELD=VALUE")
        first, dot, rest = name.partition(".")
        if first not in desc.fields_by_name and first.replace("-", "_") not in desc.fields_by_name:
            resolved = alias.get(first) or alias.get(first.replace("_", "-"))
            if resolved is not None:
                name = resolved + dot + rest
        if name == "fields":
            explicit_mask = True
        path = ".".join(_assign(msg, name.split("."), value, arg, []))
        if path not in paths:
            paths.append(path)
    if update_mask and not explicit_mask and _has_mask(desc):
        key = _key_message_field(desc)
        key_number = field_masks.key_field_number(desc)
        skip = {str(key_number)} if key_number is not None else set()
        if key is not None:
            skip.add(str(key.number))
        mask = [p for p in paths if p.split(".")[0] not in skip and p != "1"]
        cast("Any", msg).fields.extend(mask)
    return Arguments(msg, paths)


def _has_mask(desc: Descriptor) -> bool:
    return bool(desc.fields) and desc.fields[0].name == "fields"


# --- dicts from YAML -----------------------------------------------------------------------


def normalize_dict(desc: Descriptor, data: Mapping[str, Any]) -> dict[str, Any]:
    """Make a hand-written dict acceptable to `codec.from_dict`: enums by any spelling.

    Enum values written as `docker` or `Kubernetes` become their numbers; everything else is
    left for `codec.from_dict` (which also turns "15m" into nanoseconds).

    Args:
        desc: The message the dict describes.
        data: The dict, not modified.

    Returns:
        A new dict.

    Raises:
        InvalidArgument: For an enum name that matches no value.
    """
    out: dict[str, Any] = {}
    for name, value in data.items():
        fd = desc.fields_by_name.get(name)
        if fd is None:
            fd = next((f for f in desc.fields if f.json_name == name), None)
        if fd is None or value is None:
            out[name] = value
            continue
        out[name] = _normalize_value(fd, value)
    return out


def _normalize_value(fd: FieldDescriptor, value: Any) -> Any:
    if _is_map(fd):
        mt = fd.message_type
        assert mt is not None  # noqa: S101 -- a map field has an entry type
        vfd = mt.fields_by_name["value"]
        if isinstance(value, dict):
            return {k: _normalize_one(vfd, v) for k, v in value.items()}
        return value
    if fd.is_repeated and isinstance(value, list):
        return [_normalize_one(fd, v) for v in value]
    return _normalize_one(fd, value)


def _normalize_one(fd: FieldDescriptor, value: Any) -> Any:
    if fd.message_type is not None and isinstance(value, dict):
        return normalize_dict(fd.message_type, value)
    if fd.enum_type is not None and isinstance(value, str):
        return enum_value(fd.enum_type, value)
    return value


# --- help ----------------------------------------------------------------------------------


def _type_word(fd: FieldDescriptor) -> str:
    if fd.enum_type is not None:
        shown = enum_short_names(fd.enum_type)
        return "|".join(shown[:8]) + ("|..." if len(shown) > 8 else "")
    if is_duration_field(fd):
        return "duration"
    if fd.type == _T.TYPE_BOOL:
        return "bool"
    if fd.type in _INT_TYPES:
        return "int"
    if fd.type in _FLOAT_TYPES:
        return "float"
    return "string"


def enum_short_names(enum: EnumDescriptor) -> list[str]:
    """The values of an enum as the command line shows them: lower case, common prefix cut.

    Args:
        enum: The enum descriptor.

    Returns:
        `docker`, `qcow`, ... for `ImageType`.
    """
    names = [v.name for v in enum.values]
    prefix = ""
    if len(names) > 1:
        common = names[0]
        for name in names[1:]:
            while not name.startswith(common):
                common = common[:-1]
        prefix = common[: common.rfind("_") + 1]
    return [name.removeprefix(prefix).lower() or name.lower() for name in names]


def field_help(cls: type[Message], *, depth: int = 4) -> list[str]:
    """One line per settable field path of a request message, with its value type.

    Args:
        cls: The request message class.
        depth: How deep to list nested messages.

    Returns:
        Lines like `key.name  string`, `location.latitude  float`, `tags  [string]`,
        `labels.KEY  string`, aliases first.
    """
    desc = descriptor_of(cls)
    lines = [f"{a:<32} -> {p}" for a, p in aliases(desc).items()]
    _help_walk(desc, "", lines, depth, (desc.full_name,))
    return lines


def _help_walk(
    desc: Descriptor, prefix: str, lines: list[str], depth: int, stack: tuple[str, ...]
) -> None:
    for i, fd in enumerate(desc.fields):
        if i == 0 and fd.name == "fields" and prefix:
            continue
        path = prefix + fd.name
        if _is_map(fd):
            mt = fd.message_type
            assert mt is not None  # noqa: S101 -- a map field has an entry type
            vfd = mt.fields_by_name["value"]
            kind = "{...}" if vfd.message_type is not None else _type_word(vfd)
            lines.append(f"{path + '.KEY':<32} {kind}")
            continue
        mt = fd.message_type
        if mt is None:
            word = _type_word(fd)
            lines.append(f"{path:<32} {'[' + word + ']' if fd.is_repeated else word}")
        elif fd.is_repeated:
            lines.append(f"{path + '.N.FIELD':<32} list of {mt.name} (or JSON list)")
        elif depth > 1 and mt.full_name not in stack:
            _help_walk(mt, path + ".", lines, depth - 1, (*stack, mt.full_name))
        else:
            lines.append(f"{path:<32} {mt.name} as JSON")
