"""Cloudlet access vars end to end: Controller → secrets backend (never etcd) → CCRM's AccessApi.

A Controller of the in-process harness gets a local secrets backend; the CCRM side is a real
`PlatformHost` configured as the daemon would be (same etcd namespace and key, its own etcd
connection), so what a platform's `get_cloudlet_access_vars()` returns is read back across
two connections exactly as across two processes.
"""

from __future__ import annotations

import time

import grpc
import grpc.aio
import hvac
import hvac.exceptions
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from edgeproto import cloudlet_pb2, cloudletkey_pb2, common_pb2

from edge_cloud.errors import FailedPrecondition, InvalidArgument, NotFound
from edge_cloud.platform import PlatformCaches
from edge_cloud.secrets import (
    REDACTED,
    LocalSecretsBackend,
    VaultAuth,
    VaultSecretsBackend,
    generate_key,
    load_crm_access_keys,
    load_kafka_creds,
    parse_key,
    totp_code,
)
from edge_cloud.store import EtcdStore
from services.ccrm._host import PlatformHost
from services.ccrm.config import CcrmConfig
from tests.integration.controller.cloudlet_harness import (
    ControllerHarness,
    FakeCcrm,
    ccrm,
    collect,
    features,
    harness,
    new_cloudlet,
    put_features,
    unique_org,
)
from tests.integration.helpers import eventually
from tests.support.vault.fixture import VaultServerProcess

__all__ = ["ccrm", "harness"]

SECRET = "sekrit-api-key-8d1f"
SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
ACCESS_VARS = "23"


async def etcd_values(store: EtcdStore) -> list[bytes]:
    found, _ = await store.range("")
    return [kv.value for kv in found]


