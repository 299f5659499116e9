"""AWS plumbing for the EKS plugin: credentials, clients, error translation, flavors, quotas.

boto3 is synchronous; every call goes through `AwsSession.call`, which runs it in a worker
thread (`asyncio.to_thread`) so the CCRM's event loop keeps serving, and translates
botocore's failures into the platform error classes: throttling and connection trouble
are transient (botocore's "standard" retry mode has already retried them), refused
credentials and invalid requests are permanent, with AWS's own message kept.

Nothing here is EKS-specific except the quota codes; the EC2 plugin needs the same
session, error and flavor handling (see README.md, "What could be shared").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import boto3
import botocore.config
import botocore.exceptions
from edgeproto import cloudlet_pb2

from edge_cloud.platform import (
    PlatformPermanentError,
    PlatformResourceExhausted,
    PlatformTransientError,
)

__all__ = [
    "DEFAULT_QUOTAS",
    "QUOTA_CLUSTERS",
    "QUOTA_NETWORK_LBS",
    "QUOTA_NODEGROUPS_PER_CLUSTER",
    "QUOTA_NODES_PER_NODEGROUP",
    "AwsCredentials",
    "AwsSession",
    "error_code",
]

T = TypeVar("T")

log = logging.getLogger(__name__)

# Service Quotas codes the original reads (crm_platforms.md §11.6)
QUOTA_CLUSTERS: Final = ("eks", "L-1194D53C")
QUOTA_NODEGROUPS_PER_CLUSTER: Final = ("eks", "L-6D54EA21")
QUOTA_NODES_PER_NODEGROUP: Final = ("eks", "L-BD136A63")
QUOTA_NETWORK_LBS: Final = ("elasticloadbalancing", "L-69A177A2")

DEFAULT_QUOTAS: Final[Mapping[tuple[str, str], int]] = {
    QUOTA_CLUSTERS: 100,
    QUOTA_NODEGROUPS_PER_CLUSTER: 30,
    QUOTA_NODES_PER_NODEGROUP: 450,
    QUOTA_NETWORK_LBS: 50,
}
"""AWS's published default quotas, used when Service Quotas cannot answer for a service
(moto, for one, serves only the `vpc` service code)."""

FLAVOR_CACHE_SECONDS: Final = 3600.0
"""How long a region's instance types are reused. They change a few times a year, and
listing them is one large call (1,400 types; seconds against AWS, ten against moto), which
every cloudlet init would otherwise repeat."""
_OFFERED_CACHE: dict[tuple[str, str, str], tuple[float, tuple[str, ...]]] = {}
_FLAVOR_CACHE: dict[
    tuple[str, str, str, str], tuple[float, tuple[cloudlet_pb2.FlavorInfo, ...]]
] = {}

_THROTTLED: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "ServerException",
    }
)
_BAD_CREDENTIALS: Final = frozenset(
    {
        "AuthFailure",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)
_IN_USE: Final = frozenset({"DependencyViolation", "ResourceInUseException"})
"""Refusals that pass by themselves: network interfaces EKS releases minutes after a cluster
is gone, a cluster whose node group is still being deleted."""
_EXHAUSTED: Final = frozenset(
    {"LimitExceeded", "LimitExceededException", "ServiceQuotaExceededException"}
)


def error_code(err: BaseException) -> str:
    """The AWS error code of a botocore `ClientError`, empty for anything else."""
    if isinstance(err, botocore.exceptions.ClientError):
        return str(err.response.get("Error", {}).get("Code", ""))
    return ""


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """An account's keys (access vars, or the daemon's environment as a fallback).

    Attributes:
        access_key_id: `AWS_ACCESS_KEY_ID`.
        secret_access_key: `AWS_SECRET_ACCESS_KEY`.
        session_token: `AWS_SESSION_TOKEN`, for temporary credentials; may be empty.
        source: Where they came from, for messages ("access vars", "environment").
    """

    access_key_id: str
    secret_access_key: str
    session_token: str = ""
    source: str = "access vars"

    def __repr__(self) -> str:
        return f"AwsCredentials(access_key_id={self.access_key_id!r}, source={self.source!r})"


class AwsSession:
    """boto3 clients for one account and region, called without blocking the event loop.

    Args:
        credentials: The account's keys.
        region: The AWS region (`AWS_REGION`).
        endpoint_url: One endpoint for every service (`AWS_ENDPOINT_URL`), or empty for AWS's.
        max_attempts: botocore "standard" retry attempts per call, first one included.
    """

    def __init__(
        self,
        credentials: AwsCredentials,
        region: str,
        *,
        endpoint_url: str = "",
        max_attempts: int = 4,
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.endpoint_url = endpoint_url
        self._session = boto3.session.Session(
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token or None,
            region_name=region,
        )
        self._config = botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=10,
            read_timeout=60,
        )
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        """A cached boto3 client (clients are thread-safe; sessions are not)."""
        found = self._clients.get(service)
        if found is None:
            kwargs: dict[str, Any] = {"config": self._config}
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            found = self._session.client(service, **kwargs)
            self._clients[service] = found
        return found

    async def call(self, service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        """One API call in a worker thread, errors translated.

        Args:
            service: boto3 service name (`eks`, `ec2`, `iam`, ...).
            operation: The client method (`describe_cluster`).
            **params: Its parameters.

        Returns:
            The response dictionary.

        Raises:
            PlatformTransientError: Throttled or unreachable after botocore's retries.
            PlatformPermanentError: AWS refused (credentials, invalid request, missing thing).
        """
        method = getattr(self.client(service), operation)
        return await self.run(f"{service} {operation}", functools.partial(method, **params))

    async def run(self, what: str, fn: Callable[[], T], *, settle: bool = True) -> T:
        """Run any blocking boto3 work (a waiter, a paginator) in a thread, errors translated.

        Args:
            what: Names the work in errors.
            fn: The work.
            settle: On cancellation, wait for the thread's call to land before raising, so
                the caller's cleanup finds what it made instead of racing it. Waiters, which
                make nothing and may poll for minutes, pass False.
        """
        call = asyncio.ensure_future(asyncio.to_thread(fn))
        try:
            try:
                return await asyncio.shield(call)
            except asyncio.CancelledError:
                if settle:
                    with contextlib.suppress(Exception):
                        await call
                raise
        except botocore.exceptions.ClientError as err:
            raise self.translate(what, err) from err
        except botocore.exceptions.WaiterError as err:
            reason = (
                err.last_response.get("Error", {}).get("Message", "") if err.last_response else ""
            )
            raise PlatformPermanentError(
                f"AWS {what} did not reach the wanted state: {err.kwargs.get('reason', err)}"
                + (f" ({reason})" if reason else "")
            ) from err
        except botocore.exceptions.NoCredentialsError as err:
            raise PlatformPermanentError(
                f"AWS {what}: no credentials; set the access vars AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY on the cloudlet"
            ) from err
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.ConnectionClosedError,
        ) as err:
            raise PlatformTransientError(f"AWS {what}: cannot reach the endpoint: {err}") from err
        except botocore.exceptions.BotoCoreError as err:
            raise PlatformPermanentError(f"AWS {what} failed in {self.region}: {err}") from err

    def translate(self, what: str, err: botocore.exceptions.ClientError) -> Exception:
        """The platform error for an AWS refusal."""
        code = error_code(err)
        message = err.response.get("Error", {}).get("Message", "") or str(err)
        text = f"AWS {what} failed in {self.region}: {code}: {message}"
        if code in _THROTTLED:
            return PlatformTransientError(f"{text} (still throttled after retries; try later)")
        if code in _BAD_CREDENTIALS:
            return PlatformPermanentError(
                f"{text}; AWS refused the credentials from the {self.credentials.source} "
                f"(key id {self.credentials.access_key_id}): check AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY"
            )
        if code in _EXHAUSTED:
            return PlatformResourceExhausted(text)
        if code in _IN_USE:
            return PlatformTransientError(f"{text} (still in use; try again in a few minutes)")
        return PlatformPermanentError(text)

    # -- flavors and quotas ----------------------------------------------------------------------

    async def instance_types(self, pattern: str) -> list[cloudlet_pb2.FlavorInfo]:
        """The EC2 instance types offered in the region, as flavors, names filtered by a regex.

        Two steps, as the AWS CLI's users do: `describe_instance_type_offerings` for the
        names offered in this region, then `describe_instance_types` for the matching ones
        only (100 per call). Results are kept per account, region and pattern for
        `FLAVOR_CACHE_SECONDS`.

        Args:
            pattern: `FLAVOR_MATCH_PATTERN` (searched, as Go's `regexp.MatchString` does).

        Returns:
            Flavors sorted by name: vCPUs, RAM in MB, and instance storage in GB (0 when
            the type has none: EBS volumes are sized separately).
        """
        regex = re.compile(pattern)
        account = (self.endpoint_url, self.region, self.credentials.access_key_id)
        cache_key = (*account, pattern)
        cached = _FLAVOR_CACHE.get(cache_key)
        if cached is None or time.monotonic() - cached[0] >= FLAVOR_CACHE_SECONDS:
            names = sorted(n for n in await self._offered(account) if regex.search(n))
            found: list[cloudlet_pb2.FlavorInfo] = []
            for start in range(0, len(names), 100):
                reply = await self.call(
                    "ec2", "describe_instance_types", InstanceTypes=names[start : start + 100]
                )
                found.extend(
                    cloudlet_pb2.FlavorInfo(
                        name=t["InstanceType"],
                        vcpus=int(t.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
                        ram=int(t.get("MemoryInfo", {}).get("SizeInMiB", 0)),
                        disk=int(t.get("InstanceStorageInfo", {}).get("TotalSizeInGB", 0)),
                    )
                    for t in reply.get("InstanceTypes", [])
                )
            found.sort(key=lambda f: f.name)
            cached = (time.monotonic(), tuple(found))
            _FLAVOR_CACHE[cache_key] = cached
        return [
            cloudlet_pb2.FlavorInfo(name=f.name, vcpus=f.vcpus, ram=f.ram, disk=f.disk)
            for f in cached[1]
        ]

    async def _offered(self, account: tuple[str, str, str]) -> tuple[str, ...]:
        """Names of the instance types offered in the region (kept like the flavors)."""
        kept = _OFFERED_CACHE.get(account)
        if kept is not None and time.monotonic() - kept[0] < FLAVOR_CACHE_SECONDS:
            return kept[1]
        ec2 = self.client("ec2")

        def offered() -> list[str]:
            pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
                LocationType="region"
            )
            return [o["InstanceType"] for p in pages for o in p["InstanceTypeOfferings"]]

        names = tuple(await self.run("ec2 describe_instance_type_offerings", offered))
        _OFFERED_CACHE[account] = (time.monotonic(), names)
        return names

    async def quotas(self, service: str) -> dict[str, int]:
        """AWS's default quotas of one service (`list_aws_default_service_quotas`).

        Args:
            service: The Service Quotas service code (`eks`, `elasticloadbalancing`).

        Returns:
            Quota code to value; AWS's published defaults (`DEFAULT_QUOTAS`) for the codes
            Service Quotas does not answer (it may not serve the service in a region; moto
            serves only `vpc`).
        """

        def collect() -> list[dict[str, Any]]:
            pages = (
                self.client("service-quotas")
                .get_paginator("list_aws_default_service_quotas")
                .paginate(ServiceCode=service)
            )
            return [q for page in pages for q in page.get("Quotas", [])]

        try:
            listed = await self.run(f"service-quotas list ({service})", collect)
        except PlatformPermanentError as err:
            if error_code(err.__cause__ or err) != "NoSuchResourceException":
                raise
            listed = []
        values = {str(q["QuotaCode"]): int(q["Value"]) for q in listed}
        for (svc, code), default in DEFAULT_QUOTAS.items():
            if svc == service and code not in values:
                log.info(
                    "Service Quotas does not list %s quota %s in %s; using AWS's default %d",
                    service,
                    code,
                    self.region,
                    default,
                )
                values[code] = default
        return values
