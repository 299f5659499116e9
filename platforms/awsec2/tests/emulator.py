"""The awsec2 emulator: moto in server mode behind a real, initialised `AwsEc2Platform`.

`emulate()` gives what `tests/conformance/` uses (`platform`, `cloudlet`, `pf_config`,
`progress`, `node_flavor`, `cluster()`, `app()`, `app_inst()`, `rebuild()`), on a cloudlet
with a unique name so tests sharing the session's moto never see each other's resources
(everything the plugin finds, it finds by the cloudlet's tags). On exit the cloudlet is
deleted, so nothing is left in moto. `FIXTURES` names the pytest fixtures it needs.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cloudletnode_pb2,
    clusterinst_pb2,
    common_pb2,
    resources_pb2,
)

from edge_cloud.localservers import ServerProcess
from edge_cloud.platform import LocalAccessApi, PlatformCaches, PlatformConfig, RecordedProgress
from platforms.awsec2 import AwsEc2Platform

__all__ = [
    "FIXTURES",
    "IMAGE",
    "IMAGE_OWNER",
    "NODE_FLAVOR",
    "AwsEmulator",
    "EmulatedAccess",
    "emulate",
]

FIXTURES: Final = ("moto_server",)
REGION: Final = "eu-west-3"
IMAGE: Final = "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-20170721"
"""A public AMI every moto region has, standing in for the cloudlet base image."""
IMAGE_OWNER: Final = "099720109477"
NODE_FLAVOR: Final = "c5d.large"


class EmulatedAccess(LocalAccessApi):
    """The Controller's side of the access API, in memory: node passwords and TOTP codes.

    Attributes:
        nodes: Registered cloudlet nodes by name.
        totp_requests: Secret names whose codes were asked for.
    """

    def __init__(self, access_vars: Mapping[str, str]) -> None:
        super().__init__(access_vars)
        self.nodes: dict[str, cloudletnode_pb2.CloudletNode] = {}
        self.totp_requests: list[str] = []

    async def create_cloudlet_node(self, node: cloudletnode_pb2.CloudletNode) -> str:
        self.nodes[node.key.name] = node
        return secrets.token_hex(8)

    async def delete_cloudlet_node(self, key: cloudletnode_pb2.CloudletNodeKey) -> None:
        self.nodes.pop(key.name, None)

    async def get_session_tokens(self, secret_name: str) -> str:
        self.totp_requests.append(secret_name)
        return f"{secrets.randbelow(10**6):06d}"


@dataclass
class AwsEmulator:
    """One emulated awsec2 cloudlet.

    Attributes:
        platform: The platform, initialised for `cloudlet`.
        config: Its config.
        access: Its access API.
        cloudlet: The cloudlet (not yet created).
        pf_config: What create/delete cloudlet receive.
        progress: Records what the platform reported.
        endpoint: The moto endpoint.
        region: The AWS region.
        node_flavor: An instance type for cluster nodes and VM apps.
        unsupported_deployments: App deployments this platform refuses as not supported.
    """

    platform: AwsEc2Platform
    config: PlatformConfig
    access: EmulatedAccess
    cloudlet: cloudlet_pb2.Cloudlet
    pf_config: cloudlet_pb2.PlatformConfig
    progress: RecordedProgress
    endpoint: str
    region: str
    node_flavor: str = NODE_FLAVOR
    unsupported_deployments: tuple[str, ...] = ("kubernetes", "helm", "docker")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """The value of the cloudlet's `edgecloud:cloudlet` tag."""
        return f"{self.cloudlet.key.organization}/{self.cloudlet.key.name}"

    def cluster(
        self,
        name: str = "c1",
        *,
        nodes: int = 2,
        masters: int = 1,
        deployment: str = "kubernetes",
        dedicated: bool = False,
        flavor: str = NODE_FLAVOR,
    ) -> clusterinst_pb2.ClusterInst:
        """A ClusterInst on this cloudlet, flavors resolved as the Controller would."""
        cluster = clusterinst_pb2.ClusterInst(
            deployment=deployment,
            num_masters=masters if deployment == "kubernetes" else 0,
            node_flavor=flavor,
            master_node_flavor=flavor,
            ip_access=common_pb2.IP_ACCESS_DEDICATED if dedicated else common_pb2.IP_ACCESS_SHARED,
            state=common_pb2.READY,
            fqdn=f"{name}.{self.cloudlet.key.name}.local.appdnsroot.net",
        )
        cluster.key.name, cluster.key.organization = name, "devorg"
        cluster.cloudlet_key.CopyFrom(self.cloudlet.key)
        if deployment == "kubernetes":
            cluster.node_pools.add(
                Name="cpupool",
                num_nodes=nodes,
                node_resources=resources_pb2.NodeResources(infra_node_flavor=flavor),
            )
        return cluster

    def app(self, deployment: str = "vm", name: str = "app1") -> app_pb2.App:
        """An App; VM apps boot the emulator's AMI with a little cloud-init."""
        app = app_pb2.App(deployment=deployment)
        app.key.name, app.key.organization, app.key.version = name, "devorg", "1.0"
        if deployment == "vm":
            app.image_path = IMAGE
            app.deployment_manifest = "#cloud-config\nruncmd:\n  - echo hello\n"
        return app

    def app_inst(
        self,
        app: app_pb2.App,
        cluster: clusterinst_pb2.ClusterInst | None,
        name: str = "inst1",
        ports: tuple[tuple[int, int], ...] = ((1, 443),),
    ) -> appinst_pb2.AppInst:
        """An AppInst of `app`; `ports` are (protocol, public port) pairs."""
        inst = appinst_pb2.AppInst(
            dns_label=f"{name}-devorg",
            state=common_pb2.READY,
            uri=f"{name}-devorg.{self.cloudlet.key.name}.local.appdnsroot.net",
        )
        inst.key.name, inst.key.organization = name, "devorg"
        inst.app_key.CopyFrom(app.key)
        inst.cloudlet_key.CopyFrom(self.cloudlet.key)
        if cluster is not None:
            inst.cluster_key.CopyFrom(cluster.key)
        if app.deployment == "vm":
            inst.node_resources.infra_node_flavor = self.node_flavor
            for proto, port in ports:
                inst.mapped_ports.add(proto=proto, internal_port=port, public_port=port)
        return inst

    async def rebuild(self, *, env: Mapping[str, str] | None = None) -> AwsEc2Platform:
        """A new platform object for the same cloudlet (CCRMs drop objects freely)."""
        if env is not None:
            self.cloudlet.env_var.update(env)
            self.config = PlatformConfig.for_cloudlet(
                self.cloudlet, caches=self.config.caches, process_env=self.config.process_env
            )
        platform = AwsEc2Platform()
        await platform.init(self.config, self.access, self.progress)
        self.platform = platform
        return platform


