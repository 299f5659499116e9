"""The Platform contract, run against every registered platform through its emulator.

Each plugin's `platforms/<type>/tests/emulator.py` offers `emulate(platform_type)`, an
async context manager yielding an object with: `platform` (initialised), `cloudlet`,
`pf_config`, `progress` (a `RecordedProgress` the platform reports into), `node_flavor`,
and the factories `cluster(name)`, `app(deployment)`, `app_inst(app, cluster)` and
`rebuild()` (a new platform object on the same infrastructure). Everything here uses only
those and the `Platform` interface (architecture §9, crm_platforms.md §1).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from edgeproto import flavor_pb2

from edge_cloud.platform import NotSupportedByPlatform, Platform, PlatformFeatures, registry

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = registry.available()


def _package(name: str) -> str:
    (ep,) = [e for e in importlib.metadata.entry_points(group=registry.GROUP) if e.name == name]
    return ep.value.partition(":")[0]


@pytest.fixture(params=PLATFORMS)
async def emu(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    emulator = importlib.import_module(f"{_package(request.param)}.tests.emulator")
    # emulators of real clouds name the server fixtures they run on (moto, ...)
    servers = {name: request.getfixturevalue(name) for name in getattr(emulator, "FIXTURES", ())}
    kwargs = {"servers": servers} if servers else {}
    async with emulator.emulate(request.param, **kwargs) as emulated:
        yield emulated


async def instances(emu: Any) -> dict[str, int]:
    snapshot = await emu.platform.get_cloudlet_infra_resources()
    return {r.name: r.value for r in snapshot.info}


async def create_cloudlet(emu: Any) -> None:
    await emu.platform.create_cloudlet(
        emu.cloudlet, emu.pf_config, flavor_pb2.Flavor(), emu.progress
    )


def test_some_platforms_are_registered() -> None:
    assert "fake" in PLATFORMS


# Folders of platforms/ that are libraries for plugins, not plugins: they register nothing.
SHARED_LIBRARIES = ("common", "k8s")


def test_folders_and_entry_points_match_one_to_one() -> None:
    folders = {
        p.name
        for p in (ROOT / "platforms").iterdir()
        if p.is_dir() and p.name not in (*SHARED_LIBRARIES, "__pycache__")
    }
    registered: dict[str, set[str]] = {}
    for name in PLATFORMS:
        package = _package(name)
        assert package.startswith("platforms."), f"{name} lives outside platforms/"
        registered.setdefault(package.split(".")[1], set()).add(name)
    assert set(registered) == folders
    for folder, names in registered.items():
        assert folder in names, f"platforms/{folder} registers no platform named {folder}"
        assert (ROOT / "platforms" / folder / "README.md").is_file()
        assert (ROOT / "platforms" / folder / "tests" / "emulator.py").is_file()


@pytest.mark.parametrize("name", PLATFORMS)
def test_features_are_static_data_matching_the_registration(name: str) -> None:
    cls = registry.load(name)
    assert issubclass(cls, Platform)
    features = cls.features
    assert isinstance(features, PlatformFeatures)
    assert features.platform_type == name
    assert features.node_type == ""  # the hosting daemon stamps it
    assert PlatformFeatures.from_proto(features.to_proto()) == features


async def test_init_reports_flavors_and_resources(emu: Any) -> None:
    info = await emu.platform.get_cloudlet_resources()
    assert info.flavors, "a platform offers at least one flavor"
    assert info.resources_snapshot.info, "a platform reports its resources"
    assert "17" in info.fields  # resources_snapshot
    assert [f.name for f in await emu.platform.get_flavors()] == [f.name for f in info.flavors]


async def test_root_lb_flavor_follows_the_features(emu: Any) -> None:
    flavor = await emu.platform.get_root_lb_flavor()
    if emu.platform.features.uses_root_lb:
        assert flavor.key.name
    else:
        assert not flavor.key.name


async def test_cloudlet_create_and_delete_are_idempotent(emu: Any) -> None:
    await create_cloudlet(emu)
    assert emu.progress.messages, "create reports progress"
    created = await instances(emu)
    await create_cloudlet(emu)
    assert await instances(emu) == created
    await emu.platform.delete_cloudlet(emu.cloudlet, emu.pf_config, emu.progress)
    await emu.platform.delete_cloudlet(emu.cloudlet, emu.pf_config, emu.progress)


async def test_platform_objects_hold_no_state(emu: Any) -> None:
    await create_cloudlet(emu)
    before = await instances(emu)
    await emu.rebuild()
    assert await instances(emu) == before


async def test_cluster_lifecycle(emu: Any) -> None:
    if emu.platform.features.no_cluster_support:
        pytest.skip("the platform has no clusters")
    await create_cloudlet(emu)
    baseline = await instances(emu)
    cluster = emu.cluster("contract")
    emu.progress.clear()
    await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=60)
    assert emu.progress.messages, "create reports progress"
    built = await instances(emu)
    await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=60)
    assert await instances(emu) == built, "a repeated create must not build twice"
    vms = await emu.platform.get_cluster_infra_resources(cluster)
    assert vms.vms or emu.platform.features.kubernetes_managed_control_plane
    await emu.platform.delete_cluster_inst(cluster, emu.progress)
    assert await instances(emu) == baseline, "delete frees what create used"
    await emu.platform.delete_cluster_inst(cluster, emu.progress)


@pytest.mark.parametrize("ticks", [0, 1, 2, 5])
async def test_a_cancelled_cluster_create_leaves_nothing_half_made(emu: Any, ticks: int) -> None:
    if emu.platform.features.no_cluster_support:
        pytest.skip("the platform has no clusters")
    await create_cloudlet(emu)
    baseline = await instances(emu)
    cluster = emu.cluster("cancelled")
    task = asyncio.create_task(emu.platform.create_cluster_inst(cluster, emu.progress, timeout=60))
    for _ in range(ticks):
        await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        assert await instances(emu) == baseline
    else:  # finished before the cancel arrived: a whole cluster, which delete removes
        await emu.platform.delete_cluster_inst(cluster, emu.progress)
        assert await instances(emu) == baseline


async def test_app_instance_lifecycle(emu: Any) -> None:
    await create_cloudlet(emu)
    features = emu.platform.features
    cluster = emu.cluster("apps")
    await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=60)
    baseline = await instances(emu)
    deployments = ["kubernetes"] if features.supports_kubernetes_only else ["kubernetes", "vm"]
    # refused explicitly (test_undeclared_features_raise_not_supported checks that)
    deployments = [d for d in deployments if d not in getattr(emu, "unsupported_deployments", ())]
    for deployment in deployments:
        app = emu.app(deployment, name=f"app-{deployment}")
        on = None if deployment == "vm" else cluster
        inst = emu.app_inst(app, on, name=f"inst-{deployment}")
        await emu.platform.create_app_inst(on, app, inst, None, emu.progress)
        built = await instances(emu)
        await emu.platform.create_app_inst(on, app, inst, None, emu.progress)
        assert await instances(emu) == built
        await emu.platform.delete_app_inst(on, app, inst, emu.progress)
        assert await instances(emu) == baseline
        await emu.platform.delete_app_inst(on, app, inst, emu.progress)


async def test_undeclared_features_raise_not_supported(emu: Any) -> None:
    await create_cloudlet(emu)
    features = emu.platform.features
    if features.supports_kubernetes_only:
        app = emu.app("vm", name="vmapp")
        with pytest.raises(NotSupportedByPlatform):
            await emu.platform.create_app_inst(
                None, app, emu.app_inst(app, None), None, emu.progress
            )
    for deployment in getattr(emu, "unsupported_deployments", ()):
        app = emu.app(deployment, name=f"refused-{deployment}")
        with pytest.raises(NotSupportedByPlatform, match=deployment):
            await emu.platform.create_app_inst(
                emu.cluster("refused"), app, emu.app_inst(app, None), None, emu.progress
            )
    if not features.supports_trust_policy:
        with pytest.raises(NotSupportedByPlatform):
            await emu.platform.update_trust_policy(None)
    else:
        await emu.platform.update_trust_policy(None)
    if not features.supports_cloudlet_managed_clusters:
        with pytest.raises(NotSupportedByPlatform):
            await emu.platform.get_cloudlet_managed_clusters()


async def test_name_sanitize_returns_a_name(emu: Any) -> None:
    assert isinstance(emu.platform.name_sanitize("Some.Name_1"), str)
