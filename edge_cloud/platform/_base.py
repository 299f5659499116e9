"""The `Platform` ABC: one infrastructure's way of building cloudlets, clusters and apps.

Method groups follow crm_platforms.md §1.2, async and snake_cased. Abstract methods are
what every platform must do; the rest have defaults: harmless no-ops where the original's
platforms all do nothing, `NotSupportedByPlatform` where a feature flag gates the call (the
Controller checks features first, so reaching the default means that check is missing).

Contract for implementations (checked by `tests/conformance/`):

- no durable state in the object: CCRM replicas build and drop platform objects freely;
- `features` is a class attribute, readable without building or initialising;
- create and delete are idempotent; a failed create cleans up what it made before
  raising; a cancelled call leaves nothing half-made behind;
- errors are `PlatformTransientError`, `PlatformPermanentError` (or
  `PlatformResourceExhausted`) or `NotSupportedByPlatform`;
- progress goes through the `Progress` passed in, in the original's words where they exist.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar, Protocol

from edgeproto import (
    app_pb2,
    appinst_pb2,
    baremetalhost_pb2,
    cloudlet_pb2,
    cluster_pb2,
    clusterinst_pb2,
    exec_pb2,
    flavor_pb2,
    infraresources_pb2,
    metric_pb2,
    refs_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
    vmpool_pb2,
)

from edge_cloud.errors import InvalidArgument, NotSupportedByPlatform
from edge_cloud.platform._access import AccessApi
from edge_cloud.platform._config import PlatformConfig
from edge_cloud.platform._features import PlatformFeatures
from edge_cloud.platform._names import Deployment
from edge_cloud.platform._progress import Progress

__all__ = ["CommandClient", "Platform"]

# CloudletInfo fields filled by `get_cloudlet_resources` (field numbers, as on the wire)
_INFO_RESOURCE_FIELDS = ("6", "7", "8", "10", "13", "14", "17", "20", "21", "46")


class CommandClient(Protocol):
    """Runs commands on a cluster node or management node (ssh, or a local shell)."""

    async def output(self, command: str) -> str:
        """Run a command; its standard output.

        Raises:
            PlatformPermanentError: The command failed; the message has its output.
        """
        ...


class Platform(abc.ABC):
    """One cloud's way of doing infrastructure. Holds no durable state of its own.

    Build with no arguments, then `init` once per cloudlet. Every call that changes the
    infrastructure takes a `Progress`.

    Attributes:
        features: Static capabilities; read from the class, never from the infrastructure.
    """

    features: ClassVar[PlatformFeatures]

    def _unsupported(self, what: str) -> NotSupportedByPlatform:
        return NotSupportedByPlatform(f"platform {self.features.platform_type} {what}")

    # -- identity and initialisation ---------------------------------------------------------

    @abc.abstractmethod
    async def init(self, config: PlatformConfig, access: AccessApi, progress: Progress) -> None:
        """Cheap initialisation for one cloudlet: properties, credentials; no infrastructure work.

        Args:
            config: The cloudlet's settings.
            access: Secrets and shared services for this cloudlet.
            progress: Where to report.

        Raises:
            InvalidArgument: Bad or missing properties.
            PlatformTransientError: Credentials could not be fetched now.
        """

    async def init_ha_conditional(self, progress: Progress) -> None:
        """Heavier bring-up, done once by the active CRM or by the CCRM after a create.

        Shared root LB, security groups, recounting resources. Default: nothing to do.
        """
        return

    def compatibility_version(self) -> str:
        """Version of `init_ha_conditional`; an unchanged one lets a new active CRM skip it."""
        return ""

    def version_properties(self) -> dict[str, str]:
        """Build and version information for the node inventory."""
        return {}

    def name_sanitize(self, name: str) -> str:
        """Make a name legal on this infrastructure (the Controller asks through the CCRM)."""
        return name

    async def active_changed(self, active: bool) -> None:
        """A standby CRM became active. Default: nothing to do."""
        return

    # -- cloudlet ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_cloudlet(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        pf_config: cloudlet_pb2.PlatformConfig,
        flavor: flavor_pb2.Flavor,
        progress: Progress,
    ) -> None:
        """Onboard the site: platform VMs, networks, the CRM where it runs on the edge.

        Idempotent; on failure, removes what it created before raising.

        Args:
            cloudlet: The cloudlet being created.
            pf_config: What a remote CRM needs (addresses, keys, images).
            flavor: Size of the platform VM.
            progress: Where to report.
        """

    async def update_cloudlet(self, cloudlet: cloudlet_pb2.Cloudlet, progress: Progress) -> None:
        """Apply changed env vars or GPU config.

        Default: nothing to apply (the next `init` reads the new properties).
        """
        return

    @abc.abstractmethod
    async def delete_cloudlet(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        pf_config: cloudlet_pb2.PlatformConfig,
        progress: Progress,
    ) -> None:
        """Tear the site down. Idempotent: deleting what is not there succeeds."""

    async def change_cloudlet_dns(
        self, cloudlet: cloudlet_pb2.Cloudlet, old_fqdn: str, progress: Progress
    ) -> None:
        """The shared root LB's name changed."""
        raise self._unsupported("cannot change a cloudlet's DNS name")

    @abc.abstractmethod
    async def gather_cloudlet_info(self) -> cloudlet_pb2.CloudletInfo:
        """Limits and offerings of the infrastructure.

        Returns:
            A CloudletInfo with `os_max_ram/vcores/vol_gb`, `flavors`, availability zones,
            images, node infos, node pools and properties (other fields left empty).
        """

    @abc.abstractmethod
    async def get_cloudlet_infra_resources(self) -> infraresources_pb2.InfraResourcesSnapshot:
        """Used and maximum resources (RAM, vCPUs, Disk, External IPs, ...) and platform VMs."""

    async def get_cloudlet_resources(self) -> cloudlet_pb2.CloudletInfo:
        """`gather_cloudlet_info` plus the resource snapshot, `fields` naming what is set.

        Returns:
            A CloudletInfo carrying flavors, limits, node pools and `resources_snapshot`.
        """
        info = await self.gather_cloudlet_info()
        info.resources_snapshot.CopyFrom(await self.get_cloudlet_infra_resources())
        del info.fields[:]
        info.fields.extend(_INFO_RESOURCE_FIELDS)
        return info

    async def get_flavors(self) -> list[cloudlet_pb2.FlavorInfo]:
        """Flavor discovery: the infrastructure's flavors."""
        return list((await self.gather_cloudlet_info()).flavors)

    async def get_root_lb_flavor(self) -> flavor_pb2.Flavor:
        """Size of the shared root LB VM; an empty Flavor means there is none."""
        if self.features.uses_root_lb:
            raise self._unsupported("declares uses_root_lb but reports no root LB flavor")
        return flavor_pb2.Flavor()

    async def get_cloudlet_manifest(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        pf_config: cloudlet_pb2.PlatformConfig,
        flavor: flavor_pb2.Flavor,
    ) -> str:
        """Instructions for bringing up a restricted-access site by hand."""
        raise self._unsupported("has no cloudlet manifest")

    async def get_restricted_cloudlet_status(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        pf_config: cloudlet_pb2.PlatformConfig,
        progress: Progress,
    ) -> None:
        """Report the progress of a manual (restricted-access) bring-up."""
        raise self._unsupported("has no restricted-access bring-up")

    def get_cluster_additional_resources(
        self, cloudlet: cloudlet_pb2.Cloudlet, vm_resources: Sequence[refs_pb2.VMResource]
    ) -> dict[str, infraresources_pb2.InfraResource]:
        """Platform-specific counters a proposed set of VMs would use.

        Pure computation, no infrastructure calls: the Controller asks during admission.
        """
        return {}

    def get_cluster_additional_resource_metric(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        metric: metric_pb2.Metric,
        vm_resources: Sequence[refs_pb2.VMResource],
    ) -> None:
        """Add the same counters as metric values to `metric`."""
        return

    async def refresh_certs(self) -> None:
        """Push renewed certificates. Default: nothing holds certificates."""
        return

    async def update_trust_policy(self, policy: trustpolicy_pb2.TrustPolicy | None) -> None:
        """Apply (or with None, clear) the cloudlet's egress restrictions."""
        raise self._unsupported("has no trust policies")

    async def update_trust_policy_exception(
        self,
        tpe: trustpolicyexception_pb2.TrustPolicyException,
        cluster_key: cluster_pb2.ClusterKey,
    ) -> None:
        """Open the egress rules of an exception for one cluster."""
        raise self._unsupported("has no trust policy exceptions")

    async def delete_trust_policy_exception(
        self,
        tpe_key: trustpolicyexception_pb2.TrustPolicyExceptionKey,
        cluster_key: cluster_pb2.ClusterKey,
    ) -> None:
        """Close the egress rules of an exception for one cluster."""
        raise self._unsupported("has no trust policy exceptions")

    async def get_cloudlet_managed_clusters(self) -> list[cloudlet_pb2.CloudletManagedCluster]:
        """Clusters that exist on the infrastructure but were not created by us."""
        raise self._unsupported("has no cloudlet-managed clusters")

    async def get_cloudlet_managed_cluster_info(
        self, cluster: clusterinst_pb2.ClusterInst
    ) -> clusterinst_pb2.CloudletManagedClusterInfo:
        """Describe a registered pre-existing cluster."""
        raise self._unsupported("has no cloudlet-managed clusters")

    async def get_bare_metal_hosts(self) -> list[baremetalhost_pb2.BareMetalHost]:
        """Bare-metal inventory."""
        raise self._unsupported("has no bare-metal hosts")

    async def verify_vms(self, vms: Sequence[vmpool_pb2.VM]) -> None:
        """Check that VM-pool members are reachable."""
        raise self._unsupported("has no VM pool")

    # -- cluster -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_cluster_inst(
        self,
        cluster: clusterinst_pb2.ClusterInst,
        progress: Progress,
        *,
        timeout: float,  # noqa: ASYNC109 - the Controller's per-operation limit, passed on
    ) -> dict[str, str]:
        """Build a cluster. Idempotent; cleans up after itself on failure.

        Args:
            cluster: The ClusterInst with its flavors and node pools resolved.
            progress: Where to report.
            timeout: Seconds the whole creation may take.

        Returns:
            Infrastructure annotations to store on the ClusterInst (may be empty).
        """

    async def update_cluster_inst(
        self, cluster: clusterinst_pb2.ClusterInst, progress: Progress
    ) -> dict[str, str]:
        """Scale node pools or change configuration (`cluster.fields` lists what changed)."""
        raise self._unsupported("cannot update clusters")

    @abc.abstractmethod
    async def delete_cluster_inst(
        self, cluster: clusterinst_pb2.ClusterInst, progress: Progress
    ) -> None:
        """Remove a cluster. Idempotent."""

    async def change_cluster_inst_dns(
        self, cluster: clusterinst_pb2.ClusterInst, old_fqdn: str, progress: Progress
    ) -> None:
        """A dedicated LB's name changed."""
        raise self._unsupported("cannot change a cluster's DNS name")

    async def get_cluster_infra_resources(
        self, cluster: clusterinst_pb2.ClusterInst
    ) -> infraresources_pb2.InfraResources:
        """The VMs backing a cluster."""
        return infraresources_pb2.InfraResources()

    async def get_cluster_credentials(self, cluster: clusterinst_pb2.ClusterInst) -> bytes:
        """A kubeconfig for a Kubernetes cluster."""
        raise self._unsupported("does not hand out cluster credentials")

    # -- app instances -------------------------------------------------------------------------

    def check_deployment(self, app: app_pb2.App) -> Deployment:
        """The App's deployment type, refused if the features exclude it.

        Raises:
            NotSupportedByPlatform: A non-Kubernetes App on a Kubernetes-only platform.
            InvalidArgument: An unknown deployment type.
        """
        try:
            deployment = Deployment.of(app.deployment)
        except ValueError:
            raise InvalidArgument(f"unknown deployment type {app.deployment!r}") from None
        if self.features.supports_kubernetes_only and not deployment.is_kubernetes:
            raise self._unsupported(f"runs Kubernetes apps only, not {deployment} deployments")
        return deployment

    @abc.abstractmethod
    async def create_app_inst(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
        flavor: flavor_pb2.Flavor | None,
        progress: Progress,
    ) -> None:
        """Deploy an instance; how depends on `app.deployment` (`check_deployment`).

        Idempotent; cleans up after itself on failure. May set `app_inst.uri`, which the
        caller then reports.

        Args:
            cluster: The cluster it runs on; None for VM apps.
            app: The App.
            app_inst: The instance.
            flavor: Its flavor, when it names one.
            progress: Where to report.
        """

    async def update_app_inst(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
        flavor: flavor_pb2.Flavor | None,
        progress: Progress,
    ) -> None:
        """Re-apply manifests or environment."""
        raise self._unsupported("cannot update app instances")

    @abc.abstractmethod
    async def delete_app_inst(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
        progress: Progress,
        *,
        undo: bool = False,
    ) -> None:
        """Remove an instance. Idempotent.

        Args:
            cluster: The cluster it runs on; None for VM apps.
            app: The App.
            app_inst: The instance.
            progress: Where to report.
            undo: Cleaning up after a failed create: tolerate what is half made.
        """

    async def change_app_inst_dns(
        self, app: app_pb2.App, app_inst: appinst_pb2.AppInst, old_uri: str, progress: Progress
    ) -> None:
        """An instance's name changed."""
        raise self._unsupported("cannot change an app instance's DNS name")

    async def get_app_inst_runtime(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
    ) -> appinst_pb2.AppInstRuntime:
        """Container or pod names, stored on the AppInst."""
        return appinst_pb2.AppInstRuntime()

    async def set_power_state(
        self, app: app_pb2.App, app_inst: appinst_pb2.AppInst, progress: Progress
    ) -> None:
        """Power a VM app on, off, or reboot it (`app_inst.power_state`)."""
        raise self._unsupported("cannot change power states")

    # -- console and exec ----------------------------------------------------------------------

    async def list_cloudlet_mgmt_nodes(
        self,
        clusters: Sequence[clusterinst_pb2.ClusterInst],
        vm_app_insts: Sequence[appinst_pb2.AppInst],
    ) -> list[exec_pb2.CloudletMgmtNode]:
        """Management nodes (shared LB, platform VMs, dedicated LBs) for operator access."""
        return []

    async def get_container_command(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
        request: exec_pb2.ExecRequest,
    ) -> str:
        """The command that opens a shell in, or shows logs of, an instance's container."""
        raise self._unsupported("has no container access")

    async def get_console_url(self, app: app_pb2.App, app_inst: appinst_pb2.AppInst) -> str:
        """URL of a VM app's console."""
        raise self._unsupported("has no VM consoles")

    async def get_cluster_platform_client(
        self, cluster: clusterinst_pb2.ClusterInst, client_type: str
    ) -> CommandClient:
        """A client that can run kubectl or docker for a cluster."""
        raise self._unsupported("has no cluster command access")

    async def get_node_platform_client(self, node: exec_pb2.CloudletMgmtNode) -> CommandClient:
        """A client to a management node."""
        raise self._unsupported("has no management node access")
