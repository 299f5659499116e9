"""Identifiers the Controller assigns: ULIDs for `obj_id`, timestamps for `created_at`."""

from __future__ import annotations

import secrets
import time
from typing import Final

from distributed_match_engine import loc_pb2

__all__ = ["now_timestamp", "ulid"]

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    """A new ULID (48-bit millisecond time + 80 random bits, Crockford base32, 26 chars)."""
    value = (time.time_ns() // 1_000_000) << 80 | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def now_timestamp() -> loc_pb2.Timestamp:
    """The current time as the `distributed_match_engine.Timestamp` objects carry."""
    ns = time.time_ns()
    return loc_pb2.Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)
