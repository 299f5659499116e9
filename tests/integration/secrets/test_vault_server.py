"""The Vault test server, checked through hvac itself: every call the platform relies on."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator

import hvac
import hvac.exceptions
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge_cloud.secrets import totp_code
from tests.support.vault.fixture import VaultServerProcess


@pytest.fixture
def client(vault_server: VaultServerProcess) -> Iterator[hvac.Client]:
    c = hvac.Client(url=vault_server.addr, token=vault_server.token, timeout=5)
    try:
        yield c
    finally:
        c.adapter.close()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def test_health_and_token_lookup(client: hvac.Client) -> None:
    health = client.sys.read_health_status(method="GET")
    assert health["initialized"] is True
    assert health["sealed"] is False
    assert client.is_authenticated()
    assert "root" in client.auth.token.lookup_self()["data"]["policies"]


def test_kv_versions_cas_and_errors(client: hvac.Client, prefix: str) -> None:
    kv = client.secrets.kv.v2
    path = f"{prefix}/app"
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path=path, raise_on_deleted_version=True)
    assert kv.create_or_update_secret(path=path, secret={"a": "1"}, cas=0)["data"]["version"] == 1
    with pytest.raises(hvac.exceptions.InvalidRequest, match="check-and-set parameter did not"):
        kv.create_or_update_secret(path=path, secret={"a": "x"}, cas=0)
    kv.create_or_update_secret(path=path, secret={"a": "2"}, cas=1)
    latest = kv.read_secret_version(path=path, raise_on_deleted_version=True)["data"]
    assert latest["data"] == {"a": "2"}
    assert latest["metadata"]["version"] == 2
    first = kv.read_secret_version(path=path, version=1, raise_on_deleted_version=True)
    assert first["data"]["data"] == {"a": "1"}
    meta = kv.read_secret_metadata(path=path)["data"]
    assert meta["current_version"] == 2
    assert sorted(meta["versions"]) == ["1", "2"]

    kv.delete_latest_version_of_secret(path=path)
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path=path, raise_on_deleted_version=True)
    deleted = kv.read_secret_version(path=path, raise_on_deleted_version=False)
    assert deleted["data"]["metadata"]["deletion_time"] != ""
    kv.undelete_secret_versions(path=path, versions=[2])
    assert kv.read_secret_version(path=path, raise_on_deleted_version=True)["data"]["data"] == {
        "a": "2"
    }
    kv.destroy_secret_versions(path=path, versions=[1])
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path=path, version=1, raise_on_deleted_version=True)
    kv.delete_metadata_and_all_versions(path=path)
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_metadata(path=path)


def test_kv_list_cas_required_and_max_versions(client: hvac.Client, prefix: str) -> None:
    kv = client.secrets.kv.v2
    for path in ("a/x", "a/y/z", "b"):
        kv.create_or_update_secret(path=f"{prefix}/{path}", secret={"k": "v"})
    assert kv.list_secrets(path=prefix)["data"]["keys"] == ["a/", "b"]
    assert kv.list_secrets(path=f"{prefix}/a/")["data"]["keys"] == ["x", "y/"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.list_secrets(path=f"{prefix}/none")
    kv.update_metadata(path=f"{prefix}/b", max_versions=2, cas_required=True)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="check-and-set parameter required"):
        kv.create_or_update_secret(path=f"{prefix}/b", secret={"k": "v2"})
    kv.create_or_update_secret(path=f"{prefix}/b", secret={"k": "v2"}, cas=1)
    kv.create_or_update_secret(path=f"{prefix}/b", secret={"k": "v3"}, cas=2)
    assert sorted(kv.read_secret_metadata(path=f"{prefix}/b")["data"]["versions"]) == ["2", "3"]


def test_error_shapes_and_unknown_tokens(vault_server: VaultServerProcess, prefix: str) -> None:
    url = f"{vault_server.addr}/v1/secret/data/{prefix}"
    denied = requests.get(url, headers={"X-Vault-Token": "nope"}, timeout=5)
    assert denied.status_code == 403
    assert denied.json() == {"errors": ["permission denied"]}
    missing = requests.get(url, headers={"X-Vault-Token": vault_server.token}, timeout=5)
    assert missing.status_code == 404
    assert missing.json() == {"errors": []}
    bad = requests.post(
        url, headers={"X-Vault-Token": vault_server.token}, data=b"{not json", timeout=5
    )
    assert bad.status_code == 400
    assert bad.json()["errors"][0].startswith("failed to parse JSON input")
    bearer = requests.get(url, headers={"Authorization": f"Bearer {vault_server.token}"}, timeout=5)
    assert bearer.status_code == 404  # authenticated, just absent
    client = hvac.Client(url=vault_server.addr, token="wrong", timeout=5)
    try:
        with pytest.raises(hvac.exceptions.Forbidden):
            client.secrets.kv.v2.read_secret_version(path=prefix, raise_on_deleted_version=True)
    finally:
        client.adapter.close()


def test_approle_login_ttl_revoke_and_limits(
    client: hvac.Client, vault_server: VaultServerProcess, prefix: str
) -> None:
    role = f"role-{prefix}"
    client.auth.approle.create_or_update_approle(role, token_ttl="1h", token_policies=["edge"])
    role_id = client.auth.approle.read_role_id(role)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    app = hvac.Client(url=vault_server.addr, timeout=5)
    try:
        with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid role or secret ID"):
            app.auth.approle.login(role_id=role_id, secret_id="wrong")
        login = app.auth.approle.login(role_id=role_id, secret_id=secret_id)
        assert login["auth"]["policies"] == ["default", "edge"]
        assert login["auth"]["lease_duration"] == 3600
        assert app.is_authenticated()
        app.secrets.kv.v2.create_or_update_secret(path=f"{prefix}/ok", secret={"k": "v"})
        with pytest.raises(hvac.exceptions.Forbidden):  # not root: no admin paths
            app.auth.approle.generate_secret_id(role)
        app.auth.token.revoke_self()
        assert not app.is_authenticated()
    finally:
        app.adapter.close()


def test_seal_makes_everything_unavailable_until_unsealed(
    client: hvac.Client, vault_server: VaultServerProcess
) -> None:
    client.sys.seal()
    try:
        with pytest.raises(hvac.exceptions.VaultDown):
            client.secrets.kv.v2.read_secret_version(path="x", raise_on_deleted_version=True)
        health = requests.get(f"{vault_server.addr}/v1/sys/health", timeout=5)
        assert health.status_code == 503
        assert health.json()["sealed"] is True
    finally:
        assert client.sys.submit_unseal_key(vault_server.token)["sealed"] is False
    assert client.sys.read_health_status(method="GET")["sealed"] is False


def test_pki_issues_real_certificates_from_its_ca(client: hvac.Client) -> None:
    client.secrets.pki.create_or_update_role(
        "edge",
        extra_params={"allowed_domains": ["edge.test"], "allow_subdomains": True, "ttl": "2h"},
    )
    issued = client.secrets.pki.generate_certificate(
        "edge", "crm.c1.edge.test", extra_params={"ip_sans": "127.0.0.1"}
    )["data"]
    cert = x509.load_pem_x509_certificate(issued["certificate"].encode())
    ca = x509.load_pem_x509_certificate(issued["issuing_ca"].encode())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["crm.c1.edge.test"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=1, minutes=55) < lifetime <= dt.timedelta(hours=2)

    key = serialization.load_pem_private_key(issued["private_key"].encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    assert client.secrets.pki.read_ca_certificate() == issued["issuing_ca"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not allowed by this role"):
        client.secrets.pki.generate_certificate("edge", "evil.example.com")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="unknown role"):
        client.secrets.pki.generate_certificate("nope", "a.edge.test")


def test_mounts_enable_list_disable(client: hvac.Client, prefix: str) -> None:
    client.sys.enable_secrets_engine("kv", path=prefix, options={"version": "2"})
    assert f"{prefix}/" in client.sys.list_mounted_secrets_engines()["data"]
    client.secrets.kv.v2.create_or_update_secret(path="s", secret={"k": "v"}, mount_point=prefix)
    assert client.secrets.kv.v2.list_secrets(path="", mount_point=prefix)["data"]["keys"] == ["s"]
    client.sys.disable_secrets_engine(prefix)
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version(
            path="s", mount_point=prefix, raise_on_deleted_version=True
        )


def test_totp_engine_keys_and_codes(client: hvac.Client, prefix: str) -> None:
    mount = f"{prefix}/totp"
    client.sys.enable_secrets_engine("totp", path=mount)
    seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    name = "Y2xvdWRsZXQvb3AvYzEvVE9UUA=="
    client.write_data(f"{mount}/keys/{name}", data={"key": seed, "digits": 6})
    assert client.read(f"{mount}/keys/{name}")["data"]["digits"] == 6
    assert client.list(f"{mount}/keys")["data"]["keys"] == [name]
    before = time.time()
    code = client.read(f"{mount}/code/{name}")["data"]["code"]
    assert code in {totp_code(seed, at=before), totp_code(seed, at=time.time())}
    with pytest.raises(hvac.exceptions.InvalidRequest, match="unknown key"):
        client.read(f"{mount}/code/other")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="illegal base32"):
        client.write_data(f"{mount}/keys/bad", data={"key": "not base32!"})
    client.delete(f"{mount}/keys/{name}")
    assert client.read(f"{mount}/keys/{name}") is None
