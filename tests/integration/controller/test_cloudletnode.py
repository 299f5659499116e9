"""CloudletNodeApi on real etcd and Redis, registration through the CCRM's AccessApi (§6, §7).

The Controllers are in-process (`cloudlet_harness`), cloudlets are onboarded through a CCRM
test server, and the CCRM side is the real `LocalAccessApi` / `ControllerCloudletNodes`
talking gRPC to the Controller's port.
"""

from __future__ import annotations

import base64
import time

import grpc.aio
import pytest
from edgeproto import cloudletkey_pb2, cloudletnode_pb2, cloudletnode_pb2_grpc

from edge_cloud.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    from_rpc_error,
)
from edge_cloud.objects import keys
from edge_cloud.platform import ControllerCloudletNodes, LocalAccessApi
from services.controller._cloudletnode import (
    CLOUDLET_NODE,
    PASSHASH_ITER,
    password_hash,
    password_matches,
)
from tests.integration.controller.cloudlet_harness import (
    Controller,
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

__all__ = ["ccrm", "harness"]


def stub(ctl: Controller) -> cloudletnode_pb2_grpc.CloudletNodeApiStub:
    return cloudletnode_pb2_grpc.CloudletNodeApiStub(ctl.channel)


def node_of(key: cloudletkey_pb2.CloudletKey, name: str = "pf-vm") -> cloudletnode_pb2.CloudletNode:
    node = cloudletnode_pb2.CloudletNode(node_type="platformvm", node_role="dockercrm")
    node.key.name = name
    node.key.cloudlet_key.CopyFrom(key)
    return node


async def call(coro: grpc.aio.UnaryUnaryCall) -> Exception | None:  # type: ignore[type-arg]
    """Await a unary call; the error it failed with, as our exception, or None."""
    try:
        await coro
    except grpc.aio.AioRpcError as err:
        return from_rpc_error(err)
    return None


async def onboarded(ctl: Controller) -> cloudletkey_pb2.CloudletKey:
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org())
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None
    return cloudlet.key


def test_hash_is_the_originals_pbkdf2_scheme() -> None:
    # pbkdf2-sha256, 10000 rounds, 32 bytes, std base64: the original's passhash package
    salt = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    hashed = password_hash("secret", salt)
    assert len(base64.b64decode(hashed)) == 32
    node = cloudletnode_pb2.CloudletNode(
        password_hash=hashed, salt=base64.b64encode(salt).decode(), iter=PASSHASH_ITER
    )
    assert password_matches("secret", node)
    assert not password_matches("Secret", node)
    assert not password_matches("secret", cloudletnode_pb2.CloudletNode())
    node.salt = "not base64!"
    assert not password_matches("secret", node)


