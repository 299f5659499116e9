"""The platforms this CCRM hosts, and one initialised platform object per cloudlet.

Platform classes come from the registry (`edge_cloud.platform.registry`), never by import.
Objects are built per cloudlet and kept while the Cloudlet's platform-relevant fields are
unchanged; a Cloudlet change (seen over notify, or an ApplyCloudlet update) drops the
object so the next call re-initialises it with the new env vars (crm_platforms.md §5.1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Final

from edgeproto import cloudlet_pb2, cloudletkey_pb2, flavor_pb2, settings_pb2

from edge_cloud import secrets
from edge_cloud.crmutil import platform_fingerprint
from edge_cloud.errors import ConfigError, DeadlineExceeded, EdgeError, NotFound
from edge_cloud.objects import keys
from edge_cloud.platform import (
    AccessApi,
    ControllerCloudletNodes,
    LocalAccessApi,
    NoProgress,
    Platform,
    PlatformCaches,
    PlatformConfig,
    PlatformFeatures,
    SecretsAccessApi,
    registry,
)
from services.ccrm.config import CcrmConfig

__all__ = ["DEFAULT_PLATFORM_FLAVOR", "PlatformHost", "load_platforms"]

log = logging.getLogger(__name__)

DEFAULT_PLATFORM_FLAVOR: Final = flavor_pb2.Flavor(
    key=flavor_pb2.FlavorKey(name="DefaultPlatformFlavor"), vcpus=2, ram=4096, disk=20
)
"""The platform VM size when a cloudlet names none (the original's `DefaultPlatformFlavor`)."""

# Cloudlet fields a platform object depends on; a change to any of them rebuilds it
_PLATFORM_FIELDS: Final = (
    "platform_type",
    "physical_name",
    "env_var",
    "crm_on_edge",
    "trust_policy",
    "root_lb_fqdn",
    "infra_api_access",
    "gpu_config",
    "resource_quotas",
)


def load_platforms(names: tuple[str, ...]) -> dict[str, type[Platform]]:
    """The classes of the platforms to host: the named ones, or every installed one.

    Raises:
        ConfigError: A named platform is unknown or cannot be imported.
    """
    wanted = names or tuple(registry.available())
    classes: dict[str, type[Platform]] = {}
    for name in wanted:
        try:
            classes[name] = registry.load(name)
        except EdgeError as err:
            raise ConfigError(f"--platforms: {err}") from err
    return classes


class PlatformHost:
    """Platform classes by type, and initialised platform objects by cloudlet.

    Args:
        config: The CCRM's config.
        classes: Hosted platform classes by type name.
        caches: Controller objects (notify caches), handed to platforms too.
        settings: The Controller's Settings (a notify cache; defaults when empty).
        environ: The process environment, consulted for properties cloudlets do not set.
        secrets_backend: Where cloudlet access vars and App secrets are read; None opens
            the one the config selects on first use (none configured: `LocalAccessApi`).
    """

    def __init__(
        self,
        config: CcrmConfig,
        classes: Mapping[str, type[Platform]],
        caches: PlatformCaches,
        settings: Mapping[str, settings_pb2.Settings],
        environ: Mapping[str, str],
        secrets_backend: secrets.SecretsBackend | None = None,
    ) -> None:
        self._config = config
        self._classes = dict(classes)
        self.caches = caches
        self._settings = settings
        self._environ = dict(environ)
        self._platforms: dict[str, tuple[bytes, Platform]] = {}
        self._secrets = secrets_backend
        self._nodes = ControllerCloudletNodes(config.controller_addr, tls=config.tls)
        if self._secrets is None and config.secrets_settings().configured:
            chosen = config.secrets_settings()
            self._secrets = secrets.LazySecretsBackend(
                chosen.kind,
                lambda: secrets.connect_backend(
                    chosen,
                    etcd_urls=config.etcd_urls,
                    etcd_namespace=config.etcd_namespace,
                ),
            )

    @property
    def node_type(self) -> str:
        """The node type the hosted platforms are registered under."""
        return self._config.node_type

    def registrations(self) -> list[PlatformFeatures]:
        """The features of every hosted platform, stamped with this CCRM's node type."""
        return [
            dataclasses.replace(cls.features, node_type=self.node_type)
            for _, cls in sorted(self._classes.items())
        ]

    def settings(self) -> settings_pb2.Settings:
        """The Controller's Settings, or an empty message before they arrive."""
        for value in self._settings.values():
            return value
        return settings_pb2.Settings()

    # -- lookups -------------------------------------------------------------------------------

    def platform_class(self, cloudlet: cloudlet_pb2.Cloudlet) -> type[Platform]:
        """The class of a cloudlet's platform.

        Raises:
            NotFound: This CCRM does not host it (another node type should).
        """
        cls = self._classes.get(cloudlet.platform_type)
        if cls is None:
            raise NotFound(
                f"ccrm {self.node_type} got request for unknown platform "
                f"{cloudlet.platform_type} for cloudlet {keys.key_string(cloudlet.key)}"
            )
        return cls

    def cloudlet(self, key: cloudletkey_pb2.CloudletKey) -> cloudlet_pb2.Cloudlet:
        """A Cloudlet as the Controller last sent it.

        Raises:
            NotFound: `Cloudlet key {...} not found`.
        """
        found = self.caches.cloudlets.get(keys.key_string(key))
        if found is None:
            raise keys.not_found(key)
        return found

    def platform_flavor(self, cloudlet: cloudlet_pb2.Cloudlet) -> flavor_pb2.Flavor:
        """The size of the cloudlet's platform VM.

        Raises:
            NotFound: It names a flavor the Controller has not sent.
        """
        name = cloudlet.flavor.name
        if not name or name == DEFAULT_PLATFORM_FLAVOR.key.name:
            return DEFAULT_PLATFORM_FLAVOR
        found = self.caches.flavors.get(keys.key_string(cloudlet.flavor))
        if found is None:
            raise keys.not_found(cloudlet.flavor)
        return found

    # -- platform objects ----------------------------------------------------------------------

    def config_for(self, cloudlet: cloudlet_pb2.Cloudlet) -> PlatformConfig:
        """The platform config of a cloudlet."""
        cache_dir = None
        if self._config.cache_dir is not None:
            key = cloudlet.key
            cache_dir = self._config.cache_dir / key.organization / key.name / "cache"
        return PlatformConfig.for_cloudlet(
            cloudlet,
            region=self._config.region,
            process_env=self._environ,
            test_mode=self._config.test_mode,
            app_dns_root=self._config.app_dns_root,
            cache_dir=cache_dir,
            container_registry_path=self._config.cloudlet_registry_path,
            cloudlet_vm_image_path=self._config.cloudlet_vm_image_path,
            commercial_certs=self._config.commercial_certs,
            caches=self.caches,
        )

    def pf_config(self, cloudlet: cloudlet_pb2.Cloudlet) -> cloudlet_pb2.PlatformConfig:
        """What create and delete hand a remote CRM (the wire `PlatformConfig`).

        CRM access keys live in Vault, which this slice does not reach: they are empty.
        """
        cfg = self._config
        pf = cloudlet_pb2.PlatformConfig(
            container_registry_path=cfg.cloudlet_registry_path,
            cloudlet_vm_image_path=cfg.cloudlet_vm_image_path,
            notify_ctrl_addrs=cfg.controller_public_notify_addr,
            platform_tag=cfg.version_tag,
            test_mode=cfg.test_mode,
            region=cfg.region,
            commercial_certs=cfg.commercial_certs,
            app_dns_root=cfg.app_dns_root,
            access_api_addr=cfg.controller_public_access_api_addr,
            thanos_recv_addr=cfg.thanos_recv_addr,
            ansible_public_addr=cfg.ansible_public_addr,
        )
        pf.env_var.update(cloudlet.env_var)
        return pf

    def access_for(self, cloudlet: cloudlet_pb2.Cloudlet) -> AccessApi:
        """The access API of a cloudlet: its secrets from the backend, or the local default.

        Either way CloudletNodes of the cloudlet are registered at the Controller
        (`--controller-addr`), over one channel shared by every cloudlet.
        """
        nodes = self._nodes
        if self._secrets is None:
            return LocalAccessApi(nodes=nodes, cloudlet_key=cloudlet.key)
        return SecretsAccessApi(
            self._secrets,
            region=self._config.region,
            organization=cloudlet.key.organization,
            name=cloudlet.key.name,
            physical_name=cloudlet.physical_name,
            nodes=nodes,
            cloudlet_key=cloudlet.key,
        )

    async def close_secrets(self) -> None:
        """Close the secrets backend and the Controller channel (the daemon's shutdown)."""
        await self._nodes.close()
        if self._secrets is not None:
            await self._secrets.close()

    def bare(self, cloudlet: cloudlet_pb2.Cloudlet) -> Platform:
        """An uninitialised platform object, for features-only calls (naming, admission)."""
        return self.platform_class(cloudlet)()

    async def initialised(
        self, cloudlet: cloudlet_pb2.Cloudlet, *, fresh: bool = False
    ) -> Platform:
        """The cloudlet's initialised platform object, built if missing or outdated.

        Args:
            cloudlet: The cloudlet (its env vars and type decide the object).
            fresh: Build a new one even if a current one is kept.

        Raises:
            EdgeError: Unknown platform, or what its `init` raised.
            DeadlineExceeded: `init` took longer than `--platform-init-timeout`.
        """
        key = keys.key_string(cloudlet.key)
        fingerprint = platform_fingerprint(cloudlet, _PLATFORM_FIELDS)
        kept = self._platforms.get(key)
        if kept is not None and not fresh and kept[0] == fingerprint:
            return kept[1]
        platform = self.platform_class(cloudlet)()
        try:
            async with asyncio.timeout(self._config.platform_init_timeout):
                await platform.init(
                    self.config_for(cloudlet), self.access_for(cloudlet), NoProgress()
                )
        except TimeoutError:
            raise DeadlineExceeded(
                f"platform {cloudlet.platform_type} of cloudlet {key} did not initialise "
                f"within {self._config.platform_init_timeout:g}s"
            ) from None
        self._platforms[key] = (fingerprint, platform)
        return platform

    def drop(self, key: str) -> None:
        """Forget the platform object of a cloudlet (by key string)."""
        if self._platforms.pop(key, None) is not None:
            log.debug("dropped the platform object of %s", key)
