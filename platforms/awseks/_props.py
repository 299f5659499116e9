"""The `awseks` platform's features, properties, access vars and resource names.

Flags are the original's (crm_platforms.md §1.7: MT K8O MCP IPS OFF ING). Properties add
what a boto3 implementation needs that the original's CLIs took from the environment
(`AWS_ENDPOINT_URL`), and what an operator needs to reach clusters whose API endpoints are
private (`EKS_API_ENDPOINT_OVERRIDE`, `EKS_API_CA_DATA`).
"""

from __future__ import annotations

from typing import Final

from edge_cloud.platform import (
    COMMON_QUOTA_RESOURCES,
    QUOTA_DESCRIPTIONS,
    PlatformFeatures,
    PropertyInfo,
    QuotaResource,
)

__all__ = [
    "ACCESS_KEY_ID",
    "AWS_ENDPOINT_URL",
    "AWS_MAX_ATTEMPTS",
    "AWS_REGION",
    "DEFAULT_FLAVOR_PATTERN",
    "EKS_API_CA_DATA",
    "EKS_API_ENDPOINT_OVERRIDE",
    "EKS_FEATURES",
    "EKS_KUBERNETES_VERSION",
    "FLAVOR_MATCH_PATTERN",
    "METRIC_K8S_CLUSTERS",
    "METRIC_MAX_NODES",
    "METRIC_NETWORK_LBS",
    "METRIC_TOTAL_NODES",
    "RESOURCE_K8S_CLUSTERS",
    "RESOURCE_MAX_NODES_PER_CLUSTER",
    "RESOURCE_NETWORK_LBS",
    "RESOURCE_TOTAL_NODES",
    "SECRET_ACCESS_KEY",
    "SESSION_TOKEN",
]

ACCESS_KEY_ID: Final = "AWS_ACCESS_KEY_ID"
SECRET_ACCESS_KEY: Final = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name
SESSION_TOKEN: Final = "AWS_SESSION_TOKEN"  # noqa: S105 - a variable name

AWS_REGION: Final = "AWS_REGION"
FLAVOR_MATCH_PATTERN: Final = "FLAVOR_MATCH_PATTERN"
AWS_ENDPOINT_URL: Final = "AWS_ENDPOINT_URL"
AWS_MAX_ATTEMPTS: Final = "AWS_MAX_ATTEMPTS"
EKS_KUBERNETES_VERSION: Final = "EKS_KUBERNETES_VERSION"
EKS_API_ENDPOINT_OVERRIDE: Final = "EKS_API_ENDPOINT_OVERRIDE"
EKS_API_CA_DATA: Final = "EKS_API_CA_DATA"
DEFAULT_FLAVOR_PATTERN: Final = r"^[acdhimrtz]\d+"

# Resource names and metric names of the original (pkg/cloudcommon/infraresources.go)
RESOURCE_K8S_CLUSTERS: Final = "K8s Clusters"
RESOURCE_MAX_NODES_PER_CLUSTER: Final = "Maximum K8s Nodes Per Cluster"
RESOURCE_TOTAL_NODES: Final = "Total Number Of K8s Nodes"
RESOURCE_NETWORK_LBS: Final = "Network Load Balancers"
METRIC_K8S_CLUSTERS: Final = "k8sClustersUsed"
METRIC_MAX_NODES: Final = "maxK8sNodesPerClusterUsed"
METRIC_TOTAL_NODES: Final = "totalK8sNodesUsed"
METRIC_NETWORK_LBS: Final = "networkLBsUsed"

_QUOTAS: Final = (
    *(QuotaResource(name=n, description=QUOTA_DESCRIPTIONS[n]) for n in COMMON_QUOTA_RESOURCES),
    QuotaResource(
        name=RESOURCE_K8S_CLUSTERS,
        description="Maximum number of Kubernetes clusters (EKS quota L-1194D53C per region)",
    ),
    QuotaResource(
        name=RESOURCE_MAX_NODES_PER_CLUSTER,
        description="Maximum number of nodes in one cluster (EKS quota L-BD136A63)",
    ),
    QuotaResource(
        name=RESOURCE_TOTAL_NODES,
        description="Maximum number of Kubernetes nodes over all clusters",
    ),
    QuotaResource(
        name=RESOURCE_NETWORK_LBS,
        description="Maximum number of network load balancers (ELB quota L-69A177A2)",
    ),
)

EKS_FEATURES: Final = PlatformFeatures(
    platform_type="awseks",
    supports_multi_tenant_cluster=True,
    supports_kubernetes_only=True,
    kubernetes_managed_control_plane=True,
    kubernetes_requires_worker_nodes=True,
    ip_allocated_per_service=True,
    requires_crm_off_edge=True,
    # TODO(#9, ingress): install ingress-nginx per cluster as the original does (needs helm)
    uses_ingress=True,
    access_vars={
        ACCESS_KEY_ID: PropertyInfo(
            name="AWS access key ID", description="Key ID of the AWS account", mandatory=True
        ),
        SECRET_ACCESS_KEY: PropertyInfo(
            name="AWS secret access key",
            description="Secret key of the AWS account",
            secret=True,
            mandatory=True,
        ),
        SESSION_TOKEN: PropertyInfo(
            name="AWS session token",
            description="Session token, when the keys are temporary credentials",
            secret=True,
        ),
    },
    properties={
        AWS_REGION: PropertyInfo(
            name="AWS region", description="AWS region of the cloudlet", mandatory=True
        ),
        FLAVOR_MATCH_PATTERN: PropertyInfo(
            name="Flavor match pattern",
            description="Regular expression choosing the EC2 instance types offered as flavors",
            value=DEFAULT_FLAVOR_PATTERN,
        ),
        AWS_ENDPOINT_URL: PropertyInfo(
            name="AWS endpoint URL",
            description=(
                "One endpoint for every AWS API (a VPC endpoint, a proxy or an AWS-compatible "
                "service); empty uses AWS's public endpoints"
            ),
        ),
        AWS_MAX_ATTEMPTS: PropertyInfo(
            name="AWS call attempts",
            description="Attempts per AWS call when throttled or unreachable (standard retries)",
            value="4",
        ),
        EKS_KUBERNETES_VERSION: PropertyInfo(
            name="EKS Kubernetes version",
            description="Kubernetes version of new clusters when the ClusterInst names none",
            value="1.31",
        ),
        EKS_API_ENDPOINT_OVERRIDE: PropertyInfo(
            name="Kubernetes API endpoint override",
            description=(
                "URL through which this CCRM reaches every cluster's Kubernetes API, for an "
                "operator-provided proxy or tunnel to private EKS endpoints; empty uses the "
                "endpoint EKS reports"
            ),
        ),
        EKS_API_CA_DATA: PropertyInfo(
            name="Kubernetes API CA override",
            description=(
                "Base64 PEM of the CA that signs the override endpoint's certificate; empty "
                "trusts the cluster's own CA"
            ),
        ),
    },
    resource_quota_properties=_QUOTAS,
)
"""The `awseks` features."""
