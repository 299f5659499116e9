"""The fake platforms' emulator: a fresh in-memory infrastructure and an initialised platform.

Every plugin's `tests/emulator.py` offers `emulate(platform_type, ...)`, an async context
manager yielding an object with the attributes `tests/conformance/` uses: `platform`
(initialised), `config`, `access`, `cloudlet`, `pf_config`, `progress`, `node_flavor`,
and the factories `cluster()`, `app()`, `app_inst()` and `rebuild()`. For a real cloud the
emulator starts that cloud's emulator on loopback; the fake *is* its own infrastructure, so
this one builds a private `FakeInfra` (tests never share state) and hands it out as `infra`
for fake-specific checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    resources_pb2,
)

from edge_cloud.platform import (
    LocalAccessApi,
    Platform,
    PlatformCaches,
    PlatformConfig,
    RecordedProgress,
    registry,
)
from platforms.fake import FakePlatform
from platforms.fake._infra import FakeInfra

__all__ = ["FakeEmulator", "emulate"]

NODE_FLAVOR = "x1.small"


@dataclass
class FakeEmulator:
    """One emulated fake cloudlet.

    Attributes:
        platform: The platform, initialised for `cloudlet`.
        infra: The private infrastructure behind it.
        config: Its config.
        access: Its access API.
        cloudlet: The cloudlet (not yet created on the infrastructure).
        pf_config: What create/delete cloudlet receive.
        progress: Records what the platform reported.
        node_flavor: An infrastructure flavor for cluster nodes and VM apps.
    """

    platform: FakePlatform
    infra: FakeInfra
    config: PlatformConfig
    access: LocalAccessApi
    cloudlet: cloudlet_pb2.Cloudlet
    pf_config: cloudlet_pb2.PlatformConfig
    progress: RecordedProgress
    node_flavor: str = NODE_FLAVOR

    @property
    def key(self) -> str:
        """The cloudlet key string."""
        return self.config.cloudlet_key_string

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

    def app(self, deployment: str = "kubernetes", name: str = "app1") -> app_pb2.App:
        """An App of a deployment type."""
        app = app_pb2.App(deployment=deployment)
        app.key.name, app.key.organization, app.key.version = name, "devorg", "1.0"
        return app

    def app_inst(
        self,
        app: app_pb2.App,
        cluster: clusterinst_pb2.ClusterInst | None,
        name: str = "inst1",
    ) -> appinst_pb2.AppInst:
        """An AppInst of `app` (on `cluster` unless it is a VM app)."""
        inst = appinst_pb2.AppInst(dns_label=f"{name}-devorg", state=common_pb2.READY)
        inst.key.name, inst.key.organization = name, "devorg"
        inst.app_key.CopyFrom(app.key)
        inst.cloudlet_key.CopyFrom(self.cloudlet.key)
        if cluster is not None:
            inst.cluster_key.CopyFrom(cluster.key)
        if app.deployment == "vm":
            inst.node_resources.infra_node_flavor = self.node_flavor
        return inst

    async def rebuild(self, *, env: Mapping[str, str] | None = None) -> FakePlatform:
        """A new platform object on the same infrastructure (CCRMs drop objects freely)."""
        platform = type(self.platform)(self.infra)
        config = self.config
        if env is not None:
            self.cloudlet.env_var.clear()
            self.cloudlet.env_var.update({"FAKE_STEP_DELAY": "0", **env})
            config = PlatformConfig.for_cloudlet(self.cloudlet, caches=config.caches)
            self.config = config
        await platform.init(config, self.access, self.progress)
        self.platform = platform
        return platform


@contextlib.asynccontextmanager
async def emulate(
    platform_type: str = "fake",
    *,
    env: Mapping[str, str] | None = None,
    caches: PlatformCaches | None = None,
    name: str = "emucloudlet",
) -> AsyncIterator[FakeEmulator]:
    """A fake cloudlet of one of the fake types, ready to create.

    Args:
        platform_type: `fake`, `fakesinglecluster`, `fakepubliccloud`, `fakebaremetal` or
            `fakevmpool`.
        env: Cloudlet env vars (properties); steps take no time unless `FAKE_STEP_DELAY`
            is given.
        caches: Controller objects the platform may read.
        name: The cloudlet name.

    Yields:
        The emulator, its platform initialised.
    """
    cls: type[Platform] = registry.load(platform_type)
    assert issubclass(cls, FakePlatform), f"{platform_type} is not a fake platform"
    infra = FakeInfra()
    cloudlet = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization="emuop", name=name),
        platform_type=platform_type,
        physical_name=name,
    )
    cloudlet.env_var.update({"FAKE_STEP_DELAY": "0", **(env or {})})
    config = PlatformConfig.for_cloudlet(cloudlet, caches=caches or PlatformCaches())
    access = LocalAccessApi({"APIKey": "emulated"})
    progress = RecordedProgress()
    platform = cls(infra)
    await platform.init(config, access, progress)
    pf_config = cloudlet_pb2.PlatformConfig(crm_access_private_key="emulated-key")
    yield FakeEmulator(
        platform=platform,
        infra=infra,
        config=config,
        access=access,
        cloudlet=cloudlet,
        pf_config=pf_config,
        progress=progress,
    )
