"""CRM-on-edge cloudlets: a notify client as the CRM, one or two controllers (§5.3, §6, §8)."""

from __future__ import annotations

import asyncio

from distributed_match_engine import appcommon_pb2
from edgeproto import alert_pb2, cloudlet_pb2, cloudlet_pb2_grpc, common_pb2, flavor_pb2

from edge_cloud.notify import NotifyClient, key_string
from edge_cloud.objects import registry
from services.controller._progress import stream_key
from tests.integration.controller.cloudlet_harness import (
    CLOUDLET_INFO,
    FEATURES,
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

__all__ = ["ccrm", "harness"]

CS = appcommon_pb2
ALERT = registry.by_class(alert_pb2.Alert)


def crm_client(addr: str) -> NotifyClient:
    return NotifyClient(
        [addr], name="crm", filter_cloudlet_key=True, backoff_initial=0.05, backoff_max=0.2
    )


def report(cloudlet: cloudlet_pb2.Cloudlet, state: int, *msgs: str) -> cloudlet_pb2.CloudletInfo:
    info = cloudlet_pb2.CloudletInfo(key=cloudlet.key, state=state)  # type: ignore[arg-type]
    info.status.msgs.extend(msgs)
    info.container_version = "v2"
    return info


async def test_crm_on_edge_create_follows_the_crm(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ctl = await harness.start()
    await put_features(ctl, features())
    org = unique_org()
    cloudlet = new_cloudlet(org, crm_on_edge=True)
    other = new_cloudlet(org, name="other", crm_override=common_pb2.IGNORE_CRM)
    _, err = await collect(ctl.cloudlets.CreateCloudlet(other, timeout=30))
    assert err is None

    crm = crm_client(ctl.addr)
    cloudlets = crm.cache(cloudlet_pb2.Cloudlet)
    flavors = crm.cache(flavor_pb2.Flavor)
    async with crm:
        async with asyncio.timeout(10):
            await crm.wait_connected()
        create = asyncio.create_task(collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30)))

        async def requested() -> None:
            stored = ctl.cloudlet(cloudlet.key)
            assert stored is not None
            assert stored.state == common_pb2.CREATE_REQUESTED
            assert ccrm.finished.is_set()  # onboarding by the CCRM comes first

        await eventually(requested)
        assert len(cloudlets) == 0  # filtered: nothing of a cloudlet before its CRM reports
        crm.send(report(cloudlet, CS.CLOUDLET_STATE_INIT, "Initializing platform"))

        async def announced() -> None:
            assert key_string(cloudlet) in cloudlets
            stored = ctl.cloudlet(cloudlet.key)
            assert stored is not None
            assert stored.state == common_pb2.CRM_INITOK

        await eventually(announced)
        assert key_string(other) not in cloudlets  # another cloudlet never reaches this CRM
        crm.send(
            report(
                cloudlet,
                CS.CLOUDLET_STATE_READY,
                "Initializing platform",
                "Done initializing fake platform",
                "Gathering Cloudlet Info",
            )
        )
        async with asyncio.timeout(15):
            lines, err = await create
        assert err is None
        assert lines == [
            "Setting physicalname to match cloudlet name",
            "Creating cloudlet",
            "Initializing platform",
            "Done initializing fake platform",
            "Gathering Cloudlet Info",
            "Created Cloudlet successfully",
        ]
        stored = ctl.cloudlet(cloudlet.key)
        assert stored is not None
        assert stored.state == common_pb2.READY
        assert stored.container_version == "v2"
        info = ctl.info(cloudlet.key)
        assert info is not None
        assert info.state == CS.CLOUDLET_STATE_READY
        assert info.notify_id >= 1
        assert info.controller == ctl.services.controller_id
        assert len(flavors) == 0 or flavors.synced  # unfiltered types flow as usual

        # unchanged reports cost no revision (status is Redis-only)
        entry = ctl.sync.caches.entry(CLOUDLET_INFO, key_string(cloudlet))
        assert entry is not None
        before = entry.mod_revision
        crm.send(report(cloudlet, CS.CLOUDLET_STATE_READY, "another status line"))
        crm.send(report(other, CS.CLOUDLET_STATE_INIT))  # handled after the one above

        async def marker() -> None:
            assert ctl.info(other.key) is not None

        await eventually(marker)
        after = ctl.sync.caches.entry(CLOUDLET_INFO, key_string(cloudlet))
        assert after is not None
        assert after.mod_revision == before

    # the CRM went away: its cloudlet is offline
    async def offline() -> None:
        info = ctl.info(cloudlet.key)
        assert info is not None
        assert info.state == CS.CLOUDLET_STATE_OFFLINE

    await eventually(offline)


