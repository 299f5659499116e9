"""The fake platforms against their own emulator: accounting, failures, pauses, idempotency."""

from __future__ import annotations

import asyncio
import json

import pytest
from edgeproto import cloudlet_pb2, common_pb2, flavor_pb2

from edge_cloud.errors import InvalidArgument, NotSupportedByPlatform
from edge_cloud.objects import keys
from edge_cloud.platform import (
    PlatformCaches,
    PlatformPermanentError,
    PlatformResourceExhausted,
    PlatformTransientError,
    RecordedProgress,
    registry,
)
from platforms.fake._infra import OPERATIONS
from platforms.fake.tests.emulator import FakeEmulator, emulate

FAKES = ["fake", "fakesinglecluster", "fakepubliccloud", "fakebaremetal", "fakevmpool"]


async def used(emu: FakeEmulator) -> dict[str, int]:
    snap = await emu.platform.get_cloudlet_infra_resources()
    return {r.name: r.value for r in snap.info}


async def eventually(check, within: float = 5.0) -> None:
    for _ in range(int(within / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"condition not met within {within}s")


async def created(emu: FakeEmulator) -> FakeEmulator:
    await emu.platform.create_cloudlet(
        emu.cloudlet, emu.pf_config, flavor_pb2.Flavor(), emu.progress
    )
    emu.progress.clear()
    return emu


# -- features ----------------------------------------------------------------------------------


def test_each_variant_declares_its_own_features() -> None:
    f = {name: registry.features(name) for name in FAKES}
    assert all(x.is_fake and x.uses_root_lb and x.supports_trust_policy for x in f.values())
    assert f["fakesinglecluster"].is_single_kubernetes_cluster
    assert f["fakesinglecluster"].uses_ingress
    assert f["fakepubliccloud"].kubernetes_managed_control_plane
    assert f["fakepubliccloud"].requires_crm_off_edge
    assert f["fakebaremetal"].supports_kubernetes_only
    assert f["fakebaremetal"].supports_bare_metal
    assert f["fakevmpool"].is_vm_pool
    assert f["fakevmpool"].requires_crm_on_edge
    assert not f["fake"].is_single_kubernetes_cluster
    assert not f["fake"].requires_crm_on_edge
    assert "APIKey" in f["fake"].access_vars
    assert {q.name for q in f["fake"].resource_quota_properties} >= {"RAM", "Instances"}
    assert "FAKE_FAIL_AT" in f["fake"].properties


# -- cloudlet ----------------------------------------------------------------------------------


async def test_cloudlet_create_counts_platform_vms_and_streams_progress() -> None:
    async with emulate() as emu:
        assert await used(emu) == {
            "RAM": 0, "vCPUs": 0, "Disk": 0, "External IPs": 0, "Instances": 0, "nvidia-t4": 0
        }  # fmt: skip
        progress = RecordedProgress()
        await emu.platform.create_cloudlet(
            emu.cloudlet, emu.pf_config, flavor_pb2.Flavor(), progress
        )
        assert progress.messages == ["Creating Cloudlet", "Starting CRMServer"]
        assert await used(emu) == {
            "RAM": 8192, "vCPUs": 4, "Disk": 80, "External IPs": 1, "Instances": 2, "nvidia-t4": 0
        }  # fmt: skip
        snap = await emu.platform.get_cloudlet_infra_resources()
        assert [vm.name for vm in snap.platform_vms] == ["fake-platform-vm", "fake-rootlb-vm"]
        limits = {r.name: r.infra_max_value for r in snap.info}
        assert (limits["RAM"], limits["vCPUs"], limits["nvidia-t4"]) == (40960, 50, 4)
        # idempotent: a second create changes nothing
        await emu.platform.create_cloudlet(
            emu.cloudlet, emu.pf_config, flavor_pb2.Flavor(), progress
        )
        assert (await used(emu))["Instances"] == 2
        progress.clear()
        await emu.platform.delete_cloudlet(emu.cloudlet, emu.pf_config, progress)
        assert progress.messages == ["Deleting Cloudlet", "Stopping CRMServer"]
        assert (await used(emu))["Instances"] == 0
        await emu.platform.delete_cloudlet(emu.cloudlet, emu.pf_config, progress)  # idempotent


async def test_public_cloud_has_no_platform_vms() -> None:
    async with emulate("fakepubliccloud") as emu:
        await created(emu)
        assert (await used(emu))["Instances"] == 0


async def test_cloudlet_info_reports_flavors_limits_and_overrides() -> None:
    flavors = [{"name": "big", "vcpus": 8, "ram": 16384, "disk": 100}, {"name": "lb", "vcpus": 1}]
    env = {"FLAVORS": json.dumps(flavors), "FAKE_RAM_MAX": "99999", "FAKE_VCPUS_MAX": "77"}
    async with emulate(env=env) as emu:
        info = await emu.platform.get_cloudlet_resources()
        assert [f.name for f in info.flavors] == ["big", "lb"]
        assert (info.os_max_ram, info.os_max_vcores, info.os_max_vol_gb) == (99999, 77, 5000)
        assert info.resources_snapshot.info[0].name == "RAM"
        assert {"6", "7", "8", "10", "17"} <= set(info.fields)
        assert (await emu.platform.get_root_lb_flavor()).key.name == "lb"


async def test_default_flavors_and_root_lb_flavor() -> None:
    async with emulate() as emu:
        info = await emu.platform.gather_cloudlet_info()
        assert [f.name for f in info.flavors] == ["x1.tiny", "x1.small", "x1.small.gpu"]
        assert info.flavors[2].gpus[0].model_id == "nvidia-t4"
        lb = await emu.platform.get_root_lb_flavor()
        assert (lb.key.name, lb.vcpus, lb.ram, lb.disk) == ("x1.small", 2, 4096, 40)


async def test_single_cluster_reports_node_pools() -> None:
    async with emulate("fakesinglecluster") as emu:
        info = await emu.platform.gather_cloudlet_info()
        assert [p.Name for p in info.node_pools] == ["cpupool", "gpupool"]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"FLAVORS": "not json"}, "failed to unmarshal FLAVORS"),
        ({"FAKE_RAM_MAX": "lots"}, "FAKE_RAM_MAX must be a whole number"),
        ({"FAKE_FAIL_AT": "explode:step1"}, "unknown operation 'explode'"),
        ({"FAKE_FAIL_AT": "create_cluster:step9"}, "create_cluster has steps 1 to 3"),
        ({"FAKE_PAUSE_AT": "create_cluster"}, "is not operation:stepN"),
        ({"FAKE_STEP_DELAY": "-1"}, "must not be negative"),
    ],
)
async def test_bad_properties_fail_init_with_the_property_named(env, fragment) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        async with emulate(env=env):
            pass


