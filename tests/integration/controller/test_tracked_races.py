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
from collections.abc import Sequence

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


async def subscribed(redis: Redis) -> tuple[str, Subscription]:
    name = channel()
    return name, await Progress(redis, "ctl-a").subscribe(name)


async def test_a_worker_done_before_the_subscription_ends_the_wait_at_once(
    redis_client: Redis,
) -> None:
    _, sub = await subscribed(redis_client)
    lines: list[str] = []

    async def send(line: str) -> None:
        lines.append(line)

    stored = Stored(TS.READY)  # the CRM's READY was merged (and published) before we listened
    started = time.monotonic()
    try:
        await wait_for_info(
            CREATE_WAIT,
            current=TS.CREATE_REQUESTED,
            subscription=sub,
            decode=decode_app_inst,
            send=send,
            success_msg="Created AppInst successfully",
            timeout=10,
            refresh=stored.read,
        )
    finally:
        await sub.close()
    assert time.monotonic() - started < 1.0
    assert lines == ["Created AppInst successfully"]
    assert stored.reads == 1


async def test_a_quiet_channel_rereads_the_stored_state(redis_client: Redis) -> None:
    _, sub = await subscribed(redis_client)
    stored = Stored(TS.CREATING, TS.CREATE_ERROR)  # the error report was missed as well
    started = time.monotonic()
    try:
        with pytest.raises(PlatformPermanentError, match=r"^worker failed$"):
            await wait_for_info(
                CREATE_WAIT,
                current=TS.CREATE_REQUESTED,
                subscription=sub,
                decode=decode_app_inst,
                send=lambda _: asyncio.sleep(0),
                success_msg="",
                timeout=10,
                refresh=stored.read,
            )
    finally:
        await sub.close()
    assert 0.9 < time.monotonic() - started < 3.0  # one quiet second, then the re-read
    assert stored.reads == 2


async def test_without_refresh_a_missed_report_runs_into_the_deadline(
    redis_client: Redis,
) -> None:
    _, sub = await subscribed(redis_client)
    try:
        with pytest.raises(DeadlineExceeded, match="expected state READY but is CREATE_REQUESTED"):
            await wait_for_info(
                CREATE_WAIT,
                current=TS.CREATE_REQUESTED,
                subscription=sub,
                decode=decode_app_inst,
                send=lambda _: asyncio.sleep(0),
                success_msg="",
                timeout=0.3,
            )
    finally:
        await sub.close()


async def test_an_update_ignores_the_ready_from_before_the_crm_started(
    redis_client: Redis,
) -> None:
    name, sub = await subscribed(redis_client)
    lines: list[str] = []

    async def send(line: str) -> None:
        lines.append(line)

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
    try:
        await asyncio.gather(
            wait_for_info(
                UPGRADE_WAIT,
                current=CS.CLOUDLET_STATE_UNKNOWN,
                subscription=sub,
                decode=decode_cloudlet,
                send=send,
                success_msg="Cloudlet updated successfully",
                timeout=10,
                refresh=stored.read,
            ),
            crm(),
        )
    finally:
        await sub.close()
    assert lines == ["CloudletStateUpgrade", "Updating envvar", "Cloudlet updated successfully"]


async def test_the_error_line_after_a_crm_restart_reaches_the_caller(
    redis_client: Redis,
) -> None:
    name, sub = await subscribed(redis_client)
    lines: list[str] = []

    async def send(line: str) -> None:
        lines.append(line)

    async def crm() -> None:
        before = ["Deleting", "Deleting App Inst", "Deleting App Inst, step 1"]
        for n in range(1, len(before) + 1):
            await redis_client.publish(name, app_inst_info(TS.DELETING, before[:n]))
        # killed and restarted: its status starts over with the error state's own line
        await redis_client.publish(
            name, app_inst_info(TS.DELETE_ERROR, ["DeleteError"], ["inconsistent state"])
        )

    try:
        with pytest.raises(PlatformPermanentError, match=r"^inconsistent state$"):
            await asyncio.gather(
                wait_for_info(
                    DELETE_WAIT,
                    current=TS.DELETE_REQUESTED,
                    subscription=sub,
                    decode=decode_app_inst,
                    send=send,
                    success_msg="",
                    timeout=10,
                    refresh=Stored(TS.DELETE_REQUESTED).read,
                ),
                crm(),
            )
    finally:
        await sub.close()
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
