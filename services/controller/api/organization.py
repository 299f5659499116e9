"""OrganizationApi: which objects of the region use an organization (controller.md §3.17).

The external master controller asks this before it deletes an organization. The answer is
the original's `Sync.UsesOrg`: each cached type whose generated `UsesOrg` finds the
organization, by type name in sorted order, in `Result{code: 1, message: "in use by some
App, AppInst"}`; an unused organization gets an empty `Result`. Types whose keys name no
organization (Flavor, Settings, refs, infos, alerts, ...) never count, as in the original.

Read from the caches only: it is a hint for an external workflow, not a lock, so it takes
no transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import grpc.aio
from edgeproto import (
    alertpolicy_pb2,
    app_pb2,
    appinst_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletnode_pb2,
    clusterinst_pb2,
    network_pb2,
    operatorcode_pb2,
    org_pb2,
    org_pb2_grpc,
    refs_pb2,
    restagtable_pb2,
    result_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
    vmpool_pb2,
    zone_pb2,
    zonepool_pb2,
)
from google.protobuf.message import Message

from edge_cloud.errors import InvalidArgument
from edge_cloud.objects import registry
from edge_cloud.objects.registry import ObjectType
from services.controller._runtime import Runtime

__all__ = ["ORG_USERS", "OrganizationApi", "add", "users_of"]

_Ctx = grpc.aio.ServicerContext[Any, Any]
Uses = Callable[[Any, str], bool]


def _key_org(obj: Any, org: str) -> bool:
    return bool(obj.key.organization == org)


def _app_inst(obj: appinst_pb2.AppInst, org: str) -> bool:
    return obj.key.organization == org or obj.cloudlet_key.organization == org


def _cluster_inst(obj: clusterinst_pb2.ClusterInst, org: str) -> bool:
    return (
        obj.key.organization == org
        or obj.cloudlet_key.organization == org
        or (obj.reservable and obj.reserved_by == org)
    )


def _cloudlet_key_org(obj: Any, org: str) -> bool:
    return bool(obj.key.cloudlet_key.organization == org)


def _operator_code(obj: operatorcode_pb2.OperatorCode, org: str) -> bool:
    return obj.organization == org


def _tpe(obj: trustpolicyexception_pb2.TrustPolicyException, org: str) -> bool:
    return obj.key.app_key.organization == org


def _tpe_instance(obj: trustpolicyexception_pb2.TPEInstanceState, org: str) -> bool:
    return obj.key.app_inst_key.organization == org


def _t(cls: type[Message], uses: Uses) -> tuple[ObjectType[Any], Uses]:
    return registry.by_class(cls), uses


ORG_USERS: Final[tuple[tuple[ObjectType[Any], Uses], ...]] = tuple(
    sorted(
        (
            _t(alertpolicy_pb2.AlertPolicy, _key_org),
            _t(app_pb2.App, _key_org),
            _t(appinst_pb2.AppInst, _app_inst),
            _t(autoprovpolicy_pb2.AutoProvPolicy, _key_org),
            _t(autoscalepolicy_pb2.AutoScalePolicy, _key_org),
            _t(cloudlet_pb2.Cloudlet, _key_org),
            _t(refs_pb2.CloudletIPs, _key_org),
            _t(cloudletnode_pb2.CloudletNode, _cloudlet_key_org),
            _t(clusterinst_pb2.ClusterInst, _cluster_inst),
            _t(cloudlet_pb2.GPUDriver, _key_org),
            _t(network_pb2.Network, _cloudlet_key_org),
            _t(operatorcode_pb2.OperatorCode, _operator_code),
            _t(restagtable_pb2.ResTagTable, _key_org),
            _t(trustpolicyexception_pb2.TPEInstanceState, _tpe_instance),
            _t(trustpolicy_pb2.TrustPolicy, _key_org),
            _t(trustpolicyexception_pb2.TrustPolicyException, _tpe),
            _t(vmpool_pb2.VMPool, _key_org),
            _t(zone_pb2.Zone, _key_org),
            _t(zonepool_pb2.ZonePool, _key_org),
        ),
        key=lambda pair: pair[0].name,
    )
)
"""The types the original's `UsesOrg` can find an organization in, with how it looks."""


def users_of(runtime: Runtime, org: str) -> list[str]:
    """The names of the types with at least one cached object using `org`, sorted."""
    caches = runtime.caches
    return [
        otype.name
        for otype, uses in ORG_USERS
        if any(uses(obj, org) for _, obj in caches.items(otype))
    ]


class OrganizationApi(org_pb2_grpc.OrganizationApiServicer):
    """OrganizationInUse, for the external master controller."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def OrganizationInUse(
        self, request: org_pb2.Organization, context: _Ctx
    ) -> result_pb2.Result:
        """`Result{code: 1, message: "in use by some <Type>, ..."}`, or empty when unused.

        Raises:
            InvalidArgument: No organization name (every object without one would match).
        """
        if not request.name:
            raise InvalidArgument("Organization name must be specified")
        used_by = users_of(self._rt, request.name)
        if not used_by:
            return result_pb2.Result()
        return result_pb2.Result(message="in use by some " + ", ".join(used_by), code=1)


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    org_pb2_grpc.add_OrganizationApiServicer_to_server(OrganizationApi(runtime), server)
    return ["edgeproto.OrganizationApi"]