# -- clusters ----------------------------------------------------------------------------------


async def test_cluster_consumes_and_frees_resources() -> None:
    async with emulate() as emu:
        await created(emu)
        before = await used(emu)
        cluster = emu.cluster(nodes=2, dedicated=True)
        await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=30)
        assert emu.progress.messages == ["First Create Task", "Second Create Task"]
        after = await used(emu)
        # 1 master + 2 nodes + dedicated LB, all x1.small; the LB has a public address
        assert after["Instances"] - before["Instances"] == 4
        assert after["RAM"] - before["RAM"] == 4 * 4096
        assert after["External IPs"] - before["External IPs"] == 1
        vms = await emu.platform.get_cluster_infra_resources(cluster)
        assert sorted(vm.type for vm in vms.vms) == [
            "dedicatedrootlb", "k8s-cluster-master", "k8s-cluster-node", "k8s-cluster-node"
        ]  # fmt: skip
        # a repeated create is a no-op, not a second cluster
        await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=30)
        assert await used(emu) == after
        emu.progress.clear()
        await emu.platform.delete_cluster_inst(cluster, emu.progress)
        assert emu.progress.messages == ["First Delete Task", "Second Delete Task"]
        assert await used(emu) == before
        await emu.platform.delete_cluster_inst(cluster, emu.progress)  # idempotent
        assert await used(emu) == before


