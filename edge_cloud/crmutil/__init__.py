"""The request handling the CCRM and the CRM share (the original's `pkg/crmutil`).

Both daemons turn a Controller object in a requested state into platform calls and Info
updates the same way (crm_platforms.md §3); they differ only in where the platform object
comes from (`PlatformSource`) and where Info updates go (the `InfoSender` each call gets: a
gRPC stream in the CCRM, a notify-forwarded cache in the CRM). Services may not import each
other, so this lives in the core.

- `ClusterWork`, `AppInstWork`: ClusterInst and AppInst create, update, delete (§3.1, §3.2);
- `CloudletChangeWork`: maintenance, trust policy and update of a running cloudlet (§3.3);
- `TpeWork`: trust policy exceptions opened or closed on one cluster (§3.5);
- `InfoCache`: the CRM's Info objects, each update sent upstream (`CacheUpdater`, §2);
- `LocalCrms`: CRM processes started on this host for `deployment_local` cloudlets (§6.5);
- `field_number`, `info_fields`: `fields` paths of Info messages.
"""

from edge_cloud.crmutil._appinst import AppInstWork
from edge_cloud.crmutil._cloudlet import (
    ALL_FIELDS,
    RESOURCE_PATHS,
    CloudletChangeWork,
    copy_resources,
)
from edge_cloud.crmutil._cluster import ClusterWork, seconds
from edge_cloud.crmutil._fields import field_number, info_fields
from edge_cloud.crmutil._infocache import InfoCache
from edge_cloud.crmutil._local import LocalCrms, LocalCrmSettings
from edge_cloud.crmutil._source import PlatformSource, platform_fingerprint
from edge_cloud.crmutil._tpe import TpeWork

__all__ = [
    "ALL_FIELDS",
    "RESOURCE_PATHS",
    "AppInstWork",
    "CloudletChangeWork",
    "ClusterWork",
    "InfoCache",
    "LocalCrmSettings",
    "LocalCrms",
    "PlatformSource",
    "TpeWork",
    "copy_resources",
    "field_number",
    "info_fields",
    "platform_fingerprint",
    "seconds",
]
