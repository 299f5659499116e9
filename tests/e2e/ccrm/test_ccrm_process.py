"""The CCRM as operators run it: a process, called over gRPC, fed by a notify server.

The notify server stands in for the Controller's: it is the real `NotifyServer` over an
in-memory source, in this test process, so the CCRM's caches fill and its platform
registrations arrive exactly as they would from and at a Controller.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from distributed_match_engine import appcommon_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    ccrm_pb2,
    ccrm_pb2_grpc,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    exec_pb2,
    flavor_pb2,
    resources_pb2,
    settings_pb2,
)

from edge_cloud.notify import Action, MemorySource, NotifyServer, Peer
from edge_cloud.platform import registry

ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")
CS = appcommon_pb2
TS = common_pb2
FAKES = {"fake", "fakesinglecluster", "fakepubliccloud", "fakebaremetal", "fakevmpool"}
SEND_TYPES = [
    settings_pb2.Settings,
    flavor_pb2.Flavor,
    cloudlet_pb2.Cloudlet,
    clusterinst_pb2.ClusterInst,
    app_pb2.App,
    appinst_pb2.AppInst,
]


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float, what: str) -> T:
    for _ in range(int(within / 0.05)):
        value = await probe()
        if value is not None:
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out after {within:.0f}s waiting for {what}")


@dataclass
class Controller:
    """The notify side of a Controller: objects down, registrations up."""

    source: MemorySource
    port: int
    received: list[Any] = field(default_factory=list)


@dataclass
class Ccrm:
    process: subprocess.Popen[bytes]
    port: int
    channel: grpc.aio.Channel
    log: Path

    @property
    def cloudlets(self) -> ccrm_pb2_grpc.CloudletPlatformAPIStub:
        return ccrm_pb2_grpc.CloudletPlatformAPIStub(self.channel)

    @property
    def clusters(self) -> ccrm_pb2_grpc.ClusterPlatformAPIStub:
        return ccrm_pb2_grpc.ClusterPlatformAPIStub(self.channel)

    @property
    def app_insts(self) -> ccrm_pb2_grpc.AppInstPlatformAPIStub:
        return ccrm_pb2_grpc.AppInstPlatformAPIStub(self.channel)


@pytest.fixture
async def controller() -> AsyncIterator[Controller]:
    source = MemorySource([settings_pb2.Settings()])
    ctl = Controller(source=source, port=0)

    async def on_receive(peer: Peer, action: Action, obj: Any) -> None:
        ctl.received.append(obj)

    notify = NotifyServer(
        source,
        name="test-controller",
        send_types=SEND_TYPES,
        receive_types=[cloudlet_pb2.PlatformFeatures],
        on_receive=on_receive,
    )
    server = grpc.aio.server()
    notify.add_to(server)
    ctl.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await notify.start()
    try:
        yield ctl
    finally:
        await notify.close()
        await server.stop(None)


@pytest.fixture
async def ccrm(controller: Controller, tmp_path: Path) -> AsyncIterator[Ccrm]:
    ready = tmp_path / "ready.json"
    log = tmp_path / "ccrm.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "FAKE_"))}
    with log.open("wb") as out:
        process = await asyncio.to_thread(
            subprocess.Popen,
            [
                sys.executable, "-m", "services.ccrm",
                "--api-addr", "127.0.0.1:0",
                "--metrics-addr", "",
                "--notify-addrs", f"127.0.0.1:{controller.port}",
                "--ready-file", str(ready),
                "--shutdown-grace", "5",
                "--log-format", "text",
            ],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    async def ports() -> dict[str, int] | None:
        if process.poll() is not None:
            pytest.fail(f"ccrm exited with {process.returncode}: {log.read_text()[-2000:]}")
        return json.loads(ready.read_text()) if ready.exists() else None

    try:
        port = (await eventually(ports, 30, "the ready file"))["api"]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Ccrm(process, port, channel, log)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def fake_cloudlet(name: str, state: int, **env: str) -> cloudlet_pb2.Cloudlet:
    cloudlet = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization="e2eop", name=name),
        platform_type="fake",
        state=state,  # type: ignore[arg-type]
        container_version="2026-01-01",
    )
    cloudlet.env_var.update({"FAKE_STEP_DELAY": "0.01", **env})
    return cloudlet


async def collect(call: Any) -> tuple[list[Any], grpc.aio.AioRpcError | None]:
    infos: list[Any] = []
    try:
        async for info in call:
            infos.append(info)
    except grpc.aio.AioRpcError as err:
        return infos, err
    return infos, None


def used(snapshot: Any) -> dict[str, int]:
    return {r.name: r.value for r in snapshot.info}


async def test_registers_its_platforms_with_the_controller(
    ccrm: Ccrm, controller: Controller
) -> None:
    async def registered() -> set[str] | None:
        names = {f.platform_type for f in controller.received if f.node_type == "ccrm"}
        return names if names == installed else None

    # Without --platforms the CCRM hosts every installed plugin, the fakes among them.
    installed = set(registry.available())
    assert installed >= FAKES
    await eventually(registered, 30, "the PlatformFeatures of every installed platform")
    features = {f.platform_type: f for f in controller.received}
    assert features["fake"].is_fake
    assert "FAKE_FAIL_AT" in features["fake"].properties
    assert features["fakevmpool"].requires_crm_on_edge


async def test_apply_cloudlet_streams_to_ready_and_delete_frees_everything(ccrm: Ccrm) -> None:
    create = fake_cloudlet("ready1", TS.CREATE_REQUESTED)
    infos, err = await collect(ccrm.cloudlets.ApplyCloudlet(create, timeout=30))
    assert err is None
    assert list(infos[-1].status.msgs) == [
        "Creating Cloudlet", "Starting CRMServer", "Gathering Cloudlet Info"
    ]  # fmt: skip
    assert [i.status.msgs[-1] for i in infos[:3]] == list(infos[-1].status.msgs)
    final = infos[-1]
    assert final.state == CS.CLOUDLET_STATE_READY
    assert final.key == create.key
    assert [f.name for f in final.flavors] == ["x1.tiny", "x1.small", "x1.small.gpu"]
    assert (final.os_max_ram, final.os_max_vcores) == (40960, 50)
    assert used(final.resources_snapshot)["RAM"] == 8192  # the two platform VMs
    assert final.trust_policy_state == TS.NOT_PRESENT
    assert final.controller_cache_received
    assert final.container_version == "2026-01-01"
    assert "3" in final.fields
    assert "17" in final.fields

    resources = await ccrm.cloudlets.GetCloudletResources(create, timeout=10)
    assert used(resources.resources_snapshot)["Instances"] == 2
    assert "10" in resources.fields

    delete = fake_cloudlet("ready1", TS.DELETE_REQUESTED)
    infos, err = await collect(ccrm.cloudlets.ApplyCloudlet(delete, timeout=30))
    assert err is None
    assert list(infos[-1].status.msgs) == ["Deleting Cloudlet", "Stopping CRMServer"]
    resources = await ccrm.cloudlets.GetCloudletResources(delete, timeout=10)
    assert used(resources.resources_snapshot)["Instances"] == 0
    # deleting what is not there is done, not an error
    infos, err = await collect(ccrm.cloudlets.ApplyCloudlet(delete, timeout=30))
    assert err is None


async def test_injected_failure_ends_in_an_error_state_with_its_message(ccrm: Ccrm) -> None:
    create = fake_cloudlet("broken1", TS.CREATE_REQUESTED, FAKE_FAIL_AT="create_cloudlet:step2")
    infos, err = await collect(ccrm.cloudlets.ApplyCloudlet(create, timeout=30))
    message = "fake platform create cloudlet failed at step 2 (injected)"
    assert err is not None
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == message
    assert infos[-1].state == CS.CLOUDLET_STATE_ERRORS
    assert list(infos[-1].errors) == [message]
    assert list(infos[-1].status.msgs) == ["Creating Cloudlet", "Starting CRMServer"]
    # the failed create cleaned up after itself
    resources = await ccrm.cloudlets.GetCloudletResources(create, timeout=10)
    assert used(resources.resources_snapshot)["Instances"] == 0


async def test_capacity_exhaustion_is_resource_exhausted(ccrm: Ccrm) -> None:
    create = fake_cloudlet("tiny1", TS.CREATE_REQUESTED, FAKE_RAM_MAX="4096")
    infos, err = await collect(ccrm.cloudlets.ApplyCloudlet(create, timeout=30))
    assert err is not None
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "not enough resources on fake cloudlet" in (err.details() or "")
    assert infos[-1].state == CS.CLOUDLET_STATE_ERRORS


async def test_unknown_platform_is_not_found(ccrm: Ccrm) -> None:
    create = fake_cloudlet("alien1", TS.CREATE_REQUESTED)
    create.platform_type = "openstack"
    _, err = await collect(ccrm.cloudlets.ApplyCloudlet(create, timeout=30))
    assert err is not None
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "got request for unknown platform openstack" in (err.details() or "")


async def test_clusters_and_app_instances_through_the_notify_caches(
    ccrm: Ccrm, controller: Controller
) -> None:
    create = fake_cloudlet("work1", TS.CREATE_REQUESTED)
    _, err = await collect(ccrm.cloudlets.ApplyCloudlet(create, timeout=30))
    assert err is None
    stored = cloudlet_pb2.Cloudlet()
    stored.CopyFrom(create)
    stored.state = TS.READY
    app = app_pb2.App(deployment="kubernetes")
    app.key.organization, app.key.name, app.key.version = "dev", "app1", "1.0"
    cluster = clusterinst_pb2.ClusterInst(
        deployment="kubernetes", num_masters=1, master_node_flavor="x1.small"
    )
    cluster.key.name, cluster.key.organization = "cl1", "dev"
    cluster.cloudlet_key.CopyFrom(create.key)
    cluster.node_pools.add(
        Name="cpupool",
        num_nodes=2,
        node_resources=resources_pb2.NodeResources(infra_node_flavor="x1.small"),
    )
    controller.source.commit(puts=[stored, app, cluster])

    async def flavor_known() -> flavor_pb2.Flavor | None:
        try:
            return await ccrm.cloudlets.GetRootLbFlavor(create.key, timeout=5)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None

    lb = await eventually(flavor_known, 20, "the CCRM to receive the cloudlet")
    assert lb.key.name == "x1.small"

    request = clusterinst_pb2.ClusterInst()
    request.CopyFrom(cluster)
    request.state = TS.CREATE_REQUESTED
    infos, err = await collect(ccrm.clusters.ApplyClusterInst(request, timeout=30))
    assert err is None
    assert infos[0].state == TS.CREATING
    assert infos[-1].state == TS.READY
    assert list(infos[-1].status.msgs) == [
        "Creating", "First Create Task", "Second Create Task",
        "Getting Cluster Infra Resources", "Ready",
    ]  # fmt: skip
    vms = next(i.resources for i in infos if i.resources.vms)
    assert len(vms.vms) == 3
    resources = await ccrm.cloudlets.GetCloudletResources(create, timeout=10)
    assert used(resources.resources_snapshot)["Instances"] == 5

    inst = appinst_pb2.AppInst(state=TS.CREATE_REQUESTED)
    inst.key.name, inst.key.organization = "inst1", "dev"
    inst.app_key.CopyFrom(app.key)
    inst.cluster_key.CopyFrom(cluster.key)
    inst.cloudlet_key.CopyFrom(create.key)
    infos, err = await collect(ccrm.app_insts.ApplyAppInst(inst, timeout=30))
    assert err is None
    assert infos[-1].state == TS.READY
    assert infos[-1].power_state == appinst_pb2.POWER_ON
    assert list(infos[-1].runtime_info.container_ids) == [
        "appOnClusterNode-cpupool0", "appOnClusterNode-cpupool1"
    ]  # fmt: skip

    inst.state = TS.DELETE_REQUESTED
    infos, err = await collect(ccrm.app_insts.ApplyAppInst(inst, timeout=30))
    assert err is None
    assert infos[-1].state == TS.DELETE_DONE
    request.state = TS.DELETE_REQUESTED
    infos, err = await collect(ccrm.clusters.ApplyClusterInst(request, timeout=30))
    assert err is None
    assert infos[-1].state == TS.DELETE_DONE
    resources = await ccrm.cloudlets.GetCloudletResources(create, timeout=10)
    assert used(resources.resources_snapshot)["Instances"] == 2


async def test_cluster_failure_reports_create_error(ccrm: Ccrm, controller: Controller) -> None:
    create = fake_cloudlet("fail2", TS.CREATE_REQUESTED)
    _, err = await collect(ccrm.cloudlets.ApplyCloudlet(create, timeout=30))
    assert err is None
    stored = cloudlet_pb2.Cloudlet()
    stored.CopyFrom(create)
    stored.state = TS.READY
    stored.env_var["FAKE_FAIL_AT"] = "create_cluster:step3"
    controller.source.put(stored)
    cluster = clusterinst_pb2.ClusterInst(
        deployment="docker", node_flavor="x1.small", state=TS.CREATE_REQUESTED
    )
    cluster.key.name, cluster.key.organization = "cl2", "dev"
    cluster.cloudlet_key.CopyFrom(create.key)

    async def attempt() -> tuple[list[Any], grpc.aio.AioRpcError] | None:
        infos, err = await collect(ccrm.clusters.ApplyClusterInst(cluster, timeout=30))
        assert err is not None
        return (infos, err) if err.code() != grpc.StatusCode.NOT_FOUND else None

    infos, err = await eventually(attempt, 20, "the CCRM to receive the cloudlet")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert infos[-1].state == TS.CREATE_ERROR
    assert list(infos[-1].errors) == ["fake platform create cluster failed at step 3 (injected)"]


async def test_small_calls(ccrm: Ccrm, controller: Controller) -> None:
    create = fake_cloudlet("small1", TS.CREATE_REQUESTED)
    stored = cloudlet_pb2.Cloudlet()
    stored.CopyFrom(create)
    stored.state = TS.READY
    controller.source.put(stored)
    request = ccrm_pb2.NameSanitizeReq(cloudlet_key=create.key, message="my.name")

    async def sanitized() -> str | None:
        try:
            return (await ccrm.cloudlets.NameSanitize(request, timeout=5)).message
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None

    assert await eventually(sanitized, 20, "the CCRM to receive the cloudlet") == "my.name"
    assert (await ccrm.clusters.NameSanitize(request, timeout=5)).message == "my.name"
    manifest = await ccrm.cloudlets.GetCloudletManifest(create.key, timeout=5)
    assert manifest.manifest.startswith("fake manifest\n")
    extra = await ccrm.cloudlets.GetClusterAdditionalResources(
        ccrm_pb2.ClusterResourcesReq(cloudlet_key=create.key, vm_resources=[{"count": 3}]),
        timeout=5,
    )
    assert extra.infra_resources["Instances"].value == 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ccrm.cloudlets.ProcessExecRequest(
            ccrm_pb2.CloudletExecReq(cloudlet_key=create.key, exec_req=exec_pb2.ExecRequest()),
            timeout=5,
        )
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "EdgeTurn slice" in (caught.value.details() or "")
    missing = cloudletkey_pb2.CloudletKey(organization="e2eop", name="nosuch")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ccrm.cloudlets.GetRootLbFlavor(missing, timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nosuch" in (caught.value.details() or "")


async def created_and_cached(
    ccrm: Ccrm, controller: Controller, name: str, **env: str
) -> cloudlet_pb2.Cloudlet:
    """A fake cloudlet created through ApplyCloudlet and known to the CCRM's caches."""
    create = fake_cloudlet(name, TS.CREATE_REQUESTED)
    _, err = await collect(ccrm.cloudlets.ApplyCloudlet(create, timeout=30))
    assert err is None
    stored = cloudlet_pb2.Cloudlet()
    stored.CopyFrom(create)
    stored.state = TS.READY
    stored.env_var.update(env)
    controller.source.put(stored)
    request = ccrm_pb2.NameSanitizeReq(cloudlet_key=create.key, message="x")

    async def known() -> bool | None:
        try:
            await ccrm.cloudlets.NameSanitize(request, timeout=5)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None
        return True

    await eventually(known, 20, "the CCRM to receive the cloudlet")
    return stored


