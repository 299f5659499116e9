"""AlertPolicyApi: user-defined alert thresholds attached to Apps (controller.md §3.13)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
from edgeproto import alertpolicy_pb2, alertpolicy_pb2_grpc, result_pb2

from services.controller import _uses, _validate
from services.controller._engine import Txn
from services.controller._runtime import Runtime

__all__ = ["UPDATABLE", "AlertPolicyApi", "add"]

UPDATABLE: Final = frozenset({"3", "4", "5", "6", "7", "8", "9", "10", "11"})
"""Everything but the key and the server's delete_prepare."""

_Ctx = grpc.aio.ServicerContext[Any, Any]


class AlertPolicyApi(alertpolicy_pb2_grpc.AlertPolicyApiServicer):
    """Create, update, delete and show alert policies."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _check(self, policy: alertpolicy_pb2.AlertPolicy) -> None:
        _validate.check_alert_policy(policy)
        _validate.check_alert_trigger(policy, self._rt.settings().alert_policy_min_trigger_time)

    async def CreateAlertPolicy(
        self, request: alertpolicy_pb2.AlertPolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Validate (the minimum trigger time comes from Settings), then store."""
        self._check(request)
        await self._rt.engine.create(request)
        return result_pb2.Result()

    async def UpdateAlertPolicy(
        self, request: alertpolicy_pb2.AlertPolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Change the listed fields; a changed policy is validated as a whole."""

        def check(
            txn: Txn, merged: alertpolicy_pb2.AlertPolicy, current: alertpolicy_pb2.AlertPolicy
        ) -> None:
            if merged != current:
                self._check(merged)

        await self._rt.engine.update(request, updatable=UPDATABLE, check=check)
        return result_pb2.Result()

    async def DeleteAlertPolicy(
        self, request: alertpolicy_pb2.AlertPolicy, context: _Ctx
    ) -> result_pb2.Result:
        """Delete-prepare, refuse while an App uses it, delete."""
        engine = self._rt.engine
        await engine.delete(request, in_use=lambda p: _uses.alert_policy_users(engine.caches, p))
        return result_pb2.Result()

    async def ShowAlertPolicy(
        self, request: alertpolicy_pb2.AlertPolicy, context: _Ctx
    ) -> AsyncIterator[alertpolicy_pb2.AlertPolicy]:
        """Every cached policy matching the filter."""
        for policy in self._rt.engine.show(request):
            yield policy


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    alertpolicy_pb2_grpc.add_AlertPolicyApiServicer_to_server(AlertPolicyApi(runtime), server)
    return ["edgeproto.AlertPolicyApi"]
