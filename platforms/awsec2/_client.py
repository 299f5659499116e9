"""boto3 in an asyncio process: credentials, sessions, retries and AWS errors as ours.

boto3 is synchronous; every call runs in a worker thread (`asyncio.to_thread`). botocore's
"standard" retry mode retries throttling and transient faults with backoff; what is still
failing afterwards becomes an `EdgeError` subclass whose message says what to do, so no
caller ever inspects botocore exceptions.

Credentials come from the cloudlet's access variables (Vault through the `AccessApi`). A
daemon without Vault may carry them in its own environment under boto3's standard names.
With `AWS_USER_ARN` set, the account keys are used only for `sts.get_session_token` with a
TOTP code from the access API (the MFA flow of the original), and the 24-hour session
credentials are renewed once they are past half their life.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import boto3
import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session

from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.platform import (
    AccessApi,
    PlatformPermanentError,
    PlatformResourceExhausted,
    PlatformTransientError,
)
from platforms.awsec2._props import (
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN,
    AWS_TOTP_SECRET_KEY,
    Settings,
)

__all__ = ["AwsApi", "Credentials", "translate"]

log = logging.getLogger(__name__)

SESSION_SECONDS: Final = 24 * 3600
"""Lifetime asked of MFA session tokens, the original's."""
REFRESH_BEFORE: Final = dt.timedelta(hours=12)
"""Renew session credentials this long before they expire (the original renews every 12 h)."""
MAX_ATTEMPTS: Final = 4
"""Attempts per API call in botocore's standard retry mode (throttling included)."""

_LOADER: Final = botocore.loaders.create_loader()
"""Service models, read from disk once per process instead of once per client (~0.3 s each)."""

_THROTTLED: Final = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
    }
)
_EXHAUSTED: Final = frozenset(
    {
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
        "AccessDenied",
        "UnauthorizedOperation",
        "OptInRequired",
    }
)
_TRANSIENT: Final = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestExpired",
        "ExpiredToken",
        "IncorrectState",
    }
)


def translate(err: Exception, what: str) -> EdgeError:
    """An AWS failure as our error, with a message a person can act on.

    Args:
        err: What boto3 raised.
        what: The operation in words ("run_instances in eu-west-3").

    Returns:
        `PlatformResourceExhausted` for limits and capacity, `PlatformTransientError` for
        throttling that outlasted the retries, AWS-side faults and unreachable endpoints,
        `PlatformPermanentError` for bad credentials and everything AWS refused.
    """
    if isinstance(err, botocore.exceptions.ClientError):
        error = err.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", "")) or code
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _THROTTLED:
            return PlatformTransientError(
                f"AWS throttled {what} ({code}) and still refused after {MAX_ATTEMPTS} "
                "attempts: too many API calls on this account; the operation will be retried",
                retry_after=30.0,
            )
        if code in _EXHAUSTED:
            return PlatformResourceExhausted(
                f"AWS limit reached during {what} ({code}: {message}): free resources in "
                "the region or ask AWS for a higher limit"
            )
        if code in _BAD_CREDENTIALS:
            return PlatformPermanentError(
                f"AWS refused the cloudlet's credentials for {what} ({code}: {message}): check "
                f"the access vars {AWS_ACCESS_KEY_ID} and {AWS_SECRET_ACCESS_KEY} and the IAM "
                "permissions of that user"
            )
        if code in _TRANSIENT or status >= 500:
            return PlatformTransientError(f"AWS failed {what} ({code}: {message}); retry later")
        return PlatformPermanentError(f"AWS refused {what}: {code}: {message}")
    if isinstance(err, botocore.exceptions.NoCredentialsError):
        return PlatformPermanentError(f"no AWS credentials for {what}")
    if isinstance(err, botocore.exceptions.WaiterError):
        return PlatformTransientError(f"waiting for {what} gave up: {err}")
    if isinstance(
        err,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectionClosedError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectTimeoutError,
    ):
        return PlatformTransientError(f"cannot reach the AWS endpoint for {what}: {err}")
    if isinstance(err, botocore.exceptions.ParamValidationError):
        return PlatformPermanentError(f"bad request for {what}: {err}")
    if isinstance(err, botocore.exceptions.BotoCoreError):
        return PlatformTransientError(f"AWS client failure during {what}: {err}")
    return EdgeError(f"unexpected failure during {what}: {err!r}")


