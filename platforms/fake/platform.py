"""The fake platforms: an in-memory infrastructure simulation behind the real interface.

`FakePlatform` is product code, not a test double: local demos (`make run`), the CCRM's
end-to-end tests and the Controller's work all run on it. It keeps an honest inventory in
`FakeInfra` (VMs with flavors, clusters, app instances), consumes capacity on create and
frees it on delete, refuses what does not fit, reports flavors and resource snapshots, and
streams the original fake's progress messages. Operations are idempotent and clean up
after a failure, a timeout or a cancellation. Properties (cloudlet env vars) control
capacity, flavors, step time, failures and pauses: see README.md.

Variants differ in features (crm_platforms.md §12.2): `FakeSingleClusterPlatform`,
`FakePublicCloudPlatform` (no platform VMs), `FakeBareMetalPlatform`, `FakeVMPoolPlatform`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, Final

from edgeproto import (
    app_pb2,
    appinst_pb2,
    baremetalhost_pb2,
    cloudlet_pb2,
    cluster_pb2,
    clusterinst_pb2,
    common_pb2,
    exec_pb2,
    flavor_pb2,
    infraresources_pb2,
    metric_pb2,
    refs_pb2,
    resources_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
    vmpool_pb2,
)
from typing_extensions import override

from edge_cloud.errors import FailedPrecondition
from edge_cloud.objects import keys
from edge_cloud.platform import (
    DEFAULT_NODE_POOL,
    RESOURCE_INSTANCES,
    RESOURCE_METRIC_INSTANCES,
    AccessApi,
    CommandClient,
    Deployment,
    NodeType,
    Platform,
    PlatformConfig,
    PlatformFeatures,
    PlatformPermanentError,
    PlatformTransientError,
    Progress,
)
from platforms.fake._infra import FakeInfra, Record, Site
from platforms.fake._props import FAKE_FEATURES, Settings, parse_settings

__all__ = [
    "FakeBareMetalPlatform",
    "FakePlatform",
    "FakePublicCloudPlatform",
    "FakeSingleClusterPlatform",
    "FakeVMPoolPlatform",
]

log = logging.getLogger(__name__)

COMPATIBILITY_VERSION: Final = "fake-1.0"
PLATFORM_OWNER: Final = "platform"
# Tracked states in which a ClusterInst or AppInst has infrastructure behind it
_BUILT_STATES: Final = frozenset(
    {
        common_pb2.READY,
        common_pb2.UPDATE_REQUESTED,
        common_pb2.UPDATING,
        common_pb2.UPDATE_ERROR,
        common_pb2.DELETE_REQUESTED,
        common_pb2.DELETING,
        common_pb2.DELETE_ERROR,
        common_pb2.DELETE_PREPARE,
    }
)
_CREATED_CLOUDLET_STATES: Final = _BUILT_STATES | {common_pb2.CRM_INITOK}


class FakeCommandClient:
    """A command client that runs nothing: it records commands and answers canned output.

    Attributes:
        commands: Every command asked for, in order.
    """

    def __init__(self) -> None:
        self.commands: list[str] = []

    async def output(self, command: str) -> str:
        """Record the command; `fakecmd` answers "ran some debug", anything else nothing."""
        self.commands.append(command)
        return "ran some debug" if command.strip() == "fakecmd" else ""


def _deployment(value: str) -> Deployment:
    try:
        return Deployment.of(value)
    except ValueError:
        raise PlatformPermanentError(f"unknown deployment type {value!r}") from None


def _suffix(key: cluster_pb2.ClusterKey) -> str:
    text = f"{key.name}-{key.organization}".lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in text)


class FakePlatform(Platform):
    """The `fake` platform: everything in memory, with resource accounting.

    Args:
        infra: The simulated infrastructure; the process-wide one by default.
    """

    features: ClassVar[PlatformFeatures] = FAKE_FEATURES
    simulate_public_cloud: ClassVar[bool] = False
    """No platform VMs: a public cloud's control plane is the provider's."""

    def __init__(self, infra: FakeInfra | None = None) -> None:
        self._infra = infra if infra is not None else FakeInfra.shared()
        self._config: PlatformConfig | None = None
        self._settings: Settings | None = None

    # -- helpers -------------------------------------------------------------------------------

    @property
    def infra(self) -> FakeInfra:
        """The simulated infrastructure this platform talks to."""
        return self._infra

    @property
    def config(self) -> PlatformConfig:
        """The config given to `init`.

        Raises:
            FailedPrecondition: `init` has not run.
        """
        if self._config is None:
            raise FailedPrecondition(f"{self.features.platform_type} platform used before init")
        return self._config

    @property
    def settings(self) -> Settings:
        """Settings read from the properties at `init` (defaults before)."""
        if self._settings is None:
            self._settings = parse_settings({})
        return self._settings

    @property
    def key(self) -> str:
        """The cloudlet key string."""
        return self.config.cloudlet_key_string

    async def _step(self, op: str, step: int) -> None:
        await self._infra.checkpoint(self.key, op, step, self.settings.step_delay)

    def _site(self) -> Site | None:
        return self._infra.sites.get(self.key)

    def _require_site(self) -> Site:
        site = self._site()
        if site is None:
            raise PlatformPermanentError(
                f"fake cloudlet {self.key} does not exist on the infrastructure; create it first"
            )
        return site

    def _new_site(self) -> Site:
        site = Site(self.key, self.settings.limits, self.settings.flavors)
        if not self.simulate_public_cloud:
            lb = self._root_lb_flavor_info().name
            site.add_vm("fake-platform-vm", NodeType.PLATFORM_VM, lb, PLATFORM_OWNER)
            site.add_vm(
                "fake-rootlb-vm", NodeType.DEDICATED_ROOT_LB, lb, PLATFORM_OWNER, external=True
            )
        return site

    def _root_lb_flavor_info(self) -> cloudlet_pb2.FlavorInfo:
        flavors = self.settings.flavors
        return flavors[1] if len(flavors) > 1 else flavors[0]

    # -- identity and initialisation ---------------------------------------------------------

    @override
    async def init(self, config: PlatformConfig, access: AccessApi, progress: Progress) -> None:
        settings = parse_settings(config.resolve_properties(self.features.properties))
        self._config, self._settings = config, settings
        controls = self._infra.controls(self.key)
        controls.env_faults = dict(settings.faults)
        controls.env_pauses = set(settings.pauses)
        progress.task("Done initializing fake platform")
        await self._step("init", 1)
        site = self._site()
        if site is not None:
            site.limits = settings.limits  # properties may have changed
            site.flavors = {f.name: f for f in settings.flavors}
            return
        cloudlet = config.caches.cloudlets.get(self.key)
        if cloudlet is not None and cloudlet.state in _CREATED_CLOUDLET_STATES:
            # the infrastructure outlived our memory (a restart): rebuild it from the
            # Controller's objects, as the original's InitHAConditional recount does
            site = self._new_site()
            self._adopt(site)
            self._infra.sites[self.key] = site
            log.info("fake infrastructure of %s rebuilt from the Controller's objects", self.key)

    @override
    async def init_ha_conditional(self, progress: Progress) -> None:
        site = self._site()
        if site is None:
            site = self._new_site()
            self._infra.sites[self.key] = site
        self._adopt(site)

    def _adopt(self, site: Site) -> None:
        """Add VMs for the Controller's clusters and VM instances the site does not know."""
        caches = self.config.caches
        for key, cluster in caches.cluster_insts.items():
            if (
                cluster.cloudlet_key != self.config.cloudlet_key
                or cluster.state not in _BUILT_STATES
                or key in site.clusters
            ):
                continue
            try:
                self._build_cluster(site, cluster, force=True)
            except PlatformPermanentError as err:
                log.warning("cannot adopt cluster %s on %s: %s", key, self.key, err)
        for key, inst in caches.app_insts.items():
            if (
                inst.cloudlet_key != self.config.cloudlet_key
                or inst.state not in _BUILT_STATES
                or key in site.app_insts
            ):
                continue
            app = caches.apps.get(keys.key_string(inst.app_key))
            if app is None or app.deployment != Deployment.VM:
                continue
            record = Record(key, "ready", detail={"deployment": str(Deployment.VM)})
            try:
                self._add_app_vm(site, inst, record, force=True)
            except PlatformPermanentError as err:
                log.warning("cannot adopt app instance %s on %s: %s", key, self.key, err)
                continue
            site.app_insts[key] = record

    @override
    def compatibility_version(self) -> str:
        return COMPATIBILITY_VERSION

    # -- cloudlet ------------------------------------------------------------------------------

    @override
    async def create_cloudlet(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        pf_config: cloudlet_pb2.PlatformConfig,
        flavor: flavor_pb2.Flavor,
        progress: Progress,
    ) -> None:
        if cloudlet.infra_api_access == cloudlet_pb2.RESTRICTED_ACCESS:
            return  # the operator brings it up by hand (GetCloudletManifest)
        progress.task("Creating Cloudlet")
        await self._step("create_cloudlet", 1)
        created = self._site() is None
        if created:
            self._infra.sites[self.key] = self._new_site()
        try:
            progress.task("Starting CRMServer")
            await self._step("create_cloudlet", 2)
        except BaseException:
            if created:
                self._infra.sites.pop(self.key, None)
            raise

    @override
    async def update_cloudlet(self, cloudlet: cloudlet_pb2.Cloudlet, progress: Progress) -> None:
        for name, value in sorted(cloudlet.env_var.items()):
            progress.task(f"Updating envvar, {name}={value}")
        await self._step("update_cloudlet", 1)

    @override
    async def delete_cloudlet(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        pf_config: cloudlet_pb2.PlatformConfig,
        progress: Progress,
    ) -> None:
        progress.task("Deleting Cloudlet")
        await self._step("delete_cloudlet", 1)
        self._infra.sites.pop(self.key, None)
        progress.task("Stopping CRMServer")
        await self._step("delete_cloudlet", 2)

    @override
    async def change_cloudlet_dns(
        self, cloudlet: cloudlet_pb2.Cloudlet, old_fqdn: str, progress: Progress
    ) -> None:
        return

    @override
    async def gather_cloudlet_info(self) -> cloudlet_pb2.CloudletInfo:
        limits = self.settings.limits
        info = cloudlet_pb2.CloudletInfo(
            os_max_ram=limits.ram, os_max_vcores=limits.vcpus, os_max_vol_gb=limits.disk
        )
        if self._config is not None:
            info.key.CopyFrom(self.config.cloudlet_key)
        info.flavors.extend(self.settings.flavors)
        return info

    @override
    async def get_cloudlet_infra_resources(self) -> infraresources_pb2.InfraResourcesSnapshot:
        override_ = self._infra.controls(self.key).snapshot_override
        if override_ is not None:
            return override_
        site = self._site()
        if site is None:  # not created (or restricted access): capacity, nothing used
            site = Site(self.key, self.settings.limits, self.settings.flavors)
        return site.snapshot()

    @override
    async def get_root_lb_flavor(self) -> flavor_pb2.Flavor:
        lb = self._root_lb_flavor_info()
        return flavor_pb2.Flavor(
            key=flavor_pb2.FlavorKey(name=lb.name), vcpus=lb.vcpus, ram=lb.ram, disk=lb.disk
        )

    @override
    async def get_cloudlet_manifest(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        pf_config: cloudlet_pb2.PlatformConfig,
        flavor: flavor_pb2.Flavor,
    ) -> str:
        return "fake manifest\n" + pf_config.crm_access_private_key

    @override
    async def get_restricted_cloudlet_status(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        pf_config: cloudlet_pb2.PlatformConfig,
        progress: Progress,
    ) -> None:
        progress.task("Setting up cloudlet")

    @override
    def get_cluster_additional_resources(
        self, cloudlet: cloudlet_pb2.Cloudlet, vm_resources: Sequence[refs_pb2.VMResource]
    ) -> dict[str, infraresources_pb2.InfraResource]:
        count = sum(r.count for r in vm_resources)
        return {
            RESOURCE_INSTANCES: infraresources_pb2.InfraResource(
                name=RESOURCE_INSTANCES, value=count
            )
        }

    @override
    def get_cluster_additional_resource_metric(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        metric: metric_pb2.Metric,
        vm_resources: Sequence[refs_pb2.VMResource],
    ) -> None:
        metric.vals.add(name=RESOURCE_METRIC_INSTANCES, ival=sum(r.count for r in vm_resources))

    @override
    async def update_trust_policy(self, policy: trustpolicy_pb2.TrustPolicy | None) -> None:
        self._require_site().trust_policy = policy.key.name if policy is not None else ""

    @override
    async def update_trust_policy_exception(
        self,
        tpe: trustpolicyexception_pb2.TrustPolicyException,
        cluster_key: cluster_pb2.ClusterKey,
    ) -> None:
        entry = (keys.key_string(tpe.key), keys.key_string(cluster_key))
        self._require_site().trust_policy_exceptions.add(entry)
        # logged so that tests and operators of a CCRM process can see what is open
        log.info("trust policy exception %s opened on cluster %s", *entry)

    @override
    async def delete_trust_policy_exception(
        self,
        tpe_key: trustpolicyexception_pb2.TrustPolicyExceptionKey,
        cluster_key: cluster_pb2.ClusterKey,
    ) -> None:
        entry = (keys.key_string(tpe_key), keys.key_string(cluster_key))
        self._require_site().trust_policy_exceptions.discard(entry)
        log.info("trust policy exception %s closed on cluster %s", *entry)

    def _managed_clusters(self) -> list[cloudlet_pb2.CloudletManagedCluster]:
        if not self.settings.load_managed_clusters:
            return []
        cluster = cloudlet_pb2.CloudletManagedCluster(
            key=cloudlet_pb2.CloudletManagedClusterKey(name="fake-managed", id="fake-managed-1"),
            kubernetes_version="1.31",
            state="ready",
        )
        cluster.cloudlet_key.CopyFrom(self.config.cloudlet_key)
        return [cluster]

    @override
    async def get_cloudlet_managed_clusters(self) -> list[cloudlet_pb2.CloudletManagedCluster]:
        return self._managed_clusters()

    @override
    async def get_cloudlet_managed_cluster_info(
        self, cluster: clusterinst_pb2.ClusterInst
    ) -> clusterinst_pb2.CloudletManagedClusterInfo:
        for managed in self._managed_clusters():
            if managed.key.id == cluster.cloudlet_managed_cluster_id or (
                managed.key.name == cluster.cloudlet_managed_cluster_name
            ):
                info = clusterinst_pb2.CloudletManagedClusterInfo(kubernetes_version="1.31")
                info.node_pools.add(
                    Name="cpupool",
                    num_nodes=2,
                    node_resources=resources_pb2.NodeResources(vcpus=2, ram=4096, disk=20),
                )
                return info
        raise PlatformPermanentError("cloudlet managed cluster not found")

    @override
    async def verify_vms(self, vms: Sequence[vmpool_pb2.VM]) -> None:
        for vm in vms:
            if vm.name == "vmFailVerification":
                raise PlatformPermanentError("failed to verify VM")

    # -- cluster -------------------------------------------------------------------------------

    def _cluster_plan(
        self, cluster: clusterinst_pb2.ClusterInst
    ) -> Iterator[tuple[str, NodeType, str, bool]]:
        """The VMs a cluster consists of: (name, type, flavor, external address)."""
        suffix = _suffix(cluster.key)
        deployment = _deployment(cluster.deployment)
        node_flavor = cluster.node_flavor or cluster.node_resources.infra_node_flavor
        if deployment is Deployment.DOCKER:
            yield f"fake-docker-{suffix}", NodeType.DOCKER_CLUSTER_NODE, node_flavor, False
        else:
            if not self.features.kubernetes_managed_control_plane:
                master = cluster.master_node_flavor or node_flavor
                for i in range(cluster.num_masters):
                    yield (
                        f"fake-master-{i + 1}-{suffix}",
                        NodeType.K8S_CLUSTER_MASTER,
                        master,
                        False,
                    )
            if cluster.node_pools:
                for pool in cluster.node_pools:
                    tag = "" if pool.Name in ("", DEFAULT_NODE_POOL) else f"-{pool.Name}"
                    flavor = pool.node_resources.infra_node_flavor or node_flavor
                    for i in range(pool.num_nodes):
                        name = f"fake-node{tag}-{i + 1}-{suffix}"
                        yield name, NodeType.K8S_CLUSTER_NODE, flavor, False
            else:
                for i in range(cluster.num_nodes):
                    yield (
                        f"fake-node-{i + 1}-{suffix}",
                        NodeType.K8S_CLUSTER_NODE,
                        node_flavor,
                        False,
                    )
        if cluster.ip_access == common_pb2.IP_ACCESS_DEDICATED:
            lb_name = cluster.static_fqdn or cluster.fqdn or f"{suffix}-lb"
            lb = self._root_lb_flavor_info().name
            yield lb_name, NodeType.DEDICATED_ROOT_LB, lb, True

    @staticmethod
    def _cluster_detail(cluster: clusterinst_pb2.ClusterInst) -> dict[str, str]:
        pools = ",".join(
            f"{p.Name}:{p.num_nodes}:{p.node_resources.infra_node_flavor}"
            for p in cluster.node_pools
        )
        return {
            "deployment": cluster.deployment,
            "masters": f"{cluster.num_masters}:{cluster.master_node_flavor}",
            "nodes": f"{cluster.num_nodes}:{cluster.node_flavor}",
            "pools": pools,
            "ip_access": str(cluster.ip_access),
        }

    def _is_managed(self, cluster: clusterinst_pb2.ClusterInst) -> bool:
        return bool(cluster.cloudlet_managed_cluster_id or cluster.cloudlet_managed_cluster_name)

    def _build_cluster(
        self, site: Site, cluster: clusterinst_pb2.ClusterInst, *, force: bool = False
    ) -> Record:
        """Create a cluster's VMs at once (adoption); all or nothing."""
        key = keys.key_string(cluster.key)
        record = Record(key, "ready", detail=self._cluster_detail(cluster))
        owner = f"cluster:{key}"
        try:
            if not self._is_managed(cluster):
                for name, node_type, flavor, external in self._cluster_plan(cluster):
                    site.add_vm(name, node_type, flavor, owner, external=external, force=force)
                    record.vm_names.append(name)
        except BaseException:
            site.remove_owner(owner)
            raise
        site.clusters[key] = record
        return record

    def _check_networks(self, cluster: clusterinst_pb2.ClusterInst) -> None:
        known = {
            n.key.name
            for n in self.config.caches.networks.values()
            if n.key.cloudlet_key == self.config.cloudlet_key
        }
        for name in cluster.networks:
            if name not in known:
                raise PlatformPermanentError(
                    f"Error getting cluster networks - network {name} not found on cloudlet "
                    f"{self.key}"
                )

    @override
    async def create_cluster_inst(
        self,
        cluster: clusterinst_pb2.ClusterInst,
        progress: Progress,
        *,
        timeout: float,
    ) -> dict[str, str]:
        key = keys.key_string(cluster.key)
        deadline = asyncio.timeout(timeout if timeout > 0 else None)
        try:
            async with deadline:
                return await self._create_cluster(cluster, key, progress, deadline.expired)
        except TimeoutError:
            raise PlatformTransientError(
                f"creating ClusterInst {key} timed out after {timeout:g}s"
            ) from None

    async def _create_cluster(
        self,
        cluster: clusterinst_pb2.ClusterInst,
        key: str,
        progress: Progress,
        timed_out: Callable[[], bool],
    ) -> dict[str, str]:
        progress.task("First Create Task")
        await self._step("create_cluster", 1)
        site = self._require_site()
        detail = self._cluster_detail(cluster)
        existing = site.clusters.get(key)
        if existing is not None:
            if existing.state == "ready" and existing.detail == detail:
                return dict(existing.annotations)  # already built: a repeated create
            if existing.state == "ready":
                raise PlatformPermanentError(
                    f"ClusterInst {key} already exists on fake cloudlet {self.key} with "
                    "another shape; update it instead"
                )
            raise PlatformTransientError(f"ClusterInst {key} is busy ({existing.state})")
        if self._is_managed(cluster):
            ids = {(c.key.id, c.key.name) for c in self._managed_clusters()}
            wanted_id, wanted_name = (
                cluster.cloudlet_managed_cluster_id,
                cluster.cloudlet_managed_cluster_name,
            )
            if not any(i == wanted_id or n == wanted_name for i, n in ids):
                raise PlatformPermanentError(
                    f"cloudlet managed cluster name {wanted_name!r} or id {wanted_id!r} not found"
                )
        self._check_networks(cluster)
        owner = f"cluster:{key}"
        record = Record(key, "creating", detail=detail)
        site.clusters[key] = record
        try:
            progress.task("Second Create Task")
            await self._step("create_cluster", 2)
            if not self._is_managed(cluster):
                for name, node_type, flavor, external in self._cluster_plan(cluster):
                    site.add_vm(name, node_type, flavor, owner, external=external)
                    record.vm_names.append(name)
            await self._step("create_cluster", 3)
            if site.clusters.get(key) is not record:
                raise PlatformPermanentError(f"ClusterInst {key} was deleted while being created")
        except BaseException as err:
            keep = (
                cluster.skip_crm_cleanup_on_timeout
                if timed_out()
                else (
                    cluster.skip_crm_cleanup_on_failure
                    and not isinstance(err, asyncio.CancelledError)
                )
            )
            if keep:
                record.state = "ready"  # left as built for inspection; delete removes it
                record.detail = {"kept": "after a failed create"}
            else:
                site.remove_owner(owner)
                if site.clusters.get(key) is record:
                    del site.clusters[key]
            raise
        record.state = "ready"
        return dict(record.annotations)

    @override
    async def update_cluster_inst(
        self, cluster: clusterinst_pb2.ClusterInst, progress: Progress
    ) -> dict[str, str]:
        key = keys.key_string(cluster.key)
        owner = f"cluster:{key}"
        progress.task("Updating Cluster Inst")
        await self._step("update_cluster", 1)
        site = self._require_site()
        record = site.clusters.get(key)
        if record is None:
            raise PlatformPermanentError(f"ClusterInst {key} not found on fake cloudlet {self.key}")
        if record.state != "ready":
            raise PlatformTransientError(f"ClusterInst {key} is busy ({record.state})")
        record.state = "updating"
        before = {vm.name: vm for vm in site.vms_of(owner)}
        plan = {} if self._is_managed(cluster) else {p[0]: p for p in self._cluster_plan(cluster)}
        removed = [
            vm for name, vm in before.items() if name not in plan or plan[name][2] != vm.flavor.name
        ]
        added: list[str] = []
        try:
            for vm in removed:
                del site.vms[vm.name]
            for name, node_type, flavor, external in plan.values():
                if name not in site.vms:
                    site.add_vm(name, node_type, flavor, owner, external=external)
                    added.append(name)
            await self._step("update_cluster", 2)
        except BaseException:
            for name in added:  # back to the cluster as it was
                site.vms.pop(name, None)
            for vm in removed:
                site.vms[vm.name] = vm
            record.state = "ready"
            raise
        record.vm_names = [vm.name for vm in site.vms_of(owner)]
        record.detail = self._cluster_detail(cluster)
        record.state = "ready"
        return dict(record.annotations)

    @override
    async def delete_cluster_inst(
        self, cluster: clusterinst_pb2.ClusterInst, progress: Progress
    ) -> None:
        key = keys.key_string(cluster.key)
        progress.task("First Delete Task")
        await self._step("delete_cluster", 1)
        progress.task("Second Delete Task")
        await self._step("delete_cluster", 2)
        site = self._site()
        if site is None or key not in site.clusters:
            return  # nothing there: deleting is done
        site.remove_owner(f"cluster:{key}")
        del site.clusters[key]
        for inst_key, inst in list(site.app_insts.items()):
            if inst.detail.get("cluster") == key:  # its workloads went with it
                site.remove_owner(f"appinst:{inst_key}")
                del site.app_insts[inst_key]

    @override
    async def change_cluster_inst_dns(
        self, cluster: clusterinst_pb2.ClusterInst, old_fqdn: str, progress: Progress
    ) -> None:
        await self.update_cluster_inst(cluster, progress)

    @override
    async def get_cluster_infra_resources(
        self, cluster: clusterinst_pb2.ClusterInst
    ) -> infraresources_pb2.InfraResources:
        out = infraresources_pb2.InfraResources()
        site = self._site()
        if site is not None:
            owner = f"cluster:{keys.key_string(cluster.key)}"
            out.vms.extend(vm.to_proto() for vm in site.vms_of(owner))
        return out

    @override
    async def get_cluster_credentials(self, cluster: clusterinst_pb2.ClusterInst) -> bytes:
        return b"fake-cluster-credentials"

    # -- app instances -------------------------------------------------------------------------

    def _add_app_vm(
        self, site: Site, inst: appinst_pb2.AppInst, record: Record, *, force: bool = False
    ) -> None:
        flavor = inst.node_resources.infra_node_flavor or inst.vm_flavor
        name = inst.dns_label or _suffix(cluster_pb2.ClusterKey(name=inst.key.name))
        site.add_vm(
            name, NodeType.APP_VM, flavor, f"appinst:{record.key}", external=True, force=force
        )
        record.vm_names.append(name)

    @override
    async def create_app_inst(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
        flavor: flavor_pb2.Flavor | None,
        progress: Progress,
    ) -> None:
        deployment = self.check_deployment(app)
        if self.settings.appinst_create_fail:
            raise PlatformPermanentError("FAKE_PLATFORM_APPINST_CREATE_FAIL")
        key = keys.key_string(app_inst.key)
        progress.task("Creating App Inst")
        await self._step("create_appinst", 1)
        site = self._require_site()
        existing = site.app_insts.get(key)
        if existing is not None:
            if existing.state == "ready":
                return  # already deployed: a repeated create
            raise PlatformTransientError(f"AppInst {key} is busy ({existing.state})")
        detail = {"deployment": str(deployment)}
        if deployment.needs_cluster:
            if cluster is None:
                raise PlatformPermanentError(
                    f"AppInst {key} is a {deployment} app and needs a cluster"
                )
            cluster_key = keys.key_string(cluster.key)
            if cluster_key not in site.clusters and not self.features.is_single_kubernetes_cluster:
                raise PlatformPermanentError(
                    f"ClusterInst {cluster_key} not found on fake cloudlet {self.key}"
                )
            detail["cluster"] = cluster_key
        record = Record(key, "creating", detail=detail)
        site.app_insts[key] = record
        try:
            if deployment is Deployment.VM:
                self._add_app_vm(site, app_inst, record)
            await self._step("create_appinst", 2)
            if site.app_insts.get(key) is not record:
                raise PlatformPermanentError(f"AppInst {key} was deleted while being created")
        except BaseException:
            site.remove_owner(f"appinst:{key}")
            if site.app_insts.get(key) is record:
                del site.app_insts[key]
            raise
        record.state = "ready"

    @override
    async def update_app_inst(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
        flavor: flavor_pb2.Flavor | None,
        progress: Progress,
    ) -> None:
        key = keys.key_string(app_inst.key)
        progress.task("fake appInst updated")
        await self._step("update_appinst", 1)
        if key not in self._require_site().app_insts:
            raise PlatformPermanentError(f"AppInst {key} not found on fake cloudlet {self.key}")

    @override
    async def delete_app_inst(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
        progress: Progress,
        *,
        undo: bool = False,
    ) -> None:
        key = keys.key_string(app_inst.key)
        progress.task("First Delete Task")
        await self._step("delete_appinst", 1)
        progress.task("Second Delete Task")
        await self._step("delete_appinst", 2)
        site = self._site()
        if site is None or key not in site.app_insts:
            return  # nothing there: deleting is done
        site.remove_owner(f"appinst:{key}")
        del site.app_insts[key]

    @override
    async def change_app_inst_dns(
        self, app: app_pb2.App, app_inst: appinst_pb2.AppInst, old_uri: str, progress: Progress
    ) -> None:
        progress.task("fake appinst dns updated")

    @override
    async def get_app_inst_runtime(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
    ) -> appinst_pb2.AppInstRuntime:
        runtime = appinst_pb2.AppInstRuntime()
        if app.deployment in ("", Deployment.KUBERNETES) and cluster is not None:
            for pool in cluster.node_pools:
                tag = "" if pool.Name == DEFAULT_NODE_POOL else f"-{pool.Name}"
                runtime.container_ids.extend(
                    f"appOnClusterNode{tag}{i}" for i in range(pool.num_nodes)
                )
        return runtime

    @override
    async def set_power_state(
        self, app: app_pb2.App, app_inst: appinst_pb2.AppInst, progress: Progress
    ) -> None:
        return

    # -- console and exec ----------------------------------------------------------------------

    @override
    async def list_cloudlet_mgmt_nodes(
        self,
        clusters: Sequence[clusterinst_pb2.ClusterInst],
        vm_app_insts: Sequence[appinst_pb2.AppInst],
    ) -> list[exec_pb2.CloudletMgmtNode]:
        return [exec_pb2.CloudletMgmtNode(type=str(NodeType.PLATFORM_VM), name="platformvmname")]

    @override
    async def get_container_command(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
        request: exec_pb2.ExecRequest,
    ) -> str:
        if request.HasField("cmd"):
            return request.cmd.command
        if request.HasField("log"):
            return 'echo "here\'s some logs"'
        raise PlatformPermanentError("no cmd or log specified in exec request")

    @override
    async def get_console_url(self, app: app_pb2.App, app_inst: appinst_pb2.AppInst) -> str:
        return f"https://console.fake.{self.config.app_dns_root}/?token=xyz"

    @override
    async def get_cluster_platform_client(
        self, cluster: clusterinst_pb2.ClusterInst, client_type: str
    ) -> CommandClient:
        return FakeCommandClient()

    @override
    async def get_node_platform_client(self, node: exec_pb2.CloudletMgmtNode) -> CommandClient:
        return FakeCommandClient()


