"""Cloudlet-key filtering: hold-back until the client's cloudlet is ready, then only its objects."""

from __future__ import annotations

import asyncio
from typing import Any

from distributed_match_engine import appcommon_pb2
from edgeproto import cloudlet_pb2, common_pb2, vmpool_pb2

from edge_cloud.notify import MemorySource, NotifyClient, Stage, key_string
from edge_cloud.notify._wire import Message
from edge_cloud.notify.filters import stage_of
from tests.unit.edge_cloud.notify.harness import (
    App,
    AppInst,
    Cloudlet,
    ClusterInst,
    Flavor,
    app,
    app_inst,
    cloudlet,
    cloudlet_info,
    cluster_inst,
    contents,
    eventually,
    flavor,
    notify_server,
)

VMPool = vmpool_pb2.VMPool
TYPES: list[type[Message]] = [Flavor, VMPool, Cloudlet, ClusterInst, App, AppInst]
INIT = appcommon_pb2.CLOUDLET_STATE_INIT
READY = appcommon_pb2.CLOUDLET_STATE_READY


def vmpool(name: str) -> VMPool:
    return VMPool(key=vmpool_pb2.VMPoolKey(organization="oper", name=name))


def world() -> MemorySource:
    return MemorySource(
        [
            flavor("f"),
            vmpool("pool1"),
            vmpool("pool2"),
            cloudlet("c1", vm_pool="pool1"),
            cloudlet("c2", vm_pool="pool2"),
            app("a"),
            cluster_inst("k1", "c1"),
            cluster_inst("k2", "c2"),
            app_inst("i1", "c1"),
            app_inst("i2", "c2"),
        ]
    )


def crm(port: int) -> tuple[NotifyClient, dict[type[Message], Any]]:
    client = NotifyClient(
        [f"127.0.0.1:{port}"],
        name="crm-c1",
        filter_cloudlet_key=True,
        backoff_initial=0.02,
        backoff_max=0.2,
    )
    return client, {t: client.cache(t) for t in TYPES}


def names(cache: Any) -> list[str]:
    return sorted(key_string(o) for o in cache.values())


def expected(source: MemorySource, cls: type[Message], *objs: Message) -> dict[str, bytes]:
    wanted = {key_string(o) for o in objs}
    return {k: v for k, v in contents(source.objects(cls)).items() if k in wanted}


async def test_objects_wait_for_the_cloudlet_then_only_its_own_flow() -> None:
    source = world()
    async with notify_server(source, send_types=TYPES) as (notify, port):
        client, caches = crm(port)
        async with client:
            await eventually(lambda: _assert(len(caches[App]) == 1))
            assert names(caches[Flavor]) == [key_string(flavor("f"))]
            for held in (VMPool, Cloudlet, ClusterInst, AppInst):
                assert len(caches[held]) == 0
            assert not client.synced_revision
            assert notify.peers[0].filter_cloudlet_key

            client.send(cloudlet_info("c1", INIT))  # the cloudlet and its VM pool, no more
            await eventually(lambda: _assert(len(caches[Cloudlet]) == 1))
            assert names(caches[Cloudlet]) == [key_string(cloudlet("c1"))]
            await eventually(
                lambda: _assert(names(caches[VMPool]) == [key_string(vmpool("pool1"))])
            )
            assert len(caches[AppInst]) == 0
            await asyncio.sleep(0.05)
            assert not caches[AppInst].synced

            client.send(cloudlet_info("c1", READY))  # now everything on c1, then SENDALL_END
            async with asyncio.timeout(5):
                await client.wait_synced()
            assert names(caches[ClusterInst]) == [key_string(cluster_inst("k1", "c1"))]
            assert names(caches[AppInst]) == [key_string(app_inst("i1", "c1"))]

            source.put(app_inst("i3", "c1"))
            source.put(app_inst("i4", "c2"))
            source.put(app_inst("i2", "c2", uri="changed"))
            source.put(app_inst("i1", "c2"))  # moved away: gone from this CRM's view
            mine = [key_string(app_inst("i3", "c1"))]
            await eventually(lambda: _assert(names(caches[AppInst]) == mine))

            source.put(cloudlet("c1"))  # no VM pool any more: the pool goes too
            await eventually(lambda: _assert(len(caches[VMPool]) == 0))

            client.send_delete(cloudlet_info("c1"))  # the CRM is gone from the cloudlet
            await eventually(lambda: _assert(len(caches[Cloudlet]) == 0))
            await eventually(lambda: _assert(len(caches[AppInst]) == 0))
            assert len(caches[ClusterInst]) == 0
            assert len(caches[App]) == 1  # unscoped types stay


async def test_filtered_client_resyncs_by_delta_with_scoped_types_in_full() -> None:
    source = world()
    async with notify_server(source, send_types=TYPES) as (_, port):
        client, caches = crm(port)
        client.send(cloudlet_info("c1", READY))
        await client.start()
        async with asyncio.timeout(5):
            await client.wait_synced()
    try:
        outage = source.revision
        source.delete(app_inst("i1", "c1"))
        source.put(app_inst("i5", "c1"))
        source.put(flavor("g"))
        source.delete(app("a"))
        source.compact(outage)  # history before the outage is gone; that does not matter
        async with notify_server(source, send_types=TYPES, port=port):
            await eventually(lambda: _assert(client.stats.delta_syncs == 1), within=10)
            assert names(caches[AppInst]) == [key_string(app_inst("i5", "c1"))]
            assert contents(caches[Flavor]) == contents(source.objects(Flavor))
            assert len(caches[App]) == 0
            c1 = cloudlet("c1", vm_pool="pool1")
            assert contents(caches[Cloudlet]) == expected(source, Cloudlet, c1)
    finally:
        await client.close()


class _Lookup:
    def __init__(self, *objs: Message) -> None:
        self.objs = {(o.DESCRIPTOR.full_name, key_string(o)): o for o in objs}

    def lookup(self, type_name: str, key: str) -> Message | None:
        return self.objs.get((type_name, key))


def test_stage_of_cloudlet_info() -> None:
    nothing = _Lookup()
    info = cloudlet_pb2.CloudletInfo
    states = appcommon_pb2
    assert stage_of(cloudlet_info("c1", states.CLOUDLET_STATE_OFFLINE), nothing) is Stage.KNOWN
    for announcing in (INIT, states.CLOUDLET_STATE_UPGRADE):
        assert stage_of(cloudlet_info("c1", announcing), nothing) is Stage.ANNOUNCED
    assert stage_of(cloudlet_info("c1", READY), nothing) is Stage.READY
    need_sync = info(key=cloudlet("c1").key, state=states.CLOUDLET_STATE_NEED_SYNC)
    assert stage_of(need_sync, nothing) is Stage.READY
    need_sync.controller_cache_received = True
    assert stage_of(need_sync, nothing) is Stage.ANNOUNCED

    # READY from the old CRM while the cloudlet upgrades to another version is not ready
    upgrading = _Lookup(cloudlet("c1", state=common_pb2.UPDATING, container_version="v2"))
    old = info(key=cloudlet("c1").key, state=READY, container_version="v1")
    new = info(key=cloudlet("c1").key, state=READY, container_version="v2")
    assert stage_of(old, upgrading) is Stage.ANNOUNCED
    assert stage_of(new, upgrading) is Stage.READY
    assert stage_of(old, _Lookup(cloudlet("c1", container_version="v2"))) is Stage.READY


def _assert(condition: bool) -> None:
    assert condition
