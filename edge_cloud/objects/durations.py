"""Go `time.Duration` text: parse and format nanosecond counts exactly as the original does.

Forty-four integer fields (objects.md §1.4, ‡) hold a Go `time.Duration`, a count of
nanoseconds. The original shows them as `time.Duration.String()` ("1h30m0s", "1.5s",
"300ms") in error texts such as `Create App Inst Timeout must be greater than 0s`, and
accepts `time.ParseDuration` strings ("15m") in YAML and JSON. Users compare those texts with
the original's, so both directions are reproduced character for character, error messages
included. `DURATION_FIELDS` lists the fields, since the proto copies carry no mark of them.
"""

from __future__ import annotations

from typing import Final

from google.protobuf.descriptor import FieldDescriptor

from edge_cloud.errors import InvalidArgument

__all__ = [
    "DURATION_FIELDS",
    "HOUR",
    "MICROSECOND",
    "MILLISECOND",
    "MINUTE",
    "NANOSECOND",
    "SECOND",
    "InvalidDuration",
    "format_duration",
    "is_duration_field",
    "parse_duration",
]

NANOSECOND: Final = 1
MICROSECOND: Final = 1000 * NANOSECOND
MILLISECOND: Final = 1000 * MICROSECOND
SECOND: Final = 1000 * MILLISECOND
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_U63: Final = 1 << 63

_UNITS: Final[dict[str, int]] = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign
    "\u03bcs": MICROSECOND,  # Greek letter mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}


def _fields(message: str, *numbers: int) -> set[tuple[str, int]]:
    return {(f"edgeproto.{message}", n) for n in numbers}


DURATION_FIELDS: Final[frozenset[tuple[str, int]]] = frozenset(
    _fields("AlertPolicy", 8)
    | _fields("Settings", 2, 4, 8, 9, 10, 11, 12, 13, *range(18, 29), 31, 32, 33, 35, 36)
    | _fields("Settings", 40, 41, 42, 43, 44)
    | _fields("CollectionInterval", 1, 2)
    | _fields("App", 44)
    | _fields("OperationTimeLimits", 1, 2, 3, 4, 5, 6)
    | _fields("GPUDriverBuildURL", 2)
    | _fields("IdleReservableClusterInsts", 1)
    | _fields("MaxReqsSettings", 3)
    | _fields("ExecRequest", 12)
    | _fields("DebugRequest", 7)
)
"""(message full name, field number) of every field the original casts to `time.Duration`."""


class InvalidDuration(InvalidArgument, ValueError):
    """A duration string Go's `time.ParseDuration` would reject; the message is Go's.

    Also a `ValueError`, so configuration parsers that expect one catch it too.
    """


def is_duration_field(field: FieldDescriptor) -> bool:
    """Whether a field holds nanoseconds the original shows as a duration string.

    Args:
        field: A field of an `edgeproto` message.

    Returns:
        True for the 44 fields of objects.md §1.4.
    """
    owner = field.containing_type
    return owner is not None and (owner.full_name, field.number) in DURATION_FIELDS


def format_duration(ns: int) -> str:
    """Format nanoseconds as Go's `time.Duration.String()` does.

    Below one second the largest unit that keeps an integer part is used ("300ms", "1.5µs",
    "12ns"); from one second on it is hours, minutes and seconds with the zero parts kept
    after the first ("1h0m0s", "1m30s", "1.5s"). Zero is "0s".

    Args:
        ns: A signed 64-bit nanosecond count.

    Returns:
        The Go text, with U+00B5 for micro.

    Raises:
        ValueError: When `ns` does not fit in 64 bits, as no Go duration could hold it.
    """
    if not _INT64_MIN <= ns <= _INT64_MAX:
        raise ValueError(f"{ns} ns does not fit in a Go time.Duration")
    u = -ns if ns < 0 else ns
    if u < SECOND:
        if u == 0:
            return "0s"
        if u < MICROSECOND:
            prec, unit = 0, "ns"
        elif u < MILLISECOND:
            prec, unit = 3, "\u00b5s"
        else:
            prec, unit = 6, "ms"
        frac, u = _fraction(u, prec)
        text = f"{u}{frac}{unit}"
    else:
        frac, u = _fraction(u, 9)
        text = f"{u % 60}{frac}s"
        u //= 60
        if u > 0:
            text = f"{u % 60}m{text}"
            u //= 60
            if u > 0:
                text = f"{u}h{text}"
    return f"-{text}" if ns < 0 else text


