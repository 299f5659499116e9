"""Lease refreshes carry their own deadline, shorter than the TTL they protect."""

from __future__ import annotations

import pytest

from edge_cloud.errors import DeadlineExceeded
from edge_cloud.store import EtcdStore


async def test_a_refresh_past_its_deadline_says_so(etcd_store: EtcdStore) -> None:
    lease = await etcd_store.grant(10)
    try:
        with pytest.raises(
            DeadlineExceeded, match=r"did not refresh lease [0-9a-f]+ within 1e-06s"
        ):
            await etcd_store.refresh(lease, timeout=1e-6)
        assert await etcd_store.refresh(lease, timeout=5.0) == 10
    finally:
        await etcd_store.revoke(lease)
