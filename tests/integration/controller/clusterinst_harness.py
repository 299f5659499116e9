"""A CCRM test server for ClusterInst/AppInst work, plus object helpers for those tests.

`InstCcrm` extends the cloudlet `FakeCcrm` with `ClusterPlatformAPI.ApplyClusterInst` and
`AppInstPlatformAPI.ApplyAppInst`: each streams an in-progress Info with a status line, then
the target state (Ready / NotPresent), or fails with a gRPC error when told to.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from edgeproto import (
    app_pb2,
    app_pb2_grpc,
    appinst_pb2,
    appinst_pb2_grpc,
    ccrm_pb2,
    ccrm_pb2_grpc,
    cloudlet_pb2,
    cluster_pb2,
    clusterinst_pb2,
    clusterinst_pb2_grpc,
    common_pb2,
    flavor_pb2,
    flavor_pb2_grpc,
    infraresources_pb2,
    refs_pb2,
    result_pb2,
)

from edge_cloud.objects import keys, registry
from services.controller._engine import Txn
from tests.integration.controller.cloudlet_harness import (
    Controller,
    ControllerHarness,
    FakeCcrm,
    collect,
    features,
    new_cloudlet,
    put_features,
)

CLOUDLET_INFO = registry.by_class(cloudlet_pb2.CloudletInfo)
CLOUDLET_REFS = registry.by_class(refs_pb2.CloudletRefs)
CLUSTER_INST = registry.by_class(clusterinst_pb2.ClusterInst)
APP_INST = registry.by_class(appinst_pb2.AppInst)


@dataclass
class InstCcrm(
    FakeCcrm,
    ccrm_pb2_grpc.ClusterPlatformAPIServicer,
    ccrm_pb2_grpc.AppInstPlatformAPIServicer,
):
    """A CCRM for cloudlets, clusters and app instances.

    Attributes:
        fail_cluster_create: Fail cluster creates with this message.
        fail_app_create: Fail AppInst creates with this message.
        fail_app_delete: Fail AppInst deletes with this message.
        cluster_requests: Every ApplyClusterInst request.
        app_requests: Every ApplyAppInst request.
    """

    fail_cluster_create: str = ""
    fail_app_create: str = ""
    fail_app_delete: str = ""
    cluster_requests: list[clusterinst_pb2.ClusterInst] = field(default_factory=list)
    app_requests: list[appinst_pb2.AppInst] = field(default_factory=list)

    async def ApplyClusterInst(
        self,
        request: clusterinst_pb2.ClusterInst,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[clusterinst_pb2.ClusterInstInfo]:
        self.cluster_requests.append(request)
        info = clusterinst_pb2.ClusterInstInfo(key=request.key)
        if request.state == common_pb2.CREATE_REQUESTED:
            info.state = common_pb2.CREATING
            info.status.msgs.append("Creating cluster")
            yield info
            if self.fail_cluster_create:
                failed = clusterinst_pb2.ClusterInstInfo(
                    key=request.key,
                    state=common_pb2.CREATE_ERROR,
                    errors=[self.fail_cluster_create],
                )
                yield failed
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.fail_cluster_create)
            yield clusterinst_pb2.ClusterInstInfo(key=request.key, state=common_pb2.READY)
        elif request.state == common_pb2.DELETE_REQUESTED:
            info.state = common_pb2.DELETING
            info.status.msgs.append("Deleting cluster")
            yield info
            yield clusterinst_pb2.ClusterInstInfo(key=request.key, state=common_pb2.DELETE_DONE)
        else:
            info.state = common_pb2.UPDATING
            info.status.msgs.append("Updating cluster")
            yield info
            yield clusterinst_pb2.ClusterInstInfo(key=request.key, state=common_pb2.READY)

    async def ApplyAppInst(
        self, request: appinst_pb2.AppInst, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[appinst_pb2.AppInstInfo]:
        self.app_requests.append(request)
        info = appinst_pb2.AppInstInfo(key=request.key)
        if request.state == common_pb2.CREATE_REQUESTED:
            info.state = common_pb2.CREATING
            info.status.msgs.append("Creating app instance")
            yield info
            if self.fail_app_create:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.fail_app_create)
            yield appinst_pb2.AppInstInfo(key=request.key, state=common_pb2.READY)
        elif request.state == common_pb2.DELETE_REQUESTED:
            info.state = common_pb2.DELETING
            info.status.msgs.append("Deleting app instance")
            yield info
            if self.fail_app_delete:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.fail_app_delete)
            yield appinst_pb2.AppInstInfo(key=request.key, state=common_pb2.DELETE_DONE)
        else:
            yield appinst_pb2.AppInstInfo(key=request.key, state=common_pb2.READY)

    async def GetClusterCredentials(
        self,
        request: clusterinst_pb2.ClusterCredentialsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> result_pb2.Result:
        return result_pb2.Result(message=f"kubeconfig of {request.key.name}")

    async def GetClusterAdditionalResources(
        self,
        request: ccrm_pb2.ClusterResourcesReq,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> ccrm_pb2.InfraResourceMap:
        return ccrm_pb2.InfraResourceMap()  # a platform without counters of its own


@contextlib.asynccontextmanager
async def inst_ccrm_server(ccrm: InstCcrm) -> AsyncIterator[str]:
    """Serve `ccrm` (all three platform APIs) on loopback; yields its address."""
    server = grpc.aio.server()
    ccrm_pb2_grpc.add_CloudletPlatformAPIServicer_to_server(ccrm, server)
    ccrm_pb2_grpc.add_ClusterPlatformAPIServicer_to_server(ccrm, server)
    ccrm_pb2_grpc.add_AppInstPlatformAPIServicer_to_server(ccrm, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@pytest.fixture
async def ccrm(harness: ControllerHarness) -> AsyncIterator[InstCcrm]:
    """An `InstCcrm` served on loopback, wired in as the CCRM (import it with `harness`)."""
    fake = InstCcrm()
    async with inst_ccrm_server(fake) as addr:
        harness.ccrm_addr = addr
        yield fake


async def edit(ctl: Controller, otype: Any, key: Any, change: Callable[[Any], None]) -> None:
    """Change a stored object in one transaction (as a CRM report or operator edit would)."""

    def fn(txn: Txn) -> None:
        found = txn.get(otype, key)
        assert found is not None
        change(found)
        txn.put(found)

    await ctl.engine.apply(fn)


# --- stubs and objects ---------------------------------------------------------------------


def clusters(ctl: Controller) -> clusterinst_pb2_grpc.ClusterInstApiStub:
    return clusterinst_pb2_grpc.ClusterInstApiStub(ctl.channel)


def app_insts(ctl: Controller) -> appinst_pb2_grpc.AppInstApiStub:
    return appinst_pb2_grpc.AppInstApiStub(ctl.channel)


async def ready_cloudlet(
    ctl: Controller,
    org: str,
    name: str = "c1",
    *,
    max_vcpus: int = 0,
    max_ram: int = 0,
    **values: Any,
) -> cloudlet_pb2.Cloudlet:
    """A Ready CCRM-managed cloudlet; optional infra maxima in its CloudletInfo snapshot."""
    if ctl.sync.caches.get(registry.by_class(cloudlet_pb2.PlatformFeatures), "fakeccrm") is None:
        await put_features(ctl, features())
    cloudlet = new_cloudlet(org, name, **values)
    _, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None, err

    def fn(txn: Txn) -> None:
        info = txn.get(CLOUDLET_INFO, cloudlet.key)
        assert info is not None
        info.flavors.extend(
            [
                cloudlet_pb2.FlavorInfo(name="m1.large", vcpus=4, ram=8192, disk=80),
                cloudlet_pb2.FlavorInfo(name="m1.xlarge", vcpus=16, ram=32768, disk=100),
            ]
        )
        if max_vcpus:
            info.resources_snapshot.info.append(
                infraresources_pb2.InfraResource(name="vCPUs", infra_max_value=max_vcpus)
            )
        if max_ram:
            info.resources_snapshot.info.append(
                infraresources_pb2.InfraResource(name="RAM", infra_max_value=max_ram, units="MB")
            )
        txn.put(info)

    await ctl.engine.apply(fn)
    return cloudlet


async def put_flavor(ctl: Controller, name: str = "x1.small", vcpus: int = 2) -> None:
    await flavor_pb2_grpc.FlavorApiStub(ctl.channel).CreateFlavor(
        flavor_pb2.Flavor(
            key=flavor_pb2.FlavorKey(name=name), ram=512 * vcpus, vcpus=vcpus, disk=10
        ),
        timeout=10,
    )


async def create_app(ctl: Controller, org: str, name: str = "app1", **kw: Any) -> app_pb2.App:
    base: dict[str, Any] = {
        "key": app_pb2.AppKey(organization=org, name=name, version="1.0"),
        "image_type": app_pb2.IMAGE_TYPE_DOCKER,
        "deployment": "docker",
        "image_path": f"registry.example.com/{org}/{name}:1.0",
        "access_ports": "tcp:80",
        "default_flavor": flavor_pb2.FlavorKey(name="x1.small"),
    }
    base.update(kw)
    app = app_pb2.App(**base)
    await app_pb2_grpc.AppApiStub(ctl.channel).CreateApp(app, timeout=10)
    return app


def cluster_key(org: str, name: str = "cl1") -> cluster_pb2.ClusterKey:
    return cluster_pb2.ClusterKey(name=name, organization=org)


def new_cluster(
    org: str, cloudlet: cloudlet_pb2.Cloudlet, name: str = "cl1", **kw: Any
) -> clusterinst_pb2.ClusterInst:
    base: dict[str, Any] = {
        "key": cluster_key(org, name),
        "cloudlet_key": cloudlet.key,
        "flavor": flavor_pb2.FlavorKey(name="x1.small"),
        "deployment": "docker",
    }
    base.update(kw)
    return clusterinst_pb2.ClusterInst(**base)


def new_app_inst(
    org: str,
    app: app_pb2.App,
    name: str = "ai1",
    cluster: cluster_pb2.ClusterKey | None = None,
    **kw: Any,
) -> appinst_pb2.AppInst:
    inst = appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(name=name, organization=org), app_key=app.key, **kw
    )
    if cluster is not None:
        inst.cluster_key.CopyFrom(cluster)
    return inst


def refs_of(ctl: Controller, cloudlet: cloudlet_pb2.Cloudlet) -> Any:
    return ctl.sync.caches.get(CLOUDLET_REFS, keys.key_string(cloudlet.key))
