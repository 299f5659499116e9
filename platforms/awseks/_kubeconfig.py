"""EKS kubeconfigs: the cluster's endpoint and CA plus an IAM bearer token.

EKS authenticates Kubernetes API callers with a token made from a presigned STS
`GetCallerIdentity` URL (what `aws eks get-token` prints): the URL carries the signed header
`x-k8s-aws-id: <cluster name>`, is base64url-encoded without padding and prefixed with
`k8s-aws-v1.`. The API server (its aws-iam-authenticator) calls the URL; STS answers with
our identity only if the signature is good, and accepts it for 15 minutes after signing.
We sign a fresh token for every kubeconfig and keep a kubeconfig no longer than
`TOKEN_LIFETIME` minus a margin, so nothing downstream holds an expired token.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from platforms.awseks._aws import EksSession

__all__ = [
    "TOKEN_HEADER",
    "TOKEN_LIFETIME",
    "TOKEN_PREFIX",
    "ClusterAccess",
    "build_kubeconfig",
    "decode_token",
    "make_token",
]

TOKEN_PREFIX: Final = "k8s-aws-v1."  # noqa: S105 - a format prefix, not a secret
TOKEN_HEADER: Final = "x-k8s-aws-id"  # noqa: S105 - a header name
TOKEN_LIFETIME: Final = 15 * 60.0
"""Seconds an STS-signed token is accepted after signing (aws-iam-authenticator's rule)."""
_REFRESH_MARGIN: Final = 60.0
_PRESIGN_EXPIRES: Final = 60
_SIGNING: Final = threading.Lock()  # the header hook is per client, and clients are shared


def make_token(session: EksSession, cluster_name: str) -> str:
    """Sign a bearer token for one cluster (blocking: call it in a thread).

    Args:
        session: The account's session; the STS client honours its endpoint URL.
        cluster_name: The EKS cluster name, signed into the URL's `x-k8s-aws-id` header.

    Returns:
        `k8s-aws-v1.` + base64url(presigned URL), unpadded.
    """
    sts = session.client("sts")

    def add_header(request: Any, **_: Any) -> None:
        request.headers[TOKEN_HEADER] = cluster_name

    event = "before-sign.sts.GetCallerIdentity"
    with _SIGNING:
        sts.meta.events.register(event, add_header)
        try:
            url = sts.generate_presigned_url(
                "get_caller_identity", Params={}, ExpiresIn=_PRESIGN_EXPIRES, HttpMethod="GET"
            )
        finally:
            sts.meta.events.unregister(event, add_header)
    encoded = base64.urlsafe_b64encode(str(url).encode()).decode().rstrip("=")
    return TOKEN_PREFIX + encoded


def decode_token(token: str) -> str:
    """The presigned URL inside a token.

    Raises:
        ValueError: Not a `k8s-aws-v1.` token.
    """
    if not token.startswith(TOKEN_PREFIX):
        raise ValueError(f"not an EKS token (no {TOKEN_PREFIX} prefix)")
    body = token[len(TOKEN_PREFIX) :]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


@dataclass(frozen=True, slots=True)
class ClusterAccess:
    """How to reach one cluster's API.

    Attributes:
        name: The EKS cluster name (also the kubeconfig's cluster, user and context name).
        endpoint: API server URL (EKS's, or the operator's override).
        ca_data: Base64 PEM of the CA to trust; empty for a plain-HTTP override.
        token: A bearer token from `make_token`.
        signed_at: `time.time()` when the token was signed.
    """

    name: str
    endpoint: str
    ca_data: str
    token: str
    signed_at: float

    @property
    def fresh(self) -> bool:
        """Whether the token has more than a minute of its 15 left."""
        return time.time() - self.signed_at < TOKEN_LIFETIME - _REFRESH_MARGIN


def build_kubeconfig(access: ClusterAccess) -> bytes:
    """A kubeconfig (JSON, which every YAML parser reads) with the token inlined.

    The token is inlined rather than an `exec` plugin calling the AWS CLI: the CCRM has no
    AWS CLI, and the Controller hands the file to users who may not either; it carries an
    `expirationTimestamp`-free token, so holders must fetch a new one within 15 minutes.
    """
    cluster: dict[str, Any] = {"server": access.endpoint}
    if access.ca_data:
        cluster["certificate-authority-data"] = access.ca_data
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": access.name, "cluster": cluster}],
        "users": [{"name": access.name, "user": {"token": access.token}}],
        "contexts": [
            {"name": access.name, "context": {"cluster": access.name, "user": access.name}}
        ],
        "current-context": access.name,
    }
    return json.dumps(config, indent=2).encode()