async def test_crud_keeps_only_a_hash_and_show_hides_it(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ctl = await harness.start()
    key = await onboarded(ctl)
    api = stub(ctl)

    result = await api.CreateCloudletNode(node_of(key), timeout=10)
    password = result.message
    assert len(password) == 48
    assert sum(c.isdigit() for c in password) == 10
    stored = ctl.sync.caches.get(CLOUDLET_NODE, keys.key_string(node_of(key).key))
    assert stored is not None
    assert stored.node_type == "platformvm"
    assert stored.iter == PASSHASH_ITER
    assert password not in stored.SerializeToString().decode("latin-1")
    assert password_matches(password, stored)

    shown = [n async for n in api.ShowCloudletNode(cloudletnode_pb2.CloudletNode(), timeout=10)]
    assert [n.key for n in shown] == [node_of(key).key]
    assert not shown[0].password_hash
    assert not shown[0].salt
    assert not shown[0].iter

    # re-registering (an onboarding retry) replaces the node: the old password stops working
    again = await api.CreateCloudletNode(node_of(key), timeout=10)
    assert again.message != password
    stored = ctl.sync.caches.get(CLOUDLET_NODE, keys.key_string(node_of(key).key))
    assert stored is not None
    assert password_matches(again.message, stored)
    assert not password_matches(password, stored)

    update = node_of(key)
    update.node_role = "base"
    update.attributes["zone"] = "a"
    update.fields.extend(["4", "9"])
    await api.UpdateCloudletNode(update, timeout=10)
    by_key = cloudletnode_pb2.CloudletNode(key=node_of(key).key)
    [shown_one] = [n async for n in api.ShowCloudletNode(by_key, timeout=10)]
    assert shown_one.node_role == "base"
    assert dict(shown_one.attributes) == {"zone": "a"}

    bad = node_of(key)
    bad.password_hash = "chosen"
    bad.fields.append("5")
    err = await call(api.UpdateCloudletNode(bad, timeout=10))
    assert isinstance(err, InvalidArgument)

    await api.DeleteCloudletNode(node_of(key), timeout=10)
    assert [n async for n in api.ShowCloudletNode(by_key, timeout=10)] == []
    err = await call(api.DeleteCloudletNode(node_of(key), timeout=10))
    assert isinstance(err, NotFound)
    err = await call(api.UpdateCloudletNode(update, timeout=10))
    assert isinstance(err, NotFound)


async def test_validation_and_cloudlet_reference(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ctl = await harness.start()
    key = await onboarded(ctl)
    api = stub(ctl)

    err = await call(api.CreateCloudletNode(node_of(key, name=""), timeout=10))
    assert isinstance(err, InvalidArgument)
    assert "Name must not be empty" in err.message

    missing = cloudletkey_pb2.CloudletKey(organization=key.organization, name="nosuch")
    err = await call(api.CreateCloudletNode(node_of(missing), timeout=10))
    assert isinstance(err, NotFound)
    assert "nosuch" in err.message

    # a cloudlet's delete removes its nodes
    await api.CreateCloudletNode(node_of(key, "a"), timeout=10)
    await api.CreateCloudletNode(node_of(key, "b"), timeout=10)
    _, err2 = await collect(ctl.cloudlets.DeleteCloudlet(new_cloudlet(key.organization)))
    assert err2 is None
    assert [n async for n in api.ShowCloudletNode(cloudletnode_pb2.CloudletNode())] == []


async def test_registration_through_the_ccrm_access_api(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ctl = await harness.start()
    key = await onboarded(ctl)
    nodes = ControllerCloudletNodes(ctl.addr, timeout=10)
    try:
        access = LocalAccessApi(nodes=nodes, cloudlet_key=key)
        password = await access.create_cloudlet_node(node_of(key))
        stored = ctl.sync.caches.get(CLOUDLET_NODE, keys.key_string(node_of(key).key))
        assert stored is not None
        assert password_matches(password, stored)

        other = cloudletkey_pb2.CloudletKey(organization=key.organization, name="other")
        with pytest.raises(PermissionDenied, match="may register only its own nodes"):
            await access.create_cloudlet_node(node_of(other))

        await access.delete_cloudlet_node(node_of(key).key)
        assert ctl.sync.caches.get(CLOUDLET_NODE, keys.key_string(node_of(key).key)) is None
        await access.delete_cloudlet_node(node_of(key).key)  # twice is fine (cleanup paths)

        # the Controller's refusal reaches the platform as the same error
        unbound = LocalAccessApi(nodes=nodes)
        gone = cloudletkey_pb2.CloudletKey(organization=key.organization, name="gone")
        with pytest.raises(NotFound, match="gone"):
            await unbound.create_cloudlet_node(node_of(gone))
    finally:
        await nodes.close()

    with pytest.raises(FailedPrecondition, match="needs Vault"):
        await LocalAccessApi().create_cloudlet_node(node_of(key))


async def test_failed_crm_on_edge_onboarding_returns_promptly(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ccrm.fail_create = "no quota for the platform VM"
    ctl = await harness.start()
    ctl.services.info_cleanup_timeout = 300.0  # the daemon's default
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org(), crm_on_edge=True)
    started = time.monotonic()
    lines, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=15))
    elapsed = time.monotonic() - started
    assert isinstance(err, FailedPrecondition)
    assert err.message == "Cloudlet onboarding failed: no quota for the platform VM"
    assert lines[-1] == "Deleted Cloudlet successfully"
    assert elapsed < 10, elapsed  # no CRM ever connected: nothing to wait for
    assert ctl.cloudlet(cloudlet.key) is None
    assert ctl.info(cloudlet.key) is None  # the CCRM's ERRORS info went with it