async def test_docker_cluster_is_one_node() -> None:
    async with emulate() as emu:
        await created(emu)
        cluster = emu.cluster(deployment="docker")
        await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=30)
        vms = (await emu.platform.get_cluster_infra_resources(cluster)).vms
        assert [vm.type for vm in vms] == ["docker-cluster-node"]


async def test_cluster_on_missing_cloudlet_is_refused() -> None:
    async with emulate() as emu:
        with pytest.raises(PlatformPermanentError, match="does not exist"):
            await emu.platform.create_cluster_inst(emu.cluster(), emu.progress, timeout=30)


async def test_unknown_flavor_is_refused_and_names_the_offered_ones() -> None:
    async with emulate() as emu:
        await created(emu)
        before = await used(emu)
        with pytest.raises(PlatformPermanentError, match=r"flavor 'huge' not found.*x1.tiny"):
            await emu.platform.create_cluster_inst(
                emu.cluster(flavor="huge"), emu.progress, timeout=30
            )
        assert await used(emu) == before


async def test_capacity_exhausted_is_permanent_and_leaves_nothing_behind() -> None:
    async with emulate(env={"FAKE_RAM_MAX": "16384"}) as emu:
        await created(emu)  # platform VMs use 8192 MB
        before = await used(emu)
        cluster = emu.cluster(nodes=2)  # 3 x 4096 MB: the third does not fit
        with pytest.raises(PlatformResourceExhausted, match="RAM: needs 4096 MB, 0 MB free"):
            await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=30)
        assert await used(emu) == before
        assert keys.key_string(cluster.key) not in emu.infra.sites[emu.key].clusters
        # a smaller one fits
        await emu.platform.create_cluster_inst(emu.cluster(nodes=1), emu.progress, timeout=30)


async def test_gpu_capacity_is_tracked() -> None:
    async with emulate() as emu:
        await created(emu)
        cluster = emu.cluster(nodes=4, masters=0, flavor="x1.small.gpu")
        await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=30)
        assert (await used(emu))["nvidia-t4"] == 4
        with pytest.raises(PlatformResourceExhausted, match="GPU nvidia-t4: needs 1, 0 free"):
            await emu.platform.create_cluster_inst(
                emu.cluster("c2", nodes=1, masters=0, flavor="x1.small.gpu"),
                emu.progress,
                timeout=30,
            )


async def test_cluster_update_scales_and_rolls_back_on_failure() -> None:
    async with emulate() as emu:
        await created(emu)
        cluster = emu.cluster(nodes=1)
        await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=30)
        base = (await used(emu))["Instances"]
        cluster.node_pools[0].num_nodes = 3
        emu.progress.clear()
        await emu.platform.update_cluster_inst(cluster, emu.progress)
        assert emu.progress.messages == ["Updating Cluster Inst"]
        assert (await used(emu))["Instances"] == base + 2
        emu.infra.fail_at(emu.key, "update_cluster:step2")
        cluster.node_pools[0].num_nodes = 1
        with pytest.raises(PlatformPermanentError, match="update cluster failed at step 2"):
            await emu.platform.update_cluster_inst(cluster, emu.progress)
        assert (await used(emu))["Instances"] == base + 2  # rolled back to three nodes
        emu.infra.clear(emu.key)
        await emu.platform.update_cluster_inst(cluster, emu.progress)
        assert (await used(emu))["Instances"] == base


