"""The awseks emulator: moto (AWS) and the Kubernetes API test server behind a real platform.

`emulate()` gives what `tests/conformance/` uses (`platform`, `cloudlet`, `pf_config`,
`progress`, `node_flavor`, `cluster()`, `app()`, `app_inst()`, `rebuild()`,
`unsupported_deployments`) on a cloudlet of a unique name, so tests sharing the process's
moto never see each other's resources. The clusters' Kubernetes API is a test server reached
through `EKS_API_ENDPOINT_OVERRIDE`, checking the plugin's signed tokens for the clusters this
emulator made. On exit the cloudlet is deleted, which sweeps everything tagged for it.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    resources_pb2,
)

from edge_cloud.localservers import ServerProcess
from edge_cloud.platform import LocalAccessApi, PlatformCaches, PlatformConfig, RecordedProgress
from platforms.awseks import AwsEksPlatform
from platforms.awseks.tests.support import (
    CREDS,
    REGION,
    TEST_FLAVORS,
    api_token_checker,
    moto_url,
)
from tests.support.k8sapi import KubeApiServer

__all__ = ["FIXTURES", "NODE_FLAVOR", "EksEmulator", "emulate"]

FIXTURES: Final = ("moto_server",)
NODE_FLAVOR: Final = "t3.medium"
MANIFEST: Final = """\
apiVersion: v1
kind: Service
metadata:
  name: {name}-tcp
spec:
  type: LoadBalancer
  ports:
  - name: tcp80
    protocol: TCP
    port: 80
    targetPort: 80
  selector:
    run: {name}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}-deployment
spec:
  replicas: 1
  selector:
    matchLabels:
      run: {name}
  template:
    metadata:
      labels:
        run: {name}
    spec:
      containers:
      - name: {name}
        image: docker.io/library/nginx:latest
"""


@dataclass
class EksEmulator:
    """One emulated awseks cloudlet.

    Attributes:
        platform: The platform, initialised for `cloudlet`.
        config: Its config.
        access: Its access API (the AWS keys as access vars).
        cloudlet: The cloudlet (not yet created).
        pf_config: What create/delete cloudlet receive.
        progress: Records what the platform reported.
        kube: The Kubernetes API every cluster of the cloudlet answers on.
        clusters: EKS names of the clusters made here (their tokens are accepted).
        node_flavor: An instance type for the workers.
        unsupported_deployments: App deployments refused with NotSupportedByPlatform.
    """

    platform: AwsEksPlatform
    config: PlatformConfig
    access: LocalAccessApi
    cloudlet: cloudlet_pb2.Cloudlet
    pf_config: cloudlet_pb2.PlatformConfig
    progress: RecordedProgress
    kube: KubeApiServer
    clusters: set[str] = field(default_factory=set)
    node_flavor: str = NODE_FLAVOR
    unsupported_deployments: tuple[str, ...] = ("docker", "helm")

    def cluster(self, name: str = "c1", *, nodes: int = 2) -> clusterinst_pb2.ClusterInst:
        """A kubernetes ClusterInst, its pool's flavor resolved as the Controller would."""
        cluster = clusterinst_pb2.ClusterInst(deployment="kubernetes", state=common_pb2.READY)
        cluster.key.name, cluster.key.organization = name, "devorg"
        cluster.cloudlet_key.CopyFrom(self.cloudlet.key)
        cluster.node_pools.add(
            Name="cpupool",
            num_nodes=nodes,
            node_resources=resources_pb2.NodeResources(infra_node_flavor=self.node_flavor),
        )
        self.clusters.add(self.platform.cluster_name(cluster))
        return cluster

    def app(self, deployment: str = "kubernetes", name: str = "app1") -> app_pb2.App:
        """An App; kubernetes ones carry a manifest (a Deployment and a LoadBalancer)."""
        app = app_pb2.App(deployment=deployment)
        app.key.name, app.key.organization, app.key.version = name, "devorg", "1.0"
        if deployment == "kubernetes":
            app.deployment_manifest = MANIFEST.format(name=name)
        return app

    def app_inst(
        self,
        app: app_pb2.App,
        cluster: clusterinst_pb2.ClusterInst | None,
        name: str = "inst1",
    ) -> appinst_pb2.AppInst:
        """An AppInst of `app` (on `cluster` when given)."""
        inst = appinst_pb2.AppInst(dns_label=f"{name}-devorg", state=common_pb2.READY)
        inst.key.name, inst.key.organization = name, "devorg"
        inst.uri = f"{name}-devorg.{self.cloudlet.key.name}.local.appdnsroot.net"
        inst.app_key.CopyFrom(app.key)
        inst.cloudlet_key.CopyFrom(self.cloudlet.key)
        if cluster is not None:
            inst.cluster_key.CopyFrom(cluster.key)
        return inst

    async def rebuild(self) -> AwsEksPlatform:
        """A new platform object for the same cloudlet (CCRMs drop objects freely)."""
        platform = AwsEksPlatform()
        await platform.init(self.config, self.access, self.progress)
        self.platform = platform
        return platform


@contextlib.asynccontextmanager
async def emulate(
    platform_type: str = "awseks",
    *,
    servers: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[EksEmulator]:
    """An awseks cloudlet on moto and the Kubernetes API test server; deleted on exit.

    Args:
        platform_type: `awseks`.
        servers: The `FIXTURES` by name (the session's `moto_server`).
        env: More cloudlet env vars.

    Yields:
        The emulator, its platform initialised.
    """
    assert platform_type == "awseks"
    moto: ServerProcess = servers["moto_server"]
    clusters: set[str] = set()
    secrets = {CREDS["AWS_ACCESS_KEY_ID"]: CREDS["AWS_SECRET_ACCESS_KEY"]}
    kube = KubeApiServer(token_checker=api_token_checker(moto_url(moto), clusters, secrets))
    await kube.start()
    try:
        async with _cloudlet(moto_url(moto), kube, clusters, env) as emulator:
            yield emulator
    finally:
        await kube.stop()


@contextlib.asynccontextmanager
async def _cloudlet(
    endpoint: str, kube: KubeApiServer, clusters: set[str], env: Mapping[str, str] | None
) -> AsyncIterator[EksEmulator]:
    assert kube.ca_pem is not None
    name = f"emu{uuid.uuid4().hex[:8]}"
    cloudlet = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization="emuop", name=name),
        platform_type="awseks",
        physical_name=name,
    )
    cloudlet.env_var.update(
        {
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": endpoint,
            "FLAVOR_MATCH_PATTERN": TEST_FLAVORS,
            "EKS_API_ENDPOINT_OVERRIDE": kube.url,
            "EKS_API_CA_DATA": base64.b64encode(kube.ca_pem).decode(),
            **(env or {}),
        }
    )
    config = PlatformConfig.for_cloudlet(cloudlet, caches=PlatformCaches())
    access = LocalAccessApi(CREDS)
    progress = RecordedProgress()
    platform = AwsEksPlatform()
    await platform.init(config, access, progress)
    emulator = EksEmulator(
        platform=platform,
        config=config,
        access=access,
        cloudlet=cloudlet,
        pf_config=cloudlet_pb2.PlatformConfig(),
        progress=progress,
        kube=kube,
        clusters=clusters,
    )
    try:
        yield emulator
    finally:
        await emulator.platform.delete_cloudlet(cloudlet, emulator.pf_config, RecordedProgress())
