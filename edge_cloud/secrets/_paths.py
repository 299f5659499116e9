"""Where each kind of secret lives: the original's Vault layout, relative to the KV mount.

The original writes `secret/data/<path>` through the KV v2 HTTP API; the logical paths below
are that `<path>`, so a Vault shared with the original's daemons holds the same secrets at
the same places (pkg/accessvars, pkg/cloudcommon of the original).
"""

from __future__ import annotations

__all__ = [
    "app_registry_auth_path",
    "app_secret_vars_path",
    "cloudlet_access_vars_path",
    "crm_access_keys_path",
    "kafka_creds_path",
]


def cloudlet_access_vars_path(region: str, org: str, name: str, physical_name: str = "") -> str:
    """`<region>/cloudlet/<org>/<physical name or name>/accessvars`.

    The original keys access vars by the physical name (several cloudlets may front one
    site), falling back to the cloudlet name.
    """
    return f"{region}/cloudlet/{org}/{physical_name or name}/accessvars"


def crm_access_keys_path(region: str, org: str, name: str) -> str:
    """`<region>/cloudlet/<org>/<name>/accesskeys`: the CRM's ed25519 key pair(s)."""
    return f"{region}/cloudlet/{org}/{name}/accesskeys"


def app_secret_vars_path(region: str, org: str, name: str, version: str) -> str:
    """`<region>/apps/<org>/<name>/<version>/secretenvvars`: an App's secret env vars."""
    return f"{region}/apps/{org}/{name}/{version}/secretenvvars"


def app_registry_auth_path(region: str, org: str, name: str, version: str) -> str:
    """`<region>/app/<org>/<name>/<version>/regauth`: an App's image pull credentials."""
    return f"{region}/app/{org}/{name}/{version}/regauth"


def kafka_creds_path(region: str, org: str, cloudlet: str) -> str:
    """`kafka/<region>/<org>/<cloudlet>`: a cloudlet's Kafka user and password."""
    return f"kafka/{region}/{org}/{cloudlet}"
