"""Operations left behind by a controller that died or restarted reach a terminal state (§5.8)."""

from __future__ import annotations

import asyncio
import time

import grpc.aio
from edgeproto import cloudlet_pb2, cloudlet_pb2_grpc, common_pb2

from edge_cloud.objects import codec, keys
from edge_cloud.objects.durations import SECOND
from services.controller._progress import END, START, stream_key
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
from tests.integration.helpers import eventually

__all__ = ["ccrm", "harness"]


async def left_behind(
    ctl: Controller,
    cloudlet: cloudlet_pb2.Cloudlet,
    state: int,
    owner: str,
    *,
    started_ms: int | None = None,
) -> None:
    """What a controller that died mid-operation leaves: the object in a transient state,
    a progress stream with its start marker and a line, no end."""
    cloudlet.state = state  # type: ignore[assignment]
    cloudlet.delete_prepare = state == common_pb2.DELETE_PREPARE
    revision = await ctl.store.put(keys.object_store_key(cloudlet), codec.encode(cloudlet))
    await ctl.sync.wait_for_revision(revision)
    name = stream_key(cloudlet.key)
    op_id = f"{owner}#0123456789abcdef"
    entry_id = "*" if started_ms is None else f"{started_ms}-0"
    await ctl.redis.xadd(name, {START: "", "id": op_id, "modRev": str(revision)}, id=entry_id)
    await ctl.redis.xadd(name, {"message": "Creating cloudlet", "id": op_id})


async def test_a_dead_controllers_ccrm_operation_fails_cleanly(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ctl = await harness.start()
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org())
    await left_behind(ctl, cloudlet, common_pb2.CREATE_REQUESTED, "deadhost@10.0.0.9:55001")

    # a reader of the progress stream that joined before the recovery
    follow = asyncio.create_task(collect(ctl.streams.StreamCloudlet(cloudlet.key, timeout=30)))
    assert await ctl.recovery.run_once() == 0  # one pass could be a lease being renewed
    assert await ctl.recovery.run_once() == 1
    stored = ctl.cloudlet(cloudlet.key)
    assert stored is not None
    assert stored.state == common_pb2.CREATE_ERROR
    expected = (
        "controller deadhost@10.0.0.9:55001 is gone; operation abandoned in state CREATE_REQUESTED"
    )
    assert list(stored.errors) == [expected]
    async with asyncio.timeout(10):
        lines, err = await follow
    assert lines == ["Creating cloudlet"]
    assert err is not None
    assert err.message == f"UNKNOWN: {expected}"  # replayed: the original code is not kept

    # a terminal state: delete works without any override
    delete = cloudlet_pb2.Cloudlet(key=cloudlet.key)
    _, err = await collect(ctl.cloudlets.DeleteCloudlet(delete, timeout=30))
    assert err is None
    assert ctl.cloudlet(cloudlet.key) is None


async def test_own_operation_after_a_restart(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ctl = await harness.start(controller_id="ctlhost@127.0.0.1:55001")
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org())
    await left_behind(ctl, cloudlet, common_pb2.DELETE_PREPARE, "ctlhost@127.0.0.1:55001")
    assert await ctl.recovery.run_once() == 1  # ours, and not running here: at once
    stored = ctl.cloudlet(cloudlet.key)
    assert stored is not None
    assert stored.state == common_pb2.DELETE_ERROR
    assert not stored.delete_prepare
    assert "restarted during the operation" in stored.errors[0]


async def test_live_peers_and_crm_on_edge_work_are_left_alone(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    a = await harness.start()
    b = await harness.start()
    await put_features(a, features())
    org = unique_org()
    busy = new_cloudlet(org, name="busy")
    await left_behind(a, busy, common_pb2.CREATE_REQUESTED, a.services.controller_id)

    async def seen_by_b() -> None:
        assert b.cloudlet(busy.key) is not None

    await eventually(seen_by_b)
    assert await b.recovery.run_once() == 0
    assert await b.recovery.run_once() == 0  # A is alive: its operation is its own

    # CRM on the edge: the CRM may still finish within the create timeout ...
    edge = new_cloudlet(org, name="edge", crm_on_edge=True)
    ten_minutes_ago = int((time.time() - 600) * 1000)
    await left_behind(
        b, edge, common_pb2.CRM_INITOK, "deadhost@10.0.0.9:55001", started_ms=ten_minutes_ago
    )
    # a CRM re-reporting INIT on a long-created cloudlet: that create ended long ago
    again = new_cloudlet(org, name="again", crm_on_edge=True)
    dead = "deadhost@10.0.0.9:55001"
    await left_behind(b, again, common_pb2.CRM_INITOK, dead, started_ms=ten_minutes_ago)
    await b.redis.xadd(stream_key(again.key), {END: "", "id": f"{dead}#0123456789abcdef"})
    assert await b.recovery.run_once() == 0
    assert await b.recovery.run_once() == 1  # handed over, but still in time
    stored = b.cloudlet(edge.key)
    assert stored is not None
    assert stored.state == common_pb2.CRM_INITOK
    # ... and once the timeout (counted from the operation's start) is over, it fails
    await b.put_settings(create_cloudlet_timeout=1 * SECOND)
    assert await b.recovery.run_once() == 1
    stored = b.cloudlet(edge.key)
    assert stored is not None
    assert stored.state == common_pb2.CREATE_ERROR
    assert list(stored.errors) == [
        "Timed out; expected state CloudletStateReady but is CloudletStateNotPresent"
    ]
    assert b.cloudlet(again.key).state == common_pb2.CRM_INITOK  # type: ignore[union-attr]


async def test_a_controller_stopping_mid_operation(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ccrm.hang = 60
    a = await harness.start()
    b = await harness.start()
    await put_features(a, features())
    cloudlet = new_cloudlet(unique_org())
    async with grpc.aio.insecure_channel(a.addr) as channel:
        stub = cloudlet_pb2_grpc.CloudletApiStub(channel)
        create = asyncio.create_task(collect(stub.CreateCloudlet(cloudlet, timeout=90)))
        async with asyncio.timeout(10):
            await ccrm.started.wait()
        started = time.monotonic()
        await harness.stop(a)  # the in-flight call is cancelled with the server
        _, err = await create
    assert err is not None

    async def failed() -> None:
        stored = b.cloudlet(cloudlet.key)
        assert stored is not None
        assert stored.state == common_pb2.CREATE_ERROR

    await eventually(failed)
    assert time.monotonic() - started < 10
    _, err = await collect(b.streams.StreamCloudlet(cloudlet.key, timeout=10))
    assert err is not None
    assert err.message == "UNKNOWN: operation cancelled"


async def test_transient_states_need_the_override(
    harness: ControllerHarness, ccrm: FakeCcrm
) -> None:
    ctl = await harness.start()
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org())
    await left_behind(ctl, cloudlet, common_pb2.CREATING, ctl.services.controller_id)
    delete = cloudlet_pb2.Cloudlet(key=cloudlet.key)
    _, err = await collect(ctl.cloudlets.DeleteCloudlet(delete, timeout=30))
    assert err is not None
    assert err.message == "Cloudlet busy, cannot be deleted"
    delete.crm_override = common_pb2.IGNORE_CRM_AND_TRANSIENT_STATE
    lines, err = await collect(ctl.cloudlets.DeleteCloudlet(delete, timeout=30))
    assert err is None
    assert lines == ["Deleted Cloudlet successfully"]
    assert ccrm.requests == []
    assert ctl.cloudlet(cloudlet.key) is None
