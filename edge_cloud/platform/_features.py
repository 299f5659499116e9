"""`PlatformFeatures` as data: what a platform type can do, mirroring the wire message.

The Controller decides from these flags only, never from platform names (crm_platforms.md
§1.3, §1.6). The dataclasses here mirror `edgeproto.PlatformFeatures`, `PropertyInfo` and
`InfraResource` field for field (a unit test compares them with the descriptors), so a
plugin declares its features as plain, immutable Python and the CCRM sends `to_proto()`.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeproto import cloudlet_pb2, infraresources_pb2

__all__ = ["PlatformFeatures", "PropertyInfo", "QuotaResource"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PropertyInfo:
    """One environment-variable property or access variable a platform accepts.

    Attributes:
        name: Human-readable name.
        description: What it does.
        value: The default value.
        secret: Never shown back to users.
        mandatory: A cloudlet must set it.
        internal: Set by the system, not by operators.
        totp_secret: The value is a TOTP seed kept in Vault.
    """

    name: str = ""
    description: str = ""
    value: str = ""
    secret: bool = False
    mandatory: bool = False
    internal: bool = False
    totp_secret: bool = False

    def to_proto(self) -> cloudlet_pb2.PropertyInfo:
        """The wire message."""
        return cloudlet_pb2.PropertyInfo(**dataclasses.asdict(self))

    @classmethod
    def from_proto(cls, msg: cloudlet_pb2.PropertyInfo) -> PropertyInfo:
        """Build from the wire message."""
        return cls(**{f.name: getattr(msg, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaResource:
    """A resource operators may put a quota on (the wire's `InfraResource`).

    Attributes:
        name: Resource name as it appears in snapshots (`RAM`, `Instances`, ...).
        value: Current value (unused in declarations).
        infra_max_value: Infrastructure maximum (unused in declarations).
        quota_max_value: Quota maximum (unused in declarations).
        description: What the quota limits.
        units: `MB`, `GB` or empty.
        alert_threshold: Percentage that raises an alert (unused in declarations).
        type: Resource type (`gpu`, `flavor`) or empty for generic resources.
    """

    name: str
    value: int = 0
    infra_max_value: int = 0
    quota_max_value: int = 0
    description: str = ""
    units: str = ""
    alert_threshold: int = 0
    type: str = ""

    def to_proto(self) -> infraresources_pb2.InfraResource:
        """The wire message."""
        return infraresources_pb2.InfraResource(**dataclasses.asdict(self))

    @classmethod
    def from_proto(cls, msg: infraresources_pb2.InfraResource) -> QuotaResource:
        """Build from the wire message."""
        return cls(**{f.name: getattr(msg, f.name) for f in dataclasses.fields(cls)})


def _frozen_map(value: Mapping[str, PropertyInfo]) -> Mapping[str, PropertyInfo]:
    return types.MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformFeatures:
    """Static capabilities of one platform type (wire message `edgeproto.PlatformFeatures`).

    Read from the plugin class without building or initialising it. Field meanings are in
    crm_platforms.md §1.3; every field of the wire message is here under the same name.
    `node_type` is empty in a declaration: the CCRM or CRM hosting the platform sets it
    (`dataclasses.replace(features, node_type="ccrm")`) before registering the features.
    """

    platform_type: str
    supports_multi_tenant_cluster: bool = False
    supports_shared_volume: bool = False
    supports_trust_policy: bool = False
    supports_kubernetes_only: bool = False
    kubernetes_requires_worker_nodes: bool = False
    cloudlet_services_local: bool = False
    ip_allocated_per_service: bool = False
    supports_image_type_ovf: bool = False
    is_vm_pool: bool = False
    is_fake: bool = False
    supports_additional_networks: bool = False
    is_single_kubernetes_cluster: bool = False
    supports_app_inst_dedicated_ip: bool = False
    supports_platform_high_availability_on_k8s: bool = False
    supports_platform_high_availability_on_docker: bool = False
    no_kubernetes_cluster_auto_scale: bool = False
    is_prebuilt_kubernetes_cluster: bool = False
    supports_image_type_ova: bool = False
    no_cluster_support: bool = False
    is_edgebox: bool = False
    access_vars: Mapping[str, PropertyInfo] = field(default_factory=dict)
    properties: Mapping[str, PropertyInfo] = field(default_factory=dict)
    resource_quota_properties: tuple[QuotaResource, ...] = ()
    node_type: str = ""
    is_mock: bool = False
    supports_ipv6: bool = False
    requires_crm_on_edge: bool = False
    requires_crm_off_edge: bool = False
    requires_cert_refresh: bool = False
    supports_multiple_node_pools: bool = False
    kubernetes_managed_control_plane: bool = False
    uses_ingress: bool = False
    requires_gpu_driver: bool = False
    uses_root_lb: bool = False
    supports_cloudlet_managed_clusters: bool = False
    resource_calc_by_flavor_counts: bool = False
    supports_bare_metal: bool = False
    delete_prepare: bool = False

    def __post_init__(self) -> None:
        if not self.platform_type:
            raise ValueError("PlatformFeatures needs a platform_type")
        if self.requires_crm_on_edge and self.requires_crm_off_edge:
            raise ValueError(
                f"platform {self.platform_type} cannot require the CRM both on and off edge"
            )
        # read-only views, so a declaration cannot be changed through a shared class attribute
        object.__setattr__(self, "access_vars", _frozen_map(self.access_vars))
        object.__setattr__(self, "properties", _frozen_map(self.properties))
        object.__setattr__(self, "resource_quota_properties", tuple(self.resource_quota_properties))

    def __hash__(self) -> int:
        return hash((self.platform_type, self.node_type))

    def to_proto(self) -> cloudlet_pb2.PlatformFeatures:
        """The wire message, every field set from this declaration."""
        msg = cloudlet_pb2.PlatformFeatures()
        for f in dataclasses.fields(self):
            value: Any = getattr(self, f.name)
            if f.name in ("access_vars", "properties"):
                target = getattr(msg, f.name)
                for name, info in value.items():
                    target[name].CopyFrom(info.to_proto())
            elif f.name == "resource_quota_properties":
                msg.resource_quota_properties.extend(r.to_proto() for r in value)
            else:
                setattr(msg, f.name, value)
        return msg

    @classmethod
    def from_proto(cls, msg: cloudlet_pb2.PlatformFeatures) -> PlatformFeatures:
        """Build from the wire message (for example what the Controller stored)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = getattr(msg, f.name)
            if f.name in ("access_vars", "properties"):
                values[f.name] = {k: PropertyInfo.from_proto(v) for k, v in raw.items()}
            elif f.name == "resource_quota_properties":
                values[f.name] = tuple(QuotaResource.from_proto(r) for r in raw)
            else:
                values[f.name] = raw
        return cls(**values)

    def derive(self, platform_type: str, **changes: Any) -> PlatformFeatures:
        """A variant of these features under another type name (fakes build on `fake`).

        Args:
            platform_type: The variant's type name.
            **changes: Fields that differ.

        Returns:
            The new declaration.
        """
        return dataclasses.replace(self, platform_type=platform_type, **changes)


def quota_resources(
    names: Iterable[str], descriptions: Mapping[str, str]
) -> tuple[QuotaResource, ...]:
    """Quota declarations for resource names, with their standard descriptions."""
    return tuple(QuotaResource(name=n, description=descriptions.get(n, "")) for n in names)
