"""`PlatformConfig`: everything a platform is initialised with, for one cloudlet.

The original's Go `PlatformConfig` (crm_platforms.md §1.1) minus what belongs elsewhere:
the access API is its own argument of `Platform.init`, and caches are read-only mappings
(notify caches satisfy them) instead of a struct of cache pointers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    flavor_pb2,
    network_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
)

from edge_cloud.errors import InvalidArgument
from edge_cloud.objects import keys
from edge_cloud.platform._features import PropertyInfo

__all__ = ["PlatformCaches", "PlatformConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformCaches:
    """Controller objects a platform may read but never change, by key string.

    A `NotifyCache` is such a mapping; tests pass dicts. Everything defaults to empty.
    """

    flavors: Mapping[str, flavor_pb2.Flavor] = field(default_factory=dict)
    cloudlets: Mapping[str, cloudlet_pb2.Cloudlet] = field(default_factory=dict)
    cluster_insts: Mapping[str, clusterinst_pb2.ClusterInst] = field(default_factory=dict)
    apps: Mapping[str, app_pb2.App] = field(default_factory=dict)
    app_insts: Mapping[str, appinst_pb2.AppInst] = field(default_factory=dict)
    networks: Mapping[str, network_pb2.Network] = field(default_factory=dict)
    trust_policies: Mapping[str, trustpolicy_pb2.TrustPolicy] = field(default_factory=dict)
    trust_policy_exceptions: Mapping[str, trustpolicyexception_pb2.TrustPolicyException] = field(
        default_factory=dict
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformConfig:
    """How one cloudlet's platform object is set up.

    Attributes:
        cloudlet_key: The cloudlet served.
        platform_type: Its platform type.
        physical_name: The cloudlet's name on the infrastructure.
        region: The Controller's region.
        env_vars: The cloudlet's `env_var`: property values set by the operator.
        process_env: The daemon's environment, consulted for properties the cloudlet
            does not set (the original's order: cloudlet, then process, then default).
        test_mode: Relaxed checks (mandatory properties) for tests.
        app_dns_root: DNS root of generated names.
        root_lb_fqdn: The shared root LB's name.
        deployment_tag: Tag of this deployment (names, labels).
        crm_on_edge: Whether a CRM on the edge site runs this cloudlet's work.
        cache_dir: Where the platform may keep files for this cloudlet.
        container_registry_path: Registry of the platform images.
        cloudlet_vm_image_path: Where the base VM image is downloaded from.
        commercial_certs: Use publicly trusted certificates.
        trust_policy: Name of the cloudlet's trust policy, empty for none.
        caches: Read-only Controller objects.
    """

    cloudlet_key: cloudletkey_pb2.CloudletKey
    platform_type: str
    physical_name: str = ""
    region: str = "local"
    env_vars: Mapping[str, str] = field(default_factory=dict)
    process_env: Mapping[str, str] = field(default_factory=dict)
    test_mode: bool = False
    app_dns_root: str = "appdnsroot.net"
    root_lb_fqdn: str = ""
    deployment_tag: str = ""
    crm_on_edge: bool = False
    cache_dir: Path | None = None
    container_registry_path: str = ""
    cloudlet_vm_image_path: str = ""
    commercial_certs: bool = False
    trust_policy: str = ""
    caches: PlatformCaches = field(default_factory=PlatformCaches)

    @classmethod
    def for_cloudlet(cls, cloudlet: cloudlet_pb2.Cloudlet, **settings: Any) -> PlatformConfig:
        """The config of a Cloudlet object, plus daemon-level settings.

        Args:
            cloudlet: The cloudlet; key, type, physical name, env vars, root LB name,
                CRM placement and trust policy come from it.
            **settings: Other fields (region, caches, process_env, ...).

        Returns:
            The config.
        """
        key = cloudletkey_pb2.CloudletKey()
        key.CopyFrom(cloudlet.key)
        return cls(
            cloudlet_key=key,
            platform_type=cloudlet.platform_type,
            physical_name=cloudlet.physical_name or cloudlet.key.name,
            env_vars=dict(cloudlet.env_var),
            root_lb_fqdn=cloudlet.root_lb_fqdn,
            crm_on_edge=cloudlet.crm_on_edge,
            trust_policy=cloudlet.trust_policy,
            **settings,
        )

    @property
    def cloudlet_key_string(self) -> str:
        """The cloudlet's key string (`{"organization":"o","name":"c"}`)."""
        return keys.key_string(self.cloudlet_key)

    def property(self, name: str, default: str = "") -> str:
        """A property's value: the cloudlet's env var, else the process's, else `default`."""
        if name in self.env_vars:
            return self.env_vars[name]
        return self.process_env.get(name, default)

    def resolve_properties(self, declared: Mapping[str, PropertyInfo]) -> dict[str, str]:
        """Values of every declared property, defaults filled in.

        Args:
            declared: The platform's `features.properties`.

        Returns:
            Name to value, for every declared name.

        Raises:
            InvalidArgument: A mandatory property has no value (not in test mode).
        """
        values: dict[str, str] = {}
        missing: list[str] = []
        for name, info in declared.items():
            value = self.property(name, info.value)
            if info.mandatory and not value and not self.test_mode:
                missing.append(name)
            values[name] = value
        if missing:
            raise InvalidArgument(
                f"cloudlet {self.cloudlet_key_string} of platform {self.platform_type} needs "
                f"the mandatory properties {', '.join(sorted(missing))} in its env vars"
            )
        return values
