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

It also reads the two value forms the original's custom JSON marshalers write into stored
objects (controller.md §2.3), so that an etcd written by the original can be loaded:
`udec64_from_go` (`Udec64`: a number, or a decimal string when it has a fraction) and
`timestamp_from_go` (`distributed_match_engine.Timestamp`: RFC 3339 text, "" for unset).
"""

from __future__ import annotations

import datetime
import decimal
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
    "timestamp_from_go",
    "udec64_from_go",
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
    by_name = _camel_values(enum)
    camel = go_camel_case(text)
    if camel in by_name:
        return by_name[camel]
    prefix = enum_common_prefix(enum)
    if prefix and prefix + camel in by_name:
        return by_name[prefix + camel]
    if re.fullmatch(r"[+-]?[0-9]+", text) and int(text) in enum.values_by_number:
        return int(text)
    raise ValueError(f"Invalid {enum.name} value {_go_q(text)}")


@functools.cache
def _camel_values(enum: EnumDescriptor) -> dict[str, int]:
    """The original's `<Enum>_CamelValue` map; cached, as stored objects parse many enums."""
    return {go_camel_case(v.name): v.number for v in enum.values}


# Go's time.RFC3339Nano as time.Parse reads it: the fraction may have any number of digits
# (beyond nine they are dropped) and a comma for the point; the zone is Z or ±hh:mm.
_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:[.,]([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH_DAY: Final = datetime.date(1970, 1, 1).toordinal()
_UDEC64: Final = re.compile(r"([0-9]+)(?:\.([0-9]+))?")
_UINT64_MAX: Final = (1 << 64) - 1
_NANOS_DIGITS: Final = 9


def timestamp_from_go(text: str) -> tuple[int, int] | None:
    """Read a `distributed_match_engine.Timestamp` as the original's `ParseTimestamp` does.

    The original's Timestamp marshals to RFC 3339 text with nanoseconds in the writer's
    local zone ("2023-04-14T16:25:35.1680809-07:00"), and to "" when zero, so stored
    `created_at` values look like that; the instant is what matters, the zone is dropped.

    Args:
        text: The JSON string; surrounding white space is ignored, as Go trims it.

    Returns:
        (seconds, nanos) since the Unix epoch, nanos in 0..999999999; None for "" (unset).

    Raises:
        ValueError: Not RFC 3339 with a zone, or a date or time that does not exist.
    """
    text = text.strip()
    if not text:
        return None
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid RFC3339 timestamp {_go_q(text)}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, sign, zone_hours, zone_minutes = match.groups()[6:]
    try:
        days = datetime.date(year, month, day).toordinal() - _EPOCH_DAY
    except ValueError:
        raise ValueError(f"invalid RFC3339 timestamp {_go_q(text)}: no such date") from None
    offset = 0
    if sign is not None:
        offset = int(zone_hours) * 3600 + int(zone_minutes) * 60
        if int(zone_hours) > 23 or int(zone_minutes) > 59:
            raise ValueError(f"invalid RFC3339 timestamp {_go_q(text)}: zone out of range")
        if sign == "-":
            offset = -offset
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"invalid RFC3339 timestamp {_go_q(text)}: time out of range")
    nanos = int((fraction or "")[:_NANOS_DIGITS].ljust(_NANOS_DIGITS, "0"))
    return days * 86400 + hour * 3600 + minute * 60 + second - offset, nanos


def udec64_from_go(value: object) -> tuple[int, int]:
    """Read a `Udec64` as the original's `UnmarshalJSON` does, plus fractional numbers.

    The original writes a whole value as a JSON number (`4`) and one with a fraction as a
    decimal string (`"0.5"`, nine decimals at most); it reads both. A JSON number with a
    fraction (`1.5`), which hand-written data may hold, is read by its shortest decimal
    text instead of being refused as Go would.

    Args:
        value: The decoded JSON value: an int, a float, or a string.

    Returns:
        (whole, nanos), nanos in billionths.

    Raises:
        ValueError: Negative, above the uint64 range, more than nine decimals, or not a
            number at all (booleans included).
    """
    if type(value) is int:
        text = str(value)
    elif type(value) is float:
        text = format(decimal.Decimal(repr(value)), "f") if value == value else "NaN"
    elif type(value) is str:
        text = value
    else:
        raise ValueError(f"invalid unsigned decimal {value!r}")
    match = _UDEC64.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid unsigned decimal {_go_q(text)}")
    whole_text, fraction = match.groups()
    if fraction is not None and len(fraction) > _NANOS_DIGITS:
        raise ValueError(f"invalid unsigned decimal {_go_q(text)}: more than 9 decimals")
    whole = int(whole_text)
    if whole > _UINT64_MAX:
        raise ValueError(f"invalid unsigned decimal {_go_q(text)}: out of range")
    return whole, int((fraction or "").ljust(_NANOS_DIGITS, "0"))


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
