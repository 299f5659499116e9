"""Bearer-token checks: a static token, and the shape of EKS's STS-presigned tokens.

EKS authenticates `k8s-aws-v1.<base64url(presigned GetCallerIdentity URL)>` by calling STS
with that URL. Offline, the checker verifies everything that can be verified without AWS:
the prefix, the encoding, the STS endpoint, the SigV4 query parameters, the signed
`x-k8s-aws-id` header and the expiry — so a malformed token from the EKS plugin fails here
as it would against a real cluster.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

EKS_TOKEN_PREFIX = "k8s-aws-v1."
_STS_HOST = re.compile(r"^sts(\.[a-z0-9-]+)?\.amazonaws\.com(\.cn)?$")
_CREDENTIAL = re.compile(r"^[A-Z0-9]{16,128}/\d{8}/[a-z0-9-]+/sts/aws4_request$")

TokenChecker = Callable[[str], bool]


def eks_token_problem(
    token: str,
    *,
    extra_hosts: Sequence[str] = (),
    now: datetime | None = None,
) -> str | None:
    """Why `token` is not a well-formed, unexpired EKS token, or None when it is.

    Args:
        token: The bearer token.
        extra_hosts: `host[:port]` endpoints accepted besides `sts[.region].amazonaws.com`
            (an STS emulator on loopback).
        now: The current time, for tests of expiry.
    """
    if not token.startswith(EKS_TOKEN_PREFIX):
        return f"token does not start with {EKS_TOKEN_PREFIX!r}"
    encoded = token[len(EKS_TOKEN_PREFIX) :]
    if "=" in encoded:
        return "token payload must be unpadded base64url"
    try:
        url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "token payload is not base64url"
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or (
        parts.scheme == "http" and parts.netloc not in extra_hosts
    ):
        return f"presigned URL scheme {parts.scheme!r} is not https"
    if not (_STS_HOST.match(parts.hostname or "") or parts.netloc in extra_hosts):
        return f"presigned URL host {parts.netloc!r} is not an STS endpoint"
    if parts.path not in ("", "/"):
        return f"presigned URL path {parts.path!r} is not /"
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    expected = {
        "Action": "GetCallerIdentity",
        "Version": "2011-06-15",
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
    }
    for key, value in expected.items():
        if query.get(key) != value:
            return f"presigned URL has {key}={query.get(key)!r}, want {value!r}"
    if not _CREDENTIAL.match(query.get("X-Amz-Credential", "")):
        return "X-Amz-Credential is not <key id>/<date>/<region>/sts/aws4_request"
    signed = query.get("X-Amz-SignedHeaders", "").split(";")
    if "host" not in signed or "x-k8s-aws-id" not in signed:
        return "X-Amz-SignedHeaders must include host and x-k8s-aws-id"
    if not re.fullmatch(r"[0-9a-f]{64}", query.get("X-Amz-Signature", "")):
        return "X-Amz-Signature is not a SigV4 signature"
    try:
        signed_at = datetime.strptime(query.get("X-Amz-Date", ""), "%Y%m%dT%H%M%SZ").replace(
            tzinfo=UTC
        )
        expires = int(query.get("X-Amz-Expires", ""))
    except ValueError:
        return "X-Amz-Date or X-Amz-Expires is malformed"
    if not 0 < expires <= 900:
        return f"X-Amz-Expires={expires} is outside 1..900 seconds"
    current = now or datetime.now(UTC)
    # EKS accepts tokens for 15 minutes after signing whatever X-Amz-Expires says.
    if current > signed_at + timedelta(minutes=15) or signed_at > current + timedelta(minutes=5):
        return "token expired or signed in the future"
    return None


def eks_token_checker(extra_hosts: Sequence[str] = ()) -> TokenChecker:
    """A checker accepting well-formed, unexpired EKS tokens (see `eks_token_problem`)."""

    def check(token: str) -> bool:
        return eks_token_problem(token, extra_hosts=extra_hosts) is None

    return check
