"""CloudletRefsApi, ClusterRefsApi, AppInstRefsApi, CloudletIPsApi (refs.proto, §3.18).

Four read-only services over the controller-maintained bookkeeping objects; they share this
module because they share `refs.proto` and are one Show each. The objects are written by the
Cloudlet, ClusterInst and AppInst slices; until then the streams are empty.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import refs_pb2, refs_pb2_grpc

from services.controller._runtime import Runtime

__all__ = ["add"]

_Ctx = grpc.aio.ServicerContext[Any, Any]


class CloudletRefsApi(refs_pb2_grpc.CloudletRefsApiServicer):
    """Show CloudletRefs."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def ShowCloudletRefs(
        self, request: refs_pb2.CloudletRefs, context: _Ctx
    ) -> AsyncIterator[refs_pb2.CloudletRefs]:
        """Every cached object matching the filter."""
        for obj in self._rt.engine.show(request):
            yield obj


class ClusterRefsApi(refs_pb2_grpc.ClusterRefsApiServicer):
    """Show ClusterRefs."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def ShowClusterRefs(
        self, request: refs_pb2.ClusterRefs, context: _Ctx
    ) -> AsyncIterator[refs_pb2.ClusterRefs]:
        """Every cached object matching the filter."""
        for obj in self._rt.engine.show(request):
            yield obj


class AppInstRefsApi(refs_pb2_grpc.AppInstRefsApiServicer):
    """Show AppInstRefs."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def ShowAppInstRefs(
        self, request: refs_pb2.AppInstRefs, context: _Ctx
    ) -> AsyncIterator[refs_pb2.AppInstRefs]:
        """Every cached object matching the filter."""
        for obj in self._rt.engine.show(request):
            yield obj


class CloudletIPsApi(refs_pb2_grpc.CloudletIPsApiServicer):
    """Show CloudletIPs."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def ShowCloudletIPs(
        self, request: refs_pb2.CloudletIPs, context: _Ctx
    ) -> AsyncIterator[refs_pb2.CloudletIPs]:
        """Every cached object matching the filter."""
        for obj in self._rt.engine.show(request):
            yield obj


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the four servicers; returns their full service names."""
    refs_pb2_grpc.add_CloudletRefsApiServicer_to_server(CloudletRefsApi(runtime), server)
    refs_pb2_grpc.add_ClusterRefsApiServicer_to_server(ClusterRefsApi(runtime), server)
    refs_pb2_grpc.add_AppInstRefsApiServicer_to_server(AppInstRefsApi(runtime), server)
    refs_pb2_grpc.add_CloudletIPsApiServicer_to_server(CloudletIPsApi(runtime), server)
    return [
        "edgeproto.CloudletRefsApi",
        "edgeproto.ClusterRefsApi",
        "edgeproto.AppInstRefsApi",
        "edgeproto.CloudletIPsApi",
    ]
