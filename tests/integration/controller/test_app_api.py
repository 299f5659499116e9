"""AppApi against a real etcd: lifecycle, references, in-use checks, races, global ids."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from edgeproto import (
    alertpolicy_pb2,
    app_pb2,
    appinst_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    common_pb2,
    flavor_pb2,
    refs_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
    zonepool_pb2,
)
from google.protobuf.message import Message

from edge_cloud.errors import (
    AlreadyExists,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from edge_cloud.objects import codec, keys, registry
from services.controller._engine import Txn
from services.controller.api.alertpolicy import AlertPolicyApi
from services.controller.api.app import AppApi
from services.controller.api.autoprovpolicy import AutoProvPolicyApi
from services.controller.api.flavor import FlavorApi
from tests.integration.controller.conftest import Instance, StartInstance
from tests.integration.helpers import eventually

T = TypeVar("T")
CTX: Any = None  # the servicers never touch the context
APP = registry.by_class(app_pb2.App)
FLAVOR = registry.by_class(flavor_pb2.Flavor)
AUTOPROV = registry.by_class(autoprovpolicy_pb2.AutoProvPolicy)
APP_KEY = app_pb2.AppKey(organization="dev", name="myapp", version="1.0")
APP_KEY_JSON = '{"organization":"dev","name":"myapp","version":"1.0"}'


def small_flavor(name: str = "x1.small") -> flavor_pb2.Flavor:
    return flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name=name), ram=1024, vcpus=2, disk=10)


def new_app(key: app_pb2.AppKey = APP_KEY, **kw: Any) -> app_pb2.App:
    base: dict[str, Any] = {
        "key": key,
        "image_type": app_pb2.IMAGE_TYPE_DOCKER,
        "image_path": "registry.example.com/dev/myapp:1.0",
        "access_ports": "tcp:80",
        "default_flavor": flavor_pb2.FlavorKey(name="x1.small"),
    }
    base.update(kw)
    return app_pb2.App(**base)


async def refused(call: Awaitable[Any], error: type[EdgeError]) -> str:
    with pytest.raises(error) as caught:
        await call
    return caught.value.message


async def after(delay: float, call: Awaitable[T]) -> T:
    await asyncio.sleep(delay)
    return await call


async def put_directly(ctl: Instance, obj: Message) -> None:
    """Store an object the way a later slice would, bypassing the APIs."""
    revision = await ctl.store.put(keys.object_store_key(obj), codec.encode(obj))
    await ctl.sync.wait_for_revision(revision)


async def mark_deleting(ctl: Instance, otype: Any, key: Message) -> None:
    def mark(txn: Txn) -> None:
        current = txn.get(otype, key)
        assert current is not None
        current.delete_prepare = True
        txn.put(current)

    await ctl.engine.apply(mark)


async def shown(api: AppApi, filter_: app_pb2.App | None = None) -> list[app_pb2.App]:
    return [a async for a in api.ShowApp(filter_ or app_pb2.App(), CTX)]


async def test_create_show_update_delete(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = AppApi(ctl.runtime)
    await FlavorApi(ctl.runtime).CreateFlavor(small_flavor(), CTX)
    await api.CreateApp(new_app(), CTX)

    [app] = await shown(api)
    assert app.global_id == "local-myapp10dev"
    assert len(app.obj_id) == 26
    assert app.created_at.seconds > 0
    assert app.compatibility_version == 1
    assert app.deployment == "kubernetes"
    assert app.deployment_generator == "kubernetes-basic"
    assert "kind: Deployment" in app.deployment_manifest
    assert app.image_path == "registry.example.com/dev/myapp:1.0"
    assert not app.HasField("default_flavor")  # turned into resources
    assert app.kubernetes_resources.cpu_pool.total_memory == 1024
    assert not app.delete_prepare
    refs = await ctl.store.get(f"1/AppInstRefs/{APP_KEY_JSON}")
    assert refs is not None
    assert codec.decode(refs_pb2.AppInstRefs, refs.value) == refs_pb2.AppInstRefs(key=APP_KEY)
    reserved = await ctl.store.get("1/AppGlobalId/local-myapp10dev")
    assert reserved is not None
    assert reserved.value == b"local-myapp10dev"

    assert await refused(api.CreateApp(new_app(), CTX), AlreadyExists) == (
        f"App key {APP_KEY_JSON} already exists"
    )

    assert await refused(api.UpdateApp(app_pb2.App(key=APP_KEY), CTX), InvalidArgument) == (
        "nothing specified to update"
    )
    readonly = app_pb2.App(key=APP_KEY, global_id="mine", fields=["45"])
    assert await refused(api.UpdateApp(readonly, CTX), InvalidArgument) == (
        "specified field(s) Global Id cannot be modified"
    )
    await api.UpdateApp(app_pb2.App(key=APP_KEY, access_ports="tcp:80,tcp:81", fields=["7"]), CTX)
    [updated] = await shown(api)
    assert updated.access_ports == "tcp:80,tcp:81"
    assert "port: 81" in updated.deployment_manifest  # regenerated
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d{6}", updated.revision)
    assert updated.updated_at.seconds > 0
    assert updated.global_id == app.global_id

    revision = ctl.sync.revision
    same = app_pb2.App(key=APP_KEY, access_ports="tcp:80,tcp:81", fields=["7"])
    await api.UpdateApp(same, CTX)  # nothing changes: nothing is written
    assert ctl.sync.revision == revision

    reserved_port = app_pb2.App(key=APP_KEY, access_ports="tcp:22", fields=["7"])
    assert await refused(api.UpdateApp(reserved_port, CTX), InvalidArgument) == (
        "App cannot use port tcp:22 - reserved for Platform inter-node SSH"
    )
    missing = app_pb2.App(key=app_pb2.AppKey(organization="dev", name="no", version="1"))
    missing.fields.append("37")
    assert await refused(api.UpdateApp(missing, CTX), NotFound) == (
        'App key {"organization":"dev","name":"no","version":"1"} not found'
    )

    await api.DeleteApp(app_pb2.App(key=APP_KEY), CTX)
    assert await shown(api) == []
    assert await ctl.store.get(f"1/AppInstRefs/{APP_KEY_JSON}") is None
    assert await ctl.store.get("1/AppGlobalId/local-myapp10dev") is None
    assert await refused(api.DeleteApp(app_pb2.App(key=APP_KEY), CTX), NotFound) == (
        f"App key {APP_KEY_JSON} not found"
    )


async def test_refused_creates_store_nothing(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = AppApi(ctl.runtime)
    assert await refused(api.CreateApp(new_app(), CTX), NotFound) == (
        'Flavor key {"name":"x1.small"} not found'
    )
    secret = new_app(secret_env_vars={"TOKEN": "x"})
    assert "Vault" in await refused(api.CreateApp(secret, CTX), FailedPrecondition)
    creds = new_app(username="me", credentials="pw")
    await FlavorApi(ctl.runtime).CreateFlavor(small_flavor(), CTX)
    assert "Vault" in await refused(api.CreateApp(creds, CTX), FailedPrecondition)
    assert await refused(api.CreateApp(new_app(access_ports="tcp:0"), CTX), InvalidArgument) == (
        "App ports out of range"
    )
    items, _ = await ctl.store.range("1/App")
    assert items == []


async def test_flavor_and_policy_references(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api, flavors = AppApi(ctl.runtime), FlavorApi(ctl.runtime)
    policies, alerts = AutoProvPolicyApi(ctl.runtime), AlertPolicyApi(ctl.runtime)
    await flavors.CreateFlavor(small_flavor(), CTX)
    await mark_deleting(ctl, FLAVOR, small_flavor().key)
    assert await refused(api.CreateApp(new_app(), CTX), FailedPrecondition) == (
        'Flavor {"name":"x1.small"} is being deleted'
    )
    await flavors.CreateFlavor(small_flavor("x1.other"), CTX)
    other = flavor_pb2.FlavorKey(name="x1.other")

    with_policy = new_app(default_flavor=other, auto_prov_policies=["p1"])
    assert await refused(api.CreateApp(with_policy, CTX), NotFound) == (
        'Policy key {"organization":"dev","name":"p1"} not found'
    )
    policy = autoprovpolicy_pb2.AutoProvPolicy(
        key=autoscalepolicy_pb2.PolicyKey(organization="dev", name="p1"), deploy_client_count=1
    )
    await policies.CreateAutoProvPolicy(policy, CTX)
    alert = alertpolicy_pb2.AlertPolicy(
        key=alertpolicy_pb2.AlertPolicyKey(organization="dev", name="a1"),
        cpu_utilization_limit=80,
        severity="warning",
        trigger_time=60 * 10**9,
    )
    with_alert = new_app(
        default_flavor=other, auto_prov_policies=["p1"], alert_policies=["a1"], revision="v1"
    )
    assert await refused(api.CreateApp(with_alert, CTX), NotFound) == (
        'AlertPolicy key {"organization":"dev","name":"a1"} not found'
    )
    await alerts.CreateAlertPolicy(alert, CTX)
    await api.CreateApp(with_alert, CTX)

    assert await refused(policies.DeleteAutoProvPolicy(policy, CTX), FailedPrecondition) == (
        f"Policy in use by App {APP_KEY_JSON}"
    )
    assert await refused(alerts.DeleteAlertPolicy(alert, CTX), FailedPrecondition) == (
        f"Alert is in use by App {APP_KEY_JSON}"
    )

    app_policy = app_pb2.AppAutoProvPolicy(app_key=APP_KEY, auto_prov_policy="p1")
    assert await refused(api.AddAppAutoProvPolicy(app_policy, CTX), AlreadyExists) == (
        "AutoProvPolicy p1 already on App"
    )
    absent = app_pb2.AppAutoProvPolicy(app_key=APP_KEY, auto_prov_policy="p2")
    assert await refused(api.AddAppAutoProvPolicy(absent, CTX), NotFound) == (
        'Policy key {"organization":"dev","name":"p2"} not found'
    )
    await api.RemoveAppAutoProvPolicy(app_policy, CTX)
    await api.RemoveAppAutoProvPolicy(app_policy, CTX)  # absent: nothing to do
    await policies.DeleteAutoProvPolicy(policy, CTX)  # no longer in use

    app_alert = app_pb2.AppAlertPolicy(app_key=APP_KEY, alert_policy="a1")
    assert await refused(api.AddAppAlertPolicy(app_alert, CTX), AlreadyExists) == (
        "Alert a1 already monitored on App"
    )
    [before] = await shown(api)
    await api.RemoveAppAlertPolicy(app_alert, CTX)
    assert await refused(api.RemoveAppAlertPolicy(app_alert, CTX), NotFound) == (
        "AlertPolicy key {} not found"
    )
    await api.AddAppAlertPolicy(app_alert, CTX)
    [after_add] = await shown(api)
    assert list(after_add.alert_policies) == ["a1"]
    assert after_add.revision == before.revision == "v1"  # attaching alerts: same revision
    await mark_deleting(ctl, registry.by_class(alertpolicy_pb2.AlertPolicy), alert.key)
    await api.RemoveAppAlertPolicy(app_alert, CTX)
    assert await refused(api.AddAppAlertPolicy(app_alert, CTX), FailedPrecondition) == (
        'AlertPolicy {"organization":"dev","name":"a1"} is being deleted'
    )
    missing_app = app_pb2.AppAlertPolicy(app_key=app_pb2.AppKey(organization="x"), alert_policy="a")
    assert await refused(api.AddAppAlertPolicy(missing_app, CTX), NotFound) == (
        'App key {"organization":"x"} not found'
    )


async def test_flavor_in_use_by_app(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api, flavors = AppApi(ctl.runtime), FlavorApi(ctl.runtime)
    await flavors.CreateFlavor(small_flavor(), CTX)
    await api.CreateApp(new_app(), CTX)
    # a created App holds resources, not the flavor: the flavor may go
    await flavors.DeleteFlavor(small_flavor(), CTX)
    [app] = await shown(api)
    assert app.kubernetes_resources.cpu_pool.total_memory == 1024

    # Apps stored before resources existed still name their flavor, and protect it
    await flavors.CreateFlavor(small_flavor(), CTX)
    legacy = new_app(key=app_pb2.AppKey(organization="dev", name="old", version="1"))
    await put_directly(ctl, legacy)
    assert await refused(flavors.DeleteFlavor(small_flavor(), CTX), FailedPrecondition) == (
        'Flavor in use by App {"organization":"dev","name":"old","version":"1"}'
    )
    flavor = ctl.engine.get(FLAVOR, small_flavor().key)
    assert flavor is not None
    assert not flavor.delete_prepare


async def test_delete_refused_while_in_use(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = AppApi(ctl.runtime)
    await FlavorApi(ctl.runtime).CreateFlavor(small_flavor(), CTX)
    await api.CreateApp(new_app(), CTX)

    inst = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name="ai1", organization="dev"),
        app_key=APP_KEY,
        liveness=common_pb2.LIVENESS_STATIC,
    )
    inst_key = '{"name":"ai1","organization":"dev"}'
    await put_directly(ctl, inst)
    await put_directly(ctl, refs_pb2.AppInstRefs(key=APP_KEY, insts={inst_key: 1}))
    assert await refused(api.DeleteApp(app_pb2.App(key=APP_KEY), CTX), FailedPrecondition) == (
        f"Application in use by static AppInst {inst_key}"
    )
    ports = app_pb2.App(key=APP_KEY, access_ports="tcp:81", fields=["7"])
    assert await refused(api.UpdateApp(ports, CTX), InvalidArgument) == (
        "Cannot update Access Ports when AppInst exists"
    )
    inst.liveness = common_pb2.LIVENESS_DYNAMIC
    await put_directly(ctl, inst)
    assert await refused(api.DeleteApp(app_pb2.App(key=APP_KEY), CTX), FailedPrecondition) == (
        "Auto-deleted 0 AppInsts but failed to delete 1 AppInsts for App"
    )
    await put_directly(ctl, refs_pb2.AppInstRefs(key=APP_KEY))

    tpe = trustpolicyexception_pb2.TrustPolicyException(
        key=trustpolicyexception_pb2.TrustPolicyExceptionKey(
            app_key=APP_KEY,
            zone_pool_key=zonepool_pb2.ZonePoolKey(organization="oper", name="pool"),
            name="tpe1",
        )
    )
    await put_directly(ctl, tpe)
    assert await refused(api.DeleteApp(app_pb2.App(key=APP_KEY), CTX), FailedPrecondition) == (
        f"Application in use by Trust Policy Exception {keys.key_string(tpe)}"
    )
    untrust = app_pb2.App(key=APP_KEY, trusted=False, fields=["37"])
    assert await refused(api.UpdateApp(untrust, CTX), FailedPrecondition) == (
        f"Application in use by Trust Policy Exception {keys.key_string(tpe)}"
    )
    app = ctl.engine.get(APP, APP_KEY)
    assert app is not None
    assert not app.delete_prepare  # every refused delete cleared its mark
    await ctl.store.delete(keys.object_store_key(tpe))
    await eventually(lambda: _no_tpe(ctl), within=10)
    await api.DeleteApp(app_pb2.App(key=APP_KEY), CTX)


async def _no_tpe(ctl: Instance) -> None:
    tpes = ctl.engine.caches.count(registry.by_class(trustpolicyexception_pb2.TrustPolicyException))
    assert tpes == 0


async def test_show_public_apps_and_zones(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = AppApi(ctl.runtime)
    await FlavorApi(ctl.runtime).CreateFlavor(small_flavor(), CTX)
    public = app_pb2.AppKey(organization="edgecloudorg", name="sidecar", version="1")
    await api.CreateApp(new_app(), CTX)
    await api.CreateApp(new_app(key=public), CTX)
    assert [a.key.name for a in await shown(api)] == ["myapp", "sidecar"]
    assert [a.key.name for a in await shown(api, app_pb2.App(key=APP_KEY))] == ["myapp"]
    publics = [a async for a in api.ShowPublicApp(app_pb2.App(), CTX)]
    assert [a.key for a in publics] == [public]
    with pytest.raises(InvalidArgument, match="No flavor specified for App"):
        _ = [z async for z in api.ShowZonesForAppDeployment(app_pb2.DeploymentZoneRequest(), CTX)]


async def test_app_create_races_policy_delete(start_instance: StartInstance) -> None:
    """Two controllers on one etcd never leave an App naming a deleted AutoProvPolicy."""
    one, two = await start_instance(), await start_instance()
    policies, apps = AutoProvPolicyApi(one.runtime), AppApi(two.runtime)
    await FlavorApi(one.runtime).CreateFlavor(small_flavor(), CTX)
    outcomes: set[tuple[bool, bool]] = set()
    for i in range(20):
        policy = autoprovpolicy_pb2.AutoProvPolicy(
            key=autoscalepolicy_pb2.PolicyKey(organization="dev", name=f"p{i}"),
            deploy_client_count=1,
        )
        await policies.CreateAutoProvPolicy(policy, CTX)

        async def seen(p: autoprovpolicy_pb2.AutoProvPolicy = policy) -> None:
            assert two.engine.get(AUTOPROV, p.key) is not None

        await eventually(seen, within=10)
        key = app_pb2.AppKey(organization="dev", name=f"app{i}", version="1")
        app = new_app(key=key, auto_prov_policies=[f"p{i}"])
        head_start = (i % 5) * 0.002
        created, deleted = await asyncio.gather(
            after(head_start if i % 2 else 0, apps.CreateApp(app, CTX)),
            after(0 if i % 2 else head_start, policies.DeleteAutoProvPolicy(policy, CTX)),
            return_exceptions=True,
        )
        for result in (created, deleted):
            if isinstance(result, BaseException) and not isinstance(result, EdgeError):
                raise result
        app_ok = not isinstance(created, BaseException)
        policy_gone = not isinstance(deleted, BaseException)
        outcomes.add((app_ok, policy_gone))
        assert not (app_ok and policy_gone), f"round {i}: App created and its policy deleted"
        app_kv = await one.store.get(keys.object_store_key(app))
        policy_kv = await one.store.get(keys.object_store_key(policy))
        assert (app_kv is not None) == app_ok
        assert (policy_kv is None) == policy_gone
        if policy_kv is not None:
            assert not codec.decode(AUTOPROV, policy_kv.value).delete_prepare
        if app_ok:
            await apps.DeleteApp(app, CTX)
            await policies.DeleteAutoProvPolicy(policy, CTX)
    assert outcomes
    print("race outcomes (app created, policy deleted):", sorted(outcomes))


async def test_global_ids_unique_under_concurrency(start_instance: StartInstance) -> None:
    one, two = await start_instance(), await start_instance()
    await FlavorApi(one.runtime).CreateFlavor(small_flavor(), CTX)

    async def flavor_seen() -> None:
        assert two.engine.get(FLAVOR, small_flavor().key) is not None

    await eventually(flavor_seen, within=10)
    # all of these sanitise to "myapp": one base id, numbered suffixes
    names = ["myapp", "MyApp", "my app", "my.app", "my,app", "my&app", "my!app", "MYAPP"]
    apis = [AppApi(one.runtime), AppApi(two.runtime)]
    keys_ = [app_pb2.AppKey(organization="dev", name=n, version="1.0") for n in names]
    await asyncio.gather(*(apis[i % 2].CreateApp(new_app(key=k), CTX) for i, k in enumerate(keys_)))
    stored = [await one.store.get(keys.object_store_key(new_app(key=k))) for k in keys_]
    ids = sorted(codec.decode(APP, kv.value).global_id for kv in stored if kv is not None)
    assert ids == sorted(["local-myapp10dev", *(f"local-myapp10dev{n}" for n in range(1, 8))])
    reserved, _ = await one.store.range("1/AppGlobalId/")
    assert sorted(kv.value.decode() for kv in reserved) == ids

    more = ["mYapp", "myAPP", "My App"]
    await apis[0].CreateApp(
        new_app(key=app_pb2.AppKey(organization="dev", name=more[0], version="1.0")), CTX
    )
    await apis[0].CreateApp(
        new_app(key=app_pb2.AppKey(organization="dev", name=more[1], version="1.0")), CTX
    )
    eleventh = new_app(key=app_pb2.AppKey(organization="dev", name=more[2], version="1.0"))
    assert await refused(apis[0].CreateApp(eleventh, CTX), FailedPrecondition) == (
        'Unable to generate unique global id from base label of "local-myapp10dev", please '
        "change key values"
    )
    await asyncio.gather(
        *(apis[i % 2].DeleteApp(app_pb2.App(key=k), CTX) for i, k in enumerate(keys_))
    )
    reserved, _ = await one.store.range("1/AppGlobalId/")
    assert sorted(kv.value.decode() for kv in reserved) == [
        "local-myapp10dev8",
        "local-myapp10dev9",
    ]
    # a freed id is handed out again
    await apis[1].CreateApp(eleventh, CTX)
    app = two.engine.get(APP, eleventh.key)
    assert app is not None
    assert app.global_id == "local-myapp10dev"


async def test_trust_rules_with_instances_on_trusted_cloudlets(
    start_instance: StartInstance,
) -> None:
    ctl = await start_instance()
    api = AppApi(ctl.runtime)
    await FlavorApi(ctl.runtime).CreateFlavor(small_flavor(), CTX)
    rule = trustpolicy_pb2.SecurityRule(
        protocol="TCP", port_range_min=443, remote_cidr="10.0.0.0/8"
    )
    await api.CreateApp(new_app(trusted=True, required_outbound_connections=[rule]), CTX)
    anywhere = trustpolicy_pb2.SecurityRule(
        protocol="TCP", port_range_min=1, port_range_max=1000, remote_cidr="0.0.0.0/0"
    )
    policy = trustpolicy_pb2.TrustPolicy(
        key=autoscalepolicy_pb2.PolicyKey(organization="oper", name="tp"),
        outbound_security_rules=[anywhere],
    )
    cloudlet = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization="oper", name="c1"),
        trust_policy="tp",
        zone="z1",
    )
    inst = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name="ai1", organization="dev"),
        app_key=APP_KEY,
        cloudlet_key=cloudlet.key,
        liveness=common_pb2.LIVENESS_STATIC,
    )
    for obj in (
        policy,
        cloudlet,
        inst,
        refs_pb2.AppInstRefs(key=APP_KEY, insts={keys.key_string(inst): 1}),
    ):
        await put_directly(ctl, obj)

    wider = trustpolicy_pb2.SecurityRule(
        protocol="tcp", port_range_min=8080, remote_cidr="10.0.0.0/8"
    )
    update = app_pb2.App(key=APP_KEY, required_outbound_connections=[wider], fields=["38"])
    assert await refused(api.UpdateApp(update, CTX), FailedPrecondition) == (
        "No outbound rule in policy or exception to match required connection "
        f"TCP:10.0.0.0/8:8080-8080 for App {APP_KEY_JSON}"
    )
    # an exception for the App on a pool holding the cloudlet's zone allows it
    pool = zonepool_pb2.ZonePool(
        key=zonepool_pb2.ZonePoolKey(organization="oper", name="pool"),
        zones=[cloudletkey_pb2.ZoneKey(organization="oper", name="z1")],
    )
    tpe = trustpolicyexception_pb2.TrustPolicyException(
        key=trustpolicyexception_pb2.TrustPolicyExceptionKey(
            app_key=APP_KEY, zone_pool_key=pool.key, name="tpe1"
        ),
        outbound_security_rules=[
            trustpolicy_pb2.SecurityRule(
                protocol="TCP", port_range_min=8000, port_range_max=9000, remote_cidr="10.0.0.0/8"
            )
        ],
    )
    await put_directly(ctl, pool)
    await put_directly(ctl, tpe)
    await api.UpdateApp(update, CTX)
    app = ctl.engine.get(APP, APP_KEY)
    assert app is not None
    assert [r.port_range_max for r in app.required_outbound_connections] == [8080]

    untrust = app_pb2.App(key=APP_KEY, trusted=False, fields=["37"])
    assert await refused(api.UpdateApp(untrust, CTX), InvalidArgument) == (
        "Cannot set app to untrusted which has an instance on a trusted cloudlet"
    )
