"""Data-model version check and upgrades on a real etcd (controller.md §2.8, §10.1-2).

The old-format objects below are written as the original stored them (its upgrade test
files `pkg/controller/upgrade_testfiles/*_pre.etcd`, trimmed to the fields that matter).
"""

from __future__ import annotations

import asyncio
import contextlib
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


def recording_registry(done: list[int], *, fail_at: int | None = None) -> list[Upgrade]:
    """The original's TestCheckAndUpgrade list: functions at 10,12,20,21,30,40,51-54."""

    def record(upgrade_id: int) -> UpgradeFn:
        async def fn(store: Store, given: int) -> Tally:
            assert given == upgrade_id
            if upgrade_id == fail_at:
                raise InvalidArgument("object 1/Thing/x is broken")
            done.append(given)
            await asyncio.sleep(0.01)  # gives a concurrent upgrader the chance to interleave
            return Tally(read=1)

        return fn

    with_fn = {10, 12, 20, 21, 30, 40, 51, 52, 53, 54}
    ids = [0, 10, 11, 12, 20, 21, 22, 23, 24, 28, 30, 40, 50, 51, 52, 53, 54]
    return [Upgrade(i, str(i), str(i), record(i) if i in with_fn else None) for i in ids]


async def stored_version(store: Store) -> dict[str, Any]:
    kv = await store.get(VERSION_KEY)
    assert kv is not None
    data: dict[str, Any] = json.loads(kv.value)
    return data


async def put_json(store: Store, key: str, value: dict[str, Any]) -> None:
    await store.put(key, json.dumps(value, separators=(",", ":")).encode())


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
    assert await stored_version(etcd_store) == {"Hash": "54", "ID": 54}
    await check_version(etcd_store, auto_upgrade=True, upgrades=recording_registry(done))
    assert done == []  # and a matching version is left alone


async def test_empty_database_gets_the_compiled_version(etcd_store: EtcdStore) -> None:
    await check_version(etcd_store)
    assert await stored_version(etcd_store) == {"Hash": VERSION_HASH, "ID": 62}


async def test_legacy_version_is_read_as_id_0(etcd_store: EtcdStore) -> None:
    await etcd_store.put(LEGACY_VERSION_KEY, b"myhash")
    with pytest.raises(FailedPrecondition) as err:
        await check_version(etcd_store, upgrades=recording_registry([]))
    assert err.value.message == MISMATCH.format(target="54", stored="myhash")
    assert await etcd_store.get(VERSION_KEY) is None  # refusing writes nothing

    done: list[int] = []
    await check_version(etcd_store, auto_upgrade=True, upgrades=recording_registry(done))
    assert done == [10, 12, 20, 21, 30, 40, 51, 52, 53, 54]  # id 0: everything above it
    assert await stored_version(etcd_store) == {"Hash": "54", "ID": 54}


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (54, []),
        (53, [54]),
        (52, [53, 54]),
        (40, [51, 52, 53, 54]),
        (23, [30, 40, 51, 52, 53, 54]),
        (20, [21, 30, 40, 51, 52, 53, 54]),
        (0, [10, 12, 20, 21, 30, 40, 51, 52, 53, 54]),
    ],
)
async def test_upgrades_above_the_stored_id_run_in_order(
    etcd_store: EtcdStore, start: int, expected: list[int]
) -> None:
    await etcd_store.put(VERSION_KEY, version_value(str(start), start))
    done: list[int] = []
    await check_version(etcd_store, auto_upgrade=True, upgrades=recording_registry(done))
    assert done == expected
    assert await stored_version(etcd_store) == {"Hash": "54", "ID": 54}


async def test_mismatch_without_auto_upgrade_refuses_with_the_originals_message(
    etcd_store: EtcdStore,
) -> None:
    await etcd_store.put(VERSION_KEY, version_value("0123", 20))
    with pytest.raises(FailedPrecondition) as err:
        await check_version(etcd_store)
    assert err.value.message == MISMATCH.format(target=VERSION_HASH, stored="0123")
    assert await stored_version(etcd_store) == {"Hash": "0123", "ID": 20}


async def test_a_newer_database_is_refused_even_with_auto_upgrade(etcd_store: EtcdStore) -> None:
    await etcd_store.put(VERSION_KEY, version_value("future", 70))
    with pytest.raises(FailedPrecondition, match=r"future \(70\), not older than"):
        await check_version(etcd_store, auto_upgrade=True)


