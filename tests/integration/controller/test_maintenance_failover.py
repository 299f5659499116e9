"""The cloudlet maintenance state machine with AutoProv failover (controller.md §3.6;
BEHAVIOURS.md row 44).

The test plays the AutoProv service over the real notify protocol (an `edge_cloud.notify`
client that follows the Cloudlets and reports `AutoProvInfo`), and the CRM through the CCRM
(`ApplyCloudlet` with the maintenance field, answered with the CRM's CloudletInfo state).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from distributed_match_engine import appcommon_pb2
from edgeproto import autoprovpolicy_pb2, cloudlet_pb2

from edge_cloud.errors import DeadlineExceeded, FailedPrecondition
from edge_cloud.notify import NotifyClient
from edge_cloud.objects import registry
from tests.integration.controller.cloudlet_harness import (
    Controller,
    ControllerHarness,
    FakeCcrm,
    ccrm_server,
    collect,
    features,
    harness,
    new_cloudlet,
    put_features,
    unique_org,
)
from tests.integration.helpers import eventually

__all__ = ["harness"]

CS = appcommon_pb2
AUTOPROV_INFO = registry.by_class(autoprovpolicy_pb2.AutoProvInfo)
MAINTENANCE = "30"  # Cloudlet.maintenance_state


@dataclass
class CrmByCcrm(FakeCcrm):
    """The CCRM of the harness; its CRM part can report CrmError instead of going under."""

    crm_error: bool = False

    async def _apply(
        self, request: cloudlet_pb2.Cloudlet, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[cloudlet_pb2.CloudletInfo]:
        if self.crm_error and list(request.fields) == [MAINTENANCE]:
            failed = cloudlet_pb2.CloudletInfo(key=request.key, maintenance_state=CS.CRM_ERROR)
            failed.fields.append("16")
            yield failed
            return
        async for info in super()._apply(request, context):
            yield info


@dataclass
class AutoProv:
    """The AutoProv service: told of a failover by the cloudlet's state, answers with a report.

    Attributes:
        answer: What to report (FailoverDone or FailoverError), None to stay silent.
        completed: The report's completed lines.
        errors: The report's error lines.
        seen: Every maintenance state of the cloudlet it was sent, in order.
    """

    client: NotifyClient
    answer: int | None = CS.FAILOVER_DONE
    completed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        cloudlets = self.client.cache(cloudlet_pb2.Cloudlet)

        @cloudlets.on_update
        async def follow(new: cloudlet_pb2.Cloudlet, old: cloudlet_pb2.Cloudlet | None) -> None:
            if old is not None and old.maintenance_state == new.maintenance_state:
                return
            self.seen.append(new.maintenance_state)
            if new.maintenance_state == CS.FAILOVER_REQUESTED and self.answer is not None:
                info = autoprovpolicy_pb2.AutoProvInfo(
                    key=new.key,
                    maintenance_state=self.answer,  # type: ignore[arg-type]
                    completed=self.completed,
                    errors=self.errors,
                )
                self.client.send(info)


@pytest.fixture
async def ccrm(harness: ControllerHarness) -> AsyncIterator[CrmByCcrm]:
    fake = CrmByCcrm()
    async with ccrm_server(fake) as addr:
        harness.ccrm_addr = addr
        yield fake


@pytest.fixture
async def setup(
    harness: ControllerHarness, ccrm: CrmByCcrm
) -> AsyncIterator[tuple[Controller, cloudlet_pb2.Cloudlet, AutoProv]]:
    """A Controller, a Ready CCRM-managed cloudlet, and AutoProv connected over notify."""
    ctl = await harness.start()
    await ctl.put_settings(cloudlet_maintenance_timeout=3 * 10**9)
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org())
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None, err
    client = NotifyClient([ctl.addr], name="autoprov", backoff_initial=0.05, backoff_max=0.2)
    autoprov = AutoProv(client)
    async with client:
        async with asyncio.timeout(10):
            await client.wait_synced()
        yield ctl, cloudlet, autoprov


async def maintain(ctl: Controller, cloudlet: cloudlet_pb2.Cloudlet, state: int) -> Any:
    """UpdateCloudlet(maintenance_state=state): its streamed lines and final error."""
    request = cloudlet_pb2.Cloudlet(key=cloudlet.key, fields=[MAINTENANCE])
    request.maintenance_state = state  # type: ignore[assignment]
    return await collect(ctl.cloudlets.UpdateCloudlet(request, timeout=30))


def stored_state(ctl: Controller, cloudlet: cloudlet_pb2.Cloudlet) -> int:
    stored = ctl.cloudlet(cloudlet.key)
    assert stored is not None
    return stored.maintenance_state


def maintenance_requests(ccrm: CrmByCcrm) -> list[cloudlet_pb2.Cloudlet]:
    """The CCRM calls that passed a maintenance state to the CRM (not the create)."""
    return [r for r in ccrm.requests if list(r.fields) == [MAINTENANCE]]


async def settled(autoprov: AutoProv, last: int) -> None:
    """Wait until AutoProv has been sent `last` (notify delivers after the etcd commit)."""

    async def arrived() -> None:
        assert autoprov.seen
        assert autoprov.seen[-1] == last

    await eventually(arrived)


async def test_failover_then_crm_then_under_maintenance_and_back(
    setup: tuple[Controller, cloudlet_pb2.Cloudlet, AutoProv], ccrm: CrmByCcrm
) -> None:
    ctl, cloudlet, autoprov = setup
    autoprov.completed = ["Created AppInst ai1 on cloudlet c2"]
    del autoprov.seen[:]

    lines, err = await maintain(ctl, cloudlet, CS.MAINTENANCE_START)
    assert err is None, err
    assert lines == [
        "Starting AutoProv failover",
        "Created AppInst ai1 on cloudlet c2",
        "AutoProv failover completed",
        "Starting CRM maintenance",
        "CRM maintenance started",
        "Cloudlet is in maintenance",
    ]
    await settled(autoprov, CS.UNDER_MAINTENANCE)
    assert autoprov.seen == [CS.FAILOVER_REQUESTED, CS.CRM_REQUESTED, CS.UNDER_MAINTENANCE]
    assert stored_state(ctl, cloudlet) == CS.UNDER_MAINTENANCE
    report = ctl.engine.get(AUTOPROV_INFO, cloudlet.key)
    assert report is not None
    assert report.maintenance_state == CS.FAILOVER_DONE
    assert list(report.completed) == ["Created AppInst ai1 on cloudlet c2"]
    # the CRM (here through its CCRM) was asked exactly once, with the maintenance field
    asked = maintenance_requests(ccrm)
    assert [(list(r.fields), r.maintenance_state) for r in asked] == [
        ([MAINTENANCE], CS.CRM_REQUESTED)
    ]
    info = ctl.info(cloudlet.key)
    assert info is not None
    assert info.maintenance_state == CS.CRM_UNDER_MAINTENANCE

    # already in maintenance: a second start is refused before anything moves
    lines, err = await maintain(ctl, cloudlet, CS.MAINTENANCE_START)
    assert isinstance(err, FailedPrecondition)
    assert err.message == "Cloudlet must be in NormalOperation before starting maintenance"

    # back: NormalOperationInit to the CRM, wait for its NormalOperation, NormalOperation
    lines, err = await maintain(ctl, cloudlet, CS.NORMAL_OPERATION)
    assert err is None, err
    assert lines == ["Cloudlet is back to normal operation"]
    await settled(autoprov, CS.NORMAL_OPERATION)
    assert autoprov.seen[3:] == [CS.NORMAL_OPERATION_INIT, CS.NORMAL_OPERATION]
    assert ccrm.requests[-1].maintenance_state == CS.NORMAL_OPERATION_INIT
    info = ctl.info(cloudlet.key)
    assert info is not None
    assert info.maintenance_state == CS.NORMAL_OPERATION

    # a new maintenance resets the last AutoProvInfo first: the old FailoverDone must not
    # count, so this time AutoProv's errors abort it
    autoprov.answer, autoprov.completed = CS.FAILOVER_ERROR, []
    autoprov.errors = ["Failed to create AppInst ai1 on cloudlet c2: no resources"]
    lines, err = await maintain(ctl, cloudlet, CS.MAINTENANCE_START)
    assert isinstance(err, FailedPrecondition)
    assert err.message == "AutoProv failover encountered some errors, aborting maintenance"
    assert lines == [
        "Starting AutoProv failover",
        "Failed to create AppInst ai1 on cloudlet c2: no resources",
    ]


async def test_failover_errors_revert_to_normal_operation(
    setup: tuple[Controller, cloudlet_pb2.Cloudlet, AutoProv], ccrm: CrmByCcrm
) -> None:
    ctl, cloudlet, autoprov = setup
    autoprov.answer = CS.FAILOVER_ERROR
    autoprov.completed = ["Created AppInst ai1 on cloudlet c2"]
    autoprov.errors = ["Failed to create AppInst ai2 on cloudlet c3: no suitable cloudlet"]
    del autoprov.seen[:]
    lines, err = await maintain(ctl, cloudlet, CS.MAINTENANCE_START)
    assert isinstance(err, FailedPrecondition)
    assert err.message == "AutoProv failover encountered some errors, aborting maintenance"
    # completed lines first, then the errors, as the original streams them
    assert lines == [
        "Starting AutoProv failover",
        "Created AppInst ai1 on cloudlet c2",
        "Failed to create AppInst ai2 on cloudlet c3: no suitable cloudlet",
    ]
    await settled(autoprov, CS.NORMAL_OPERATION)
    assert autoprov.seen == [CS.FAILOVER_REQUESTED, CS.NORMAL_OPERATION]
    assert stored_state(ctl, cloudlet) == CS.NORMAL_OPERATION
    assert not maintenance_requests(ccrm)  # the CRM never asked
    # reverted, so maintenance can be tried again at once
    autoprov.answer, autoprov.errors, autoprov.completed = CS.FAILOVER_DONE, [], []
    lines, err = await maintain(ctl, cloudlet, CS.MAINTENANCE_START)
    assert err is None, err
    assert lines[-1] == "Cloudlet is in maintenance"


async def test_crm_error_reverts_to_normal_operation(
    setup: tuple[Controller, cloudlet_pb2.Cloudlet, AutoProv], ccrm: CrmByCcrm
) -> None:
    ctl, cloudlet, autoprov = setup
    ccrm.crm_error = True
    del autoprov.seen[:]
    lines, err = await maintain(ctl, cloudlet, CS.MAINTENANCE_START)
    assert isinstance(err, FailedPrecondition)
    assert err.message == "CRM encountered some errors, aborting maintenance"
    assert lines == [
        "Starting AutoProv failover",
        "AutoProv failover completed",
        "Starting CRM maintenance",
    ]
    await settled(autoprov, CS.NORMAL_OPERATION)
    assert autoprov.seen == [CS.FAILOVER_REQUESTED, CS.CRM_REQUESTED, CS.NORMAL_OPERATION]
    assert stored_state(ctl, cloudlet) == CS.NORMAL_OPERATION
    info = ctl.info(cloudlet.key)
    assert info is not None
    assert info.maintenance_state == CS.CRM_ERROR

    # without failover the same CRM error, same revert
    del autoprov.seen[:]
    lines, err = await maintain(ctl, cloudlet, CS.MAINTENANCE_START_NO_FAILOVER)
    assert isinstance(err, FailedPrecondition)
    assert err.message == "CRM encountered some errors, aborting maintenance"
    assert lines == ["Starting CRM maintenance"]
    await settled(autoprov, CS.NORMAL_OPERATION)
    assert autoprov.seen == [CS.CRM_REQUESTED, CS.NORMAL_OPERATION]


async def test_silent_autoprov_times_out(
    setup: tuple[Controller, cloudlet_pb2.Cloudlet, AutoProv], ccrm: CrmByCcrm
) -> None:
    """No AutoProv report within the maintenance timeout (3 s here): the original's error,
    and, as in the original, the cloudlet is left in FailoverRequested."""
    ctl, cloudlet, autoprov = setup
    autoprov.answer = None
    lines, err = await maintain(ctl, cloudlet, CS.MAINTENANCE_START)
    assert isinstance(err, DeadlineExceeded)
    assert err.message == "timed out waiting for AutoProvInfo maintenance state"
    assert lines == ["Starting AutoProv failover"]
    assert stored_state(ctl, cloudlet) == CS.FAILOVER_REQUESTED
    assert not maintenance_requests(ccrm)
