"""The DME's upstream records: dme-api and edge-events Metrics, AppInstClient, Device,
auto-provisioning counts and the report clock (dme.md §2.2.2, §2.10, §2.12)."""

from __future__ import annotations

import math
import statistics

import pytest
from distributed_match_engine import loc_pb2
from edgeproto import (
    appinstclient_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    device_pb2,
    metric_pb2,
    settings_pb2,
)
from google.protobuf.message import Message

from edge_cloud.notify import NotifyClient
from services.dme._autoprov import AutoProvStats, ZoneKey
from services.dme._clients import MONITOR_UNIQUE_ID_TYPE, AppInstClients, Devices, matches
from services.dme._edgeevents import latency_statistics
from services.dme._reporter import Reporter
from services.dme._stats import (
    ApiStats,
    DeviceInfo,
    EdgeEventStats,
    EdgeStatKey,
    RollingStats,
    StatKey,
    location_tile,
)

APP = ("devorg", "app", "1.0")


def vals(metric: metric_pb2.Metric) -> dict[str, object]:
    return {v.name: getattr(v, v.WhichOneof("value") or "sval") for v in metric.vals}


def tags(metric: metric_pb2.Metric) -> dict[str, str]:
    return {t.name: t.val for t in metric.tags}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- dme-api ---------------------------------------------------------------------------------


def test_dme_api_metrics_are_running_totals_of_changed_keys() -> None:
    stats = ApiStats()
    found = StatKey("FindCloudlet", APP, ("inst1", "devorg"), ("dmuus", "de"), "dmuus")
    stats.record(found, 0.003, failed=False)
    stats.record(found, 0.030, failed=False)
    stats.record(StatKey("RegisterClient", APP), 0.001, failed=True)
    (first, second) = stats.metrics(1700000000.25, "dme1")
    assert first.name == "dme-api"
    assert (first.timestamp.seconds, first.timestamp.nanos) == (1700000000, 250000000)
    assert tags(first) == {
        "apporg": "devorg",
        "app": "app",
        "appver": "1.0",
        "dmeId": "dme1",
        "method": "FindCloudlet",
    }
    assert vals(first) == {
        "reqs": 2,
        "errs": 0,
        "foundappinstname": "inst1",
        "foundappinstorg": "devorg",
        "foundzone": "de",
        "foundzoneorg": "dmuus",
        "foundOperator": "dmuus",
        "0s": 1,
        "5ms": 0,
        "10ms": 0,
        "25ms": 1,
        "50ms": 0,
        "100ms": 0,
    }
    assert (vals(second)["reqs"], vals(second)["errs"]) == (1, 1)
    assert stats.metrics(1700000001, "dme1") == []
    stats.record(found, 0.2, failed=False)
    (again,) = stats.metrics(1700000002, "dme1")
    assert (vals(again)["reqs"], vals(again)["100ms"]) == (3, 1)  # cumulative, as the original


# --- edge-events -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon", "tile"),
    [
        (52.52, 13.40, "13.384837,52.509722_13.402803,52.527810_2"),
        (-33.86, 151.21, "151.203737,-33.842815_151.221703,-33.860903_2"),
        (40.71, -74.0, "-73.984908,40.698200_-74.002875,40.716288_2"),
        (0.0, 0.0, "0.000000,0.000000_0.017966,0.018088_2"),
    ],
)
def test_location_tile_matches_the_original_grid(lat: float, lon: float, tile: str) -> None:
    # e.g. Berlin: 52.52 * 110.57 km = 5807.1 km -> tile 2903 of 2 km, 5806 km = 52.509722°;
    # 13.40 * 111.32 km = 1491.7 km -> tile 745, 1490 km = 13.384837°
    assert location_tile(loc_pb2.Loc(latitude=lat, longitude=lon), 2) == tile


def test_location_tile_rejects_bad_input() -> None:
    assert location_tile(loc_pb2.Loc(latitude=91, longitude=0), 2) == ""
    assert location_tile(loc_pb2.Loc(latitude=1, longitude=1), 0) == ""


def test_rolling_stats_agree_with_the_batch_statistics() -> None:
    samples = [12.5, -1.0, 30.0, 7.25, 18.0, 18.0]
    rolling = RollingStats()
    for value in samples:
        rolling.add(value)
    batch = latency_statistics(samples, now=0)
    valid = [v for v in samples if v >= 0]
    assert rolling.num_samples == batch.num_samples == 5
    assert (rolling.min, rolling.max) == (batch.min, batch.max) == (7.25, 30.0)
    assert math.isclose(rolling.avg, statistics.mean(valid))
    assert math.isclose(rolling.variance, statistics.variance(valid))
    assert math.isclose(rolling.std_dev, batch.std_dev)


