"""The CRM's one cloudlet and its platform object, as the shared handlers read them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping

from edgeproto import cloudlet_pb2, cloudletkey_pb2, settings_pb2

from edge_cloud.crmutil import platform_fingerprint
from edge_cloud.errors import DeadlineExceeded, FailedPrecondition, NotFound
from edge_cloud.objects import keys
from edge_cloud.platform import (
    LocalAccessApi,
    NoProgress,
    Platform,
    PlatformCaches,
    PlatformConfig,
    Progress,
    registry,
)
from services.crm.config import CrmConfig

__all__ = ["CrmHost"]

log = logging.getLogger(__name__)

# Cloudlet fields the platform object depends on: a change re-initialises it (an update
# that changed env vars takes effect, as the CCRM does for its cloudlets).
_PLATFORM_FIELDS = ("platform_type", "physical_name", "env_var", "root_lb_fqdn", "trust_policy")


class CrmHost:
    """Controller objects (notify caches) and the platform of this CRM's cloudlet.

    Args:
        config: The CRM's config.
        key: The cloudlet served.
        caches: The Controller's objects as notify delivers them.
        settings: The Settings cache (empty until the Controller sends them).
        environ: The process environment (platform properties the cloudlet does not set).
    """

    def __init__(
        self,
        config: CrmConfig,
        key: cloudletkey_pb2.CloudletKey,
        caches: PlatformCaches,
        settings: Mapping[str, settings_pb2.Settings],
        environ: Mapping[str, str],
    ) -> None:
        self._config = config
        self.key = key
        self.caches = caches
        self._settings = settings
        self._environ = dict(environ)
        self._platform: tuple[bytes, Platform] | None = None
        self._lock = asyncio.Lock()

    def settings(self) -> settings_pb2.Settings:
        """The Controller's Settings, or an empty message before they arrive."""
        for value in self._settings.values():
            return value
        return settings_pb2.Settings()

    def cloudlet(self, key: cloudletkey_pb2.CloudletKey) -> cloudlet_pb2.Cloudlet:
        """This CRM's Cloudlet as the Controller last sent it.

        Raises:
            NotFound: Another cloudlet (a CRM serves one), or not received yet.
        """
        if key != self.key:
            raise NotFound(
                f"this CRM serves cloudlet {keys.key_string(self.key)}, not {keys.key_string(key)}"
            )
        found = self.caches.cloudlets.get(keys.key_string(key))
        if found is None:
            raise keys.not_found(key)
        return found

    def platform_type(self, cloudlet: cloudlet_pb2.Cloudlet | None) -> str:
        """The platform type: the flag, else $PLATFORM, else the Cloudlet's."""
        chosen = self._config.platform or self._environ.get("PLATFORM", "")
        if not chosen and cloudlet is not None:
            chosen = cloudlet.platform_type
        return chosen

    @property
    def current(self) -> Platform | None:
        """The initialised platform object, if any."""
        return None if self._platform is None else self._platform[1]

    async def initialised(
        self, cloudlet: cloudlet_pb2.Cloudlet, progress: Progress | None = None
    ) -> Platform:
        """The platform object, built and initialised on first use or after a change.

        Args:
            cloudlet: This CRM's Cloudlet (its env vars decide the object).
            progress: Where `init` reports ("Initializing platform" at start-up).

        Raises:
            FailedPrecondition: No platform type is known.
            EdgeError: Unknown platform, or what `init` raised.
            DeadlineExceeded: `init` took longer than `--platform-init-timeout`.
        """
        if cloudlet.key != self.key:
            self.cloudlet(cloudlet.key)  # raises NotFound with the reason
        fingerprint = platform_fingerprint(cloudlet, _PLATFORM_FIELDS)
        async with self._lock:
            kept = self._platform
            if kept is not None and kept[0] == fingerprint:
                return kept[1]
            name = self.platform_type(cloudlet)
            if not name:
                raise FailedPrecondition(
                    f"no platform type for cloudlet {keys.key_string(self.key)}: pass "
                    "--platform or set PLATFORM"
                )
            platform = registry.load(name)()
            config = PlatformConfig.for_cloudlet(
                cloudlet,
                region=self._config.region,
                process_env=self._environ,
                test_mode=self._config.test_mode,
                app_dns_root=self._config.app_dns_root,
                cache_dir=self._config.cache_dir,
                caches=self.caches,
            )
            if self._config.physical_name:
                config = dataclasses.replace(config, physical_name=self._config.physical_name)
            timeout = self._config.platform_init_timeout
            try:
                async with asyncio.timeout(timeout):
                    await platform.init(config, LocalAccessApi(), progress or NoProgress())
            except TimeoutError:
                raise DeadlineExceeded(
                    f"platform {name} of cloudlet {keys.key_string(self.key)} did not "
                    f"initialise within {timeout:g}s"
                ) from None
            if kept is not None:
                log.info("cloudlet %s changed: platform re-initialised", keys.key_string(self.key))
            self._platform = (fingerprint, platform)
            return platform
