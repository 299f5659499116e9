"""CloudletManagedClusterApi: Kubernetes clusters the infrastructure made, not us (issue 4).

Some platforms (public-cloud managed Kubernetes, the fake family with
`LOAD_MANAGED_CLUSTERS`) know clusters that an operator built by hand. Show asks the CCRM of
the cloudlet's platform to list them (`CloudletPlatformAPI.GetCloudletManagedClusters`).
Register adopts one as a ClusterInst: the ordinary create path, with the infra cluster's id
and name recorded, no node sizing or resource fit (the cluster exists already, §3.8), and
the platform's description of it (Kubernetes version, node pools) merged when the worker
reports it. Deregister deletes that ClusterInst, which forgets the cluster without tearing
it down.

The original answers for CCRM-run cloudlets only: a CRM on the edge site has no channel for
these calls, so such a cloudlet is refused with a message that says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from edgeproto import (
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    cloudletkey_pb2,
    clusterinst_pb2,
    result_pb2,
)

from edge_cloud.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from edge_cloud.objects import keys
from services.controller._cloudletinfo import CLOUDLET
from services.controller._clusterinst_ops import ClusterInstOps
from services.controller._inst_common import CLUSTER_INST, features_of
from services.controller._runtime import Runtime
from services.controller._tracked import TrackedRuntime, seconds, streamed

__all__ = ["CloudletManagedClusterApi", "add", "is_managed"]

_Ctx = grpc.aio.ServicerContext[Any, Any]

#: Kubernetes is the only kind of cluster a platform reports (the original's "for now").
_DEPLOYMENT = "kubernetes"


def is_managed(cluster: clusterinst_pb2.ClusterInst) -> bool:
    """Whether a ClusterInst adopts an infrastructure cluster (the original's IsCloudletManaged)."""
    return bool(cluster.cloudlet_managed_cluster_id or cluster.cloudlet_managed_cluster_name)


class CloudletManagedClusterApi(cloudlet_pb2_grpc.CloudletManagedClusterApiServicer):
    """Show, Register and Deregister infrastructure-managed clusters."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._ops = ClusterInstOps(runtime) if isinstance(runtime, TrackedRuntime) else None

    def _tracked(self) -> tuple[TrackedRuntime, ClusterInstOps]:
        if self._ops is None or not isinstance(self._rt, TrackedRuntime):
            raise Unavailable("this Controller runs without Redis progress tracking")
        return self._rt, self._ops

    async def ShowCloudletManagedCluster(
        self, request: cloudlet_pb2.CloudletManagedCluster, context: _Ctx
    ) -> AsyncIterator[cloudlet_pb2.CloudletManagedCluster]:
        """The clusters the cloudlet's infrastructure knows, as its platform lists them.

        All of them, ours included: a platform does not track which clusters it made for
        us. A `key` name or id in the request narrows the list.
        """
        rt, _ = self._tracked()
        _require_cloudlet_key(request.cloudlet_key, "show cloudlet managed clusters")
        cloudlet, features = _supporting(rt, request.cloudlet_key, "show cloudlet managed clusters")
        query = cloudlet_pb2.CloudletManagedCluster(cloudlet_key=cloudlet.key)
        listed: AsyncIterator[cloudlet_pb2.CloudletManagedCluster] = rt.tracked.ccrm.stream(
            features.node_type,
            lambda stub, timeout: stub.GetCloudletManagedClusters(query, timeout=timeout),
            f"listing the managed clusters of cloudlet {keys.key_string(cloudlet.key)}",
            timeout=seconds(rt.settings().ccrm_api_timeout),
        )
        async for found in listed:
            if request.key.name and found.key.name != request.key.name:
                continue
            if request.key.id and found.key.id != request.key.id:
                continue
            if not found.HasField("cloudlet_key"):
                found.cloudlet_key.CopyFrom(cloudlet.key)
            yield found

    async def RegisterCloudletManagedCluster(
        self, request: cloudlet_pb2.CloudletManagedCluster, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Adopt an infrastructure cluster as a ClusterInst; progress lines until Ready.

        The ClusterInst is named `cluster_key.name`, or the infra cluster's name when that is
        empty, and belongs to `cluster_key.organization`. The worker checks that the cluster
        exists on the infrastructure; a cluster already adopted on the cloudlet is refused.
        """
        rt, ops = self._tracked()
        if not request.key.id and not request.key.name:
            raise InvalidArgument(
                "cloudlet cluster id or name not specified: give key.id or key.name of a "
                "cluster that ShowCloudletManagedCluster lists"
            )
        _require_cloudlet_key(request.cloudlet_key, "register a cloudlet managed cluster")
        _supporting(rt, request.cloudlet_key, "register cloudlet managed clusters")
        for _, existing in rt.caches.items(CLUSTER_INST):
            if existing.cloudlet_key != request.cloudlet_key:
                continue
            if request.key.id and existing.cloudlet_managed_cluster_id == request.key.id:
                raise AlreadyExists(
                    f"cluster with infra id {request.key.id!r} already registered as "
                    f"ClusterInst {keys.key_string(existing.key)}"
                )
            if request.key.name and existing.cloudlet_managed_cluster_name == request.key.name:
                raise AlreadyExists(
                    f"cluster with infra name {request.key.name!r} already registered as "
                    f"ClusterInst {keys.key_string(existing.key)}"
                )
        cluster = clusterinst_pb2.ClusterInst(
            key=request.cluster_key,
            cloudlet_key=request.cloudlet_key,
            cloudlet_managed_cluster_id=request.key.id,
            cloudlet_managed_cluster_name=request.key.name,
            reservable=request.reservable,
            multi_tenant=request.multi_tenant,
            deployment=_DEPLOYMENT,
        )
        if not cluster.key.name:
            cluster.key.name = request.key.name
        async for line in streamed(lambda sink: ops.create(cluster, sink, registering=True)):
            yield line

    async def DeregisterCloudletManagedCluster(
        self, request: cloudlet_pb2.CloudletManagedCluster, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Delete the ClusterInst that adopted an infrastructure cluster; the cluster stays.

        Found by `cluster_key`, or else by the infra `key` id or name on `cloudlet_key`.
        A ClusterInst we built ourselves is refused: DeleteClusterInst is the call for it.
        """
        rt, ops = self._tracked()
        found = self._registered(rt, request)
        if not is_managed(found):
            raise FailedPrecondition(
                f"ClusterInst {keys.key_string(found.key)} is not a registered cloudlet "
                "managed cluster; use DeleteClusterInst to delete it"
            )
        target = clusterinst_pb2.ClusterInst(key=found.key)
        async for line in streamed(lambda sink: ops.delete(target, sink)):
            yield line

    @staticmethod
    def _registered(
        rt: TrackedRuntime, request: cloudlet_pb2.CloudletManagedCluster
    ) -> clusterinst_pb2.ClusterInst:
        """The ClusterInst a deregistration names.

        Raises:
            InvalidArgument: Neither a cluster key nor an infra id/name with its cloudlet.
            NotFound: No such ClusterInst.
        """
        if request.cluster_key.name and request.cluster_key.organization:
            by_key: clusterinst_pb2.ClusterInst | None = rt.caches.get(
                CLUSTER_INST, keys.key_string(request.cluster_key)
            )
            if by_key is None:
                raise keys.not_found(request.cluster_key)
            return by_key
        if not request.key.id and not request.key.name:
            raise InvalidArgument(
                "specify the ClusterInst (cluster_key name and organization), or the infra "
                "cluster (key.id or key.name) and its cloudlet_key"
            )
        _require_cloudlet_key(request.cloudlet_key, "deregister by infra cluster id or name")
        for _, cluster in sorted(rt.caches.items(CLUSTER_INST)):
            if cluster.cloudlet_key != request.cloudlet_key:
                continue
            if (request.key.id and cluster.cloudlet_managed_cluster_id == request.key.id) or (
                request.key.name and cluster.cloudlet_managed_cluster_name == request.key.name
            ):
                return cluster
        raise NotFound(
            f"cloudlet managed cluster not found for infra name {request.key.name!r}, infra id "
            f"{request.key.id!r} on cloudlet {keys.key_string(request.cloudlet_key)}"
        )


def _supporting(
    rt: TrackedRuntime, key: cloudletkey_pb2.CloudletKey, doing: str
) -> tuple[cloudlet_pb2.Cloudlet, cloudlet_pb2.PlatformFeatures]:
    """The cloudlet and its platform's features, when that platform has managed clusters.

    Raises:
        NotFound: No such cloudlet, or no features for its platform.
        FailedPrecondition: The cloudlet runs its own CRM (no CCRM to ask), or its platform
            knows no cloudlet-managed clusters.
    """
    cloudlet: cloudlet_pb2.Cloudlet | None = rt.caches.get(CLOUDLET, keys.key_string(key))
    if cloudlet is None:
        raise keys.not_found(key)
    if cloudlet.crm_on_edge:
        raise FailedPrecondition(
            f"{doing} is not supported for CRM on edge: cloudlet "
            f"{keys.key_string(cloudlet.key)} is run by its own CRM, not a CCRM"
        )
    features = features_of(rt.caches, cloudlet.platform_type)
    if not features.supports_cloudlet_managed_clusters:
        raise FailedPrecondition(
            f"platform {features.platform_type} does not support cloudlet managed clusters"
        )
    return cloudlet, features


def _require_cloudlet_key(key: cloudletkey_pb2.CloudletKey, doing: str) -> None:
    """Refuse a request without the cloudlet's organization and name (both are needed).

    Raises:
        InvalidArgument: Naming the missing part and what it is needed for.
    """
    if not key.organization:
        raise InvalidArgument(f"cloudlet organization is required to {doing}")
    if not key.name:
        raise InvalidArgument(f"cloudlet name is required to {doing}")


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    cloudlet_pb2_grpc.add_CloudletManagedClusterApiServicer_to_server(
        CloudletManagedClusterApi(runtime), server
    )
    return ["edgeproto.CloudletManagedClusterApi"]
