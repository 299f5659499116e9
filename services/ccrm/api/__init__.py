"""The CCRM's gRPC services, one module each; `add_all` registers them."""

from __future__ import annotations

import grpc.aio

from services.ccrm.api.appinst import AppInstPlatformApi
from services.ccrm.api.cloudlet import CloudletPlatformApi
from services.ccrm.api.cluster import ClusterPlatformApi

__all__ = ["AppInstPlatformApi", "CloudletPlatformApi", "ClusterPlatformApi", "add_all"]


def add_all(
    server: grpc.aio.Server,
    cloudlet: CloudletPlatformApi,
    cluster: ClusterPlatformApi,
    appinst: AppInstPlatformApi,
) -> list[str]:
    """Register the three platform services; their full names, for health."""
    from edgeproto import ccrm_pb2_grpc

    ccrm_pb2_grpc.add_CloudletPlatformAPIServicer_to_server(cloudlet, server)
    ccrm_pb2_grpc.add_ClusterPlatformAPIServicer_to_server(cluster, server)
    ccrm_pb2_grpc.add_AppInstPlatformAPIServicer_to_server(appinst, server)
    return [
        "edgeproto.CloudletPlatformAPI",
        "edgeproto.ClusterPlatformAPI",
        "edgeproto.AppInstPlatformAPI",
    ]
