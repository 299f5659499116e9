"""EtcdStore.connect refuses malformed endpoints before any network traffic."""

from __future__ import annotations

import pytest

from edge_cloud.errors import InvalidArgument
from edge_cloud.store import EtcdStore


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        ("", "no etcd endpoint"),
        ([], "no etcd endpoint"),
        ("https://127.0.0.1:2379", "TLS"),
        ("http://127.0.0.1:notaport", "invalid port"),
        ("unix:///run/etcd.sock", "not http://host:port"),
    ],
)
async def test_malformed_endpoints_are_invalid_arguments(
    endpoints: str | list[str], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await EtcdStore.connect(endpoints, timeout=0.1)
