"""PlatformFeaturesApi: what each platform can do, as its CCRM or CRM registered it (§3.17).

Features reach etcd when a CCRM or CRM sends them upstream over notify (or are written by
a CCRM directly); the Controller decides from them alone, never from platform names. Fake
platforms are hidden unless `--test-mode`. An admin may delete the features of a platform
no cloudlet uses any more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
from edgeproto import cloudlet_pb2, cloudlet_pb2_grpc, cloudletkey_pb2, result_pb2, zone_pb2

from edge_cloud.errors import FailedPrecondition
from edge_cloud.objects import match, registry
from services.controller import _cloudlet
from services.controller._cloudlet_ops import features_for
from services.controller._cloudletinfo import CLOUDLET
from services.controller._runtime import Runtime
from services.controller._sync import Caches

__all__ = ["PlatformFeaturesApi", "add", "platform_users"]

ZONE: Final = registry.by_class(zone_pb2.Zone)
_Ctx = grpc.aio.ServicerContext[Any, Any]


def platform_users(caches: Caches, features: cloudlet_pb2.PlatformFeatures) -> None:
    """Cloudlets of the platform, all named (`name(org)`), in key order.

    Raises:
        FailedPrecondition: `PlatformType in use by Cloudlets <a(o), b(o)>`.
    """
    users = [
        f"{c.key.name}({c.key.organization})"
        for _, c in caches.items(CLOUDLET)
        if c.platform_type == features.platform_type
    ]
    if users:
        raise FailedPrecondition(f"PlatformType in use by Cloudlets {', '.join(users)}")


class PlatformFeaturesApi(cloudlet_pb2_grpc.PlatformFeaturesApiServicer):
    """Show and delete platform features."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def ShowPlatformFeatures(
        self, request: cloudlet_pb2.PlatformFeatures, context: _Ctx
    ) -> AsyncIterator[cloudlet_pb2.PlatformFeatures]:
        """Every stored platform matching the filter (fake ones only in test mode)."""
        test_mode = self._rt.config.test_mode
        for features in self._rt.engine.show(request):
            if features.is_fake and not test_mode:
                continue
            yield features

    async def DeletePlatformFeatures(
        self, request: cloudlet_pb2.PlatformFeatures, context: _Ctx
    ) -> result_pb2.Result:
        """Delete-prepare, refuse while cloudlets use the platform, delete."""
        engine = self._rt.engine
        await engine.delete(request, in_use=lambda f: platform_users(engine.caches, f))
        return result_pb2.Result()

    async def ShowPlatformFeaturesForZone(
        self, request: cloudletkey_pb2.ZoneKey, context: _Ctx
    ) -> AsyncIterator[cloudlet_pb2.PlatformFeatures]:
        """The features of every platform with a cloudlet in the matching zones."""
        caches = self._rt.caches
        zone_filter = zone_pb2.Zone(key=request)
        zones = {
            (z.key.organization, z.key.name, z.key.federated_organization)
            for _, z in caches.items(ZONE)
            if match.matches(zone_filter, z)
        }
        platforms: set[str] = set()
        for _, cloudlet in caches.items(CLOUDLET):
            zone = _cloudlet.zone_key(cloudlet)
            if (
                zone is not None
                and (
                    zone.organization,
                    zone.name,
                    zone.federated_organization,
                )
                in zones
            ):
                platforms.add(cloudlet.platform_type)
        for name in sorted(platforms):
            yield features_for(caches, name)


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    cloudlet_pb2_grpc.add_PlatformFeaturesApiServicer_to_server(
        PlatformFeaturesApi(runtime), server
    )
    return ["edgeproto.PlatformFeaturesApi"]