@contextlib.asynccontextmanager
async def emulate(
    platform_type: str = "awsec2",
    *,
    servers: Mapping[str, ServerProcess] | None = None,
    moto_server: ServerProcess | None = None,
    env: Mapping[str, str] | None = None,
    access_vars: Mapping[str, str] | None = None,
    name: str = "",
    region: str = REGION,
    endpoint: str = "",
) -> AsyncIterator[AwsEmulator]:
    """An awsec2 cloudlet on moto, ready to create; deleted again on exit.

    Args:
        platform_type: Only `awsec2`.
        servers: Fixture values by name (`FIXTURES`), as the conformance suite passes them.
        moto_server: The moto server (instead of `servers`).
        env: More cloudlet env vars (properties).
        access_vars: Access vars instead of dummy keys.
        name: Cloudlet name; a unique one by default.
        region: AWS region.
        endpoint: Endpoint instead of moto's own (a proxy in front of it).

    Yields:
        The emulator, its platform initialised.
    """
    assert platform_type == "awsec2", f"{platform_type} is not emulated here"
    moto = moto_server or (servers or {}).get("moto_server")
    assert moto is not None, "the awsec2 emulator needs the moto_server fixture"
    endpoint = endpoint or moto.client_url
    cloudlet = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(
            organization="emuop", name=name or f"emu-{uuid.uuid4().hex[:10]}"
        ),
        platform_type=platform_type,
        root_lb_fqdn="",
    )
    cloudlet.physical_name = cloudlet.key.name
    cloudlet.root_lb_fqdn = f"shared.{cloudlet.key.name}.local.appdnsroot.net"
    cloudlet.env_var.update(
        {
            "AWS_REGION": region,
            "AWS_ENDPOINT_URL": endpoint,
            "MEX_OS_IMAGE": IMAGE,
            "AWS_AMI_IAM_OWNER": IMAGE_OWNER,
            **(env or {}),
        }
    )
    config = PlatformConfig.for_cloudlet(cloudlet, caches=PlatformCaches())
    access = EmulatedAccess(
        access_vars
        if access_vars is not None
        else {"AWS_ACCESS_KEY_ID": "AKIAEMULATED", "AWS_SECRET_ACCESS_KEY": "emulated"}
    )
    progress = RecordedProgress()
    platform = AwsEc2Platform()
    await platform.init(config, access, progress)
    pf_config = cloudlet_pb2.PlatformConfig(
        crm_access_private_key="emulated-key", ansible_public_addr="http://127.0.0.1:48880"
    )
    emulator = AwsEmulator(
        platform=platform,
        config=config,
        access=access,
        cloudlet=cloudlet,
        pf_config=pf_config,
        progress=progress,
        endpoint=endpoint,
        region=region,
    )
    try:
        yield emulator
    finally:
        # straight to moto with plain keys: the test may have broken the endpoint or the MFA
        clean = cloudlet_pb2.Cloudlet()
        clean.CopyFrom(cloudlet)
        clean.env_var["AWS_ENDPOINT_URL"] = moto.client_url
        clean.env_var.pop("AWS_USER_ARN", None)
        cleaner = AwsEc2Platform()
        plain = EmulatedAccess({"AWS_ACCESS_KEY_ID": "AKIACLEANER", "AWS_SECRET_ACCESS_KEY": "x"})
        clean_config = PlatformConfig.for_cloudlet(clean, caches=PlatformCaches())
        await cleaner.init(clean_config, plain, RecordedProgress())
        await cleaner.delete_cloudlet(clean, pf_config, RecordedProgress())
