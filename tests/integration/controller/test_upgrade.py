"""Data-model version check and upgrades on a real etcd (controller.md §2.8, §10.1-2).

Every stored object below is composed here, in the format controller.md §2.3 describes for
the original Controller's etcd (Go JSON, snake_case members), with our own organizations,
cloudlets and values, trimmed to the fields each upgrade reads or writes. The expected
results follow from what `services/controller/_upgrade.py` documents for each upgrade;
where a name depends on a cloudlet-key hash, the test computes it from the documented
formula (sha256 of `name::organization`, first 8 hex digits).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from edgeproto import app_pb2, clusterinst_pb2, zone_pb2, zonepool_pb2

from edge_cloud.config import load
from edge_cloud.errors import FailedPrecondition, InvalidArgument
from edge_cloud.localservers import ServerProcess
from edge_cloud.objects import codec
from edge_cloud.server import serve
from edge_cloud.store import EtcdStore, Store
from services.controller import _upgrade
from services.controller._startup import (
    LEGACY_VERSION_KEY,
    VERSION_HASH,
    VERSION_ID,
    VERSION_KEY,
    check_version,
    version_value,
)
from services.controller._upgrade import LOCK_KEY, UPGRADES, Tally, Upgrade, UpgradeFn
from services.controller.config import ControllerConfig
from services.controller.daemon import ControllerDaemon

MISMATCH = (
    "Running version {target} doesn't match the etcd database version {stored}, "
    "and autoUpgrade is not enabled"
)

# --- a made-up upgrade list for the runner -----------------------------------------------------

REGISTRY_IDS = (0, 3, 5, 6, 9, 14, 15, 16, 19, 22, 27, 31, 35)
"""Ids with gaps; 0, 5, 15, 16 and 22 carry no function (they only move the version)."""
WITH_FN = frozenset({3, 6, 9, 14, 19, 27, 31, 35})
ALL_FNS = sorted(WITH_FN)
TARGET = {"Hash": "h35", "ID": 35}
BROKEN = '1/Gadget/{"name":"bent-antenna"} has no serial number'


def recording_registry(done: list[int], *, fail_at: int | None = None) -> list[Upgrade]:
    """Our list ending at 35 whose functions record their id (or fail at `fail_at`).

    Hashes are `h<id>` and names `Step<id>`, so a message shows which of the two it took.
    """

    def record(upgrade_id: int) -> UpgradeFn:
        async def fn(store: Store, given: int) -> Tally:
            assert given == upgrade_id
            if upgrade_id == fail_at:
                raise InvalidArgument(BROKEN)
            done.append(given)
            await asyncio.sleep(0.01)  # gives a concurrent upgrader the chance to interleave
            return Tally(read=1)

        return fn

    return [
        Upgrade(i, f"h{i}", f"Step{i}", record(i) if i in WITH_FN else None) for i in REGISTRY_IDS
    ]


async def stored_version(store: Store) -> dict[str, Any]:
    kv = await store.get(VERSION_KEY)
    assert kv is not None
    data: dict[str, Any] = json.loads(kv.value)
    return data


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def put_json(store: Store, key: str, value: dict[str, Any]) -> None:
    await store.put(key, compact(value).encode())


async def dump(store: Store, prefix: str = "1/") -> dict[str, tuple[dict[str, Any], int]]:
    items, _ = await store.range(prefix)
    return {
        kv.key: (json.loads(kv.value), kv.mod_revision)
        for kv in items
        if kv.key not in (VERSION_KEY, LEGACY_VERSION_KEY)
    }


async def run_twice(
    store: Store, fn: Callable[[Store, int], Awaitable[Tally]], upgrade_id: int
) -> dict[str, dict[str, Any]]:
    """Run an upgrade, then again: the second run must change nothing (idempotence)."""
    await fn(store, upgrade_id)
    first = await dump(store)
    again = await fn(store, upgrade_id)
    assert await dump(store) == first
    assert (again.rewritten, again.created, again.deleted) == (0, 0, 0)
    return {key: value for key, (value, _) in first.items()}


# --- §10.1 / §10.2: reading the version and choosing the upgrades ---------------------------


def test_the_registry_is_the_originals_list_and_ends_at_the_compiled_version() -> None:
    assert [u.id for u in UPGRADES] == [0, *range(52, 63)]
    assert (UPGRADES[-1].hash, UPGRADES[-1].id) == (VERSION_HASH, VERSION_ID)
    named = {u.id: u.name for u in UPGRADES if u.fn is not None}
    assert named == {
        53: "UpgradeCrmOnEdge",
        54: "AddStaticFqdn",
        55: "InstanceKeysRegionScopedName",
        56: "ZoneFeature",
        57: "NodePoolsFeature",
        58: "AppObjID",
    }


async def test_empty_database_gets_the_target_and_runs_nothing(etcd_store: EtcdStore) -> None:
    done: list[int] = []
    await check_version(etcd_store, auto_upgrade=True, upgrades=recording_registry(done))
    assert done == []
    assert await stored_version(etcd_store) == TARGET
    await check_version(etcd_store, auto_upgrade=True, upgrades=recording_registry(done))
    assert done == []  # and a matching version is left alone


async def test_empty_database_gets_the_compiled_version(etcd_store: EtcdStore) -> None:
    await check_version(etcd_store)
    assert await stored_version(etcd_store) == {"Hash": VERSION_HASH, "ID": 62}


async def test_legacy_version_is_read_as_id_0(etcd_store: EtcdStore) -> None:
    await etcd_store.put(LEGACY_VERSION_KEY, b"3f9c0d7e")
    with pytest.raises(FailedPrecondition) as err:
        await check_version(etcd_store, upgrades=recording_registry([]))
    assert err.value.message == MISMATCH.format(target="h35", stored="3f9c0d7e")
    assert await etcd_store.get(VERSION_KEY) is None  # refusing writes nothing

    done: list[int] = []
    await check_version(etcd_store, auto_upgrade=True, upgrades=recording_registry(done))
    assert done == ALL_FNS  # id 0: every function above it
    assert await stored_version(etcd_store) == TARGET


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (35, []),
        (31, [35]),
        (19, [27, 31, 35]),
        (16, [19, 27, 31, 35]),  # an entry without a function
        (12, [14, 19, 27, 31, 35]),  # an id the list does not have
        (5, [6, 9, 14, 19, 27, 31, 35]),
        (0, ALL_FNS),
    ],
)
async def test_upgrades_above_the_stored_id_run_in_order(
    etcd_store: EtcdStore, start: int, expected: list[int]
) -> None:
    await etcd_store.put(VERSION_KEY, version_value(f"h{start}", start))
    done: list[int] = []
    await check_version(etcd_store, auto_upgrade=True, upgrades=recording_registry(done))
    assert done == expected
    assert await stored_version(etcd_store) == TARGET


async def test_mismatch_without_auto_upgrade_refuses_with_the_originals_message(
    etcd_store: EtcdStore,
) -> None:
    await etcd_store.put(VERSION_KEY, version_value("a1b2c3", 41))
    with pytest.raises(FailedPrecondition) as err:
        await check_version(etcd_store)
    assert err.value.message == MISMATCH.format(target=VERSION_HASH, stored="a1b2c3")
    assert await stored_version(etcd_store) == {"Hash": "a1b2c3", "ID": 41}


async def test_a_newer_database_is_refused_even_with_auto_upgrade(etcd_store: EtcdStore) -> None:
    await etcd_store.put(VERSION_KEY, version_value("tomorrow", 63))
    with pytest.raises(FailedPrecondition, match=r"tomorrow \(63\), not older than"):
        await check_version(etcd_store, auto_upgrade=True)


async def test_a_failed_upgrade_stops_and_keeps_the_last_completed_id(
    etcd_store: EtcdStore,
) -> None:
    await etcd_store.put(VERSION_KEY, version_value("h9", 9))
    done: list[int] = []
    with pytest.raises(FailedPrecondition) as err:
        await check_version(
            etcd_store, auto_upgrade=True, upgrades=recording_registry(done, fail_at=19)
        )
    assert done == [14]
    assert err.value.message == (
        f"upgrade 19 Step19 failed: {BROKEN}; the database stays at data model version 16, "
        "fix the data and start again with --auto-upgrade"
    )  # 15 and 16 have no function but were recorded: the version is the one before 19
    assert await stored_version(etcd_store) == {"Hash": "h16", "ID": 16}
    assert await etcd_store.get(LOCK_KEY) is None  # the lock went with the failure

    done.clear()  # the next start resumes after 16
    await check_version(etcd_store, auto_upgrade=True, upgrades=recording_registry(done))
    assert done == [19, 27, 31, 35]


async def test_two_auto_upgrading_controllers_run_each_upgrade_once(
    etcd_store: EtcdStore,
) -> None:
    await etcd_store.put(VERSION_KEY, version_value("h9", 9))
    done: list[int] = []
    registry = recording_registry(done)
    await asyncio.wait_for(
        asyncio.gather(
            check_version(etcd_store, auto_upgrade=True, upgrades=registry, holder="ctrl-a"),
            check_version(etcd_store, auto_upgrade=True, upgrades=registry, holder="ctrl-b"),
        ),
        timeout=20,
    )
    assert done == [14, 19, 27, 31, 35]
    assert await stored_version(etcd_store) == TARGET
    assert await etcd_store.get(LOCK_KEY) is None


@pytest.mark.parametrize("holder_finished", [True, False])
async def test_an_upgrade_waits_for_the_lock_holder(
    etcd_store: EtcdStore, holder_finished: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=_upgrade.__name__)
    await etcd_store.put(VERSION_KEY, version_value("h9", 9))
    other = await etcd_store.grant(10)
    holder = "ctrl-west@192.0.2.17:55101"
    await etcd_store.put(LOCK_KEY, holder.encode(), lease=other)
    done: list[int] = []
    task = asyncio.create_task(
        check_version(etcd_store, auto_upgrade=True, upgrades=recording_registry(done))
    )
    try:
        await asyncio.sleep(0.3)
        assert not task.done()
        assert done == []
        assert f"waiting for {holder} to finish upgrading" in caplog.text
        if holder_finished:
            await etcd_store.put(VERSION_KEY, version_value("h35", 35))
        await etcd_store.revoke(other)  # finished, or died: its lease goes either way
        await asyncio.wait_for(task, timeout=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert done == ([] if holder_finished else [14, 19, 27, 31, 35])
    assert await stored_version(etcd_store) == TARGET


# --- the controller flags ------------------------------------------------------------------------


def test_the_originals_flags_are_accepted() -> None:
    cfg = load(ControllerConfig, ["-autoUpgrade", "-skipVersionCheck"], {})
    assert (cfg.auto_upgrade, cfg.skip_version_check) == (True, True)
    assert not load(ControllerConfig, [], {}).auto_upgrade


async def _start_controller(
    etcd_server: ServerProcess, redis_server: ServerProcess, namespace: str, *flags: str
) -> None:
    """Start the Controller in-process and stop it once it serves (or re-raise its failure)."""
    argv = [
        "--api-addr", "127.0.0.1:0",
        "--notify-addr", "127.0.0.1:0",
        "--metrics-addr", "",
        "--http-addr", "127.0.0.1:0",
        "--redis-standalone-addr", redis_server.client_url,
        "--etcd-namespace", namespace,
        "--shutdown-grace", "0",
        *flags,
    ]  # fmt: skip
    cfg = load(ControllerConfig, argv, {"EDGE_ETCD_URLS": etcd_server.client_url})
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(ControllerDaemon(cfg), ready, stop=stop))
    waiter = asyncio.create_task(ready.wait())
    try:
        finished, _ = await asyncio.wait({task, waiter}, timeout=30, return_when="FIRST_COMPLETED")
        assert finished, "the controller neither served nor failed within 30 s"
        if task in finished:
            task.result()  # raises the start failure
        stop.set()
        await asyncio.wait_for(task, timeout=20)
    finally:
        waiter.cancel()
        stop.set()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_controller_start_refuses_a_mismatch_unless_told_to_skip_the_check(
    etcd_server: ServerProcess, redis_server: ServerProcess
) -> None:
    namespace = f"/test/{uuid.uuid4().hex[:12]}/"
    async with await EtcdStore.connect(etcd_server.client_url, namespace=namespace) as store:
        try:
            await store.put(VERSION_KEY, version_value("a1b2c3", 41))
            with pytest.raises(FailedPrecondition) as err:
                await _start_controller(etcd_server, redis_server, namespace)
            assert err.value.message == MISMATCH.format(target=VERSION_HASH, stored="a1b2c3")

            await _start_controller(etcd_server, redis_server, namespace, "-skipVersionCheck")
            assert await stored_version(store) == {"Hash": "a1b2c3", "ID": 41}  # untouched
        finally:
            await store.delete_prefix("")


async def test_controller_started_with_auto_upgrade_upgrades_then_serves(
    etcd_server: ServerProcess, redis_server: ServerProcess
) -> None:
    namespace = f"/test/{uuid.uuid4().hex[:12]}/"
    async with await EtcdStore.connect(etcd_server.client_url, namespace=namespace) as store:
        try:
            await store.put(VERSION_KEY, version_value(UPGRADES[7].hash, 57))
            app_key = {"organization": "ferncastle", "name": "tideclock", "version": "3.2"}
            app = f"1/App/{compact(app_key)}"
            await put_json(store, app, {"key": app_key, "deployment": "docker"})
            await _start_controller(etcd_server, redis_server, namespace, "-autoUpgrade")
            assert await stored_version(store) == {"Hash": VERSION_HASH, "ID": VERSION_ID}
            kv = await store.get(app)
            assert kv is not None
            assert len(json.loads(kv.value)["obj_id"]) == 26
        finally:
            await store.delete_prefix("")


# --- the upgrade functions on old formats ------------------------------------------------------

HARBOR = {"organization": "tidewater", "name": "harbor-east"}
LAKESIDE = {"organization": "tidewater", "name": "lakeside"}
FQDN = "shared.harbor-east-tidewater.mec.example.org"


def etcd_key(type_name: str, key: dict[str, Any]) -> str:
    return f"1/{type_name}/{compact(key)}"


async def test_53_upgrade_crm_on_edge(etcd_store: EtcdStore) -> None:
    cloudlet = etcd_key("Cloudlet", HARBOR)
    done = etcd_key("Cloudlet", {"organization": "tidewater", "name": "pier-4"})
    app_inst = etcd_key("AppInst", {"name": "gauge-feed", "organization": "kestrelworks"})
    cluster = etcd_key("ClusterInst", {"name": "tide-k8s", "organization": "kestrelworks"})
    await put_json(etcd_store, cloudlet, {"key": HARBOR, "platform_type": "openstack"})
    await put_json(etcd_store, done, {"key": {"name": "pier-4"}, "obj_id": "P4"})
    await put_json(etcd_store, app_inst, {"key": {"name": "gauge-feed"}, "cloudlet_key": HARBOR})
    await put_json(etcd_store, cluster, {"key": {"name": "tide-k8s"}, "created_at": ""})

    after = await run_twice(etcd_store, _upgrade.upgrade_crm_on_edge, 53)
    assert after[cloudlet]["crm_on_edge"] is True
    assert len(after[cloudlet]["obj_id"]) == 26
    assert after[cloudlet]["platform_type"] == "openstack"
    assert after[done] == {"key": {"name": "pier-4"}, "obj_id": "P4"}  # already upgraded
    assert len(after[app_inst]["obj_id"]) == 26
    assert after[app_inst]["cloudlet_key"] == HARBOR  # a field our AppInst key lacks
    assert len(after[cluster]["obj_id"]) == 26


async def test_54_add_static_fqdn(etcd_store: EtcdStore) -> None:
    cloudlet = etcd_key("Cloudlet", HARBOR)
    cluster = etcd_key("ClusterInst", {"name": "tide-k8s", "organization": "kestrelworks"})
    app_inst = etcd_key("AppInst", {"name": "gauge-feed", "organization": "kestrelworks"})
    no_uri = etcd_key("AppInst", {"name": "batch-only", "organization": "kestrelworks"})
    await put_json(etcd_store, cloudlet, {"key": HARBOR, "root_lb_fqdn": FQDN})
    await put_json(etcd_store, cluster, {"key": {"name": "tide-k8s"}, "fqdn": "tide-k8s." + FQDN})
    await put_json(etcd_store, app_inst, {"key": {"name": "gauge-feed"}, "uri": FQDN})
    await put_json(etcd_store, no_uri, {"key": {"name": "batch-only"}})

    after = await run_twice(etcd_store, _upgrade.add_static_fqdn, 54)
    assert after[cloudlet]["static_root_lb_fqdn"] == FQDN
    assert after[cluster]["static_fqdn"] == "tide-k8s." + FQDN
    assert after[app_inst]["static_uri"] == FQDN
    assert after[no_uri] == {"key": {"name": "batch-only"}}


def _documented_hash(cloudlet: dict[str, str]) -> str:
    """The hash `_upgrade.cloudlet_key_hash` documents, computed here independently."""
    text = f"{cloudlet['name']}::{cloudlet['organization']}"
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@pytest.mark.parametrize(
    "cloudlet",
    [HARBOR, {"organization": "bluefjord", "name": "skerry-11"}, {"organization": "x", "name": ""}],
)
def test_cloudlet_key_hash_follows_the_documented_formula(cloudlet: dict[str, str]) -> None:
    assert _upgrade.cloudlet_key_hash(cloudlet) == _documented_hash(cloudlet)
    assert len(_upgrade.cloudlet_key_hash(cloudlet)) == 8
    swapped = {"organization": cloudlet["name"], "name": cloudlet["organization"]}
    if swapped != cloudlet:
        assert _upgrade.cloudlet_key_hash(swapped) != _upgrade.cloudlet_key_hash(cloudlet)


CLUSTER_DEV = "orchardlabs"
APP_DEV = "kestrelworks"
PLATFORM_ORG = "edgecloudorg"
"""Reservable clusters belong to the platform organization (controller.md §3.8)."""
SPREAD = [
    {"organization": "tidewater", "name": name}
    for name in ("anchor-bay", "breakwater", "cove-3", "dockside", "estuary", "fjordline", "gull")
]
"""Seven cloudlets in key order: the first keeps a clashing name, five get 1-5, the last a hash."""
SHARED_SITE = {"organization": "granitenet", "name": "quarry-2"}


def _old_cluster_key(name: str, cloudlet: dict[str, str], org: str = CLUSTER_DEV) -> dict[str, Any]:
    return {"cluster_key": {"name": name, "organization": org}, "cloudlet_key": cloudlet}


def _old_app_inst_key(name: str, cloudlet: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "organization": APP_DEV, "cloudlet_key": cloudlet}


async def _put_region_scoped_fixture(store: Store) -> dict[str, str]:
    """Old-format instances whose names clash across cloudlets, and the refs naming them.

    On every cloudlet of SPREAD: a cluster `edge-cache` and a VM AppInst `ingest`; on the
    first only, also `solo-db` and `ledger` (unique region-wide). Their CloudletRefs list
    them, ClusterRefs of `solo-db` and of the last `edge-cache` exist in the old keyed form,
    and an AppInstRefs names the last `ingest` by its old key. On SHARED_SITE: reservable
    clusters, one old-format, one a broken earlier build of 55 renamed, a cluster-key-v1
    ClusterRefs of a reservable cluster that is gone and two AppInsts that still point at
    it. Returns the etcd keys the assertions need.
    """
    obj = 0
    for cluster_name, app_name, on in [
        ("solo-db", "ledger", SPREAD[:1]),
        ("edge-cache", "ingest", SPREAD),
    ]:
        for cloudlet in on:
            obj += 1
            ck = _old_cluster_key(cluster_name, cloudlet)
            await put_json(store, etcd_key("ClusterInst", ck), {"key": ck, "obj_id": f"c{obj}"})
            ak = _old_app_inst_key(app_name, cloudlet)
            await put_json(store, etcd_key("AppInst", ak), {"key": ak, "obj_id": f"a{obj}"})
    for cloudlet in SPREAD:
        first = cloudlet == SPREAD[0]
        clusters = ["solo-db", "edge-cache"] if first else ["edge-cache"]
        apps = ["ledger", "ingest"] if first else ["ingest"]
        await put_json(
            store,
            etcd_key("CloudletRefs", cloudlet),
            {
                "key": cloudlet,
                "cluster_insts": [{"name": n, "organization": CLUSTER_DEV} for n in clusters],
                "vm_app_insts": [{"name": n, "organization": APP_DEV} for n in apps],
            },
        )
    for cluster_name, app_name, cloudlet in [
        ("solo-db", "ledger", SPREAD[0]),
        ("edge-cache", "ingest", SPREAD[-1]),
    ]:
        rk = _old_cluster_key(cluster_name, cloudlet)
        await put_json(
            store,
            etcd_key("ClusterRefs", rk),
            {"key": rk, "apps": [{"name": app_name, "organization": APP_DEV}]},
        )
    # a cluster-key-v1 refs record (organization beside the cluster key) of a cluster gone
    v1 = {"cluster_key": {"name": "reservable1"}, "cloudlet_key": SHARED_SITE,
          "organization": PLATFORM_ORG}  # fmt: skip
    await put_json(store, etcd_key("ClusterRefs", v1), {"key": v1, "apps": [{"stale": True}]})
    agent = _old_app_inst_key("metrics-agent", SPREAD[0])
    await put_json(store, etcd_key("AppInst", agent), {
        "key": agent, "obj_id": "agent",
        "cluster_key": {"name": "solo-db", "organization": CLUSTER_DEV}})  # fmt: skip
    for name in ("nightly-a", "nightly-b"):
        ak = _old_app_inst_key(name, SHARED_SITE)
        await put_json(store, etcd_key("AppInst", ak), {
            "key": ak, "obj_id": name,
            "cluster_key": {"name": "reservable1", "organization": PLATFORM_ORG}})  # fmt: skip
    old_res = _old_cluster_key("reservable2", SHARED_SITE, PLATFORM_ORG)
    await put_json(store, etcd_key("ClusterInst", old_res),
                   {"key": old_res, "reservable": True, "obj_id": "res2"})  # fmt: skip
    bad = {"name": "reservable42", "organization": PLATFORM_ORG}
    await put_json(store, etcd_key("ClusterInst", bad), {
        "key": bad, "cloudlet_key": SHARED_SITE, "reservable": True, "obj_id": "res4",
        "annotations": {"cloudlet-scoped-name": "reservable4"}})  # fmt: skip
    await put_json(store, etcd_key("CloudletRefs", SHARED_SITE),
                   {"key": SHARED_SITE, "cluster_insts": [bad]})  # fmt: skip
    app_refs = etcd_key("AppInstRefs", {"organization": APP_DEV, "name": "ingest-app",
                                        "version": "2.1"})  # fmt: skip
    old_inst = compact(_old_app_inst_key("ingest", SPREAD[-1]))
    await put_json(store, app_refs, {"key": {"name": "ingest-app"}, "insts": {old_inst: 3}})
    return {"app_refs": app_refs, "bad": etcd_key("ClusterInst", bad)}


async def test_55_instance_keys_region_scoped_name(etcd_store: EtcdStore) -> None:
    """Clashing names get digits then the cloudlet hash; refs and reservable names follow."""
    assert sorted(SPREAD, key=lambda c: compact(_old_cluster_key("edge-cache", c))) == SPREAD
    fixture = await _put_region_scoped_fixture(etcd_store)

    after = await run_twice(etcd_store, _upgrade.instance_keys_region_scoped_name, 55)

    last_hash = _documented_hash(SPREAD[-1])
    suffixes = ["", "1", "2", "3", "4", "5", f"-{last_hash}"]
    for cloudlet, suffix in zip(SPREAD, suffixes, strict=True):
        cluster_name, app_name = f"edge-cache{suffix}", f"ingest{suffix}"
        ci = after[etcd_key("ClusterInst", {"name": cluster_name, "organization": CLUSTER_DEV})]
        ai = after[etcd_key("AppInst", {"name": app_name, "organization": APP_DEV})]
        for inst, scoped in ((ci, "edge-cache"), (ai, "ingest")):
            assert inst["cloudlet_key"] == cloudlet
            expected = {"cloudlet-scoped-name": scoped} if suffix else {}
            assert inst.get("annotations", {}) == expected
        assert ci["key"] == {"name": cluster_name, "organization": CLUSTER_DEV}
        assert ai["key"] == {"name": app_name, "organization": APP_DEV}
        refs = after[etcd_key("CloudletRefs", cloudlet)]
        assert refs["cluster_insts"][-1] == {"name": cluster_name, "organization": CLUSTER_DEV}
        assert refs["vm_app_insts"][-1] == {"name": app_name, "organization": APP_DEV}
    first_refs = after[etcd_key("CloudletRefs", SPREAD[0])]
    assert first_refs["cluster_insts"][0] == {"name": "solo-db", "organization": CLUSTER_DEV}
    assert first_refs["vm_app_insts"][0] == {"name": "ledger", "organization": APP_DEV}

    old_keys = ("1/ClusterInst/", "1/AppInst/", "1/ClusterRefs/")
    assert not [k for k in after if k.startswith(old_keys) and '"cloudlet_key":{' in k]
    hashed_cluster = {"name": f"edge-cache-{last_hash}", "organization": CLUSTER_DEV}
    hashed_app = {"name": f"ingest-{last_hash}", "organization": APP_DEV}
    solo = {"name": "solo-db", "organization": CLUSTER_DEV}
    assert after[etcd_key("ClusterRefs", hashed_cluster)]["apps"] == [hashed_app]
    assert after[etcd_key("ClusterRefs", solo)]["apps"] == [
        {"name": "ledger", "organization": APP_DEV},
        {"name": "metrics-agent", "organization": APP_DEV},  # the repair added it
    ]
    assert sorted(k for k in after if k.startswith("1/ClusterRefs/")) == sorted(
        [etcd_key("ClusterRefs", hashed_cluster), etcd_key("ClusterRefs", solo)]
    )  # the reservable1 records went: that cluster does not exist
    assert after[fixture["app_refs"]]["insts"] == {compact(hashed_app): 3}
    for name in ("nightly-a", "nightly-b"):  # re-keyed, the cloudlet moved into the body
        nightly = after[etcd_key("AppInst", {"name": name, "organization": APP_DEV})]
        assert (nightly["key"]["name"], nightly["cloudlet_key"]) == (name, SHARED_SITE)

    site_hash = _documented_hash(SHARED_SITE)
    res2 = after[etcd_key("ClusterInst", {"name": f"reservable2-{site_hash}",
                                          "organization": PLATFORM_ORG})]  # fmt: skip
    assert res2["annotations"] == {"cloudlet-scoped-name": "reservable2"}
    assert res2["cloudlet_key"] == SHARED_SITE
    res4_key = {"name": f"reservable4-{site_hash}", "organization": PLATFORM_ORG}
    res4 = after[etcd_key("ClusterInst", res4_key)]
    assert res4["annotations"] == {
        "cloudlet-scoped-name": "reservable4",
        "bad-upgrade55-name": "reservable42",
    }
    assert fixture["bad"] not in after
    assert after[etcd_key("CloudletRefs", SHARED_SITE)]["cluster_insts"] == [res4_key]


@pytest.mark.parametrize("type_name", ["AppInst", "ClusterInst"])
async def test_55_gives_up_when_every_candidate_name_is_taken(
    etcd_store: EtcdStore, type_name: str
) -> None:
    """Six digit-suffixed tries and the hash all taken: the upgrade stops, naming the instance."""
    cloudlet = {"organization": "bluefjord", "name": "skerry-11"}
    taken = ["relay", *(f"relay{i}" for i in range(1, 6)), f"relay-{_documented_hash(cloudlet)}"]
    for number, name in enumerate(taken):
        key = {"name": name, "organization": APP_DEV}
        await put_json(etcd_store, etcd_key(type_name, key),
                       {"key": key, "obj_id": f"t{number}", "cloudlet_key": HARBOR})  # fmt: skip
    old = (
        _old_app_inst_key("relay", cloudlet)
        if type_name == "AppInst"
        else _old_cluster_key("relay", cloudlet, APP_DEV)
    )
    await put_json(etcd_store, etcd_key(type_name, old), {"key": old, "obj_id": "new"})
    with pytest.raises(InvalidArgument) as err:
        await _upgrade.instance_keys_region_scoped_name(etcd_store, 55)
    assert err.value.message == (
        f'failed to upgrade AppInst {{"name": "relay", "organization": "{APP_DEV}"}} on '
        f'Cloudlet {{"organization": "bluefjord", "name": "skerry-11"}}, unable to assign new '
        "non-conflicting name"
    )  # the original's wording, "AppInst" for a ClusterInst too
    assert etcd_key(type_name, old) in await dump(etcd_store)  # left for the operator to fix


async def test_a_failed_real_upgrade_keeps_the_version_before_it(etcd_store: EtcdStore) -> None:
    await etcd_store.put(VERSION_KEY, version_value(UPGRADES[6].hash, 56))
    app = etcd_key("App", {"organization": "ferncastle", "name": "tideclock", "version": "3.2"})
    await put_json(etcd_store, app, {"key": {"name": "tideclock"}, "deployment": "docker",
                                     "default_flavor": {"name": "retired.small"}})  # fmt: skip
    with pytest.raises(FailedPrecondition) as err:
        await check_version(etcd_store, auto_upgrade=True)
    assert err.value.message == (
        'upgrade 57 NodePoolsFeature failed: Flavor key {"name":"retired.small"} not found; '
        "the database stays at data model version 56, fix the data and start again with "
        "--auto-upgrade"
    )
    assert (await stored_version(etcd_store))["ID"] == 56


async def test_56_zone_feature(etcd_store: EtcdStore) -> None:
    created = "2024-02-09T08:41:12.0625Z"
    harbor = etcd_key("Cloudlet", HARBOR)
    lakeside = etcd_key("Cloudlet", LAKESIDE)
    loc = {"latitude": 63.430515, "longitude": 10.395053}
    await put_json(
        etcd_store, harbor, {"key": HARBOR, "location": loc, "created_at": created, "flavor": {}}
    )
    await put_json(etcd_store, lakeside, {"key": LAKESIDE, "created_at": created})
    cluster = etcd_key("ClusterInst", {"name": "tide-k8s", "organization": APP_DEV})
    await put_json(
        etcd_store,
        cluster,
        {"key": {"name": "tide-k8s"}, "cloudlet_key": HARBOR, "obj_id": "c7"},
    )
    app_inst = etcd_key("AppInst", {"name": "gauge-feed", "organization": APP_DEV})
    await put_json(
        etcd_store,
        app_inst,
        {"key": {"name": "gauge-feed"}, "cloudlet_key": LAKESIDE, "mapped_ports": None},
    )
    trial_key = {"organization": "tidewater", "name": "trial-sites"}
    trial = etcd_key("CloudletPool", trial_key)
    pool_created = "2023-11-30T17:05:44.318204907Z"
    await put_json(
        etcd_store,
        trial,
        {
            "key": trial_key,
            "cloudlets": [LAKESIDE, HARBOR],
            "created_at": pool_created,
            "updated_at": "",
        },
    )
    unused_key = {"organization": "granitenet", "name": "unused-pool"}
    unused = etcd_key("CloudletPool", unused_key)
    await put_json(etcd_store, unused, {"key": unused_key, "cloudlets": None})
    policy_key = {"organization": APP_DEV, "name": "nearest-two"}
    policy = etcd_key("AutoProvPolicy", policy_key)
    await put_json(
        etcd_store,
        policy,
        {
            "key": policy_key,
            "deploy_client_count": 3,
            "cloudlets": [{"key": HARBOR, "loc": {"latitude": 63.43}}],
        },
    )
    app_key = {"organization": CLUSTER_DEV, "name": "Orchard Scan!", "version": "2.0.1"}
    tpe_key = {"app_key": app_key, "cloudlet_pool_key": trial_key, "name": "allow-telemetry"}
    old_tpe = etcd_key("TrustPolicyException", tpe_key)
    await put_json(etcd_store, old_tpe, {"key": tpe_key, "state": "ApprovalRequested"})

    after = await run_twice(etcd_store, _upgrade.zone_feature, 56)

    zone = after[etcd_key("Zone", HARBOR)]
    assert zone["obj_id"] == zone["obj_id"].lower()
    assert len(zone["obj_id"]) == 26
    assert zone == {"key": HARBOR, "location": loc, "obj_id": zone["obj_id"], "created_at": created}
    assert codec.decode(zone_pb2.Zone, json.dumps(zone)).key.name == "harbor-east"
    assert etcd_key("Zone", LAKESIDE) in after
    assert after[harbor]["zone"] == "harbor-east"
    assert after[harbor]["db_model_id"] == 56
    assert after[harbor]["flavor"] == {}  # untouched fields stay as they were stored
    assert after[cluster]["zone_key"] == HARBOR
    assert after[cluster]["db_model_id"] == 56
    assert after[app_inst]["zone_key"] == LAKESIDE
    assert after[app_inst]["mapped_ports"] is None

    assert trial not in after
    assert unused not in after
    pool = after[etcd_key("ZonePool", trial_key)]
    assert pool == {
        "key": trial_key,
        "zones": [LAKESIDE, HARBOR],
        "created_at": pool_created,
        "updated_at": "",
    }
    zones = codec.decode(zonepool_pb2.ZonePool, json.dumps(pool)).zones
    assert [z.name for z in zones] == ["lakeside", "harbor-east"]
    assert after[etcd_key("ZonePool", unused_key)] == {"key": unused_key}

    assert after[policy] == {"key": policy_key, "deploy_client_count": 3, "zones": [HARBOR]}
    new_tpe = old_tpe.replace("cloudlet_pool_key", "zone_pool_key")
    assert old_tpe not in after
    assert after[new_tpe]["key"]["zone_pool_key"] == trial_key
    assert after[new_tpe]["state"] == "ApprovalRequested"


FLAVOR_NAME = "fw.medium.gpu"
FLAVOR = {"key": {"name": FLAVOR_NAME}, "ram": 16384, "vcpus": 6, "disk": 120,
          "opt_res_map": {"gpu": "pci:2"}}  # fmt: skip


async def test_57_node_pools_feature(etcd_store: EtcdStore) -> None:
    await put_json(etcd_store, etcd_key("Flavor", {"name": FLAVOR_NAME}), FLAVOR)
    flavor = {"name": FLAVOR_NAME}
    apps: dict[str, str] = {}
    for name, deployment in (("buoylog", "docker"), ("tidemap", "kubernetes")):
        key = {"organization": "ferncastle", "name": name, "version": "0.9"}
        apps[name] = etcd_key("App", key)
        await put_json(
            etcd_store,
            apps[name],
            {
                "key": key,
                "image_type": "Docker",
                "default_flavor": flavor,
                "deployment": deployment,
            },
        )
        inst_key = etcd_key("AppInst", {"name": f"{name}-north", "organization": "ferncastle"})
        await put_json(
            etcd_store,
            inst_key,
            {"key": {"name": f"{name}-north"}, "app_key": key, "flavor": flavor, "obj_id": "i9"},
        )
    docker = etcd_key("ClusterInst", {"name": "fc-docker", "organization": "ferncastle"})
    await put_json(etcd_store, docker, {"key": {"name": "fc-docker"}, "flavor": flavor,
                                        "deployment": "docker", "db_model_id": 56})  # fmt: skip
    k8s = etcd_key("ClusterInst", {"name": "fc-k8s", "organization": "ferncastle"})
    await put_json(etcd_store, k8s, {"key": {"name": "fc-k8s"}, "flavor": flavor,
                                     "deployment": "kubernetes", "num_masters": 1,
                                     "num_nodes": 2, "master_node_flavor": "fw.small"})  # fmt: skip

    after = await run_twice(etcd_store, _upgrade.node_pools_feature, 57)

    docker_app = codec.decode(app_pb2.App, json.dumps(after[apps["buoylog"]]))
    assert (docker_app.node_resources.vcpus, docker_app.node_resources.ram) == (6, 16384)
    assert docker_app.node_resources.disk == 120
    assert dict(docker_app.node_resources.opt_res_map) == {"gpu": "pci:2"}
    assert after[apps["buoylog"]]["default_flavor"] == {}
    assert after[apps["buoylog"]]["image_type"] == "Docker"
    k8s_app = codec.decode(app_pb2.App, json.dumps(after[apps["tidemap"]]))
    pool = k8s_app.kubernetes_resources.cpu_pool
    assert (pool.total_vcpus.whole, pool.total_memory, pool.total_disk) == (6, 16384, 120)
    assert (pool.topology.min_node_vcpus, pool.topology.min_number_of_nodes) == (6, 1)
    assert not k8s_app.kubernetes_resources.HasField("gpu_pool")  # gpus only in opt_res

    inst = after[etcd_key("AppInst", {"name": "tidemap-north", "organization": "ferncastle"})]
    assert inst["flavor"] == flavor  # AppInsts keep the flavor they were created with
    assert "kubernetes_resources" in inst
    assert "node_resources" not in inst
    docker_inst_key = {"name": "buoylog-north", "organization": "ferncastle"}
    docker_inst = after[etcd_key("AppInst", docker_inst_key)]
    assert docker_inst["node_resources"]["opt_res_map"] == {"gpu": "pci:2"}

    ci = codec.decode(clusterinst_pb2.ClusterInst, json.dumps(after[k8s]))
    assert [(p.Name, p.num_nodes, p.node_resources.vcpus) for p in ci.node_pools] == [
        ("defaultpool", 2, 6)
    ]
    assert after[k8s]["master_node_flavor"] == "fw.small"
    docker_ci = codec.decode(clusterinst_pb2.ClusterInst, json.dumps(after[docker]))
    assert docker_ci.node_resources.ram == 16384
    assert not docker_ci.node_pools


async def test_57_missing_flavor_fails_with_the_object_named(etcd_store: EtcdStore) -> None:
    key = etcd_key("App", {"organization": "ferncastle", "name": "tideclock", "version": "3.2"})
    await put_json(etcd_store, key, {"key": {"name": "tideclock"}, "deployment": "docker",
                                     "default_flavor": {"name": "retired.small"}})  # fmt: skip
    with pytest.raises(Exception, match=r'Flavor key \{"name":"retired.small"\} not found'):
        await _upgrade.node_pools_feature(etcd_store, 57)


async def test_58_app_obj_id(etcd_store: EtcdStore) -> None:
    new = etcd_key("App", {"organization": "ferncastle", "name": "buoylog", "version": "0.9"})
    kept = etcd_key("App", {"organization": "ferncastle", "name": "tidemap", "version": "0.9"})
    await put_json(etcd_store, new, {"key": {"name": "buoylog"}, "deployment": "docker"})
    await put_json(etcd_store, kept, {"key": {"name": "tidemap"}, "obj_id": "01HV7Q2M9T"})
    after = await run_twice(etcd_store, _upgrade.app_obj_id, 58)
    assert len(after[new]["obj_id"]) == 26
    assert after[kept]["obj_id"] == "01HV7Q2M9T"


async def test_full_upgrade_from_52_to_the_compiled_version(
    etcd_store: EtcdStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=_upgrade.__name__)
    await etcd_store.put(VERSION_KEY, version_value(UPGRADES[1].hash, 52))
    await put_json(etcd_store, etcd_key("Flavor", {"name": FLAVOR_NAME}), FLAVOR)
    app = etcd_key("App", {"organization": "ferncastle", "name": "vm-gateway", "version": "1.4"})
    await put_json(etcd_store, app, {"key": {"name": "vm-gateway"}, "deployment": "vm",
                                     "default_flavor": {"name": FLAVOR_NAME}})  # fmt: skip
    await put_json(etcd_store, etcd_key("Cloudlet", HARBOR), {"key": HARBOR, "root_lb_fqdn": FQDN})
    old = _old_cluster_key("fc-docker", HARBOR, "ferncastle")
    await put_json(etcd_store, etcd_key("ClusterInst", old), {
        "key": old, "deployment": "docker", "flavor": {"name": FLAVOR_NAME},
        "fqdn": "fc-docker." + FQDN})  # fmt: skip

    await check_version(etcd_store, auto_upgrade=True)

    assert await stored_version(etcd_store) == {"Hash": VERSION_HASH, "ID": VERSION_ID}
    after = {k: v for k, (v, _) in (await dump(etcd_store)).items()}
    assert codec.decode(app_pb2.App, json.dumps(after[app])).node_resources.vcpus == 6
    assert len(after[app]["obj_id"]) == 26
    cloudlet = after[etcd_key("Cloudlet", HARBOR)]
    assert cloudlet["crm_on_edge"] is True
    assert cloudlet["static_root_lb_fqdn"] == FQDN
    assert cloudlet["zone"] == "harbor-east"
    assert etcd_key("Zone", HARBOR) in after
    # 55 re-keyed it
    cluster = after[etcd_key("ClusterInst", {"name": "fc-docker", "organization": "ferncastle"})]
    assert cluster["key"] == {"name": "fc-docker", "organization": "ferncastle"}
    assert cluster["cloudlet_key"] == HARBOR
    assert cluster["zone_key"] == HARBOR
    assert cluster["static_fqdn"] == "fc-docker." + FQDN
    assert len(cluster["obj_id"]) == 26
    ci = codec.decode(clusterinst_pb2.ClusterInst, json.dumps(cluster))
    assert ci.node_resources.ram == 16384
    assert etcd_key("ClusterInst", old) not in after
    for line in (
        "upgrade 53 UpgradeCrmOnEdge: 2 objects read (Cloudlet, AppInst, ClusterInst), "
        "2 rewritten, 0 created, 0 deleted",
        "upgrade 55 InstanceKeysRegionScopedName: ",
        "upgrade 56 ZoneFeature: 2 objects read (Cloudlet, ClusterInst, AppInst, CloudletPool, "
        "AutoProvPolicy, TrustPolicyException), 2 rewritten, 1 created, 0 deleted",
        "upgrade 58 AppObjID: 1 objects read (App), 1 rewritten, 0 created, 0 deleted",
    ):
        assert line in caplog.text
