"""`LocalSecretsBackend`: secrets in etcd, each one sealed with AES-GCM.

For daemons started without `VAULT_ADDR` (`make run`, tests, small installs): the cluster
already has etcd, so no extra server is needed, yet nothing secret is readable from etcd, a
backup or `etcdctl get`. Each secret is one key under a prefix (`secrets/` by default)
whose value is `ecs1 || nonce || AES-256-GCM(JSON)`. The associated data is the key itself,
so a sealed value copied onto another path fails to open instead of leaking there.

The JSON keeps the newest `max_versions` versions and the current version number, which
gives the KV-v2 behaviour callers rely on (versions, check-and-set, reads of an older
version). Writes go through `Store.update`, so two writers racing on one secret cannot lose
an update and a check-and-set is exact.

The 32-byte key comes from the configuration (`--secrets-key`, base64) or a key file that
`edge local up` generates once in the run directory with mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets as pysecrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_cloud.errors import ConfigError, EdgeError, InvalidArgument
from edge_cloud.secrets._backend import CasMismatch, Secret, check_data, check_path
from edge_cloud.secrets._totp import seed_bytes, totp_code
from edge_cloud.store import Delete, KeyValue, Op, Put, Store

__all__ = [
    "DEFAULT_PREFIX",
    "LocalSecretsBackend",
    "SecretDecryptError",
    "generate_key",
    "load_key",
    "parse_key",
]

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "secrets/"
DEFAULT_MAX_VERSIONS: Final = 10
_MAGIC: Final = b"ecs1"
_NONCE: Final = 12
_KEY_BYTES: Final = 32
_AAD: Final = b"edge-cloud-secret:"


class SecretDecryptError(EdgeError):
    """A stored secret does not open with this key: wrong key, or the value was altered."""


def generate_key() -> str:
    """A new random key in the text form `parse_key` reads (urlsafe base64 of 32 bytes)."""
    return base64.urlsafe_b64encode(os.urandom(_KEY_BYTES)).decode()


def parse_key(text: str) -> bytes:
    """The raw key from its text form.

    Raises:
        ConfigError: Not base64 of exactly 32 bytes (the message never echoes the text).
    """
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError):
        raise ConfigError("the secrets key is not valid base64") from None
    if len(raw) != _KEY_BYTES:
        raise ConfigError(
            f"the secrets key must be {_KEY_BYTES} bytes (base64), not {len(raw)}; "
            "generate one with `python -c 'from edge_cloud.secrets import generate_key; "
            "print(generate_key())'`"
        )
    return raw


def load_key(path: Path, *, create: bool = False) -> bytes:
    """Read the key file, generating it (mode 0600) first when asked and missing.

    Args:
        path: The key file.
        create: Write a new key when the file does not exist (local runs only: a key lost
            later makes every stored secret unreadable).

    Raises:
        ConfigError: The file is missing (and not created), unreadable or holds no valid key.
    """
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another daemon of the same run created it first; read theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(generate_key() + "\n")
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except OSError as err:
        raise ConfigError(f"cannot read the secrets key file {path}: {err.strerror}") from None
    if mode & 0o077:
        # not refused: mounted secrets (Kubernetes, compose) are often group- or world-readable
        log.warning("the secrets key file %s is readable by others (mode %o)", path, mode & 0o777)
    try:
        return parse_key(text)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


class LocalSecretsBackend:
    """Secrets sealed with AES-GCM in etcd, with KV-v2 versions and check-and-set.

    Args:
        store: The etcd store (the caller owns and closes it).
        key: The 32-byte AES key.
        prefix: etcd key prefix of every secret.
        max_versions: How many versions of a secret are kept.
        owns_store: `close` closes the store too (it was opened for this backend alone).
    """

    def __init__(
        self,
        store: Store,
        key: bytes,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_versions: int = DEFAULT_MAX_VERSIONS,
        owns_store: bool = False,
    ) -> None:
        if len(key) != _KEY_BYTES:
            raise ConfigError(f"the secrets key must be {_KEY_BYTES} bytes")
        if max_versions < 1:
            raise ConfigError("max_versions must be at least 1")
        self._store = store
        self._aead = AESGCM(key)
        self._prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._max_versions = max_versions
        self._owns_store = owns_store

    @property
    def kind(self) -> str:
        """`local`."""
        return "local"

    # -- sealing ------------------------------------------------------------------------------

    def _etcd_key(self, path: str) -> str:
        return self._prefix + path

    def _seal(self, etcd_key: str, doc: Mapping[str, object]) -> bytes:
        nonce = pysecrets.token_bytes(_NONCE)
        plain = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        return _MAGIC + nonce + self._aead.encrypt(nonce, plain, _AAD + etcd_key.encode())

    def _open(self, etcd_key: str, value: bytes) -> dict[str, object]:
        if not value.startswith(_MAGIC) or len(value) < len(_MAGIC) + _NONCE + 16:
            raise SecretDecryptError(f"secret {etcd_key} is not in the sealed format")
        nonce = value[len(_MAGIC) : len(_MAGIC) + _NONCE]
        try:
            plain = self._aead.decrypt(
                nonce, value[len(_MAGIC) + _NONCE :], _AAD + etcd_key.encode()
            )
        except InvalidTag:
            raise SecretDecryptError(
                f"secret {etcd_key} does not open with the configured key (a different "
                "--secrets-key, or the value was changed outside this platform)"
            ) from None
        doc: dict[str, object] = json.loads(plain)
        return doc

    def _versions(
        self, etcd_key: str, kv: KeyValue | None
    ) -> tuple[int, dict[str, dict[str, str]]]:
        if kv is None:
            return 0, {}
        doc = self._open(etcd_key, kv.value)
        current = doc.get("current")
        versions = doc.get("versions")
        if not isinstance(current, int) or not isinstance(versions, dict):
            raise SecretDecryptError(f"secret {etcd_key} has an unknown layout")
        return current, {str(k): dict(v) for k, v in versions.items()}

    # -- the protocol -------------------------------------------------------------------------

    async def get(self, path: str, *, version: int = 0) -> Secret | None:
        """The latest (or the given) version; None if absent or that version is gone."""
        if version < 0:
            raise InvalidArgument("a secret version is 1 or more (0: the latest)")
        etcd_key = self._etcd_key(check_path(path))
        current, versions = self._versions(etcd_key, await self._store.get(etcd_key))
        wanted = version or current
        data = versions.get(str(wanted))
        return None if data is None else Secret(data=dict(data), version=wanted)

    async def put(self, path: str, data: Mapping[str, str], *, cas: int | None = None) -> int:
        """Seal and write a new version; see `SecretsBackend.put`."""
        etcd_key = self._etcd_key(check_path(path))
        clean = check_data(data)
        written: list[int] = []

        def write(current_kvs: Mapping[str, KeyValue | None]) -> list[Op]:
            written.clear()
            current, versions = self._versions(etcd_key, current_kvs[etcd_key])
            if cas is not None and cas != current:
                raise CasMismatch(
                    f"check-and-set parameter did not match the current version of {path} "
                    f"(expected {cas}, found {current})"
                )
            new = current + 1
            versions[str(new)] = clean
            for old in sorted(versions, key=int)[: -self._max_versions]:
                del versions[old]
            written.append(new)
            return [Put(etcd_key, self._seal(etcd_key, {"current": new, "versions": versions}))]

        await self._store.update([etcd_key], write)
        return written[0]

    async def delete(self, path: str) -> bool:
        """Remove the secret with all its versions."""
        etcd_key = self._etcd_key(check_path(path))
        result = await self._store.txn((), [Delete(etcd_key)])
        return result.deleted > 0

    async def list(self, folder: str) -> list[str]:
        """Direct children of a folder; sub-folders end with `/`."""
        clean = check_path(folder, folder=True)
        base = self._prefix + (clean + "/" if clean else "")
        found, _ = await self._store.range(base, keys_only=True)
        children = set()
        for kv in found:
            rest = kv.key[len(base) :]
            head, sep, _ = rest.partition("/")
            children.add(head + sep)
        return sorted(children)

    # -- a TOTP engine of its own: seeds sealed like every secret, codes computed here --------

    @staticmethod
    def _totp_path(mount: str, name: str) -> str:
        # key names are std base64 (the original's); `/` and `+` would split or blur a path
        return f"{mount.strip('/')}/keys/{name.replace('/', '_').replace('+', '-')}"

    async def put_totp_key(self, mount: str, name: str, seed: str) -> None:
        """Keep the seed sealed (after checking it is base32)."""
        seed_bytes(seed, f"TOTP key {name}")
        await self.put(self._totp_path(mount, name), {"key": seed})

    async def totp_code(self, mount: str, name: str) -> str | None:
        """The current RFC 6238 code of the stored seed; None without one."""
        found = await self.get(self._totp_path(mount, name))
        return None if found is None else totp_code(found.data["key"])

    async def delete_totp_key(self, mount: str, name: str) -> None:
        """Forget the seed."""
        await self.delete(self._totp_path(mount, name))

    async def close(self) -> None:
        """Close the store if this backend owns it; otherwise the caller does."""
        if self._owns_store:
            await self._store.close()
