"""ResTagTableApi: operator tags recognising optional resources in flavors (controller.md §3.14)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
from edgeproto import restagtable_pb2, restagtable_pb2_grpc, result_pb2

from edge_cloud.objects import keys, registry
from services.controller import _uses
from services.controller._engine import Txn
from services.controller._runtime import Runtime

__all__ = ["UPDATABLE", "ResTagTableApi", "add"]

RES_TAG_TABLE: Final = registry.by_class(restagtable_pb2.ResTagTable)
UPDATABLE: Final = frozenset({"3", "4"})
"""tags, azone."""

_Ctx = grpc.aio.ServicerContext[Any, Any]


class ResTagTableApi(restagtable_pb2_grpc.ResTagTableApiServicer):
    """Create, update, delete, show and get tables; add and remove tags."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def CreateResTagTable(
        self, request: restagtable_pb2.ResTagTable, context: _Ctx
    ) -> result_pb2.Result:
        """Store a new table; its name is lower-cased."""
        keys.validate_key(request)
        table = restagtable_pb2.ResTagTable()
        table.CopyFrom(request)
        table.key.name = table.key.name.lower()
        await self._rt.engine.create(table)
        return result_pb2.Result()

    async def UpdateResTagTable(
        self, request: restagtable_pb2.ResTagTable, context: _Ctx
    ) -> result_pb2.Result:
        """Change the listed fields (tags, availability zone)."""
        await self._rt.engine.update(request, updatable=UPDATABLE)
        return result_pb2.Result()

    async def DeleteResTagTable(
        self, request: restagtable_pb2.ResTagTable, context: _Ctx
    ) -> result_pb2.Result:
        """Delete-prepare, refuse while a Cloudlet maps a resource to it, delete."""
        engine = self._rt.engine
        await engine.delete(request, in_use=lambda t: _uses.res_tag_table_users(engine.caches, t))
        return result_pb2.Result()

    async def ShowResTagTable(
        self, request: restagtable_pb2.ResTagTable, context: _Ctx
    ) -> AsyncIterator[restagtable_pb2.ResTagTable]:
        """Every cached table matching the filter."""
        for table in self._rt.engine.show(request):
            yield table

    async def AddResTag(
        self, request: restagtable_pb2.ResTagTable, context: _Ctx
    ) -> result_pb2.Result:
        """Add or replace tags."""

        def add_tags(txn: Txn, table: restagtable_pb2.ResTagTable) -> None:
            table.tags.update(request.tags)

        await self._rt.engine.modify(RES_TAG_TABLE, request.key, add_tags)
        return result_pb2.Result()

    async def RemoveResTag(
        self, request: restagtable_pb2.ResTagTable, context: _Ctx
    ) -> result_pb2.Result:
        """Remove the named tags; absent ones are ignored."""

        def remove_tags(txn: Txn, table: restagtable_pb2.ResTagTable) -> None:
            for name in request.tags:
                table.tags.pop(name, None)

        await self._rt.engine.modify(RES_TAG_TABLE, request.key, remove_tags)
        return result_pb2.Result()

    async def GetResTagTable(
        self, request: restagtable_pb2.ResTagTableKey, context: _Ctx
    ) -> restagtable_pb2.ResTagTable:
        """One table, read from etcd."""

        def read(txn: Txn) -> restagtable_pb2.ResTagTable:
            table = txn.get(RES_TAG_TABLE, request)
            if table is None:
                raise keys.not_found(request)
            return table

        return await self._rt.engine.apply(read)


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    restagtable_pb2_grpc.add_ResTagTableApiServicer_to_server(ResTagTableApi(runtime), server)
    return ["edgeproto.ResTagTableApi"]