async def test_network_must_exist() -> None:
    async with emulate() as emu:
        await created(emu)
        cluster = emu.cluster()
        cluster.networks.append("net1")
        with pytest.raises(PlatformPermanentError, match="network net1 not found"):
            await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=30)


# -- failure injection at every step --------------------------------------------------------

CREATE_POINTS = [f"create_cluster:step{i}" for i in range(1, OPERATIONS["create_cluster"] + 1)]


@pytest.mark.parametrize("point", CREATE_POINTS)
async def test_cluster_create_failure_at_each_step_cleans_up(point: str) -> None:
    async with emulate() as emu:
        await created(emu)
        before = await used(emu)
        await emu.rebuild(env={"FAKE_FAIL_AT": point})
        with pytest.raises(PlatformPermanentError, match="fake platform create cluster failed"):
            await emu.platform.create_cluster_inst(emu.cluster(), emu.progress, timeout=30)
        assert await used(emu) == before
        assert emu.infra.sites[emu.key].clusters == {}


async def test_skip_cleanup_on_failure_keeps_the_half_built_cluster() -> None:
    async with emulate(env={"FAKE_FAIL_AT": "create_cluster:step3"}) as emu:
        await created(emu)
        before = await used(emu)
        cluster = emu.cluster(nodes=1)
        cluster.skip_crm_cleanup_on_failure = True
        with pytest.raises(PlatformPermanentError):
            await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=30)
        assert (await used(emu))["Instances"] == before["Instances"] + 2
        await emu.platform.delete_cluster_inst(cluster, emu.progress)
        assert await used(emu) == before


@pytest.mark.parametrize("step", [1, 2])
async def test_cluster_delete_failure_leaves_the_cluster(step: int) -> None:
    async with emulate() as emu:
        await created(emu)
        cluster = emu.cluster()
        await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=30)
        with_cluster = await used(emu)
        emu.infra.fail_at(emu.key, f"delete_cluster:step{step}", transient=True)
        with pytest.raises(PlatformTransientError, match=f"delete cluster failed at step {step}"):
            await emu.platform.delete_cluster_inst(cluster, emu.progress)
        assert await used(emu) == with_cluster


@pytest.mark.parametrize("step", [1, 2])
async def test_cloudlet_create_failure_cleans_up(step: int) -> None:
    async with emulate(env={"FAKE_FAIL_AT": f"create_cloudlet:step{step}"}) as emu:
        with pytest.raises(PlatformPermanentError, match=f"create cloudlet failed at step {step}"):
            await created(emu)
        assert emu.key not in emu.infra.sites
        assert (await used(emu))["Instances"] == 0


@pytest.mark.parametrize("point", ["create_appinst:step1", "create_appinst:step2"])
async def test_vm_app_create_failure_cleans_up(point: str) -> None:
    async with emulate() as emu:
        await created(emu)
        before = await used(emu)
        emu.infra.fail_at(emu.key, point)
        app = emu.app("vm")
        with pytest.raises(PlatformPermanentError, match="create appinst failed"):
            await emu.platform.create_app_inst(
                None, app, emu.app_inst(app, None), None, emu.progress
            )
        assert await used(emu) == before
        assert emu.infra.sites[emu.key].app_insts == {}


@pytest.mark.parametrize(
    "point",
    ["init:step1", "update_cloudlet:step1", "update_appinst:step1", "delete_appinst:step1",
     "delete_appinst:step2", "delete_cloudlet:step1", "delete_cloudlet:step2"],
)  # fmt: skip
async def test_other_failure_points_fail_their_operation(point: str) -> None:
    op = point.partition(":")[0]
    async with emulate() as emu:
        await created(emu)
        app = emu.app("vm")
        inst = emu.app_inst(app, None)
        await emu.platform.create_app_inst(None, app, inst, None, emu.progress)
        emu.infra.fail_at(emu.key, point)
        calls = {
            "init": lambda: emu.rebuild(),
            "update_cloudlet": lambda: emu.platform.update_cloudlet(emu.cloudlet, emu.progress),
            "update_appinst": lambda: emu.platform.update_app_inst(
                None, app, inst, None, emu.progress
            ),
            "delete_appinst": lambda: emu.platform.delete_app_inst(None, app, inst, emu.progress),
            "delete_cloudlet": lambda: emu.platform.delete_cloudlet(
                emu.cloudlet, emu.pf_config, emu.progress
            ),
        }
        with pytest.raises(PlatformPermanentError, match=op.replace("_", " ")):
            await calls[op]()


