"""Names shared by platforms and their callers: resources, node types, deployments.

These strings reach users (resource snapshots, quotas, VM listings) and the Controller's
admission logic, so they are the original's exactly (`pkg/cloudcommon`).
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "COMMON_QUOTA_RESOURCES",
    "CRM_COMPATIBILITY_VERSION",
    "DEFAULT_NODE_POOL",
    "QUOTA_DESCRIPTIONS",
    "RESOURCE_DISK",
    "RESOURCE_DISK_UNITS",
    "RESOURCE_EXTERNAL_IPS",
    "RESOURCE_GPUS",
    "RESOURCE_INSTANCES",
    "RESOURCE_METRIC_INSTANCES",
    "RESOURCE_RAM",
    "RESOURCE_RAM_UNITS",
    "RESOURCE_TYPE_FLAVOR",
    "RESOURCE_TYPE_GPU",
    "RESOURCE_VCPUS",
    "Deployment",
    "NodeType",
]

RESOURCE_RAM: Final = "RAM"
RESOURCE_VCPUS: Final = "vCPUs"
RESOURCE_DISK: Final = "Disk"
RESOURCE_GPUS: Final = "GPUs"
RESOURCE_EXTERNAL_IPS: Final = "External IPs"
RESOURCE_INSTANCES: Final = "Instances"
RESOURCE_RAM_UNITS: Final = "MB"
RESOURCE_DISK_UNITS: Final = "GB"
RESOURCE_TYPE_GPU: Final = "gpu"
RESOURCE_TYPE_FLAVOR: Final = "flavor"
RESOURCE_METRIC_INSTANCES: Final = "instancesUsed"
DEFAULT_NODE_POOL: Final = "defaultpool"
CRM_COMPATIBILITY_VERSION: Final = 3
"""What a CRM (or the CCRM for it) reports in `CloudletInfo.compatibility_version`."""

COMMON_QUOTA_RESOURCES: Final = (
    RESOURCE_RAM,
    RESOURCE_VCPUS,
    RESOURCE_DISK,
    RESOURCE_GPUS,
    RESOURCE_EXTERNAL_IPS,
)
"""Resources every platform may offer quotas on (`GetCommonResourceQuotaProps`)."""

QUOTA_DESCRIPTIONS: Final = {
    RESOURCE_RAM: "Limit on RAM available (MB)",
    RESOURCE_VCPUS: "Limit on vCPUs available",
    RESOURCE_DISK: "Limit on disk available (GB)",
    RESOURCE_GPUS: "Limit on GPUs available",
    RESOURCE_EXTERNAL_IPS: "Limit on external IPs available",
    RESOURCE_INSTANCES: "Limit on number of instances that can be provisioned",
}


class NodeType(enum.StrEnum):
    """Kinds of infrastructure VMs, as reported in `VmInfo.type`."""

    APP_VM = "appvm"
    SHARED_ROOT_LB = "sharedrootlb"
    DEDICATED_ROOT_LB = "dedicatedrootlb"
    PLATFORM_VM = "platformvm"
    K8S_CLUSTER_MASTER = "k8s-cluster-master"
    K8S_CLUSTER_NODE = "k8s-cluster-node"
    DOCKER_CLUSTER_NODE = "docker-cluster-node"


class Deployment(enum.StrEnum):
    """How an App is deployed (`App.deployment`, `ClusterInst.deployment`)."""

    DOCKER = "docker"
    KUBERNETES = "kubernetes"
    HELM = "helm"
    VM = "vm"

    @classmethod
    def of(cls, value: str) -> Deployment:
        """Parse a deployment string; empty means kubernetes, as in the original's defaults.

        Raises:
            ValueError: For a deployment type nobody knows.
        """
        return cls(value or cls.KUBERNETES)

    @property
    def needs_cluster(self) -> bool:
        """Whether instances of this deployment run on a ClusterInst (all but VM apps)."""
        return self is not Deployment.VM

    @property
    def is_kubernetes(self) -> bool:
        """Whether the workload runs on Kubernetes (kubernetes and helm)."""
        return self in (Deployment.KUBERNETES, Deployment.HELM)
