"""The original's Go spellings of strings, names and enum values, reproduced byte for byte.

Key strings end up in etcd keys, in map keys of stored objects (`AppInstRefs.insts`,
`CloudletIPs.cluster_ips`) and in error messages, so they must be byte-identical to what the
original's `encoding/json` produced, or an original and a rebuilt controller would not find
each other's data. This module holds the three Go behaviours that decide those bytes:

- `go_quote`: how `encoding/json` (Go 1.22+, HTML escaping on) quotes a string;
- `go_field_name` / `go_camel_case`: the two CamelCase functions of the original's code
  generators (Go struct field names; enum value names);
- `enum_go_name` / `enum_json_name` / `enum_from_go`: the original's enum spellings, which are
  CamelCase strings with the enum's common prefix trimmed (`IMAGE_TYPE_DOCKER` -> `Docker`).
"""

from __future__ import annotations

import functools
import re
from typing import Final

from google.protobuf.descriptor import EnumDescriptor

__all__ = [
    "enum_common_prefix",
    "enum_from_go",
    "enum_go_name",
    "enum_json_name",
    "go_camel_case",
    "go_field_name",
    "go_quote",
]

# encoding/json escapes these ASCII characters (HTML escaping is on in json.Marshal), plus
# U+2028/U+2029 because JavaScript treats them as line ends. Everything else passes through.
_ESCAPES: Final[dict[int, str]] = {
    **{c: f"\\u{c:04x}" for c in range(0x20)},
    ord("\b"): "\\b",
    ord("\f"): "\\f",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
    # A lone surrogate is not valid UTF-8: Go sees its three bytes and replaces each.
    **{c: "\\ufffd" * 3 for c in range(0xD800, 0xE000)},
}
_NEEDS_ESCAPE: Final = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')

# The original names enums' JSON values after a prefix shared by all value names; where that
# would be wrong it sets `(protogen.common_prefix)`, which our proto copies drop.
_COMMON_PREFIX_OVERRIDES: Final[dict[str, str]] = {"edgeproto.ReportSchedule": ""}


def go_quote(text: str) -> str:
    r"""Quote a string exactly as Go's `json.Marshal` does.

    Go escapes `<`, `>` and `&` (HTML safety), U+2028 and U+2029, and control characters
    (`\\b \\f \\n \\r \\t` short, the rest as `\\u00XX` with lower-case hex); it leaves all
    other characters, DEL and non-ASCII included, as they are.

    Args:
        text: Any string.

    Returns:
        The JSON string literal, quotes included.
    """
    if _NEEDS_ESCAPE.search(text) is None:
        return f'"{text}"'
    return f'"{text.translate(_ESCAPES)}"'


def go_field_name(proto_name: str) -> str:
    """The Go struct field name protoc-gen-gogo gives a proto field (`generator.CamelCase`).

    The original's field-path constants (`CloudletFieldLocationLatitude`) and the readable
    names in its "cannot be modified" errors are built from these.

    Args:
        proto_name: The field name as declared (`internal_port_to_lb_ip`, `HostController`).

    Returns:
        `InternalPortToLbIp`, `HostController`; an underscore survives only before a
        non-lower-case character, as in Go.
    """
    if not proto_name:
        return ""
    out: list[str] = []
    i = 0
    if proto_name[0] == "_":
        out.append("X")
        i = 1
    n = len(proto_name)
    while i < n:
        c = proto_name[i]
        if c == "_" and i + 1 < n and _is_lower(proto_name[i + 1]):
            i += 1
            continue
        if _is_digit(c):
            out.append(c)
            i += 1
            continue
        out.append(c.upper() if _is_lower(c) else c)
        while i + 1 < n and _is_lower(proto_name[i + 1]):
            i += 1
            out.append(proto_name[i])
        i += 1
    return "".join(out)


