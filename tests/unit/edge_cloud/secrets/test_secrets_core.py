"""What needs no server: paths, keys, settings, redaction, TOTP codes, Vault auth config."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edge_cloud.errors import ConfigError, InvalidArgument
from edge_cloud.secrets import (
    REDACTED,
    LocalSecretsBackend,
    SecretsSettings,
    VaultAuth,
    VaultSecretsBackend,
    app_registry_auth_path,
    app_secret_vars_path,
    check_data,
    check_path,
    cloudlet_access_vars_path,
    crm_access_keys_path,
    generate_key,
    kafka_creds_path,
    load_key,
    open_backend,
    parse_key,
    redact,
    totp_code,
)


def test_paths_follow_the_original_vault_layout() -> None:
    assert cloudlet_access_vars_path("EU", "op", "c1") == "EU/cloudlet/op/c1/accessvars"
    assert cloudlet_access_vars_path("EU", "op", "c1", "site") == "EU/cloudlet/op/site/accessvars"
    assert crm_access_keys_path("EU", "op", "c1") == "EU/cloudlet/op/c1/accesskeys"
    assert app_secret_vars_path("EU", "dev", "a", "1.0") == "EU/apps/dev/a/1.0/secretenvvars"
    assert app_registry_auth_path("EU", "dev", "a", "1.0") == "EU/app/dev/a/1.0/regauth"
    assert kafka_creds_path("EU", "op", "c1") == "kafka/EU/op/c1"


def test_check_path_strips_slashes_and_refuses_what_changes_a_url() -> None:
    assert check_path("/a/b c/") == "a/b c"
    assert check_path("", folder=True) == ""
    for bad in ("", "a//b", "a/../b", "a/./b", "a?b", "a#b", "a%2f", "a\\b", "a\nb"):
        with pytest.raises(InvalidArgument, match="secret path"):
            check_path(bad)


def test_check_data_wants_string_keys_and_values() -> None:
    assert check_data({"A": "1"}) == {"A": "1"}
    with pytest.raises(InvalidArgument, match="non-empty"):
        check_data({"": "x"})
    with pytest.raises(InvalidArgument, match="value of secret key 'A'"):
        check_data({"A": 1})  # type: ignore[dict-item]


def test_redact_keeps_keys_only() -> None:
    assert redact({"A": "secret", "B": "other"}) == {"A": REDACTED, "B": REDACTED}


def test_key_text_round_trips_and_bad_keys_are_refused_without_echo() -> None:
    text = generate_key()
    assert len(parse_key(text)) == 32
    assert parse_key(text) != parse_key(generate_key())
    with pytest.raises(ConfigError, match="must be 32 bytes") as short:
        parse_key("c2hvcnQ=")
    assert "c2hvcnQ" not in str(short.value)
    with pytest.raises(ConfigError, match="not valid base64"):
        parse_key("!!!not base64!!!")


def test_key_file_is_created_once_with_mode_0600(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "run" / "secrets.key"
    with pytest.raises(ConfigError, match="cannot read the secrets key file"):
        load_key(path)
    first = load_key(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path, create=True) == first  # kept, not regenerated
    assert "readable by others" not in caplog.text
    path.chmod(0o644)
    assert load_key(path) == first
    assert "readable by others (mode 644)" in caplog.text
    assert path.read_text().strip() not in caplog.text
    path.write_text("garbage")
    with pytest.raises(ConfigError, match=str(path)):
        load_key(path)


def test_settings_select_vault_by_address_else_local(tmp_path: Path) -> None:
    assert not SecretsSettings().configured
    with pytest.raises(ConfigError, match="no secrets backend"):
        open_backend(SecretsSettings(), None)
    local = SecretsSettings(key=generate_key())
    assert local.configured
    assert local.kind == "local"
    with pytest.raises(ConfigError, match="needs an etcd connection"):
        open_backend(local, None)
    vault = SecretsSettings(vault_addr="http://127.0.0.1:1", vault_token="tok-xyzzy")
    assert vault.kind == "vault"
    assert isinstance(open_backend(vault, None), VaultSecretsBackend)
    assert "xyzzy" not in repr(vault)


def test_vault_auth_needs_a_way_in() -> None:
    with pytest.raises(ConfigError, match="no way to log in"):
        VaultAuth()
    with pytest.raises(ConfigError, match="both a role id and a secret id"):
        VaultAuth(role_id="r")
    assert VaultAuth(role_id="r", secret_id="s").approle
    assert "hunter2" not in repr(VaultAuth(token="hunter2"))
    with pytest.raises(ConfigError, match="must start with http"):
        VaultSecretsBackend("vault:8200", VaultAuth(token="t"))


def test_local_backend_refuses_a_short_key() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        LocalSecretsBackend(None, b"short")  # type: ignore[arg-type]


def test_totp_matches_the_rfc_6238_vectors() -> None:
    # RFC 6238 appendix B, SHA-1, seed "12345678901234567890" (base32 below), 8 digits
    # there; the 6-digit code is the last six of theirs.
    seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    assert totp_code(seed, at=59) == "287082"
    assert totp_code(seed, at=1111111109) == "081804"
    assert totp_code(seed, at=1234567890) == "005924"
    assert totp_code(seed.lower(), at=59) == "287082"
    with pytest.raises(InvalidArgument, match="base32"):
        totp_code("not-base32!", at=0)
