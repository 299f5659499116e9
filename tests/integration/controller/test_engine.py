"""The object-API engine and the slice-1 APIs against a real etcd."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from edgeproto import (
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    cloudletkey_pb2,
    flavor_pb2,
    operatorcode_pb2,
    settings_pb2,
    zone_pb2,
    zonepool_pb2,
)

from edge_cloud.errors import (
    AlreadyExists,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from edge_cloud.objects import codec, keys, registry
from services.controller._engine import Txn
from services.controller.api.autoprovpolicy import AutoProvPolicyApi
from services.controller.api.autoscalepolicy import AutoScalePolicyApi
from services.controller.api.flavor import FlavorApi
from services.controller.api.operatorcode import OperatorCodeApi
from services.controller.api.settings import SettingsApi
from services.controller.api.zone import ZoneApi
from services.controller.api.zonepool import ZonePoolApi
from tests.integration.controller.conftest import StartInstance
from tests.integration.helpers import eventually

T = TypeVar("T")
CTX: Any = None  # the servicers never touch the context
ZONE = registry.by_class(zone_pb2.Zone)
ZONE_POOL = registry.by_class(zonepool_pb2.ZonePool)
FLAVOR = registry.by_class(flavor_pb2.Flavor)


def small_flavor(name: str = "x1.small") -> flavor_pb2.Flavor:
    return flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name=name), ram=1024, vcpus=1, disk=10)


def zone(name: str, org: str = "AtlanticInc") -> zone_pb2.Zone:
    return zone_pb2.Zone(key=cloudletkey_pb2.ZoneKey(organization=org, name=name))


async def after(delay: float, call: Awaitable[T]) -> T:
    await asyncio.sleep(delay)
    return await call


async def refused(call: Any, error: type[EdgeError]) -> str:
    with pytest.raises(error) as caught:
        await call
    return caught.value.message


async def test_flavor_round_trip(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = FlavorApi(ctl.runtime)
    await api.CreateFlavor(small_flavor(), CTX)
    shown = [f async for f in api.ShowFlavor(flavor_pb2.Flavor(), CTX)]
    assert [f.key.name for f in shown] == ["x1.small"]
    assert shown[0].ram == 1024

    assert await refused(api.CreateFlavor(small_flavor(), CTX), AlreadyExists) == (
        'Flavor key {"name":"x1.small"} already exists'
    )
    assert await refused(api.UpdateFlavor(small_flavor(), CTX), EdgeError) == (
        "Update Flavor not supported"
    )
    await api.AddFlavorRes(
        flavor_pb2.Flavor(key=small_flavor().key, opt_res_map={"gpu": "gpu:1"}), CTX
    )
    assert ctl.engine.get(FLAVOR, small_flavor().key).opt_res_map == {"gpu": "gpu:1"}  # type: ignore[union-attr]
    await api.RemoveFlavorRes(
        flavor_pb2.Flavor(key=small_flavor().key, opt_res_map={"gpu": ""}), CTX
    )
    assert not ctl.engine.get(FLAVOR, small_flavor().key).opt_res_map  # type: ignore[union-attr]

    await api.DeleteFlavor(small_flavor(), CTX)
    assert [f async for f in api.ShowFlavor(flavor_pb2.Flavor(), CTX)] == []
    assert await refused(api.DeleteFlavor(small_flavor(), CTX), NotFound) == (
        'Flavor key {"name":"x1.small"} not found'
    )
    # stored without the update mask, as JSON
    assert await ctl.store.get('1/Flavor/{"name":"x1.small"}') is None


async def test_operator_code_create_show_delete(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = OperatorCodeApi(ctl.runtime)
    code = operatorcode_pb2.OperatorCode(code="310-260", organization="UFGT Inc.")
    await api.CreateOperatorCode(code, CTX)
    assert await refused(api.CreateOperatorCode(code, CTX), AlreadyExists) == (
        "key 310-260 already exists"
    )
    stored = await ctl.store.get("1/OperatorCode/310-260")
    assert stored is not None
    assert codec.decode(operatorcode_pb2.OperatorCode, stored.value) == code
    await api.DeleteOperatorCode(code, CTX)
    assert await refused(api.DeleteOperatorCode(code, CTX), NotFound) == (
        "OperatorCode key 310-260 not found"
    )


async def test_update_with_fields(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = AutoScalePolicyApi(ctl.runtime)
    key = autoscalepolicy_pb2.PolicyKey(organization="dev", name="p")
    await api.CreateAutoScalePolicy(
        autoscalepolicy_pb2.AutoScalePolicy(
            key=key, min_nodes=1, max_nodes=3, scale_up_cpu_thresh=80, scale_down_cpu_thresh=20
        ),
        CTX,
    )
    update = autoscalepolicy_pb2.AutoScalePolicy(key=key, max_nodes=5)
    assert await refused(api.UpdateAutoScalePolicy(update, CTX), InvalidArgument) == (
        "nothing specified to update"
    )
    update.fields.append("4")
    await api.UpdateAutoScalePolicy(update, CTX)
    [stored] = [p async for p in api.ShowAutoScalePolicy(update, CTX)]
    assert (stored.min_nodes, stored.max_nodes, stored.scale_up_cpu_thresh) == (1, 5, 80)
    assert not stored.fields

    revision = ctl.sync.revision
    await api.UpdateAutoScalePolicy(update, CTX)  # unchanged: nothing written
    assert ctl.sync.revision == revision

    bad = autoscalepolicy_pb2.AutoScalePolicy(key=key, min_nodes=9, fields=["3"])
    assert await refused(api.UpdateAutoScalePolicy(bad, CTX), InvalidArgument) == (
        "Max nodes must be greater than Min nodes"
    )
    missing = autoscalepolicy_pb2.AutoScalePolicy(
        key=autoscalepolicy_pb2.PolicyKey(organization="dev", name="nope"), fields=["4"]
    )
    assert await refused(api.UpdateAutoScalePolicy(missing, CTX), NotFound) == (
        'Policy key {"organization":"dev","name":"nope"} not found'
    )
    readonly = autoscalepolicy_pb2.AutoScalePolicy(key=key, delete_prepare=True, fields=["12"])
    assert await refused(api.UpdateAutoScalePolicy(readonly, CTX), InvalidArgument) == (
        "specified field(s) Delete Prepare cannot be modified"
    )


async def test_settings_master_flavor(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    settings, flavors = SettingsApi(ctl.runtime), FlavorApi(ctl.runtime)
    assert (
        await settings.ShowSettings(settings_pb2.Settings(), CTX)
    ).ccrm_api_timeout == 30 * 10**9

    request = settings_pb2.Settings(master_node_flavor="x1.small", fields=["14"])
    assert await refused(settings.UpdateSettings(request, CTX), NotFound) == "Flavor must preexist"
    await flavors.CreateFlavor(small_flavor(), CTX)
    await settings.UpdateSettings(request, CTX)
    assert (await settings.ShowSettings(request, CTX)).master_node_flavor == "x1.small"

    assert await refused(flavors.DeleteFlavor(small_flavor(), CTX), FailedPrecondition) == (
        "Flavor in use by Settings MasterNodeFlavor, change Settings.MasterNodeFlavor first"
    )
    assert not ctl.engine.get(FLAVOR, small_flavor().key).delete_prepare  # type: ignore[union-attr]

    await settings.UpdateSettings(settings_pb2.Settings(fields=["14"]), CTX)  # clears it
    await flavors.DeleteFlavor(small_flavor(), CTX)

    bad = settings_pb2.Settings(create_app_inst_timeout=0, fields=["8"])
    assert await refused(settings.UpdateSettings(bad, CTX), InvalidArgument) == (
        "Create App Inst Timeout must be greater than 0s"
    )
    await settings.UpdateSettings(
        settings_pb2.Settings(create_app_inst_timeout=10**9, fields=["8"]), CTX
    )
    await settings.ResetSettings(settings_pb2.Settings(), CTX)
    shown = await settings.ShowSettings(settings_pb2.Settings(), CTX)
    assert shown.create_app_inst_timeout == 30 * 60 * 10**9


async def test_zone_in_use_by_policy_and_pool(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    zones, pools, policies = (
        ZoneApi(ctl.runtime),
        ZonePoolApi(ctl.runtime),
        AutoProvPolicyApi(ctl.runtime),
    )
    await zones.CreateZone(zone("z1"), CTX)
    created = ctl.engine.get(ZONE, zone("z1").key)
    assert created is not None
    assert len(created.obj_id) == 26
    assert created.obj_id == created.obj_id.lower()

    policy = autoprovpolicy_pb2.AutoProvPolicy(
        key=autoscalepolicy_pb2.PolicyKey(organization="AtlanticInc", name="auto-prov-policy"),
        deploy_client_count=1,
        zones=[zone("z1").key],
    )
    await policies.CreateAutoProvPolicy(policy, CTX)
    assert await refused(zones.DeleteZone(zone("z1"), CTX), FailedPrecondition) == (
        'zone in use by AutoProvPolicy {"organization":"AtlanticInc","name":"auto-prov-policy"}'
    )
    after = ctl.engine.get(ZONE, zone("z1").key)
    assert after is not None
    assert not after.delete_prepare  # cleared again after the refusal

    await policies.DeleteAutoProvPolicy(policy, CTX)
    pool = zonepool_pb2.ZonePool(
        key=zonepool_pb2.ZonePoolKey(organization="AtlanticInc", name="pool"),
        zones=[cloudletkey_pb2.ZoneKey(organization="someone-else", name="z1")],
    )
    await pools.CreateZonePool(pool, CTX)  # member org forced to the pool's
    assert await refused(zones.DeleteZone(zone("z1"), CTX), FailedPrecondition) == (
        'zone in use by ZonePool {"organization":"AtlanticInc","name":"pool"}'
    )
    missing = zonepool_pb2.ZonePoolMember(key=pool.key, zone=cloudletkey_pb2.ZoneKey(name="z2"))
    assert await refused(pools.AddZonePoolMember(missing, CTX), NotFound) == (
        'Zones {"organization":"AtlanticInc","name":"z2"} not found'
    )
    already = zonepool_pb2.ZonePoolMember(key=pool.key, zone=cloudletkey_pb2.ZoneKey(name="z1"))
    assert await refused(pools.AddZonePoolMember(already, CTX), AlreadyExists) == (
        "Zone already part of pool"
    )
    await pools.RemoveZonePoolMember(already, CTX)
    await pools.RemoveZonePoolMember(already, CTX)  # absent: silently nothing
    await zones.DeleteZone(zone("z1"), CTX)
    assert ctl.engine.get(ZONE, zone("z1").key) is None


async def test_being_deleted(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    zones, policies = ZoneApi(ctl.runtime), AutoProvPolicyApi(ctl.runtime)
    await zones.CreateZone(zone("z1"), CTX)

    def mark(txn: Txn) -> None:
        current = txn.get(ZONE, zone("z1").key)
        assert current is not None
        current.delete_prepare = True
        txn.put(current)

    await ctl.engine.apply(mark)
    assert await refused(zones.DeleteZone(zone("z1"), CTX), FailedPrecondition) == (
        'Zone {"organization":"AtlanticInc","name":"z1"} is being deleted'
    )
    still = ctl.engine.get(ZONE, zone("z1").key)
    assert still is not None
    assert still.delete_prepare  # untouched by the refused delete

    policy = autoprovpolicy_pb2.AutoProvPolicy(
        key=autoscalepolicy_pb2.PolicyKey(organization="AtlanticInc", name="p"),
        min_active_instances=1,
        zones=[zone("z1").key],
    )
    assert await refused(policies.CreateAutoProvPolicy(policy, CTX), FailedPrecondition) == (
        'Zone {"organization":"AtlanticInc","name":"z1"} is being deleted'
    )
    twice = autoprovpolicy_pb2.AutoProvPolicy(
        key=policy.key, deploy_client_count=1, zones=[zone("z2").key, zone("z2").key]
    )
    await zones.CreateZone(zone("z2"), CTX)
    assert await refused(policies.CreateAutoProvPolicy(twice, CTX), InvalidArgument) == (
        'duplicate zone {"organization":"AtlanticInc","name":"z2"} in list'
    )


async def test_cache_follows_another_controller(start_instance: StartInstance) -> None:
    one, two = await start_instance(), await start_instance()
    await FlavorApi(one.runtime).CreateFlavor(small_flavor("shared"), CTX)

    async def seen_by_two() -> None:
        assert two.engine.get(FLAVOR, flavor_pb2.FlavorKey(name="shared")) is not None

    await eventually(seen_by_two, within=10)
    await FlavorApi(two.runtime).DeleteFlavor(small_flavor("shared"), CTX)

    async def gone_for_one() -> None:
        assert one.engine.get(FLAVOR, flavor_pb2.FlavorKey(name="shared")) is None

    await eventually(gone_for_one, within=10)


async def test_referrer_create_races_referenced_delete(start_instance: StartInstance) -> None:
    """Two controllers on one etcd never leave a ZonePool naming a deleted Zone."""
    one, two = await start_instance(), await start_instance()
    zones, pools = ZoneApi(one.runtime), ZonePoolApi(two.runtime)
    outcomes: set[tuple[bool, bool]] = set()
    for i in range(20):
        name = f"z{i}"
        await zones.CreateZone(zone(name), CTX)

        async def wait_seen(n: str = name) -> None:
            assert two.engine.get(ZONE, zone(n).key) is not None

        await eventually(wait_seen, within=10)
        pool = zonepool_pb2.ZonePool(
            key=zonepool_pb2.ZonePoolKey(organization="AtlanticInc", name=f"pool{i}"),
            zones=[zone(name).key],
        )
        # stagger the two by up to a few ms either way, so each side sometimes wins
        head_start = (i % 5) * 0.002
        created, deleted = await asyncio.gather(
            after(head_start if i % 2 else 0, pools.CreateZonePool(pool, CTX)),
            after(0 if i % 2 else head_start, zones.DeleteZone(zone(name), CTX)),
            return_exceptions=True,
        )
        pool_ok = not isinstance(created, BaseException)
        zone_gone = not isinstance(deleted, BaseException)
        for result in (created, deleted):
            if isinstance(result, BaseException) and not isinstance(result, EdgeError):
                raise result
        outcomes.add((pool_ok, zone_gone))
        assert not (pool_ok and zone_gone), f"round {i}: pool created and its zone deleted"

        # etcd itself holds no dangling reference
        pool_kv = await one.store.get(keys.object_store_key(pool))
        zone_kv = await one.store.get(keys.object_store_key(zone(name)))
        assert (pool_kv is not None) == pool_ok
        assert (zone_kv is None) == zone_gone
        if zone_kv is not None:
            assert not codec.decode(ZONE, zone_kv.value).delete_prepare
    assert outcomes, "no round ran"
    print("race outcomes (pool created, zone deleted):", sorted(outcomes))