def docker_cluster(cloudlet: cloudlet_pb2.Cloudlet, name: str) -> clusterinst_pb2.ClusterInst:
    cluster = clusterinst_pb2.ClusterInst(
        deployment="docker", node_flavor="x1.small", state=TS.CREATE_REQUESTED
    )
    cluster.key.name, cluster.key.organization = name, "dev"
    cluster.cloudlet_key.CopyFrom(cloudlet.key)
    return cluster


async def test_a_caller_giving_up_cancels_the_work_and_nothing_is_left(
    ccrm: Ccrm, controller: Controller
) -> None:
    stored = await created_and_cached(
        ccrm, controller, "cancel1", FAKE_PAUSE_AT="create_cluster:step3"
    )
    baseline = used(
        (await ccrm.cloudlets.GetCloudletResources(stored, timeout=10)).resources_snapshot
    )
    infos, err = await collect(
        ccrm.clusters.ApplyClusterInst(docker_cluster(stored, "paused"), timeout=1.5)
    )
    assert err is not None
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert infos[-1].status.msgs[-1] == "Second Create Task"

    async def cleaned() -> bool | None:
        snap = (await ccrm.cloudlets.GetCloudletResources(stored, timeout=10)).resources_snapshot
        return True if used(snap) == baseline else None

    await eventually(cleaned, 10, "the cancelled create to clean up")