def go_camel_case(text: str) -> str:
    """The original's `util.CamelCase`, used for enum value names (`ALL_REQUESTS` -> `AllRequests`).

    Unlike `go_field_name` it drops every underscore and lower-cases a run of capitals after
    the first letter of a word.

    Args:
        text: An enum value name or other identifier.

    Returns:
        The CamelCase spelling.
    """
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "_":
            i += 1
            continue
        if _is_digit(c):
            out.append(c)
            i += 1
            continue
        out.append(c.upper() if _is_lower(c) else c)
        while i + 1 < n and _is_upper(text[i + 1]):
            if i + 2 < n and _is_lower(text[i + 2]):
                break
            i += 1
            out.append(text[i].lower())
        while i + 1 < n and _is_lower(text[i + 1]):
            i += 1
            out.append(text[i])
        i += 1
    return "".join(out)


@functools.cache
def enum_common_prefix(enum: EnumDescriptor) -> str:
    """The CamelCase prefix the original trims from an enum's JSON values.

    It is the longest prefix shared by all value names, CamelCased (`IMAGE_TYPE_` ->
    `ImageType`), empty for enums with fewer than two values or no shared prefix.

    Args:
        enum: The enum's descriptor.

    Returns:
        The prefix; possibly empty.
    """
    override = _COMMON_PREFIX_OVERRIDES.get(enum.full_name)
    if override is not None:
        return override
    names = [v.name for v in enum.values]
    if len(names) <= 1:
        return ""
    prefix = names[0]
    for name in names[1:]:
        k = 0
        while k < len(prefix) and k < len(name) and prefix[k] == name[k]:
            k += 1
        prefix = prefix[:k]
        if k == 0:
            break
    return go_camel_case(prefix)


def enum_go_name(enum: EnumDescriptor, number: int) -> str:
    """The original's `<Enum>_CamelName` of a value: its CamelCase name, prefix kept.

    Args:
        enum: The enum's descriptor.
        number: The value; numbers the enum does not define render as their decimal text,
            as Go's `proto.EnumName` does.

    Returns:
        `ImageTypeDocker`, `AllRequests`, or `"7"` for an undefined 7.
    """
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    return go_camel_case(value.name)


def enum_json_name(enum: EnumDescriptor, number: int) -> str:
    """How the original writes an enum value in JSON and YAML: CamelCase, common prefix trimmed.

    Args:
        enum: The enum's descriptor.
        number: The value.

    Returns:
        `Docker` for `IMAGE_TYPE_DOCKER`, `Dme` for `ApiEndpointType.DME`.
    """
    name = enum_go_name(enum, number)
    prefix = enum_common_prefix(enum)
    return name.removeprefix(prefix) if prefix else name


def enum_from_go(enum: EnumDescriptor, text: str | int) -> int:
    """Parse an enum value the way the original's `Parse<Enum>` does.

    Accepted: the CamelCase name with or without the common prefix, any spelling that
    CamelCases to one of those (`ALL_REQUESTS`, `all_requests`), or the decimal number of a
    defined value.

    Args:
        enum: The enum's descriptor.
        text: What was written in JSON or YAML.

    Returns:
        The value's number.

    Raises:
        ValueError: `Invalid <Enum> value "<text>"`, the original's message.
    """
    if isinstance(text, int):
        if text in enum.values_by_number:
            return text
        raise ValueError(f"Invalid {enum.name} value {text}")
    by_name = {go_camel_case(v.name): v.number for v in enum.values}
    camel = go_camel_case(text)
    if camel in by_name:
        return by_name[camel]
    prefix = enum_common_prefix(enum)
    if prefix and prefix + camel in by_name:
        return by_name[prefix + camel]
    if re.fullmatch(r"[+-]?[0-9]+", text) and int(text) in enum.values_by_number:
        return int(text)
    raise ValueError(f"Invalid {enum.name} value {_go_q(text)}")


def _go_q(text: str) -> str:
    """Go's `%q` for the plain strings that reach enum errors (ASCII escapes only)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _is_lower(c: str) -> bool:
    return "a" <= c <= "z"


def _is_upper(c: str) -> bool:
    return "A" <= c <= "Z"


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"
