"""Infrastructure platforms: the `Platform` ABC, `PlatformFeatures`, registry, errors.

A platform plugin (`platforms/<type>/`) subclasses `Platform`, declares its
`PlatformFeatures` as a class attribute and is registered in the `edge_cloud.platforms`
entry-point group under its type name. The CCRM and the CRM load it with
`registry.load(name)`, build it with no arguments, `init` it for one cloudlet and call it;
the Controller only ever sees its features (architecture §9, crm_platforms.md §1).

Pieces:

- `Platform`: the interface (`_base`), with `CommandClient` for console/exec access;
- `PlatformFeatures`, `PropertyInfo`, `QuotaResource`: features as frozen data mirroring the
  wire messages, `to_proto()` / `from_proto()`;
- `PlatformConfig`, `PlatformCaches`: what `init` receives;
- `AccessApi` (protocol), `LocalAccessApi` and `SecretsAccessApi` (over `edge_cloud.secrets`):
  secrets and DNS for a platform;
- `Progress`, `InfoSender` and the `StatusInfo` rendering: how progress reaches users;
- errors: `PlatformTransientError`, `PlatformPermanentError`, `PlatformResourceExhausted`,
  `NotSupportedByPlatform`, and `classify`;
- names the original fixes: resource names, node types, deployment types.
"""

from edge_cloud.platform import registry
from edge_cloud.platform._access import (
    AccessApi,
    CloudletNodes,
    ControllerCloudletNodes,
    DnsRecord,
    LocalAccessApi,
    RegistryAuth,
    SecretsAccessApi,
)
from edge_cloud.platform._base import CommandClient, Platform
from edge_cloud.platform._config import PlatformCaches, PlatformConfig
from edge_cloud.platform._errors import (
    NotSupportedByPlatform,
    PlatformPermanentError,
    PlatformResourceExhausted,
    PlatformTransientError,
    classify,
)
from edge_cloud.platform._features import PlatformFeatures, PropertyInfo, QuotaResource
from edge_cloud.platform._names import (
    COMMON_QUOTA_RESOURCES,
    CRM_COMPATIBILITY_VERSION,
    DEFAULT_NODE_POOL,
    QUOTA_DESCRIPTIONS,
    RESOURCE_DISK,
    RESOURCE_DISK_UNITS,
    RESOURCE_EXTERNAL_IPS,
    RESOURCE_GPUS,
    RESOURCE_INSTANCES,
    RESOURCE_METRIC_INSTANCES,
    RESOURCE_RAM,
    RESOURCE_RAM_UNITS,
    RESOURCE_TYPE_FLAVOR,
    RESOURCE_TYPE_GPU,
    RESOURCE_VCPUS,
    Deployment,
    NodeType,
)
from edge_cloud.platform._progress import (
    InfoSender,
    NoProgress,
    Progress,
    RecordedProgress,
    UpdateType,
    render_status,
    reset_status,
    set_status_step,
    set_status_task,
)

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
    "AccessApi",
    "CloudletNodes",
    "CommandClient",
    "ControllerCloudletNodes",
    "Deployment",
    "DnsRecord",
    "InfoSender",
    "LocalAccessApi",
    "NoProgress",
    "NodeType",
    "NotSupportedByPlatform",
    "Platform",
    "PlatformCaches",
    "PlatformConfig",
    "PlatformFeatures",
    "PlatformPermanentError",
    "PlatformResourceExhausted",
    "PlatformTransientError",
    "Progress",
    "PropertyInfo",
    "QuotaResource",
    "RecordedProgress",
    "RegistryAuth",
    "SecretsAccessApi",
    "UpdateType",
    "classify",
    "registry",
    "render_status",
    "reset_status",
    "set_status_step",
    "set_status_task",
]
