"""Paged listings against a real etcd: the same keys, values and order as one range read."""

from __future__ import annotations

import pytest

from edge_cloud.listing import _pages, current_revision, list_paged, list_prefix
from edge_cloud.store import EtcdStore, Put

#: Key shapes that make prefix cutting interesting: long shared prefixes, a key that is the
#: prefix of others, non-ASCII text, neighbours differing only in their last character.
KEYS = [
    *(f'1/AppInst/{{"name":"inst{i:04d}","organization":"dev"}}' for i in range(60)),
    *(f'1/Cloudlet/{{"organization":"op","name":"c{i}"}}' for i in range(12)),
    "1/Version",
    "1/VersionV2",
    "1/Versions/x",
    '1/Zone/{"name":"zürich"}',
    '1/Zone/{"name":"zurich"}',
    "1/Z",
]


async def load(store: EtcdStore) -> int:
    result = await store.txn((), [Put(k, f"value of {k}".encode()) for k in KEYS])
    return result.revision


@pytest.mark.parametrize("page_keys", [1, 2, 5, 13, 1000])
async def test_paged_listing_equals_one_range(etcd_store: EtcdStore, page_keys: int) -> None:
    await load(etcd_store)
    await etcd_store.put("2/outside", b"not listed")
    want, revision = await etcd_store.range("1/")
    got, at = await list_paged(etcd_store, "1/", page_keys=page_keys)
    assert at == revision
    assert [(kv.key, kv.value, kv.mod_revision) for kv in got] == [
        (kv.key, kv.value, kv.mod_revision) for kv in want
    ]
    assert len(got) == len(KEYS)


async def test_listing_at_a_revision_is_a_snapshot(etcd_store: EtcdStore) -> None:
    revision = await load(etcd_store)
    await etcd_store.put('1/AppInst/{"name":"later","organization":"dev"}', b"new")
    await etcd_store.delete("1/Version")
    old, at = await list_paged(etcd_store, "1/", revision=revision, page_keys=3)
    assert at == revision
    assert sorted(kv.key for kv in old) == sorted(KEYS)
    now, _ = await list_prefix(etcd_store, "1/")
    assert {kv.key for kv in now} == (set(KEYS) - {"1/Version"}) | {
        '1/AppInst/{"name":"later","organization":"dev"}'
    }


async def test_current_revision_reads_nothing_and_follows_writes(etcd_store: EtcdStore) -> None:
    before = await current_revision(etcd_store)
    written = await etcd_store.put("1/Flavor/x", b"{}")
    assert written > before
    assert await current_revision(etcd_store) == written


async def test_empty_prefix_and_bad_page_size(etcd_store: EtcdStore) -> None:
    assert (await list_paged(etcd_store, "1/", page_keys=2))[0] == []
    assert (await list_prefix(etcd_store, "1/"))[0] == []
    with pytest.raises(ValueError, match="page_keys"):
        await list_paged(etcd_store, "1/", page_keys=0)


def test_pages_partition_sorted_keys_into_prefixes() -> None:
    keys = sorted(KEYS)
    for limit in (1, 3, 7, 100):
        pages = _pages(keys, 0, len(keys), "1/", limit)
        covered = [k for prefix, lo, hi in pages for k in keys[lo:hi]]
        assert covered == keys
        for prefix, lo, hi in pages:
            # exactly the keys with that prefix, so a prefix read returns that slice
            assert [k for k in keys if k.startswith(prefix)] == keys[lo:hi]
            assert hi - lo <= limit or keys[lo] == prefix
