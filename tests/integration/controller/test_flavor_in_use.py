"""Flavor delete refused while something uses it (controller.md §3.1): the exact messages and
their order, Settings → ClusterInst → App → AppInst → Cloudlet (BEHAVIOURS.md row 17)."""

from __future__ import annotations

from typing import Any

import grpc
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    flavor_pb2,
    flavor_pb2_grpc,
)
from google.protobuf.message import Message

from edge_cloud.errors import FailedPrecondition
from edge_cloud.objects import codec, keys, registry
from edge_cloud.objects.registry import SETTINGS_KEY
from services.controller._engine import Txn
from services.controller._runtime import SETTINGS
from services.controller.api.flavor import FlavorApi
from tests.integration.controller.cloudlet_harness import (
    ControllerHarness,
    harness,
    unique_org,
)
from tests.integration.controller.clusterinst_harness import (
    InstCcrm,
    ccrm,
    clusters,
    collect,
    new_cluster,
    put_flavor,
    ready_cloudlet,
)
from tests.integration.controller.conftest import Instance, StartInstance

FLAVOR = registry.by_class(flavor_pb2.Flavor)
F = flavor_pb2.FlavorKey(name="x1.used")
CTX: Any = None  # the servicer never touches the context

__all__ = ["ccrm", "harness"]


async def put_directly(ctl: Instance, *objs: Message) -> None:
    """Store objects as their own slices would, bypassing the APIs (the check reads caches)."""
    revision = 0
    for obj in objs:
        revision = await ctl.store.put(keys.object_store_key(obj), codec.encode(obj))
    await ctl.sync.wait_for_revision(revision)


async def remove_directly(ctl: Instance, obj: Message) -> None:
    revision = await ctl.store.delete(keys.object_store_key(obj))
    await ctl.sync.wait_for_revision(revision)


async def refusal(stub: Any, key: flavor_pb2.FlavorKey = F) -> str:
    """The details of the FAILED_PRECONDITION the delete ends with."""
    try:
        await stub.DeleteFlavor(flavor_pb2.Flavor(key=key), timeout=10)
    except grpc.aio.AioRpcError as err:
        code, details = err.code(), err.details() or ""
    else:
        raise AssertionError("the delete succeeded")
    assert code == grpc.StatusCode.FAILED_PRECONDITION, details
    return details


async def test_every_user_blocks_the_delete_in_the_documented_order(
    start_instance: StartInstance,
) -> None:
    ctl = await start_instance()
    api = FlavorApi(ctl.runtime)
    await api.CreateFlavor(flavor_pb2.Flavor(key=F, ram=1024, vcpus=2, disk=10), CTX)

    def master_flavor(name: str) -> Any:
        def fn(txn: Txn) -> None:
            settings = txn.get(SETTINGS, SETTINGS_KEY)
            assert settings is not None
            settings.master_node_flavor = name
            txn.put(settings)

        return fn

    cluster = clusterinst_pb2.ClusterInst(flavor=F)
    cluster.key.name, cluster.key.organization = "cl1", "dev"
    app = app_pb2.App(
        key=app_pb2.AppKey(organization="dev", name="app1", version="1.0"), default_flavor=F
    )
    inst = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name="ai1", organization="dev"), app_key=app.key, flavor=F
    )
    cloudlet = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization="op", name="c1"), flavor=F
    )
    await put_directly(ctl, cloudlet, inst, app, cluster)
    await ctl.engine.apply(master_flavor(F.name))

    async def refused() -> str:
        try:
            await api.DeleteFlavor(flavor_pb2.Flavor(key=F), CTX)
        except FailedPrecondition as err:
            stored = ctl.engine.get(FLAVOR, F)
            assert stored is not None
            assert not stored.delete_prepare  # the refusal undid the delete-prepare mark
            return err.message
        raise AssertionError("the delete succeeded")

    assert await refused() == (
        "Flavor in use by Settings MasterNodeFlavor, change Settings.MasterNodeFlavor first"
    )
    await ctl.engine.apply(master_flavor(""))
    assert await refused() == 'Flavor in use by ClusterInst {"name":"cl1","organization":"dev"}'
    await remove_directly(ctl, cluster)
    assert await refused() == (
        'Flavor in use by App {"organization":"dev","name":"app1","version":"1.0"}'
    )
    await remove_directly(ctl, app)
    assert await refused() == 'Flavor in use by AppInst {"name":"ai1","organization":"dev"}'
    await remove_directly(ctl, inst)
    assert await refused() == 'Flavor in use by Cloudlet {"organization":"op","name":"c1"}'
    await remove_directly(ctl, cloudlet)
    await api.DeleteFlavor(flavor_pb2.Flavor(key=F), CTX)
    assert ctl.engine.get(FLAVOR, F) is None


async def test_objects_created_through_the_api_hold_their_flavor(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    """A Cloudlet's platform flavor and a ClusterInst's node flavor, both as the APIs store
    them, keep the flavor; over gRPC the refusal is FAILED_PRECONDITION with the message."""
    ctl = await harness.start()
    await put_flavor(ctl, F.name)
    flavors = flavor_pb2_grpc.FlavorApiStub(ctl.channel)
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org, flavor=F)
    assert await refusal(flavors) == (
        f'Flavor in use by Cloudlet {{"organization":"{org}","name":"c1"}}'
    )
    await put_flavor(ctl, "x1.small")
    cluster = new_cluster("dev", cloudlet, "used", flavor=F)
    _, err = await collect(clusters(ctl).CreateClusterInst(cluster, timeout=30))
    assert err is None, err
    # the ClusterInst is named before the Cloudlet that also uses it
    assert await refusal(flavors) == (
        'Flavor in use by ClusterInst {"name":"used","organization":"dev"}'
    )
    _, err = await collect(clusters(ctl).DeleteClusterInst(cluster, timeout=30))
    assert err is None, err
    assert (await refusal(flavors)).startswith("Flavor in use by Cloudlet ")
    # an unused flavor goes at once
    await flavors.DeleteFlavor(flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x1.small")))
    shown = [f.key.name async for f in flavors.ShowFlavor(flavor_pb2.Flavor(), timeout=5)]
    assert shown == [F.name]
