"""FindCloudlet / GetAppInstList selection and ranking rules (dme.md §2.2, §2.6).

Every rule runs against both searches (`LinearScan`, `SpatialIndex`): they must agree on
each concrete case as well as on the random worlds of `test_ranking_property.py`.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable

import pytest
from distributed_match_engine import app_client_pb2, appcommon_pb2, loc_pb2
from edgeproto import appinst_pb2, cloudlet_pb2, common_pb2

from edge_cloud.errors import InvalidArgument
from services.dme._ranking import (
    Candidate,
    LinearScan,
    MatchEngine,
    SpatialIndex,
    app_inst_list_reply,
    distance_km,
    find_cloudlet_reply,
    require_list_location,
    validate_location,
)
from services.dme._world import AppKey, Instance, World
from tests.unit.services.dme.builders import (
    APP,
    add_app,
    add_cloudlet,
    add_inst,
    add_operator_code,
    add_site,
    app_inst,
    cloudlet_key,
)

KM_PER_DEG = 6371 * math.pi / 180  # along the equator


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 -- reproducible coin flips, not secrets


def lon_at(km: float) -> float:
    """Longitude on the equator `km` east of (0, 0)."""
    return km / KM_PER_DEG


Search = Callable[[World], LinearScan | SpatialIndex]
SEARCHES: list[Search] = [
    LinearScan,
    SpatialIndex,
    lambda w: SpatialIndex(w, leaf_size=1, min_rebuild=0),
]
SEARCH_IDS = ["scan", "index", "index-rebuilt"]


@pytest.fixture(params=SEARCHES, ids=SEARCH_IDS)
def search(request: pytest.FixtureRequest) -> Search:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def world() -> World:
    w = World()
    add_app(w)
    return w


def find(
    world: World, search: Search, carrier: str = "", lat: float = 0.0, lon: float = 0.0
) -> str:
    """Name of the cloudlet FindCloudlet picks, or "" for FIND_NOTFOUND."""
    found = MatchEngine(world, search(world)).find_cloudlet(APP, carrier, lat, lon)
    return found.instance.cloudlet_key.name if found else ""


def listing(
    world: World, search: Search, carrier: str = "", limit: int = 0, lat: float = 0.0
) -> list[tuple[str, float, str]]:
    found = MatchEngine(world, search(world)).app_inst_list(APP, carrier, lat, 0.0, limit)
    return [(c.instance.cloudlet_key.name, round(c.distance, 3), c.carrier) for c in found]


# --- distance ---------------------------------------------------------------------------------


def test_distance_is_haversine_on_6371_km() -> None:
    assert distance_km(0, 0, 0, 1) == pytest.approx(111.19492664455873, abs=1e-9)
    assert distance_km(0, 0, 0, 0) == 0.0
    assert distance_km(90, 0, -90, 0) == pytest.approx(math.pi * 6371)
    # across the antimeridian the short way round
    assert distance_km(0, 179.5, 0, -179.5) == pytest.approx(111.19492664455873)
    # Berlin - Paris, a familiar figure
    assert distance_km(52.52, 13.405, 48.8566, 2.3522) == pytest.approx(877.46, abs=0.01)


def test_distance_of_non_finite_input_is_nan_not_an_error() -> None:
    assert math.isnan(distance_km(0, math.inf, 0, 0))
    assert math.isnan(distance_km(math.nan, 0, 0, 0))


# --- the basic choice -----------------------------------------------------------------------------


def test_nearest_usable_instance_wins(world: World, search: Search) -> None:
    add_site(world, "dmuus", "far", 0, lon_at(300))
    add_site(world, "dmuus", "near", 0, lon_at(50))
    add_site(world, "dmuus", "middle", 0, lon_at(120))
    assert find(world, search) == "near"


def test_no_instance_is_not_found(world: World, search: Search) -> None:
    assert find(world, search) == ""


def test_unknown_app_is_not_found(search: Search) -> None:
    world = World()  # the App itself was never received
    add_site(world, "dmuus", "c1", 0, 0)
    assert find(world, search) == ""
    assert listing(world, search) == []


def test_platform_app_gets_nothing_from_find_cloudlet(search: Search) -> None:
    platform = AppKey("platos", "PlatosEnablingLayer", "1.0")
    world = World()
    add_app(world, platform)
    add_site(world, "dmuus", "c1", 0, 0, app=platform)
    engine = MatchEngine(world, search(world))
    assert engine.find_cloudlet(platform, "", 0, 0) is None
    # GetAppInstList has no such check in the original.
    assert len(engine.app_inst_list(platform, "", 0, 0, 0)) == 1


def test_zero_zero_is_a_location_like_any_other(world: World, search: Search) -> None:
    add_site(world, "dmuus", "c1", 0.001, 0.001)
    assert find(world, search, lat=0.0, lon=0.0) == "c1"


def test_only_instances_of_the_calling_app(world: World, search: Search) -> None:
    other = AppKey("devorg", "other", "1.0")
    add_app(world, other)
    add_site(world, "dmuus", "mine", 0, lon_at(100))
    add_site(world, "dmuus", "theirs", 0, lon_at(1), app=other)
    assert find(world, search) == "mine"


# --- usability ---------------------------------------------------------------------------------


def _two_sites(
    world: World,
    *,
    tracked: int = common_pb2.TrackedState.READY,
    health: int = appcommon_pb2.HEALTH_CHECK_OK,
    cloudlet_state: int | None = appcommon_pb2.CLOUDLET_STATE_READY,
    maintenance: int = appcommon_pb2.NORMAL_OPERATION,
    info_maintenance: int = appcommon_pb2.NORMAL_OPERATION,
) -> None:
    """A usable far site, and a near one shaped by the arguments."""
    add_site(world, "dmuus", "far", 0, lon_at(200))
    key = add_cloudlet(
        world,
        "dmuus",
        "near",
        0,
        lon_at(10),
        state=cloudlet_state,
        maintenance=maintenance,
        info_maintenance=info_maintenance,
    )
    add_inst(world, "near-inst", key, 0, lon_at(10), health=health, state=tracked)


@pytest.mark.parametrize(
    ("near", "usable"),
    [
        ({}, True),
        ({"health": appcommon_pb2.HEALTH_CHECK_UNKNOWN}, True),
        ({"health": appcommon_pb2.HEALTH_CHECK_SERVER_FAIL}, False),
        ({"health": appcommon_pb2.HEALTH_CHECK_ROOTLB_OFFLINE}, False),
        ({"health": appcommon_pb2.HEALTH_CHECK_CLOUDLET_OFFLINE}, False),
        ({"tracked": common_pb2.TrackedState.CREATING}, False),
        ({"tracked": common_pb2.TrackedState.DELETING}, False),
        ({"tracked": common_pb2.TrackedState.CREATE_ERROR}, False),
        ({"cloudlet_state": appcommon_pb2.CLOUDLET_STATE_OFFLINE}, False),
        ({"cloudlet_state": appcommon_pb2.CLOUDLET_STATE_ERRORS}, False),
        ({"cloudlet_state": appcommon_pb2.CLOUDLET_STATE_UPGRADE}, False),
        ({"cloudlet_state": None}, False),  # no CloudletInfo yet: UNKNOWN
        ({"maintenance": appcommon_pb2.UNDER_MAINTENANCE}, False),
        ({"maintenance": appcommon_pb2.FAILOVER_REQUESTED}, True),
        ({"maintenance": appcommon_pb2.CRM_REQUESTED}, True),
        ({"info_maintenance": appcommon_pb2.UNDER_MAINTENANCE}, False),
        ({"info_maintenance": appcommon_pb2.CRM_UNDER_MAINTENANCE}, True),
    ],
)
def test_usability(world: World, search: Search, near: dict[str, int], usable: bool) -> None:
    _two_sites(world, **near)
    assert find(world, search) == ("near" if usable else "far")


def test_state_changes_apply_to_existing_instances(world: World, search: Search) -> None:
    _two_sites(world)
    engine_search = search(world)
    engine = MatchEngine(world, engine_search)

    def pick() -> str:
        found = engine.find_cloudlet(APP, "", 0, 0)
        return found.instance.cloudlet_key.name if found else ""

    near = cloudlet_key("dmuus", "near")
    assert pick() == "near"
    world.update_cloudlet_info(
        cloudlet_pb2.CloudletInfo(key=near, state=appcommon_pb2.CLOUDLET_STATE_OFFLINE)
    )
    assert pick() == "far"
    world.update_cloudlet_info(
        cloudlet_pb2.CloudletInfo(key=near, state=appcommon_pb2.CLOUDLET_STATE_READY)
    )
    assert pick() == "near"
    # Maintenance as the Controller drives it: only UNDER_MAINTENANCE makes it unusable.
    for state, expected in [
        (appcommon_pb2.FAILOVER_REQUESTED, "near"),
        (appcommon_pb2.CRM_REQUESTED, "near"),
        (appcommon_pb2.UNDER_MAINTENANCE, "far"),
        (appcommon_pb2.NORMAL_OPERATION_INIT, "near"),
        (appcommon_pb2.NORMAL_OPERATION, "near"),
    ]:
        world.update_cloudlet(
            cloudlet_pb2.Cloudlet(
                key=near, location=loc_pb2.Loc(longitude=lon_at(10)), maintenance_state=state
            )
        )
        assert pick() == expected, state
    world.delete_cloudlet_info(near)
    assert pick() == "far"
    world.update_cloudlet_info(
        cloudlet_pb2.CloudletInfo(key=near, state=appcommon_pb2.CLOUDLET_STATE_READY)
    )
    assert pick() == "near"
    world.delete_cloudlet(near)  # instances on a deleted cloudlet are NOT_PRESENT
    assert pick() == "far"
    # CloudletInfo before the Cloudlet object is ignored ...
    world.update_cloudlet_info(
        cloudlet_pb2.CloudletInfo(key=near, state=appcommon_pb2.CLOUDLET_STATE_READY)
    )
    assert pick() == "far"
    # ... and a re-created Cloudlet waits for its CloudletInfo.
    add_cloudlet(world, "dmuus", "near", 0, lon_at(10), state=None)
    assert pick() == "far"
    world.update_cloudlet_info(
        cloudlet_pb2.CloudletInfo(key=near, state=appcommon_pb2.CLOUDLET_STATE_READY)
    )
    assert pick() == "near"
    world.update_app_inst(
        app_inst("near-inst", near, 0, lon_at(10), health=appcommon_pb2.HEALTH_CHECK_SERVER_FAIL)
    )
    assert pick() == "far"
    world.update_app_inst(app_inst("near-inst", near, 0, lon_at(10)))
    assert pick() == "near"
    world.delete_app_inst(appinst_pb2.AppInstKey(name="near-inst", organization="devorg"))
    assert pick() == "far"


def test_instance_location_is_the_app_insts_cloudlet_loc(world: World, search: Search) -> None:
    # Distance is to AppInst.cloudlet_loc, not to the Cloudlet object's location.
    a = add_cloudlet(world, "dmuus", "a", 0, lon_at(500))
    add_inst(world, "a-inst", a, 0, lon_at(5))
    add_site(world, "dmuus", "b", 0, lon_at(50))
    assert find(world, search) == "a"


def test_moving_an_instance(world: World, search: Search) -> None:
    add_site(world, "dmuus", "a", 0, lon_at(50))
    b = add_cloudlet(world, "dmuus", "b", 0, lon_at(100))
    add_inst(world, "b-inst", b, 0, lon_at(100))
    engine = MatchEngine(world, search(world))
    assert engine.find_cloudlet(APP, "", 0, 0).instance.key.name == "a-inst"  # type: ignore[union-attr]
    world.update_app_inst(app_inst("b-inst", b, 0, lon_at(1)))
    assert engine.find_cloudlet(APP, "", 0, 0).instance.key.name == "b-inst"  # type: ignore[union-attr]


def test_prune_drops_what_the_controller_did_not_send(world: World, search: Search) -> None:
    add_site(world, "dmuus", "a", 0, lon_at(10))
    add_site(world, "dmuus", "b", 0, lon_at(20))
    engine = MatchEngine(world, search(world))
    world.prune_app_insts([appinst_pb2.AppInstKey(name="b-inst", organization="devorg")])
    assert engine.find_cloudlet(APP, "", 0, 0).instance.key.name == "b-inst"  # type: ignore[union-attr]
    world.prune_cloudlet_infos([])
    assert engine.find_cloudlet(APP, "", 0, 0) is None
    world.prune_apps([])
    assert engine.find_cloudlet(APP, "", 0, 0) is None


# --- carriers ------------------------------------------------------------------------------------


@pytest.fixture
def carriers(world: World) -> World:
    add_site(world, "dmuus", "dmuus-site", 0, lon_at(30))
    add_site(world, "opbeta", "opbeta-site", 0, lon_at(10))
    return world


def test_no_carrier_searches_every_operator(carriers: World, search: Search) -> None:
    assert find(carriers, search) == "opbeta-site"


def test_carrier_searches_only_its_own_instances(carriers: World, search: Search) -> None:
    assert find(carriers, search, "dmuus") == "dmuus-site"
    assert find(carriers, search, "opbeta") == "opbeta-site"
    assert find(carriers, search, "nobody") == ""


def test_operator_code_is_translated(carriers: World, search: Search) -> None:
    add_operator_code(carriers, "310260", "dmuus")
    add_operator_code(carriers, "wifi", "dmuus")
    assert find(carriers, search, "310260") == "dmuus-site"
    assert find(carriers, search, "wifi") == "dmuus-site"
    carriers.delete_operator_code("wifi")
    assert find(carriers, search, "wifi") == ""


def test_alliance_organisations(world: World, search: Search) -> None:
    # An opbeta cloudlet that also serves dmuus clients.
    add_site(world, "opbeta", "shared", 0, lon_at(10), alliances=["dmuus"])
    add_site(world, "dmuus", "own", 0, lon_at(30))
    assert find(world, search, "dmuus") == "shared"
    assert find(world, search, "opbeta") == "shared"
    assert find(world, search, "opgamma") == ""
    assert find(world, search, "") == "shared"  # found as opbeta's own
    # GetAppInstList shows the real organisation; the candidate says who brought it in.
    assert listing(world, search, "dmuus") == [
        ("shared", 10.0, "dmuus"),
        ("own", 30.0, "dmuus"),
    ]
    engine = MatchEngine(world, search(world))
    reply = app_inst_list_reply(APP, engine.app_inst_list(APP, "dmuus", 0, 0, 0), lambda i: "")
    assert [c.carrier_name for c in reply.cloudlets] == ["opbeta", "dmuus"]


def test_alliance_changes_follow_the_cloudlet(world: World, search: Search) -> None:
    add_site(world, "opbeta", "shared", 0, lon_at(10))
    engine = MatchEngine(world, search(world))
    assert engine.find_cloudlet(APP, "dmuus", 0, 0) is None
    key = cloudlet_key("opbeta", "shared")
    location = loc_pb2.Loc(longitude=lon_at(10))
    world.update_cloudlet(
        cloudlet_pb2.Cloudlet(key=key, location=location, alliance_orgs=["dmuus"])
    )
    assert engine.find_cloudlet(APP, "dmuus", 0, 0) is not None
    world.update_cloudlet(cloudlet_pb2.Cloudlet(key=key, location=location))
    assert engine.find_cloudlet(APP, "dmuus", 0, 0) is None


def test_instance_reached_twice_is_listed_twice(world: World, search: Search) -> None:
    # The original indexes alliance instances separately: an operator listing itself as an
    # alliance organisation makes its instances appear twice for its own carrier.
    add_site(world, "dmuus", "self", 0, lon_at(10), alliances=["dmuus"])
    assert listing(world, search, "dmuus") == [("self", 10.0, "dmuus"), ("self", 10.0, "dmuus")]
    assert listing(world, search, "") == [("self", 10.0, "dmuus")]


# --- public clouds --------------------------------------------------------------------------------


@pytest.mark.parametrize("cloud", ["azure", "gcp", "aws"])
def test_public_cloud_is_padded_100_km_for_other_carriers(
    world: World, search: Search, cloud: str
) -> None:
    add_site(world, "dmuus", "operator", 0, lon_at(150))
    add_site(world, cloud, "cloud", 0, lon_at(60))
    assert find(world, search, "dmuus") == "operator"  # 60 + 100 > 150
    assert find(world, search, "") == "cloud"  # no carrier: no padding
    assert find(world, search, cloud) == "cloud"  # asked for that cloud: no padding
    assert find(world, search, "opbeta") == "cloud"  # other carrier: clouds still searched
    assert listing(world, search, "dmuus") == [
        ("operator", 150.0, "dmuus"),
        ("cloud", 160.0, cloud),
    ]


def test_public_cloud_wins_when_more_than_100_km_closer(world: World, search: Search) -> None:
    add_site(world, "dmuus", "operator", 0, lon_at(150))
    add_site(world, "azure", "cloud", 0, lon_at(40))
    assert find(world, search, "dmuus") == "cloud"  # 40 + 100 < 150


def test_other_public_cloud_is_padded_for_a_cloud_carrier(world: World, search: Search) -> None:
    add_site(world, "azure", "azure-site", 0, lon_at(150))
    add_site(world, "gcp", "gcp-site", 0, lon_at(60))
    assert find(world, search, "azure") == "azure-site"  # gcp padded to 160


# --- ties -----------------------------------------------------------------------------------------


def test_equal_distance_goes_to_the_smaller_key(world: World, search: Search) -> None:
    # Deterministic mode (E2ETEST_NORANDOM): key string order, {"name":"a..."} first.
    add_site(world, "dmuus", "b", 0, lon_at(50))
    add_site(world, "dmuus", "a", 0, -lon_at(50))
    assert find(world, search) == "a"


def test_within_a_kilometre_deterministic_order_is_by_distance(
    world: World, search: Search
) -> None:
    add_site(world, "dmuus", "a", 0, lon_at(50.5))
    add_site(world, "dmuus", "b", 0, lon_at(50))
    assert find(world, search) == "b"


def test_near_ties_are_shared_at_random(world: World, search: Search) -> None:
    add_site(world, "dmuus", "a", 0, lon_at(50.5))
    add_site(world, "dmuus", "b", 0, lon_at(50))
    add_site(world, "dmuus", "far", 0, lon_at(52))  # 1.5 km beyond b: never chosen
    engine = MatchEngine(world, search(world), rng=seeded(7))
    picks = Counter(
        engine.find_cloudlet(APP, "", 0, 0).instance.cloudlet_key.name  # type: ignore[union-attr]
        for _ in range(400)
    )
    assert set(picks) == {"a", "b"}
    assert 140 < picks["a"] < 260


def test_three_co_located_cloudlets_share_evenly(world: World, search: Search) -> None:
    for name in "abc":
        add_site(world, "dmuus", name, 0, lon_at(20))
    engine = MatchEngine(world, search(world), rng=seeded(3))
    picks = Counter(
        engine.find_cloudlet(APP, "", 0, 0).instance.cloudlet_key.name  # type: ignore[union-attr]
        for _ in range(900)
    )
    assert set(picks) == {"a", "b", "c"}
    assert all(230 < n < 370 for n in picks.values()), picks


def test_same_random_source_same_answers(world: World) -> None:
    for i in range(30):
        add_site(world, "dmuus", f"c{i}", 0, lon_at(20 + (i % 3) * 0.3))
    runs = []
    for make in (LinearScan, SpatialIndex):
        engine = MatchEngine(world, make(world), rng=seeded(11))
        runs.append([engine.app_inst_list(APP, "", 0, 0, 4) for _ in range(20)])
    assert runs[0] == runs[1]


# --- GetAppInstList -----------------------------------------------------------------------------


def test_list_limit_defaults_to_3_and_orders_best_first(world: World, search: Search) -> None:
    for km in (40, 10, 30, 50, 20):
        add_site(world, "dmuus", f"c{km}", 0, lon_at(km))
    assert [n for n, _, _ in listing(world, search)] == ["c10", "c20", "c30"]
    assert [n for n, _, _ in listing(world, search, limit=4)] == ["c10", "c20", "c30", "c40"]
    assert len(listing(world, search, limit=10)) == 5


def test_list_groups_instances_by_cloudlet(world: World, search: Search) -> None:
    shared = add_cloudlet(world, "dmuus", "shared", 0, lon_at(10))
    add_inst(world, "one", shared, 0, lon_at(10), cluster="c1")
    add_inst(world, "two", shared, 0, lon_at(10), cluster="c2")
    add_site(world, "dmuus", "other", 0, lon_at(20))
    engine = MatchEngine(world, search(world))
    found = engine.app_inst_list(APP, "", 0, 0, 0)
    reply = app_inst_list_reply(APP, found, lambda inst: f"cookie-{inst.key.name}")
    assert reply.status == app_client_pb2.AppInstListReply.AI_SUCCESS
    assert [(c.cloudlet_name, len(c.appinstances)) for c in reply.cloudlets] == [
        ("shared", 2),
        ("other", 1),
    ]
    first = reply.cloudlets[0]
    assert first.carrier_name == "dmuus"
    assert first.distance == pytest.approx(10.0)
    assert first.gps_location == loc_pb2.Loc(longitude=lon_at(10))
    assert [a.edge_events_cookie for a in first.appinstances] == ["cookie-one", "cookie-two"]
    assert all(
        (a.app_name, a.app_vers, a.org_name) == ("app", "1.0", "devorg") for a in first.appinstances
    )


def test_empty_list_is_still_success() -> None:
    reply = app_inst_list_reply(APP, [], lambda inst: "")
    assert reply.status == app_client_pb2.AppInstListReply.AI_SUCCESS
    assert not reply.cloudlets


def test_list_location_is_not_range_checked(world: World, search: Search) -> None:
    add_site(world, "dmuus", "c1", 0, 0)
    engine = MatchEngine(world, search(world))
    assert len(engine.app_inst_list(APP, "", 500.0, 0, 0)) == 1
    with pytest.raises(InvalidArgument, match=r"^Missing GPS location$"):
        require_list_location(None)
    loc = loc_pb2.Loc(latitude=500)
    assert require_list_location(loc) is loc


def test_odd_locations_give_the_same_answer_everywhere(world: World) -> None:
    # GetAppInstList does not range-check; instance locations are the Controller's, but
    # whatever arrives must not break the index or make it disagree with the scan.
    add_site(world, "dmuus", "ok", 10, 10)
    add_site(world, "dmuus", "odd", 95, 10)
    add_site(world, "dmuus", "nan", math.nan, 10)
    add_site(world, "dmuus", "inf", 10, math.inf)
    for lat, lon in [(10, 10), (500, 0), (math.nan, 0), (0, math.inf), (-math.inf, 5)]:
        answers = []
        for make in SEARCHES:
            found = MatchEngine(world, make(world)).app_inst_list(APP, "", lat, lon, 4)
            answers.append([(c.instance.cloudlet_key.name, str(c.distance)) for c in found])
        assert answers[0] == answers[1] == answers[2], (lat, lon)
        assert len(answers[0]) == 4


# --- requests and replies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "message"),
    [
        (None, "Missing GpsLocation"),
        (loc_pb2.Loc(latitude=90.0001), "Invalid GpsLocation"),
        (loc_pb2.Loc(latitude=-91), "Invalid GpsLocation"),
        (loc_pb2.Loc(longitude=180.5), "Invalid GpsLocation"),
        (loc_pb2.Loc(longitude=-181), "Invalid GpsLocation"),
        (loc_pb2.Loc(latitude=math.nan), "Invalid GpsLocation"),
    ],
)
def test_validate_location(loc: loc_pb2.Loc | None, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_location(loc)
    assert info.value.message == message


def test_validate_location_accepts_the_edges() -> None:
    for lat, lon in [(0, 0), (90, 180), (-90, -180)]:
        validate_location(loc_pb2.Loc(latitude=lat, longitude=lon))


def test_find_cloudlet_reply_found(world: World) -> None:
    key = add_cloudlet(world, "dmuus", "c1", 50.0, 8.0)
    add_inst(
        world,
        "inst1",
        key,
        50.1,
        8.1,
        ports=[
            appinst_pb2.InstPort(
                proto=appcommon_pb2.L_PROTO_TCP,
                internal_port=80,
                public_port=10080,
                fqdn_prefix="web-",
                end_port=0,
                tls=True,
                nginx=True,
                max_pkt_size=1500,
                id="tcp80",
                service_name="svc",
            ),
            appinst_pb2.InstPort(
                proto=appcommon_pb2.L_PROTO_UDP, internal_port=53, internal_vis_only=True
            ),
        ],
    )
    found = MatchEngine(world, SpatialIndex(world)).find_cloudlet(APP, "", 50, 8)
    cookies: list[Instance] = []

    def cookie(inst: Instance) -> str:
        cookies.append(inst)
        return "ee-cookie"

    reply = find_cloudlet_reply(found, cookie)
    assert reply.status == app_client_pb2.FindCloudletReply.FIND_FOUND
    assert reply.fqdn == "inst1.c1.dmuus.example.net"
    assert list(reply.ports) == [
        appcommon_pb2.AppPort(
            proto=appcommon_pb2.L_PROTO_TCP,
            internal_port=80,
            public_port=10080,
            fqdn_prefix="web-",
            tls=True,
            nginx=True,
            max_pkt_size=1500,
        )
    ]
    assert reply.cloudlet_location == loc_pb2.Loc(latitude=50.1, longitude=8.1)
    assert reply.edge_events_cookie == "ee-cookie"
    assert dict(reply.tags) == {"appinst": "inst1", "appinstorg": "devorg"}
    assert [i.key.name for i in cookies] == ["inst1"]


def test_find_cloudlet_reply_follows_instance_updates(world: World) -> None:
    # the reply template of an instance is rebuilt after every update of the AppInst
    key = add_cloudlet(world, "dmuus", "c1", 0.0, 0.0)
    add_inst(world, "inst1", key, 0.0, 0.0)
    engine = MatchEngine(world, SpatialIndex(world))
    first = find_cloudlet_reply(engine.find_cloudlet(APP, "", 0, 0), lambda inst: "c1")
    assert first.HasField("cloudlet_location")  # present, though all zero
    assert (first.fqdn, first.edge_events_cookie) == ("inst1.c1.dmuus.example.net", "c1")
    updated = app_inst("inst1", key, 0.0, 0.0)
    updated.uri = "moved.example.net"
    updated.mapped_ports.add(proto=appcommon_pb2.L_PROTO_TCP, internal_port=80, public_port=80)
    world.update_app_inst(updated)
    second = find_cloudlet_reply(engine.find_cloudlet(APP, "", 0, 0), lambda inst: "c2")
    assert (second.fqdn, second.edge_events_cookie) == ("moved.example.net", "c2")
    assert [p.public_port for p in second.ports] == [80]
    assert first.fqdn == "inst1.c1.dmuus.example.net"  # replies are independent copies


def test_find_cloudlet_reply_not_found_is_a_reply() -> None:
    reply = find_cloudlet_reply(None, lambda inst: "unused")
    assert reply.status == app_client_pb2.FindCloudletReply.FIND_NOTFOUND
    assert reply.HasField("cloudlet_location")
    assert reply.cloudlet_location == loc_pb2.Loc()
    assert not reply.fqdn
    assert not reply.ports
    assert not reply.edge_events_cookie
    assert not reply.tags


def test_candidate_reports_padded_distance(world: World) -> None:
    add_site(world, "azure", "cloud", 0, lon_at(10))
    found = MatchEngine(world, LinearScan(world)).app_inst_list(APP, "dmuus", 0, 0, 0)
    assert [(round(c.distance, 6), c.carrier) for c in found] == [(110.0, "azure")]
    assert isinstance(found[0], Candidate)