def _pool(name: str, nodes: int, vcpus: int, ram: int, disk: int) -> resources_pb2.NodePool:
    return resources_pb2.NodePool(
        Name=name,
        num_nodes=nodes,
        node_resources=resources_pb2.NodeResources(vcpus=vcpus, ram=ram, disk=disk),
    )


class FakeSingleClusterPlatform(FakePlatform):
    """`fakesinglecluster`: the whole cloudlet is one Kubernetes cluster."""

    features: ClassVar[PlatformFeatures] = FAKE_FEATURES.derive(
        "fakesinglecluster",
        is_single_kubernetes_cluster=True,
        supports_app_inst_dedicated_ip=True,
        uses_ingress=True,
    )

    @override
    async def gather_cloudlet_info(self) -> cloudlet_pb2.CloudletInfo:
        info = await super().gather_cloudlet_info()
        gpu_pool = _pool("gpupool", 4, 5, 4096, 500)
        gpu_pool.node_resources.gpus.add(
            model_id="nvidia-a100", count=1, memory=96, vendor="nvidia"
        )
        info.node_pools.extend([_pool("cpupool", 10, 5, 4096, 500), gpu_pool])
        return info


class FakePublicCloudPlatform(FakePlatform):
    """`fakepubliccloud`: a public cloud's managed Kubernetes; no platform VMs."""

    features: ClassVar[PlatformFeatures] = FAKE_FEATURES.derive(
        "fakepubliccloud",
        kubernetes_managed_control_plane=True,
        ip_allocated_per_service=True,
        requires_crm_off_edge=True,
    )
    simulate_public_cloud: ClassVar[bool] = True