# -- pauses, cancellation, timeouts ------------------------------------------------------------


async def test_pause_holds_an_operation_until_the_env_var_is_removed() -> None:
    async with emulate() as emu:
        await created(emu)
        await emu.rebuild(env={"FAKE_PAUSE_AT": "create_cluster:step2"})
        progress = RecordedProgress()
        task = asyncio.create_task(
            emu.platform.create_cluster_inst(emu.cluster(), progress, timeout=30)
        )
        await eventually(lambda: "Second Create Task" in progress.messages)
        await asyncio.sleep(0.05)
        assert not task.done()
        site = emu.infra.sites[emu.key]
        assert next(iter(site.clusters.values())).state == "creating"
        await emu.rebuild(env={})  # an UpdateCloudlet removing the pause re-inits the platform
        await asyncio.wait_for(task, 5)
        assert next(iter(site.clusters.values())).state == "ready"


async def test_cancelled_create_leaves_nothing_behind() -> None:
    async with emulate() as emu:
        await created(emu)
        before = await used(emu)
        emu.infra.pause_at(emu.key, "create_cluster:step3")
        task = asyncio.create_task(
            emu.platform.create_cluster_inst(emu.cluster(), emu.progress, timeout=30)
        )
        await eventually(lambda: emu.infra.sites[emu.key].usage().instances > 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await used(emu) == before
        assert emu.infra.sites[emu.key].clusters == {}


async def test_create_timeout_is_transient_and_cleans_up() -> None:
    async with emulate() as emu:
        await created(emu)
        before = await used(emu)
        emu.infra.pause_at(emu.key, "create_cluster:step3")
        with pytest.raises(PlatformTransientError, match=r"timed out after 0\.1s"):
            await emu.platform.create_cluster_inst(emu.cluster(), emu.progress, timeout=0.1)
        assert await used(emu) == before


async def test_concurrent_create_of_the_same_cluster_is_busy() -> None:
    async with emulate() as emu:
        await created(emu)
        emu.infra.pause_at(emu.key, "create_cluster:step2")
        first = asyncio.create_task(
            emu.platform.create_cluster_inst(emu.cluster(), RecordedProgress(), timeout=30)
        )
        await eventually(lambda: bool(emu.infra.sites[emu.key].clusters))
        with pytest.raises(PlatformTransientError, match="busy"):
            await emu.platform.create_cluster_inst(emu.cluster(), emu.progress, timeout=30)
        emu.infra.resume(emu.key)
        await asyncio.wait_for(first, 5)


async def test_step_delay_is_configurable() -> None:
    async with emulate(env={"FAKE_STEP_DELAY": "0.05"}) as emu:
        await created(emu)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await emu.platform.create_cluster_inst(emu.cluster(), emu.progress, timeout=30)
        assert loop.time() - start >= 0.15  # three steps


# -- app instances -----------------------------------------------------------------------------


async def test_vm_app_uses_a_vm_and_an_address() -> None:
    async with emulate() as emu:
        await created(emu)
        before = await used(emu)
        app = emu.app("vm")
        inst = emu.app_inst(app, None)
        await emu.platform.create_app_inst(None, app, inst, None, emu.progress)
        assert emu.progress.messages == ["Creating App Inst"]
        after = await used(emu)
        assert after["Instances"] == before["Instances"] + 1
        assert after["External IPs"] == before["External IPs"] + 1
        await emu.platform.create_app_inst(None, app, inst, None, emu.progress)  # idempotent
        assert await used(emu) == after
        await emu.platform.delete_app_inst(None, app, inst, emu.progress)
        assert await used(emu) == before
        await emu.platform.delete_app_inst(None, app, inst, emu.progress)


async def test_kubernetes_app_runs_on_its_cluster() -> None:
    async with emulate() as emu:
        await created(emu)
        app = emu.app("kubernetes")
        cluster = emu.cluster(nodes=2)
        with pytest.raises(PlatformPermanentError, match=r"ClusterInst .* not found"):
            await emu.platform.create_app_inst(
                cluster, app, emu.app_inst(app, cluster), None, emu.progress
            )
        await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=30)
        before = await used(emu)
        inst = emu.app_inst(app, cluster)
        await emu.platform.create_app_inst(cluster, app, inst, None, emu.progress)
        assert await used(emu) == before  # containers, not VMs
        runtime = await emu.platform.get_app_inst_runtime(cluster, app, inst)
        assert list(runtime.container_ids) == [
            "appOnClusterNode-cpupool0",
            "appOnClusterNode-cpupool1",
        ]
        await emu.platform.delete_cluster_inst(cluster, emu.progress)
        assert emu.infra.sites[emu.key].app_insts == {}  # its workloads went with it


