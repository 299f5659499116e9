"""TOTP (RFC 6238) codes, and where the original keeps a cloudlet's TOTP seeds.

A TOTP seed given as an access var (an AWS MFA device's secret, say) is never handed out
again: platforms ask for the current code (`get-session-tokens`). The original writes the
seed to Vault's TOTP engine mounted at `<region>/totp`, under a key named by the base64 of
`cloudlet/<org>/<physical name>/<var>` (the engine has no folders), and reads codes from it.
The Vault backend does exactly that; the local backend keeps the seed sealed in etcd and
computes the same code here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import time
from typing import Final

from edge_cloud.errors import InvalidArgument

__all__ = [
    "TOTP_DIGITS",
    "TOTP_PERIOD",
    "cloudlet_totp_name",
    "seed_bytes",
    "totp_code",
    "totp_mount",
]

TOTP_PERIOD: Final = 30
TOTP_DIGITS: Final = 6


def totp_mount(region: str) -> str:
    """`<region>/totp`: the TOTP engine of a region."""
    return f"{region}/totp"


def cloudlet_totp_name(org: str, name: str, var: str, physical_name: str = "") -> str:
    """The TOTP key name of a cloudlet's seed: std base64 of `cloudlet/<org>/<name>/<var>`."""
    path = f"cloudlet/{org}/{physical_name or name}/{var}"
    return base64.b64encode(path.encode()).decode()


def seed_bytes(seed: str, what: str = "seed") -> bytes:
    """The raw bytes of a base32 seed (spaces and case ignored, padding optional).

    Raises:
        InvalidArgument: Not base32; the message names `what`, never the seed.
    """
    cleaned = seed.replace(" ", "").upper().rstrip("=")
    try:
        raw = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{what} must be a base32 TOTP seed") from None
    if not raw:
        raise InvalidArgument(f"{what} must be a base32 TOTP seed, not empty")
    return raw


def totp_code(seed: str, *, at: float | None = None) -> str:
    """The RFC 6238 code (HMAC-SHA1, 30 s, 6 digits) of a base32 seed at a time.

    Raises:
        InvalidArgument: The seed is not base32.
    """
    counter = int((time.time() if at is None else at) // TOTP_PERIOD)
    mac = hmac.new(seed_bytes(seed), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**TOTP_DIGITS).zfill(TOTP_DIGITS)
