"""CloudletApi: edge sites and their lifecycle (controller.md §3.6).

Create, update and delete are long-running and server-streaming (`_cloudlet_ops`); the
other RPCs are answered from the caches, by the CCRM of the cloudlet's platform, or refuse
with a status naming what this Controller lacks (Vault, DNS providers) - never with a made-up
result. Resource usage and flavor mapping come from `_usage`, the create path's accounting.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
from edgeproto import (
    appinst_pb2,
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    cloudletkey_pb2,
    clusterinst_pb2,
    flavor_pb2,
    org_pb2,
    restagtable_pb2,
    result_pb2,
)

from edge_cloud.errors import (
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    Unimplemented,
)
from edge_cloud.objects import keys, registry
from services.controller import _cloudlet, _usage, _validate
from services.controller._cloudlet_ops import (
    CloudletOps,
    features_for,
    generate_crm_access_key,
    revoke_crm_access_key,
)
from services.controller._cloudletinfo import CLOUDLET, apply_info
from services.controller._clusterinst import NO_SIZING, SiteSizing
from services.controller._engine import Txn
from services.controller._runtime import Runtime
from services.controller._sizing import sizer
from services.controller._tracked import TrackedRuntime, seconds, streamed_rpc

__all__ = ["CloudletApi", "add"]

RES_TAG_TABLE: Final = registry.by_class(restagtable_pb2.ResTagTable)
CLUSTER_INST: Final = registry.by_class(clusterinst_pb2.ClusterInst)
APP_INST: Final = registry.by_class(appinst_pb2.AppInst)
_Ctx = grpc.aio.ServicerContext[Any, Any]
log = logging.getLogger(__name__)


class CloudletApi(cloudlet_pb2_grpc.CloudletApiServicer):
    """Every CloudletApi RPC."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._ops = CloudletOps(runtime) if isinstance(runtime, TrackedRuntime) else None

    def _tracked(self) -> tuple[TrackedRuntime, CloudletOps]:
        if self._ops is None or not isinstance(self._rt, TrackedRuntime):
            raise Unavailable("this Controller runs without Redis progress tracking")
        return self._rt, self._ops

    def _cloudlet(self, key: cloudletkey_pb2.CloudletKey) -> cloudlet_pb2.Cloudlet:
        found = self._rt.caches.get(CLOUDLET, keys.key_string(key))
        if found is None:
            raise keys.not_found(key)
        return found

    # -- lifecycle -------------------------------------------------------------------------

    CreateCloudlet = streamed_rpc(
        "create", "Create a cloudlet; progress lines until it is Ready (or undone)."
    )

    DeleteCloudlet = streamed_rpc("delete", "Delete a cloudlet; progress lines until it is gone.")

    UpdateCloudlet = streamed_rpc(
        "update",
        "Change the listed fields; CRM work, trust policy and maintenance stream progress.",
    )

    async def ShowCloudlet(
        self, request: cloudlet_pb2.Cloudlet, context: _Ctx
    ) -> AsyncIterator[cloudlet_pb2.Cloudlet]:
        """Every cached cloudlet matching the filter."""
        for cloudlet in self._rt.engine.show(request):
            yield cloudlet

    # -- CCRM --------------------------------------------------------------------------------

    async def GetCloudletManifest(
        self, request: cloudletkey_pb2.CloudletKey, context: _Ctx
    ) -> cloudlet_pb2.CloudletManifest:
        """The manifest to bring up an on-edge cloudlet, from the platform's CCRM."""
        rt, _ = self._tracked()
        cloudlet = self._cloudlet(request)
        features = features_for(rt.caches, cloudlet.platform_type)
        return await rt.tracked.ccrm.get_cloudlet_manifest(
            features.node_type, request, timeout=seconds(rt.settings().ccrm_api_timeout)
        )

    async def RefreshCloudletResources(
        self, request: cloudlet_pb2.Cloudlet, context: _Ctx
    ) -> result_pb2.Result:
        """Ask the CCRM for fresh resource data of the matching (CCRM-managed) cloudlets."""
        rt, _ = self._tracked()
        matching = rt.engine.show(request)
        if not matching:
            raise NotFound("no matching cloudlets found")
        failures: list[str] = []
        for cloudlet in matching:
            if cloudlet.crm_on_edge:
                continue  # the CRM reports its own resources
            try:
                features = features_for(rt.caches, cloudlet.platform_type)
                info = await rt.tracked.ccrm.get_cloudlet_resources(
                    features.node_type, cloudlet, timeout=seconds(rt.settings().ccrm_api_timeout)
                )
                await apply_info(rt, info)
            except (NotFound, FailedPrecondition, Unavailable) as err:
                failures.append(f"{keys.key_string(cloudlet.key)}: {err.message}")
        if failures:
            raise FailedPrecondition(f"some updates failed: {', '.join(failures)}")
        return result_pb2.Result(message="cloudlet resources updated")

    async def RefreshCerts(
        self, request: cloudletkey_pb2.CloudletKey, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Renew TLS certificates of CCRM-managed cloudlets (CRMs on the edge do their own)."""
        rt, _ = self._tracked()
        for cloudlet in rt.engine.show(cloudlet_pb2.Cloudlet(key=request)):
            name = keys.key_string(cloudlet.key)
            features = rt.caches.get(_FEATURES, cloudlet.platform_type)
            if features is None:
                yield result_pb2.Result(message=f"{name}: no features found")
                continue
            if cloudlet.crm_on_edge:
                yield result_pb2.Result(message=f"{name}: skip CRM on edge")
                continue
            try:
                await rt.tracked.ccrm.refresh_certs(
                    features.node_type, cloudlet, timeout=seconds(rt.settings().ccrm_api_timeout)
                )
            except FailedPrecondition as err:
                yield result_pb2.Result(message=f"{name}: no connection, {err.message}")
            except Exception as err:
                yield result_pb2.Result(message=f"{name}: failed, {err}")
            else:
                yield result_pb2.Result(message=f"{name}: done")

    # -- features-based --------------------------------------------------------------------

    async def GetCloudletProps(
        self, request: cloudlet_pb2.CloudletProps, context: _Ctx
    ) -> cloudlet_pb2.CloudletProps:
        """The env-var properties a platform accepts."""
        features = features_for(self._rt.caches, request.platform_type)
        return cloudlet_pb2.CloudletProps(
            platform_type=features.platform_type, properties=features.properties
        )

    async def GetCloudletResourceQuotaProps(
        self, request: cloudlet_pb2.CloudletResourceQuotaProps, context: _Ctx
    ) -> cloudlet_pb2.CloudletResourceQuotaProps:
        """The resources a platform lets operators set quotas for."""
        features = features_for(self._rt.caches, request.platform_type)
        return cloudlet_pb2.CloudletResourceQuotaProps(
            platform_type=features.platform_type, properties=features.resource_quota_properties
        )

    # -- simple edits ------------------------------------------------------------------------

    async def AddCloudletResMapping(
        self, request: cloudlet_pb2.CloudletResMap, context: _Ctx
    ) -> result_pb2.Result:
        """Map optional resources (gpu, nas, nic) to the operator's ResTagTables."""
        for resource in request.mapping:
            _validate.check_res_name(resource)

        def add_mapping(txn: Txn, cloudlet: cloudlet_pb2.Cloudlet) -> None:
            if cloudlet.delete_prepare:
                raise keys.being_deleted(request.key)
            for resource, table in request.mapping.items():
                key = restagtable_pb2.ResTagTableKey(
                    name=table, organization=request.key.organization
                )
                txn.require(RES_TAG_TABLE, key)
                cloudlet.res_tag_map[resource.lower()].CopyFrom(key)

        await self._rt.engine.modify(CLOUDLET, request.key, add_mapping)
        return result_pb2.Result()

    async def RemoveCloudletResMapping(
        self, request: cloudlet_pb2.CloudletResMap, context: _Ctx
    ) -> result_pb2.Result:
        """Remove resource mappings; absent ones are ignored."""

        def remove_mapping(txn: Txn, cloudlet: cloudlet_pb2.Cloudlet) -> None:
            for resource in request.mapping:
                if resource in cloudlet.res_tag_map:
                    del cloudlet.res_tag_map[resource]

        await self._rt.engine.modify(CLOUDLET, request.key, remove_mapping)
        return result_pb2.Result()

    async def AddCloudletAllianceOrg(
        self, request: cloudlet_pb2.CloudletAllianceOrg, context: _Ctx
    ) -> result_pb2.Result:
        """Add an alliance organization (no duplicates, never the cloudlet's own)."""
        if not request.organization:
            raise InvalidArgument("No alliance organization specified")

        def add_org(txn: Txn, cloudlet: cloudlet_pb2.Cloudlet) -> None:
            cloudlet.alliance_orgs.append(request.organization)
            _cloudlet.validate_alliance_orgs(cloudlet)

        await self._rt.engine.modify(CLOUDLET, request.key, add_org)
        return result_pb2.Result()

    async def RemoveCloudletAllianceOrg(
        self, request: cloudlet_pb2.CloudletAllianceOrg, context: _Ctx
    ) -> result_pb2.Result:
        """Remove an alliance organization; an absent one is ignored."""
        if not request.organization:
            raise InvalidArgument("No alliance organization specified")

        def remove_org(txn: Txn, cloudlet: cloudlet_pb2.Cloudlet) -> None:
            for index, org in enumerate(cloudlet.alliance_orgs):
                if org == request.organization:
                    del cloudlet.alliance_orgs[index]
                    return

        await self._rt.engine.modify(CLOUDLET, request.key, remove_org)
        return result_pb2.Result()

    async def GetOrganizationsOnZone(
        self, request: cloudletkey_pb2.ZoneKey, context: _Ctx
    ) -> AsyncIterator[org_pb2.Organization]:
        """Organizations with ClusterInsts or AppInsts in the zone."""
        caches = self._rt.caches
        orgs = {i.key.organization for _, i in caches.items(APP_INST) if i.zone_key == request}
        orgs |= {c.key.organization for _, c in caches.items(CLUSTER_INST) if c.zone_key == request}
        for name in sorted(orgs):
            yield org_pb2.Organization(name=name)

    # -- keys, DNS and resources ------------------------------------------

    async def RevokeAccessKey(
        self, request: cloudletkey_pb2.CloudletKey, context: _Ctx
    ) -> result_pb2.Result:
        """Clear the CRM's public key; its pairs leave the secrets backend."""
        self._cloudlet(request)
        await revoke_crm_access_key(self._rt, request)
        return result_pb2.Result()

    async def GenerateAccessKey(
        self, request: cloudletkey_pb2.CloudletKey, context: _Ctx
    ) -> result_pb2.Result:
        """A new CRM key pair; the private PEM is in the result's message (only here)."""
        self._cloudlet(request)
        return result_pb2.Result(message=await generate_crm_access_key(self._rt, request))

    async def GetCloudletGPUDriverLicenseConfig(
        self, request: cloudletkey_pb2.CloudletKey, context: _Ctx
    ) -> result_pb2.Result:
        """The original's checks, then its answer: licence configs are now plain URLs."""
        cloudlet = self._cloudlet(request)
        if not cloudlet.gpu_config.driver.name:
            raise FailedPrecondition("Cloudlet is not associated with any GPU driver")
        if not cloudlet.license_config_storage_path:
            raise FailedPrecondition("Cloudlet license config storage path is empty")
        raise Unimplemented("Deprecated, user now manages license config URL")

    async def ChangeCloudletDNS(
        self, request: cloudletkey_pb2.CloudletKey, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Refused: needs a CRM on the edge and the DNS provider of a later issue."""
        cloudlet = self._cloudlet(request)
        if not cloudlet.crm_on_edge:
            raise FailedPrecondition(
                "unsupported - only cloudlets with crm on edge are currently supported"
            )
        for _ in ():
            yield result_pb2.Result()
        raise FailedPrecondition(
            "ChangeCloudletDNS needs a DNS provider, which this Controller is not configured with"
        )

    async def GetCloudletResourceUsage(
        self, request: cloudlet_pb2.CloudletResourceUsage, context: _Ctx
    ) -> cloudlet_pb2.CloudletResourceUsage:
        """Used against limits: the infra's report (`infra_usage`) or the Controller's own."""
        sizing = await self._sizing(request.key)
        return _usage.cloudlet_resource_usage(
            self._rt.caches, request.key, request.infra_usage, sizing
        )

    async def _sizing(self, key: cloudletkey_pb2.CloudletKey) -> SiteSizing:
        """The CCRM's sizing facts for a usage report; what is known if it cannot answer."""
        rt = self._rt
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(key))
        if cloudlet is None or not isinstance(rt, TrackedRuntime):
            return NO_SIZING
        try:
            return await sizer(rt).prepare(rt.caches, cloudlet)
        except EdgeError as err:
            log.warning("cloudlet %s: usage without fresh CCRM sizing: %s", cloudlet.key.name, err)
            return sizer(rt).cached(keys.key_string(key))

    async def ShowCloudletResourceUsage(
        self, request: cloudlet_pb2.Cloudlet, context: _Ctx
    ) -> AsyncIterator[cloudlet_pb2.CloudletResourceUsage]:
        """The Controller's accounting for every matching cloudlet, by key.

        All usages are computed before the first is sent, so one cloudlet without resource
        information fails the call as in the original, naming the cloudlet.
        """
        usages = []
        for cloudlet in self._rt.engine.show(request):
            try:
                sizing = await self._sizing(cloudlet.key)
                usages.append(
                    _usage.cloudlet_resource_usage(self._rt.caches, cloudlet.key, False, sizing)
                )
            except NotFound as err:
                raise NotFound(
                    f"failed to get cloudlet resource usage for "
                    f"{keys.key_string(cloudlet.key)}, {err.message}"
                ) from None
        for usage in sorted(usages, key=lambda u: keys.key_string(u.key)):
            yield usage

    async def ShowCloudletGPUUsage(
        self, request: cloudlet_pb2.Cloudlet, context: _Ctx
    ) -> AsyncIterator[cloudlet_pb2.CloudletGPUUsage]:
        """Per GPU model usage of the matching cloudlets that offer GPUs, by key."""
        cloudlets = sorted(self._rt.engine.show(request), key=lambda c: keys.key_string(c.key))
        for cloudlet in cloudlets:
            usage = _usage.cloudlet_gpu_usage(self._rt.caches, cloudlet)
            if usage is not None:
                yield usage

    async def FindFlavorMatch(
        self, request: cloudlet_pb2.FlavorMatch, context: _Ctx
    ) -> cloudlet_pb2.FlavorMatch:
        """The infra flavor (and GPU availability zone) a flavor maps to on the cloudlet."""
        return _usage.find_flavor_match(self._rt.caches, request.key, request.flavor_name)

    async def ShowFlavorsForZone(
        self, request: cloudletkey_pb2.ZoneKey, context: _Ctx
    ) -> AsyncIterator[flavor_pb2.FlavorKey]:
        """The flavors that map on at least one cloudlet of the zone."""
        for key in _usage.flavors_for_zone(self._rt.caches, request):
            yield key


_FEATURES: Final = registry.by_class(cloudlet_pb2.PlatformFeatures)


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    cloudlet_pb2_grpc.add_CloudletApiServicer_to_server(CloudletApi(runtime), server)
    return ["edgeproto.CloudletApi"]
