"""Progress streams in Redis: the one-round-trip scripts that start a stream and end its
info part (issue 6) keep the rules of the WATCH/MULTI versions they replaced."""

from __future__ import annotations

import uuid
from typing import Any

from edge_cloud.redis import Redis
from services.controller._progress import END, ID, INFO_END, MESSAGE, MOD_REV, START, Progress


def name() -> str:
    return f"AppInstStreamKey: test-{uuid.uuid4().hex[:8]}"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def entries(redis: Redis, stream: str) -> list[dict[str, str]]:
    raw: Any = await redis.xrange(stream, "-", "+")
    return [{text(k): text(v) for k, v in fields.items()} for _, fields in raw]


async def test_start_writes_the_marker_then_the_buffered_lines(redis_client: Redis) -> None:
    progress = Progress(redis_client, "ctl-a")
    stream = name()
    await redis_client.xadd(stream, {MESSAGE: "left over from an old operation"})
    op = progress.new_stream(stream, None)
    await op.send("Found 1 potential cloudlets for deployment")
    await op.send("Chose cluster cl1")
    await op.start(42, subscribe=False)
    await op.send("Creating")
    assert await entries(redis_client, stream) == [
        {START: "", ID: op.op_id, MOD_REV: "42"},
        {MESSAGE: "Found 1 potential cloudlets for deployment", ID: op.op_id},
        {MESSAGE: "Chose cluster cl1", ID: op.op_id},
        {MESSAGE: "Creating", ID: op.op_id},
    ]
    start = await progress.start_marker(stream)
    assert start is not None
    assert (start.op_id, start.mod_rev) == (op.op_id, 42)


async def test_a_newer_operation_keeps_its_stream(redis_client: Redis) -> None:
    progress = Progress(redis_client, "ctl-a")
    stream = name()
    newer = progress.new_stream(stream, None)
    await newer.start(50, subscribe=False)
    older = progress.new_stream(stream, None)
    await older.send("never written")
    await older.start(49, subscribe=False)
    assert older.invalid
    await older.send("nor this")
    assert await entries(redis_client, stream) == [{START: "", ID: newer.op_id, MOD_REV: "50"}]

    same = progress.new_stream(stream, None)
    await same.start(50, subscribe=False)  # not newer: the stream is reset for it
    assert not same.invalid
    assert await entries(redis_client, stream) == [{START: "", ID: same.op_id, MOD_REV: "50"}]


async def test_a_terminal_report_ends_only_an_open_info_part(redis_client: Redis) -> None:
    progress = Progress(redis_client, "ctl-a")
    stream = name()
    await progress.publish_info(stream, b"report", terminal=True)  # no stream: nothing
    assert await redis_client.exists(stream) == 0

    op = progress.new_stream(stream, None)
    await op.start(7, subscribe=False)
    await progress.publish_info(stream, b"report", terminal=False)
    assert len(await entries(redis_client, stream)) == 1
    await progress.publish_info(stream, b"report", terminal=True)
    assert (await entries(redis_client, stream))[-1] == {INFO_END: "", ID: op.op_id}

    await op.stop(None)
    await progress.publish_info(stream, b"late report", terminal=True)
    assert (await entries(redis_client, stream))[-1] == {END: "", ID: op.op_id}


async def test_a_stream_without_a_start_marker_gets_no_info_end(redis_client: Redis) -> None:
    progress = Progress(redis_client, "ctl-a")
    stream = name()
    await redis_client.xadd(stream, {MESSAGE: "written by something else"})
    await progress.publish_info(stream, b"report", terminal=True)
    assert await entries(redis_client, stream) == [{MESSAGE: "written by something else"}]


async def test_reports_reach_subscribers(redis_client: Redis) -> None:
    progress = Progress(redis_client, "ctl-a")
    stream = name()
    subscription = await progress.subscribe(stream)
    try:
        await progress.publish_info(stream, b"report", terminal=True)
        got = await subscription.get(5.0)
        assert isinstance(got, bytes | str)
        assert text(got) == "report"
    finally:
        await subscription.close()
