"""InfluxV1Writer against a real InfluxDB 1.x: write points, query them back."""

from __future__ import annotations

import datetime

import pytest

from edge_cloud import localservers
from edge_cloud.errors import InvalidArgument, Unavailable
from edge_cloud.influx import InfluxV1Writer, MetricsWriter, Point

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
T0_NS = int(T0.timestamp()) * 10**9


async def test_write_then_query(influx_db: InfluxV1Writer) -> None:
    writer: MetricsWriter = influx_db
    await writer.write(
        [
            Point("appinst-cpu", {"cpu": 0.5}, {"app": "a", "cloudlet": "c1"}, T0),
            Point("appinst-cpu", {"cpu": 0.75}, {"app": "a", "cloudlet": "c1"}, T0_NS + 10**9),
            Point("appinst-cpu", {"cpu": 1.5, "note": "hot"}, {"app": "b", "cloudlet": "c2"}, T0),
        ]
    )
    rows = await writer.query(
        'SELECT "cpu" FROM "appinst-cpu" WHERE "app" = $app ORDER BY time', params={"app": "a"}
    )
    assert [(r["time"], r["cpu"]) for r in rows] == [(T0_NS, 0.5), (T0_NS + 10**9, 0.75)]

    grouped = await writer.query('SELECT max("cpu") FROM "appinst-cpu" GROUP BY "app"')
    assert sorted((r["app"], r["max"]) for r in grouped) == [("a", 0.75), ("b", 1.5)]


async def test_empty_write_is_a_no_op(influx_db: InfluxV1Writer) -> None:
    await influx_db.write([])
    assert await influx_db.query('SELECT * FROM "nothing"') == []


async def test_rejections_are_invalid_argument(influx_db: InfluxV1Writer) -> None:
    await influx_db.write([Point("m", {"v": 1.0}, time=T0)])
    with pytest.raises(InvalidArgument, match="refused"):
        await influx_db.write([Point("m", {"v": "now a string"}, time=T0_NS + 1)])
    with pytest.raises(InvalidArgument):
        await influx_db.query("SELEKT nonsense")
    with pytest.raises(InvalidArgument, match="naive"):
        await influx_db.write([Point("m", {"v": 1.0}, time=datetime.datetime(2026, 1, 1))])


async def test_dead_port_is_unavailable_in_one_line() -> None:
    port = localservers.free_port()
    with pytest.raises(Unavailable) as caught:
        await InfluxV1Writer.connect(f"http://127.0.0.1:{port}", "db", timeout=2)
    message = str(caught.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message
    assert "unreachable" in message
