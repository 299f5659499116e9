"""Cloudlet secrets in the backend: access vars, TOTP codes, CRM access keys, Kafka creds.

The Controller takes access vars off a Cloudlet before it is stored (the object keeps
`***` per key) and writes them here; the CCRM's `SecretsAccessApi` reads them back for the
cloudlet's platform. Vars the platform flags `totp_secret` are seeds: they are kept apart
and never handed out, only the current code generated from them (RFC 6238, what Vault's
TOTP engine computes in the original).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge_cloud.errors import NotFound
from edge_cloud.secrets._backend import REDACTED, SecretsBackend
from edge_cloud.secrets._paths import (
    cloudlet_access_vars_path,
    crm_access_keys_path,
    kafka_creds_path,
)
from edge_cloud.secrets._totp import cloudlet_totp_name, seed_bytes, totp_mount

__all__ = [
    "AccessKeyPair",
    "delete_cloudlet_access_vars",
    "delete_cloudlet_secrets",
    "generate_access_key",
    "load_crm_access_keys",
    "load_kafka_creds",
    "redact",
    "save_cloudlet_access_vars",
    "save_crm_access_keys",
    "save_kafka_creds",
    "totp_session_token",
]


def redact(values: Mapping[str, str]) -> dict[str, str]:
    """The same keys with every value replaced by `***` (what the stored object keeps)."""
    return dict.fromkeys(values, REDACTED)


async def save_cloudlet_access_vars(
    backend: SecretsBackend,
    *,
    region: str,
    org: str,
    name: str,
    physical_name: str = "",
    values: Mapping[str, str],
    totp_names: Collection[str] = (),
    merge: bool = False,
) -> dict[str, str]:
    """Write a cloudlet's access vars (TOTP seeds apart); returns the redacted full set.

    A value of `***` means "keep the stored one" (a redacted object sent back unchanged),
    so it is never written as a secret.

    Args:
        backend: Where to write.
        region: Region of the Controller.
        org: Cloudlet organization.
        name: Cloudlet name.
        physical_name: Cloudlet physical name (the path uses it when set).
        values: The access vars given.
        totp_names: Keys whose values are TOTP seeds.
        merge: Update: add to / overwrite the stored vars instead of replacing them.
    """
    plain_path = cloudlet_access_vars_path(region, org, name, physical_name)
    given = {k: v for k, v in values.items() if v != REDACTED}
    plain = {k: v for k, v in given.items() if k not in totp_names}
    seeds = {k: v for k, v in given.items() if k in totp_names}
    for key, seed in seeds.items():
        seed_bytes(seed, f"access var {key}")  # refuse before anything is written
    current = await backend.get(plain_path)
    stored = dict(current.data) if current is not None else {}
    if merge:
        merged = {**stored, **plain}
    else:
        merged = {**{k: v for k, v in stored.items() if values.get(k) == REDACTED}, **plain}
    if merged and merged != stored:
        await backend.put(plain_path, merged, cas=current.version if current else 0)
    elif not merged and stored:
        await backend.delete(plain_path)
    mount = totp_mount(region)
    for key, seed in seeds.items():
        await backend.put_totp_key(mount, cloudlet_totp_name(org, name, key, physical_name), seed)
    kept_seeds = [k for k in totp_names if values.get(k) == REDACTED]
    return redact({**merged, **seeds, **dict.fromkeys(kept_seeds, "")})


async def delete_cloudlet_access_vars(
    backend: SecretsBackend,
    *,
    region: str,
    org: str,
    name: str,
    physical_name: str = "",
    names: Collection[str] = (),
) -> bool:
    """Remove a cloudlet's access vars, and the TOTP seeds among `names`.

    Args:
        backend: Where they are.
        region: Region of the Controller.
        org: Cloudlet organization.
        name: Cloudlet name.
        physical_name: Cloudlet physical name.
        names: The cloudlet's access var names (its object keeps them, redacted); any of
            them may be a TOTP seed, and a missing seed is fine.

    Returns:
        Whether the plain access vars existed.
    """
    removed = await backend.delete(cloudlet_access_vars_path(region, org, name, physical_name))
    mount = totp_mount(region)
    for var in names:
        await backend.delete_totp_key(mount, cloudlet_totp_name(org, name, var, physical_name))
    return removed


async def totp_session_token(
    backend: SecretsBackend,
    *,
    region: str,
    org: str,
    name: str,
    physical_name: str = "",
    secret_name: str,
) -> str:
    """The current code of one of a cloudlet's TOTP seeds.

    Raises:
        NotFound: The cloudlet has no seed of that name.
    """
    code = await backend.totp_code(
        totp_mount(region), cloudlet_totp_name(org, name, secret_name, physical_name)
    )
    if code is None:
        raise NotFound(
            f"no TOTP secret {secret_name} for cloudlet {org}/{name}; give it as an access var "
            "the platform flags as a TOTP secret"
        )
    return code


# --- CRM access keys and Kafka credentials -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessKeyPair:
    """An ed25519 key pair in PEM (SPKI public, PKCS#8 private), as the original makes them.

    Attributes:
        public_pem: What the Cloudlet object shows (`crm_access_public_key`).
        private_pem: What only the CRM and the secrets backend ever see.
    """

    public_pem: str
    private_pem: str = field(repr=False)


def generate_access_key() -> AccessKeyPair:
    """A fresh CRM access key pair (the original's `svcnode.GenerateAccessKey`)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return AccessKeyPair(public.decode(), private.decode())


async def save_crm_access_keys(
    backend: SecretsBackend,
    *,
    region: str,
    org: str,
    name: str,
    primary: AccessKeyPair,
    secondary: AccessKeyPair | None = None,
) -> None:
    """Store a cloudlet's CRM key pair(s) as the original's `CRMAccessKeys` document."""
    doc = {"PublicPEM": primary.public_pem, "PrivatePEM": primary.private_pem}
    if secondary is not None:
        doc["SecondaryPublicPEM"] = secondary.public_pem
        doc["SecondaryPrivatePEM"] = secondary.private_pem
    await backend.put(crm_access_keys_path(region, org, name), doc)


async def load_crm_access_keys(
    backend: SecretsBackend, *, region: str, org: str, name: str
) -> tuple[AccessKeyPair, AccessKeyPair | None] | None:
    """A cloudlet's CRM key pair(s), or None when none are stored (for the access API)."""
    found = await backend.get(crm_access_keys_path(region, org, name))
    if found is None or not found.data.get("PrivatePEM"):
        return None
    data = found.data
    primary = AccessKeyPair(data.get("PublicPEM", ""), data["PrivatePEM"])
    secondary = None
    if data.get("SecondaryPrivatePEM"):
        secondary = AccessKeyPair(data.get("SecondaryPublicPEM", ""), data["SecondaryPrivatePEM"])
    return primary, secondary


async def load_kafka_creds(
    backend: SecretsBackend, *, region: str, org: str, name: str
) -> dict[str, str] | None:
    """A cloudlet's Kafka `endpoint`, `username` and `password`, or None (`get-kafka-creds`)."""
    found = await backend.get(kafka_creds_path(region, org, name))
    return None if found is None else dict(found.data)


async def save_kafka_creds(
    backend: SecretsBackend,
    *,
    region: str,
    org: str,
    name: str,
    endpoint: str,
    username: str,
    password: str,
) -> None:
    """Store a cloudlet's Kafka endpoint and credentials (the original's `KafkaCreds`)."""
    doc = {"endpoint": endpoint, "username": username, "password": password}
    await backend.put(kafka_creds_path(region, org, name), doc)


async def delete_cloudlet_secrets(
    backend: SecretsBackend, *, region: str, org: str, name: str
) -> None:
    """Remove a cloudlet's CRM access keys and Kafka credentials (absent ones are fine)."""
    await backend.delete(crm_access_keys_path(region, org, name))
    await backend.delete(kafka_creds_path(region, org, name))