def test_edge_event_metrics_are_reset_after_each_report() -> None:
    stats = EdgeEventStats(("dmuus", "dme-cloudlet"))
    key = EdgeStatKey(
        ("inst1", "devorg"),
        APP,
        ("dmuus", "berlin", ""),
        "tile",
        DeviceInfo("dmuus", "5G", "Android", "Pixel", 3),
    )
    stats.record_device(key)
    stats.record_device(key)
    stats.record_latency(key, [10.0, 20.0, -5.0, 100.0])
    stats.record_custom(key, "fps", [30.0, 60.0])
    stats.record_latency(key, [-1.0])  # nothing valid: no record of its own
    metrics = {m.name: m for m in stats.metrics(100.0)}
    assert set(metrics) == {"latency-metric", "device-metric", "custom-metric"}
    latency = metrics["latency-metric"]
    assert tags(latency) == {
        "dmecloudlet": "dme-cloudlet",
        "dmecloudletorg": "dmuus",
        "appinst": "inst1",
        "appinstorg": "devorg",
        "app": "app",
        "apporg": "devorg",
        "appver": "1.0",
        "cloudlet": "berlin",
        "cloudletorg": "dmuus",
        "cloudletfedorg": "",
        "locationtile": "tile",
        "devicecarrier": "dmuus",
        "datanetworktype": "5G",
        "deviceos": "Android",
        "devicemodel": "Pixel",
    }
    v = vals(latency)
    assert (v["numsamples"], v["min"], v["max"], v["total"]) == (3, 10.0, 100.0, 130.0)
    assert (v["5ms"], v["10ms"], v["100ms"], v["signalstrength"]) == (0, 2, 1, 3)
    assert vals(metrics["device-metric"])["numsessions"] == 2
    custom = metrics["custom-metric"]
    assert tags(custom)["statname"] == "fps"
    assert (vals(custom)["count"], vals(custom)["avg"]) == (1, 45.0)
    assert stats.metrics(200.0) == []


# --- AppInstClient and Device ----------------------------------------------------------------


def client_request(**fields: object) -> appinstclient_pb2.AppInstClientKey:
    return appinstclient_pb2.AppInstClientKey(**fields)  # type: ignore[arg-type]


def test_app_inst_clients_keep_the_latest_per_id_and_the_newest_n() -> None:
    sent: list[appinstclient_pb2.AppInstClient] = []
    clock = Clock()
    clients = AppInstClients(sent.append, max_clients=3, max_age=60, clock=clock)
    where = loc_pb2.Loc(latitude=1, longitude=2)
    for uid in ("a", "b", "c", "a", "d"):
        clients.record(
            app=APP, app_inst=("inst1", "devorg"), unique_id=uid, unique_id_type="t", location=where
        )
    assert [c.client_key.unique_id for c in clients.clients(APP)] == ["c", "a", "d"]
    assert sent == []  # nobody asked
    clients.record(
        app=APP,
        app_inst=("inst1", "devorg"),
        unique_id="probe",
        unique_id_type=MONITOR_UNIQUE_ID_TYPE,
        location=where,
    )
    assert len(clients) == 3
    assert clients.clients(APP)[0].location.timestamp.seconds == int(clock.now)


def test_app_inst_client_requests_replay_and_stream_matches() -> None:
    sent: list[appinstclient_pb2.AppInstClient] = []
    clients = AppInstClients(sent.append, clock=Clock())
    where = loc_pb2.Loc(latitude=1, longitude=2)
    for inst, uid in (("inst1", "a"), ("inst2", "b")):
        clients.record(
            app=APP, app_inst=(inst, "devorg"), unique_id=uid, unique_id_type="t", location=where
        )
    want = client_request(app_inst_key={"name": "inst2", "organization": "devorg"})
    clients.want("k1", want)
    assert [c.client_key.unique_id for c in sent] == ["b"]
    broader = client_request(app_key={"organization": "devorg"})
    clients.want("k2", broader)
    assert [c.client_key.unique_id for c in sent] == ["b", "a", "b"]
    clients.record(
        app=APP, app_inst=("inst1", "devorg"), unique_id="c", unique_id_type="t", location=where
    )
    assert sent[-1].client_key.unique_id == "c"  # sent once, though two requests match
    assert len(sent) == 4
    clients.unwant("k1")
    clients.unwant("k2")
    clients.record(
        app=APP, app_inst=("inst1", "devorg"), unique_id="d", unique_id_type="t", location=where
    )
    assert len(sent) == 4
    clients.purge(APP, ("inst1", "devorg"))
    assert [c.client_key.unique_id for c in clients.clients(APP)] == ["b"]


