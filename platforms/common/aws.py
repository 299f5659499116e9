"""boto3 in an asyncio process, shared by the AWS plugins: credentials, clients, errors, flavors.

boto3 is synchronous; every call runs in a worker thread (`asyncio.to_thread`) so the CCRM's
event loop keeps serving. botocore's "standard" retry mode retries throttling and transient
faults with backoff; what still fails afterwards becomes an `EdgeError` subclass whose message
says what to do, so no plugin ever inspects botocore exceptions:

- throttling that outlasted the retries, AWS-side faults, unreachable endpoints and things
  still in use (network interfaces EKS releases minutes after a cluster is gone) are
  `PlatformTransientError`;
- limits and capacity are `PlatformResourceExhausted`;
- refused credentials and every other refusal are `PlatformPermanentError`, AWS's own code
  and message kept.

The instance-type catalogue (one large listing that changes a few times a year) is cached per
endpoint, region and filter for an hour, as the original's `MEX_PLATFORM_STATS_MAX_CACHE_TIME`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session

from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.platform import (
    PlatformPermanentError,
    PlatformResourceExhausted,
    PlatformTransientError,
)

__all__ = [
    "ACCESS_KEY_ID",
    "CATALOGUE_TTL",
    "MAX_ATTEMPTS",
    "SECRET_ACCESS_KEY",
    "SESSION_TOKEN",
    "AwsCredentials",
    "AwsSession",
    "InstanceSize",
    "credentials_from",
    "error_code",
    "translate",
]

T = TypeVar("T")

log = logging.getLogger(__name__)

ACCESS_KEY_ID: Final = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY: Final = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name
SESSION_TOKEN: Final = "AWS_SESSION_TOKEN"  # noqa: S105 - a variable name

MAX_ATTEMPTS: Final = 4
"""Attempts per API call in botocore's standard retry mode (throttling included)."""
CATALOGUE_TTL: Final = 3600.0
"""Seconds an instance-type catalogue is reused (`MEX_PLATFORM_STATS_MAX_CACHE_TIME`)."""

_LOADER: Final = botocore.loaders.create_loader()
"""Service models, read from disk once per process instead of once per client (~0.3 s each)."""

InstanceSize = tuple[int, int, int]
"""An instance type's vCPUs, RAM in MiB and instance storage in GB (0 without any)."""


@dataclass(frozen=True, slots=True)
class _Catalogue:
    fetched: float
    types: Mapping[str, InstanceSize]


_catalogues: dict[tuple[str, str, str], _Catalogue] = {}
_catalogue_locks: dict[tuple[str, str, str], asyncio.Lock] = {}

_THROTTLED: Final = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
    }
)
_EXHAUSTED: Final = frozenset(
    {
        "LimitExceeded",
        "LimitExceededException",
        "ServiceQuotaExceededException",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "InsufficientInstanceCapacity",
        "InsufficientAddressCapacity",
        "AddressLimitExceeded",
        "VpcLimitExceeded",
        "NatGatewayLimitExceeded",
        "InternetGatewayLimitExceeded",
        "SecurityGroupLimitExceeded",
        "RulesPerSecurityGroupLimitExceeded",
        "NetworkInterfaceLimitExceeded",
        "RouteTableLimitExceeded",
        "SubnetLimitExceeded",
        "VolumeLimitExceeded",
        "MaxIOPSLimitExceeded",
    }
)
_BAD_CREDENTIALS: Final = frozenset(
    {
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "AccessDenied",
        "UnauthorizedOperation",
        "OptInRequired",
    }
)
_EXPIRED: Final = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
"""Expired credentials: permanent for fixed keys, transient when the session renews them."""
_TRANSIENT: Final = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
        "IncorrectState",
    }
)
_IN_USE: Final = frozenset({"DependencyViolation", "ResourceInUseException"})
"""Refusals that pass by themselves: network interfaces EKS releases minutes after a cluster
is gone, a cluster whose node group is still being deleted."""
_UNREACHABLE: Final = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectTimeoutError,
)