async def test_a_failed_upgrade_stops_and_keeps_the_last_completed_id(
    etcd_store: EtcdStore,
) -> None:
    await etcd_store.put(VERSION_KEY, version_value("20", 20))
    done: list[int] = []
    with pytest.raises(FailedPrecondition) as err:
        await check_version(
            etcd_store, auto_upgrade=True, upgrades=recording_registry(done, fail_at=30)
        )
    assert done == [21]
    assert err.value.message == (
        "upgrade 30 30 failed: object 1/Thing/x is broken; the database stays at data model "
        "version 28, fix the data and start again with --auto-upgrade"
    )
    assert await stored_version(etcd_store) == {"Hash": "28", "ID": 28}
    assert await etcd_store.get(LOCK_KEY) is None  # the lock went with the failure

    done.clear()  # the next start resumes after 28
    await check_version(etcd_store, auto_upgrade=True, upgrades=recording_registry(done))
    assert done == [30, 40, 51, 52, 53, 54]


async def test_two_auto_upgrading_controllers_run_each_upgrade_once(
    etcd_store: EtcdStore,
) -> None:
    await etcd_store.put(VERSION_KEY, version_value("20", 20))
    done: list[int] = []
    registry = recording_registry(done)
    await asyncio.wait_for(
        asyncio.gather(
            check_version(etcd_store, auto_upgrade=True, upgrades=registry, holder="one"),
            check_version(etcd_store, auto_upgrade=True, upgrades=registry, holder="two"),
        ),
        timeout=20,
    )
    assert done == [21, 30, 40, 51, 52, 53, 54]
    assert await stored_version(etcd_store) == {"Hash": "54", "ID": 54}
    assert await etcd_store.get(LOCK_KEY) is None


