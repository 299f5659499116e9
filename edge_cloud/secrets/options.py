"""The secrets backend flags every daemon that opens the secrets store shares.

The Controller and the CCRM select the same backend (Vault, or the Controller's local
store) from the same flags; declaring them once keeps their names, environment variables
and defaults from drifting apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_cloud.config import CommonConfig, option
from edge_cloud.secrets._open import SecretsSettings

__all__ = ["SecretsConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretsConfig(CommonConfig):
    """Common settings plus the secrets backend; a daemon's config subclasses it.

    A subclass may redeclare `secrets_key_file` to say whose key file it reads.
    """

    vault_addr: str = option(
        "", "Vault address; set: secrets live in Vault", go="vaultAddr", env="VAULT_ADDR"
    )
    vault_token: str = option("", "Vault token", env="VAULT_TOKEN", secret=True)
    vault_role_id: str = option("", "Vault AppRole role id", env="VAULT_ROLE_ID")
    vault_secret_id: str = option("", "Vault AppRole secret id", env="VAULT_SECRET_ID", secret=True)
    vault_mount: str = option("secret", "mount point of Vault's KV v2 engine")
    vault_path_prefix: str = option("", "prefix of every secret path inside the Vault mount")
    vault_ca_file: str = option("", "CA bundle for Vault's certificate", env="VAULT_CACERT")
    secrets_key: str = option(
        "", "key of the local secrets backend (base64, 32 bytes)", secret=True
    )
    secrets_key_file: Path | None = option(
        None, "key file of the local secrets backend (no Vault); no key: secrets are refused"
    )

    def secrets_settings(self) -> SecretsSettings:
        """The secrets backend this configuration selects."""
        return SecretsSettings(
            vault_addr=self.vault_addr,
            vault_token=self.vault_token,
            vault_role_id=self.vault_role_id,
            vault_secret_id=self.vault_secret_id,
            vault_mount=self.vault_mount,
            vault_path_prefix=self.vault_path_prefix,
            vault_ca_file=self.vault_ca_file,
            key=self.secrets_key,
            key_file=self.secrets_key_file,
        )
