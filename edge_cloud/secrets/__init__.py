"""Secrets: Vault (hvac, KV v2) or a local backend in etcd sealed with AES-GCM.

Secrets never sit in etcd in plaintext and never reach a log (controller.md §2.3): objects
keep `REDACTED` (`***`) in their place, and the values live behind `SecretsBackend`:

- `VaultSecretsBackend` when `VAULT_ADDR` is set (production): the original's layout
  (`_paths`), so a Vault can be shared with the original's daemons;
- `LocalSecretsBackend` otherwise (`make run`, tests): etcd values sealed with a key from
  the configuration (`edge local up` generates one in the run dir).

`open_backend`/`connect_backend` apply that rule for every daemon. On top of the backend:
cloudlet access vars (`save_cloudlet_access_vars`, TOTP seeds into a TOTP engine that only
hands out codes), CRM access key pairs, Kafka credentials; the Controller writes them and
the CCRM reads them through `edge_cloud.platform.SecretsAccessApi`.
"""

from __future__ import annotations

from edge_cloud.secrets._backend import (
    REDACTED,
    CasMismatch,
    Secret,
    SecretsBackend,
    check_data,
    check_path,
)
from edge_cloud.secrets._cloudlet import (
    AccessKeyPair,
    delete_cloudlet_access_vars,
    delete_cloudlet_secrets,
    generate_access_key,
    load_crm_access_keys,
    load_kafka_creds,
    redact,
    save_cloudlet_access_vars,
    save_crm_access_keys,
    save_kafka_creds,
    totp_session_token,
)
from edge_cloud.secrets._local import (
    DEFAULT_PREFIX,
    LocalSecretsBackend,
    SecretDecryptError,
    generate_key,
    load_key,
    parse_key,
)
from edge_cloud.secrets._open import (
    LazySecretsBackend,
    SecretsSettings,
    connect_backend,
    open_backend,
)
from edge_cloud.secrets._paths import (
    app_registry_auth_path,
    app_secret_vars_path,
    cloudlet_access_vars_path,
    crm_access_keys_path,
    kafka_creds_path,
)
from edge_cloud.secrets._totp import cloudlet_totp_name, totp_code, totp_mount
from edge_cloud.secrets._vault import VaultAuth, VaultSecretsBackend

__all__ = [
    "DEFAULT_PREFIX",
    "REDACTED",
    "AccessKeyPair",
    "CasMismatch",
    "LazySecretsBackend",
    "LocalSecretsBackend",
    "Secret",
    "SecretDecryptError",
    "SecretsBackend",
    "SecretsSettings",
    "VaultAuth",
    "VaultSecretsBackend",
    "app_registry_auth_path",
    "app_secret_vars_path",
    "check_data",
    "check_path",
    "cloudlet_access_vars_path",
    "cloudlet_totp_name",
    "connect_backend",
    "crm_access_keys_path",
    "delete_cloudlet_access_vars",
    "delete_cloudlet_secrets",
    "generate_access_key",
    "generate_key",
    "kafka_creds_path",
    "load_crm_access_keys",
    "load_kafka_creds",
    "load_key",
    "open_backend",
    "parse_key",
    "redact",
    "save_cloudlet_access_vars",
    "save_crm_access_keys",
    "save_kafka_creds",
    "totp_code",
    "totp_mount",
    "totp_session_token",
]