def test_app_inst_clients_expire() -> None:
    clock = Clock()
    clients = AppInstClients(lambda _: None, max_age=60, clock=clock)
    where = loc_pb2.Loc(latitude=1, longitude=2)
    clients.record(
        app=APP, app_inst=("i", "o"), unique_id="old", unique_id_type="t", location=where
    )
    clock.now += 61
    clients.record(
        app=APP, app_inst=("i", "o"), unique_id="new", unique_id_type="t", location=where
    )
    assert clients.expire() == 1
    assert [c.client_key.unique_id for c in clients.clients(APP)] == ["new"]


def test_matches_treats_empty_fields_as_wildcards() -> None:
    key = client_request(
        app_key={"organization": "o", "name": "n", "version": "1"},
        app_inst_key={"name": "i", "organization": "o"},
        unique_id="u",
        unique_id_type="t",
    )
    assert matches(key, client_request())
    assert matches(key, client_request(unique_id="u", app_key={"name": "n"}))
    assert not matches(key, client_request(unique_id="x"))


def test_devices_are_recorded_once_for_platform_id_types_only() -> None:
    sent: list[device_pb2.Device] = []
    devices = Devices(sent.append, clock=Clock(5.5))
    assert devices.registered("devorg", "app", "Platos-Phone", "id1")
    assert not devices.registered("devorg", "app", "Platos-Phone", "id1")
    assert not devices.registered("devorg", "app", "dme-ksuid", "id2")
    assert not devices.registered("platos", "PlatosEnablingLayer", "platos", "id3")
    (device,) = sent
    assert (device.key.unique_id_type, device.key.unique_id) == ("Platos-Phone", "id1")
    assert (device.first_seen.seconds, device.first_seen.nanos) == (5, 500_000_000)


# --- auto-provisioning -----------------------------------------------------------------------


def policy(name: str, deploy: int, interval: int, *zones: tuple[str, str]) -> Message:
    return autoprovpolicy_pb2.AutoProvPolicy(
        key=autoscalepolicy_pb2.PolicyKey(organization="devorg", name=name),
        deploy_client_count=deploy,
        deploy_interval_count=interval,
        zones=[cloudletkey_pb2.ZoneKey(organization=o, name=n) for o, n in zones],
    )


def cloudlet(org: str, name: str, zone: str, lat: float, lon: float) -> cloudlet_pb2.Cloudlet:
    return cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization=org, name=name),
        zone=zone,
        location=loc_pb2.Loc(latitude=lat, longitude=lon),
    )


def autoprov_world(sent: list[autoprovpolicy_pb2.AutoProvCounts]) -> AutoProvStats:
    stats = AutoProvStats("dme1", sent.append, clock=Clock(42.0))
    stats.update_cloudlet(cloudlet("dmuus", "berlin", "de", 52.52, 13.40))
    stats.update_cloudlet(cloudlet("dmuus", "munich", "de-south", 48.14, 11.58))
    stats.update_cloudlet(cloudlet("azure", "azure-de", "az-de", 52.5, 13.3))
    return stats


def test_demand_counts_the_closer_policy_zone_only() -> None:
    sent: list[autoprovpolicy_pb2.AutoProvCounts] = []
    stats = autoprov_world(sent)
    stats.update_policy(policy("p", 10, 3, ("dmuus", "de"), ("dmuus", "de-south")))  # type: ignore[arg-type]
    near_berlin = (52.4, 13.1)
    # an instance 20 km away: Berlin (~23 km) is not closer; nothing counted
    assert stats.searched(APP, ["p"], "docker", "", *near_berlin, 20.0) is None
    # an instance in Paris: Berlin is closer, and closest of the policy's zones
    assert stats.searched(APP, ["p"], "docker", "", *near_berlin, 850.0) == ZoneKey("dmuus", "de")
    assert stats.searched(APP, ["p"], "docker", "", *near_berlin, None) == ZoneKey("dmuus", "de")
    assert stats.counts() == {(APP, ZoneKey("dmuus", "de")): 2}
    # another carrier asked for: dmuus zones are not searched
    assert stats.searched(APP, ["p"], "docker", "vodafone", *near_berlin, None) is None
    assert stats.searched(APP, ["unknown"], "docker", "", *near_berlin, None) is None
    assert sent == []  # interval count 3: only the periodic report sends
    report = stats.report()
    assert report is not None
    assert report.dme_node_name == "dme1"
    assert [(c.zone_key.name, c.count, c.process_now) for c in report.counts] == [("de", 2, False)]
    assert sent == [report]
    assert stats.report() is None  # nothing changed since


