"""The EC2 plugin's AWS access: the shared session (`platforms.common.aws`) plus MFA.

Credentials, clients, retries and error translation are the ones the EKS plugin uses. What
is the EC2 plugin's own is the MFA flow of the original: with `AWS_USER_ARN` set, the account
keys are used only for `sts.get_session_token` with a TOTP code from the access API, and the
24-hour session credentials are renewed once they are past half their life.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any, Final

from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.platform import AccessApi
from platforms.awsec2._props import AWS_TOTP_SECRET_KEY, Settings
from platforms.common.aws import (
    MAX_ATTEMPTS,
    AwsCredentials,
    AwsSession,
    InstanceSize,
    credentials_from,
)

__all__ = ["MAX_ATTEMPTS", "AwsApi", "InstanceSize"]

log = logging.getLogger(__name__)

SESSION_SECONDS: Final = 24 * 3600
"""Lifetime asked of MFA session tokens, the original's."""
REFRESH_BEFORE: Final = dt.timedelta(hours=12)
"""Renew session credentials this long before they expire (the original renews every 12 h)."""
_AGENT: Final = "edge-cloud-platform/awsec2"


class AwsApi:
    """The EC2 and STS access of one cloudlet, called from asyncio.

    Args:
        settings: The cloudlet's settings (region, endpoint, MFA user).
        account: The account keys.
        access: Where TOTP codes come from when MFA is on.
        mfa: Whether to trade the account keys for MFA session credentials.
    """

    def __init__(
        self, settings: Settings, account: AwsCredentials, access: AccessApi, *, mfa: bool
    ) -> None:
        self.settings = settings
        self._account = account
        self._access = access
        self._mfa = mfa
        self._current: AwsSession | None = None
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        access_vars: Mapping[str, str],
        process_env: Mapping[str, str],
        access: AccessApi,
        cloudlet: str,
    ) -> AwsApi:
        """Access from the cloudlet's access vars (or the daemon's environment without them).

        Raises:
            InvalidArgument: No credentials, or MFA asked for without `AWS_USER_ARN`.
        """
        account = credentials_from(access_vars, process_env, cloudlet)
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

    def _session_for(self, creds: AwsCredentials) -> AwsSession:
        return AwsSession(
            creds,
            self.settings.region,
            endpoint_url=self.settings.endpoint_url,
            agent=_AGENT,
            renewing=self._mfa,
        )

    async def _session_credentials(self) -> AwsCredentials:
        code = await self._access.get_session_tokens(AWS_TOTP_SECRET_KEY)
        account = self._session_for(self._account)
        out = await account.call(
            "sts",
            "get_session_token",
            settle=False,
            SerialNumber=self.settings.mfa_serial,
            TokenCode=code,
            DurationSeconds=SESSION_SECONDS,
        )
        raw = out["Credentials"]
        expires = raw["Expiration"]
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        return AwsCredentials(
            raw["AccessKeyId"], raw["SecretAccessKey"], raw["SessionToken"], "MFA session", expires
        )

    async def session(self) -> AwsSession:
        """The session on the current credentials, MFA session credentials renewed when due."""
        async with self._lock:
            now = dt.datetime.now(dt.UTC)
            current = self._current
            expires = current.credentials.expires if current is not None else None
            due = self._mfa and expires is not None and expires - now < REFRESH_BEFORE
            if current is not None and not due:
                return current
            creds = self._account
            if self._mfa:
                try:
                    creds = await self._session_credentials()
                except EdgeError:
                    if current is not None and expires is not None and expires > now:
                        log.warning("renewing AWS session credentials failed; keeping the old")
                        return current
                    raise
            self._current = self._session_for(creds)
            return self._current

    async def call(self, op: str, *, settle: bool = False, **params: Any) -> dict[str, Any]:
        """One EC2 API call.

        Args:
            op: The boto3 method (`run_instances`).
            settle: The call creates something: if the caller is cancelled meanwhile, wait
                for the call to land before passing the cancellation on, so clean-up sees
                what it made.
            **params: The request.

        Raises:
            EdgeError: The translated failure.
        """
        return await (await self.session()).call("ec2", op, settle=settle, **params)

    async def pages(self, op: str, key: str, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paginated EC2 listing (`describe_instances`, `Reservations`)."""
        return await (await self.session()).pages("ec2", op, key, **params)

    async def wait(self, waiter: str, delay: float, attempts: int, **params: Any) -> None:
        """Wait with an EC2 waiter (`instance_running`, `nat_gateway_available`, ...).

        Raises:
            PlatformTransientError: The state did not come in time.
            EdgeError: A translated API failure.
        """
        await (await self.session()).wait("ec2", waiter, delay, attempts, **params)

    async def caller_account(self) -> str:
        """The account id of the credentials in use (`sts get_caller_identity`)."""
        identity = await (await self.session()).call("sts", "get_caller_identity", settle=False)
        return str(identity["Account"])
