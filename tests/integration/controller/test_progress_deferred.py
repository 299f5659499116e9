"""Deferred progress streams (issue 4): an operation that waits for nothing outside its call
(IGNORE_CRM) writes its start marker, its lines and its end in one Redis round trip, and the
stream reads back exactly as if each had been written on its own."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from edgeproto import common_pb2

from edge_cloud.errors import EdgeError, Unavailable
from edge_cloud.redis import Redis
from services.controller._progress import (
    END,
    ERROR,
    ID,
    MESSAGE,
    MOD_REV,
    START,
    Progress,
    stream_key,
)
from tests.integration.controller.cloudlet_harness import (
    ControllerHarness,
    collect,
    harness,
    unique_org,
)
from tests.integration.controller.clusterinst_harness import (
    InstCcrm,
    app_insts,
    ccrm,
    clusters,
    create_app,
    new_app_inst,
    new_cluster,
    put_flavor,
    ready_cloudlet,
)

__all__ = ["ccrm", "harness"]


def name() -> str:
    return f"AppInstStreamKey: deferred-{uuid.uuid4().hex[:8]}"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def entries(redis: Redis, stream: str) -> list[dict[str, str]]:
    raw: Any = await redis.xrange(stream, "-", "+")
    return [{text(k): text(v) for k, v in fields.items()} for _, fields in raw]


def count_commands(redis: Redis) -> list[str]:
    """Record the name of every command this real client sends from now on (scripts too)."""
    sent: list[str] = []
    real = redis.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        sent.append(text(args[0]))
        return await real(*args, **options)

    redis.execute_command = counted  # type: ignore[method-assign]
    return sent


async def test_a_deferred_stream_is_written_once_with_its_end(redis_client: Redis) -> None:
    progress = Progress(redis_client, "ctl-a")
    stream = name()
    await redis_client.xadd(stream, {MESSAGE: "left over from an old operation"})
    seen: list[str] = []
    op = progress.new_stream(stream, seen.append)
    await op.send("Chose cluster cl1")
    await op.start(42, subscribe=False, defer=True)
    await op.send("Created AppInst successfully")
    assert seen == ["Chose cluster cl1", "Created AppInst successfully"]  # the caller at once
    assert await entries(redis_client, stream) == [{MESSAGE: "left over from an old operation"}]
    await progress.new_stream(name(), None).start(1, subscribe=False)  # Redis knows the script
    sent = count_commands(redis_client)
    await op.finish()
    await op.stop(None)
    assert sent == ["EVALSHA"]  # start marker, both lines and the end: one round trip
    assert await entries(redis_client, stream) == [
        {START: "", ID: op.op_id, MOD_REV: "42"},
        {MESSAGE: "Chose cluster cl1", ID: op.op_id},
        {MESSAGE: "Created AppInst successfully", ID: op.op_id},
        {END: "", ID: op.op_id},
    ]
    lines: list[str] = []

    async def collect(line: str) -> None:
        lines.append(line)

    await progress.follow(stream, collect, read_timeout=1.0)
    assert lines == ["Chose cluster cl1", "Created AppInst successfully"]


async def test_a_failed_deferred_operation_ends_with_its_error(redis_client: Redis) -> None:
    progress = Progress(redis_client, "ctl-a")
    stream = name()
    op = progress.new_stream(stream, None)
    await op.start(7, subscribe=False, defer=True)
    undo = op.copy()
    await undo.send("Deleting AppInst due to failure")
    await undo.stop(None)  # a copy never ends the stream
    await op.stop(EdgeError("no resources"))
    assert await entries(redis_client, stream) == [
        {START: "", ID: op.op_id, MOD_REV: "7"},
        {MESSAGE: "Deleting AppInst due to failure", ID: op.op_id},
        {ERROR: "no resources", ID: op.op_id},
    ]


async def test_a_deferred_stream_leaves_a_newer_operations_stream(redis_client: Redis) -> None:
    progress = Progress(redis_client, "ctl-a")
    stream = name()
    newer = progress.new_stream(stream, None)
    await newer.start(50, subscribe=False)
    older = progress.new_stream(stream, None)
    await older.start(49, subscribe=False, defer=True)
    await older.send("never written")
    await older.finish()
    assert older.invalid
    await older.stop(None, cleanup=True)
    assert await entries(redis_client, stream) == [{START: "", ID: newer.op_id, MOD_REV: "50"}]


async def test_a_deferred_stream_removed_after_success_when_asked(redis_client: Redis) -> None:
    progress = Progress(redis_client, "ctl-a")
    stream = name()
    op = progress.new_stream(stream, None)
    await op.start(9, subscribe=False, defer=True)
    await op.finish()
    await op.stop(None, cleanup=True)
    assert await redis_client.exists(stream) == 0


async def test_an_unreachable_redis_fails_finish_as_it_failed_start(
    redis_client: Redis,
) -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1.0)  # nothing listens
    try:
        progress = Progress(dead, "ctl-a")
        op = progress.new_stream(name(), None)
        await op.start(3, subscribe=False, defer=True)
        with pytest.raises(Unavailable, match="cannot start progress stream"):
            await op.finish()
        await op.stop(Unavailable("redis down"))  # nothing more is tried
        assert not op.started
    finally:
        await dead.aclose()


async def test_defer_is_ignored_for_an_operation_that_subscribes(redis_client: Redis) -> None:
    progress = Progress(redis_client, "ctl-a")
    stream = name()
    op = progress.new_stream(stream, None)
    await op.start(11, subscribe=True, defer=True)
    try:
        assert not op.deferred
        assert await entries(redis_client, stream) == [{START: "", ID: op.op_id, MOD_REV: "11"}]
    finally:
        await op.stop(None)
    assert (await entries(redis_client, stream))[-1] == {END: "", ID: op.op_id}


async def test_an_ignore_crm_create_streams_as_before(
    harness: ControllerHarness, ccrm: InstCcrm
) -> None:
    ctl = await harness.start()
    org = unique_org()
    cloudlet = await ready_cloudlet(ctl, org)
    await put_flavor(ctl)
    cluster = new_cluster(org, cloudlet)
    _, err = await collect(clusters(ctl).CreateClusterInst(cluster))
    assert err is None, err
    app = await create_app(ctl, org)
    inst = new_app_inst(org, app, cluster=cluster.key, crm_override=common_pb2.IGNORE_CRM)
    lines, err = await collect(app_insts(ctl).CreateAppInst(inst))
    assert err is None, err
    assert lines == ["Created AppInst successfully"]
    assert not ccrm.app_requests  # nothing asked of the CCRM
    stream = stream_key(inst.key)
    written = await entries(ctl.redis, stream)
    assert [{k: v for k, v in e.items() if k != ID} for e in written[1:]] == [
        {MESSAGE: "Created AppInst successfully"},
        {END: ""},
    ]
    assert START in written[0]
    assert len({e[ID] for e in written}) == 1  # one operation's entries
    replayed: list[str] = []

    async def collect_line(line: str) -> None:
        replayed.append(line)

    await ctl.runtime.tracked.progress.follow(stream, collect_line, read_timeout=1.0)
    assert replayed == lines
