"""Alerts in the Controller through gRPC and notify, on real etcd and Redis (issue 4).

Children (a Shepherd, a CRM) are real notify clients; the Controller's own alerts
(CloudletDown, cloudlet-offline AppInstDown, CloudletResourceUsage) come from what those
clients report and from ClusterInst creates through the API.
"""

from __future__ import annotations

import asyncio

from distributed_match_engine import appcommon_pb2
from edgeproto import (
    alert_pb2,
    alert_pb2_grpc,
    appinst_pb2,
    cloudlet_pb2,
    common_pb2,
    flavor_pb2,
    infraresources_pb2,
)

from edge_cloud.notify import NotifyClient
from edge_cloud.objects import keys, registry
from services.controller._engine import Txn
from tests.integration.controller.cloudlet_harness import (
    Controller,
    ControllerHarness,
    collect,
    features,
    harness,
    new_cloudlet,
    put_features,
    unique_org,
)
from tests.integration.controller.clusterinst_harness import (
    InstCcrm,
    app_insts,
    ccrm,
    cluster_key,
    clusters,
    create_app,
    new_app_inst,
    new_cluster,
    put_flavor,
    ready_cloudlet,
)
from tests.integration.helpers import eventually

__all__ = ["ccrm", "harness"]

CS = appcommon_pb2
HC = appcommon_pb2
ALERT = registry.by_class(alert_pb2.Alert)
APP_INST = registry.by_class(appinst_pb2.AppInst)
CLOUDLET = registry.by_class(cloudlet_pb2.Cloudlet)


def client(ctl: Controller, name: str) -> NotifyClient:
    notify = NotifyClient([ctl.addr], name=name, backoff_initial=0.05, backoff_max=0.2)
    notify.cache(flavor_pb2.Flavor)
    return notify


async def show(ctl: Controller, **labels: str) -> list[alert_pb2.Alert]:
    stub = alert_pb2_grpc.AlertApiStub(ctl.channel)
    return [a async for a in stub.ShowAlert(alert_pb2.Alert(labels=labels), timeout=10)]


def names(alerts: list[alert_pb2.Alert]) -> list[str]:
    return sorted(a.labels["alertname"] for a in alerts)


async def put_app_inst(ctl: Controller, inst: appinst_pb2.AppInst) -> None:
    """Store an AppInst as a finished create leaves it (what the alerts look at)."""

    def fn(txn: Txn) -> None:
        txn.put(inst)

    await ctl.engine.apply(fn)


def health(ctl: Controller, inst: appinst_pb2.AppInst) -> int:
    stored = ctl.sync.caches.get(APP_INST, keys.key_string(inst.key))
    assert stored is not None
    return stored.health_check


async def test_show_alert_filters_on_labels(harness: ControllerHarness) -> None:
    ctl = await harness.start()
    org = unique_org()
    shepherd = client(ctl, "shepherd")
    scale = alert_pb2.Alert(
        labels={"alertname": "ClusterAutoScale", "clusterorg": org, "cluster": "a"},
        state="firing",
    )
    user = alert_pb2.Alert(
        labels={"alertname": "cpu-high", "type": "UserDefined", "clusterorg": org},
        annotations={"title": "cpu-high"},
        state="firing",
    )
    async with shepherd:
        shepherd.send(scale)
        shepherd.send(user)

        async def both() -> None:
            assert names(await show(ctl)) == ["ClusterAutoScale", "cpu-high"]

        await eventually(both)
        [only] = await show(ctl, type="UserDefined")
        assert dict(only.labels) == {**user.labels, "region": "local"}
        assert only.annotations["title"] == "cpu-high"
        assert only.controller == ctl.services.controller_id
        assert names(await show(ctl, clusterorg=org, cluster="a")) == ["ClusterAutoScale"]
        assert await show(ctl, clusterorg="someone-else") == []

        shepherd.send_delete(scale)  # withdrawn by its sender

        async def withdrawn() -> None:
            assert names(await show(ctl)) == ["cpu-high"]

        await eventually(withdrawn)

    async def flushed() -> None:  # the connection ended: what it reported goes
        assert await show(ctl) == []

    await eventually(flushed)


async def test_appinst_down_sets_health_until_withdrawn(harness: ControllerHarness) -> None:
    ctl = await harness.start()
    org = unique_org()
    inst = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name="ai1", organization=org),
        state=common_pb2.READY,
        health_check=HC.HEALTH_CHECK_OK,
    )
    await put_app_inst(ctl, inst)
    down = alert_pb2.Alert(
        labels={
            "alertname": "AppInstDown",
            "appinst": "ai1",
            "appinstorg": org,
            "status": "HealthCheckServerFail",
            "scope": "Application",
        },
        state="firing",
    )
    old_style = alert_pb2.Alert(state="firing")
    old_style.labels.update({**down.labels, "status": "1", "port": "80"})  # numeric status
    shepherd = client(ctl, "shepherd")
    async with shepherd:
        shepherd.send(down)

        async def failed() -> None:
            assert health(ctl, inst) == HC.HEALTH_CHECK_SERVER_FAIL

        await eventually(failed)
        shepherd.send(old_style)

        async def rootlb() -> None:
            assert health(ctl, inst) == HC.HEALTH_CHECK_ROOTLB_OFFLINE

        await eventually(rootlb)
        shepherd.send_delete(old_style)

        async def back() -> None:
            assert health(ctl, inst) == HC.HEALTH_CHECK_OK
            assert names(await show(ctl)) == ["AppInstDown"]

        await eventually(back)


