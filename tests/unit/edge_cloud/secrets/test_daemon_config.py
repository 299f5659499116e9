"""Both daemons choose their secrets backend the same way, from flags or the standard env."""

from __future__ import annotations

from pathlib import Path

from edgeproto import cloudlet_pb2, cloudletkey_pb2

from edge_cloud.config import describe, load
from edge_cloud.platform import LocalAccessApi, PlatformCaches, SecretsAccessApi
from edge_cloud.secrets import generate_key
from services.ccrm._host import PlatformHost
from services.ccrm.config import CcrmConfig
from services.controller.config import ControllerConfig


def test_vault_comes_from_the_standard_variables_and_secrets_are_redacted() -> None:
    env = {
        "VAULT_ADDR": "https://vault.example:8200",
        "VAULT_ROLE_ID": "role-1",
        "VAULT_SECRET_ID": "sid-hunter2",
        "EDGE_VAULT_PATH_PREFIX": "edge-eu",
    }
    for cls in (ControllerConfig, CcrmConfig):
        config = load(cls, [], env)
        settings = config.secrets_settings()
        assert settings.kind == "vault"
        assert (settings.vault_role_id, settings.vault_secret_id) == ("role-1", "sid-hunter2")
        assert settings.vault_path_prefix == "edge-eu"
        assert "hunter2" not in str(describe(config))


def test_the_local_key_file_comes_from_a_flag_or_edge_variable(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets.key"
    by_flag = load(ControllerConfig, ["--secrets-key-file", str(key_file)], {})
    assert by_flag.secrets_settings().key_file == key_file
    by_env = load(CcrmConfig, [], {"EDGE_SECRETS_KEY_FILE": str(key_file)})
    assert by_env.secrets_settings().kind == "local"
    assert by_env.secrets_settings().configured
    assert not load(ControllerConfig, [], {}).secrets_settings().configured
    key = generate_key()
    # `=` form: a base64url key may start with "-", which argparse would take for a flag.
    described = describe(load(ControllerConfig, [f"--secrets-key={key}"], {}))
    assert key not in str(described)


def test_the_ccrm_hands_out_the_secrets_access_api_only_with_a_backend() -> None:
    cloudlet = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization="op", name="c1"), physical_name="site"
    )
    bare = PlatformHost(CcrmConfig(), {}, PlatformCaches(), {}, {})
    assert isinstance(bare.access_for(cloudlet), LocalAccessApi)
    assert not isinstance(bare.access_for(cloudlet), SecretsAccessApi)
    keyed = PlatformHost(CcrmConfig(secrets_key=generate_key()), {}, PlatformCaches(), {}, {})
    assert isinstance(keyed.access_for(cloudlet), SecretsAccessApi)