def parse_duration(text: str) -> int:
    """Parse a duration string as Go's `time.ParseDuration` does.

    A possibly signed sequence of decimal numbers, each with an optional fraction and a unit
    suffix: "300ms", "-1.5h", "2h45m". Units are ns, us (or µs, μs), ms, s, m, h. A bare "0"
    is allowed; any other number needs a unit.

    Args:
        text: The string.

    Returns:
        Nanoseconds.

    Raises:
        InvalidDuration: With Go's message, e.g. `time: missing unit in duration "1"`.
    """
    orig = text
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise _invalid(orig)
    d = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise _invalid(orig)
        before = len(s)
        v, s = _leading_int(s, orig)
        pre = before != len(s)
        post = False
        f, scale = 0, 1.0
        if s and s[0] == ".":
            s = s[1:]
            before = len(s)
            f, scale, s = _leading_fraction(s)
            post = before != len(s)
        if not pre and not post:
            raise _invalid(orig)
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise InvalidDuration(f"time: missing unit in duration {_quote(orig)}")
        unit_text, s = s[:i], s[i:]
        unit = _UNITS.get(unit_text)
        if unit is None:
            raise InvalidDuration(
                f"time: unknown unit {_quote(unit_text)} in duration {_quote(orig)}"
            )
        if v > _U63 // unit:
            raise _invalid(orig)
        v *= unit
        if f > 0:
            # Go computes the fraction in float64; so do we, for the same rounding.
            v += int(float(f) * (float(unit) / scale))
            if v > _U63:
                raise _invalid(orig)
        d += v
        if d > _U63:
            raise _invalid(orig)
    if neg:
        return -d
    if d > _INT64_MAX:
        raise _invalid(orig)
    return d


def _fraction(v: int, prec: int) -> tuple[str, int]:
    """Go's `fmtFrac`: the fraction v/10**prec without trailing zeros, and the integer part."""
    digits: list[str] = []
    printing = False
    for _ in range(prec):
        digit = v % 10
        printing = printing or digit != 0
        if printing:
            digits.append(str(digit))
        v //= 10
    frac = "." + "".join(reversed(digits)) if printing else ""
    return frac, v


def _leading_int(s: str, orig: str) -> tuple[int, str]:
    """Go's `leadingInt`: consume decimal digits, failing past 2**63."""
    x = 0
    i = 0
    while i < len(s) and "0" <= s[i] <= "9":
        if x > _U63 // 10:
            raise _invalid(orig)
        x = x * 10 + ord(s[i]) - ord("0")
        if x > _U63:
            raise _invalid(orig)
        i += 1
    return x, s[i:]


def _leading_fraction(s: str) -> tuple[int, float, str]:
    """Go's `leadingFraction`: digits after the point, precision silently capped."""
    x = 0
    scale = 1.0
    overflow = False
    i = 0
    while i < len(s) and "0" <= s[i] <= "9":
        if not overflow:
            if x > (_U63 - 1) // 10:
                overflow = True
            else:
                y = x * 10 + ord(s[i]) - ord("0")
                if y > _U63:
                    overflow = True
                else:
                    x = y
                    scale *= 10
        i += 1
    return x, scale, s[i:]


def _invalid(orig: str) -> InvalidDuration:
    return InvalidDuration(f"time: invalid duration {_quote(orig)}")


def _quote(s: str) -> str:
    r"""Go's `time.quote`: double quotes, with non-ASCII and control bytes as `\\xNN`."""
    out = ['"']
    for c in s:
        if ord(c) >= 0x80 or c < " ":
            out.extend(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogatepass"))
        else:
            if c in '"\\':
                out.append("\\")
            out.append(c)
    out.append('"')
    return "".join(out)
