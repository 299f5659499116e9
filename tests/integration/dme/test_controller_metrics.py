"""The Controller's side of DME statistics: Metric records as InfluxDB points (real InfluxDB)."""

from __future__ import annotations

import uuid

from edgeproto import metric_pb2

from edge_cloud.influx import InfluxV1Writer
from edge_cloud.localservers import ServerProcess
from services.controller._notify import MetricsQueue, metric_point


def dme_api_metric(app: str) -> metric_pb2.Metric:
    metric = metric_pb2.Metric(name="dme-api")
    metric.timestamp.seconds, metric.timestamp.nanos = 1_700_000_000, 123_000
    for name, val in (("apporg", "devorg"), ("app", app), ("appver", "1"), ("method", "X")):
        metric.tags.add(name=name, val=val)
    metric.tags.add(name="empty", val="")  # InfluxDB has no empty tags: left out
    metric.vals.add(name="reqs", ival=3)
    metric.vals.add(name="avg", dval=1.5)
    metric.vals.add(name="ok", bval=True)
    metric.vals.add(name="foundOperator", sval="dmuus")
    return metric


def test_metric_point_keeps_value_kinds_and_time() -> None:
    point = metric_point(dme_api_metric("a"))
    assert point is not None
    assert point.measurement == "dme-api"
    assert dict(point.fields) == {"reqs": 3, "avg": 1.5, "ok": True, "foundOperator": "dmuus"}
    assert dict(point.tags) == {"apporg": "devorg", "app": "a", "appver": "1", "method": "X"}
    assert point.time == 1_700_000_000_000_123_000
    assert metric_point(metric_pb2.Metric(name="nothing")) is None


async def test_metrics_queue_writes_points_to_their_database(influx_server: ServerProcess) -> None:
    database = f"test_{uuid.uuid4().hex}"
    queue = MetricsQueue(influx_server.client_url, flush_interval=0.05)
    point = metric_point(dme_api_metric("queued"))
    assert point is not None
    queue.add(database, point)
    await queue.close()  # writes what is queued
    assert (queue.written, len(queue)) == (1, 0)
    reader = await InfluxV1Writer.connect(influx_server.client_url, database)
    try:
        rows = await reader.query('SELECT * FROM "dme-api"')
        assert [(r["app"], r["reqs"], r["avg"], r["ok"]) for r in rows] == [
            ("queued", 3, 1.5, True)
        ]
        await reader.drop_database()
    finally:
        await reader.close()


async def test_metrics_queue_drops_above_its_limit_and_keeps_points_while_influx_is_down() -> None:
    queue = MetricsQueue("http://127.0.0.1:1", limit=2, retry=60)
    point = metric_point(dme_api_metric("down"))
    assert point is not None
    for _ in range(3):
        queue.add("db", point)
    assert (len(queue), queue.dropped) == (2, 1)
    await queue.flush()  # unreachable: kept, retried later
    assert (len(queue), queue.written) == (2, 0)
    await queue.close()
