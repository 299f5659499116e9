"""`VaultSecretsBackend`: the KV version 2 engine of a HashiCorp Vault (or OpenBao), via hvac.

The original talks to Vault for every secret; this is the same storage, so a Controller of
ours and one of the original's can share a Vault. hvac is synchronous (requests), so every
call runs in a worker thread (`asyncio.to_thread`) and never blocks the event loop.

Authentication is a token (`VAULT_TOKEN`) or an AppRole (role id + secret id, what the
original's daemons use). An AppRole token that expires or is revoked is replaced by logging
in again once, on the first 403, and the call is retried.

hvac's exceptions become ours: no secret → None (reads) or False (deletes), a check-and-set
refusal → `CasMismatch`, 403 → `PermissionDenied`, Vault sealed/down or unreachable →
`Unavailable`; the message names the path and never a value.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import hvac
import hvac.exceptions
import requests

from edge_cloud.errors import (
    ConfigError,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from edge_cloud.secrets._backend import CasMismatch, Secret, check_data, check_path
from edge_cloud.secrets._totp import TOTP_DIGITS, seed_bytes

__all__ = ["VaultAuth", "VaultSecretsBackend"]

T = TypeVar("T")
DEFAULT_MOUNT: Final = "secret"
DEFAULT_TIMEOUT: Final = 10


@dataclass(frozen=True, slots=True)
class VaultAuth:
    """How to log in to Vault: a token, or an AppRole.

    Attributes:
        token: A Vault token (`VAULT_TOKEN`).
        role_id: AppRole role id (`VAULT_ROLE_ID`).
        secret_id: AppRole secret id (`VAULT_SECRET_ID`).
        approle_mount: Where the AppRole auth method is mounted.
    """

    token: str = field(default="", repr=False)
    role_id: str = ""
    secret_id: str = field(default="", repr=False)
    approle_mount: str = "approle"

    def __post_init__(self) -> None:
        if bool(self.role_id) != bool(self.secret_id):
            raise ConfigError("Vault AppRole login needs both a role id and a secret id")
        if not self.token and not self.role_id:
            raise ConfigError(
                "VAULT_ADDR is set but there is no way to log in: set VAULT_TOKEN, or "
                "VAULT_ROLE_ID and VAULT_SECRET_ID"
            )

    @property
    def approle(self) -> bool:
        """Whether the AppRole is used (it wins over a token when both are given)."""
        return bool(self.role_id)


class VaultSecretsBackend:
    """Secrets in Vault's KV v2 engine.

    Args:
        addr: Vault's address (`VAULT_ADDR`), e.g. `https://vault.example:8200`.
        auth: How to log in.
        mount: Mount point of the KV v2 engine (`secret` in the original).
        path_prefix: Prepended to every logical path, to share a mount between installs.
        ca_file: CA bundle for Vault's TLS certificate; None uses the system's.
        timeout: Seconds one HTTP request may take.
    """

    def __init__(
        self,
        addr: str,
        auth: VaultAuth,
        *,
        mount: str = DEFAULT_MOUNT,
        path_prefix: str = "",
        ca_file: str | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> None:
        if not addr.startswith(("http://", "https://")):
            raise ConfigError(f"VAULT_ADDR {addr!r} must start with http:// or https://")
        self._addr = addr.rstrip("/")
        self._auth = auth
        self._mount = mount.strip("/")
        self._prefix = check_path(path_prefix, folder=True)
        verify: bool | str = ca_file if ca_file else True
        self._client = hvac.Client(url=self._addr, timeout=timeout, verify=verify)
        self._lock = threading.Lock()
        self._logged_in = False

    @property
    def kind(self) -> str:
        """`vault`."""
        return "vault"

    # -- plumbing -----------------------------------------------------------------------------

    def _full(self, path: str, *, folder: bool = False) -> str:
        clean = check_path(path, folder=folder)
        return "/".join(p for p in (self._prefix, clean) if p)

    def _login(self) -> None:
        """Set the client's token (AppRole: log in). Runs in a worker thread."""
        if self._auth.approle:
            try:
                self._client.auth.approle.login(
                    role_id=self._auth.role_id,
                    secret_id=self._auth.secret_id,
                    mount_point=self._auth.approle_mount,
                )
            except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden) as err:
                raise Unauthenticated(
                    f"Vault at {self._addr} refused the AppRole login of role id "
                    f"{self._auth.role_id}: {'; '.join(err.errors or []) or err}"
                ) from None
        else:
            self._client.token = self._auth.token
        self._logged_in = True

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one hvac call (worker thread) with login, one re-login, and error mapping."""
        try:
            with self._lock:
                if not self._logged_in:
                    self._login()
            try:
                return fn()
            except hvac.exceptions.Forbidden:
                if not self._auth.approle:
                    raise
                with self._lock:
                    self._login()
                return fn()
        except EdgeError:
            raise
        except hvac.exceptions.Forbidden:
            raise PermissionDenied(
                f"Vault at {self._addr} refused to {what} (permission denied: check the "
                "token's or AppRole's policy)"
            ) from None
        except hvac.exceptions.InvalidRequest as err:
            text = "; ".join(str(e) for e in (err.errors or [])) or str(err)
            if "check-and-set" in text:
                raise CasMismatch(f"Vault refused to {what}: {text}") from None
            raise InvalidArgument(f"Vault refused to {what}: {text}") from None
        except (hvac.exceptions.VaultDown, hvac.exceptions.InternalServerError) as err:
            raise Unavailable(f"Vault at {self._addr} cannot {what} now: {err}") from None
        except hvac.exceptions.VaultError as err:
            raise Unavailable(f"Vault at {self._addr} failed to {what}: {err}") from None
        except requests.RequestException as err:
            raise Unavailable(
                f"cannot reach Vault at {self._addr} to {what}: {type(err).__name__}"
            ) from None

    async def _run(self, what: str, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(self._call, what, fn)

    # -- the protocol -------------------------------------------------------------------------

    async def get(self, path: str, *, version: int = 0) -> Secret | None:
        """Read a version (0: the latest); None when there is none or it was deleted."""
        if version < 0:
            raise InvalidArgument("a secret version is 1 or more (0: the latest)")
        full = self._full(path)
        kv = self._client.secrets.kv.v2

        def read() -> dict[str, Any] | None:
            try:
                reply: dict[str, Any] = kv.read_secret_version(
                    path=full,
                    version=version or None,
                    mount_point=self._mount,
                    raise_on_deleted_version=True,
                )
            except hvac.exceptions.InvalidPath:
                return None
            return reply

        reply = await self._run(f"read secret {full}", read)
        if reply is None:
            return None
        data = reply["data"]["data"] or {}
        found = int(reply["data"]["metadata"]["version"])
        return Secret(data={str(k): str(v) for k, v in data.items()}, version=found)

    async def put(self, path: str, data: Mapping[str, str], *, cas: int | None = None) -> int:
        """Write a new version; see `SecretsBackend.put`."""
        full = self._full(path)
        clean = check_data(data)
        kv = self._client.secrets.kv.v2

        def write() -> dict[str, Any]:
            reply: dict[str, Any] = kv.create_or_update_secret(
                path=full, secret=clean, cas=cas, mount_point=self._mount
            )
            return reply

        reply = await self._run(f"write secret {full}", write)
        return int(reply["data"]["version"])

    async def delete(self, path: str) -> bool:
        """Delete the metadata and every version (Vault's permanent delete)."""
        full = self._full(path)
        kv = self._client.secrets.kv.v2

        def remove() -> bool:
            try:
                kv.read_secret_metadata(path=full, mount_point=self._mount)
            except hvac.exceptions.InvalidPath:
                return False
            kv.delete_metadata_and_all_versions(path=full, mount_point=self._mount)
            return True

        return await self._run(f"delete secret {full}", remove)

    async def list(self, folder: str) -> list[str]:
        """Children of a folder (Vault `LIST`); empty when the folder does not exist."""
        full = self._full(folder, folder=True)
        kv = self._client.secrets.kv.v2

        def listing() -> list[str]:
            try:
                reply: dict[str, Any] = kv.list_secrets(path=full, mount_point=self._mount)
            except hvac.exceptions.InvalidPath:
                return []
            return sorted(str(k) for k in reply["data"]["keys"])

        return await self._run(f"list secrets under {full or '/'}", listing)

    # -- the TOTP engine (the original's `<region>/totp` mount) ------------------------------

    def _no_engine(self, mount: str) -> FailedPrecondition:
        return FailedPrecondition(
            f"Vault at {self._addr} has no TOTP engine at {mount}/: enable it with "
            f"`vault secrets enable -path={mount} totp`"
        )

    async def put_totp_key(self, mount: str, name: str, seed: str) -> None:
        """Create (or replace) a TOTP key from a seed; Vault computes the codes."""
        seed_bytes(seed, f"TOTP key {name}")
        path = f"{mount.strip('/')}/keys/{name}"

        def write() -> None:
            try:
                self._client.write_data(path, data={"key": seed, "digits": TOTP_DIGITS})
            except hvac.exceptions.InvalidPath:
                raise self._no_engine(mount) from None

        await self._run(f"write TOTP key {path}", write)

    async def totp_code(self, mount: str, name: str) -> str | None:
        """Vault's current code for the key; None when the key (or engine) is missing."""
        path = f"{mount.strip('/')}/code/{name}"

        def read() -> str | None:
            try:
                reply = self._client.read(path)
            except hvac.exceptions.InvalidRequest:
                return None  # Vault: 400 "unknown key"
            if not isinstance(reply, dict) or not reply.get("data"):
                return None
            return str(reply["data"]["code"])

        return await self._run(f"read TOTP code {path}", read)

    async def delete_totp_key(self, mount: str, name: str) -> None:
        """Delete the key; nothing to do when it (or the engine) is missing."""
        path = f"{mount.strip('/')}/keys/{name}"

        def remove() -> None:
            with contextlib.suppress(hvac.exceptions.InvalidPath):
                self._client.delete(path)

        await self._run(f"delete TOTP key {path}", remove)

    async def health(self) -> bool:
        """Whether Vault is initialised, unsealed and active."""

        def check() -> bool:
            reply = self._client.sys.read_health_status(method="GET")
            if isinstance(reply, dict):
                return bool(reply.get("initialized")) and not reply.get("sealed")
            return bool(reply.status_code == 200)

        return await asyncio.to_thread(self._call, "check health", check)

    async def close(self) -> None:
        """Close the HTTP session."""
        await asyncio.to_thread(self._client.adapter.close)
