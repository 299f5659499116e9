"""The spatial index and the linear scan give identical answers on random worlds.

Worlds are random Apps, cloudlets, operators (public clouds included), alliance
organisations, operator codes and states over a continent, with co-located cloudlets and
exact duplicates to provoke ties; the world is then mutated (moves, deletes, state and
alliance changes) so the index's incremental maintenance is exercised too. Answers are
compared for FindCloudlet and GetAppInstList, deterministic and randomised (same seed).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import appinst_pb2, cloudlet_pb2, common_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.dme._ranking import (
    Candidate,
    CandidateSearch,
    LinearScan,
    MatchEngine,
    SpatialIndex,
)
from services.dme._world import AppKey, World
from tests.unit.services.dme.builders import (
    add_app,
    add_cloudlet,
    add_operator_code,
    app_inst,
    cloudlet_key,
)

APPS = [AppKey("devorg", "app", "1.0"), AppKey("devorg", "app", "2.0")]
OPERATORS = ["dmuus", "opbeta", "opgamma", "azure", "gcp", "aws"]
CARRIERS = ["", "dmuus", "opbeta", "azure", "gcp", "310260", "unknown"]

# North America, a bit beyond, so some queries fall outside the cloudlets' hull.
lat_st = st.floats(20.0, 55.0, allow_nan=False)
lon_st = st.floats(-130.0, -60.0, allow_nan=False)
cloudlet_state_st = st.sampled_from(
    [appcommon_pb2.CLOUDLET_STATE_READY] * 6
    + [appcommon_pb2.CLOUDLET_STATE_OFFLINE, appcommon_pb2.CLOUDLET_STATE_NOT_PRESENT, None]
)
maintenance_st = st.sampled_from(
    [appcommon_pb2.NORMAL_OPERATION] * 5
    + [appcommon_pb2.UNDER_MAINTENANCE, appcommon_pb2.CRM_UNDER_MAINTENANCE]
)
health_st = st.sampled_from(
    [appcommon_pb2.HEALTH_CHECK_OK] * 5
    + [appcommon_pb2.HEALTH_CHECK_UNKNOWN, appcommon_pb2.HEALTH_CHECK_SERVER_FAIL]
)
tracked_st = st.sampled_from(
    [common_pb2.TrackedState.READY] * 6 + [common_pb2.TrackedState.CREATING]
)


@dataclass(frozen=True)
class Site:
    org: str
    name: str
    lat: float
    lon: float
    alliances: tuple[str, ...]
    state: int | None
    maintenance: int


@st.composite
def sites(draw: st.DrawFn) -> list[Site]:
    count = draw(st.integers(1, 40))
    out: list[Site] = []
    for i in range(count):
        if out and draw(st.integers(0, 4)) == 0:
            # co-located with an earlier cloudlet (exact ties), or just beside it
            base = draw(st.sampled_from(out))
            jitter = draw(st.sampled_from([0.0, 0.0, 0.001, 0.005, 0.02]))
            lat, lon = base.lat + jitter, base.lon - jitter
        elif draw(st.integers(0, 9)) == 0:
            # anywhere: poles, the antimeridian, the far side of the globe
            lat, lon = draw(st.floats(-90.0, 90.0)), draw(st.floats(-180.0, 180.0))
        else:
            lat, lon = draw(lat_st), draw(lon_st)
        out.append(
            Site(
                org=draw(st.sampled_from(OPERATORS)),
                name=f"cloudlet{i}",
                lat=lat,
                lon=lon,
                alliances=tuple(
                    draw(st.lists(st.sampled_from(OPERATORS), max_size=2, unique=True))
                ),
                state=draw(cloudlet_state_st),
                maintenance=draw(maintenance_st),
            )
        )
    return out


@dataclass(frozen=True)
class Inst:
    name: str
    app: int
    site: int
    health: int
    tracked: int
    offset: float  # instance location may differ from the Cloudlet object's


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Site], list[Inst]]:
    site_list = draw(sites())
    insts = [
        Inst(
            name=f"inst{i}",
            app=draw(st.integers(0, len(APPS) - 1)),
            site=draw(st.integers(0, len(site_list) - 1)),
            health=draw(health_st),
            tracked=draw(tracked_st),
            offset=draw(st.sampled_from([0.0, 0.0, 0.0, 0.01])),
        )
        for i in range(draw(st.integers(0, 60)))
    ]
    return site_list, insts


def build(site_list: list[Site], insts: list[Inst]) -> World:
    world = World()
    for app in APPS:
        add_app(world, app)
    add_operator_code(world, "310260", "dmuus")
    for site in site_list:
        add_cloudlet(
            world,
            site.org,
            site.name,
            site.lat,
            site.lon,
            alliances=site.alliances,
            state=site.state,
            maintenance=site.maintenance,
        )
    for inst in insts:
        site = site_list[inst.site]
        world.update_app_inst(
            app_inst(
                inst.name,
                cloudlet_key(site.org, site.name),
                site.lat + inst.offset,
                site.lon,
                app=APPS[inst.app],
                health=inst.health,
                state=inst.tracked,
            )
        )
    return world


Mutation = tuple[str, int, float, float, int]
mutation_st = st.tuples(
    st.sampled_from(["move", "delete", "health", "cloudlet_state", "alliances", "prune"]),
    st.integers(0, 10_000),
    lat_st,
    lon_st,
    st.integers(0, 10_000),
)


def mutate(world: World, site_list: list[Site], insts: list[Inst], change: Mutation) -> None:
    kind, pick, lat, lon, extra = change
    if kind in ("move", "delete", "health") and insts:
        inst = insts[pick % len(insts)]
        site = site_list[inst.site]
        key = cloudlet_key(site.org, site.name)
        if kind == "move":
            world.update_app_inst(app_inst(inst.name, key, lat, lon, app=APPS[inst.app]))
        elif kind == "delete":
            world.delete_app_inst(appinst_pb2.AppInstKey(name=inst.name, organization="devorg"))
        else:
            health = [appcommon_pb2.HEALTH_CHECK_OK, appcommon_pb2.HEALTH_CHECK_SERVER_FAIL]
            world.update_app_inst(
                app_inst(
                    inst.name,
                    key,
                    site.lat + inst.offset,
                    site.lon,
                    app=APPS[inst.app],
                    health=health[extra % 2],
                )
            )
    elif kind == "cloudlet_state":
        site = site_list[pick % len(site_list)]
        state = [appcommon_pb2.CLOUDLET_STATE_READY, appcommon_pb2.CLOUDLET_STATE_OFFLINE]
        world.update_cloudlet_info(
            cloudlet_pb2.CloudletInfo(key=cloudlet_key(site.org, site.name), state=state[extra % 2])
        )
    elif kind == "alliances":
        site = site_list[pick % len(site_list)]
        world.update_cloudlet(
            cloudlet_pb2.Cloudlet(
                key=cloudlet_key(site.org, site.name),
                location=loc_pb2.Loc(latitude=site.lat, longitude=site.lon),
                alliance_orgs=[OPERATORS[extra % len(OPERATORS)]],
            )
        )
    elif kind == "prune" and insts:
        keep = [
            appinst_pb2.AppInstKey(name=i.name, organization="devorg")
            for n, i in enumerate(insts)
            if (n + pick) % 3
        ]
        world.prune_app_insts(keep)


def answer(found: list[Candidate]) -> list[tuple[float, str, str]]:
    return [(c.distance, c.instance.key_string, c.carrier) for c in found]


Query = tuple[float, float, str, int]
query_st = st.tuples(
    st.one_of(lat_st, st.floats(-90.0, 90.0)),
    st.one_of(lon_st, st.floats(-180.0, 180.0)),
    st.sampled_from(CARRIERS),
    st.integers(0, 6),
)


def assert_same(world: World, indexes: list[SpatialIndex], queries: list[Query]) -> None:
    scan = LinearScan(world)
    searches: list[CandidateSearch] = [scan, *indexes]
    for lat, lon, carrier, limit in queries:
        for app in APPS:
            expected_window = scan.candidates(app, lat, lon, world.translate_carrier(carrier), 1)
            for index in indexes:
                window = index.candidates(app, lat, lon, world.translate_carrier(carrier), 1)
                assert answer(window) == answer(expected_window)
            engines = [MatchEngine(world, scan)] + [MatchEngine(world, i) for i in indexes]
            finds = [e.find_cloudlet(app, carrier, lat, lon) for e in engines]
            assert all(f == finds[0] for f in finds), (lat, lon, carrier, finds)
            lists = [e.app_inst_list(app, carrier, lat, lon, limit) for e in engines]
            assert all(answer(x) == answer(lists[0]) for x in lists), (lat, lon, carrier, limit)
            seed = hash((lat, lon, carrier, limit)) & 0xFFFF
            randomised = [
                MatchEngine(world, s, rng=random.Random(seed)).app_inst_list(  # noqa: S311
                    app, carrier, lat, lon, limit
                )
                for s in searches
            ]
            assert all(answer(x) == answer(randomised[0]) for x in randomised)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    world_spec=worlds(),
    queries=st.lists(query_st, min_size=1, max_size=6),
    mutations=st.lists(mutation_st, max_size=8),
)
def test_index_and_scan_agree_on_random_worlds(
    world_spec: tuple[list[Site], list[Inst]],
    queries: list[Query],
    mutations: list[Mutation],
) -> None:
    site_list, insts = world_spec
    world = build(site_list, insts)
    # Default tuning (changes wait in the overflow list) and a rebuilt-every-time tree
    # with one-point leaves (the deepest trees these sizes allow).
    indexes = [SpatialIndex(world), SpatialIndex(world, leaf_size=1, min_rebuild=0)]
    assert_same(world, indexes, queries)
    for change in mutations:
        mutate(world, site_list, insts, change)
    assert_same(world, indexes, queries)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), leaf_size=st.sampled_from([2, 8]))
def test_index_and_scan_agree_on_large_worlds(seed: int, leaf_size: int) -> None:
    rng = random.Random(seed)  # noqa: S311 -- world generation, reproducible by seed
    site_list: list[Site] = []
    for i in range(600):
        if i and rng.random() < 0.2:  # clusters of co-located cloudlets
            base = site_list[rng.randrange(i)]
            lat, lon = base.lat, base.lon + rng.choice([0.0, 0.004])
        else:
            lat, lon = rng.uniform(20, 55), rng.uniform(-130, -60)
        site_list.append(
            Site(
                org=rng.choice(OPERATORS),
                name=f"cloudlet{i}",
                lat=lat,
                lon=lon,
                alliances=tuple(rng.sample(OPERATORS, rng.choice([0, 0, 1]))),
                state=appcommon_pb2.CLOUDLET_STATE_READY
                if rng.random() < 0.9
                else appcommon_pb2.CLOUDLET_STATE_OFFLINE,
                maintenance=appcommon_pb2.NORMAL_OPERATION,
            )
        )
    insts = [
        Inst(f"inst{i}", rng.randrange(2), i, appcommon_pb2.HEALTH_CHECK_OK, 5, 0.0)
        for i in range(len(site_list))
    ]
    world = build(site_list, insts)
    indexes = [SpatialIndex(world, leaf_size=leaf_size, min_rebuild=0)]
    queries = [
        (rng.uniform(15, 60), rng.uniform(-135, -55), rng.choice(CARRIERS), rng.randrange(6))
        for _ in range(25)
    ]
    assert_same(world, indexes, queries)
