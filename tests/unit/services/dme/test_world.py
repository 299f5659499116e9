"""The DME's model of the region, fed by notify (dme.md §2.2.3, §2.12)."""

from __future__ import annotations

from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import app_pb2, appinst_pb2, cloudlet_pb2, settings_pb2

from services.dme._world import AppInstKey, AppKey, AppRecord, Instance, World
from tests.unit.services.dme.builders import (
    APP,
    add_app,
    add_cloudlet,
    add_inst,
    add_operator_code,
    app_inst,
    app_key_pb,
    cloudlet_key,
)


class Recorder:
    """A placement listener that writes down what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, float, tuple[str, ...]]] = []

    def placed(self, inst: Instance) -> None:
        self.events.append(("placed", inst.key.name, inst.lat, inst.alliances))

    def unplaced(self, inst: Instance) -> None:
        self.events.append(("unplaced", inst.key.name, inst.lat, inst.alliances))


def test_app_record_keeps_what_the_dme_uses() -> None:
    world = World()
    world.update_app(
        app_pb2.App(
            key=app_key_pb(APP),
            auth_public_key="PEM",
            android_package_name="com.example",
            official_fqdn="a.example.com,b.example.com",
            deployment="kubernetes",
            access_ports="tcp:80,udp:10002",
            qos_session_profile=app_pb2.QOS_LOW_LATENCY,
            qos_session_duration=60_000_000_000,
            auto_prov_policy="p1",
            auto_prov_policies=["p2", "p1"],
        )
    )
    assert world.app(APP) == AppRecord(
        key=APP,
        auth_public_key="PEM",
        android_package_name="com.example",
        official_fqdn="a.example.com,b.example.com",
        deployment="kubernetes",
        access_ports="tcp:80,udp:10002",
        qos_session_profile=app_pb2.QOS_LOW_LATENCY,
        qos_session_duration=60_000_000_000,
        auto_prov_policies=frozenset({"p1", "p2"}),
    )
    assert world.app_exists("devorg", "app", "1.0")
    assert not world.app_exists("devorg", "app", "2.0")
    world.delete_app(app_key_pb(APP))
    assert world.app(APP) is None


def test_fqdn_list_skips_platform_apps_and_empty_fqdns() -> None:
    world = World()
    add_app(world, AppKey("zorg", "z", "1"), official_fqdn="z.example.com")
    add_app(world, AppKey("aorg", "a", "1"), official_fqdn="a.example.com")
    add_app(world, AppKey("aorg", "nofqdn", "1"))
    add_app(world, AppKey("platos", "PlatosEnablingLayer", "1"), official_fqdn="p.example.com")
    assert [a.key for a in world.fqdn_list()] == [
        AppKey("aorg", "a", "1"),
        AppKey("zorg", "z", "1"),
    ]


def test_operator_codes() -> None:
    world = World()
    add_operator_code(world, "310260", "dmuus")
    add_operator_code(world, "wifi", "dmuus")
    assert world.translate_carrier("310260") == "dmuus"
    assert world.translate_carrier("dmuus") == "dmuus"
    assert world.translate_carrier("") == ""
    world.prune_operator_codes(["wifi"])
    assert world.translate_carrier("310260") == "310260"
    assert dict(world.operator_codes) == {"wifi": "dmuus"}


def test_instance_fields() -> None:
    world = World()
    key = add_cloudlet(world, "dmuus", "c1", 10, 20, alliances=["opbeta", "opbeta", "opgamma"])
    add_inst(world, "i1", key, 10.5, 20.5)
    inst = world.instance(AppInstKey("i1", "devorg"))
    assert inst is not None
    assert inst.key_string == '{"name":"i1","organization":"devorg"}'
    assert (inst.operator, inst.alliances) == ("dmuus", ("opbeta", "opgamma"))
    assert (inst.lat, inst.lon) == (10.5, 20.5)
    assert inst.location == loc_pb2.Loc(latitude=10.5, longitude=20.5)
    assert inst.usable
    assert inst.cluster_key.name == "cluster1"
    cloudlet = world.cloudlet(inst.cloudlet_key)
    assert cloudlet is not None
    assert cloudlet.alliance_orgs == ("opbeta", "opgamma")


def test_placements_are_reported_around_changes() -> None:
    world = World()
    recorder = Recorder()
    key = add_cloudlet(world, "dmuus", "c1", 0, 0)
    add_inst(world, "early", key, 1, 1)
    world.add_listener(recorder)
    assert recorder.events == [("placed", "early", 1.0, ())]  # existing ones on registration
    recorder.events.clear()

    world.update_app_inst(
        app_inst("early", key, 1, 1, health=appcommon_pb2.HEALTH_CHECK_SERVER_FAIL)
    )
    assert recorder.events == []  # usability is not a placement
    world.update_app_inst(app_inst("early", key, 2, 1))
    assert recorder.events == [("unplaced", "early", 1.0, ()), ("placed", "early", 2.0, ())]
    recorder.events.clear()

    world.update_cloudlet(
        cloudlet_pb2.Cloudlet(key=key, location=loc_pb2.Loc(), alliance_orgs=["opbeta"])
    )
    assert recorder.events == [
        ("unplaced", "early", 2.0, ()),
        ("placed", "early", 2.0, ("opbeta",)),
    ]
    recorder.events.clear()
    world.update_cloudlet(
        cloudlet_pb2.Cloudlet(key=key, location=loc_pb2.Loc(), alliance_orgs=["opbeta"])
    )
    assert recorder.events == []  # nothing changed

    world.delete_app_inst(appinst_pb2.AppInstKey(name="early", organization="devorg"))
    assert recorder.events == [("unplaced", "early", 2.0, ("opbeta",))]
    assert not world.instances_of(APP)


def test_instances_arriving_before_their_cloudlet() -> None:
    world = World()
    add_app(world)
    key = cloudlet_key("dmuus", "late")
    add_inst(world, "i1", key, 0, 0)
    (inst,) = world.instances_of(APP)
    usable = [inst.usable]
    add_cloudlet(world, "dmuus", "late", 0, 0, alliances=["opbeta"])
    usable.append(inst.usable)
    assert usable == [False, True]
    assert inst.alliances == ("opbeta",)


def test_settings_are_kept() -> None:
    world = World()
    world.update_settings(settings_pb2.Settings(location_tile_side_length_km=2))
    assert world.settings.location_tile_side_length_km == 2
