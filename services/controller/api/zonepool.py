"""ZonePoolApi: operator-owned groups of zones (controller.md §3.5)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any, Final

import grpc.aio
from edgeproto import cloudletkey_pb2, result_pb2, zone_pb2, zonepool_pb2, zonepool_pb2_grpc

from edge_cloud.errors import AlreadyExists, FailedPrecondition, NotFound
from edge_cloud.objects import keys, registry
from services.controller import _ids, _uses
from services.controller._engine import DELETE_PREPARE, Txn
from services.controller._runtime import Runtime

__all__ = ["UPDATABLE", "ZonePoolApi", "add", "check_zones_exist"]

ZONE: Final = registry.by_class(zone_pb2.Zone)
ZONE_POOL: Final = registry.by_class(zonepool_pb2.ZonePool)
UPDATABLE: Final = frozenset({"3"})
"""zones."""

_Ctx = grpc.aio.ServicerContext[Any, Any]


def check_zones_exist(txn: Txn, zones: Iterable[cloudletkey_pb2.ZoneKey]) -> None:
    """Every zone must exist and not be being deleted (read in the transaction).

    Raises:
        FailedPrecondition: `Zone <key> is being deleted` for the first such zone.
        NotFound: `Zones <keys> not found`, listing all missing ones.
    """
    wanted = list(zones)
    missing: list[str] = []
    for key, zone in zip(wanted, txn.get_many(ZONE, wanted), strict=True):
        if zone is None:
            missing.append(keys.key_string(key))
        elif getattr(zone, DELETE_PREPARE):
            raise keys.being_deleted(key)
    if missing:
        raise NotFound(f"Zones {', '.join(missing)} not found")


def _force_org(pool: zonepool_pb2.ZonePool) -> None:
    for zone in pool.zones:
        zone.organization = pool.key.organization


class ZonePoolApi(zonepool_pb2_grpc.ZonePoolApiServicer):
    """Create, update, delete and show zone pools; add and remove members."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def CreateZonePool(
        self, request: zonepool_pb2.ZonePool, context: _Ctx
    ) -> result_pb2.Result:
        """Store a new pool; member zones take the pool's organization and must exist."""
        keys.validate_key(request)

        def check(txn: Txn, pool: zonepool_pb2.ZonePool) -> None:
            _force_org(pool)
            check_zones_exist(txn, pool.zones)
            pool.created_at.CopyFrom(_ids.now_timestamp())

        await self._rt.engine.create(request, check=check)
        return result_pb2.Result()

    async def UpdateZonePool(
        self, request: zonepool_pb2.ZonePool, context: _Ctx
    ) -> result_pb2.Result:
        """Replace the member list (same checks as create); refused under a TPE."""
        engine = self._rt.engine
        update = zonepool_pb2.ZonePool()
        update.CopyFrom(request)
        _force_org(update)

        def check(txn: Txn, merged: zonepool_pb2.ZonePool, current: zonepool_pb2.ZonePool) -> None:
            keys.validate_key(merged)
            if merged == current:
                return
            check_zones_exist(txn, merged.zones)
            tpe = _uses.tpe_for_zone_pool(engine.caches, merged.key)
            if tpe is not None:
                raise FailedPrecondition(
                    f"Not allowed to update ZonePool when TrustPolicyException {tpe} is applied"
                )
            merged.updated_at.CopyFrom(_ids.now_timestamp())

        await engine.update(update, updatable=UPDATABLE, check=check)
        return result_pb2.Result()

    async def DeleteZonePool(
        self, request: zonepool_pb2.ZonePool, context: _Ctx
    ) -> result_pb2.Result:
        """Delete-prepare, refuse while a TrustPolicyException uses it, delete."""
        engine = self._rt.engine
        await engine.delete(request, in_use=lambda p: _uses.zone_pool_users(engine.caches, p))
        return result_pb2.Result()

    async def ShowZonePool(
        self, request: zonepool_pb2.ZonePool, context: _Ctx
    ) -> AsyncIterator[zonepool_pb2.ZonePool]:
        """Every cached pool matching the filter."""
        for pool in self._rt.engine.show(request):
            yield pool

    async def AddZonePoolMember(
        self, request: zonepool_pb2.ZonePoolMember, context: _Ctx
    ) -> result_pb2.Result:
        """Add one zone (of the pool's organization); it must exist."""
        zone = cloudletkey_pb2.ZoneKey()
        zone.CopyFrom(request.zone)
        zone.organization = request.key.organization

        def add_member(txn: Txn, pool: zonepool_pb2.ZonePool) -> None:
            if any(z == zone for z in pool.zones):
                raise AlreadyExists("Zone already part of pool")
            pool.zones.append(zone)
            check_zones_exist(txn, pool.zones)

        # the TPEs of the pool are re-applied to the new zone's instances by the Controller's
        # TpeApplier, which follows ZonePool membership changes (services.controller._tpe)
        await self._rt.engine.modify(ZONE_POOL, request.key, add_member)
        return result_pb2.Result()

    async def RemoveZonePoolMember(
        self, request: zonepool_pb2.ZonePoolMember, context: _Ctx
    ) -> result_pb2.Result:
        """Remove one zone; a zone not in the pool is ignored."""
        zone = cloudletkey_pb2.ZoneKey()
        zone.CopyFrom(request.zone)
        zone.organization = request.key.organization

        def remove_member(txn: Txn, pool: zonepool_pb2.ZonePool) -> None:
            for index, member in enumerate(pool.zones):
                if member == zone:
                    del pool.zones[index]
                    return

        await self._rt.engine.modify(ZONE_POOL, request.key, remove_member)
        return result_pb2.Result()


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    zonepool_pb2_grpc.add_ZonePoolApiServicer_to_server(ZonePoolApi(runtime), server)
    return ["edgeproto.ZonePoolApi"]
