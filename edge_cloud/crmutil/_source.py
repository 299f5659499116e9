"""What the common handlers need from the daemon that runs them (CCRM or CRM).

The original's `CRMHandler` (crm_platforms.md §3) is shared by both daemons; only "how do I
get the platform" and "where do Info updates go" differ. The second is the `InfoSender`
each call receives; the first is this protocol, which the CCRM's per-cloudlet platform host
and the CRM's single-cloudlet host both satisfy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from edgeproto import cloudlet_pb2, cloudletkey_pb2, settings_pb2

from edge_cloud.platform import Platform, PlatformCaches

__all__ = ["PlatformSource", "platform_fingerprint"]


class PlatformSource(Protocol):
    """Controller objects and initialised platforms, as a handler reads them.

    Attributes:
        caches: The Controller's objects (notify caches), read-only.
    """

    caches: PlatformCaches

    def settings(self) -> settings_pb2.Settings:
        """The Controller's Settings (defaults until they arrive)."""
        ...

    def cloudlet(self, key: cloudletkey_pb2.CloudletKey) -> cloudlet_pb2.Cloudlet:
        """A Cloudlet as the Controller last sent it.

        Raises:
            NotFound: Not (yet) known.
        """
        ...

    async def initialised(self, cloudlet: cloudlet_pb2.Cloudlet) -> Platform:
        """The cloudlet's initialised platform object.

        Raises:
            EdgeError: Unknown platform, or what its `init` raised.
        """
        ...


def platform_fingerprint(cloudlet: cloudlet_pb2.Cloudlet, fields: Iterable[str]) -> bytes:
    """The cloudlet's `fields` (proto names) serialised deterministically.

    A platform object is built from a few cloudlet fields; when their fingerprint changes the
    daemon rebuilds the object, so an update of, say, env vars takes effect without a restart.
    """
    wanted = frozenset(fields)
    subset: Any = cloudlet_pb2.Cloudlet()
    for field, value in cloudlet.ListFields():  # the set fields only: called per operation
        if field.name not in wanted:
            continue
        if field.is_repeated or field.message_type is not None:
            getattr(subset, field.name).MergeFrom(value)
        else:
            setattr(subset, field.name, value)
    data: bytes = subset.SerializeToString(deterministic=True)
    return data