async def test_progress_through_a_second_controller(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    a = await harness.start()
    b = await harness.start()
    await put_features(a, features())
    cloudlet = new_cloudlet(unique_org(), crm_on_edge=True)
    crm = crm_client(b.addr)  # the CRM talks to B; the user talks to A
    async with crm:
        async with asyncio.timeout(10):
            await crm.wait_connected()
        create = asyncio.create_task(collect(a.cloudlets.CreateCloudlet(cloudlet, timeout=30)))

        async def stream_started() -> None:
            assert await b.redis.exists(stream_key(cloudlet.key))
            stored = b.cloudlet(cloudlet.key)
            assert stored is not None
            assert stored.state == common_pb2.CREATE_REQUESTED

        await eventually(stream_started)
        async with asyncio.timeout(10):
            await ccrm.finished.wait()  # the CRM starts once the CCRM has onboarded the site
        follow = asyncio.create_task(collect(b.streams.StreamCloudlet(cloudlet.key, timeout=30)))
        crm.send(report(cloudlet, CS.CLOUDLET_STATE_INIT, "Initializing platform"))

        async def forwarded() -> None:  # A's waiting call took the CRM's line
            lines = await b.redis.xrange(stream_key(cloudlet.key))
            assert any(v.get(b"message") == b"Initializing platform" for _, v in lines)

        await eventually(forwarded)
        crm.send(report(cloudlet, CS.CLOUDLET_STATE_READY, "Initializing platform", "Ready"))
        async with asyncio.timeout(15):
            lines, err = await create
            followed, follow_err = await follow
        assert err is None
        assert lines[-3:] == ["Initializing platform", "Ready", "Created Cloudlet successfully"]
        assert follow_err is None
        assert followed == lines  # B replayed and followed what A wrote
        stored = a.cloudlet(cloudlet.key)
        assert stored is not None
        assert stored.state == common_pb2.READY
        info = a.info(cloudlet.key)
        assert info is not None
        assert info.controller == b.services.controller_id  # B received the CRM's report


async def test_crm_error_report_fails_the_create(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ctl = await harness.start()
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org(), crm_on_edge=True)
    crm = crm_client(ctl.addr)
    async with crm:
        async with asyncio.timeout(10):
            await crm.wait_connected()
        create = asyncio.create_task(collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30)))

        async def requested() -> None:
            stored = ctl.cloudlet(cloudlet.key)
            assert stored is not None
            assert stored.state == common_pb2.CREATE_REQUESTED
            assert await ctl.redis.exists(stream_key(cloudlet.key))

        await eventually(requested)
        failed = report(cloudlet, CS.CLOUDLET_STATE_ERRORS, "Initializing platform")
        failed.errors.extend(["bad credentials", "no network"])
        crm.send(failed)
        async with asyncio.timeout(15):
            lines, err = await create
    assert err is not None
    assert err.message == "Encountered failures: bad credentials, no network"
    assert "Deleting Cloudlet due to failures" in lines
    assert lines[-1] == "Deleted Cloudlet successfully"
    assert ctl.cloudlet(cloudlet.key) is None


async def test_platform_features_registered_over_notify(harness: ControllerHarness) -> None:
    ctl = await harness.start()
    ccrm_client = NotifyClient([ctl.addr], name="ccrm", backoff_initial=0.05)
    ccrm_client.cache(flavor_pb2.Flavor)
    async with ccrm_client:
        async with asyncio.timeout(10):
            await ccrm_client.wait_connected()
        ccrm_client.send(features("fakeviaccrm", is_fake=True))

        async def stored() -> None:
            stub = cloudlet_pb2_grpc.PlatformFeaturesApiStub(ctl.channel)
            shown = [
                f.platform_type
                async for f in stub.ShowPlatformFeatures(
                    cloudlet_pb2.PlatformFeatures(), timeout=10
                )
            ]
            assert shown == ["fakeviaccrm"]

        await eventually(stored)

    # a CCRM going away does not remove its platforms
    async def gone() -> None:
        assert ctl.notify.server.peers == []

    await eventually(gone)
    assert ctl.sync.caches.count(FEATURES) == 1


async def test_alerts_from_a_connection(harness: ControllerHarness) -> None:
    ctl = await harness.start()
    org = unique_org()
    shepherd = NotifyClient([ctl.addr], name="shepherd", backoff_initial=0.05)
    shepherd.cache(flavor_pb2.Flavor)
    down = alert_pb2.Alert(
        labels={"alertname": "CloudletDown", "scope": "Cloudlet", "cloudletorg": org},
        state="firing",
    )
    noise = alert_pb2.Alert(labels={"alertname": "SomethingElse", "cloudletorg": org})
    async with shepherd:
        shepherd.send(noise)
        shepherd.send(down)

        async def stored() -> None:
            alerts = ctl.sync.caches.values(ALERT)
            assert [dict(a.labels) for a in alerts] == [{**down.labels, "region": "local"}]
            [alert] = alerts
            assert alert.controller == ctl.services.controller_id
            assert alert.notify_id >= 1

        await eventually(stored)
        items, _ = await ctl.store.range("1/Alert/")
        assert items[0].lease == ctl.lease.lease_id  # they vanish with this controller

    async def flushed() -> None:
        assert ctl.sync.caches.values(ALERT) == []

    await eventually(flushed)
