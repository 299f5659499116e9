"""Bearer-token checks: a static token, and EKS's STS-presigned tokens.

EKS authenticates `k8s-aws-v1.<base64url(presigned GetCallerIdentity URL)>` by calling STS
with that URL. Offline, the checker verifies what STS would: the prefix, the encoding, the
STS endpoint (AWS's, or allowed emulator hosts such as moto on loopback), the SigV4 query
parameters, the signed `x-k8s-aws-id` header, the expiry and — given the accounts' secret
keys — the SigV4 signature itself, recomputed for the cluster the server stands for. moto
cannot answer a presigned GET itself (it infers the service from the Authorization header or
the host, and a presigned URL has neither), so the signature is checked here, and a token
from the EKS plugin that AWS would refuse is refused here too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, urlsplit

EKS_TOKEN_PREFIX = "k8s-aws-v1."
_STS_HOST = re.compile(r"^sts(\.[a-z0-9-]+)?\.amazonaws\.com(\.cn)?$")
_CREDENTIAL = re.compile(r"^[A-Z0-9]{16,128}/\d{8}/[a-z0-9-]+/sts/aws4_request$")

TOKEN_HEADER = "x-k8s-aws-id"
"""The header EKS tokens sign with the cluster's name."""

TokenChecker = Callable[[str], bool]
Clusters = str | Collection[str] | Callable[[], Collection[str]]
"""The cluster name(s) a server stands for: one, a collection the caller may keep adding
to, or a function asked at each check."""


def eks_token_problem(
    token: str,
    *,
    extra_hosts: Sequence[str] = (),
    now: datetime | None = None,
    accounts: Mapping[str, str] | None = None,
    clusters: Clusters = (),
) -> str | None:
    """Why STS would refuse `token`, or None when it would accept it.

    Without `accounts` only the shape is checked (a token signed by nobody in particular
    passes); with them the signature must be one the key id's secret reproduces for one of
    `clusters`, as STS and the EKS authenticator check it.

    Args:
        token: The bearer token.
        extra_hosts: Allowed STS hosts (`host[:port]`) besides `sts[.region].amazonaws.com`:
            an STS emulator on loopback, which may be plain http.
        now: The current time, for tests of expiry.
        accounts: Secret access key by access key id (the accounts STS knows).
        clusters: The cluster name(s) the token must be for (with `accounts`).
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
    if accounts is None:
        return None
    return _signature_problem(parts.netloc, query, accounts, clusters)


def _cluster_names(clusters: Clusters) -> list[str]:
    if isinstance(clusters, str):
        return [clusters]
    if callable(clusters):
        return list(clusters())
    return list(clusters)


def _signature_problem(
    host: str, query: Mapping[str, str], accounts: Mapping[str, str], clusters: Clusters
) -> str | None:
    """Why the SigV4 signature of a presigned GetCallerIdentity is not valid, or None."""
    key_id, day, region, service, _ = query["X-Amz-Credential"].split("/")
    secret = accounts.get(key_id)
    if secret is None:
        return f"unknown access key id {key_id}"
    signed = query["X-Amz-SignedHeaders"].split(";")
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted(query.items())
        if k != "X-Amz-Signature"
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    names = _cluster_names(clusters)
    for cluster in names:
        values = {"host": host, TOKEN_HEADER: cluster}
        if any(h not in values for h in signed):
            return f"X-Amz-SignedHeaders {signed} signs headers an EKS token does not carry"
        canonical = "\n".join(
            [
                "GET",
                "/",
                canonical_query,
                "".join(f"{h}:{values[h]}\n" for h in signed),
                ";".join(signed),
                hashlib.sha256(b"").hexdigest(),  # a GET has an empty body, and SigV4 signs it
            ]
        )
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        to_sign = "\n".join(["AWS4-HMAC-SHA256", query["X-Amz-Date"], scope, digest])
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected, query["X-Amz-Signature"]):
            return None
    return (
        f"token signature does not match (wrong secret, cluster or host): not signed by "
        f"{key_id} for any of the clusters {names}"
    )


def eks_token_checker(
    extra_hosts: Sequence[str] = (),
    *,
    accounts: Mapping[str, str] | None = None,
    clusters: Clusters = (),
) -> TokenChecker:
    """A checker accepting the EKS tokens STS would (see `eks_token_problem`).

    Args:
        extra_hosts: Allowed STS hosts besides AWS's (an emulator on loopback).
        accounts: Secret key by access key id; without them only the shape is checked.
        clusters: The cluster name(s) this server stands for (checked with `accounts`).
    """

    def check(token: str) -> bool:
        problem = eks_token_problem(
            token, extra_hosts=extra_hosts, accounts=accounts, clusters=clusters
        )
        return problem is None

    return check
