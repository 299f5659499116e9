"""awseks end to end: etcd, Redis, the Controller and the CCRM as processes, the CCRM hosting
the EKS plugin against moto (AWS) and the Kubernetes API test server (the clusters' API).

moto makes EKS clusters but no Kubernetes API, so the cloudlet points
`EKS_API_ENDPOINT_OVERRIDE` / `EKS_API_CA_DATA` at the test server, as an operator points
them at a tunnel; the server checks the plugin's real `k8s-aws-v1` tokens. The AWS keys are
the cloudlet's access vars, kept by the Controller in the local secrets backend and read by
the CCRM's AccessApi (the CCRM's own environment has none).
"""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
)

from edge_cloud.localservers import ServerProcess
from edge_cloud.secrets import generate_key
from platforms.awseks.tests.support import (
    CREDS,
    REGION,
    TEST_FLAVORS,
    api_token_checker,
    client,
    leftovers,
    nothing,
)
from tests.e2e.support import ControllerApi, Platform, ok
from tests.support.k8sapi import KubeApiServer

TS = common_pb2
FLAVOR = "x1.small"
DEV = "eksdev"
TIMEOUT = 90.0
CLUSTER = "web"
EKS_NAME = f"{CLUSTER}-{DEV}"  # what the plugin names the EKS cluster

pytestmark = pytest.mark.timeout(240)


