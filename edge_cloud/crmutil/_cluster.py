"""ClusterInst work: create, update and delete through the platform (crm_platforms.md §3.1).

The original's `CRMHandler.ClusterInstChanged`, shared by the CCRM (which streams the
updates back on the `ApplyClusterInst` call) and the CRM (which reports them over notify).
"""

from __future__ import annotations

import logging
from typing import Final

from edgeproto import clusterinst_pb2, common_pb2

from edge_cloud.crmutil._fields import field_number
from edge_cloud.crmutil._source import PlatformSource
from edge_cloud.errors import EdgeError
from edge_cloud.platform import InfoSender, Platform

__all__ = ["ClusterWork", "seconds"]

log = logging.getLogger(__name__)

TS = common_pb2
Info = clusterinst_pb2.ClusterInstInfo
RESOURCES: Final = field_number(Info, "resources")
MANAGED_INFO: Final = field_number(Info, "cloudlet_managed_cluster_info")
ANNOTATIONS: Final = field_number(Info, "infra_annotations")
DEFAULT_CREATE_TIMEOUT: Final = 30 * 60.0


def seconds(nanos: int, default: float) -> float:
    """A Go duration in nanoseconds as seconds; zero means `default`."""
    return nanos / 1e9 if nanos > 0 else default


class ClusterWork:
    """`ClusterPlatformAPI.ApplyClusterInst`.

    Args:
        host: Controller objects and platforms.
    """

    def __init__(self, host: PlatformSource) -> None:
        self._host = host

    async def apply(self, cluster: clusterinst_pb2.ClusterInst, sender: InfoSender[Info]) -> bool:
        """Act on the requested state; other states need nothing.

        Returns:
            Whether the infrastructure was changed (a requested state was carried out), so
            the caller re-captures the cloudlet's resource snapshot (§3.1 NeedsUpdate).

        Raises:
            EdgeError: What failed, after the matching error state was sent.
        """
        if cluster.state == TS.CREATE_REQUESTED:
            await self._create(cluster, sender)
        elif cluster.state == TS.UPDATE_REQUESTED:
            await self._update(cluster, sender)
        elif cluster.state == TS.DELETE_REQUESTED:
            await self._delete(cluster, sender)
        else:
            return False
        return True

    async def _create(self, cluster: clusterinst_pb2.ClusterInst, sender: InfoSender[Info]) -> None:
        sender.send_state(TS.CREATING, reset=True)
        try:
            cloudlet = self._host.cloudlet(cluster.cloudlet_key)
            platform = await self._host.initialised(cloudlet)
            limit = cloudlet.time_limits.create_cluster_inst_timeout
            if limit <= 0:
                limit = self._host.settings().create_cluster_inst_timeout
            timeout = seconds(limit, DEFAULT_CREATE_TIMEOUT)
            annotations = await platform.create_cluster_inst(cluster, sender, timeout=timeout)
        except EdgeError as err:
            sender.send_state(TS.CREATE_ERROR, error=err.message)
            raise
        await self._report_built(cluster, platform, annotations, sender)

    async def _update(self, cluster: clusterinst_pb2.ClusterInst, sender: InfoSender[Info]) -> None:
        sender.send_state(TS.UPDATING, reset=True)
        try:
            cloudlet = self._host.cloudlet(cluster.cloudlet_key)
            platform = await self._host.initialised(cloudlet)
            annotations = await platform.update_cluster_inst(cluster, sender)
        except EdgeError as err:
            sender.send_state(TS.UPDATE_ERROR, error=f"update failed: {err.message}")
            raise
        await self._report_built(cluster, platform, annotations, sender)

    async def _report_built(
        self,
        cluster: clusterinst_pb2.ClusterInst,
        platform: Platform,
        annotations: dict[str, str],
        sender: InfoSender[Info],
    ) -> None:
        """Annotations, the VMs behind the cluster, managed-cluster details, then READY."""
        if annotations:

            def set_annotations(info: Info) -> None:
                info.infra_annotations.clear()
                info.infra_annotations.update(annotations)

            sender.send_update(set_annotations, (ANNOTATIONS,))
        sender.task("Getting Cluster Infra Resources")
        try:
            resources = await platform.get_cluster_infra_resources(cluster)
        except EdgeError as err:  # the cluster is built; only the report is missing
            log.warning("cannot get infra resources of cluster %s: %s", cluster.key, err)
        else:

            def set_resources(info: Info) -> None:
                info.resources.CopyFrom(resources)

            sender.send_update(set_resources, (RESOURCES,))
        if cluster.cloudlet_managed_cluster_id or cluster.cloudlet_managed_cluster_name:
            try:
                managed = await platform.get_cloudlet_managed_cluster_info(cluster)
            except EdgeError as err:
                sender.send_state(TS.CREATE_ERROR, error=err.message)
                raise

            def set_managed(info: Info) -> None:
                info.cloudlet_managed_cluster_info.CopyFrom(managed)

            sender.send_update(set_managed, (MANAGED_INFO,))
        sender.send_state(TS.READY)

    async def _delete(self, cluster: clusterinst_pb2.ClusterInst, sender: InfoSender[Info]) -> None:
        sender.send_state(TS.DELETING, reset=True)
        try:
            cloudlet = self._host.cloudlet(cluster.cloudlet_key)
            platform = await self._host.initialised(cloudlet)
            await platform.delete_cluster_inst(cluster, sender)
        except EdgeError as err:
            sender.send_state(TS.DELETE_ERROR, error=f"Delete failed: {err.message}")
            raise
        sender.send_state(TS.DELETE_DONE)
