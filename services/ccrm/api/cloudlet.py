"""`edgeproto.CloudletPlatformAPI`: cloudlet-level platform work for the Controller (§5.2)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Final

from distributed_match_engine import appcommon_pb2
from edgeproto import (
    baremetalhost_pb2,
    ccrm_pb2,
    ccrm_pb2_grpc,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    exec_pb2,
    flavor_pb2,
    metric_pb2,
    result_pb2,
)

from edge_cloud.errors import Unimplemented
from edge_cloud.objects import keys
from edge_cloud.platform import UpdateType
from services.ccrm._cloudlet import CloudletWork
from services.ccrm._host import PlatformHost
from services.ccrm._stream import stream_items, stream_work
from services.ccrm.api._common import Ctx, name_sanitize

__all__ = ["CloudletPlatformApi"]

SERVICE: Final = "edgeproto.CloudletPlatformAPI"
_CLOUDLET_STATE = appcommon_pb2.CloudletState.DESCRIPTOR


class _StatusProgress:
    """Progress written as `StreamStatus` entries (GetRestrictedCloudletStatus)."""

    def __init__(self, emit: Callable[[ccrm_pb2.StreamStatus], None]) -> None:
        self._emit = emit

    def task(self, message: str) -> None:
        self._emit(ccrm_pb2.StreamStatus(cache_update_type=UpdateType.TASK, status=message))

    def step(self, message: str) -> None:
        self._emit(ccrm_pb2.StreamStatus(cache_update_type=UpdateType.STEP, status=message))


class CloudletPlatformApi(ccrm_pb2_grpc.CloudletPlatformAPIServicer):
    """Cloudlet create/delete/update, resources, root LB flavor, naming, manifests.

    Args:
        host: The hosted platforms.
    """

    def __init__(self, host: PlatformHost) -> None:
        self._host = host
        self._work = CloudletWork(host)

    async def ApplyCloudlet(
        self, request: cloudlet_pb2.Cloudlet, context: Ctx
    ) -> AsyncIterator[cloudlet_pb2.CloudletInfo]:
        """Create, delete or change a cloudlet; CloudletInfo updates stream back as it goes."""
        info = cloudlet_pb2.CloudletInfo()
        info.key.CopyFrom(request.key)
        async for update in stream_work(
            info, _CLOUDLET_STATE, lambda s: self._work.apply(request, s)
        ):
            yield update

    async def GetCloudletResources(
        self, request: cloudlet_pb2.Cloudlet, context: Ctx
    ) -> cloudlet_pb2.CloudletInfo:
        """Flavors, limits and the resource snapshot, gathered now from the platform."""
        platform = await self._host.initialised(request)
        info = await platform.get_cloudlet_resources()
        info.key.CopyFrom(request.key)
        return info

    async def GetRootLbFlavor(
        self, request: cloudletkey_pb2.CloudletKey, context: Ctx
    ) -> flavor_pb2.Flavor:
        """The shared root LB's size; an empty Flavor when the platform has none."""
        platform = await self._host.initialised(self._host.cloudlet(request))
        return await platform.get_root_lb_flavor()

    async def NameSanitize(
        self, request: ccrm_pb2.NameSanitizeReq, context: Ctx
    ) -> result_pb2.Result:
        """The platform's legal form of a name."""
        return name_sanitize(self._host, request)

    async def GetCloudletManifest(
        self, request: cloudletkey_pb2.CloudletKey, context: Ctx
    ) -> cloudlet_pb2.CloudletManifest:
        """Manual bring-up instructions; UNIMPLEMENTED when the platform has none."""
        cloudlet = self._host.cloudlet(request)
        platform = await self._host.initialised(cloudlet)
        flavor = self._host.platform_flavor(cloudlet)
        manifest = await platform.get_cloudlet_manifest(
            cloudlet, self._host.pf_config(cloudlet), flavor
        )
        return cloudlet_pb2.CloudletManifest(manifest=manifest)

    async def GetRestrictedCloudletStatus(
        self, request: cloudletkey_pb2.CloudletKey, context: Ctx
    ) -> AsyncIterator[ccrm_pb2.StreamStatus]:
        """Progress of a restricted-access cloudlet's manual bring-up."""

        async def work(emit: Callable[[ccrm_pb2.StreamStatus], None]) -> None:
            cloudlet = self._host.cloudlet(request)
            platform = await self._host.initialised(cloudlet)
            await platform.get_restricted_cloudlet_status(
                cloudlet, self._host.pf_config(cloudlet), _StatusProgress(emit)
            )

        async for status in stream_items(work):
            yield status

    async def GetClusterAdditionalResources(
        self, request: ccrm_pb2.ClusterResourcesReq, context: Ctx
    ) -> ccrm_pb2.InfraResourceMap:
        """Platform counters a proposed cluster would use (no infrastructure calls)."""
        cloudlet = self._host.cloudlet(request.cloudlet_key)
        found = self._host.bare(cloudlet).get_cluster_additional_resources(
            cloudlet, list(request.vm_resources)
        )
        out = ccrm_pb2.InfraResourceMap()
        for name, value in found.items():
            out.infra_resources[name].CopyFrom(value)
        return out

    async def GetClusterAdditionalResourceMetric(
        self, request: ccrm_pb2.ClusterResourceMetricReq, context: Ctx
    ) -> metric_pb2.Metric:
        """The same counters as metric values, added to the request's metric."""
        cloudlet = self._host.cloudlet(request.cloudlet_key)
        metric = metric_pb2.Metric()
        metric.CopyFrom(request.res_metric)
        self._host.bare(cloudlet).get_cluster_additional_resource_metric(
            cloudlet, metric, list(request.vm_resources)
        )
        return metric

    async def GetClusterCredentials(
        self, request: clusterinst_pb2.ClusterCredentialsRequest, context: Ctx
    ) -> result_pb2.Result:
        """A cluster's kubeconfig, in the message."""
        cluster = self._host.caches.cluster_insts.get(keys.key_string(request.key))
        if cluster is None:
            raise keys.not_found(request.key)
        platform = await self._host.initialised(self._host.cloudlet(cluster.cloudlet_key))
        creds = await platform.get_cluster_credentials(cluster)
        return result_pb2.Result(message=creds.decode())

    async def RefreshCerts(self, request: cloudlet_pb2.Cloudlet, context: Ctx) -> result_pb2.Result:
        """Push renewed certificates through the platform."""
        platform = await self._host.initialised(request)
        await platform.refresh_certs()
        return result_pb2.Result()

    async def GetCloudletManagedClusters(
        self, request: cloudlet_pb2.CloudletManagedCluster, context: Ctx
    ) -> AsyncIterator[cloudlet_pb2.CloudletManagedCluster]:
        """Clusters on the infrastructure that were not created by us."""
        platform = await self._host.initialised(self._host.cloudlet(request.cloudlet_key))
        for cluster in await platform.get_cloudlet_managed_clusters():
            yield cluster

    async def GetBareMetalHosts(
        self, request: cloudletkey_pb2.CloudletKey, context: Ctx
    ) -> AsyncIterator[baremetalhost_pb2.BareMetalHost]:
        """The bare-metal inventory."""
        platform = await self._host.initialised(self._host.cloudlet(request))
        for host in await platform.get_bare_metal_hosts():
            yield host

    async def ProcessExecRequest(
        self, request: ccrm_pb2.CloudletExecReq, context: Ctx
    ) -> exec_pb2.ExecRequest:
        """Not yet: exec and console sessions come with the EdgeTurn slice."""
        raise Unimplemented(
            "CloudletPlatformAPI.ProcessExecRequest is not implemented yet: exec and console "
            "sessions come with the EdgeTurn slice"
        )
