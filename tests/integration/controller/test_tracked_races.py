"""The Controller's wait for a worker's reports, against a real Redis channel (issue 6).

Races a fast CRM exposed: its reports can all be published before the Controller subscribes
(the stored state must end the wait), an on-edge cloudlet update must not end on the READY
its CloudletInfo had before the CRM started, and a CRM restart starts its status lines over
(its error line must still reach the caller).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from distributed_match_engine import appcommon_pb2
from edgeproto import appinst_pb2, cloudlet_pb2, common_pb2
from google.protobuf.message import Message

from edge_cloud.errors import DeadlineExceeded, PlatformPermanentError
from edge_cloud.objects import codec
from edge_cloud.redis import Redis
from services.controller._progress import Progress, StatusLines, Subscription
from services.controller._tracked import InfoWait, wait_for_info

TS = common_pb2
CS = appcommon_pb2

pytestmark = pytest.mark.timeout(30)

CREATE_WAIT = InfoWait(
    target=TS.READY,
    error=TS.CREATE_ERROR,
    transitions=frozenset({TS.CREATING}),
    state_name=lambda s: TS.TrackedState.Name(s),  # type: ignore[arg-type]
    show="ShowAppInst",
)
DELETE_WAIT = InfoWait(
    target=TS.NOT_PRESENT,
    error=TS.DELETE_ERROR,
    transitions=frozenset({TS.DELETING}),
    state_name=lambda s: TS.TrackedState.Name(s),  # type: ignore[arg-type]
    show="ShowAppInst",
)
UPGRADE_WAIT = InfoWait(
    target=CS.CLOUDLET_STATE_READY,
    error=CS.CLOUDLET_STATE_ERRORS,
    transitions=frozenset({CS.CLOUDLET_STATE_UPGRADE}),
    state_name=lambda s: CS.CloudletState.Name(s),  # type: ignore[arg-type]
    show="ShowCloudlet",
    after=CS.CLOUDLET_STATE_UPGRADE,
)


def channel() -> str:
    return f"AppInstStreamKey: race-{uuid.uuid4().hex[:8]}"


def app_inst_info(state: int, msgs: Sequence[str], errors: Sequence[str] = ()) -> bytes:
    info = appinst_pb2.AppInstInfo(state=state, errors=list(errors))  # type: ignore[arg-type]
    info.status.msgs.extend(msgs)
    return codec.encode(info)


def cloudlet_info(state: int, msgs: Sequence[str]) -> bytes:
    info = cloudlet_pb2.CloudletInfo(state=state)  # type: ignore[arg-type]
    info.status.msgs.extend(msgs)
    return codec.encode(info)


def decode_app_inst(data: bytes) -> Message:
    return codec.decode(appinst_pb2.AppInstInfo, data)


def decode_cloudlet(data: bytes) -> Message:
    return codec.decode(cloudlet_pb2.CloudletInfo, data)


class Stored:
    """What etcd holds for the object in each test, as successive reads see it."""

    def __init__(self, *states: int) -> None:
        self.states = list(states)
        self.reads = 0

    async def read(self) -> tuple[int, Sequence[str]]:
        self.reads += 1
        state = self.states[0] if len(self.states) == 1 else self.states.pop(0)
        return state, ["worker failed"] if state == TS.CREATE_ERROR else []


@pytest.fixture
async def subscription(redis_client: Redis) -> AsyncIterator[tuple[str, Subscription]]:
    name = channel()
    sub = await Progress(redis_client, "ctl-a").subscribe(name)
    try:
        yield name, sub
    finally:
        await sub.close()


async def wait(
    sub: Subscription,
    spec: InfoWait,
    current: int,
    decode: Callable[[bytes], Message],
    *,
    lines: list[str] | None = None,
    success_msg: str = "",
    timeout: float = 10,  # noqa: ASYNC109 - passed on to wait_for_info
    refresh: Callable[[], Awaitable[tuple[int, Sequence[str]]]] | None = None,
) -> None:
    """wait_for_info on the subscription, its status lines appended to lines."""

    async def send(line: str) -> None:
        if lines is not None:
            lines.append(line)

    await wait_for_info(
        spec,
        current=current,
        subscription=sub,
        decode=decode,
        send=send,
        success_msg=success_msg,
        timeout=timeout,
        refresh=refresh,
    )


async def test_a_worker_done_before_the_subscription_ends_the_wait_at_once(
    subscription: tuple[str, Subscription],
) -> None:
    _, sub = subscription
    lines: list[str] = []
    stored = Stored(TS.READY)  # the CRM's READY was merged (and published) before we listened
    started = time.monotonic()
    await wait(
        sub,
        CREATE_WAIT,
        TS.CREATE_REQUESTED,
        decode_app_inst,
        lines=lines,
        success_msg="Created AppInst successfully",
        refresh=stored.read,
    )
    assert time.monotonic() - started < 1.0
    assert lines == ["Created AppInst successfully"]
    assert stored.reads == 1


async def test_a_quiet_channel_rereads_the_stored_state(
    subscription: tuple[str, Subscription],
) -> None:
    _, sub = subscription
    stored = Stored(TS.CREATING, TS.CREATE_ERROR)  # the error report was missed as well
    started = time.monotonic()
    with pytest.raises(PlatformPermanentError, match=r"^worker failed$"):
        await wait(sub, CREATE_WAIT, TS.CREATE_REQUESTED, decode_app_inst, refresh=stored.read)
    assert 0.9 < time.monotonic() - started < 3.0  # one quiet second, then the re-read
    assert stored.reads == 2


async def test_without_refresh_a_missed_report_runs_into_the_deadline(
    subscription: tuple[str, Subscription],
) -> None:
    _, sub = subscription
    with pytest.raises(DeadlineExceeded, match="expected state READY but is CREATE_REQUESTED"):
        await wait(sub, CREATE_WAIT, TS.CREATE_REQUESTED, decode_app_inst, timeout=0.3)


async def test_an_update_ignores_the_ready_from_before_the_crm_started(
    redis_client: Redis, subscription: tuple[str, Subscription]
) -> None:
    name, sub = subscription
    lines: list[str] = []

    async def crm() -> None:
        # a resource snapshot report from before the update, then the update itself
        await redis_client.publish(name, cloudlet_info(CS.CLOUDLET_STATE_READY, []))
        await redis_client.publish(
            name, cloudlet_info(CS.CLOUDLET_STATE_UPGRADE, ["CloudletStateUpgrade"])
        )
        await redis_client.publish(
            name,
            cloudlet_info(CS.CLOUDLET_STATE_READY, ["CloudletStateUpgrade", "Updating envvar"]),
        )

    stored = Stored(CS.CLOUDLET_STATE_UNKNOWN)  # the Cloudlet still UPDATE_REQUESTED
    await asyncio.gather(
        wait(
            sub,
            UPGRADE_WAIT,
            CS.CLOUDLET_STATE_UNKNOWN,
            decode_cloudlet,
            lines=lines,
            success_msg="Cloudlet updated successfully",
            refresh=stored.read,
        ),
        crm(),
    )
    assert lines == ["CloudletStateUpgrade", "Updating envvar", "Cloudlet updated successfully"]


async def test_the_error_line_after_a_crm_restart_reaches_the_caller(
    redis_client: Redis, subscription: tuple[str, Subscription]
) -> None:
    name, sub = subscription
    lines: list[str] = []

    async def crm() -> None:
        before = ["Deleting", "Deleting App Inst", "Deleting App Inst, step 1"]
        for n in range(1, len(before) + 1):
            await redis_client.publish(name, app_inst_info(TS.DELETING, before[:n]))
        # killed and restarted: its status starts over with the error state's own line
        await redis_client.publish(
            name, app_inst_info(TS.DELETE_ERROR, ["DeleteError"], ["inconsistent state"])
        )

    with pytest.raises(PlatformPermanentError, match=r"^inconsistent state$"):
        await asyncio.gather(
            wait(
                sub,
                DELETE_WAIT,
                TS.DELETE_REQUESTED,
                decode_app_inst,
                lines=lines,
                refresh=Stored(TS.DELETE_REQUESTED).read,
            ),
            crm(),
        )
    assert lines == ["Deleting", "Deleting App Inst", "Deleting App Inst, step 1", "DeleteError"]


def test_status_lines_are_new_by_content() -> None:
    lines = StatusLines()
    assert lines.new(["a"]) == ["a"]
    assert lines.new(["a", "b"]) == ["b"]
    assert lines.new(["a", "b"]) == []  # the same report again
    assert lines.new(["a"]) == []  # a shorter repeat of the same start
    assert lines.new(["a", "b", "c"]) == ["c"]  # the longer one was kept
    assert lines.new(["x"]) == ["x"]  # a restarted status: all of it is new
    assert lines.new([]) == []
    assert lines.new(["x", "y"]) == ["y"]
