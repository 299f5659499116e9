"""`crmutil.TpeWork`: TPEInstanceStates turned into the fake platform's calls.

The CRM and the CCRM share this handler; here it runs on the fake platform's emulator, and
the fake's infrastructure shows which (TPE, cluster) pairs are open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from edgeproto import (
    app_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    flavor_pb2,
    settings_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
    zonepool_pb2,
)

from edge_cloud.crmutil import TpeWork
from edge_cloud.errors import NotFound
from edge_cloud.objects import keys
from edge_cloud.platform import Platform, PlatformCaches
from platforms.fake.tests.emulator import FakeEmulator, emulate

TPES = trustpolicyexception_pb2
TPE_KEY = TPES.TrustPolicyExceptionKey(
    app_key=app_pb2.AppKey(organization="dev", name="app1", version="1.0"),
    zone_pool_key=zonepool_pb2.ZonePoolKey(organization="emuop", name="pool1"),
    name="tpe1",
)
CLUSTER = cluster_pb2.ClusterKey(organization="dev", name="cl1")


@dataclass
class Source:
    """The `PlatformSource` of one emulated cloudlet."""

    emu: FakeEmulator
    caches: PlatformCaches

    def settings(self) -> settings_pb2.Settings:
        return settings_pb2.Settings()

    def cloudlet(self, key: cloudletkey_pb2.CloudletKey) -> cloudlet_pb2.Cloudlet:
        if key != self.emu.cloudlet.key:
            raise keys.not_found(key)
        return self.emu.cloudlet

    async def initialised(self, cloudlet: cloudlet_pb2.Cloudlet) -> Platform:
        return self.emu.platform


@pytest.fixture
async def source() -> AsyncIterator[Source]:
    tpe = TPES.TrustPolicyException(
        key=TPE_KEY,
        state=TPES.TRUST_POLICY_EXCEPTION_STATE_ACTIVE,
        outbound_security_rules=[
            trustpolicy_pb2.SecurityRule(protocol="TCP", remote_cidr="10.0.0.0/8")
        ],
    )
    caches = PlatformCaches(trust_policy_exceptions={keys.key_string(TPE_KEY): tpe})
    async with emulate(caches=caches) as emu:
        await emu.platform.create_cloudlet(
            emu.cloudlet, emu.pf_config, flavor_pb2.Flavor(), emu.progress
        )
        yield Source(emu, caches)


def state(source: Source, *, enable: bool, run_count: int = 1) -> TPES.TPEInstanceState:
    key = TPES.TPEInstanceKey(
        tpe_key=TPE_KEY, cluster_key=CLUSTER, cloudlet_key=source.emu.cloudlet.key
    )
    key.app_inst_key.name = "ai1"
    key.app_inst_key.organization = "dev"
    return TPES.TPEInstanceState(key=key, tpe_enable=enable, run_count=run_count)


def opened(source: Source) -> set[tuple[str, str]]:
    return set(source.emu.infra.sites[source.emu.key].trust_policy_exceptions)


async def test_enable_opens_and_disable_closes(source: Source) -> None:
    work = TpeWork(source)
    await work.apply(state(source, enable=True))
    assert opened(source) == {(keys.key_string(TPE_KEY), keys.key_string(CLUSTER))}
    await work.apply(state(source, enable=False, run_count=2))
    assert opened(source) == set()


async def test_a_deleted_enabled_record_is_closed(source: Source) -> None:
    work = TpeWork(source)
    enabled = state(source, enable=True)
    await work.apply(enabled)
    await work.deleted(state(source, enable=False))  # was never open: nothing to do
    assert len(opened(source)) == 1
    await work.deleted(enabled)
    assert opened(source) == set()


async def test_enable_needs_the_tpe(source: Source) -> None:
    unknown = state(source, enable=True)
    unknown.key.tpe_key.name = "other"
    with pytest.raises(NotFound, match="not found"):
        await TpeWork(source).apply(unknown)
    assert opened(source) == set()


def test_only_a_higher_run_count_is_a_request() -> None:
    first = TPES.TPEInstanceState(run_count=1)
    assert TpeWork.requested(first, None)
    assert not TpeWork.requested(TPES.TPEInstanceState(run_count=0), None)  # runner finished
    assert TpeWork.requested(TPES.TPEInstanceState(run_count=2), first)
    assert not TpeWork.requested(TPES.TPEInstanceState(run_count=0), first)
    assert not TpeWork.requested(first, first)
