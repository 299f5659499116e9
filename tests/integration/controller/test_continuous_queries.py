"""The edge-events continuous queries in a real InfluxDB (controller.md §1.2 step 15, §3.3):
created at start in the background with retries, replaced when their Settings change."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest
from edgeproto import settings_pb2

from edge_cloud.errors import Unavailable
from edge_cloud.influx import InfluxV1Writer, Point
from edge_cloud.localservers import ServerProcess, free_port
from services.controller._runtime import Runtime
from services.controller.api.settings import (
    DOWNSAMPLED_DB,
    EDGE_EVENTS_DB,
    create_continuous_queries,
    edge_events_queries,
    update_settings,
)
from services.controller.config import ControllerConfig
from tests.integration.controller.conftest import StartInstance

HOUR = 3600 * 10**9
DEFAULT_NAMES = [
    "device-metric-168h0m0s",
    "device-metric-24h0m0s",
    "device-metric-672h0m0s",
    "latency-metric-168h0m0s",
    "latency-metric-24h0m0s",
    "latency-metric-672h0m0s",
]


async def writer(influx: ServerProcess, database: str) -> InfluxV1Writer:
    return await InfluxV1Writer.connect(influx.client_url, database)


async def drop_both(influx: ServerProcess) -> None:
    for database in (EDGE_EVENTS_DB, DOWNSAMPLED_DB):
        w = await writer(influx, database)
        try:
            await w.drop_database()
        finally:
            await w.close()


@pytest.fixture
async def runtime(
    start_instance: StartInstance, influx_server: ServerProcess
) -> AsyncIterator[Runtime]:
    """A Controller runtime on the test's etcd, its InfluxDB the fixture's (databases fresh)."""
    await drop_both(influx_server)
    ctl = await start_instance()
    rt = Runtime(ControllerConfig(influx_addr=influx_server.client_url))
    rt.attach(ctl.engine)
    yield rt
    await drop_both(influx_server)


async def queries(influx: ServerProcess) -> dict[str, str]:
    w = await writer(influx, EDGE_EVENTS_DB)
    try:
        return {q["name"]: q["query"] for q in await w.continuous_queries()}
    finally:
        await w.close()


async def policies(influx: ServerProcess) -> dict[str, str]:
    w = await writer(influx, DOWNSAMPLED_DB)
    try:
        return {p["name"]: p["duration"] for p in await w.retention_policies() if not p["default"]}
    finally:
        await w.close()


def intervals(*pairs: tuple[int, int]) -> settings_pb2.Settings:
    update = settings_pb2.Settings(fields=["30"])
    for interval, retention in pairs:
        update.edge_events_metrics_continuous_queries_collection_intervals.add(
            interval=interval * HOUR, retention=retention * HOUR
        )
    return update


async def test_created_at_start_with_retries(
    runtime: Runtime, influx_server: ServerProcess
) -> None:
    real = runtime.config
    runtime.config = dataclasses.replace(real, influx_addr=f"http://127.0.0.1:{free_port()}")
    task = asyncio.create_task(create_continuous_queries(runtime, retry_delay=0.2))
    try:
        await asyncio.sleep(0.6)  # a few refused attempts: it keeps trying, it does not fail
        assert not task.done()
        runtime.config = real  # InfluxDB "comes up"
        async with asyncio.timeout(15):
            await task
    finally:
        task.cancel()
    found = await queries(influx_server)
    assert sorted(found) == DEFAULT_NAMES
    assert found["latency-metric-24h0m0s"] == (
        'CREATE CONTINUOUS QUERY "latency-metric-24h0m0s" ON edgeevents_metrics BEGIN SELECT '
        'sum("0s") AS "0s", sum("5ms") AS "5ms", sum("10ms") AS "10ms", sum("25ms") AS "25ms", '
        'sum("50ms") AS "50ms", sum("100ms") AS "100ms", min(min) AS min, max(max) AS max, '
        "sum(total) AS total, sum(total) / sum(numsamples) AS avg, "
        "sum(numsamples) AS numsamples "
        'INTO downsampled_metrics.downsampled_metrics_168h0m0s."latency-metric-24h0m0s" '
        'FROM edgeevents_metrics.autogen."latency-metric" GROUP BY time(1d), * END'
    )
    assert found["device-metric-672h0m0s"] == (
        'CREATE CONTINUOUS QUERY "device-metric-672h0m0s" ON edgeevents_metrics BEGIN SELECT '
        "sum(numsessions) AS numsessions "
        'INTO downsampled_metrics.downsampled_metrics_8064h0m0s."device-metric-672h0m0s" '
        'FROM edgeevents_metrics.autogen."device-metric" GROUP BY time(4w), * END'
    )
    assert await policies(influx_server) == {
        "downsampled_metrics_168h0m0s": "168h0m0s",
        "downsampled_metrics_672h0m0s": "672h0m0s",
        "downsampled_metrics_8064h0m0s": "8064h0m0s",
    }
    # a second start finds them all and changes nothing
    await asyncio.wait_for(create_continuous_queries(runtime, retry_delay=0.2), 15)
    assert sorted(await queries(influx_server)) == DEFAULT_NAMES


async def test_an_interval_change_replaces_the_queries(
    runtime: Runtime, influx_server: ServerProcess
) -> None:
    await asyncio.wait_for(create_continuous_queries(runtime, retry_delay=0.2), 15)
    # keep 24h (now 48h of retention), drop 168h and 672h, add 2h
    assert await update_settings(runtime, intervals((2, 168), (24, 48)))
    found = await queries(influx_server)
    assert sorted(found) == [
        "device-metric-24h0m0s",
        "device-metric-2h0m0s",
        "latency-metric-24h0m0s",
        "latency-metric-2h0m0s",
    ]
    assert "INTO downsampled_metrics.downsampled_metrics_48h0m0s." in found["device-metric-24h0m0s"]
    # the policies no query writes to any more are gone; 168h stays, 2h writes there
    assert await policies(influx_server) == {
        "downsampled_metrics_168h0m0s": "168h0m0s",
        "downsampled_metrics_48h0m0s": "48h0m0s",
    }
    stored = runtime.settings().edge_events_metrics_continuous_queries_collection_intervals
    assert [(c.interval // HOUR, c.retention // HOUR) for c in stored] == [(2, 168), (24, 48)]


async def test_influx_down_fails_the_update_and_keeps_the_settings(
    runtime: Runtime, influx_server: ServerProcess
) -> None:
    before = edge_events_queries(runtime.settings())
    real = runtime.config
    runtime.config = dataclasses.replace(real, influx_addr=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable) as caught:
        await update_settings(runtime, intervals((12, 0)))
    assert "is unreachable" in caught.value.message
    assert edge_events_queries(runtime.settings()) == before
    # the same list again changes nothing, so it needs no InfluxDB
    same = intervals((24, 168), (168, 672), (672, 8064))
    assert not await update_settings(runtime, same)
    runtime.config = real
    # retention 0: the aggregates go to the default policy, which is never dropped
    assert await update_settings(runtime, intervals((12, 0)))
    found = await queries(influx_server)
    assert (
        "INTO downsampled_metrics.downsampled_metrics_default." in found["latency-metric-12h0m0s"]
    )


async def test_the_query_aggregates_what_the_dme_writes(
    runtime: Runtime, influx_server: ServerProcess
) -> None:
    """Run one query's body over a closed window, as InfluxDB does at each interval."""
    assert await update_settings(runtime, intervals((2, 48)))
    [latency, _] = edge_events_queries(runtime.settings())
    source = await writer(influx_server, EDGE_EVENTS_DB)
    now = time.time_ns()
    window = now - now % (2 * HOUR) - 2 * HOUR  # the last complete 2h window
    try:
        tags = {"app": "a1", "cloudlet": "c1"}
        await source.write(
            [
                Point(
                    "latency-metric",
                    tags=tags,
                    fields={
                        "0s": 0,
                        "5ms": 2,
                        "10ms": 1,
                        "25ms": 0,
                        "50ms": 0,
                        "100ms": 0,
                        "min": 3.0,
                        "max": 9.0,
                        "total": 15.0,
                        "numsamples": 3,
                    },
                    time=window + 60 * 10**9,
                ),
                Point(
                    "latency-metric",
                    tags=tags,
                    fields={
                        "0s": 0,
                        "5ms": 1,
                        "10ms": 0,
                        "25ms": 0,
                        "50ms": 1,
                        "100ms": 0,
                        "min": 2.0,
                        "max": 40.0,
                        "total": 45.0,
                        "numsamples": 2,
                    },
                    time=window + 3600 * 10**9,
                ),
            ]
        )
        body = latency.body().replace(
            " GROUP BY", f" WHERE time >= {window} AND time < {window + 2 * HOUR} GROUP BY"
        )
        await source.query(body)
    finally:
        await source.close()
    dest = await writer(influx_server, DOWNSAMPLED_DB)
    try:
        [row] = await dest.query(
            'SELECT * FROM "downsampled_metrics_48h0m0s"."latency-metric-2h0m0s"'
        )
    finally:
        await dest.close()
    assert row["time"] == window
    assert (row["app"], row["cloudlet"]) == ("a1", "c1")
    assert (row["5ms"], row["10ms"], row["50ms"], row["numsamples"]) == (3, 1, 1, 5)
    assert (row["min"], row["max"], row["total"], row["avg"]) == (2.0, 40.0, 60.0, 12.0)
