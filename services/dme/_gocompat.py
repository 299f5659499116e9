"""Go library behaviour the DME's tokens expose to clients: base64, JSON numbers and errors.

Session cookies, edge-events cookies and PlatformFindCloudlet client tokens were made and
read by Go's `encoding/base64` and `encoding/json`. Clients see the results: the
verification error text of a forged cookie is the gRPC status message ("illegal base64 data
at input byte 1"), and a platform client decodes the client token's JSON. Python's own
codecs accept and reject different inputs and word their errors differently, so the parts
that reach the wire are reproduced here:

- `b64decode`: Go's decoder, including which byte offset a `CorruptInputError` names and
  its tolerance of CR/LF;
- `go_float`: how `json.Marshal` writes a float64 (shortest digits, `1e-7` not `1e-07`);
- `loads` + `Struct.decode`: Go's JSON syntax-error wording and its struct decoding rules
  (case-insensitive field names, unknown fields ignored, `null` leaves a value alone, type
  mismatches reported as "json: cannot unmarshal ... into Go struct field ...").

Syntax-error wording is reproduced for the common cases only (a person reads it, no client
parses it); accept/reject decisions are exact.
"""

from __future__ import annotations

import base64
import decimal
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

__all__ = [
    "Field",
    "GoError",
    "Num",
    "Obj",
    "Struct",
    "b64decode",
    "b64encode",
    "go_float",
    "json_kind",
    "loads",
]

_STD: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_URL: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _decode_map(alphabet: bytes) -> tuple[int, ...]:
    table = [0xFF] * 256
    for i, c in enumerate(alphabet):
        table[c] = i
    return tuple(table)


