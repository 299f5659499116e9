"""Choosing and opening the backend from a daemon's configuration.

One rule, the same in every daemon: `VAULT_ADDR` set → Vault; otherwise the local backend
in the daemon's etcd, sealed with the key from `--secrets-key` or `--secrets-key-file`.
A daemon with neither refuses to start, because secrets written under a key nobody kept
could never be read again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edge_cloud.errors import ConfigError
from edge_cloud.secrets._backend import Secret, SecretsBackend
from edge_cloud.secrets._local import DEFAULT_PREFIX, LocalSecretsBackend, load_key, parse_key
from edge_cloud.secrets._vault import DEFAULT_MOUNT, VaultAuth, VaultSecretsBackend
from edge_cloud.store import EtcdStore, Store

__all__ = ["LazySecretsBackend", "SecretsSettings", "connect_backend", "open_backend"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretsSettings:
    """What a daemon knows about its secrets backend (filled from its own config fields).

    Attributes:
        vault_addr: Vault's address; empty selects the local backend.
        vault_token: Token login.
        vault_role_id: AppRole login, with `vault_secret_id`.
        vault_secret_id: AppRole secret id.
        vault_mount: KV v2 mount point.
        vault_path_prefix: Prefix of every path inside the mount.
        vault_ca_file: CA bundle for Vault's certificate.
        key: Local backend key, base64 (wins over `key_file`).
        key_file: Local backend key file.
        create_key_file: Generate `key_file` if missing (local runs).
        prefix: etcd key prefix of the local backend.
    """

    vault_addr: str = ""
    vault_token: str = field(default="", repr=False)
    vault_role_id: str = ""
    vault_secret_id: str = field(default="", repr=False)
    vault_mount: str = DEFAULT_MOUNT
    vault_path_prefix: str = ""
    vault_ca_file: str = ""
    key: str = field(default="", repr=False)
    key_file: Path | None = None
    create_key_file: bool = False
    prefix: str = DEFAULT_PREFIX

    @property
    def configured(self) -> bool:
        """Whether any backend is configured (Vault, or a local key)."""
        return bool(self.vault_addr or self.key or self.key_file is not None)

    @property
    def kind(self) -> str:
        """`vault` when an address is set, else `local`."""
        return "vault" if self.vault_addr else "local"


def _local_key(settings: SecretsSettings) -> bytes:
    if settings.key:
        return parse_key(settings.key)
    if settings.key_file is not None:
        return load_key(settings.key_file, create=settings.create_key_file)
    raise ConfigError(
        "no secrets backend: set VAULT_ADDR (with VAULT_TOKEN or an AppRole), or give the "
        "local backend a key with --secrets-key or --secrets-key-file"
    )


def open_backend(settings: SecretsSettings, store: Store | None) -> SecretsBackend:
    """The backend the settings select.

    Args:
        settings: The daemon's secrets settings.
        store: The etcd store for the local backend (not used for Vault).

    Raises:
        ConfigError: Vault without credentials, or local without a key or a store.
    """
    if settings.vault_addr:
        auth = VaultAuth(
            token=settings.vault_token,
            role_id=settings.vault_role_id,
            secret_id=settings.vault_secret_id,
        )
        return VaultSecretsBackend(
            settings.vault_addr,
            auth,
            mount=settings.vault_mount,
            path_prefix=settings.vault_path_prefix,
            ca_file=settings.vault_ca_file or None,
        )
    key = _local_key(settings)
    if store is None:
        raise ConfigError("the local secrets backend needs an etcd connection")
    return LocalSecretsBackend(store, key, prefix=settings.prefix)


async def connect_backend(
    settings: SecretsSettings,
    *,
    etcd_urls: str | tuple[str, ...],
    etcd_namespace: str = "",
    etcd_timeout: float = 5.0,
) -> SecretsBackend:
    """Open the selected backend for a daemon that has no etcd connection of its own.

    The local backend gets an etcd connection it owns (closed with it); the etcd namespace
    must be the Controller's, so both see the same secrets.

    Raises:
        ConfigError: As `open_backend`.
    """
    if settings.vault_addr:
        return open_backend(settings, None)
    key = _local_key(settings)  # before connecting: a bad key needs no etcd to be reported
    store = await EtcdStore.connect(etcd_urls, timeout=etcd_timeout, namespace=etcd_namespace)
    return LocalSecretsBackend(store, key, prefix=settings.prefix, owns_store=True)


class LazySecretsBackend:
    """A backend opened on first use, for code that must hand one out synchronously.

    The CCRM builds a platform's `AccessApi` in plain functions; the connection to Vault or
    etcd behind it is made by the first secret read, once, and shared afterwards.

    Args:
        kind: The kind the opener will return (`local` or `vault`).
        opener: Opens the real backend.
    """

    def __init__(self, kind: str, opener: Callable[[], Awaitable[SecretsBackend]]) -> None:
        self._kind = kind
        self._opener = opener
        self._backend: SecretsBackend | None = None
        self._lock = asyncio.Lock()

    @property
    def kind(self) -> str:
        """The kind of the backend behind."""
        return self._kind

    async def _open(self) -> SecretsBackend:
        async with self._lock:
            if self._backend is None:
                self._backend = await self._opener()
            return self._backend

    async def get(self, path: str, *, version: int = 0) -> Secret | None:
        """See `SecretsBackend.get`."""
        return await (await self._open()).get(path, version=version)

    async def put(self, path: str, data: Mapping[str, str], *, cas: int | None = None) -> int:
        """See `SecretsBackend.put`."""
        return await (await self._open()).put(path, data, cas=cas)

    async def delete(self, path: str) -> bool:
        """See `SecretsBackend.delete`."""
        return await (await self._open()).delete(path)

    async def list(self, folder: str) -> list[str]:
        """See `SecretsBackend.list`."""
        return await (await self._open()).list(folder)

    async def put_totp_key(self, mount: str, name: str, seed: str) -> None:
        """See `SecretsBackend.put_totp_key`."""
        await (await self._open()).put_totp_key(mount, name, seed)

    async def totp_code(self, mount: str, name: str) -> str | None:
        """See `SecretsBackend.totp_code`."""
        return await (await self._open()).totp_code(mount, name)

    async def delete_totp_key(self, mount: str, name: str) -> None:
        """See `SecretsBackend.delete_totp_key`."""
        await (await self._open()).delete_totp_key(mount, name)

    async def close(self) -> None:
        """Close the backend if it was ever opened."""
        async with self._lock:
            if self._backend is not None:
                await self._backend.close()
                self._backend = None