async def test_kubernetes_only_platform_refuses_docker_apps() -> None:
    async with emulate("fakebaremetal") as emu:
        await created(emu)
        app = emu.app("docker")
        with pytest.raises(NotSupportedByPlatform, match="Kubernetes apps only"):
            await emu.platform.create_app_inst(
                None, app, emu.app_inst(app, None), None, emu.progress
            )


async def test_appinst_create_fail_property() -> None:
    async with emulate(env={"FAKE_PLATFORM_APPINST_CREATE_FAIL": "1"}) as emu:
        await created(emu)
        app = emu.app("vm")
        with pytest.raises(PlatformPermanentError, match="FAKE_PLATFORM_APPINST_CREATE_FAIL"):
            await emu.platform.create_app_inst(
                None, app, emu.app_inst(app, None), None, emu.progress
            )


# -- statelessness and restarts ----------------------------------------------------------------


async def test_a_new_platform_object_sees_the_same_infrastructure() -> None:
    async with emulate() as emu:
        await created(emu)
        await emu.platform.create_cluster_inst(emu.cluster(), emu.progress, timeout=30)
        snapshot = await used(emu)
        await emu.rebuild()
        assert await used(emu) == snapshot


async def test_restart_rebuilds_the_inventory_from_the_controllers_objects() -> None:
    async with emulate() as emu:
        await created(emu)
        cluster = emu.cluster(nodes=2)
        await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=30)
        app = emu.app("vm")
        inst = emu.app_inst(app, None)
        await emu.platform.create_app_inst(None, app, inst, None, emu.progress)
        expected = await used(emu)
    cloudlet = cloudlet_pb2.Cloudlet()
    cloudlet.CopyFrom(emu.cloudlet)
    cloudlet.state = common_pb2.READY
    caches = PlatformCaches(
        cloudlets={keys.key_string(cloudlet.key): cloudlet},
        cluster_insts={keys.key_string(cluster.key): cluster},
        apps={keys.key_string(app.key): app},
        app_insts={keys.key_string(inst.key): inst},
    )
    async with emulate(caches=caches) as fresh:  # a new process: empty infrastructure
        assert await used(fresh) == expected


async def test_features_only_calls_work_without_init() -> None:
    platform = registry.load("fake")()
    assert platform.name_sanitize("a.b") == "a.b"
    assert (await platform.get_root_lb_flavor()).key.name == "x1.small"
    extra = platform.get_cluster_additional_resources(cloudlet_pb2.Cloudlet(), [])
    assert extra["Instances"].value == 0
