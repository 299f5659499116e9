"""Cloudlet-key filtering: which objects a CRM-like client gets, and when (controller.md §6.5).

A client that sets `filter_cloudlet_key` in its VERSION notice receives the *cloudlet-scoped*
types only for the cloudlets it has told the server about by sending their `CloudletInfo`,
and only once those cloudlets have come far enough:

=========  ===================================================================================
stage      reached when the client's CloudletInfo for the cloudlet says
=========  ===================================================================================
KNOWN      anything (the key is now in the connection's filter set)
ANNOUNCED  INIT, READY, UPGRADE or NEED_SYNC: the Cloudlet itself (and what only it refers
           to: its VMPool, GPUDriver, trust-policy exceptions) may be sent
READY      READY, or NEED_SYNC without `controller_cache_received`: everything on the
           cloudlet (ClusterInsts, AppInsts, ...) is sent, then the one SENDALL_END
=========  ===================================================================================

Every other type is sent in full from the start. Each scoped type has a `CloudletFilter`:
the stage it waits for and how to tell whether an object belongs to a given cloudlet. The
simple case is a function extracting the object's cloudlet key (`CloudletFilter.by_key`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from distributed_match_engine import appcommon_pb2
from edgeproto import cloudlet_pb2, cloudletkey_pb2, common_pb2

from edge_cloud.notify._wire import Message, key_string

__all__ = [
    "DEFAULT_CLOUDLET_FILTERS",
    "CloudletFilter",
    "ObjectLookup",
    "Stage",
    "stage_of",
]

CloudletKey = cloudletkey_pb2.CloudletKey


class Stage(enum.IntEnum):
    """How far a filtered client's cloudlet has come; objects wait for a stage."""

    KNOWN = 0
    ANNOUNCED = 1
    READY = 2


class ObjectLookup(Protocol):
    """Read access to the server's current objects, for filters that follow references."""

    def lookup(self, type_name: str, key: str) -> Message | None:
        """The current object of `type_name` with key string `key`, or None."""
        ...


#: Does the object (arg 1) belong to the cloudlet with this key (arg 2)?
MatchFn = Callable[[Any, CloudletKey, ObjectLookup], bool]


@dataclass(frozen=True, slots=True)
class CloudletFilter:
    """How objects of one cloudlet-scoped type are matched to a filtered client.

    Attributes:
        match: Whether an object belongs to a cloudlet (given by key).
        stage: The stage the cloudlet must have reached before its objects are sent.
        depends_on: Types whose changes can change what `match` answers (re-checked then).
    """

    match: MatchFn
    stage: Stage = Stage.READY
    depends_on: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def by_key(
        cls, extract: Callable[[Any], CloudletKey], stage: Stage = Stage.READY
    ) -> CloudletFilter:
        """A filter for types that name their cloudlet in a field.

        Args:
            extract: Returns the object's cloudlet key.
            stage: The stage to wait for.

        Returns:
            The filter.
        """

        def match(obj: Any, cloudlet: CloudletKey, _lookup: ObjectLookup) -> bool:
            return bool(extract(obj) == cloudlet)

        return cls(match, stage)


_CLOUDLET = "edgeproto.Cloudlet"


def _cloudlet(lookup: ObjectLookup, key: CloudletKey) -> cloudlet_pb2.Cloudlet | None:
    found = lookup.lookup(_CLOUDLET, key_string(cloudlet_pb2.Cloudlet(key=key)))
    return found if isinstance(found, cloudlet_pb2.Cloudlet) else None


def _vmpool_match(obj: Any, key: CloudletKey, lookup: ObjectLookup) -> bool:
    cloudlet = _cloudlet(lookup, key)
    return (
        cloudlet is not None
        and key.organization == obj.key.organization
        and cloudlet.vm_pool == obj.key.name
    )


def _gpudriver_match(obj: Any, key: CloudletKey, lookup: ObjectLookup) -> bool:
    cloudlet = _cloudlet(lookup, key)
    return (
        cloudlet is not None
        and bool(cloudlet.gpu_config.driver.name)
        and cloudlet.gpu_config.driver == obj.key
    )


def _tpe_match(obj: Any, key: CloudletKey, _lookup: ObjectLookup) -> bool:
    return bool(key.organization == obj.key.zone_pool_key.organization)


_DEPENDS_ON_CLOUDLET = frozenset({_CLOUDLET})

#: The original's filtered types (objects.md §4.1, controller.md §6.5), by full type name.
DEFAULT_CLOUDLET_FILTERS: Mapping[str, CloudletFilter] = {
    _CLOUDLET: CloudletFilter.by_key(lambda o: o.key, Stage.ANNOUNCED),
    "edgeproto.VMPool": CloudletFilter(_vmpool_match, Stage.ANNOUNCED, _DEPENDS_ON_CLOUDLET),
    "edgeproto.GPUDriver": CloudletFilter(_gpudriver_match, Stage.ANNOUNCED, _DEPENDS_ON_CLOUDLET),
    "edgeproto.TrustPolicyException": CloudletFilter(_tpe_match, Stage.ANNOUNCED),
    "edgeproto.ClusterInst": CloudletFilter.by_key(lambda o: o.cloudlet_key),
    "edgeproto.AppInst": CloudletFilter.by_key(lambda o: o.cloudlet_key),
    "edgeproto.CloudletNode": CloudletFilter.by_key(lambda o: o.key.cloudlet_key),
    "edgeproto.TPEInstanceState": CloudletFilter.by_key(lambda o: o.key.cloudlet_key),
}

_ANNOUNCING = frozenset(
    {
        appcommon_pb2.CLOUDLET_STATE_INIT,
        appcommon_pb2.CLOUDLET_STATE_READY,
        appcommon_pb2.CLOUDLET_STATE_UPGRADE,
        appcommon_pb2.CLOUDLET_STATE_NEED_SYNC,
    }
)
_UPGRADING = frozenset({common_pb2.UPDATE_REQUESTED, common_pb2.UPDATING})


def stage_of(info: cloudlet_pb2.CloudletInfo, lookup: ObjectLookup) -> Stage:
    """The stage a client's CloudletInfo UPDATE puts its cloudlet in.

    READY from a CRM whose container version differs from the one the cloudlet is being
    upgraded to counts only as ANNOUNCED: that is the old CRM, and the new one will say
    READY when it takes over (the original ignores it in the same way).

    Args:
        info: The CloudletInfo the client sent.
        lookup: The server's objects (for the Cloudlet's upgrade state).

    Returns:
        The stage.
    """
    state = info.state
    if state not in _ANNOUNCING:
        return Stage.KNOWN
    ready = state == appcommon_pb2.CLOUDLET_STATE_READY or (
        state == appcommon_pb2.CLOUDLET_STATE_NEED_SYNC and not info.controller_cache_received
    )
    if not ready:
        return Stage.ANNOUNCED
    if info.container_version:
        cloudlet = _cloudlet(lookup, info.key)
        if (
            cloudlet is not None
            and cloudlet.state in _UPGRADING
            and cloudlet.container_version != info.container_version
        ):
            return Stage.ANNOUNCED
    return Stage.READY


def reached(
    flt: CloudletFilter,
    obj: Message,
    cloudlets: Iterable[tuple[CloudletKey, Stage]],
    lookup: ObjectLookup,
) -> bool:
    """Whether `obj` may go to a client whose cloudlets are at these stages."""
    return any(stage >= flt.stage and flt.match(obj, key, lookup) for key, stage in cloudlets)
