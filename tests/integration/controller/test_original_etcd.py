"""An etcd the original Controller wrote is served after `--auto-upgrade` (controller.md §2.8).

The original's own upgrade test data (`tests/unit/edge_cloud/original_etcd/`, see its README):
`NodePoolsFeature_pre.etcd` is a database at data model 56 as the original stored it,
`NodePoolsFeature_post.etcd` what the original's upgrade 57 made of it. Our upgrades run on
the first, a Controller's caches load the result, and every object must equal what the
original's own result decodes to (plus 58's `obj_id` on Apps, which the original's post file
predates).
"""

from __future__ import annotations

from pathlib import Path

from edge_cloud.objects import codec, keys, registry
from edge_cloud.store import EtcdStore
from services.controller._startup import VERSION_HASH, VERSION_ID, check_version, version_value
from services.controller._upgrade import UPGRADES
from tests.integration.controller.conftest import StartInstance

SAMPLES = Path(__file__).parents[2] / "unit" / "edge_cloud" / "original_etcd"


def etcd_lines(name: str) -> list[tuple[str, str]]:
    """(key, value) pairs of an etcdctl dump (the pre files separate them by blank lines)."""
    lines = [line for line in (SAMPLES / name).read_text().splitlines() if line.strip()]
    return list(zip(lines[::2], lines[1::2], strict=True))


async def test_the_originals_database_loads_into_the_caches_after_the_upgrade(
    etcd_store: EtcdStore, start_instance: StartInstance
) -> None:
    [at_56] = [u for u in UPGRADES if u.id == 56]
    await etcd_store.put("1/VersionV2", version_value(at_56.hash, at_56.id))
    for key, value in etcd_lines("NodePoolsFeature_pre.etcd"):
        await etcd_store.put(key, value.encode())

    await check_version(etcd_store, auto_upgrade=True)

    version = await etcd_store.get("1/VersionV2")
    assert version is not None
    assert version.value == version_value(VERSION_HASH, VERSION_ID)
    instance = await start_instance()
    expected = etcd_lines("NodePoolsFeature_post.etcd")
    assert len(expected) == 11
    for etcd_key, value in expected:
        parts = keys.parse_store_key(etcd_key)
        objtype = registry.by_name(parts.type_name)
        want = codec.decode(objtype, value)
        got = instance.sync.caches.get(objtype, parts.key)
        assert got is not None, etcd_key
        if parts.type_name == "App":
            assert len(got.obj_id) == 26  # type: ignore[attr-defined]  # 58's ULID
            want.obj_id = got.obj_id  # type: ignore[attr-defined]
        assert got == want, etcd_key
    helm = instance.sync.caches.get(
        registry.by_name("App"), '{"organization":"zern","name":"helmapp","version":"1.0"}'
    )
    assert helm is not None
    assert helm.kubernetes_resources.cpu_pool.total_vcpus.whole == 4  # type: ignore[attr-defined]
    assert helm.image_type == 1  # type: ignore[attr-defined]  # "Docker"