async def test_a_pause_set_on_the_cloudlet_ends_when_an_update_removes_it(
    ccrm: Ccrm, controller: Controller
) -> None:
    stored = await created_and_cached(
        ccrm, controller, "pause1", FAKE_PAUSE_AT="create_cluster:step2"
    )
    call = ccrm.clusters.ApplyClusterInst(docker_cluster(stored, "held"), timeout=30)
    task = asyncio.create_task(collect(call))
    await asyncio.sleep(1.0)
    assert not task.done()  # held at the pause point
    update = cloudlet_pb2.Cloudlet()
    update.CopyFrom(stored)
    del update.env_var["FAKE_PAUSE_AT"]
    update.state = TS.UPDATE_REQUESTED
    controller.source.put(update)
    infos, err = await collect(ccrm.cloudlets.ApplyCloudlet(update, timeout=30))
    assert err is None
    assert infos[-1].state == CS.CLOUDLET_STATE_READY
    assert "FAKE_STEP_DELAY=0.01" in " ".join(infos[-1].status.msgs)  # "Updating envvar, K=V"
    infos, err = await asyncio.wait_for(task, 10)
    assert err is None
    assert infos[-1].state == TS.READY


def test_an_unknown_platform_to_host_is_bad_config() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    done = subprocess.run(
        [sys.executable, "-m", "services.ccrm", "--platforms", "fake,nosuch",
         "--api-addr", "127.0.0.1:0", "--metrics-addr", ""],
        cwd=ROOT, env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    last = done.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("ccrm: error: --platforms: nosuch platform not found (available: ")
    assert "fake, " in last
