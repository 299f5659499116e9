"""AutoScalePolicyApi: node-count limits and scaling triggers of clusters (§3.11)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
from edgeproto import autoscalepolicy_pb2, autoscalepolicy_pb2_grpc, result_pb2

from services.controller import _uses, _validate
from services.controller._engine import Txn
from services.controller._runtime import Runtime

__all__ = ["UPDATABLE", "AutoScalePolicyApi", "add"]

UPDATABLE: Final = frozenset({"3", "4", "5", "6", "7", "8", "9", "10", "11"})
"""Everything but the key and the server's delete_prepare."""

_Ctx = grpc.aio.ServicerContext[Any, Any]


class AutoScalePolicyApi(autoscalepolicy_pb2_grpc.AutoScalePolicyApiServicer):
    """Create, update, delete and show policies."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def CreateAutoScalePolicy(
        self, request: autoscalepolicy_pb2.AutoScalePolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Store a new policy (`key <key> already exists` when taken, as the original)."""
        policy = autoscalepolicy_pb2.AutoScalePolicy()
        policy.CopyFrom(request)
        _validate.check_autoscale_policy(policy)
        await self._rt.engine.create(policy, plain=True)
        return result_pb2.Result()

    async def UpdateAutoScalePolicy(
        self, request: autoscalepolicy_pb2.AutoScalePolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Change the listed fields; the result is validated as a whole.

        Running clusters are not resized; their next create or update clamps the node count.
        """

        def check(
            txn: Txn,
            merged: autoscalepolicy_pb2.AutoScalePolicy,
            current: autoscalepolicy_pb2.AutoScalePolicy,
        ) -> None:
            _validate.check_autoscale_policy(merged)

        await self._rt.engine.update(request, updatable=UPDATABLE, check=check)
        return result_pb2.Result()

    async def DeleteAutoScalePolicy(
        self, request: autoscalepolicy_pb2.AutoScalePolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Delete-prepare, refuse while a ClusterInst uses it, delete."""
        engine = self._rt.engine
        await engine.delete(
            request, in_use=lambda p: _uses.autoscale_policy_users(engine.caches, p)
        )
        return result_pb2.Result()

    async def ShowAutoScalePolicy(
        self, request: autoscalepolicy_pb2.AutoScalePolicy, context: _Ctx
    ) -> AsyncIterator[autoscalepolicy_pb2.AutoScalePolicy]:
        """Every cached policy matching the filter."""
        for policy in self._rt.engine.show(request):
            yield policy


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    servicer = AutoScalePolicyApi(runtime)
    autoscalepolicy_pb2_grpc.add_AutoScalePolicyApiServicer_to_server(servicer, server)
    return ["edgeproto.AutoScalePolicyApi"]