async def test_alerts_come_back_after_a_lost_lease(harness: ControllerHarness) -> None:
    ctl = await harness.start()
    org = unique_org()
    shepherd = client(ctl, "shepherd")
    alert = alert_pb2.Alert(
        labels={"alertname": "AutoProvUndeploy", "apporg": org}, state="firing", value=3.0
    )
    async with shepherd:
        shepherd.send(alert)

        async def stored() -> None:
            assert names(await show(ctl)) == ["AutoProvUndeploy"]

        await eventually(stored)
        old_lease = ctl.lease.lease_id
        assert old_lease is not None
        await ctl.store.revoke(old_lease)  # what an expiry under etcd congestion does

        async def gone() -> None:
            assert await show(ctl) == []

        await eventually(gone)
        ctl.lease.lease_id = None  # what the keeper does when it finds the lease gone
        later = alert_pb2.Alert(labels={"alertname": "AppInstDown", "appinstorg": org})
        shepherd.send(later)  # arrives with no lease: kept, not written unleased

        async def kept() -> None:
            assert len(ctl.notify.alerts) == 2

        await eventually(kept)
        assert await show(ctl) == []
        await ctl.lease.register()  # the keeper's re-grant
        new_lease = ctl.lease.lease_id
        assert new_lease is not None
        assert new_lease != old_lease

        async def replayed() -> None:
            back = await show(ctl)
            assert names(back) == ["AppInstDown", "AutoProvUndeploy"]
            assert [a.value for a in back if a.labels["alertname"] == "AutoProvUndeploy"] == [3.0]
            items, _ = await ctl.store.range("1/Alert/")
            assert [i.lease for i in items] == [new_lease, new_lease]

        await eventually(replayed)
    await ctl.notify.close()


async def test_cloudlet_down_and_back(harness: ControllerHarness) -> None:
    ctl = await harness.start()
    await put_features(ctl, features())
    org = unique_org()
    cloudlet = new_cloudlet(org, crm_override=common_pb2.IGNORE_CRM)
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None
    inst = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name="ai1", organization=org),
        cloudlet_key=cloudlet.key,
        state=common_pb2.READY,
        health_check=HC.HEALTH_CHECK_OK,
    )
    await put_app_inst(ctl, inst)
    ready = cloudlet_pb2.CloudletInfo(key=cloudlet.key, state=CS.CLOUDLET_STATE_READY)

    crm = NotifyClient(
        [ctl.addr], name="crm", filter_cloudlet_key=True, backoff_initial=0.05, backoff_max=0.2
    )
    async with crm:
        crm.send(ready)

        async def online() -> None:
            info = ctl.info(cloudlet.key)
            assert info is not None
            assert info.state == CS.CLOUDLET_STATE_READY

        await eventually(online)
        assert await show(ctl) == []  # READY: nothing down

    async def down() -> None:
        alerts = await show(ctl, cloudletorg=org)
        assert names(alerts) == ["CloudletDown"]
        alert = alerts[0]
        assert dict(alert.labels) == {
            "alertname": "CloudletDown",
            "scope": "Cloudlet",
            "cloudlet": "c1",
            "cloudletorg": org,
            "region": "local",
        }
        assert alert.annotations["description"] == "Cloudlet resource manager is offline"
        assert alert.state == "firing"
        app_downs = await show(ctl, alertname="AppInstDown")
        assert len(app_downs) == 1
        app_down = app_downs[0]
        assert app_down.labels["status"] == "HealthCheckCloudletOffline"
        assert app_down.labels["appinstorg"] == org
        assert app_down.annotations["description"] == "AppInst down due to cloudlet offline"
        assert health(ctl, inst) == HC.HEALTH_CHECK_CLOUDLET_OFFLINE

    await eventually(down)

    crm = NotifyClient(
        [ctl.addr], name="crm", filter_cloudlet_key=True, backoff_initial=0.05, backoff_max=0.2
    )
    async with crm:
        crm.send(ready)  # the CRM is back

        async def cleared() -> None:
            assert await show(ctl) == []
            assert health(ctl, inst) == HC.HEALTH_CHECK_OK

        await eventually(cleared)
    await eventually(down)  # and gone again

    def drop(txn: Txn) -> None:  # the cloudlet must be empty to go
        txn.delete(APP_INST, inst.key)

    await ctl.engine.apply(drop)
    _, err = await collect(ctl.cloudlets.DeleteCloudlet(cloudlet, timeout=30))
    assert err is None, err

    async def removed() -> None:  # a deleted cloudlet takes its alerts along
        assert await show(ctl, cloudletorg=org) == []

    await eventually(removed)
    await ctl.notify.close()


