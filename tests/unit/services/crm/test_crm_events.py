"""The CRM's reactions to ClusterInsts, with the real handler, Info cache and fake platform.

What goes upstream is recorded by the Info cache's `upstream` callbacks (where the daemon
plugs in its notify client), so each test sees exactly what the Controller would receive.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from edgeproto import (
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
)

from edge_cloud.crmutil import ClusterWork, InfoCache
from edge_cloud.errors import ConfigError, NotFound
from edge_cloud.objects import keys
from edge_cloud.platform import PlatformCaches
from services.crm._events import INCONSISTENT, KeyedTasks, ObjectEvents
from services.crm._host import CrmHost
from services.crm.config import CrmConfig
from services.crm.daemon import parse_cloudlet_key

TS = common_pb2
Info = clusterinst_pb2.ClusterInstInfo
pytestmark = pytest.mark.timeout(20)


@dataclass
class Upstream:
    """What the Controller would receive: Info updates and deletes, in order."""

    sent: list[Info] = field(default_factory=list)
    deleted: list[Info] = field(default_factory=list)

    def states(self) -> list[str]:
        return [TS.TrackedState.Name(i.state) for i in self.sent]  # type: ignore[arg-type]


@dataclass
class Crm:
    host: CrmHost
    cloudlet: cloudlet_pb2.Cloudlet
    clusters: dict[str, clusterinst_pb2.ClusterInst]
    events: ObjectEvents[clusterinst_pb2.ClusterInst, Info]
    tasks: KeyedTasks
    upstream: Upstream
    snapshots: list[int]


async def make_crm(**env: str) -> Crm:
    key = cloudletkey_pb2.CloudletKey(organization="op", name=f"u{uuid.uuid4().hex[:8]}")
    cloudlet = cloudlet_pb2.Cloudlet(key=key, platform_type="fake", state=TS.READY)
    cloudlet.env_var.update({"FAKE_STEP_DELAY": "0", **env})
    flavor = flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x1.small"), ram=4096, vcpus=2)
    clusters: dict[str, clusterinst_pb2.ClusterInst] = {}
    caches = PlatformCaches(
        cloudlets={keys.key_string(key): cloudlet},
        flavors={keys.key_string(flavor.key): flavor},
        cluster_insts=clusters,
    )
    config = CrmConfig(cloudlet_key=keys.key_string(key), test_mode=True)
    host = CrmHost(config, key, caches, {}, {})
    platform = await host.initialised(cloudlet)
    await platform.init_ha_conditional(host_progress := _Lines())
    assert host_progress.lines == []
    upstream = Upstream()
    infos = InfoCache(
        Info, TS.TrackedState.DESCRIPTOR, upstream.sent.append, upstream.deleted.append
    )
    tasks = KeyedTasks()
    snapshots: list[int] = []
    events = ObjectEvents(
        "ClusterInst", infos, ClusterWork(host).apply, tasks, lambda: snapshots.append(1)
    )
    return Crm(host, cloudlet, clusters, events, tasks, upstream, snapshots)


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def task(self, message: str) -> None:
        self.lines.append(message)

    def step(self, message: str) -> None:
        self.lines.append(message)


def cluster(crm: Crm, name: str, state: int) -> clusterinst_pb2.ClusterInst:
    obj = clusterinst_pb2.ClusterInst(
        deployment="docker", flavor=flavor_pb2.FlavorKey(name="x1.small"), state=state
    )  # type: ignore[arg-type]
    obj.key.name, obj.key.organization = name, "dev"
    obj.node_flavor = "x1.small"  # the infra flavor the Controller matched
    obj.cloudlet_key.CopyFrom(crm.cloudlet.key)
    crm.clusters[keys.key_string(obj.key)] = obj
    return obj


def with_state(obj: clusterinst_pb2.ClusterInst, state: int) -> clusterinst_pb2.ClusterInst:
    out = clusterinst_pb2.ClusterInst()
    out.CopyFrom(obj)
    out.state = state  # type: ignore[assignment]
    return out


async def test_create_requested_is_carried_out_and_reported() -> None:
    crm = await make_crm()
    obj = cluster(crm, "c1", TS.CREATE_REQUESTED)
    crm.events.updated(obj, None)
    await crm.tasks.idle()
    assert crm.upstream.states()[0] == "CREATING"
    assert crm.upstream.states()[-1] == "READY"
    last = crm.upstream.sent[-1]
    assert list(last.status.msgs) == [
        "Creating", "First Create Task", "Second Create Task",
        "Getting Cluster Infra Resources", "Ready",
    ]  # fmt: skip
    assert len(last.resources.vms) == 1  # the docker VM
    assert crm.snapshots == [1]  # the resource snapshot is refreshed after the change


async def test_a_requested_state_is_acted_on_once() -> None:
    crm = await make_crm()
    obj = cluster(crm, "once", TS.CREATE_REQUESTED)
    crm.events.updated(obj, None)
    again = with_state(obj, TS.CREATE_REQUESTED)
    again.num_nodes = 3  # another field changed while it waits: not a second create
    crm.events.updated(again, obj)
    await crm.tasks.idle()
    starts = [i for i in crm.upstream.sent if list(i.status.msgs) == ["Creating"]]
    assert len(starts) == 1, crm.upstream.sent
    assert crm.upstream.states().count("READY") == 1
    # the Controller then moves it on: CREATING and READY echo back, nothing runs again
    sent = len(crm.upstream.sent)
    crm.events.updated(with_state(obj, TS.CREATING), again)
    crm.events.updated(with_state(obj, TS.READY), with_state(obj, TS.CREATING))
    await crm.tasks.idle()
    assert len(crm.upstream.sent) == sent


async def test_injected_failure_is_create_error_with_the_platform_message() -> None:
    crm = await make_crm(FAKE_FAIL_AT="create_cluster:step1")
    crm.events.updated(cluster(crm, "bad", TS.CREATE_REQUESTED), None)
    await crm.tasks.idle()
    last = crm.upstream.sent[-1]
    assert last.state == TS.CREATE_ERROR
    assert list(last.errors) == ["fake platform create cluster failed at step 1 (injected)"]
    assert crm.snapshots == [1]  # the platform cleaned up: the snapshot is re-read anyway


async def test_transient_state_unknown_here_becomes_the_error_state() -> None:
    crm = await make_crm()
    # as after a restart: the Controller says CREATING, this CRM has no record of it
    crm.events.updated(cluster(crm, "lost", TS.CREATING), None)
    await crm.tasks.idle()
    [report] = crm.upstream.sent
    assert report.state == TS.CREATE_ERROR
    assert report.errors[0].startswith(INCONSISTENT)
    deleting = cluster(crm, "lost2", TS.DELETING)
    crm.events.updated(deleting, None)
    assert crm.upstream.sent[-1].state == TS.DELETE_ERROR


async def test_ready_objects_are_not_redone_after_a_restart() -> None:
    crm = await make_crm()
    crm.events.updated(cluster(crm, "kept", TS.READY), None)
    await crm.tasks.idle()
    assert crm.upstream.sent == []
    assert crm.snapshots == []


async def test_delete_then_removal_drops_the_info_after_the_work() -> None:
    crm = await make_crm()
    obj = cluster(crm, "gone", TS.CREATE_REQUESTED)
    crm.events.updated(obj, None)
    deleting = with_state(obj, TS.DELETE_REQUESTED)
    crm.events.updated(deleting, obj)  # queued behind the create
    crm.events.deleted(deleting)
    await crm.tasks.idle()
    states = crm.upstream.states()
    assert states.index("READY") < states.index("DELETING") < states.index("DELETE_DONE")
    assert [keys.key_string(i.key) for i in crm.upstream.deleted] == [keys.key_string(obj.key)]
    assert crm.snapshots == [1, 1]


async def test_keyed_tasks_serialise_per_key_and_close_cancels() -> None:
    tasks = KeyedTasks()
    order: list[str] = []
    gate = asyncio.Event()

    async def first() -> None:
        await gate.wait()
        order.append("a1")

    async def second() -> None:
        order.append("a2")

    async def other() -> None:
        order.append("b")

    tasks.submit("a", first)
    tasks.submit("a", second)
    tasks.submit("b", other)
    await asyncio.sleep(0.01)
    assert order == ["b"]
    assert tasks.busy("a")
    assert not tasks.busy("b")
    gate.set()
    await tasks.idle()
    assert order == ["b", "a1", "a2"]
    stuck = tasks.submit("c", asyncio.Event().wait)
    await tasks.close()
    assert stuck.cancelled()


async def test_the_host_serves_only_its_cloudlet() -> None:
    crm = await make_crm()
    other = cloudletkey_pb2.CloudletKey(organization="op", name="elsewhere")
    with pytest.raises(NotFound, match="this CRM serves cloudlet"):
        crm.host.cloudlet(other)
    assert crm.host.cloudlet(crm.cloudlet.key) is crm.cloudlet
    # unchanged cloudlet: the same platform object; changed env vars: a new one
    same = await crm.host.initialised(crm.cloudlet)
    assert same is crm.host.current
    changed = cloudlet_pb2.Cloudlet()
    changed.CopyFrom(crm.cloudlet)
    changed.env_var["FAKE_STEP_DELAY"] = "0.001"
    assert await crm.host.initialised(changed) is not same


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "--cloudlet-key is required"),
        ("not json", "--cloudlet-key: invalid CloudletKey key string"),
        ('{"organization":"op"}', "needs both organization and name"),
    ],
)
def test_cloudlet_key_flag_errors_say_what_to_pass(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_cloudlet_key(text)


def test_cloudlet_key_flag_accepts_the_original_spelling() -> None:
    from edge_cloud.config import load

    config = load(CrmConfig, ["-cloudletKey", '{"organization":"op","name":"c1"}'], {})
    key: Any = parse_cloudlet_key(config.cloudlet_key)
    assert (key.organization, key.name) == ("op", "c1")