@pytest.mark.parametrize("holder_finished", [True, False])
async def test_an_upgrade_waits_for_the_lock_holder(
    etcd_store: EtcdStore, holder_finished: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=_upgrade.__name__)
    await etcd_store.put(VERSION_KEY, version_value("20", 20))
    other = await etcd_store.grant(10)
    await etcd_store.put(LOCK_KEY, b"other@10.0.0.2:55001", lease=other)
    done: list[int] = []
    task = asyncio.create_task(
        check_version(etcd_store, auto_upgrade=True, upgrades=recording_registry(done))
    )
    try:
        await asyncio.sleep(0.3)
        assert not task.done()
        assert done == []
        assert "waiting for other@10.0.0.2:55001 to finish upgrading" in caplog.text
        if holder_finished:
            await etcd_store.put(VERSION_KEY, version_value("54", 54))
        await etcd_store.revoke(other)  # finished, or died: its lease goes either way
        await asyncio.wait_for(task, timeout=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert done == ([] if holder_finished else [21, 30, 40, 51, 52, 53, 54])
    assert await stored_version(etcd_store) == {"Hash": "54", "ID": 54}


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
            await store.put(VERSION_KEY, version_value("0123", 20))
            with pytest.raises(FailedPrecondition) as err:
                await _start_controller(etcd_server, redis_server, namespace)
            assert err.value.message == MISMATCH.format(target=VERSION_HASH, stored="0123")

            await _start_controller(etcd_server, redis_server, namespace, "-skipVersionCheck")
            assert await stored_version(store) == {"Hash": "0123", "ID": 20}  # untouched
        finally:
            await store.delete_prefix("")


async def test_controller_started_with_auto_upgrade_upgrades_then_serves(
    etcd_server: ServerProcess, redis_server: ServerProcess
) -> None:
    namespace = f"/test/{uuid.uuid4().hex[:12]}/"
    async with await EtcdStore.connect(etcd_server.client_url, namespace=namespace) as store:
        try:
            await store.put(VERSION_KEY, version_value(UPGRADES[7].hash, 57))
            app = '1/App/{"organization":"zern","name":"a","version":"1.0"}'
            app_key = {"organization": "zern", "name": "a", "version": "1.0"}
            await put_json(store, app, {"key": app_key, "deployment": "docker"})
            await _start_controller(etcd_server, redis_server, namespace, "-autoUpgrade")
            assert await stored_version(store) == {"Hash": VERSION_HASH, "ID": VERSION_ID}
            kv = await store.get(app)
            assert kv is not None
            assert len(json.loads(kv.value)["obj_id"]) == 26
        finally:
            await store.delete_prefix("")


# --- the upgrade functions on the original's old formats -----------------------------------


CLOUDLET1 = {"organization": "oper1", "name": "cloudlet1"}
CLOUDLET4 = {"organization": "oper1", "name": "cloudlet4"}


async def test_53_upgrade_crm_on_edge(etcd_store: EtcdStore) -> None:
    cloudlet = '1/Cloudlet/{"organization":"oper1","name":"cloudlet1"}'
    done = '1/Cloudlet/{"organization":"oper1","name":"done"}'
    app_inst = '1/AppInst/{"name":"ai","organization":"dev"}'
    cluster = '1/ClusterInst/{"name":"ci","organization":"dev"}'
    await put_json(etcd_store, cloudlet, {"key": CLOUDLET1, "platform_type": "fake"})
    await put_json(etcd_store, done, {"key": {"name": "done"}, "obj_id": "X"})
    await put_json(etcd_store, app_inst, {"key": {"name": "ai"}, "cloudlet_key": CLOUDLET1})
    await put_json(etcd_store, cluster, {"key": {"name": "ci"}, "created_at": ""})

    after = await run_twice(etcd_store, _upgrade.upgrade_crm_on_edge, 53)
    assert after[cloudlet]["crm_on_edge"] is True
    assert len(after[cloudlet]["obj_id"]) == 26
    assert after[cloudlet]["platform_type"] == "fake"
    assert after[done] == {"key": {"name": "done"}, "obj_id": "X"}  # already upgraded
    assert len(after[app_inst]["obj_id"]) == 26
    assert after[app_inst]["cloudlet_key"] == CLOUDLET1  # a field our AppInst key lacks
    assert len(after[cluster]["obj_id"]) == 26


async def test_54_add_static_fqdn(etcd_store: EtcdStore) -> None:
    cloudlet = '1/Cloudlet/{"organization":"oper1","name":"cloudlet1"}'
    cluster = '1/ClusterInst/{"name":"ci","organization":"dev"}'
    app_inst = '1/AppInst/{"name":"ai","organization":"dev"}'
    no_uri = '1/AppInst/{"name":"none","organization":"dev"}'
    fqdn = "shared.cloudlet1-oper1.local.mobiledgex.net"
    await put_json(etcd_store, cloudlet, {"key": CLOUDLET1, "root_lb_fqdn": fqdn})
    await put_json(etcd_store, cluster, {"key": {"name": "ci"}, "fqdn": "ci." + fqdn})
    await put_json(etcd_store, app_inst, {"key": {"name": "ai"}, "uri": fqdn})
    await put_json(etcd_store, no_uri, {"key": {"name": "none"}})

    after = await run_twice(etcd_store, _upgrade.add_static_fqdn, 54)
    assert after[cloudlet]["static_root_lb_fqdn"] == fqdn
    assert after[cluster]["static_fqdn"] == "ci." + fqdn
    assert after[app_inst]["static_uri"] == fqdn
    assert after[no_uri] == {"key": {"name": "none"}}


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def test_cloudlet_key_hash_is_the_originals() -> None:
    # the suffix the original's 55 gave the 7th clashing "conflict" (its upgrade test data)
    assert _upgrade.cloudlet_key_hash({"organization": "oper1", "name": "cloudlet7"}) == (
        "132bad5b"
    )


async def test_55_instance_keys_region_scoped_name(etcd_store: EtcdStore) -> None:
    """The original's InstanceKeysRegionScopedName_pre data → its _post data."""
    cloudlets = [{"organization": "oper1", "name": f"cloudlet{i}"} for i in range(1, 8)]
    obj = 0
    for name, on in [("noconflict", cloudlets[:1]), ("conflict", cloudlets)]:
        for cloudlet in on:
            obj += 1
            ck = {"cluster_key": {"name": name, "organization": "dev1"}, "cloudlet_key": cloudlet}
            await put_json(
                etcd_store, f"1/ClusterInst/{compact(ck)}", {"key": ck, "obj_id": str(obj)}
            )
            ak = {"name": name, "organization": "edgecloudorg", "cloudlet_key": cloudlet}
            await put_json(etcd_store, f"1/AppInst/{compact(ak)}", {"key": ak, "obj_id": str(obj)})
    for cloudlet in cloudlets:
        names = ["noconflict", "conflict"] if cloudlet["name"] == "cloudlet1" else ["conflict"]
        await put_json(
            etcd_store,
            f"1/CloudletRefs/{compact(cloudlet)}",
            {
                "key": cloudlet,
                "cluster_insts": [{"name": n, "organization": "dev1"} for n in names],
                "vm_app_insts": [{"name": n, "organization": "edgecloudorg"} for n in names],
            },
        )
    for name, cloudlet in [("noconflict", cloudlets[0]), ("conflict", cloudlets[6])]:
        rk = {"cluster_key": {"name": name, "organization": "dev1"}, "cloudlet_key": cloudlet}
        apps = [{"name": name, "organization": "edgecloudorg"}]
        await put_json(etcd_store, f"1/ClusterRefs/{compact(rk)}", {"key": rk, "apps": apps})
    # a cluster-key-v1 refs record of a cluster that no longer exists: removed
    cloudletx = {"organization": "oper1", "name": "cloudletx"}
    v1 = {"cluster_key": {"name": "reservable0"}, "cloudlet_key": cloudletx,
          "organization": "edgecloudorg"}  # fmt: skip
    await put_json(etcd_store, f"1/ClusterRefs/{compact(v1)}", {"key": v1, "apps": [{"v": 1}]})
    ref3 = {"name": "ref3", "organization": "edgecloudorg", "cloudlet_key": cloudlets[0]}
    await put_json(etcd_store, f"1/AppInst/{compact(ref3)}", {
        "key": ref3, "obj_id": "ref3",
        "cluster_key": {"name": "noconflict", "organization": "dev1"}})  # fmt: skip
    for name in ("ref2", "ref2a"):
        ak = {"name": name, "organization": "edgecloudorg", "cloudlet_key": cloudletx}
        await put_json(etcd_store, f"1/AppInst/{compact(ak)}", {
            "key": ak, "obj_id": name,
            "cluster_key": {"name": "reservable0", "organization": "edgecloudorg"}})  # fmt: skip
    # reservable clusters: an old name gets the cloudlet hash; one an earlier build of 55
    # renamed to reservable51 is fixed to reservable5-<hash>, the bad name kept aside
    old_res = {"cluster_key": {"name": "reservable3", "organization": "edgecloudorg"},
               "cloudlet_key": cloudletx}  # fmt: skip
    await put_json(etcd_store, f"1/ClusterInst/{compact(old_res)}",
                   {"key": old_res, "reservable": True, "obj_id": "r3"})  # fmt: skip
    bad = {"name": "reservable51", "organization": "edgecloudorg"}
    await put_json(etcd_store, f"1/ClusterInst/{compact(bad)}", {
        "key": bad, "cloudlet_key": cloudletx, "reservable": True, "obj_id": "r5",
        "annotations": {"cloudlet-scoped-name": "reservable5"}})  # fmt: skip
    await put_json(etcd_store, f"1/CloudletRefs/{compact(cloudletx)}",
                   {"key": cloudletx, "cluster_insts": [bad]})  # fmt: skip
    app_refs = '1/AppInstRefs/{"organization":"edgecloudorg","name":"app1","version":"1.0"}'
    old_inst = compact({"name": "conflict", "organization": "edgecloudorg",
                        "cloudlet_key": cloudlets[6]})  # fmt: skip
    await put_json(etcd_store, app_refs, {"key": {"name": "app1"}, "insts": {old_inst: 1}})

    after = await run_twice(etcd_store, _upgrade.instance_keys_region_scoped_name, 55)

    hashed = "conflict-132bad5b"
    renamed = ["conflict", "conflict1", "conflict2", "conflict3", "conflict4", "conflict5", hashed]
    for cloudlet, name in zip(cloudlets, renamed, strict=True):
        ci = after[f'1/ClusterInst/{{"name":"{name}","organization":"dev1"}}']
        ai = after[f'1/AppInst/{{"name":"{name}","organization":"edgecloudorg"}}']
        for inst in (ci, ai):
            assert inst["cloudlet_key"] == cloudlet
            expected = {} if name == "conflict" else {"cloudlet-scoped-name": "conflict"}
            assert inst.get("annotations", {}) == expected
        assert ci["key"] == {"name": name, "organization": "dev1"}
        refs = after[f"1/CloudletRefs/{compact(cloudlet)}"]
        assert refs["cluster_insts"][-1] == {"name": name, "organization": "dev1"}
        assert refs["vm_app_insts"][-1] == {"name": name, "organization": "edgecloudorg"}
    old_keys = ("1/ClusterInst/", "1/AppInst/", "1/ClusterRefs/")
    assert not [k for k in after if k.startswith(old_keys) and '"cloudlet_key":{' in k]
    assert after[f'1/ClusterRefs/{{"name":"{hashed}","organization":"dev1"}}']["apps"] == [
        {"name": hashed, "organization": "edgecloudorg"}
    ]
    assert after['1/ClusterRefs/{"name":"noconflict","organization":"dev1"}']["apps"] == [
        {"name": "noconflict", "organization": "edgecloudorg"},
        {"name": "ref3", "organization": "edgecloudorg"},  # the repair added it
    ]
    assert sorted(k for k in after if k.startswith("1/ClusterRefs/")) == [
        f'1/ClusterRefs/{{"name":"{hashed}","organization":"dev1"}}',
        '1/ClusterRefs/{"name":"noconflict","organization":"dev1"}',
    ]  # the reservable0 records went: that cluster does not exist
    assert after[app_refs]["insts"] == {f'{{"name":"{hashed}","organization":"edgecloudorg"}}': 1}

    xhash = _upgrade.cloudlet_key_hash(cloudletx)
    res3 = after[f'1/ClusterInst/{{"name":"reservable3-{xhash}","organization":"edgecloudorg"}}']
    assert res3["annotations"] == {"cloudlet-scoped-name": "reservable3"}
    res5 = after[f'1/ClusterInst/{{"name":"reservable5-{xhash}","organization":"edgecloudorg"}}']
    assert res5["annotations"] == {
        "cloudlet-scoped-name": "reservable5",
        "bad-upgrade55-name": "reservable51",
    }
    assert f"1/ClusterInst/{compact(bad)}" not in after
    assert after[f"1/CloudletRefs/{compact(cloudletx)}"]["cluster_insts"] == [
        {"name": f"reservable5-{xhash}", "organization": "edgecloudorg"}
    ]


async def test_a_failed_real_upgrade_keeps_the_version_before_it(etcd_store: EtcdStore) -> None:
    await etcd_store.put(VERSION_KEY, version_value(UPGRADES[6].hash, 56))
    app = '1/App/{"organization":"zern","name":"a","version":"1.0"}'
    await put_json(etcd_store, app, {"key": {"name": "a"}, "deployment": "docker",
                                     "default_flavor": {"name": "gone"}})  # fmt: skip
    with pytest.raises(FailedPrecondition) as err:
        await check_version(etcd_store, auto_upgrade=True)
    assert err.value.message == (
        'upgrade 57 NodePoolsFeature failed: Flavor key {"name":"gone"} not found; the '
        "database stays at data model version 56, fix the data and start again with "
        "--auto-upgrade"
    )
    assert (await stored_version(etcd_store))["ID"] == 56


async def test_56_zone_feature(etcd_store: EtcdStore) -> None:
    created = "2023-04-14T23:25:35.1531105Z"
    c1 = '1/Cloudlet/{"organization":"oper1","name":"cloudlet1"}'
    c4 = '1/Cloudlet/{"organization":"oper1","name":"cloudlet4"}'
    loc = {"latitude": 40.712776, "longitude": -74.005974}
    await put_json(
        etcd_store, c1, {"key": CLOUDLET1, "location": loc, "created_at": created, "flavor": {}}
    )
    await put_json(etcd_store, c4, {"key": CLOUDLET4, "created_at": created})
    cluster = '1/ClusterInst/{"name":"conflict","organization":"dev1"}'
    await put_json(
        etcd_store,
        cluster,
        {"key": {"name": "conflict"}, "cloudlet_key": CLOUDLET1, "obj_id": "13"},
    )
    app_inst = '1/AppInst/{"name":"conflict1","organization":"edgecloudorg"}'
    await put_json(
        etcd_store,
        app_inst,
        {"key": {"name": "conflict1"}, "cloudlet_key": CLOUDLET4, "mapped_ports": None},
    )
    staging = '1/CloudletPool/{"organization":"oper1","name":"oper1-Staging"}'
    await put_json(
        etcd_store,
        staging,
        {
            "key": {"organization": "oper1", "name": "oper1-Staging"},
            "cloudlets": [CLOUDLET4, CLOUDLET1],
            "created_at": "2022-05-23T15:50:35.109884535Z",
            "updated_at": "",
        },
    )
    empty = '1/CloudletPool/{"organization":"oper2","name":"test-pool"}'
    await put_json(
        etcd_store,
        empty,
        {"key": {"organization": "oper2", "name": "test-pool"}, "cloudlets": None},
    )
    policy = '1/AutoProvPolicy/{"organization":"dev1","name":"auto-provision-policy"}'
    await put_json(
        etcd_store,
        policy,
        {
            "key": {"organization": "dev1", "name": "auto-provision-policy"},
            "deploy_client_count": 1,
            "cloudlets": [{"key": CLOUDLET1, "loc": {"latitude": 53.55272}}],
        },
    )
    app_key = {"organization": "AtlanticInc", "name": "Pillimo Go!", "version": "1.0.0"}
    old_tpe = (
        '1/TrustPolicyException/{"app_key":{"organization":"AtlanticInc","name":"Pillimo Go!",'
        '"version":"1.0.0"},"cloudlet_pool_key":{"organization":"Zerilu","name":"test-and-dev"},'
        '"name":"trust-policyexception2"}'
    )
    await put_json(
        etcd_store,
        old_tpe,
        {
            "key": {
                "app_key": app_key,
                "cloudlet_pool_key": {"organization": "Zerilu", "name": "test-and-dev"},
                "name": "trust-policyexception2",
            },
            "state": "ApprovalRequested",
        },
    )

    after = await run_twice(etcd_store, _upgrade.zone_feature, 56)

    zone1 = after['1/Zone/{"organization":"oper1","name":"cloudlet1"}']
    assert zone1["obj_id"] == zone1["obj_id"].lower()
    assert len(zone1["obj_id"]) == 26
    assert zone1 == {
        "key": CLOUDLET1,
        "location": loc,
        "obj_id": zone1["obj_id"],
        "created_at": created,
    }
    assert codec.decode(zone_pb2.Zone, json.dumps(zone1)).key.name == "cloudlet1"
    assert '1/Zone/{"organization":"oper1","name":"cloudlet4"}' in after
    assert after[c1]["zone"] == "cloudlet1"
    assert after[c1]["db_model_id"] == 56
    assert after[c1]["flavor"] == {}  # untouched fields stay as the original wrote them
    assert after[cluster]["zone_key"] == CLOUDLET1
    assert after[cluster]["db_model_id"] == 56
    assert after[app_inst]["zone_key"] == CLOUDLET4
    assert after[app_inst]["mapped_ports"] is None

    assert staging not in after
    assert empty not in after
    pool = after['1/ZonePool/{"organization":"oper1","name":"oper1-Staging"}']
    assert pool == {
        "key": {"organization": "oper1", "name": "oper1-Staging"},
        "zones": [CLOUDLET4, CLOUDLET1],
        "created_at": "2022-05-23T15:50:35.109884535Z",
        "updated_at": "",
    }
    zones = codec.decode(zonepool_pb2.ZonePool, json.dumps(pool)).zones
    assert [z.name for z in zones] == ["cloudlet4", "cloudlet1"]
    assert after['1/ZonePool/{"organization":"oper2","name":"test-pool"}'] == {
        "key": {"organization": "oper2", "name": "test-pool"}
    }

    assert after[policy] == {
        "key": {"organization": "dev1", "name": "auto-provision-policy"},
        "deploy_client_count": 1,
        "zones": [CLOUDLET1],
    }
    new_tpe = old_tpe.replace("cloudlet_pool_key", "zone_pool_key")
    assert old_tpe not in after
    assert after[new_tpe]["key"]["zone_pool_key"] == {
        "organization": "Zerilu",
        "name": "test-and-dev",
    }
    assert after[new_tpe]["state"] == "ApprovalRequested"


FLAVOR = {"key": {"name": "m4.xlarge.gpu"}, "ram": 8192, "vcpus": 4, "disk": 160,
          "opt_res_map": {"gpu": "pci:1"}}  # fmt: skip


async def test_57_node_pools_feature(etcd_store: EtcdStore) -> None:
    await put_json(etcd_store, '1/Flavor/{"name":"m4.xlarge.gpu"}', FLAVOR)
    flavor = {"name": "m4.xlarge.gpu"}
    apps = {}
    for name, deployment in (("dockerapp", "docker"), ("k8sapp", "kubernetes")):
        key = {"organization": "zern", "name": name, "version": "1.0"}
        etcd_key = f"1/App/{json.dumps(key, separators=(',', ':'))}"
        apps[name] = etcd_key
        await put_json(
            etcd_store,
            etcd_key,
            {
                "key": key,
                "image_type": "Docker",
                "default_flavor": flavor,
                "deployment": deployment,
            },
        )
        inst = f'1/AppInst/{{"name":"{name}inst","organization":"zern"}}'
        await put_json(
            etcd_store,
            inst,
            {"key": {"name": f"{name}inst"}, "app_key": key, "flavor": flavor, "obj_id": "3"},
        )
    docker = '1/ClusterInst/{"name":"docker","organization":"zern"}'
    await put_json(etcd_store, docker, {"key": {"name": "docker"}, "flavor": flavor,
                                        "deployment": "docker", "db_model_id": 56})  # fmt: skip
    k8s = '1/ClusterInst/{"name":"k8s","organization":"zern"}'
    await put_json(etcd_store, k8s, {"key": {"name": "k8s"}, "flavor": flavor,
                                     "deployment": "kubernetes", "num_masters": 1,
                                     "num_nodes": 3, "master_node_flavor": "m4.large"})  # fmt: skip

    after = await run_twice(etcd_store, _upgrade.node_pools_feature, 57)

    docker_app = codec.decode(app_pb2.App, json.dumps(after[apps["dockerapp"]]))
    assert (docker_app.node_resources.vcpus, docker_app.node_resources.ram) == (4, 8192)
    assert docker_app.node_resources.disk == 160
    assert dict(docker_app.node_resources.opt_res_map) == {"gpu": "pci:1"}
    assert after[apps["dockerapp"]]["default_flavor"] == {}
    assert after[apps["dockerapp"]]["image_type"] == "Docker"
    k8s_app = codec.decode(app_pb2.App, json.dumps(after[apps["k8sapp"]]))
    pool = k8s_app.kubernetes_resources.cpu_pool
    assert (pool.total_vcpus.whole, pool.total_memory, pool.total_disk) == (4, 8192, 160)
    assert (pool.topology.min_node_vcpus, pool.topology.min_number_of_nodes) == (4, 1)
    assert not k8s_app.kubernetes_resources.HasField("gpu_pool")  # gpus only in opt_res

    inst = after['1/AppInst/{"name":"k8sappinst","organization":"zern"}']
    assert inst["flavor"] == flavor  # AppInsts keep the flavor they were created with
    assert "kubernetes_resources" in inst
    assert "node_resources" not in inst
    docker_inst = after['1/AppInst/{"name":"dockerappinst","organization":"zern"}']
    assert docker_inst["node_resources"]["opt_res_map"] == {"gpu": "pci:1"}

    ci = codec.decode(clusterinst_pb2.ClusterInst, json.dumps(after[k8s]))
    assert [(p.Name, p.num_nodes, p.node_resources.vcpus) for p in ci.node_pools] == [
        ("defaultpool", 3, 4)
    ]
    assert after[k8s]["master_node_flavor"] == "m4.large"
    docker_ci = codec.decode(clusterinst_pb2.ClusterInst, json.dumps(after[docker]))
    assert docker_ci.node_resources.ram == 8192
    assert not docker_ci.node_pools


async def test_57_missing_flavor_fails_with_the_object_named(etcd_store: EtcdStore) -> None:
    key = '1/App/{"organization":"zern","name":"a","version":"1.0"}'
    await put_json(etcd_store, key, {"key": {"name": "a"}, "deployment": "docker",
                                     "default_flavor": {"name": "gone"}})  # fmt: skip
    with pytest.raises(Exception, match=r'Flavor key \{"name":"gone"\} not found'):
        await _upgrade.node_pools_feature(etcd_store, 57)


async def test_58_app_obj_id(etcd_store: EtcdStore) -> None:
    new = '1/App/{"organization":"zern","name":"dockerapp","version":"1.0"}'
    kept = '1/App/{"organization":"zern","name":"k8sapp","version":"1.0"}'
    await put_json(etcd_store, new, {"key": {"name": "dockerapp"}, "deployment": "docker"})
    await put_json(etcd_store, kept, {"key": {"name": "k8sapp"}, "obj_id": "01JCC4RXDF"})
    after = await run_twice(etcd_store, _upgrade.app_obj_id, 58)
    assert len(after[new]["obj_id"]) == 26
    assert after[kept]["obj_id"] == "01JCC4RXDF"


async def test_full_upgrade_from_52_to_the_compiled_version(
    etcd_store: EtcdStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=_upgrade.__name__)
    await etcd_store.put(VERSION_KEY, version_value(UPGRADES[1].hash, 52))
    await put_json(etcd_store, '1/Flavor/{"name":"m4.xlarge.gpu"}', FLAVOR)
    app = '1/App/{"organization":"zern","name":"vmapp","version":"1.0"}'
    await put_json(etcd_store, app, {"key": {"name": "vmapp"}, "deployment": "vm",
                                     "default_flavor": {"name": "m4.xlarge.gpu"}})  # fmt: skip
    fqdn = "shared.cloudlet1-oper1.local.mobiledgex.net"
    await put_json(etcd_store, '1/Cloudlet/{"organization":"oper1","name":"cloudlet1"}',
                   {"key": CLOUDLET1, "root_lb_fqdn": fqdn})  # fmt: skip
    old = {"cluster_key": {"name": "c1", "organization": "dev"}, "cloudlet_key": CLOUDLET1}
    await put_json(etcd_store, f"1/ClusterInst/{compact(old)}", {
        "key": old, "deployment": "docker", "flavor": {"name": "m4.xlarge.gpu"},
        "fqdn": "c1." + fqdn})  # fmt: skip

    await check_version(etcd_store, auto_upgrade=True)

    assert await stored_version(etcd_store) == {"Hash": VERSION_HASH, "ID": VERSION_ID}
    after = {k: v for k, (v, _) in (await dump(etcd_store)).items()}
    assert codec.decode(app_pb2.App, json.dumps(after[app])).node_resources.vcpus == 4
    assert len(after[app]["obj_id"]) == 26
    cloudlet = after['1/Cloudlet/{"organization":"oper1","name":"cloudlet1"}']
    assert cloudlet["crm_on_edge"] is True
    assert cloudlet["static_root_lb_fqdn"] == fqdn
    assert cloudlet["zone"] == "cloudlet1"
    assert '1/Zone/{"organization":"oper1","name":"cloudlet1"}' in after
    cluster = after['1/ClusterInst/{"name":"c1","organization":"dev"}']  # 55 re-keyed it
    assert cluster["key"] == {"name": "c1", "organization": "dev"}
    assert cluster["cloudlet_key"] == CLOUDLET1
    assert cluster["zone_key"] == CLOUDLET1
    assert cluster["static_fqdn"] == "c1." + fqdn
    assert len(cluster["obj_id"]) == 26
    ci = codec.decode(clusterinst_pb2.ClusterInst, json.dumps(cluster))
    assert ci.node_resources.ram == 8192
    assert f"1/ClusterInst/{compact(old)}" not in after
    for line in (
        "upgrade 53 UpgradeCrmOnEdge: 2 objects read (Cloudlet, AppInst, ClusterInst), "
        "2 rewritten, 0 created, 0 deleted",
        "upgrade 55 InstanceKeysRegionScopedName: ",
        "upgrade 56 ZoneFeature: 2 objects read (Cloudlet, ClusterInst, AppInst, CloudletPool, "
        "AutoProvPolicy, TrustPolicyException), 2 rewritten, 1 created, 0 deleted",
        "upgrade 58 AppObjID: 1 objects read (App), 1 rewritten, 0 created, 0 deleted",
    ):
        assert line in caplog.text
