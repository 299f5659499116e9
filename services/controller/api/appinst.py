"""AppInstApi: application instances on clusters and cloudlets (controller.md §3.9).

Create, update, refresh and delete are long-running and server-streaming (`_appinst_ops`);
Show is answered from the caches. Creates and deletes from the AutoProv service carry its
intent as gRPC metadata (`caller-auto-prov`, `auto-prov-reason`, `auto-prov-policy-name`);
the call's operation runs with it as the current intent (`_autoprov.INTENT`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import appinst_pb2, appinst_pb2_grpc, result_pb2

from edge_cloud.errors import Unavailable, Unimplemented
from services.controller import _autoprov
from services.controller._appinst_ops import AppInstOps
from services.controller._clusterinst_ops import ClusterInstOps
from services.controller._runtime import Runtime
from services.controller._tracked import TrackedRuntime, streamed, streamed_rpc

__all__ = ["AppInstApi", "add"]

_Ctx = grpc.aio.ServicerContext[Any, Any]


class AppInstApi(appinst_pb2_grpc.AppInstApiServicer):
    """Every AppInstApi RPC."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._ops = (
            AppInstOps(runtime, ClusterInstOps(runtime))
            if isinstance(runtime, TrackedRuntime)
            else None
        )

    def _operations(self) -> AppInstOps:
        if self._ops is None:
            raise Unavailable("this Controller runs without Redis progress tracking")
        return self._ops

    async def CreateAppInst(
        self, request: appinst_pb2.AppInst, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Create an instance; progress lines until it is Ready (or undone).

        An AutoProv caller's metadata makes it an auto-provisioned instance, checked
        against the caller's intent (`_autoprov.check_create`).
        """
        create = self._operations().create
        intent = _autoprov.intent_from_metadata(context.invocation_metadata())
        async for result in streamed(lambda sink: _autoprov.run_as(intent, create(request, sink))):
            yield result

    async def DeleteAppInst(
        self, request: appinst_pb2.AppInst, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Delete an instance; progress lines until it is gone.

        An AutoProv caller's delete is checked against its intent (`_autoprov.check_delete`).
        """
        delete = self._operations().delete
        intent = _autoprov.intent_from_metadata(context.invocation_metadata())
        async for result in streamed(lambda sink: _autoprov.run_as(intent, delete(request, sink))):
            yield result

    UpdateAppInst = streamed_rpc("update", "Change the listed fields; the worker applies them.")

    RefreshAppInst = streamed_rpc(
        "refresh", "Push the App's current spec to one instance or all of an App's instances."
    )

    async def ShowAppInst(
        self, request: appinst_pb2.AppInst, context: _Ctx
    ) -> AsyncIterator[appinst_pb2.AppInst]:
        """Every cached instance matching the filter."""
        for inst in self._rt.engine.show(request):
            yield inst

    async def HandleFedAppInstEvent(
        self, request: appinst_pb2.FedAppInstEvent, context: _Ctx
    ) -> result_pb2.Result:
        """Federation is not part of this Controller yet."""
        raise Unimplemented("HandleFedAppInstEvent: federation is not supported yet")


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    appinst_pb2_grpc.add_AppInstApiServicer_to_server(AppInstApi(runtime), server)
    return ["edgeproto.AppInstApi"]
