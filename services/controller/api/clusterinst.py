"""ClusterInstApi: Kubernetes and Docker clusters on cloudlets (controller.md §3.8).

Create, update and delete are long-running and server-streaming (`_clusterinst_ops`); Show
is answered from the caches; credentials come from the CCRM of the cluster's platform.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import clusterinst_pb2, clusterinst_pb2_grpc, result_pb2

from edge_cloud.errors import Unavailable
from edge_cloud.objects import keys
from services.controller import _usage
from services.controller._cloudletinfo import CLOUDLET
from services.controller._clusterinst_ops import ClusterInstOps
from services.controller._inst_common import CLUSTER_INST, features_of
from services.controller._runtime import Runtime
from services.controller._tracked import TrackedRuntime, seconds, streamed_rpc

__all__ = ["ClusterInstApi", "add"]

_Ctx = grpc.aio.ServicerContext[Any, Any]


class ClusterInstApi(clusterinst_pb2_grpc.ClusterInstApiServicer):
    """Every ClusterInstApi RPC."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._ops = ClusterInstOps(runtime) if isinstance(runtime, TrackedRuntime) else None

    def _tracked(self) -> tuple[TrackedRuntime, ClusterInstOps]:
        if self._ops is None or not isinstance(self._rt, TrackedRuntime):
            raise Unavailable("this Controller runs without Redis progress tracking")
        return self._rt, self._ops

    CreateClusterInst = streamed_rpc(
        "create", "Create a cluster; progress lines until it is Ready (or undone)."
    )

    DeleteClusterInst = streamed_rpc("delete", "Delete a cluster; progress lines until it is gone.")

    UpdateClusterInst = streamed_rpc(
        "update", "Change the listed updatable fields; the worker applies them."
    )

    async def ShowClusterInst(
        self, request: clusterinst_pb2.ClusterInst, context: _Ctx
    ) -> AsyncIterator[clusterinst_pb2.ClusterInst]:
        """Every cached cluster matching the filter."""
        for cluster in self._rt.engine.show(request):
            yield cluster

    async def DeleteIdleReservableClusterInsts(
        self, request: clusterinst_pb2.IdleReservableClusterInsts, context: _Ctx
    ) -> result_pb2.Result:
        """Delete unreserved autoclusters idle at least `idle_time`."""
        _, ops = self._tracked()
        await ops.delete_idle_reservable(request.idle_time)
        return result_pb2.Result(message="Delete done")

    async def ShowClusterResourceUsage(
        self, request: clusterinst_pb2.ClusterInst, context: _Ctx
    ) -> AsyncIterator[clusterinst_pb2.ClusterResourceUsage]:
        """What the AppInsts of each matching cluster take of what it has, by cluster key."""
        usages = [
            _usage.cluster_resource_usage(self._rt.caches, c) for c in self._rt.engine.show(request)
        ]
        for usage in sorted((u for u in usages if u), key=lambda u: keys.key_string(u.key)):
            yield usage

    async def GetClusterCredentials(
        self, request: clusterinst_pb2.ClusterCredentialsRequest, context: _Ctx
    ) -> result_pb2.Result:
        """The cluster's kubeconfig, from the CCRM of its platform."""
        rt, _ = self._tracked()
        cluster = rt.caches.get(CLUSTER_INST, keys.key_string(request.key))
        if cluster is None:
            raise keys.not_found(request.key)
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(cluster.cloudlet_key))
        if cloudlet is None:
            raise keys.not_found(cluster.cloudlet_key)
        features = features_of(rt.caches, cloudlet.platform_type)
        return await rt.tracked.ccrm.get_cluster_credentials(
            features.node_type, request, timeout=seconds(rt.settings().ccrm_api_timeout)
        )


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    clusterinst_pb2_grpc.add_ClusterInstApiServicer_to_server(ClusterInstApi(runtime), server)
    return ["edgeproto.ClusterInstApi"]