_STD_MAP: Final = _decode_map(_STD)
_URL_MAP: Final = _decode_map(_URL)
_PAD: Final = ord("=")
_URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*(?:[A-Za-z0-9_-]{2}==|[A-Za-z0-9_-]{3}=)?")
_STD_RE: Final = re.compile(r"[A-Za-z0-9+/]*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_CR: Final = ord("\r")
_LF: Final = ord("\n")


class GoError(Exception):
    """A failure whose message is the text the Go library would have produced."""


class _Corrupt(GoError):
    def __init__(self, offset: int) -> None:
        super().__init__(f"illegal base64 data at input byte {offset}")


def b64encode(data: bytes, *, url: bool = True, pad: bool = False) -> str:
    """Encode as Go's `base64.RawURLEncoding` (default) or `StdEncoding` (`url=False`).

    Args:
        data: The bytes.
        url: URL-safe alphabet (`-_`) instead of the standard one (`+/`).
        pad: Keep the `=` padding (Go's padded encodings).

    Returns:
        The text.
    """
    text = (base64.urlsafe_b64encode if url else base64.b64encode)(data).decode("ascii")
    return text if pad else text.rstrip("=")


def b64decode(text: str, *, url: bool, pad_segment: bool = False) -> bytes:
    """Decode padded base64 exactly as Go's `Encoding.DecodeString` does.

    `pad_segment` first appends the `=` a JWT segment lacks, as the JWT library the
    original's cookies were specified against did; the error offsets quoted in dme.md
    (`x.x.x` -> "illegal base64 data at input byte 1") follow from that.

    Args:
        text: The encoded text (offsets count its UTF-8 bytes, as Go's strings are bytes).
        url: Use the URL-safe alphabet.
        pad_segment: Pad to a multiple of four characters before decoding.

    Returns:
        The decoded bytes.

    Raises:
        GoError: "illegal base64 data at input byte N", N as Go computes it.
    """
    if pad_segment and len(text) % 4:
        text += "=" * (4 - len(text) % 4)
    # Fast path: whole quanta of the alphabet with padding only at the end decode the same
    # in Go and in the C decoder; anything else takes the exact (slow) path below.
    if len(text) % 4 == 0 and (_URL_RE if url else _STD_RE).fullmatch(text):
        return base64.urlsafe_b64decode(text) if url else base64.b64decode(text, validate=True)
    src = text.encode("utf-8", "surrogateescape")
    table = _URL_MAP if url else _STD_MAP
    out = bytearray()
    n = len(src)
    si = 0
    while si < n:
        dbuf = [0, 0, 0, 0]
        dlen = 4
        j = 0
        trailing: GoError | None = None
        while j < 4:
            if si == n:
                if j == 0:
                    return bytes(out)
                raise _Corrupt(si - j)  # padded encodings need whole quanta
            c = src[si]
            si += 1
            value = table[c]
            if value != 0xFF:
                dbuf[j] = value
                j += 1
                continue
            if c in (_CR, _LF):
                continue
            if c != _PAD or j < 2:
                raise _Corrupt(si - 1)
            if j == 2:  # "==" expected; the first "=" is consumed
                while si < n and src[si] in (_CR, _LF):
                    si += 1
                if si == n:
                    raise _Corrupt(n)
                if src[si] != _PAD:
                    raise _Corrupt(si - 1)
                si += 1
            while si < n and src[si] in (_CR, _LF):
                si += 1
            if si < n:
                trailing = _Corrupt(si)
            dlen = j
            break
        val = dbuf[0] << 18 | dbuf[1] << 12 | dbuf[2] << 6 | dbuf[3]
        out += bytes(((val >> 16) & 0xFF, (val >> 8) & 0xFF, val & 0xFF)[: dlen - 1])
        if trailing is not None:
            raise trailing
    return bytes(out)


def go_float(value: float) -> str:
    """Write a float64 as Go's `json.Marshal` does (`strconv` shortest digits, ES6 style).

    Args:
        value: A finite float; Go refuses to marshal NaN and infinities.

    Returns:
        E.g. `10` for 10.0, `0.5`, `1e-7`, `1e+21`.

    Raises:
        ValueError: For NaN or an infinity ("json: unsupported value: NaN" in Go).
    """
    if not math.isfinite(value):
        raise ValueError(f"json: unsupported value: {value!r}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    text = repr(value)
    if "e" not in text:  # positional shortest digits: the same digits Go writes
        return text[:-2] if text.endswith(".0") else text
    exact = decimal.Decimal(text).normalize()
    magnitude = abs(value)
    if 1e-6 <= magnitude < 1e21:
        return format(exact, "f")
    sign, digits, exponent = exact.as_tuple()
    if not isinstance(exponent, int):  # "n", "N" or "F": excluded by the check above
        raise ValueError(f"json: unsupported value: {value!r}")
    mantissa = "".join(map(str, digits))
    exp10 = exponent + len(mantissa) - 1
    head = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
    return f"{'-' if sign else ''}{head}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}".replace(
        "e-0", "e-", 1
    )


# --- JSON --------------------------------------------------------------------------------


class Num(str):
    """A JSON number kept as its literal text, as Go's decoder sees it before conversion."""

    __slots__ = ()


class Obj(list[tuple[str, Any]]):
    """A JSON object as its key/value pairs in document order (Go assigns them in that order).

    A list subclass, so an empty object stays distinguishable from an empty array.
    """

    __slots__ = ()


def _reject_constant(name: str) -> Any:
    raise _SyntaxAt(name)


class _SyntaxAt(Exception):
    """Python accepted a literal (NaN, Infinity) that Go's scanner rejects."""


def loads(data: bytes) -> Any:
    """Parse JSON as Go's scanner would accept it, keeping number literals and key order.

    Objects come back as `Obj`, numbers as `Num`, so `Struct.decode` can apply Go's
    conversion rules afterwards (Go checks the whole text's syntax before decoding).

    Args:
        data: The raw bytes; invalid UTF-8 is replaced, as Go's decoder does.

    Returns:
        The parsed value.

    Raises:
        GoError: With Go's syntax-error wording for the common cases.
    """
    text = data.decode("utf-8", "replace")
    if not text.strip():
        raise GoError("unexpected end of JSON input")
    try:
        return json.loads(
            text,
            object_pairs_hook=Obj,
            parse_int=Num,
            parse_float=Num,
            parse_constant=_reject_constant,
        )
    except _SyntaxAt as exc:
        message = f"invalid character {_go_char(str(exc)[0])} looking for beginning of value"
        raise GoError(message) from None
    except json.JSONDecodeError as exc:
        raise GoError(_syntax_message(exc)) from None


def _go_char(c: str) -> str:
    """Quote one character as Go's `quoteChar` does in scanner errors."""
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    return "'" + (c if c.isprintable() else json.dumps(c)[1:-1]) + "'"


_CONTEXTS: Final[dict[str, str]] = {
    "Expecting value": "looking for beginning of value",
    "Expecting property name enclosed in double quotes": (
        "looking for beginning of object key string"
    ),
    "Expecting ':' delimiter": "after object key",
    "Extra data": "after top-level value",
}


def _syntax_message(exc: json.JSONDecodeError) -> str:
    if exc.msg.startswith("Unterminated string"):
        return "unexpected end of JSON input"
    if exc.msg.startswith("Invalid \\escape"):
        return f"invalid character {_go_char(exc.doc[exc.pos + 1])} in string escape code"
    if exc.pos >= len(exc.doc.rstrip()) and exc.msg != "Extra data":
        return "unexpected end of JSON input"
    c = exc.doc[exc.pos]
    if exc.msg == "Expecting ',' delimiter":
        opener = _innermost_container(exc.doc, exc.pos)
        where = "after object key:value pair" if opener == "{" else "after array element"
        return f"invalid character {_go_char(c)} {where}"
    where = _CONTEXTS.get(exc.msg, "in string literal")
    return f"invalid character {_go_char(c)} {where}"


def _innermost_container(doc: str, pos: int) -> str:
    stack: list[str] = []
    in_string = escaped = False
    for c in doc[:pos]:
        if in_string:
            escaped = not escaped and c == "\\"
            in_string = escaped or c != '"'
            continue
        if c == '"':
            in_string = True
        elif c in "{[":
            stack.append(c)
        elif c in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


_INT_RANGES: Final[dict[str, tuple[int, int]]] = {
    "int": (-(1 << 63), (1 << 63) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
}

FieldType: TypeAlias = "str | Struct"
"""A Go field type: "string", "int", "int32", "int64", "float64", or a nested struct."""


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a Go struct as `encoding/json` sees it.

    Attributes:
        name: The JSON name (the struct tag, or the Go field name when untagged).
        type: The Go type.
        pointer: A `*T` field: JSON `null` sets it to None instead of leaving it alone.
    """

    name: str
    type: FieldType
    pointer: bool = False


@dataclass(frozen=True, slots=True)
class Struct:
    """A Go struct type, enough of it to decode JSON the way Go does.

    Attributes:
        name: The Go type name, as it appears in "Go struct field <name>.<path>" errors.
        fields: The fields in declaration order.
        qualified: The package-qualified name used when the whole value has the wrong
            JSON type ("Go value of type dmecommon.dmeClaims").
    """

    name: str
    fields: tuple[Field, ...]
    qualified: str = ""

    def decode(self, value: Any) -> dict[str, Any]:
        """Convert a parsed JSON value into field values, applying Go's rules.

        Args:
            value: What `loads` returned.

        Returns:
            JSON field name -> value for the fields present (nested structs as dicts, a
            pointer field set to JSON null as None). Absent fields are absent: Go leaves
            them at their zero value.

        Raises:
            GoError: The first type mismatch, worded as Go words it; Go finishes decoding
                before reporting it, so later fields never hide an earlier error.
        """
        errors: list[str] = []
        if value is None:
            return {}
        if not isinstance(value, Obj):
            kind = json_kind(value)
            raise GoError(
                f"json: cannot unmarshal {kind} into Go value of type {self.qualified or self.name}"
            )
        out = self._decode_object(value, (), errors)
        if errors:
            raise GoError(errors[0])
        return out

    def _decode_object(
        self, pairs: Obj, path: tuple[str, ...], errors: list[str]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in pairs:
            field = self._field(key)
            if field is None:
                continue
            fpath = (*path, field.name)
            if item is None:
                if field.pointer:
                    out[field.name] = None
                continue
            if isinstance(field.type, Struct):
                if isinstance(item, Obj):
                    out[field.name] = field.type._decode_object(item, fpath, errors)
                else:
                    errors.append(self._type_error(json_kind(item), fpath, field.type.name))
                continue
            converted = _convert_scalar(item, field.type)
            if isinstance(converted, _Mismatch):
                errors.append(self._type_error(converted.what, fpath, field.type))
            else:
                out[field.name] = converted
        return out

    def _field(self, key: str) -> Field | None:
        # Go prefers an exact match, then a case-insensitive one.
        for field in self.fields:
            if field.name == key:
                return field
        folded = key.casefold()
        for field in self.fields:
            if field.name.casefold() == folded:
                return field
        return None

    def _type_error(self, what: str, path: tuple[str, ...], type_name: str) -> str:
        return (
            f"json: cannot unmarshal {what} into Go struct field "
            f"{self.name}.{'.'.join(path)} of type {type_name}"
        )


@dataclass(frozen=True, slots=True)
class _Mismatch:
    what: str


def json_kind(value: Any) -> str:
    """Name a parsed JSON value's kind as Go's `UnmarshalTypeError` does.

    Args:
        value: What `loads` returned.

    Returns:
        "number 1.5" (with the literal), "string", "bool", "object" or "array".
    """
    if isinstance(value, Num):
        return f"number {value}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    return "object" if isinstance(value, Obj) else "array"


def _convert_scalar(item: Any, type_name: str) -> Any:
    if type_name == "string":
        if isinstance(item, Num):
            return _Mismatch("number")
        return item if isinstance(item, str) else _Mismatch(json_kind(item))
    if not isinstance(item, Num):
        return _Mismatch(json_kind(item))
    if type_name == "float64":
        number = float(item)
        return number if math.isfinite(number) else _Mismatch(f"number {item}")
    low, high = _INT_RANGES[type_name]
    try:
        integer = int(item, 10)
    except ValueError:
        return _Mismatch(f"number {item}")
    return integer if low <= integer <= high else _Mismatch(f"number {item}")
