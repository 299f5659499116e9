"""Lease refreshes carry their own deadline, shorter than the TTL they protect."""

from __future__ import annotations

import os
import signal

import pytest

from edge_cloud.errors import DeadlineExceeded
from edge_cloud.localservers import ServerProcess
from edge_cloud.store import EtcdStore


async def test_a_refresh_past_its_deadline_says_so(private_etcd: ServerProcess) -> None:
    async with await EtcdStore.connect(private_etcd.client_url) as store:
        lease = await store.grant(30)
        os.kill(private_etcd.pid, signal.SIGSTOP)  # etcd hangs: no answer, no error
        try:
            with pytest.raises(DeadlineExceeded, match=r"did not refresh lease \w+ within 0.3s"):
                await store.refresh(lease, timeout=0.3)
        finally:
            os.kill(private_etcd.pid, signal.SIGCONT)
        assert await store.refresh(lease, timeout=5.0) == 30
        await store.revoke(lease)