@dataclass(frozen=True, slots=True)
class Credentials:
    """One set of AWS keys.

    Attributes:
        access_key_id: Key id.
        secret_access_key: Secret.
        session_token: Session token of temporary credentials, else empty.
        expires: When temporary credentials stop working; None for account keys.
    """

    access_key_id: str
    secret_access_key: str
    session_token: str = ""
    expires: dt.datetime | None = None

    def __repr__(self) -> str:
        return f"Credentials({self.access_key_id!r}, expires={self.expires})"

    @classmethod
    def of(cls, source: Mapping[str, str], where: str) -> Credentials:
        """Account keys from access vars or an environment.

        Raises:
            InvalidArgument: Either key is missing.
        """
        key, secret = source.get(AWS_ACCESS_KEY_ID, ""), source.get(AWS_SECRET_ACCESS_KEY, "")
        if not key or not secret:
            raise InvalidArgument(
                f"the awsec2 cloudlet has no AWS credentials: set the access vars "
                f"{AWS_ACCESS_KEY_ID} and {AWS_SECRET_ACCESS_KEY} when creating it ({where})"
            )
        return cls(key, secret, source.get(AWS_SESSION_TOKEN, ""))


class AwsApi:
    """EC2 and STS clients of one cloudlet, called from asyncio.

    Args:
        settings: The cloudlet's settings (region, endpoint, MFA user).
        account: The account keys.
        access: Where TOTP codes come from when MFA is on.
        mfa: Whether to trade the account keys for MFA session credentials.
    """

    def __init__(
        self, settings: Settings, account: Credentials, access: AccessApi, *, mfa: bool
    ) -> None:
        self.settings = settings
        self._account = account
        self._access = access
        self._mfa = mfa
        self._session: Credentials | None = None
        self._ec2: Any = None
        self._lock = asyncio.Lock()
        self._config = botocore.config.Config(
            retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
            connect_timeout=10,
            read_timeout=60,
            user_agent_extra="edge-cloud-platform/awsec2",
        )

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        access_vars: Mapping[str, str],
        process_env: Mapping[str, str],
        access: AccessApi,
    ) -> AwsApi:
        """Clients from the cloudlet's access vars (or the daemon's environment without them).

        Raises:
            InvalidArgument: No credentials, or MFA asked for without `AWS_USER_ARN`.
        """
        if access_vars.get(AWS_ACCESS_KEY_ID):
            account = Credentials.of(access_vars, "access vars")
        else:
            account = Credentials.of(process_env, "nor does the CCRM's environment carry them")
        mfa = bool(settings.user_arn)
        if AWS_TOTP_SECRET_KEY in access_vars and not mfa:
            raise InvalidArgument(
                "the awsec2 cloudlet has an MFA secret (aws_totp_secret_key) but no AWS_USER_ARN "
                "property to derive the MFA device from"
            )
        return cls(settings, account, access, mfa=mfa)

    @property
    def region(self) -> str:
        """The region every call goes to."""
        return self.settings.region

    def _client(self, service: str, creds: Credentials) -> Any:
        core = botocore.session.get_session()
        core.register_component("data_loader", _LOADER)
        session = boto3.session.Session(
            botocore_session=core,
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            aws_session_token=creds.session_token or None,
            region_name=self.settings.region,
        )
        return session.client(
            service, endpoint_url=self.settings.endpoint_url or None, config=self._config
        )

    async def _session_credentials(self) -> Credentials:
        code = await self._access.get_session_tokens(AWS_TOTP_SECRET_KEY)
        sts = await asyncio.to_thread(self._client, "sts", self._account)
        what = f"sts get_session_token for {self.settings.mfa_serial}"
        try:
            out = await asyncio.to_thread(
                sts.get_session_token,
                SerialNumber=self.settings.mfa_serial,
                TokenCode=code,
                DurationSeconds=SESSION_SECONDS,
            )
        except Exception as err:
            raise translate(err, what) from err
        raw = out["Credentials"]
        expires = raw["Expiration"]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        return Credentials(raw["AccessKeyId"], raw["SecretAccessKey"], raw["SessionToken"], expires)

    async def ec2(self) -> Any:
        """The EC2 client, its session credentials renewed when due."""
        async with self._lock:
            now = dt.datetime.now(dt.UTC)
            due = (
                self._mfa
                and self._session is not None
                and self._session.expires is not None
                and self._session.expires - now < REFRESH_BEFORE
            )
            if self._ec2 is not None and not due:
                return self._ec2
            creds = self._account
            if self._mfa:
                try:
                    self._session = creds = await self._session_credentials()
                except EdgeError:
                    usable = self._session is not None and self._session.expires is not None
                    if self._ec2 is not None and usable and self._session.expires > now:  # type: ignore[union-attr,operator]
                        log.warning("renewing AWS session credentials failed; keeping the old")
                        return self._ec2
                    raise
            self._ec2 = await asyncio.to_thread(self._client, "ec2", creds)
            return self._ec2

    async def sts(self) -> Any:
        """An STS client on the current credentials."""
        await self.ec2()
        return await asyncio.to_thread(self._client, "sts", self._session or self._account)

    async def call(self, op: str, *, settle: bool = False, **params: Any) -> dict[str, Any]:
        """One EC2 API call.

        Args:
            op: The boto3 method (`run_instances`).
            settle: The call creates something: if the caller is cancelled meanwhile, wait
                for the call to land before passing the cancellation on, so clean-up sees
                what it made.
            **params: The request.

        Returns:
            The response.

        Raises:
            EdgeError: The translated failure.
        """
        client = await self.ec2()
        return await self._run(functools.partial(getattr(client, op), **params), op, settle)

    async def _run(self, fn: Callable[[], Any], op: str, settle: bool) -> dict[str, Any]:
        what = f"{op} in {self.region}"
        job = asyncio.ensure_future(asyncio.to_thread(fn))
        try:
            result: dict[str, Any] = await (asyncio.shield(job) if settle else job)
        except asyncio.CancelledError:
            if settle:
                with contextlib.suppress(Exception):
                    await job
            raise
        except Exception as err:
            raise translate(err, what) from err
        return result

    async def pages(self, op: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paginated EC2 listing.

        Args:
            op: The boto3 method (`describe_instances`).
            key: The list in each page (`Reservations`).
            **params: The request.
        """
        client = await self.ec2()

        def collect() -> list[dict[str, Any]]:
            if not client.can_paginate(op):
                return list(getattr(client, op)(**params).get(key, []))
            items: list[dict[str, Any]] = []
            for page in client.get_paginator(op).paginate(**params):
                items.extend(page.get(key, []))
            return items

        what = f"{op} in {self.region}"
        try:
            return await asyncio.to_thread(collect)
        except Exception as err:
            raise translate(err, what) from err

    async def wait(self, waiter: str, delay: float, attempts: int, **params: Any) -> None:
        """Wait with a boto3 waiter (`instance_running`, `nat_gateway_available`, ...).

        Raises:
            PlatformTransientError: The state did not come in time.
            EdgeError: A translated API failure.
        """
        client = await self.ec2()
        config = {"Delay": delay, "MaxAttempts": attempts}
        fn = functools.partial(client.get_waiter(waiter).wait, WaiterConfig=config, **params)
        what = f"{waiter} in {self.region}"
        try:
            await asyncio.to_thread(fn)
        except botocore.exceptions.WaiterError as err:
            reason = err.last_response.get("Error", {}) if err.last_response else {}
            code = str(reason.get("Code", ""))
            if code:
                raise translate(
                    botocore.exceptions.ClientError(err.last_response, waiter), what
                ) from err
            raise PlatformTransientError(
                f"waited {delay * attempts:g}s for {what} and it did not happen; retry later"
            ) from err
        except Exception as err:
            raise translate(err, what) from err
