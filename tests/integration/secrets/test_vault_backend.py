"""`VaultSecretsBackend` against the Vault test server: token and AppRole, errors, access API."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator

import hvac
import pytest

from edge_cloud.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from edge_cloud.platform import SecretsAccessApi
from edge_cloud.secrets import (
    CasMismatch,
    SecretsSettings,
    VaultAuth,
    VaultSecretsBackend,
    cloudlet_totp_name,
    connect_backend,
    delete_cloudlet_access_vars,
    save_cloudlet_access_vars,
    totp_code,
)
from tests.support.vault.fixture import VaultServerProcess


@pytest.fixture
def admin(vault_server: VaultServerProcess) -> Iterator[hvac.Client]:
    client = hvac.Client(url=vault_server.addr, token=vault_server.token, timeout=5)
    try:
        yield client
    finally:
        client.adapter.close()


@pytest.fixture
async def backend(vault_server: VaultServerProcess) -> AsyncIterator[VaultSecretsBackend]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    vault = VaultSecretsBackend(
        vault_server.addr, VaultAuth(token=vault_server.token), path_prefix=prefix
    )
    try:
        yield vault
    finally:
        await vault.close()


def approle(admin: hvac.Client, **options: object) -> tuple[str, str]:
    name = f"edge-{uuid.uuid4().hex[:8]}"
    admin.auth.approle.create_or_update_approle(name, **options)
    role_id = admin.auth.approle.read_role_id(name)["data"]["role_id"]
    secret_id = admin.auth.approle.generate_secret_id(name)["data"]["secret_id"]
    return role_id, secret_id


async def test_kv_semantics_match_the_local_backend(backend: VaultSecretsBackend) -> None:
    assert backend.kind == "vault"
    assert await backend.health()
    assert await backend.get("r/a") is None
    assert await backend.put("r/a", {"K": "v1"}, cas=0) == 1
    with pytest.raises(CasMismatch, match="check-and-set parameter did not match"):
        await backend.put("r/a", {"K": "x"}, cas=0)
    assert await backend.put("r/a", {"K": "v2"}, cas=1) == 2
    latest = await backend.get("r/a")
    assert latest is not None
    assert (latest.data, latest.version) == ({"K": "v2"}, 2)
    first = await backend.get("r/a", version=1)
    assert first is not None
    assert first.data == {"K": "v1"}
    await backend.put("r/b/c", {"K": "v"})
    assert await backend.list("r") == ["a", "b/"]
    assert await backend.list("none") == []
    assert await backend.delete("r/a")
    assert not await backend.delete("r/a")
    assert await backend.get("r/a") is None


async def test_the_prefix_and_mount_place_secrets_where_the_original_does(
    vault_server: VaultServerProcess, admin: hvac.Client
) -> None:
    vault = VaultSecretsBackend(vault_server.addr, VaultAuth(token=vault_server.token))
    region = f"R{uuid.uuid4().hex[:6]}"
    try:
        await save_cloudlet_access_vars(
            vault, region=region, org="op", name="c1", values={"OS_PASSWORD": "pw"}
        )
        raw = admin.secrets.kv.v2.read_secret_version(
            path=f"{region}/cloudlet/op/c1/accessvars", raise_on_deleted_version=True
        )
        assert raw["data"]["data"] == {"OS_PASSWORD": "pw"}
        access = SecretsAccessApi(vault, region=region, organization="op", name="c1")
        assert await access.get_cloudlet_access_vars() == {"OS_PASSWORD": "pw"}
    finally:
        await vault.close()


async def test_approle_logs_in_and_again_after_its_token_is_revoked(
    vault_server: VaultServerProcess, admin: hvac.Client
) -> None:
    role_id, secret_id = approle(admin, token_ttl="1h")
    settings = SecretsSettings(
        vault_addr=vault_server.addr, vault_role_id=role_id, vault_secret_id=secret_id
    )
    vault = await connect_backend(settings, etcd_urls=())
    assert isinstance(vault, VaultSecretsBackend)
    prefix = uuid.uuid4().hex[:8]
    try:
        await vault.put(f"{prefix}/s", {"k": "v"})
        # revoke the token the backend logged in with, as an expired lease would
        _revoke(vault_server, vault._client.token)
        found = await vault.get(f"{prefix}/s")
        assert found is not None
        assert found.data == {"k": "v"}
    finally:
        await vault.close()


def _revoke(vault_server: VaultServerProcess, token: str) -> None:
    client = hvac.Client(url=vault_server.addr, token=token, timeout=5)
    try:
        client.auth.token.revoke_self()
    finally:
        client.adapter.close()


async def test_refusals_become_our_errors(
    vault_server: VaultServerProcess, admin: hvac.Client
) -> None:
    denied = VaultSecretsBackend(vault_server.addr, VaultAuth(token="not-a-token"))
    try:
        with pytest.raises(PermissionDenied, match="permission denied"):
            await denied.get("x")
    finally:
        await denied.close()
    role_id, _ = approle(admin)
    wrong = VaultSecretsBackend(vault_server.addr, VaultAuth(role_id=role_id, secret_id="bad"))
    try:
        with pytest.raises(Unauthenticated, match="refused the AppRole login"):
            await wrong.get("x")
    finally:
        await wrong.close()
    down = VaultSecretsBackend("http://127.0.0.1:1", VaultAuth(token="t"), timeout=2)
    try:
        with pytest.raises(Unavailable, match="cannot reach Vault"):
            await down.get("x")
    finally:
        await down.close()


async def test_a_sealed_vault_is_unavailable(
    backend: VaultSecretsBackend, admin: hvac.Client, vault_server: VaultServerProcess
) -> None:
    admin.sys.seal()
    try:
        with pytest.raises(Unavailable, match="Vault is sealed"):
            await backend.get("x")
    finally:
        admin.sys.submit_unseal_key(vault_server.token)
    assert await backend.get("x") is None


async def test_totp_seeds_go_to_the_regions_totp_engine(
    backend: VaultSecretsBackend, admin: hvac.Client
) -> None:
    region = f"R{uuid.uuid4().hex[:6]}"
    seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    where = {"region": region, "org": "op", "name": "c1"}
    with pytest.raises(FailedPrecondition, match=f"no TOTP engine at {region}/totp"):
        await save_cloudlet_access_vars(backend, **where, values={"MFA": seed}, totp_names=["MFA"])
    admin.sys.enable_secrets_engine("totp", path=f"{region}/totp")
    await save_cloudlet_access_vars(
        backend, **where, values={"KEY": "k", "MFA": seed}, totp_names=["MFA"]
    )
    name = cloudlet_totp_name("op", "c1", "MFA")
    assert admin.read(f"{region}/totp/keys/{name}")["data"]["period"] == 30
    access = SecretsAccessApi(backend, region=region, organization="op", name="c1")
    before = time.time()
    code = await access.get_session_tokens("MFA")
    assert code in {totp_code(seed, at=before), totp_code(seed, at=time.time())}
    assert await access.get_cloudlet_access_vars() == {"KEY": "k"}
    await delete_cloudlet_access_vars(backend, **where, names=["KEY", "MFA"])
    with pytest.raises(NotFound, match="no TOTP secret MFA"):
        await access.get_session_tokens("MFA")