def test_free_reservable_cluster_wins_within_a_policy() -> None:
    stats = autoprov_world([])
    stats.update_policy(policy("p", 10, 3, ("dmuus", "de"), ("dmuus", "de-south")))  # type: ignore[arg-type]
    cluster = clusterinst_pb2.ClusterInst(
        cloudlet_key=cloudletkey_pb2.CloudletKey(organization="dmuus", name="munich"),
        reservable=True,
        deployment="kubernetes",
    )
    cluster.key.name, cluster.key.organization = "reservable0", "edgecloudorg"
    stats.update_cluster_inst(cluster)
    near_berlin = (52.4, 13.1)
    assert stats.searched(APP, ["p"], "docker", "", *near_berlin, None) == ZoneKey("dmuus", "de")
    assert stats.searched(APP, ["p"], "helm", "", *near_berlin, None) == ZoneKey(
        "dmuus", "de-south"
    )
    cluster.reserved_by = "devorg"
    stats.update_cluster_inst(cluster)
    assert stats.searched(APP, ["p"], "helm", "", *near_berlin, None) == ZoneKey("dmuus", "de")


def test_immediate_policy_sends_process_now_once_per_deploy_count() -> None:
    sent: list[autoprovpolicy_pb2.AutoProvCounts] = []
    stats = autoprov_world(sent)
    stats.update_policy(policy("now", 2, 1, ("dmuus", "de")))  # type: ignore[arg-type]
    stats.update_policy(policy("later", 1, 5, ("azure", "az-de")))  # type: ignore[arg-type]
    for _ in range(5):
        stats.searched(APP, ["now", "later"], "docker", "", 52.4, 13.1, None)
    # azure-de ("later") is closer than Berlin ("now"): distance decides before intervals
    assert stats.counts() == {(APP, ZoneKey("azure", "az-de")): 5}
    assert sent == []
    stats.delete_policy("devorg", "later")
    for _ in range(5):
        stats.searched(APP, ["now", "later"], "docker", "", 52.4, 13.1, None)
    assert [(m.counts[0].count, m.counts[0].process_now) for m in sent] == [(2, True), (4, True)]
    assert sent[0].timestamp.seconds == 42


# --- report clock ----------------------------------------------------------------------------


def test_reporter_sends_each_kind_on_its_period() -> None:
    sent: list[metric_pb2.Metric] = []
    counts: list[autoprovpolicy_pb2.AutoProvCounts] = []
    clock = Clock(1000.2)
    settings = settings_pb2.Settings(
        dme_api_metrics_collection_interval=2 * 10**9,
        edge_events_metrics_collection_interval=10 * 10**9,
        auto_deploy_interval_sec=5,
        max_tracked_dme_clients=7,
    )
    api, edge = ApiStats(), EdgeEventStats()
    autoprov = autoprov_world(counts)
    autoprov.update_policy(policy("p", 10, 3, ("dmuus", "de")))  # type: ignore[arg-type]
    clients = AppInstClients(lambda _: None, clock=clock)
    reporter = Reporter(
        lambda: settings,
        sent.append,
        api_stats=api,
        edge_stats=edge,
        autoprov=autoprov,
        clients=clients,
        dme_id="d",
        clock=clock,
    )
    reporter.tick()
    assert clients.max_clients == 7
    api.record(StatKey("FindCloudlet", APP), 0.001, failed=False)
    edge.record_device(EdgeStatKey(("i", "o"), APP, ("c", "o", "")))
    autoprov.searched(APP, ["p"], "docker", "", 52.4, 13.1, None)
    clock.now = 1001.9
    reporter.tick()
    assert sent == []
    assert counts == []
    clock.now = 1002.3  # dme-api: 2 s after the first tick
    reporter.tick()
    assert [m.name for m in sent] == ["dme-api"]
    clock.now = 1005.0  # autoprov: wall-clock multiple of 5 s
    reporter.tick()
    assert len(counts) == 1
    clock.now = 1010.0  # edge events: multiple of 10 s
    reporter.tick()
    assert [m.name for m in sent] == ["dme-api", "device-metric"]


def test_notify_messages_queue_while_disconnected_and_drop_the_oldest() -> None:
    client = NotifyClient(["127.0.0.1:1"], name="dme", message_queue_limit=2)
    for name in ("a", "b", "c"):
        client.send_message(metric_pb2.Metric(name=name))
    assert client.stats.messages_dropped == 1
