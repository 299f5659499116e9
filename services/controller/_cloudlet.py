"""Cloudlet rules without I/O: pre-checks, validation, DNS labels, quotas (controller.md §3.6).

Pure functions of their arguments, with the original's error texts, so they are unit-tested
without servers. Several normalise the cloudlet in place first (defaults, the CRM-on-edge
decision), as the original does; callers pass the copy they are about to store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from distributed_match_engine import appcommon_pb2
from edgeproto import cloudlet_pb2, cloudletkey_pb2, common_pb2, infraresources_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from edge_cloud.errors import FailedPrecondition, InvalidArgument
from edge_cloud.objects import fields, keys
from edge_cloud.objects.gojson import go_field_name
from services.controller._dns import dns_sanitize, numbered_labels, sanitize_trunc

__all__ = [
    "COMMON_RESOURCES",
    "DEFAULT_PLATFORM_FLAVOR",
    "DEFAULT_RESOURCE_ALERT_THRESHOLD",
    "UPDATABLE",
    "check_enums",
    "check_features",
    "check_prop_vars",
    "cloudlet_base_label",
    "dns_sanitize",
    "gpu_license_storage_path",
    "hostname_sanitize",
    "precheck_create",
    "root_lb_fqdn",
    "validate_alliance_orgs",
    "validate_cloudlet",
    "validate_resource_quotas",
    "zone_key",
]

DEFAULT_PLATFORM_FLAVOR: Final = "DefaultPlatformFlavor"
DEFAULT_RESOURCE_ALERT_THRESHOLD: Final = 80
VALID_DEPLOYMENTS: Final = ("docker", "kubernetes")
ROOT_LB_HOSTNAME: Final = "shared"
DNS_CLOUDLET_LABEL_MAX_LEN: Final = 50
DNS_LABEL_ATTEMPTS: Final = 10
MAX_HOSTNAME_LENGTH: Final = 63
EDGE_CLOUD_ORG: Final = "edgecloudorg"
GPU_DRIVER_LICENSE_CONFIG: Final = "license.conf"
COMMON_RESOURCES: Final = ("RAM", "vCPUs", "Disk", "GPUs", "External IPs")
"""Resources every platform accounts for (the original's CommonCloudletResources)."""
_IMAGE_VERSION: Final = re.compile(r"[0-9a-zA-Z][-0-9a-zA-Z._]*")

# Field paths of the Cloudlet message (objects.md §2.9).
LOCATION: Final = "5"
LATITUDE: Final = "5.1"
LONGITUDE: Final = "5.2"
IP_SUPPORT: Final = "6"
NUM_DYNAMIC_IPS: Final = "8"
ENV_VAR: Final = "19"
ACCESS_VARS: Final = "23"
MAINTENANCE_STATE: Final = "30"
TRUST_POLICY: Final = "37"
RESOURCE_QUOTAS: Final = "39"
DEFAULT_RESOURCE_ALERT_THRESHOLD_PATH: Final = "40"
KAFKA_CLUSTER: Final = "42"
KAFKA_USER: Final = "43"
KAFKA_PASSWORD: Final = "44"  # noqa: S105 - a field path, not a password
GPU_CONFIG: Final = "45"
ENABLE_DEFAULT_SERVERLESS_CLUSTER: Final = "46"
ALLIANCE_ORGS: Final = "47"
SINGLE_KUBERNETES_CLUSTER_OWNER: Final = "48"
PLATFORM_HIGH_AVAILABILITY: Final = "50"
ZONE: Final = "65"
SINGLE_KUBERNETES_NAMESPACE: Final = "67"
STATE: Final = "12"

UPDATABLE: Final = frozenset(
    {
        LOCATION,
        IP_SUPPORT,
        "7",
        NUM_DYNAMIC_IPS,
        "9",
        "13",
        "16",
        ENV_VAR,
        ACCESS_VARS,
        MAINTENANCE_STATE,
        TRUST_POLICY,
        RESOURCE_QUOTAS,
        DEFAULT_RESOURCE_ALERT_THRESHOLD_PATH,
        KAFKA_CLUSTER,
        KAFKA_USER,
        KAFKA_PASSWORD,
        GPU_CONFIG,
        ENABLE_DEFAULT_SERVERLESS_CLUSTER,
        ALLIANCE_ORGS,
        SINGLE_KUBERNETES_CLUSTER_OWNER,
        PLATFORM_HIGH_AVAILABILITY,
        "53",
        "56",
        "58",
        "61",
        "62",
        "64",
        ZONE,
        "66",
        SINGLE_KUBERNETES_NAMESPACE,
    }
)
"""Paths users may update (the original's UpdateCloudletFieldsMap)."""

_MAINTENANCE_REQUESTS: Final = frozenset(
    {
        appcommon_pb2.NORMAL_OPERATION,
        appcommon_pb2.MAINTENANCE_START,
        appcommon_pb2.MAINTENANCE_START_NO_FAILOVER,
    }
)


# --- create pre-checks -----------------------------------------------------------------------


def precheck_create(cloudlet: cloudlet_pb2.Cloudlet, *, version_tag: str = "") -> None:
    """The checks and defaults of CreateCloudlet that need nothing but the request.

    Sets: dynamic IP support, notify server addresses, container version, alert threshold,
    deployment; clears a GPU config without a driver.

    Args:
        cloudlet: The request copy, changed in place.
        version_tag: The controller's `--version-tag` (default container version).

    Raises:
        InvalidArgument: With the original's text for the first problem found.
    """
    if cloudlet.ip_support == common_pb2.IP_SUPPORT_UNKNOWN:
        cloudlet.ip_support = common_pb2.IP_SUPPORT_DYNAMIC
    if cloudlet.ip_support != common_pb2.IP_SUPPORT_DYNAMIC:
        raise InvalidArgument("Only dynamic IPs are supported currently")
    if cloudlet.num_dynamic_ips < 1:
        raise InvalidArgument("Must specify at least one dynamic public IP available")
    if cloudlet.location.latitude == 0 and cloudlet.location.longitude == 0:
        raise InvalidArgument("location is missing; 0,0 is not a valid location")
    if not cloudlet.notify_srv_addr:
        cloudlet.notify_srv_addr = "127.0.0.1:0"
    if not cloudlet.secondary_notify_srv_addr:
        cloudlet.secondary_notify_srv_addr = "127.0.0.1:0"
    if not cloudlet.container_version:
        cloudlet.container_version = version_tag
    if cloudlet.default_resource_alert_threshold == 0:
        cloudlet.default_resource_alert_threshold = DEFAULT_RESOURCE_ALERT_THRESHOLD
    if cloudlet.deployment_local:
        if not cloudlet.crm_on_edge:
            raise InvalidArgument(
                "deployment local is only for testing CRMs locally, must set CrmOnEdge to true"
            )
        if cloudlet.infra_api_access == cloudlet_pb2.RESTRICTED_ACCESS:
            raise InvalidArgument(
                "infra access type restricted is not supported for local deployment"
            )
        if cloudlet.deployment not in ("", "docker"):
            raise InvalidArgument("deployment type for local must be docker")
    if not cloudlet.deployment:
        cloudlet.deployment = "docker"
    if cloudlet.deployment not in VALID_DEPLOYMENTS:
        raise InvalidArgument(f"Invalid deployment, must be one of [{' '.join(VALID_DEPLOYMENTS)}]")
    if not cloudlet.gpu_config.driver.name:
        cloudlet.ClearField("gpu_config")


def check_features(
    cloudlet: cloudlet_pb2.Cloudlet,
    features: cloudlet_pb2.PlatformFeatures,
    *,
    vm_pool_in_use: bool = False,
) -> None:
    """The create checks that depend on the platform's features; decides `crm_on_edge`.

    Args:
        cloudlet: The request copy (its `crm_on_edge` may be forced on).
        features: The platform's features.
        vm_pool_in_use: Another cloudlet already uses the named VM pool.

    Raises:
        InvalidArgument: For requests the platform cannot serve (the original's texts).
        FailedPrecondition: `platform <t> requires CRM off edge site`, VM pool in use.
    """
    ptype = cloudlet.platform_type
    if cloudlet.edgebox_only and not features.is_edgebox and not features.is_mock:
        raise InvalidArgument(
            f"Cloudlet is restricted to edgebox or mock only platforms; {ptype} is not an "
            "edgebox or mock platform"
        )
    restricted = cloudlet.infra_api_access == cloudlet_pb2.RESTRICTED_ACCESS
    if restricted and not features.is_vm_pool and not features.is_prebuilt_kubernetes_cluster:
        if not cloudlet.infra_config.flavor_name:
            raise InvalidArgument("Infra flavor name is required for private deployments")
        if not cloudlet.infra_config.external_network_name:
            raise InvalidArgument("Infra external network is required for private deployments")
    if cloudlet.vm_pool:
        if not features.is_vm_pool:
            raise InvalidArgument(f"Platform {ptype} is not a VM Pool platform")
        if vm_pool_in_use:
            raise FailedPrecondition(
                "VM Pool with this name is already in use by some other Cloudlet"
            )
    elif features.is_vm_pool:
        raise InvalidArgument(f"VM Pool platform {ptype} requires a VmPool to be specified")
    if cloudlet.enable_default_serverless_cluster and not features.supports_multi_tenant_cluster:
        raise InvalidArgument(f"Serverless cluster not supported on {ptype}")
    if cloudlet.trust_policy and not features.supports_trust_policy:
        raise InvalidArgument(f"Trust Policy not supported on {ptype}")
    if restricted or features.requires_crm_on_edge:
        cloudlet.crm_on_edge = True
    if features.requires_crm_off_edge and cloudlet.crm_on_edge:
        raise FailedPrecondition(f"platform {features.platform_type} requires CRM off edge site")
    if cloudlet.platform_high_availability:
        if not cloudlet.crm_on_edge:
            raise InvalidArgument(
                "Platform High Availability is only an option for CRM on Edge; when CRM runs "
                "centrally HA is automatically provided by horizontal scaling"
            )
        if (
            cloudlet.deployment == "docker"
            and not features.supports_platform_high_availability_on_docker
        ):
            raise InvalidArgument(f"Platform High Availability not supported for docker on {ptype}")
        if (
            cloudlet.deployment == "kubernetes"
            and not features.supports_platform_high_availability_on_k8s
        ):
            raise InvalidArgument(f"Platform High Availability not supported for k8s on {ptype}")


def validate_alliance_orgs(cloudlet: cloudlet_pb2.Cloudlet) -> None:
    """No duplicate alliance orgs, and never the cloudlet's own.

    Raises:
        InvalidArgument: `Cannot add cloudlet's own org "<o>" as alliance org` or
            `Duplicate alliance org "<o>" specified`.
    """
    seen: set[str] = set()
    for org in cloudlet.alliance_orgs:
        if org == cloudlet.key.organization:
            raise InvalidArgument(f"Cannot add cloudlet's own org {_go_q(org)} as alliance org")
        if org in seen:
            raise InvalidArgument(f"Duplicate alliance org {_go_q(org)} specified")
        seen.add(org)


def check_prop_vars(
    values: Mapping[str, str], props: Mapping[str, cloudlet_pb2.PropertyInfo], kind: str
) -> None:
    """Env or access vars against the platform's property list (the original's texts).

    Raises:
        InvalidArgument: `Invalid <kind> vars <a, b>, valid vars are <x, y>` or
            `Missing required <kind> vars <a>`.
    """
    invalid = sorted(k for k in values if k not in props)
    if invalid:
        raise InvalidArgument(
            f"Invalid {kind} vars {', '.join(invalid)}, valid vars are {', '.join(sorted(props))}"
        )
    missing = sorted(k for k, p in props.items() if p.mandatory and k not in values)
    if missing:
        raise InvalidArgument(f"Missing required {kind} vars {', '.join(missing)}")


# --- validation of the whole object ----------------------------------------------------------


def check_enums(msg: Message) -> None:
    """Every enum field holds a defined value (the original's generated `ValidateEnums`).

    Raises:
        InvalidArgument: `invalid <GoFieldName>` for the first bad value.
    """
    for fd in msg.DESCRIPTOR.fields:
        value = getattr(msg, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            continue
        if fd.type == FieldDescriptor.TYPE_ENUM and fd.enum_type is not None:
            values = value if fd.is_repeated else [value]
            for v in values:
                if v not in fd.enum_type.values_by_number:
                    raise InvalidArgument(f"invalid {go_field_name(fd.name)}")
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            for sub in value if fd.is_repeated else [value]:
                check_enums(sub)


def validate_cloudlet(cloudlet: cloudlet_pb2.Cloudlet, paths: Iterable[str] | None = None) -> None:
    """The original's `Cloudlet.Validate(fmap)`; `paths` None means every field.

    Raises:
        InvalidArgument: With the original's text for the first problem found.
    """
    keys.validate_key(cloudlet)
    selected = None if paths is None else fields.FieldSet(paths)

    def has(path: str) -> bool:
        return selected is None or selected.has(path)

    if has(LATITUDE) and not -90 <= cloudlet.location.latitude <= 90:
        raise InvalidArgument("Invalid latitude value")
    if has(LONGITUDE) and not -180 <= cloudlet.location.longitude <= 180:
        raise InvalidArgument("Invalid longitude value")
    if has(MAINTENANCE_STATE) and cloudlet.maintenance_state not in _MAINTENANCE_REQUESTS:
        raise InvalidArgument(
            "Invalid maintenance state, only normal operation and maintenance start states "
            "are allowed"
        )
    if cloudlet.vm_image_version and not _IMAGE_VERSION.fullmatch(cloudlet.vm_image_version):
        raise InvalidArgument("ImageVersion can only contain letters, digits, -, ., _")
    check_enums(cloudlet)
    if has(DEFAULT_RESOURCE_ALERT_THRESHOLD_PATH) and not (
        0 <= cloudlet.default_resource_alert_threshold <= 100
    ):
        raise InvalidArgument(
            f"Invalid resource alert threshold {cloudlet.default_resource_alert_threshold} "
            "specified, valid threshold is in the range of 0 to 100"
        )
    for quota in cloudlet.resource_quotas:
        if not 0 <= quota.alert_threshold <= 100:
            raise InvalidArgument(
                f"Invalid resource quota alert threshold {quota.alert_threshold} specified for "
                f"{_res_key_desc(quota.resource_type, quota.name)}, valid threshold is in the "
                "range of 0 to 100"
            )


def _res_key(resource_type: str, name: str) -> str:
    return name if not resource_type else f"{resource_type}/{name}"


def _res_key_desc(resource_type: str, name: str) -> str:
    return name if not resource_type else f"{resource_type} {name}"


def validate_resource_quotas(
    props: Iterable[infraresources_pb2.InfraResource],
    current: Mapping[str, infraresources_pb2.InfraResource] | None,
    quotas: Iterable[cloudlet_pb2.ResourceQuota],
) -> None:
    """Quotas only for resources the platform has, and never above the infra maximum.

    Args:
        props: The platform's `resource_quota_properties`.
        current: The cloudlet's infra resources by resource key (update), or None (create).
        quotas: The requested quotas.

    Raises:
        InvalidArgument: `invalid quota for <res>, valid quotas are for <list>` or
            `resource quota for <res> exceeded max supported value: <n>`.
    """
    valid = {_res_key(p.type, p.name) for p in props} | set(COMMON_RESOURCES)
    names = ", ".join(sorted(valid))
    for quota in quotas:
        key = _res_key(quota.resource_type, quota.name)
        if key not in valid:
            raise InvalidArgument(f"invalid quota for {key}, valid quotas are for {names}")
        if current is None:
            continue
        infra = current.get(key)
        if infra is not None and 0 < infra.infra_max_value < quota.value:
            raise InvalidArgument(
                f"resource quota for {key} exceeded max supported value: {infra.infra_max_value}"
            )


# --- names -------------------------------------------------------------------------------------


def hostname_sanitize(name: str) -> str:
    """A valid host name: `dns_sanitize`, at most 63 chars, no trailing `-`."""
    return dns_sanitize(name)[:MAX_HOSTNAME_LENGTH].rstrip("-")


def cloudlet_base_label(key: cloudletkey_pb2.CloudletKey) -> str:
    """`<name40>-<org20>`, sanitised: the start of a cloudlet's DNS label."""
    return f"{sanitize_trunc(key.name, 40)}-{sanitize_trunc(key.organization, 20)}"


def dns_label_candidates(key: cloudletkey_pb2.CloudletKey) -> list[str]:
    """The labels to try for a cloudlet, in order (`shared` is reserved)."""
    base = cloudlet_base_label(key)
    out = numbered_labels(base, DNS_CLOUDLET_LABEL_MAX_LEN, 10)
    return [label for label in out if label != ROOT_LB_HOSTNAME]


def dns_label_error(key: cloudletkey_pb2.CloudletKey) -> InvalidArgument:
    """No free label: the original's text."""
    return InvalidArgument(
        "Unable to compute unique DNS label from base label of "
        f"{_go_q(cloudlet_base_label(key))}, please change key values"
    )


def root_lb_fqdn(dns_label: str, region: str, app_dns_root: str) -> str:
    """`shared.<label>.<region>.<appDNSRoot>`: the cloudlet's shared load balancer."""
    return f"{ROOT_LB_HOSTNAME}.{dns_label}.{hostname_sanitize(region)}.{app_dns_root}"


def zone_key(cloudlet: cloudlet_pb2.Cloudlet) -> cloudletkey_pb2.ZoneKey | None:
    """The zone a cloudlet belongs to (its org, federated org and `zone`), None if unset."""
    if not cloudlet.zone:
        return None
    return cloudletkey_pb2.ZoneKey(
        organization=cloudlet.key.organization,
        name=cloudlet.zone,
        federated_organization=cloudlet.key.federated_organization,
    )


def gpu_license_storage_path(
    driver: cloudlet_pb2.GPUDriverKey, region: str, cloudlet: cloudletkey_pb2.CloudletKey
) -> str:
    """Where a cloudlet's copy of its GPU driver licence lives in storage.

    Raises:
        InvalidArgument: `Can only use <org> or '' org gpu drivers`.
    """
    if driver.organization and driver.organization != cloudlet.organization:
        raise InvalidArgument(f"Can only use {driver.organization} or '' org gpu drivers")
    org = driver.organization or EDGE_CLOUD_ORG
    base = "/".join(p for p in (region, org, driver.name) if p)
    cloudlet_org = "" if driver.organization else cloudlet.organization
    rest = "/".join(
        p
        for p in (
            "cloudlet",
            "licenseconfig",
            cloudlet_org,
            cloudlet.name,
            GPU_DRIVER_LICENSE_CONFIG,
        )
        if p
    )
    return f"{base}/{rest}"


def _go_q(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