async def test_resource_usage_alerts(harness: ControllerHarness, ccrm: InstCcrm) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org, max_vcpus=8)
    await put_flavor(ctl)  # x1.small: 2 vCPUs

    def quota(txn: Txn) -> None:
        stored = txn.get(CLOUDLET, cloudlet.key)
        assert stored is not None
        stored.resource_quotas.add(name="vCPUs", value=4, alert_threshold=40)
        stored.resource_quotas.add(name="RAM", value=100000)  # the cloudlet default: 80%
        txn.put(stored)

    await ctl.engine.apply(quota)
    _, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet)))
    assert err is None, err
    usage = "more than 40% of vCPUs (2 of 4) is used by the cloudlet"
    # written by the create commit itself
    [alert] = await show(ctl, alertname="CloudletResourceUsage")
    assert dict(alert.labels) == {
        "alertname": "CloudletResourceUsage",
        "scope": "Cloudlet",
        "cloudlet": "c1",
        "cloudletorg": org,
        "warning": usage,
        "region": "local",
    }
    assert alert.annotations["description"] == usage

    # an instance's own alerts go with it
    app = await create_app(ctl, org)
    inst = new_app_inst(org, app, cluster=cluster_key(org))
    _, err = await collect(app_insts(ctl).CreateAppInst(inst))
    assert err is None, err
    shepherd = client(ctl, "shepherd")
    async with shepherd:
        scale = {"alertname": "ClusterAutoScale", "cluster": "cl1", "clusterorg": org}
        scale.update(cloudlet="c1", cloudletorg=org)
        shepherd.send(alert_pb2.Alert(labels=scale, state="firing"))
        app_down = {"alertname": "AppInstDown", "appinst": "ai1", "appinstorg": org}
        shepherd.send(alert_pb2.Alert(labels={**app_down, "status": "HealthCheckServerFail"}))

        async def both_stored() -> None:
            assert names(await show(ctl, clusterorg=org)) == ["ClusterAutoScale"]
            assert names(await show(ctl, appinstorg=org)) == ["AppInstDown"]

        await eventually(both_stored)
        _, err = await collect(app_insts(ctl).DeleteAppInst(appinst_pb2.AppInst(key=inst.key)))
        assert err is None, err
        assert await show(ctl, appinstorg=org) == []
        assert names(await show(ctl, clusterorg=org)) == ["ClusterAutoScale"]
        _, err = await collect(clusters(ctl).DeleteClusterInst(new_cluster(org, cloudlet)))
        assert err is None, err
        assert await show(ctl, clusterorg=org) == []
        assert len(ctl.notify.alerts) == 0  # no replay brings them back
    assert await show(ctl, alertname="CloudletResourceUsage") == []  # cleared by the removal
    _, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet)))
    assert err is None, err
    assert len(await show(ctl, alertname="CloudletResourceUsage")) == 1

    # a READY report re-evaluates: the infra now reports 7 of 8 vCPUs in use
    crm = NotifyClient(
        [ctl.addr], name="crm", filter_cloudlet_key=True, backoff_initial=0.05, backoff_max=0.2
    )
    stored_info = ctl.info(cloudlet.key)
    assert stored_info is not None
    info = cloudlet_pb2.CloudletInfo()
    info.CopyFrom(stored_info)
    info.state = CS.CLOUDLET_STATE_READY
    del info.resources_snapshot.info[:]
    info.resources_snapshot.info.append(
        infraresources_pb2.InfraResource(name="vCPUs", value=7, infra_max_value=8)
    )
    async with crm:
        crm.send(info)
        infra = "more than 40% of vCPUs (7 of 8) is used on the infra managed by the cloudlet"

        async def both() -> None:
            shown = await show(ctl, alertname="CloudletResourceUsage")
            assert sorted(a.labels["warning"] for a in shown) == [usage, infra]

        await eventually(both)

        def lower(txn: Txn) -> None:  # the operator raises the threshold
            stored = txn.get(CLOUDLET, cloudlet.key)
            assert stored is not None
            stored.resource_quotas[0].alert_threshold = 90
            txn.put(stored)

        await ctl.engine.apply(lower)
        info.resources_snapshot.info[0].value = 6
        crm.send(info)

        async def stale_removed() -> None:
            assert await show(ctl, alertname="CloudletResourceUsage") == []

        async with asyncio.timeout(15):
            await eventually(stale_removed)
    await ctl.notify.close()
