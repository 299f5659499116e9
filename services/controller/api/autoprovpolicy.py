"""AutoProvPolicyApi: where and how many instances to deploy automatically (§3.10)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
from edgeproto import (
    autoprovpolicy_pb2,
    autoprovpolicy_pb2_grpc,
    cloudletkey_pb2,
    result_pb2,
    zone_pb2,
)

from edge_cloud.errors import AlreadyExists, InvalidArgument
from edge_cloud.objects import keys, registry
from services.controller import _uses, _validate
from services.controller._engine import Txn
from services.controller._runtime import Runtime

__all__ = ["UPDATABLE", "AutoProvPolicyApi", "add", "configure_zones"]

AUTOPROV: Final = registry.by_class(autoprovpolicy_pb2.AutoProvPolicy)
ZONE: Final = registry.by_class(zone_pb2.Zone)
UPDATABLE: Final = frozenset({"3", "4", "5", "6", "7", "8", "9"})
"""Everything but the key and the server's delete_prepare."""

_Ctx = grpc.aio.ServicerContext[Any, Any]


def configure_zones(txn: Txn, policy: autoprovpolicy_pb2.AutoProvPolicy) -> None:
    """Each zone must exist, not be being deleted, and appear once (read in the transaction).

    Raises:
        NotFound: `Zone key <key> not found`.
        FailedPrecondition: `Zone <key> is being deleted`.
        InvalidArgument: `duplicate zone <key> in list`.
    """
    seen: set[str] = set()
    zones = list(policy.zones)
    txn.get_many(ZONE, zones)  # one round trip for all of them
    for zone in zones:
        txn.require(ZONE, zone)
        key = keys.key_string(zone)
        if key in seen:
            raise InvalidArgument(f"duplicate zone {key} in list")
        seen.add(key)


class AutoProvPolicyApi(autoprovpolicy_pb2_grpc.AutoProvPolicyApiServicer):
    """Create, update, delete and show policies; add and remove zones."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def CreateAutoProvPolicy(
        self, request: autoprovpolicy_pb2.AutoProvPolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Store a new policy; its zones must exist."""
        _validate.check_autoprov_policy(request)
        if request.min_active_instances > len(request.zones):
            raise InvalidArgument(
                "Minimum Active Instances cannot be larger than the number of Zones"
            )
        await self._rt.engine.create(request, check=configure_zones)
        return result_pb2.Result()

    async def UpdateAutoProvPolicy(
        self, request: autoprovpolicy_pb2.AutoProvPolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Change the listed fields; the result is validated as a whole."""

        def check(
            txn: Txn,
            merged: autoprovpolicy_pb2.AutoProvPolicy,
            current: autoprovpolicy_pb2.AutoProvPolicy,
        ) -> None:
            _validate.check_autoprov_policy(merged)
            if merged != current:
                configure_zones(txn, merged)

        await self._rt.engine.update(request, updatable=UPDATABLE, check=check)
        return result_pb2.Result()

    async def DeleteAutoProvPolicy(
        self, request: autoprovpolicy_pb2.AutoProvPolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Delete-prepare, refuse while an App uses it, delete."""
        engine = self._rt.engine
        await engine.delete(request, in_use=lambda p: _uses.autoprov_policy_users(engine.caches, p))
        return result_pb2.Result()

    async def ShowAutoProvPolicy(
        self, request: autoprovpolicy_pb2.AutoProvPolicy, context: _Ctx
    ) -> AsyncIterator[autoprovpolicy_pb2.AutoProvPolicy]:
        """Every cached policy matching the filter."""
        for policy in self._rt.engine.show(request):
            yield policy

    async def AddAutoProvPolicyZone(
        self, request: autoprovpolicy_pb2.AutoProvPolicyZone, context: _Ctx
    ) -> result_pb2.Result:
        """Add one zone; it must exist."""
        zone = cloudletkey_pb2.ZoneKey()
        zone.CopyFrom(request.zone_key)

        def add_zone(txn: Txn, policy: autoprovpolicy_pb2.AutoProvPolicy) -> None:
            if any(z == zone for z in policy.zones):
                raise AlreadyExists("zone already part of policy")
            policy.zones.append(zone)
            configure_zones(txn, policy)

        await self._rt.engine.modify(AUTOPROV, request.key, add_zone)
        return result_pb2.Result()

    async def RemoveAutoProvPolicyZone(
        self, request: autoprovpolicy_pb2.AutoProvPolicyZone, context: _Ctx
    ) -> result_pb2.Result:
        """Remove one zone; a zone not in the policy is ignored."""

        def remove_zone(txn: Txn, policy: autoprovpolicy_pb2.AutoProvPolicy) -> None:
            for index, zone in enumerate(policy.zones):
                if zone == request.zone_key:
                    del policy.zones[index]
                    return

        await self._rt.engine.modify(AUTOPROV, request.key, remove_zone)
        return result_pb2.Result()


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    servicer = AutoProvPolicyApi(runtime)
    autoprovpolicy_pb2_grpc.add_AutoProvPolicyApiServicer_to_server(servicer, server)
    return ["edgeproto.AutoProvPolicyApi"]