class ThreadedKubeApi:
    """The Kubernetes API test server on an event loop of its own thread, for sync tests."""

    def __init__(self, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server = KubeApiServer(**kwargs)
        self._run(self.server.start())

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(30)

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self._run(self._read(plural, namespace))  # type: ignore[no-any-return]

    async def _read(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        return self.server.objects(plural, namespace)

    def stop(self) -> None:
        try:
            self._run(self.server.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


@dataclass
class World(ControllerApi):
    moto: ServerProcess
    kube: ThreadedKubeApi


@pytest.fixture(scope="module")
def world(
    etcd_server: ServerProcess,
    redis_server: ServerProcess,
    moto_server: ServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    # the session's moto (shared with the plugin and conformance tests, same region, so its
    # EC2 catalogue is loaded once); the cloudlet's tag keeps what this module makes apart
    moto = moto_server
    # moto loads its EC2 catalogue for a region on the first call (seconds, a minute on a
    # busy machine); pay that here rather than inside the CreateCloudlet deadline
    client(moto, "ec2").describe_instance_type_offerings(LocationType="region")
    kube: ThreadedKubeApi | None = None
    platform: Platform | None = None
    try:
        kube = ThreadedKubeApi(
            token_checker=api_token_checker(
                moto.client_url,
                EKS_NAME,
                {CREDS["AWS_ACCESS_KEY_ID"]: CREDS["AWS_SECRET_ACCESS_KEY"]},
            )
        )
        platform = Platform(
            etcd_server.client_url, redis_server.client_url, tmp_path_factory.mktemp("platform")
        )
        # the cloudlet's AWS keys go Controller → local secrets backend → CCRM's AccessApi
        key = generate_key()
        platform.ccrm.env = {k: v for k, v in platform.ccrm.env.items() if not k.startswith("AWS_")}
        platform.controller.args += ["--secrets-key", key]
        platform.ccrm.args += [
            "--platforms", "awseks",
            "--secrets-key", key,
            "--etcd-urls", etcd_server.client_url,
            "--etcd-namespace", platform.namespace,
        ]  # fmt: skip
        platform.start()
        with grpc.insecure_channel(platform.api_addr) as channel:
            stubs = World(platform, channel, moto, kube)
            stubs.registered("awseks", 30)
            stubs.create_flavor(FLAVOR, disk=20)
            yield stubs
    finally:
        if platform is not None:
            platform.stop()
        if kube is not None:
            kube.stop()


def eks_cloudlet(world: World) -> cloudlet_pb2.Cloudlet:
    ca = world.kube.server.ca_pem
    assert ca is not None
    key = cloudletkey_pb2.CloudletKey(organization="awsop", name=f"syd{uuid.uuid4().hex[:6]}")
    cloudlet = cloudlet_pb2.Cloudlet(
        key=key,
        platform_type="awseks",
        location=loc_pb2.Loc(latitude=-33.87, longitude=151.21),
        num_dynamic_ips=10,
    )
    cloudlet.access_vars.update(CREDS)
    cloudlet.env_var.update(
        {
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": world.moto.client_url,
            "FLAVOR_MATCH_PATTERN": TEST_FLAVORS,
            "EKS_API_ENDPOINT_OVERRIDE": world.kube.server.url,
            "EKS_API_CA_DATA": base64.b64encode(ca).decode(),
        }
    )
    return cloudlet


def test_cloudlet_cluster_and_app_on_eks_leave_nothing_behind(world: World) -> None:
    cloudlet = eks_cloudlet(world)
    messages = ok(world.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT))
    assert "Verifying AWS credentials" in messages, messages
    assert messages[-1] == "Created Cloudlet successfully", messages
    [info] = world.infos.ShowCloudletInfo(cloudlet_pb2.CloudletInfo(key=cloudlet.key), timeout=5)
    assert info.state == appcommon_pb2.CLOUDLET_STATE_READY
    assert "t3.medium" in {f.name for f in info.flavors}
    tag = f"{cloudlet.key.organization}/{cloudlet.key.name}"

    cluster = clusterinst_pb2.ClusterInst(
        deployment="kubernetes", flavor=flavor_pb2.FlavorKey(name=FLAVOR), num_nodes=2
    )
    cluster.key.name, cluster.key.organization = CLUSTER, DEV
    cluster.cloudlet_key.CopyFrom(cloudlet.key)
    messages = ok(world.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
    assert "Creating EKS cluster" in messages, messages
    assert messages[-1] == "Created ClusterInst successfully", messages
    [stored] = world.clusters.ShowClusterInst(clusterinst_pb2.ClusterInst(key=cluster.key))
    assert stored.state == TS.READY
    found = leftovers(world.moto, tag)
    assert found["clusters"] == [EKS_NAME]
    assert len(found["roles"]) == 2

    app = app_pb2.App(
        deployment="kubernetes",
        image_type=app_pb2.IMAGE_TYPE_DOCKER,
        image_path="docker.io/library/nginx:latest",
        access_ports="tcp:80",
        default_flavor=flavor_pb2.FlavorKey(name=FLAVOR),
    )
    app.key.organization, app.key.name, app.key.version = DEV, "web", "1.0"
    world.apps.CreateApp(app, timeout=10)
    inst = appinst_pb2.AppInst(
        app_key=app.key, cluster_key=cluster.key, cloudlet_key=cluster.cloudlet_key
    )
    inst.key.name, inst.key.organization = "web1", DEV
    messages = ok(world.app_insts.CreateAppInst(inst, timeout=TIMEOUT))
    assert "Applying Kubernetes manifest" in messages, messages
    assert messages[-1] == "Created AppInst successfully", messages
    [stored_inst] = world.app_insts.ShowAppInst(appinst_pb2.AppInst(key=inst.key), timeout=5)
    assert stored_inst.state == TS.READY
    assert stored_inst.uri.startswith("web1-eksdev."), stored_inst.uri
    namespace = "web1-eksdev"
    [deployment] = world.kube.objects("deployments", namespace)
    assert deployment["status"]["readyReplicas"] >= 1
    [service] = world.kube.objects("services", namespace)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["status"]["loadBalancer"]["ingress"]
    pods = {p["metadata"]["name"] for p in world.kube.objects("pods", namespace)}
    assert set(stored_inst.runtime_info.container_ids) == pods

    messages = ok(world.app_insts.DeleteAppInst(inst, timeout=TIMEOUT))
    assert messages[-1] == "Deleted AppInst successfully", messages
    assert namespace not in {n["metadata"]["name"] for n in world.kube.objects("namespaces")}
    world.apps.DeleteApp(app, timeout=10)

    messages = ok(world.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
    assert messages[-1] == "Deleted ClusterInst successfully", messages
    assert nothing(leftovers(world.moto, tag)), leftovers(world.moto, tag)
    ok(world.cloudlets.DeleteCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=TIMEOUT))
    assert list(world.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key))) == []
    assert nothing(leftovers(world.moto, tag))
