"""Follow-on effects of Controller changes (issue 4) on real etcd and Redis.

A cloudlet's location reaches its AppInsts; trust policy changes (on the cloudlet or on the
policy) are refused while an AppInst there would not comply; a flavor delete takes its
AutoDelete Apps along.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from distributed_match_engine import loc_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    autoscalepolicy_pb2,
    cloudletkey_pb2,
    common_pb2,
    flavor_pb2,
    refs_pb2,
    settings_pb2,
    trustpolicy_pb2,
)
from google.protobuf.message import Message

from edge_cloud.errors import FailedPrecondition, InvalidArgument
from edge_cloud.influx import InfluxV1Writer
from edge_cloud.localservers import ServerProcess
from edge_cloud.objects import keys, registry
from services.controller import _settings
from services.controller._engine import Txn
from services.controller._followons import default_mt_cluster_key
from services.controller._runtime import Runtime
from services.controller.api.flavor import FlavorApi
from services.controller.api.settings import RETENTION_DATABASES, _path, update_settings
from services.controller.api.trustpolicy import TrustPolicyApi
from services.controller.config import ControllerConfig
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
from tests.integration.controller.clusterinst_harness import (
    CLUSTER_INST,
    InstCcrm,
    inst_ccrm_server,
    put_flavor,
    ready_cloudlet,
)
from tests.integration.controller.conftest import StartInstance
from tests.integration.helpers import eventually

__all__ = ["ccrm", "harness"]

CTX: Any = None  # the servicers never touch the context
APP = registry.by_class(app_pb2.App)
APP_INST = registry.by_class(appinst_pb2.AppInst)
APP_KEY = app_pb2.AppKey(organization="dev", name="myapp", version="1.0")
TLS_OUT = trustpolicy_pb2.SecurityRule(
    protocol="tcp", port_range_min=443, port_range_max=443, remote_cidr="10.0.0.0/8"
)
ANYWHERE = trustpolicy_pb2.SecurityRule(
    protocol="tcp", port_range_min=1, port_range_max=1000, remote_cidr="0.0.0.0/0"
)


async def put(ctl: Controller, *objs: Message) -> None:
    """Store objects the way their own APIs would have, in one transaction."""

    def fn(txn: Txn) -> None:
        for obj in objs:
            txn.put(obj)

    await ctl.engine.apply(fn)


def app_inst(name: str, cloudlet_key: cloudletkey_pb2.CloudletKey, **kw: Any) -> Any:
    return appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name=name, organization="dev"),
        app_key=APP_KEY,
        cloudlet_key=cloudlet_key,
        liveness=common_pb2.LIVENESS_STATIC,
        **kw,
    )


async def started(harness: ControllerHarness, **flags: Any) -> Controller:
    ctl = await harness.start()
    await put_features(ctl, features(**flags))
    return ctl


async def create_cloudlet(ctl: Controller, org: str, name: str) -> Any:
    cloudlet = new_cloudlet(org, name)
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None, err
    return cloudlet


async def test_location_change_moves_the_cloudlets_app_insts(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ctl = await started(harness)
    org = unique_org()
    here = await create_cloudlet(ctl, org, "c1")
    there = await create_cloudlet(ctl, org, "c2")
    old = loc_pb2.Loc(latitude=37.1, longitude=-122.4)
    await put(
        ctl,
        app_inst("ai1", here.key, cloudlet_loc=old),
        app_inst("ai2", here.key, cloudlet_loc=old),
        app_inst("ai3", there.key, cloudlet_loc=old),
    )

    request = new_cloudlet(org, "c1", location=loc_pb2.Loc(latitude=12.5), fields=["5.1"])
    lines, err = await collect(ctl.cloudlets.UpdateCloudlet(request, timeout=30))
    assert err is None, err
    assert lines == ["Cloudlet updated successfully"]
    locs = {
        inst.key.name: (inst.cloudlet_loc.latitude, inst.cloudlet_loc.longitude)
        for _, inst in ctl.engine.caches.items(APP_INST)
    }
    # only the listed coordinate moves, and only on the updated cloudlet
    assert locs == {"ai1": (12.5, -122.4), "ai2": (12.5, -122.4), "ai3": (37.1, -122.4)}

    request = new_cloudlet(org, "c1", location=loc_pb2.Loc(latitude=1.0, longitude=2.0))
    request.fields.extend(["5"])
    _, err = await collect(ctl.cloudlets.UpdateCloudlet(request, timeout=30))
    assert err is None, err
    # `location` itself moves both coordinates
    moved = ctl.engine.get(APP_INST, appinst_pb2.AppInstKey(name="ai1", organization="dev"))
    assert moved is not None
    assert (moved.cloudlet_loc.latitude, moved.cloudlet_loc.longitude) == (1.0, 2.0)


async def test_cloudlet_trust_policy_needs_compliant_app_insts(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ctl = await started(harness, supports_trust_policy=True)
    org = unique_org()
    cloudlet = await create_cloudlet(ctl, org, "c1")
    policy_key = autoscalepolicy_pb2.PolicyKey(organization=org, name="tp")
    app = app_pb2.App(key=APP_KEY, trusted=False, required_outbound_connections=[TLS_OUT])
    inst = app_inst("ai1", cloudlet.key)
    await put(
        ctl,
        trustpolicy_pb2.TrustPolicy(key=policy_key, outbound_security_rules=[ANYWHERE]),
        app,
        inst,
        refs_pb2.AppInstRefs(key=APP_KEY, insts={keys.key_string(inst): 1}),
    )

    async def set_policy() -> Exception | None:
        request = new_cloudlet(
            org, "c1", trust_policy="tp", crm_override=common_pb2.IGNORE_CRM, fields=["37"]
        )
        _, err = await collect(ctl.cloudlets.UpdateCloudlet(request, timeout=30))
        return err

    err = await set_policy()
    assert isinstance(err, FailedPrecondition)
    assert err.message == (
        'Non trusted app: organization:"dev" name:"myapp" version:"1.0" not compatible with '
        f'trust policy: organization:"{org}" name:"tp" '
    )
    assert ctl.cloudlet(cloudlet.key).trust_policy == ""  # type: ignore[union-attr]

    # trusted, but it needs port 8443, which the policy does not allow
    app.trusted = True
    app.required_outbound_connections[0].port_range_min = 8443
    app.required_outbound_connections[0].port_range_max = 8443
    await put(ctl, app)
    err = await set_policy()
    assert isinstance(err, FailedPrecondition)
    assert err.message == (
        "No outbound rule in policy or exception to match required connection "
        f"tcp:10.0.0.0/8:8443-8443 for App {keys.key_string(APP_KEY)}"
    )

    app.required_outbound_connections[0].port_range_min = 443
    app.required_outbound_connections[0].port_range_max = 443
    await put(ctl, app)
    assert await set_policy() is None
    assert ctl.cloudlet(cloudlet.key).trust_policy == "tp"  # type: ignore[union-attr]


async def test_trust_policy_update_refused_while_an_app_inst_needs_the_rule(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ctl = await started(harness, supports_trust_policy=True)
    org = unique_org()
    policy_key = autoscalepolicy_pb2.PolicyKey(organization=org, name="tp")
    ready = await create_cloudlet(ctl, org, "c1")
    ready.trust_policy = "tp"
    stored = ctl.cloudlet(ready.key)
    assert stored is not None
    stored.trust_policy = "tp"
    never_ready = new_cloudlet(org, "c2", trust_policy="tp")  # no CloudletInfo
    inst = app_inst("ai1", ready.key)
    await put(
        ctl,
        trustpolicy_pb2.TrustPolicy(key=policy_key, outbound_security_rules=[ANYWHERE]),
        stored,
        never_ready,
        app_pb2.App(key=APP_KEY, trusted=True, required_outbound_connections=[TLS_OUT]),
        inst,
    )
    api = TrustPolicyApi(ctl.runtime)
    narrow = trustpolicy_pb2.SecurityRule(
        protocol="udp", port_range_min=53, port_range_max=53, remote_cidr="0.0.0.0/0"
    )
    update = trustpolicy_pb2.TrustPolicy(
        key=policy_key, outbound_security_rules=[narrow], fields=["3"]
    )
    with pytest.raises(FailedPrecondition) as caught:
        _ = [r async for r in api.UpdateTrustPolicy(update, CTX)]
    assert caught.value.message == (
        f'AppInst on cloudlet organization:"{org}" name:"c1" not compatible with trust '
        "policy - No outbound rule in policy or exception to match required connection "
        f"tcp:10.0.0.0/8:443-443 for App {keys.key_string(APP_KEY)}"
    )
    policies = registry.by_class(trustpolicy_pb2.TrustPolicy)
    current = ctl.engine.get(policies, policy_key)
    assert current is not None
    assert list(current.outbound_security_rules) == [ANYWHERE]

    # a change the AppInst survives is stored and pushed to both cloudlets
    update.outbound_security_rules.append(TLS_OUT)
    pushed = len(ccrm.requests)
    lines = [r.message async for r in api.UpdateTrustPolicy(update, CTX)]
    c1 = f'organization:"{org}" name:"c1" '
    c2 = f'organization:"{org}" name:"c2" '
    assert sorted(lines) == sorted(
        [
            f"Doing TrustPolicy: tp Update for Cloudlet: {c1}",
            f"Doing TrustPolicy: tp Update for Cloudlet: {c2}",
            "Updating cloudlet",
            f"Failed to update cloudlet: {c2} - CloudletInfo not found for {c2}",
            "Processed: 2 Cloudlets.  Passed: 1 InProgress: 0 Failed: 1",
        ]
    )
    assert lines[-1].startswith("Processed: ")
    assert [list(r.fields) for r in ccrm.requests[pushed:]] == [["38", "37"]]
    current = ctl.engine.get(policies, policy_key)
    assert current is not None
    assert [r.port_range_min for r in current.outbound_security_rules] == [53, 443]


async def test_flavor_delete_takes_its_auto_delete_apps(harness: ControllerHarness) -> None:
    ctl = await started(harness)
    api = FlavorApi(ctl.runtime)
    flavor = flavor_pb2.Flavor(
        key=flavor_pb2.FlavorKey(name="x1.small"), ram=1024, vcpus=2, disk=10
    )
    await api.CreateFlavor(flavor, CTX)
    auto = app_pb2.App(
        key=APP_KEY, default_flavor=flavor.key, del_opt=app_pb2.AUTO_DELETE, trusted=True
    )
    kept_key = app_pb2.AppKey(organization="dev", name="kept", version="1.0")
    kept = app_pb2.App(key=kept_key, default_flavor=flavor.key)
    await put(
        ctl,
        auto,
        refs_pb2.AppInstRefs(key=APP_KEY),
        kept,
        refs_pb2.AppInstRefs(key=kept_key),
    )

    with pytest.raises(FailedPrecondition) as caught:
        await api.DeleteFlavor(flavor, CTX)
    assert caught.value.message == f"Flavor in use by App {keys.key_string(kept_key)}"
    assert ctl.engine.get(APP, APP_KEY) is not None

    def drop_kept(txn: Txn) -> None:
        txn.delete(APP, kept_key)

    await ctl.engine.apply(drop_kept)
    await api.DeleteFlavor(flavor, CTX)
    assert ctl.engine.get(registry.by_class(flavor_pb2.Flavor), flavor.key) is None
    assert ctl.engine.get(APP, APP_KEY) is None
    assert await ctl.store.get(keys.object_store_key(refs_pb2.AppInstRefs(key=APP_KEY))) is None


async def test_retention_changes_reach_influxdb(
    start_instance: StartInstance, influx_server: ServerProcess
) -> None:
    ctl = await start_instance()
    runtime = Runtime(ControllerConfig(influx_addr=influx_server.client_url))
    runtime.attach(ctl.engine)
    hour = 3600 * 10**9
    retention = settings_pb2.Settings(
        influx_db_metrics_retention=700 * hour,
        influx_db_downsampled_metrics_retention=2 * hour,
        fields=["18", "31"],  # metrics and downsampled retention
    )
    assert [_path(n) for n, _ in RETENTION_DATABASES] == ["18", "26", "32", "31"]
    assert await update_settings(runtime, retention)

    async def policies(database: str) -> list[tuple[str, str, str, bool]]:
        writer = await InfluxV1Writer.connect(influx_server.client_url, database)
        try:
            found = await writer.retention_policies()
        finally:
            await writer.close()
        return sorted(
            (p["name"], p["duration"], p["shardGroupDuration"], p["default"])
            for p in found
            if p["name"] != "autogen"
        )

    assert await policies("metrics") == [("metrics_default", "700h0m0s", "24h0m0s", True)]
    assert await policies("downsampled_metrics") == [
        ("downsampled_metrics_default", "2h0m0s", "2h0m0s", True)
    ]
    # an existing policy is altered, and unchanged values are not sent again
    retention.influx_db_metrics_retention = 800 * hour
    assert await update_settings(runtime, retention)
    assert await policies("metrics") == [("metrics_default", "800h0m0s", "24h0m0s", True)]

    # InfluxDB refuses less than an hour: the settings stay as they were
    short = settings_pb2.Settings(influx_db_metrics_retention=60 * 10**9, fields=["18"])
    with pytest.raises(InvalidArgument) as caught:
        await update_settings(runtime, short)
    assert "retention policy duration must be at least 1h0m0s" in caught.value.message
    assert runtime.settings().influx_db_metrics_retention == 800 * hour

    # back to the defaults, so other tests of this session see the usual policies
    defaults = _settings.default_settings()
    defaults.fields.extend(["18", "31"])
    assert await update_settings(runtime, defaults)
    assert await policies("metrics") == [("metrics_default", "672h0m0s", "24h0m0s", True)]


@pytest.fixture
async def inst_ccrm(harness: ControllerHarness) -> AsyncIterator[InstCcrm]:
    fake = InstCcrm()
    async with inst_ccrm_server(fake) as addr:
        harness.ccrm_addr = addr
        yield fake


async def test_default_serverless_cluster_follows_the_cloudlet_setting(
    harness: ControllerHarness, inst_ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    await put_features(ctl, features(supports_multi_tenant_cluster=True))
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl, "x1.small", vcpus=2)
    await put_flavor(ctl, "x1.large", vcpus=8)
    await put_flavor(ctl, "x1.gpu", vcpus=16)
    key = default_mt_cluster_key(cloudlet.key)
    assert key.name.startswith("defaultmtclust-")

    async def toggle(enabled: bool) -> None:
        request = new_cloudlet(org, "c1", enable_default_serverless_cluster=enabled, fields=["46"])
        lines, err = await collect(ctl.cloudlets.UpdateCloudlet(request, timeout=30))
        assert err is None, err
        assert lines == ["Cloudlet updated successfully"]

    await toggle(True)

    async def created() -> Any:
        cluster = ctl.engine.get(CLUSTER_INST, key)
        assert cluster is not None
        assert cluster.state == common_pb2.READY
        return cluster

    cluster = await eventually(created, within=20)
    assert cluster.multi_tenant
    assert cluster.cloudlet_key == cloudlet.key
    assert cluster.auto_scale_policy == key.name
    [pool] = cluster.node_pools
    assert (pool.Name, pool.num_nodes, pool.node_resources.vcpus) == ("defaultpool", 3, 8)
    policy = ctl.engine.get(
        registry.by_class(autoscalepolicy_pb2.AutoScalePolicy),
        autoscalepolicy_pb2.PolicyKey(organization="edgecloudorg", name=key.name),
    )
    assert policy is not None
    assert (policy.min_nodes, policy.max_nodes, policy.target_cpu) == (1, 4, 70)

    await toggle(False)

    async def deleted() -> None:
        assert ctl.engine.get(CLUSTER_INST, key) is None

    await eventually(deleted, within=20)
