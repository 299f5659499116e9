"""The local backend on a real etcd: KV-v2 behaviour, sealing, and the access-vars helpers."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge_cloud.errors import InvalidArgument, NotFound
from edge_cloud.platform import SecretsAccessApi
from edge_cloud.secrets import (
    REDACTED,
    CasMismatch,
    LocalSecretsBackend,
    SecretDecryptError,
    cloudlet_totp_name,
    delete_cloudlet_access_vars,
    generate_key,
    parse_key,
    save_cloudlet_access_vars,
    totp_code,
)
from edge_cloud.store import EtcdStore


@pytest.fixture
def backend(etcd_store: EtcdStore) -> LocalSecretsBackend:
    return LocalSecretsBackend(etcd_store, parse_key(generate_key()), max_versions=3)


async def test_versions_cas_and_old_versions(backend: LocalSecretsBackend) -> None:
    assert await backend.get("r/a") is None
    assert await backend.put("r/a", {"K": "v1"}, cas=0) == 1
    with pytest.raises(CasMismatch, match="expected 0, found 1"):
        await backend.put("r/a", {"K": "lost"}, cas=0)
    assert await backend.put("r/a", {"K": "v2"}, cas=1) == 2
    assert await backend.put("r/a", {"K": "v3"}) == 3
    assert await backend.put("r/a", {"K": "v4"}) == 4
    latest = await backend.get("r/a")
    assert latest is not None
    assert (latest.data, latest.version) == ({"K": "v4"}, 4)
    older = await backend.get("r/a", version=2)
    assert older is not None
    assert older.data == {"K": "v2"}
    assert await backend.get("r/a", version=1) is None  # beyond max_versions
    assert "v4" not in repr(latest)
    with pytest.raises(InvalidArgument):
        await backend.get("r/a", version=-1)


async def test_concurrent_cas_writers_exactly_one_wins(backend: LocalSecretsBackend) -> None:
    await backend.put("race", {"n": "0"})
    results = await asyncio.gather(
        *(backend.put("race", {"n": str(i)}, cas=1) for i in range(5)), return_exceptions=True
    )
    assert sum(isinstance(r, int) for r in results) == 1
    assert sum(isinstance(r, CasMismatch) for r in results) == 4


async def test_list_and_delete(backend: LocalSecretsBackend) -> None:
    for path in ("EU/cloudlet/op/c1/accessvars", "EU/cloudlet/op/c2/accessvars", "EU/apps/x"):
        await backend.put(path, {"k": "v"})
    await backend.put("EU/leaf", {"k": "v"})
    assert await backend.list("EU") == ["apps/", "cloudlet/", "leaf"]
    assert await backend.list("/EU/cloudlet/op/") == ["c1/", "c2/"]
    assert await backend.list("") == ["EU/"]
    assert await backend.list("nothing/here") == []
    assert await backend.delete("EU/apps/x")
    assert not await backend.delete("EU/apps/x")
    assert await backend.get("EU/apps/x") is None


async def test_values_are_sealed_and_bound_to_their_key(
    backend: LocalSecretsBackend, etcd_store: EtcdStore
) -> None:
    await backend.put("one", {"PASSWORD": "correct-horse-battery"})
    await backend.put("two", {"PASSWORD": "other"})
    raw = await etcd_store.get("secrets/one")
    assert raw is not None
    assert b"correct-horse" not in raw.value
    assert b"PASSWORD" not in raw.value
    # a sealed value moved onto another path does not open there
    await etcd_store.put("secrets/two", raw.value)
    with pytest.raises(SecretDecryptError, match="does not open with the configured key"):
        await backend.get("two")
    other_key = LocalSecretsBackend(etcd_store, parse_key(generate_key()))
    with pytest.raises(SecretDecryptError, match="configured key"):
        await other_key.get("one")
    await etcd_store.put("secrets/three", b"plain text")
    with pytest.raises(SecretDecryptError, match="not in the sealed format"):
        await backend.get("three")


async def test_cloudlet_access_vars_save_merge_totp_and_delete(
    backend: LocalSecretsBackend,
) -> None:
    seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    where = {"region": "EU", "org": "op", "name": "c1", "physical_name": "site1"}
    redacted = await save_cloudlet_access_vars(
        backend,
        **where,
        values={"KEY_ID": "AKIA1", "SECRET": "s1", "TOTP": seed},
        totp_names=["TOTP"],
    )
    assert redacted == {"KEY_ID": REDACTED, "SECRET": REDACTED, "TOTP": REDACTED}
    access = SecretsAccessApi(
        backend, region="EU", organization="op", name="c1", physical_name="site1"
    )
    # the seed is never handed out, only codes generated from it
    assert await access.get_cloudlet_access_vars() == {"KEY_ID": "AKIA1", "SECRET": "s1"}
    before = time.time()
    code = await access.get_session_tokens("TOTP")
    assert code in {totp_code(seed, at=before), totp_code(seed, at=time.time())}
    with pytest.raises(NotFound, match="no TOTP secret OTHER"):
        await access.get_session_tokens("OTHER")
    # an update merges; a redacted value keeps what is stored
    merged = await save_cloudlet_access_vars(
        backend, **where, values={"SECRET": "s2", "KEY_ID": REDACTED}, merge=True
    )
    assert set(merged) == {"KEY_ID", "SECRET"}  # the caller adds the object's other keys
    assert await access.get_cloudlet_access_vars() == {"KEY_ID": "AKIA1", "SECRET": "s2"}
    # a create with a redacted value keeps it; one not given again is dropped
    await save_cloudlet_access_vars(backend, **where, values={"KEY_ID": REDACTED, "NEW": "n"})
    assert await access.get_cloudlet_access_vars() == {"KEY_ID": "AKIA1", "NEW": "n"}
    with pytest.raises(InvalidArgument, match="base32"):
        await save_cloudlet_access_vars(
            backend, **where, values={"TOTP": "not base32!"}, totp_names=["TOTP"]
        )
    names = ["KEY_ID", "NEW", "TOTP"]
    assert await backend.list("EU/totp/keys") == [cloudlet_totp_name("op", "c1", "TOTP", "site1")]
    assert await delete_cloudlet_access_vars(backend, **where, names=names)
    assert await access.get_cloudlet_access_vars() == {}
    with pytest.raises(NotFound):
        await access.get_session_tokens("TOTP")
    assert not await delete_cloudlet_access_vars(backend, **where, names=names)
    # the seed sat sealed under the region's TOTP mount, keyed as the original names it
    name = cloudlet_totp_name("op", "c1", "TOTP", "site1")
    assert name == "Y2xvdWRsZXQvb3Avc2l0ZTEvVE9UUA=="
    assert await backend.list("EU/totp/keys") == []


async def test_app_secret_vars_and_registry_auth_through_the_access_api(
    backend: LocalSecretsBackend,
) -> None:
    access = SecretsAccessApi(backend, region="EU", organization="op", name="c1")
    app_key = '{"organization":"dev","name":"web","version":"1.0"}'
    assert await access.get_app_secret_vars(app_key) == {}
    await backend.put("EU/apps/dev/web/1.0/secretenvvars", {"DB_PASSWORD": "pw"})
    assert await access.get_app_secret_vars(app_key) == {"DB_PASSWORD": "pw"}
    with pytest.raises(InvalidArgument, match="not an App key string"):
        await access.get_app_secret_vars("web")
    public = await access.get_registry_auth("docker.io/library/nginx:1")
    assert (public.auth_type, public.hostname) == ("noauth", "docker.io")
    await backend.put(
        "registry/reg.example", {"AuthType": "basic", "username": "u", "password": "p"}
    )
    auth = await access.get_registry_auth("https://Reg.Example:5000/org/img:2")
    assert (auth.auth_type, auth.hostname, auth.username, auth.password) == (
        "basic",
        "reg.example",
        "u",
        "p",
    )