async def test_access_vars_go_to_the_backend_and_reach_the_ccrm(
    harness: ControllerHarness, ccrm: FakeCcrm, etcd_store: EtcdStore
) -> None:
    key_text = generate_key()
    bare = await harness.start()  # no secrets backend: refused, with the way out named
    ctl = await harness.start()
    ctl.runtime.attach_secrets(LocalSecretsBackend(ctl.store, parse_key(key_text)))
    props = {
        "APIKey": cloudlet_pb2.PropertyInfo(name="API key", secret=True, mandatory=True),
        "REGION": cloudlet_pb2.PropertyInfo(name="region"),
        "MFA": cloudlet_pb2.PropertyInfo(name="MFA seed", totp_secret=True),
    }
    await put_features(ctl, features(access_vars=props))
    org = unique_org()

    cloudlet = new_cloudlet(org, access_vars={"APIKey": SECRET, "MFA": SEED})
    _, err = await collect(bare.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert isinstance(err, FailedPrecondition)
    assert "secrets backend" in err.message
    assert "--secrets-key-file" in err.message
    _, err = await collect(
        ctl.cloudlets.CreateCloudlet(new_cloudlet(org, access_vars={"NOPE": "x"}), timeout=30)
    )
    assert isinstance(err, InvalidArgument)
    assert err.message == "Invalid access vars NOPE, valid vars are APIKey, MFA, REGION"
    _, err = await collect(
        ctl.cloudlets.CreateCloudlet(new_cloudlet(org, access_vars={"REGION": "x"}), timeout=30)
    )
    assert isinstance(err, InvalidArgument)
    assert err.message == "Missing required access vars APIKey"

    lines, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None, err
    assert lines[-1] == "Created Cloudlet successfully"
    stored = ctl.cloudlet(cloudlet.key)
    assert stored is not None
    assert dict(stored.access_vars) == {"APIKey": REDACTED, "MFA": REDACTED}
    assert dict(ccrm.requests[-1].access_vars) == {"APIKey": REDACTED, "MFA": REDACTED}
    assert not [
        v for v in await etcd_values(etcd_store) if SECRET.encode() in v or SEED.encode() in v
    ]

    host = PlatformHost(
        CcrmConfig(
            region="local",
            secrets_key=key_text,
            etcd_urls=(harness.etcd_url,),
            etcd_namespace=harness.namespace,
        ),
        {},
        PlatformCaches(),
        {},
        {},
    )
    try:
        access = host.access_for(stored)
        assert await access.get_cloudlet_access_vars() == {"APIKey": SECRET}
        before = time.time()
        code = await access.get_session_tokens("MFA")  # the seed itself never comes back
        assert code in {totp_code(SEED, at=before), totp_code(SEED, at=time.time())}

        update = cloudlet_pb2.Cloudlet(key=cloudlet.key, access_vars={"REGION": "eu-west-1"})
        update.fields.append(ACCESS_VARS)
        _, err = await collect(ctl.cloudlets.UpdateCloudlet(update, timeout=30))
        assert err is None, err
        stored = ctl.cloudlet(cloudlet.key)
        assert stored is not None
        assert dict(stored.access_vars) == {
            "APIKey": REDACTED,
            "MFA": REDACTED,
            "REGION": REDACTED,
        }
        assert await access.get_cloudlet_access_vars() == {
            "APIKey": SECRET,
            "REGION": "eu-west-1",
        }
        bad = cloudlet_pb2.Cloudlet(key=cloudlet.key, access_vars={"NOPE": "x"})
        bad.fields.append(ACCESS_VARS)
        _, err = await collect(ctl.cloudlets.UpdateCloudlet(bad, timeout=30))
        assert isinstance(err, InvalidArgument)

        _, err = await collect(ctl.cloudlets.DeleteCloudlet(stored, timeout=30))
        assert err is None, err
        assert await access.get_cloudlet_access_vars() == {}
        with pytest.raises(NotFound):
            await access.get_session_tokens("MFA")
        found, _ = await etcd_store.range("secrets/")
        assert found == []
    finally:
        await host.close_secrets()


async def test_shared_site_keeps_its_vars_and_a_failed_create_removes_them(
    harness: ControllerHarness, ccrm: FakeCcrm, etcd_store: EtcdStore
) -> None:
    ctl = await harness.start()
    backend = LocalSecretsBackend(ctl.store, parse_key(generate_key()))
    ctl.runtime.attach_secrets(backend)
    props = {"APIKey": cloudlet_pb2.PropertyInfo(name="API key", mandatory=True)}
    await put_features(ctl, features(access_vars=props))
    org = unique_org()
    path = f"local/cloudlet/{org}/site/accessvars"

    first = new_cloudlet(org, "c1", physical_name="site", access_vars={"APIKey": SECRET})
    second = new_cloudlet(org, "c2", physical_name="site", access_vars={"APIKey": SECRET})
    for cloudlet in (first, second):
        _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
        assert err is None, err
    _, err = await collect(ctl.cloudlets.DeleteCloudlet(first, timeout=30))
    assert err is None, err
    kept = await backend.get(path)
    assert kept is not None
    assert kept.data == {"APIKey": SECRET}  # c2 still runs on that site
    _, err = await collect(ctl.cloudlets.DeleteCloudlet(second, timeout=30))
    assert err is None, err
    assert await backend.get(path) is None

    ccrm.fail_create = "no capacity"
    failing = new_cloudlet(org, "c3", access_vars={"APIKey": SECRET})
    lines, err = await collect(ctl.cloudlets.CreateCloudlet(failing, timeout=30))
    assert err is not None
    assert "Deleting Cloudlet due to failures" in lines
    assert ctl.cloudlet(failing.key) is None
    assert await backend.get(f"local/cloudlet/{org}/c3/accessvars") is None


async def test_kafka_credentials_and_crm_keys_live_in_the_backend(
    harness: ControllerHarness, ccrm: FakeCcrm, etcd_store: EtcdStore
) -> None:
    ctl = await harness.start()
    backend = LocalSecretsBackend(ctl.store, parse_key(generate_key()))
    ctl.runtime.attach_secrets(backend)
    await put_features(ctl, features())
    org = unique_org()
    cloudlet = new_cloudlet(
        org, kafka_cluster="kafka.example:9092", kafka_user="bus", kafka_password="kpw-77"
    )
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None, err
    stored = ctl.cloudlet(cloudlet.key)
    assert stored is not None
    assert (stored.kafka_cluster, stored.kafka_user, stored.kafka_password) == (
        "kafka.example:9092",
        "",
        "",
    )
    assert not [v for v in await etcd_values(etcd_store) if b"kpw-77" in v]
    kafka = await backend.get(f"kafka/local/{org}/c1")
    assert kafka is not None
    assert kafka.data == {
        "endpoint": "kafka.example:9092",
        "username": "bus",
        "password": "kpw-77",
    }
    keys = await backend.get(f"local/cloudlet/{org}/c1/accesskeys")
    assert keys is not None
    assert keys.data["PublicPEM"] == stored.crm_access_public_key
    private = serialization.load_pem_private_key(keys.data["PrivatePEM"].encode(), None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert public.decode() == stored.crm_access_public_key
    assert b"PRIVATE KEY" not in b"".join(await etcd_values(etcd_store))
    loaded = await load_crm_access_keys(backend, region="local", org=org, name="c1")
    assert loaded is not None
    assert loaded[0].public_pem == stored.crm_access_public_key
    assert loaded[1] is None  # no platform HA: one key pair
    creds = await load_kafka_creds(backend, region="local", org=org, name="c1")
    assert creds == kafka.data

    update = cloudlet_pb2.Cloudlet(
        key=cloudlet.key,
        kafka_cluster="kafka2.example:9092",
        kafka_user="bus2",
        kafka_password="kpw-88",
    )
    update.fields.extend(["42", "43", "44"])
    _, err = await collect(ctl.cloudlets.UpdateCloudlet(update, timeout=30))
    assert err is None, err
    kafka = await backend.get(f"kafka/local/{org}/c1")
    assert kafka is not None
    assert kafka.data["password"] == "kpw-88"

    _, err = await collect(ctl.cloudlets.DeleteCloudlet(cloudlet, timeout=30))
    assert err is None, err
    assert await backend.get(f"kafka/local/{org}/c1") is None
    assert await backend.get(f"local/cloudlet/{org}/c1/accesskeys") is None


async def test_with_vault_the_secrets_land_where_the_original_keeps_them(
    harness: ControllerHarness, ccrm: FakeCcrm, vault_server: VaultServerProcess
) -> None:
    ctl = await harness.start()
    vault = VaultSecretsBackend(vault_server.addr, VaultAuth(token=vault_server.token))
    ctl.runtime.attach_secrets(vault)
    props = {"APIKey": cloudlet_pb2.PropertyInfo(name="API key", mandatory=True)}
    await put_features(ctl, features(access_vars=props))
    org = unique_org()
    cloudlet = new_cloudlet(org, access_vars={"APIKey": SECRET})
    admin = hvac.Client(url=vault_server.addr, token=vault_server.token, timeout=5)
    host = PlatformHost(
        CcrmConfig(region="local", vault_addr=vault_server.addr, vault_token=vault_server.token),
        {},
        PlatformCaches(),
        {},
        {},
    )
    try:
        _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
        assert err is None, err
        raw = admin.secrets.kv.v2.read_secret_version(
            path=f"local/cloudlet/{org}/c1/accessvars", raise_on_deleted_version=True
        )
        assert raw["data"]["data"] == {"APIKey": SECRET}
        keys = admin.secrets.kv.v2.read_secret_version(
            path=f"local/cloudlet/{org}/c1/accesskeys", raise_on_deleted_version=True
        )
        assert keys["data"]["data"]["PrivatePEM"].startswith("-----BEGIN PRIVATE KEY-----")
        stored = ctl.cloudlet(cloudlet.key)
        assert stored is not None
        assert await host.access_for(stored).get_cloudlet_access_vars() == {"APIKey": SECRET}

        _, err = await collect(ctl.cloudlets.DeleteCloudlet(stored, timeout=30))
        assert err is None, err
        assert await host.access_for(stored).get_cloudlet_access_vars() == {}
        with pytest.raises(hvac.exceptions.InvalidPath):
            admin.secrets.kv.v2.read_secret_metadata(path=f"local/cloudlet/{org}/c1/accesskeys")
    finally:
        admin.adapter.close()
        await host.close_secrets()
        await vault.close()


async def test_generate_and_revoke_crm_access_keys(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    bare = await harness.start()
    ctl = await harness.start()
    backend = LocalSecretsBackend(ctl.store, parse_key(generate_key()))
    ctl.runtime.attach_secrets(backend)
    await put_features(ctl, features())
    org = unique_org()
    cloudlet = new_cloudlet(org, crm_on_edge=True, crm_override=common_pb2.IGNORE_CRM)
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None, err
    first = ctl.cloudlet(cloudlet.key)
    assert first is not None
    assert first.crm_access_key_upgrade_required

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await bare.cloudlets.GenerateAccessKey(cloudlet.key, timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    result = await ctl.cloudlets.GenerateAccessKey(cloudlet.key, timeout=10)
    private = serialization.load_pem_private_key(result.message.encode(), None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    async def regenerated() -> None:
        now = ctl.cloudlet(cloudlet.key)
        assert now is not None
        assert now.crm_access_public_key == public.decode()
        assert not now.crm_access_key_upgrade_required

    await eventually(regenerated)
    stored = await load_crm_access_keys(backend, region="local", org=org, name="c1")
    assert stored is not None
    assert stored[0].private_pem == result.message

    await ctl.cloudlets.RevokeAccessKey(cloudlet.key, timeout=10)
    assert await load_crm_access_keys(backend, region="local", org=org, name="c1") is None

    async def revoked() -> None:
        now = ctl.cloudlet(cloudlet.key)
        assert now is not None
        assert now.crm_access_public_key == ""

    await eventually(revoked)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await ctl.cloudlets.GenerateAccessKey(
            cloudletkey_pb2.CloudletKey(organization=org, name="nope"), timeout=10
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