def error_code(err: BaseException) -> str:
    """The AWS error code of a botocore `ClientError`, empty for anything else."""
    if isinstance(err, botocore.exceptions.ClientError):
        return str(err.response.get("Error", {}).get("Code", ""))
    return ""


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """One set of AWS keys.

    Attributes:
        access_key_id: `AWS_ACCESS_KEY_ID`.
        secret_access_key: `AWS_SECRET_ACCESS_KEY`.
        session_token: `AWS_SESSION_TOKEN` of temporary credentials; may be empty.
        source: Where they came from, for messages ("access vars", "environment").
        expires: When temporary credentials stop working; None for account keys.
    """

    access_key_id: str
    secret_access_key: str
    session_token: str = ""
    source: str = "access vars"
    expires: dt.datetime | None = None

    def __repr__(self) -> str:
        return (
            f"AwsCredentials(access_key_id={self.access_key_id!r}, source={self.source!r}, "
            f"expires={self.expires})"
        )


def credentials_from(
    access_vars: Mapping[str, str], process_env: Mapping[str, str], cloudlet: str
) -> AwsCredentials:
    """A cloudlet's account keys: its access vars, else (a daemon without Vault) the environment.

    Args:
        access_vars: The cloudlet's access vars (from Vault through the access API).
        process_env: The daemon's environment, under boto3's standard names.
        cloudlet: Names the cloudlet in the error.

    Raises:
        InvalidArgument: Neither carries both keys.
    """
    source, where = access_vars, "access vars"
    if not access_vars.get(ACCESS_KEY_ID):
        source, where = process_env, "environment"
    key, secret = source.get(ACCESS_KEY_ID, ""), source.get(SECRET_ACCESS_KEY, "")
    if not key or not secret:
        raise InvalidArgument(
            f"cloudlet {cloudlet} has no AWS credentials: give it the access vars "
            f"{ACCESS_KEY_ID} and {SECRET_ACCESS_KEY} (or, without Vault, set them in the "
            "CCRM's environment)"
        )
    return AwsCredentials(key, secret, source.get(SESSION_TOKEN, ""), where)


def translate(
    err: BaseException,
    what: str,
    *,
    region: str,
    credentials: AwsCredentials | None = None,
    attempts: int = MAX_ATTEMPTS,
    renewing: bool = False,
) -> EdgeError:
    """An AWS failure as our error, with a message a person can act on.

    Args:
        err: What boto3 raised.
        what: The operation in words ("ec2 run_instances").
        region: Where it ran.
        credentials: The keys used, named in messages about refused credentials.
        attempts: botocore's attempts per call, for the throttling message.
        renewing: The caller renews its session credentials by itself, so an expired token
            is worth a retry rather than an operator's attention.

    Returns:
        The platform error class that tells the caller whether to retry.
    """
    if isinstance(err, botocore.exceptions.ClientError):
        code = error_code(err) or "Unknown"
        message = str(err.response.get("Error", {}).get("Message", "")) or code
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = f"AWS {what} failed in {region}: {code}: {message}"
        if code in _THROTTLED:
            return PlatformTransientError(
                f"{text} (still throttled after {attempts} attempts: too many API calls on "
                "this account; try later)",
                retry_after=30.0,
            )
        if code in _EXHAUSTED:
            return PlatformResourceExhausted(
                f"{text}; free resources in the region or ask AWS for a higher limit"
            )
        if code in _EXPIRED and renewing:
            return PlatformTransientError(f"{text} (session credentials are being renewed)")
        if code in _BAD_CREDENTIALS or code in _EXPIRED:
            keys = (
                f"the {credentials.source} (key id {credentials.access_key_id})"
                if credentials is not None
                else "the cloudlet"
            )
            return PlatformPermanentError(
                f"{text}; AWS refused the credentials from {keys}: check {ACCESS_KEY_ID} and "
                f"{SECRET_ACCESS_KEY} and the IAM permissions of that user"
            )
        if code in _IN_USE:
            return PlatformTransientError(f"{text} (still in use; try again in a few minutes)")
        if code in _TRANSIENT or status >= 500:
            return PlatformTransientError(f"{text}; retry later")
        return PlatformPermanentError(text)
    if isinstance(err, botocore.exceptions.NoCredentialsError):
        return PlatformPermanentError(
            f"AWS {what}: no credentials; set the access vars {ACCESS_KEY_ID} and "
            f"{SECRET_ACCESS_KEY} on the cloudlet"
        )
    if isinstance(err, botocore.exceptions.WaiterError):
        reason = err.last_response.get("Error", {}).get("Message", "") if err.last_response else ""
        return PlatformPermanentError(
            f"AWS {what} did not reach the wanted state: {err.kwargs.get('reason', err)}"
            + (f" ({reason})" if reason else "")
        )
    if isinstance(err, _UNREACHABLE):
        return PlatformTransientError(f"AWS {what}: cannot reach the endpoint: {err}")
    if isinstance(err, botocore.exceptions.ParamValidationError):
        return PlatformPermanentError(f"AWS {what}: bad request: {err}")
    if isinstance(err, botocore.exceptions.BotoCoreError):
        return PlatformTransientError(f"AWS client failure during {what} in {region}: {err}")
    return EdgeError(f"unexpected failure during AWS {what}: {err!r}")


