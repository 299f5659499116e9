"""Listing a large prefix of the store, in pages when one response would be too large.

Why: `Store.range` reads a prefix in one etcd response, and a gRPC client refuses a response
larger than its receive limit (64 MiB here). A Controller database of 100,000 objects is
~75 MiB of JSON, so a single listing of `1/` fails and the Controller cannot start (nor can
the notify server take its snapshot). etcd itself pages with `limit` and a start key; the
store exposes prefixes and revisions only, which is enough. When the plain read is refused:

1. list the keys only (~60 bytes a key: a few MiB for 100,000) at the same revision;
2. cut the sorted keys into prefixes that each cover at most `page_keys` keys (a key's
   prefix range holds exactly the keys starting with it, so disjoint prefixes that cover
   every key partition the listing);
3. read each prefix with values at that revision, a few at a time, splitting a page again
   if its values still make the response too large.

The result is what one `range(prefix)` would have returned: every key in key order, one
revision.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections.abc import Iterable, Sequence
from typing import Final

from edge_cloud.errors import ResourceExhausted
from edge_cloud.store import KeyValue, Store

__all__ = ["PAGE_KEYS", "current_revision", "list_paged", "list_prefix", "list_prefixes"]

log = logging.getLogger(__name__)

#: Keys per page: ~10 MiB of typical object JSON, far below the receive limit.
PAGE_KEYS: Final = 10_000
#: Pages (or prefixes, `list_prefixes`) read at once.
IN_FLIGHT: Final = 4
#: A prefix no key of the platform starts with (keys are `<region>/...` or `/ns/...`).
_NOTHING: Final = "\x00edge-cloud-no-such-key\x00"


async def current_revision(store: Store) -> int:
    """The store's current revision, from an empty keys-only read (no data transferred)."""
    _, revision = await store.range(_NOTHING, keys_only=True)
    return revision


async def list_prefix(
    store: Store, prefix: str, *, revision: int | None = None, page_keys: int = PAGE_KEYS
) -> tuple[list[KeyValue], int]:
    """Every key under `prefix` with its value, at one revision, paged when it must be.

    Args:
        store: The store.
        prefix: The prefix to list.
        revision: Read the keys as of this revision (several prefixes listed at one
            revision form one snapshot); None is now.
        page_keys: The most keys one page may hold when paging.

    Returns:
        The keys in key order and the revision of the snapshot (watch from revision + 1).

    Raises:
        RevisionCompacted: etcd compacted the revision before every page was read (a
            caller retries the listing).
        ResourceExhausted: A single value is larger than a response may be.
    """
    try:
        items, now = await store.range(prefix, revision=revision)
    except ResourceExhausted as err:
        log.info("listing %r in pages: %s", prefix, err)
    else:
        # etcd's header carries its current revision, not the one a past read asked for
        return items, now if revision is None else revision
    return await list_paged(store, prefix, revision=revision, page_keys=page_keys)


async def list_prefixes(store: Store, prefixes: Iterable[str], *, revision: int) -> list[KeyValue]:
    """`list_prefix` of each prefix at one revision, a few at a time: one snapshot.

    Returns:
        The keys of each prefix in key order, prefix after prefix.

    Raises:
        RevisionCompacted: etcd compacted the revision before every read was done.
    """
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(prefix: str) -> list[KeyValue]:
        async with gate:
            items, _ = await list_prefix(store, prefix, revision=revision)
            return items

    parts = await asyncio.gather(*(one(prefix) for prefix in prefixes))
    return [kv for part in parts for kv in part]


async def list_paged(
    store: Store, prefix: str, *, revision: int | None = None, page_keys: int = PAGE_KEYS
) -> tuple[list[KeyValue], int]:
    """`list_prefix` always in pages of at most `page_keys` keys (where keys allow).

    Args:
        store: The store.
        prefix: The prefix to list.
        revision: The revision to read at; None is now.
        page_keys: The most keys one page may hold.

    Returns:
        The keys in key order and the revision of the snapshot.
    """
    if page_keys < 1:
        raise ValueError("page_keys must be positive")
    names, now = await store.range(prefix, revision=revision, keys_only=True)
    snapshot = now if revision is None else revision  # the header says now, not `revision`
    keys = [kv.key for kv in names]
    del names
    pages = _pages(keys, 0, len(keys), prefix, page_keys)
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def read(page: tuple[str, int, int]) -> list[KeyValue]:
        async with gate:
            return await _read(store, keys, page, snapshot, page_keys)

    results = await asyncio.gather(*(read(p) for p in pages))
    items = [kv for part in results for kv in part]
    if len(items) != len(keys):  # cannot happen at one revision; say so if it does
        log.warning(
            "paged listing of %r at revision %d found %d keys, expected %d",
            prefix,
            snapshot,
            len(items),
            len(keys),
        )
    log.info("listed %d keys under %r in %d pages", len(items), prefix, len(pages))
    return items, snapshot


async def _read(
    store: Store, keys: Sequence[str], page: tuple[str, int, int], revision: int, limit: int
) -> list[KeyValue]:
    """One page; split into smaller ones when etcd's answer is too large to receive."""
    prefix, lo, hi = page
    try:
        items, _ = await store.range(prefix, revision=revision)
    except ResourceExhausted:
        smaller = max(1, min(limit, hi - lo) // 4)
        if hi - lo <= 1 or smaller >= hi - lo:
            raise
        log.info("page %r of %d keys too large to receive; splitting it", prefix, hi - lo)
        out: list[KeyValue] = []
        for sub in _pages(keys, lo, hi, prefix, smaller):
            out.extend(await _read(store, keys, sub, revision, smaller))
        return out
    return items


def _pages(
    keys: Sequence[str], lo: int, hi: int, prefix: str, limit: int
) -> list[tuple[str, int, int]]:
    """Prefixes covering the sorted keys[lo:hi] (all starting with `prefix`), in key order.

    Each page is (prefix, lo, hi): the keys starting with that prefix are keys[lo:hi].
    A page may exceed `limit` only when a key equals the prefix of others (then its range
    cannot be cut without also reading that key's siblings).
    """
    if hi - lo <= limit:
        return [(prefix, lo, hi)]
    # every key of the slice shares the common prefix of its first and last (sorted) keys
    common = _common_prefix(keys[lo], keys[hi - 1])
    if len(keys[lo]) == len(common):
        return [(common, lo, hi)]  # keys[lo] is itself the prefix of all the others
    depth = len(common)
    out: list[tuple[str, int, int]] = []
    start = lo
    while start < hi:
        head = keys[start][: depth + 1]
        # the first key past every key starting with `head` (sorted, so a bisection)
        end = bisect.bisect_left(keys, head[:-1] + chr(ord(head[-1]) + 1), start + 1, hi)
        out.extend(_pages(keys, start, end, head, limit))
        start = end
    return out


def _common_prefix(a: str, b: str) -> str:
    """The longest string both start with (character by character: keys are not paths)."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return a[:i]
