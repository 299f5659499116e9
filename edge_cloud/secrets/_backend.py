"""The `SecretsBackend` protocol: a KV-v2 shaped store for everything that must not sit in etcd.

The original keeps cloudlet access vars, registry credentials, secret env vars, CRM access
keys and Kafka credentials in Vault's KV version 2 engine (controller.md §2.3). Callers
here see the same semantics whichever backend runs: every write makes a new version, a
write may be guarded by check-and-set on the current version, a read may ask for an older
version, a delete removes every version, and a listing shows the children of a folder. So
code written against the local backend behaves the same against a real Vault. TOTP seeds
go to a TOTP engine (Vault's, or a local equivalent) that hands out codes, never seeds.

Paths are logical, relative to the KV mount (`local/cloudlet/org/name/accessvars`); the
Vault backend adds the mount, the local backend an etcd prefix. Values are flat maps of
strings, which is all the original ever stores there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from edge_cloud.errors import FailedPrecondition, InvalidArgument

__all__ = [
    "REDACTED",
    "CasMismatch",
    "Secret",
    "SecretsBackend",
    "check_data",
    "check_path",
]

REDACTED: Final = "***"
"""What an object keeps in place of a secret value (the original's `RedactedSecret`)."""

# Vault paths are URL path segments. Names and organisations are validated by their own
# objects (they may hold spaces); here we refuse only what would change the meaning of a URL
# or of an etcd prefix: control characters, `?`, `#`, `%` and `\`.
_BAD_SEGMENT: Final = re.compile(r"[\x00-\x1f\x7f?#%\\]")


class CasMismatch(FailedPrecondition):
    """A check-and-set write found another version than the one it was guarded by."""


@dataclass(frozen=True, slots=True)
class Secret:
    """One version of a secret.

    Attributes:
        data: The key/value pairs of that version.
        version: Its version number, from 1 (KV v2 numbering).
    """

    data: dict[str, str] = field(repr=False)
    version: int


class SecretsBackend(Protocol):
    """Where secrets live; `LocalSecretsBackend` (etcd, encrypted) or `VaultSecretsBackend`."""

    @property
    def kind(self) -> str:
        """`local` or `vault`, for logs and status lines (never a secret)."""
        ...

    async def get(self, path: str, *, version: int = 0) -> Secret | None:
        """The latest (or the given) version of a secret; None if there is none."""
        ...

    async def put(self, path: str, data: Mapping[str, str], *, cas: int | None = None) -> int:
        """Write a new version; with `cas`, only if the current version is `cas` (0: absent).

        Returns:
            The version written.

        Raises:
            CasMismatch: The current version is not `cas`.
        """
        ...

    async def delete(self, path: str) -> bool:
        """Remove every version of a secret; returns whether there was one."""
        ...

    async def list(self, folder: str) -> list[str]:
        """Children of a folder, sorted; sub-folders end with `/`. Empty if none."""
        ...

    async def put_totp_key(self, mount: str, name: str, seed: str) -> None:
        """Register a base32 TOTP seed as key `name` of the TOTP engine at `mount`."""
        ...

    async def totp_code(self, mount: str, name: str) -> str | None:
        """The current code of a TOTP key; None when there is no such key."""
        ...

    async def delete_totp_key(self, mount: str, name: str) -> None:
        """Remove a TOTP key; a missing key (or engine) is fine."""
        ...

    async def close(self) -> None:
        """Release connections; the backend is unusable afterwards."""
        ...


def check_path(path: str, *, folder: bool = False) -> str:
    """Validate a logical secret path and return it without surrounding slashes.

    Args:
        path: `a/b/c`; leading and trailing slashes are ignored.
        folder: An empty path (the root) is allowed, for listings.

    Raises:
        InvalidArgument: An empty segment, `.`/`..`, or a character outside the safe set.
    """
    stripped = path.strip("/")
    if not stripped:
        if folder:
            return ""
        raise InvalidArgument("a secret path must not be empty")
    for segment in stripped.split("/"):
        if segment in ("", ".", "..") or _BAD_SEGMENT.search(segment):
            raise InvalidArgument(
                f"secret path {path!r} has an invalid segment {segment!r}: no empty, `.` or "
                "`..` segments, control characters, `?`, `#`, `%` or backslashes"
            )
    return stripped


def check_data(data: Mapping[str, str]) -> dict[str, str]:
    """A copy of `data` once every key and value is known to be a string.

    Raises:
        InvalidArgument: A key is empty, or a key or value is not a string.
    """
    out: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgument("secret keys must be non-empty strings")
        if not isinstance(value, str):
            raise InvalidArgument(f"the value of secret key {key!r} must be a string")
        out[key] = value
    return out
