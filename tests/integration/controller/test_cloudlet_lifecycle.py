"""Cloudlet create/delete through a CCRM test server, on real etcd and Redis (§3.6, §5)."""

from __future__ import annotations

import asyncio

from distributed_match_engine import appcommon_pb2
from edgeproto import cloudlet_pb2, common_pb2

from edge_cloud.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from edge_cloud.objects import keys
from edge_cloud.objects.durations import SECOND
from services.controller._progress import stream_key
from tests.integration.controller.cloudlet_harness import (
    CLOUDLET,
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


async def test_create_streams_progress_until_ready(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ctl = await harness.start()
    await put_features(ctl, features())
    org = unique_org()
    cloudlet = new_cloudlet(org)
    lines, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None
    assert lines == [
        "Setting physicalname to match cloudlet name",
        "Creating cloudlet",
        "Cloudlet ready",
        "Created Cloudlet successfully",
    ]
    stored = ctl.cloudlet(cloudlet.key)
    assert stored is not None
    assert stored.state == common_pb2.READY
    assert stored.physical_name == "c1"
    assert stored.flavor.name == "DefaultPlatformFlavor"
    assert stored.dns_label == f"c1-{org}"
    assert stored.root_lb_fqdn == f"shared.c1-{org}.local.appdnsroot.net"
    assert stored.obj_id
    assert stored.created_at.seconds > 0
    assert stored.container_version == "2026-01-01"  # copied from the CCRM's report
    assert [f.name for f in stored.infra_flavors] == ["m1.small"]
    assert await ctl.store.get(f"1/CloudletDnsLabel/c1-{org}") is not None
    [request] = ccrm.requests
    assert request.state == common_pb2.CREATE_REQUESTED
    assert request.fields  # every field on create

    info = ctl.info(cloudlet.key)
    assert info is not None
    assert info.state == appcommon_pb2.CLOUDLET_STATE_READY
    assert info.controller == ctl.services.controller_id
    assert not info.status.msgs  # Redis-only, never stored

    replay, err = await collect(ctl.streams.StreamCloudlet(cloudlet.key, timeout=10))
    assert err is None
    assert replay == lines  # lines from before the commit were buffered, then written

    shown = [c async for c in ctl.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(), timeout=10)]
    assert [c.key for c in shown] == [cloudlet.key]

    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert isinstance(err, AlreadyExists)
    assert err.message == f'Cloudlet key {{"organization":"{org}","name":"c1"}} already exists'


async def test_delete_removes_everything(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ctl = await harness.start()
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org())
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None
    stored = ctl.cloudlet(cloudlet.key)
    assert stored is not None
    label_key = f"1/CloudletDnsLabel/{stored.dns_label}"

    lines, err = await collect(ctl.cloudlets.DeleteCloudlet(cloudlet, timeout=30))
    assert err is None
    assert lines == ["Deleting cloudlet", "Deleted Cloudlet successfully"]
    assert ctl.cloudlet(cloudlet.key) is None
    assert ctl.info(cloudlet.key) is None
    assert await ctl.store.get(label_key) is None
    assert ccrm.requests[-1].state == common_pb2.DELETE_REQUESTED
    assert list(ccrm.requests[-1].fields) == ["12"]
    _, err = await collect(ctl.streams.StreamCloudlet(cloudlet.key, timeout=10))
    assert isinstance(err, NotFound)
    assert err.message == f"Stream {stream_key(cloudlet.key)} does not exist"

    _, err = await collect(ctl.cloudlets.DeleteCloudlet(cloudlet, timeout=30))
    assert isinstance(err, NotFound)
    # the label is free again
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None
    assert ctl.cloudlet(cloudlet.key).dns_label == stored.dns_label  # type: ignore[union-attr]


async def test_failed_create_is_undone(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ccrm.fail_create = "out of floating IPs"
    ctl = await harness.start()
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org())
    states: list[int] = []

    def record(otype, key, old, new, revision) -> None:  # type: ignore[no-untyped-def]
        if otype.name == "Cloudlet" and new is not None:
            states.append(new.state)

    ctl.sync.subscribe(record)
    lines, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert isinstance(err, FailedPrecondition)
    assert err.message == "Cloudlet onboarding failed: out of floating IPs"
    assert lines == [
        "Setting physicalname to match cloudlet name",
        "Creating cloudlet",
        "Cloudlet onboarding failed: out of floating IPs",
        "Deleting Cloudlet due to failures",
        "Deleting cloudlet",
        "Deleted Cloudlet successfully",
    ]
    # the CCRM's ERRORS report moved the cloudlet to CreateError before the undo removed it
    assert common_pb2.CREATE_ERROR in states
    assert states[-1] == common_pb2.DELETE_REQUESTED
    assert ctl.cloudlet(cloudlet.key) is None
    assert [r.state for r in ccrm.requests] == [
        common_pb2.CREATE_REQUESTED,
        common_pb2.DELETE_REQUESTED,
    ]
    assert not await ctl.redis.exists(stream_key(cloudlet.key))  # undone: stream removed


async def test_create_timeout_comes_from_settings(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ccrm.hang = 30
    ctl = await harness.start()
    await put_features(ctl, features())
    await ctl.put_settings(create_cloudlet_timeout=1 * SECOND)
    cloudlet = new_cloudlet(unique_org())
    async with asyncio.timeout(15):
        lines, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert isinstance(err, DeadlineExceeded)
    assert err.message == "Cloudlet onboarding failed: context deadline exceeded"
    assert "Deleting Cloudlet due to failures" in lines
    assert ctl.cloudlet(cloudlet.key) is None


async def test_ignore_crm_override(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ctl = await harness.start()
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org(), crm_override=common_pb2.IGNORE_CRM)
    lines, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None
    assert lines == ["Setting physicalname to match cloudlet name"]
    stored = ctl.cloudlet(cloudlet.key)
    assert stored is not None
    assert stored.state == common_pb2.READY
    assert stored.crm_override == common_pb2.NO_OVERRIDE  # never persisted
    assert ccrm.requests == []

    delete = cloudlet_pb2.Cloudlet(key=cloudlet.key, crm_override=common_pb2.IGNORE_CRM)
    lines, err = await collect(ctl.cloudlets.DeleteCloudlet(delete, timeout=30))
    assert err is None
    assert lines == ["Deleted Cloudlet successfully"]
    assert ccrm.requests == []
    assert ctl.cloudlet(cloudlet.key) is None


async def test_ignore_crm_errors_on_delete(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ctl = await harness.start()
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org())
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None
    ccrm.fail_delete = "hypervisor unreachable"
    _, err = await collect(ctl.cloudlets.DeleteCloudlet(cloudlet, timeout=30))
    assert isinstance(err, FailedPrecondition)
    assert err.message == "hypervisor unreachable"
    stored = ctl.cloudlet(cloudlet.key)
    assert stored is not None
    assert stored.state == common_pb2.DELETE_ERROR
    assert not stored.delete_prepare

    delete = cloudlet_pb2.Cloudlet(key=cloudlet.key, crm_override=common_pb2.IGNORE_CRM_ERRORS)
    lines, err = await collect(ctl.cloudlets.DeleteCloudlet(delete, timeout=30))
    assert err is None
    assert "Delete Cloudlet ignoring CRM failure: hypervisor unreachable" in lines
    assert ctl.cloudlet(cloudlet.key) is None


async def test_create_checks_references_and_features(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = new_cloudlet(org)
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert isinstance(err, NotFound)
    assert err.message == (
        "Failed to get features for platform: PlatformFeatures key fakeccrm not found"
    )
    await put_features(ctl, features())
    cases = [
        (
            new_cloudlet(org, zone="z1"),
            NotFound,
            f'Zone key {{"organization":"{org}","name":"z1"}}',
        ),
        (
            new_cloudlet(org, flavor={"name": "big"}),
            NotFound,
            'Flavor key {"name":"big"} not found',
        ),
        (new_cloudlet(org, trust_policy="tp"), InvalidArgument, "Trust Policy not supported on"),
        (new_cloudlet(org, location={"latitude": 91}), InvalidArgument, "Invalid latitude value"),
        (
            new_cloudlet(org, alliance_orgs=["foo", "bar", "foo"]),
            InvalidArgument,
            'Duplicate alliance org "foo" specified',
        ),
        (
            new_cloudlet(org, resource_quotas=[{"name": "Bananas", "value": 3}]),
            InvalidArgument,
            "invalid quota for Bananas, valid quotas are for Disk, External IPs, GPUs, RAM, vCPUs",
        ),
    ]
    for bad, error, text in cases:
        _, err = await collect(ctl.cloudlets.CreateCloudlet(bad, timeout=30))
        assert isinstance(err, error), (text, err)
        assert text in err.message
    assert ctl.sync.caches.count(CLOUDLET) == 0
    assert ccrm.requests == []


async def test_dns_labels_are_unique(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ctl = await harness.start()
    await put_features(ctl, features())
    suffix = unique_org()[4:]
    a = new_cloudlet(f"def{suffix}", name="abc", crm_override=common_pb2.IGNORE_CRM)
    b = new_cloudlet(f"d,ef{suffix}", name="ab,c", crm_override=common_pb2.IGNORE_CRM)
    for cloudlet in (a, b):
        _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
        assert err is None
    assert ctl.cloudlet(a.key).dns_label == f"abc-def{suffix}"  # type: ignore[union-attr]
    assert ctl.cloudlet(b.key).dns_label == f"abc-def{suffix}1"  # type: ignore[union-attr]
    for cloudlet in (a, b):
        delete = cloudlet_pb2.Cloudlet(key=cloudlet.key, crm_override=common_pb2.IGNORE_CRM)
        _, err = await collect(ctl.cloudlets.DeleteCloudlet(delete, timeout=30))
        assert err is None
    items, _ = await ctl.store.range("1/CloudletDnsLabel/")
    assert items == []


async def test_manifest_comes_from_the_ccrm(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ctl = await harness.start()
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org(), crm_override=common_pb2.IGNORE_CRM)
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None
    manifest = await ctl.cloudlets.GetCloudletManifest(cloudlet.key, timeout=10)
    assert manifest.manifest == "bring up c1"
    assert keys.key_string(cloudlet.key)
