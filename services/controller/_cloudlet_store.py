"""Transactions that also touch keys which are not objects (`1/CloudletDnsLabel/<label>`).

The engine's `Txn` reads and writes registered object types only. A cloudlet's DNS label is
reserved under a bare key in the same transaction that creates the cloudlet (and released in
the one that deletes it), so this module adds raw-key reads and writes to `Txn` and runs
such transactions the way `Engine.apply_at` does: fetch what the function reads, run it,
commit guarded by the mod revisions of everything read, re-run on a lost race.

TODO(controller issue, engine): fold `has_key`/`put_key`/`delete_key` into `Engine.Txn`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeVar

from edge_cloud.errors import EdgeError
from edge_cloud.store import Delete, KeyValue, Op, Put
from services.controller._engine import _MAX_READ_ROUNDS, _TXN_RETRIES, Engine, Txn, _NeedReads

__all__ = ["DNS_LABEL_PREFIX", "KeyTxn", "apply_keys", "dns_label_key"]

R = TypeVar("R")

DNS_LABEL_PREFIX: Final = "1/CloudletDnsLabel/"


def dns_label_key(label: str) -> str:
    """The etcd key reserving a cloudlet DNS label (its value is the label)."""
    return f"{DNS_LABEL_PREFIX}{label}"


class KeyTxn(Txn):
    """A `Txn` that can also read and write bare keys (compared at commit like the rest)."""

    def __init__(self, values: Mapping[str, KeyValue | None]) -> None:
        super().__init__(values)
        self._raw: dict[str, bytes | None] = {}

    def has_key(self, store_key: str) -> bool:
        """Whether a bare key exists (this run's own writes included)."""
        if store_key in self._raw:
            return self._raw[store_key] is not None
        if store_key not in self._values:
            raise _NeedReads([store_key])
        return self._values[store_key] is not None

    def put_key(self, store_key: str, value: bytes) -> None:
        """Write a bare key."""
        self._writes[store_key] = Put(store_key, value)
        self._raw[store_key] = value

    def delete_key(self, store_key: str) -> None:
        """Delete a bare key."""
        self._writes[store_key] = Delete(store_key)
        self._raw[store_key] = None


async def apply_keys(
    engine: Engine,
    fn: Callable[[KeyTxn], R],
    *,
    reads: Iterable[str] = (),
    wait: bool = True,
) -> tuple[R, int | None]:
    """`Engine.apply_at` with a `KeyTxn`: the result of the committing run and its revision.

    Args:
        engine: The engine (its store and sync are used).
        fn: The re-entrant transaction function.
        reads: Keys to fetch up front.
        wait: Wait for the caches to reach the commit revision.

    Returns:
        What `fn` returned, and the commit revision (None when nothing was written).
    """
    wanted: dict[str, None] = dict.fromkeys(reads)
    results: list[R] = []
    wrote: list[bool] = []

    def attempt(values: Mapping[str, KeyValue | None]) -> list[Op]:
        results.clear()
        wrote.clear()
        txn = KeyTxn(values)
        results.append(fn(txn))
        ops = txn.ops()
        wrote.append(bool(ops))
        return ops

    for _ in range(_MAX_READ_ROUNDS):
        try:
            outcome = await engine.store.update(list(wanted), attempt, retries=_TXN_RETRIES)
        except _NeedReads as need:
            wanted.update(dict.fromkeys(need.store_keys))
            continue
        if not (wrote and wrote[0]):
            return results[0], None
        if wait:
            await engine.sync.wait_for_revision(outcome.revision)
        return results[0], outcome.revision
    raise EdgeError(f"transaction kept reading new keys after {_MAX_READ_ROUNDS} rounds")
