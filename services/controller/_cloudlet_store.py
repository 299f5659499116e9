"""The bare key reserving a cloudlet DNS label (`1/CloudletDnsLabel/<label>`).

A cloudlet's DNS label is reserved under this key in the same transaction that creates the
cloudlet (and released in the one that deletes it), through `Txn.has_key`/`put_key`/
`delete_key`.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DNS_LABEL_PREFIX", "dns_label_key"]

DNS_LABEL_PREFIX: Final = "1/CloudletDnsLabel/"


def dns_label_key(label: str) -> str:
    """The etcd key reserving a cloudlet DNS label (its value is the label)."""
    return f"{DNS_LABEL_PREFIX}{label}"
