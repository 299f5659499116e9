"""RegisterClient's developer auth token (RS256 JWT) and generated unique ids (KSUID).

The App's `auth_public_key` is a PEM RSA public key; the device presents a JWT signed with
the matching private key, claims `iat`, `exp`, `orgname`, `appname`, `appvers` (dme.md
§2.1 step 3). Failures raise with the reason the original's golang-jwt gives, which the
caller wraps as `failed to verify token - <reason>`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from services.dme._gocompat import GoError, b64decode

__all__ = ["TokenError", "ksuid", "verify_auth_token"]

_KSUID_EPOCH: Final = 1_400_000_000
_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class TokenError(Exception):
    """The token failed verification; the message is the reason."""


def _go_duration(seconds: float) -> str:
    """Render like Go's `time.Duration.String` for whole seconds (`10s`, `1m5s`, `2h0m0s`)."""
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _segment(text: str) -> Any:
    try:
        return json.loads(b64decode(text, url=True, pad_segment=True))
    except GoError as err:
        raise TokenError(str(err)) from None
    except ValueError as err:
        raise TokenError(f"invalid character in token: {err}") from None


def verify_auth_token(
    token: str,
    public_key_pem: str,
    org: str,
    app: str,
    vers: str,
    *,
    clock: Callable[[], float] = time.time,
) -> None:
    """Verify a developer auth token as the original's `VerifyAuthToken` does.

    Args:
        token: `RegisterClientRequest.auth_token`.
        public_key_pem: The App's `auth_public_key`.
        org: The request's `org_name`.
        app: The request's `app_name`.
        vers: The request's `app_vers`.
        clock: Unix seconds.

    Raises:
        TokenError: With the reason (`token contains an invalid number of segments`,
            `token is expired by 10s`, `unable to parse JWT token`, `token organization
            mismatch`, ...).
    """
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode())
    except (ValueError, TypeError):
        raise TokenError("unable to parse JWT token") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise TokenError("unable to parse JWT token")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("token contains an invalid number of segments")
    header = _segment(parts[0])
    claims = _segment(parts[1])
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("token is malformed")
    if header.get("alg") != "RS256":
        raise TokenError("signing method (alg) is unavailable.")
    now = clock()
    exp = claims.get("exp")
    if isinstance(exp, int | float) and now > exp:
        raise TokenError(f"token is expired by {_go_duration(int(now) - exp)}")
    iat = claims.get("iat")
    if isinstance(iat, int | float) and now < iat:
        raise TokenError("Token used before issued")
    try:
        signature = b64decode(parts[2], url=True, pad_segment=True)
    except GoError as err:
        raise TokenError(str(err)) from None
    try:
        key.verify(
            signature,
            f"{parts[0]}.{parts[1]}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature:
        raise TokenError("crypto/rsa: verification error") from None
    if claims.get("orgname") != org:
        raise TokenError("token organization mismatch")
    if claims.get("appname") != app:
        raise TokenError("token appname mismatch")
    if claims.get("appvers") != vers:
        raise TokenError("token appvers mismatch")


def ksuid(clock: Callable[[], float] = time.time) -> str:
    """A new KSUID: 4 bytes of seconds since 2014-05-13 and 16 random bytes, base62, 27 chars.

    Args:
        clock: Unix seconds.

    Returns:
        The 27-character id the original generates for clients without a unique id.
    """
    stamp = int(clock()) - _KSUID_EPOCH
    value = int.from_bytes(stamp.to_bytes(4, "big") + os.urandom(16), "big")
    digits = []
    while value:
        value, rem = divmod(value, 62)
        digits.append(_BASE62[rem])
    return "".join(reversed(digits)).rjust(27, "0")
