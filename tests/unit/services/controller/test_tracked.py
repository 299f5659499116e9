"""Tracked-state rules without servers: overrides, delete states, waiting for reports (§5)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from distributed_match_engine import appcommon_pb2
from edgeproto import cloudlet_pb2, common_pb2

from edge_cloud.errors import DeadlineExceeded, FailedPrecondition, PlatformPermanentError
from edge_cloud.objects import codec
from services.controller._cloudletinfo import state_name
from services.controller._progress import Subscription
from services.controller._tracked import (
    CallContext,
    InfoWait,
    Sink,
    streamed,
    validate_delete_state,
    wait_for_info,
)

CS = appcommon_pb2
WAIT = InfoWait(
    target=CS.CLOUDLET_STATE_READY,
    error=CS.CLOUDLET_STATE_ERRORS,
    transitions=frozenset({CS.CLOUDLET_STATE_UPGRADE}),
    state_name=state_name,
    show="ShowCloudlet",
)


def test_override_is_taken_off_the_object() -> None:
    cctx = CallContext()
    obj = cloudlet_pb2.Cloudlet(crm_override=common_pb2.IGNORE_CRM)
    cctx.take_override(obj)
    assert obj.crm_override == common_pb2.NO_OVERRIDE
    assert cctx.ignore_crm
    assert not cctx.ignore_transient
    assert not cctx.ignore_crm_errors
    cctx.take_override(cloudlet_pb2.Cloudlet())  # a default override keeps the current one
    assert cctx.override == common_pb2.IGNORE_CRM
    both = CallContext(override=common_pb2.IGNORE_CRM_AND_TRANSIENT_STATE)
    assert both.ignore_crm
    assert both.ignore_transient


def test_delete_states() -> None:
    cctx = CallContext()
    with pytest.raises(FailedPrecondition, match=r"^Cloudlet busy, already under deletion$"):
        validate_delete_state(cctx, "Cloudlet", common_pb2.DELETE_PREPARE)
    with pytest.raises(FailedPrecondition, match=r"^ClusterInst busy, cannot be deleted$"):
        validate_delete_state(cctx, "ClusterInst", common_pb2.CREATING)
    for ok in (common_pb2.READY, common_pb2.CREATE_ERROR, common_pb2.DELETE_ERROR):
        validate_delete_state(cctx, "Cloudlet", ok)
    validate_delete_state(CallContext(undo=True), "Cloudlet", common_pb2.DELETING)
    transient = CallContext(override=common_pb2.IGNORE_TRANSIENT_STATE)
    validate_delete_state(transient, "Cloudlet", common_pb2.CREATING)


class FakePubSub:
    """What `Subscription` reads: redis-py's PubSub `get_message`, fed from a list."""

    def __init__(self, payloads: Sequence[bytes | None]) -> None:
        self.payloads = list(payloads)

    async def get_message(self, ignore_subscribe_messages: bool, timeout: float) -> Any:  # noqa: ASYNC109
        if not self.payloads:
            await asyncio.sleep(timeout)
            return None
        payload = self.payloads.pop(0)
        if payload is None:
            raise ConnectionError("connection lost")
        return {"type": "message", "data": payload}

    async def aclose(self) -> None:
        pass


def info(state: int, *msgs: str, errors: Sequence[str] = ()) -> bytes:
    report = cloudlet_pb2.CloudletInfo(state=state, errors=list(errors))  # type: ignore[arg-type]
    report.status.msgs.extend(msgs)
    return codec.encode(report)


async def run_wait(
    payloads: Sequence[bytes | None], *, current: int = 0, within: float = 2.0
) -> list[str]:
    lines: list[str] = []

    async def send(line: str) -> None:
        lines.append(line)

    await wait_for_info(
        WAIT,
        current=current,
        subscription=Subscription(FakePubSub(payloads), "chan"),
        decode=lambda data: codec.decode(cloudlet_pb2.CloudletInfo, data),
        send=send,
        success_msg="Created Cloudlet successfully",
        timeout=within,
    )
    return lines


async def test_wait_forwards_new_status_lines_until_ready() -> None:
    lines = await run_wait(
        [
            info(CS.CLOUDLET_STATE_INIT, "a"),
            info(CS.CLOUDLET_STATE_INIT, "a", "b"),
            info(CS.CLOUDLET_STATE_READY, "a", "b", "c"),
        ]
    )
    assert lines == ["a", "b", "c", "Created Cloudlet successfully"]


async def test_wait_done_at_once_when_already_there() -> None:
    assert await run_wait([], current=CS.CLOUDLET_STATE_READY) == ["Created Cloudlet successfully"]


async def test_wait_error_states() -> None:
    with pytest.raises(PlatformPermanentError) as one:
        await run_wait([info(CS.CLOUDLET_STATE_ERRORS, errors=["disk full"])])
    assert one.value.message == "disk full"
    with pytest.raises(PlatformPermanentError) as two:
        await run_wait([info(CS.CLOUDLET_STATE_ERRORS, errors=["a", "b"])])
    assert two.value.message == "Encountered failures: a, b"


async def test_wait_timeouts() -> None:
    # still busy: success, the worker goes on (no undo)
    lines = await run_wait([info(CS.CLOUDLET_STATE_UPGRADE)], within=0.2)
    assert lines == [
        "Timed out while work still in progress state CloudletStateUpgrade. Please use "
        "ShowCloudlet to check current status"
    ]
    with pytest.raises(DeadlineExceeded) as caught:
        await run_wait([info(CS.CLOUDLET_STATE_INIT)], within=0.2)
    assert caught.value.message == (
        "Timed out; expected state CloudletStateReady but is CloudletStateInit"
    )


async def test_wait_lost_channel_is_success_with_a_hint() -> None:
    lines = await run_wait([None])
    assert lines == [
        "Failed to get progress messages. Please use ShowCloudlet to check current status"
    ]


async def test_streamed_yields_lines_then_raises() -> None:
    async def work(sink: Sink) -> None:
        sink("one")
        await asyncio.sleep(0)
        sink("two")
        raise FailedPrecondition("boom")

    got: list[str] = []

    async def consume() -> None:
        async for result in streamed(work):
            got.append(result.message)

    with pytest.raises(FailedPrecondition, match="boom"):
        await consume()
    assert got == ["one", "two"]


async def test_streamed_cancels_work_when_the_caller_goes() -> None:
    cancelled = asyncio.Event()

    async def work(sink: Sink) -> None:
        sink("started")
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()

    stream = streamed(work)
    first = await anext(stream)
    assert first.message == "started"
    await stream.aclose()
    assert cancelled.is_set()