class FakeBareMetalPlatform(FakePlatform):
    """`fakebaremetal`: Kubernetes on bare metal with ingress."""

    features: ClassVar[PlatformFeatures] = FAKE_FEATURES.derive(
        "fakebaremetal",
        supports_kubernetes_only=True,
        kubernetes_managed_control_plane=True,
        ip_allocated_per_service=True,
        requires_crm_off_edge=True,
        uses_ingress=True,
        supports_bare_metal=True,
    )

    #: Hosts the fake site keeps free beside those its cluster nodes run on.
    SPARE_HOSTS: ClassVar[int] = 2

    @override
    async def get_bare_metal_hosts(self) -> list[baremetalhost_pb2.BareMetalHost]:
        """The site's inventory: one host per cluster node (provisioned), plus spares.

        What a metal3 inventory shows, from the in-memory site: a host runs one cluster
        node and carries its cluster as a label, so a cluster create or delete shows up.
        """
        site = self._require_site()
        nodes = sorted(
            (vm for vm in site.vms.values() if vm.type is NodeType.K8S_CLUSTER_NODE),
            key=lambda vm: vm.name,
        )
        largest = max(site.flavors.values(), key=lambda f: (f.vcpus, f.ram, f.disk), default=None)
        hosts: list[baremetalhost_pb2.BareMetalHost] = []
        for i in range(len(nodes) + self.SPARE_HOSTS):
            host = baremetalhost_pb2.BareMetalHost(
                key=baremetalhost_pb2.BareMetalHostKey(name=f"fake-bmh-{i + 1}"),
                status="available",
                boot_mac_address=f"52:54:00:00:00:{i + 1:02x}",
                boot_mode="UEFI",
                bmc_address=f"redfish://10.0.0.{i + 1}/redfish/v1/Systems/1",
                hardware_profile="fake-baremetal",
            )
            host.nics.add(name="eth0", mac_address=host.boot_mac_address, model="virtio")
            if largest is not None:
                host.resources.CopyFrom(largest)
            if i < len(nodes):
                host.status = "provisioned"
                host.labels["node"] = nodes[i].name
                host.labels["owner"] = nodes[i].owner
                host.nics[0].ip = nodes[i].internal_ip
            hosts.append(host)
        return hosts


class FakeVMPoolPlatform(FakePlatform):
    """`fakevmpool`: a pool of pre-made VMs, run by a CRM on the edge."""

    features: ClassVar[PlatformFeatures] = FAKE_FEATURES.derive(
        "fakevmpool", is_vm_pool=True, requires_crm_on_edge=True
    )