def _size(item: Mapping[str, Any]) -> InstanceSize:
    return (
        int(item.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        int(item.get("MemoryInfo", {}).get("SizeInMiB", 0)),
        int(item.get("InstanceStorageInfo", {}).get("TotalSizeInGB", 0)),
    )


class AwsSession:
    """boto3 clients for one set of credentials and one region, called without blocking.

    Args:
        credentials: The keys.
        region: The AWS region every call goes to.
        endpoint_url: One endpoint for every service, or empty for AWS's own.
        max_attempts: botocore "standard" retry attempts per call, first one included.
        agent: Appended to the user agent, so AWS-side logs name the plugin.
        renewing: The owner renews these credentials (see `translate`).
    """

    def __init__(
        self,
        credentials: AwsCredentials,
        region: str,
        *,
        endpoint_url: str = "",
        max_attempts: int = MAX_ATTEMPTS,
        agent: str = "edge-cloud-platform",
        renewing: bool = False,
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.endpoint_url = endpoint_url
        self.max_attempts = max_attempts
        self._renewing = renewing
        core = botocore.session.get_session()
        core.register_component("data_loader", _LOADER)
        self._session = boto3.session.Session(
            botocore_session=core,
            aws_access_key_id=credentials.access_key_id,
            aws_secret_access_key=credentials.secret_access_key,
            aws_session_token=credentials.session_token or None,
            region_name=region,
        )
        self._config = botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=10,
            read_timeout=60,
            user_agent_extra=agent,
        )
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        """A cached boto3 client (clients are thread-safe; sessions are not, so build here)."""
        found = self._clients.get(service)
        if found is None:
            found = self._session.client(
                service, endpoint_url=self.endpoint_url or None, config=self._config
            )
            self._clients[service] = found
        return found

    def translate(self, what: str, err: BaseException) -> EdgeError:
        """The platform error for a failure of this session's work (see `translate`)."""
        return translate(
            err,
            what,
            region=self.region,
            credentials=self.credentials,
            attempts=self.max_attempts,
            renewing=self._renewing,
        )

    async def call(
        self, service: str, operation: str, /, *, settle: bool = True, **params: Any
    ) -> dict[str, Any]:
        """One API call in a worker thread, errors translated.

        Args:
            service: boto3 service name (`eks`, `ec2`, `iam`, ...).
            operation: The client method (`describe_cluster`).
            settle: See `run`.
            **params: Its parameters.

        Returns:
            The response dictionary.

        Raises:
            EdgeError: The translated failure.
        """
        client = await asyncio.to_thread(self.client, service)
        method = getattr(client, operation)
        return await self.run(
            f"{service} {operation}", functools.partial(method, **params), settle=settle
        )

    async def run(self, what: str, fn: Callable[[], T], *, settle: bool = True) -> T:
        """Run any blocking boto3 work (a waiter, a paginator) in a thread, errors translated.

        Args:
            what: Names the work in errors.
            fn: The work.
            settle: On cancellation, wait for the thread's call to land before raising, so
                the caller's cleanup finds what it made instead of racing it. Waiters, which
                make nothing and may poll for minutes, pass False.

        Raises:
            EdgeError: The translated failure; anything not from botocore propagates as is.
        """
        job = asyncio.ensure_future(asyncio.to_thread(fn))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            if settle:
                with contextlib.suppress(Exception):
                    await job
            raise
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise self.translate(what, err) from err

    async def pages(
        self, service: str, operation: str, key: str, **params: Any
    ) -> list[dict[str, Any]]:
        """Every item of a (possibly paginated) listing.

        Args:
            service: boto3 service name.
            operation: The client method (`describe_instances`).
            key: The list in each page (`Reservations`).
            **params: The request.
        """
        client = await asyncio.to_thread(self.client, service)

        def collect() -> list[dict[str, Any]]:
            if not client.can_paginate(operation):
                return list(getattr(client, operation)(**params).get(key, []))
            items: list[dict[str, Any]] = []
            for page in client.get_paginator(operation).paginate(**params):
                items.extend(page.get(key, []))
            return items

        return await self.run(f"{service} {operation}", collect, settle=False)

    async def wait(
        self, service: str, waiter: str, delay: float, attempts: int, **params: Any
    ) -> None:
        """Wait with a boto3 waiter (`instance_running`, `nat_gateway_available`, ...).

        Raises:
            PlatformTransientError: The state did not come in time.
            EdgeError: A translated API failure the waiter met.
        """
        client = await asyncio.to_thread(self.client, service)
        config = {"Delay": delay, "MaxAttempts": attempts}
        fn = functools.partial(client.get_waiter(waiter).wait, WaiterConfig=config, **params)
        what = f"{service} {waiter}"
        try:
            await asyncio.to_thread(fn)
        except botocore.exceptions.WaiterError as err:
            if err.last_response and err.last_response.get("Error", {}).get("Code"):
                refusal = botocore.exceptions.ClientError(err.last_response, waiter)
                raise self.translate(what, refusal) from err
            raise PlatformTransientError(
                f"waited {delay * attempts:g}s for {what} in {self.region} and it did not "
                "happen; retry later"
            ) from err
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise self.translate(what, err) from err

    async def instance_types(
        self, filters: Sequence[Mapping[str, Any]] = ()
    ) -> Mapping[str, InstanceSize]:
        """The region's EC2 instance types and their sizes, cached for `CATALOGUE_TTL`.

        `describe_instance_types` lists only the types offered in the session's region. The
        catalogue is shared by every session on the same endpoint and region (it is the same
        for every account), and one listing runs at a time so concurrent cloudlet inits do
        not each pay for it.

        Args:
            filters: `describe_instance_types` filters (the EC2 plugin keeps types with
                instance storage, as the original).

        Returns:
            Instance type name to (vCPUs, RAM in MiB, instance storage in GB).
        """
        key = (self.endpoint_url, self.region, repr(list(filters)))
        lock = _catalogue_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = _catalogues.get(key)
            if cached is not None and time.monotonic() - cached.fetched < CATALOGUE_TTL:
                return cached.types
            params: dict[str, Any] = {"Filters": list(filters)} if filters else {}
            items = await self.pages("ec2", "describe_instance_types", "InstanceTypes", **params)
            types = {str(i["InstanceType"]): _size(i) for i in items}
            _catalogues[key] = _Catalogue(time.monotonic(), types)
            log.debug("%d instance types in %s", len(types), self.region)
            return types

    async def sizes_of(self, names: Sequence[str]) -> dict[str, InstanceSize]:
        """Sizes of named instance types, asked of AWS directly (outside any catalogue)."""
        if not names:
            return {}
        items = await self.pages(
            "ec2", "describe_instance_types", "InstanceTypes", InstanceTypes=list(names)
        )
        return {str(i["InstanceType"]): _size(i) for i in items}

    async def default_quotas(
        self, service: str, defaults: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        """AWS's default quotas of one service (`list_aws_default_service_quotas`).

        Args:
            service: The Service Quotas service code (`eks`, `elasticloadbalancing`).
            defaults: AWS's published values for the codes Service Quotas may not answer (it
                may not serve the service in a region; moto serves only `vpc`).

        Returns:
            Quota code to value.
        """
        client = await asyncio.to_thread(self.client, "service-quotas")

        def collect() -> list[dict[str, Any]]:
            pages = client.get_paginator("list_aws_default_service_quotas").paginate(
                ServiceCode=service
            )
            return [q for page in pages for q in page.get("Quotas", [])]

        try:
            listed = await self.run(f"service-quotas list ({service})", collect, settle=False)
        except PlatformPermanentError as err:
            if error_code(err.__cause__ or err) != "NoSuchResourceException":
                raise
            listed = []
        values = {str(q["QuotaCode"]): int(q["Value"]) for q in listed}
        for code, default in (defaults or {}).items():
            if code not in values:
                log.info(
                    "Service Quotas does not list %s quota %s in %s; using AWS's default %d",
                    service,
                    code,
                    self.region,
                    default,
                )
                values[code] = default
        return values
