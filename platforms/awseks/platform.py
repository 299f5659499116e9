"""The `awseks` platform: Kubernetes clusters on AWS EKS, apps through their kubeconfigs.

A managed-Kubernetes platform driven from the CCRM (no CRM on the edge): a cloudlet is an
AWS account and region; a ClusterInst is an EKS cluster with one managed node group in a
VPC of its own (`_cluster`); an AppInst is a set of Kubernetes manifests applied through
the cluster's kubeconfig (`platforms.k8s`), whose LoadBalancer services get public
addresses from AWS, each registered in DNS as `<service>.<AppInst URI>`.

Credentials are the cloudlet's access vars `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`
(from Vault through the `AccessApi`); a daemon without Vault may carry them in its own
environment instead (the original's eksctl used such ambient credentials). See README.md.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from typing import ClassVar, Final

from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    clusterinst_pb2,
    flavor_pb2,
    infraresources_pb2,
    metric_pb2,
    refs_pb2,
)
from typing_extensions import override

from edge_cloud.errors import InvalidArgument, NotFound
from edge_cloud.objects import keys
from edge_cloud.platform import (
    DEFAULT_NODE_POOL,
    AccessApi,
    Deployment,
    NodeType,
    Platform,
    PlatformConfig,
    PlatformFeatures,
    PlatformPermanentError,
    PlatformResourceExhausted,
    PlatformTransientError,
    Progress,
)
from platforms.awseks import _props as P
from platforms.awseks._aws import (
    QUOTA_CLUSTERS,
    QUOTA_NETWORK_LBS,
    QUOTA_NODES_PER_NODEGROUP,
    AwsCredentials,
    EksSession,
)
from platforms.awseks._cluster import TAG_CLUSTER, ClusterPlan, EksClusters
from platforms.awseks._kubeconfig import ClusterAccess, build_kubeconfig, make_token
from platforms.common.aws import credentials_from
from platforms.common.state import after_init
from platforms.k8s import (
    KubeClient,
    app_inst_manifest,
    app_inst_namespace,
    apply_manifest,
    check_kubernetes_app,
    delete_manifest,
    delete_namespace,
    ensure_namespace,
    kube_errors,
    namespace_sanitize,
    wait_ready,
)

__all__ = ["AwsEksPlatform"]

log = logging.getLogger(__name__)

COMPATIBILITY_VERSION: Final = "awseks-1.0"
_NAME_OK: Final = re.compile(r"[^A-Za-z0-9_-]")
_MAX_NAME: Final = 100
_LB_SERVICE: Final = "k8s-lb-svc"
_IPV4: Final = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
APP_READY_TIMEOUT: Final = 600.0
"""Seconds an AppInst's pods and load balancers may take to become ready."""


class AwsEksPlatform(Platform):
    """The `awseks` platform (crm_platforms.md §11.6), on boto3 and the Kubernetes client."""

    features: ClassVar[PlatformFeatures] = P.EKS_FEATURES

    def __init__(self) -> None:
        self._config: PlatformConfig | None = None
        self._aws: EksSession | None = None
        self._props: dict[str, str] = {}
        self._flavors: list[cloudlet_pb2.FlavorInfo] | None = None
        self._access: dict[str, ClusterAccess] = {}
        self._dns: AccessApi | None = None

    # -- helpers -------------------------------------------------------------------------------

    @property
    def config(self) -> PlatformConfig:
        """The config given to `init`.

        Raises:
            FailedPrecondition: `init` has not run.
        """
        return after_init(self._config, "awseks")

    @property
    def aws(self) -> EksSession:
        """The account's session (after `init`)."""
        return after_init(self._aws, "awseks")

    @property
    def clusters(self) -> EksClusters:
        """The cloudlet's clusters on EKS."""
        key = self.config.cloudlet_key
        return EksClusters(self.aws, f"{key.organization}/{self.config.physical_name}")

    def cluster_name(self, cluster: clusterinst_pb2.ClusterInst) -> str:
        """The EKS name of a ClusterInst: `<name>-<organization>`, sanitized."""
        return self.name_sanitize(f"{cluster.key.name}-{cluster.key.organization}")

    def _operator_quota(self, name: str) -> int:
        """The cloudlet's own quota on a resource (0 when the operator set none)."""
        cloudlet = self.config.caches.cloudlets.get(self.config.cloudlet_key_string)
        if cloudlet is None:
            return 0
        for quota in cloudlet.resource_quotas:
            if quota.name == name and quota.value > 0:
                return int(quota.value)
        return 0

    # -- identity and initialisation ---------------------------------------------------------

    @override
    async def init(self, config: PlatformConfig, access: AccessApi, progress: Progress) -> None:
        props = config.resolve_properties(self.features.properties)
        region = props[P.AWS_REGION]
        if not region:
            raise InvalidArgument(
                f"cloudlet {config.cloudlet_key_string} of platform awseks needs the property "
                f"{P.AWS_REGION} (for example ap-southeast-2) in its env vars"
            )
        try:
            re.compile(props[P.FLAVOR_MATCH_PATTERN])
        except re.error as err:
            raise InvalidArgument(
                f"{P.FLAVOR_MATCH_PATTERN} {props[P.FLAVOR_MATCH_PATTERN]!r} is not a valid "
                f"regular expression: {err}"
            ) from None
        try:
            attempts = int(props[P.AWS_MAX_ATTEMPTS])
        except ValueError:
            attempts = 0
        if attempts < 1:
            raise InvalidArgument(
                f"{P.AWS_MAX_ATTEMPTS} must be a whole number of at least 1, "
                f"not {props[P.AWS_MAX_ATTEMPTS]!r}"
            )
        credentials = await self._credentials(config, access)
        self._config, self._props, self._dns = config, props, access
        self._aws = EksSession(
            credentials,
            region,
            endpoint_url=props[P.AWS_ENDPOINT_URL],
            max_attempts=attempts,
        )
        self._flavors = None
        self._access.clear()
        progress.task("Done initializing awseks platform")

    @staticmethod
    async def _credentials(config: PlatformConfig, access: AccessApi) -> AwsCredentials:
        vars_ = await access.get_cloudlet_access_vars()
        return credentials_from(vars_, config.process_env, config.cloudlet_key_string)

    @override
    def compatibility_version(self) -> str:
        return COMPATIBILITY_VERSION

    @override
    def name_sanitize(self, name: str) -> str:
        """EKS names: letters, digits, `-` and `_`, starting alphanumeric; dots dropped."""
        cleaned = _NAME_OK.sub("-", name.replace(".", ""))
        cleaned = cleaned.lstrip("-_") or "cluster"
        return cleaned[:_MAX_NAME]

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
            raise self._unsupported(
                "has no restricted-access onboarding: the CCRM needs to reach the AWS APIs"
            )
        progress.task("Verifying AWS credentials")
        identity = await self.aws.call("sts", "get_caller_identity")
        progress.step(f"AWS account {identity.get('Account', '?')} in {self.aws.region}")
        progress.task("Getting instance types")
        flavors = await self.get_flavors()
        if not flavors:
            raise PlatformPermanentError(
                f"no EC2 instance type in {self.aws.region} matches {P.FLAVOR_MATCH_PATTERN} "
                f"{self._props[P.FLAVOR_MATCH_PATTERN]!r}"
            )

    @override
    async def delete_cloudlet(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        pf_config: cloudlet_pb2.PlatformConfig,
        progress: Progress,
    ) -> None:
        progress.task("Removing AWS resources of the cloudlet")
        removed = await self.clusters.sweep(progress)
        if removed:
            log.warning(
                "deleting cloudlet %s removed clusters %s", self.config.cloudlet_key_string, removed
            )

    @override
    async def gather_cloudlet_info(self) -> cloudlet_pb2.CloudletInfo:
        info = cloudlet_pb2.CloudletInfo()
        info.key.CopyFrom(self.config.cloudlet_key)
        info.flavors.extend(await self.get_flavors())
        info.properties["kubernetes_version"] = self._props[P.EKS_KUBERNETES_VERSION]
        return info

    @override
    async def get_flavors(self) -> list[cloudlet_pb2.FlavorInfo]:
        if self._flavors is None:
            self._flavors = await self.aws.flavors(self._props[P.FLAVOR_MATCH_PATTERN])
        return list(self._flavors)

    @override
    async def get_cloudlet_infra_resources(self) -> infraresources_pb2.InfraResourcesSnapshot:
        eks = await self.aws.quotas("eks")
        elb = await self.aws.quotas("elasticloadbalancing")
        ours = await self.clusters.ours()
        lbs = await self._load_balancers({c.name for c in ours})
        snapshot = infraresources_pb2.InfraResourcesSnapshot()
        snapshot.info.add(
            name=P.RESOURCE_K8S_CLUSTERS,
            value=len(ours),
            infra_max_value=eks[QUOTA_CLUSTERS[1]],
        )
        snapshot.info.add(
            name=P.RESOURCE_MAX_NODES_PER_CLUSTER,
            value=max((c.nodes for c in ours), default=0),
            infra_max_value=eks[QUOTA_NODES_PER_NODEGROUP[1]],
        )
        snapshot.info.add(name=P.RESOURCE_TOTAL_NODES, value=sum(c.nodes for c in ours))
        snapshot.info.add(
            name=P.RESOURCE_NETWORK_LBS, value=lbs, infra_max_value=elb[QUOTA_NETWORK_LBS[1]]
        )
        return snapshot

    async def _load_balancers(self, clusters: set[str]) -> int:
        """Network load balancers that Kubernetes made for our clusters (by their tags)."""
        if not clusters:
            return 0
        arns = [
            lb["LoadBalancerArn"]
            for lb in (await self.aws.call("elbv2", "describe_load_balancers"))["LoadBalancers"]
        ]
        count = 0
        for start in range(0, len(arns), 20):  # describe_tags takes 20 ARNs at a time
            reply = await self.aws.call(
                "elbv2", "describe_tags", ResourceArns=arns[start : start + 20]
            )
            for desc in reply["TagDescriptions"]:
                tags = {t["Key"] for t in desc.get("Tags", [])}
                if any(f"kubernetes.io/cluster/{name}" in tags for name in clusters):
                    count += 1
        return count

    @staticmethod
    def _counts(vm_resources: Sequence[refs_pb2.VMResource]) -> tuple[int, int, int, int]:
        """(clusters, most nodes in one cluster, nodes, load balancers) of proposed VMs."""
        nodes: dict[str, int] = {}
        lbs = 0
        for res in vm_resources:
            key = keys.key_string(res.key)
            if res.type == str(NodeType.K8S_CLUSTER_NODE):
                nodes[key] = nodes.get(key, 0) + res.count
            elif res.type == _LB_SERVICE:
                lbs += res.count
        return len(nodes), max(nodes.values(), default=0), sum(nodes.values()), lbs

    @override
    def get_cluster_additional_resources(
        self, cloudlet: cloudlet_pb2.Cloudlet, vm_resources: Sequence[refs_pb2.VMResource]
    ) -> dict[str, infraresources_pb2.InfraResource]:
        clusters, most, total, lbs = self._counts(vm_resources)
        values = {
            P.RESOURCE_K8S_CLUSTERS: clusters,
            P.RESOURCE_MAX_NODES_PER_CLUSTER: most,
            P.RESOURCE_TOTAL_NODES: total,
            P.RESOURCE_NETWORK_LBS: lbs,
        }
        return {
            name: infraresources_pb2.InfraResource(name=name, value=value)
            for name, value in values.items()
        }

    @override
    def get_cluster_additional_resource_metric(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        metric: metric_pb2.Metric,
        vm_resources: Sequence[refs_pb2.VMResource],
    ) -> None:
        clusters, most, total, lbs = self._counts(vm_resources)
        metric.vals.add(name=P.METRIC_K8S_CLUSTERS, ival=clusters)
        metric.vals.add(name=P.METRIC_MAX_NODES, ival=most)
        metric.vals.add(name=P.METRIC_TOTAL_NODES, ival=total)
        metric.vals.add(name=P.METRIC_NETWORK_LBS, ival=lbs)

    # -- cluster -------------------------------------------------------------------------------

    async def _plan(self, cluster: clusterinst_pb2.ClusterInst) -> ClusterPlan:
        """The cluster to build, its flavor checked against the region's instance types."""
        name = self.cluster_name(cluster)
        workers = [p for p in cluster.node_pools if not p.control_plane]
        if len(workers) > 1:
            raise PlatformPermanentError(
                f"awseks builds one node pool per cluster; ClusterInst "
                f"{keys.key_string(cluster.key)} asks for {len(workers)} "
                f"({', '.join(p.Name or DEFAULT_NODE_POOL for p in workers)})"
            )
        if workers:
            flavor = workers[0].node_resources.infra_node_flavor
            nodes = workers[0].num_nodes
        else:
            flavor = cluster.node_resources.infra_node_flavor or cluster.node_flavor
            nodes = cluster.num_nodes
        if nodes < 1:
            raise PlatformPermanentError(
                f"EKS clusters need worker nodes; ClusterInst {keys.key_string(cluster.key)} "
                "asks for none"
            )
        offered = {f.name for f in await self.get_flavors()}
        if flavor not in offered:
            raise PlatformPermanentError(
                f"instance type {flavor or '(none)'} of ClusterInst "
                f"{keys.key_string(cluster.key)} is not offered in {self.aws.region} "
                f"(flavors matching {self._props[P.FLAVOR_MATCH_PATTERN]!r})"
            )
        version = cluster.kubernetes_version or self._props[P.EKS_KUBERNETES_VERSION]
        return ClusterPlan(name=name, instance_type=flavor, nodes=nodes, version=version)

    async def _check_quotas(self, plan: ClusterPlan, *, new: bool) -> None:
        """AWS's quotas and the cloudlet's own, before anything is made.

        Raises:
            PlatformResourceExhausted: The cluster would exceed one; the message names it.
        """
        eks = await self.aws.quotas("eks")
        per_group = eks[QUOTA_NODES_PER_NODEGROUP[1]]
        if plan.nodes > per_group:
            raise PlatformResourceExhausted(
                f"{plan.nodes} nodes exceed the EKS quota {QUOTA_NODES_PER_NODEGROUP[1]} of "
                f"{per_group} nodes per node group in {self.aws.region}"
            )
        most = self._operator_quota(P.RESOURCE_MAX_NODES_PER_CLUSTER)
        if most and plan.nodes > most:
            raise PlatformResourceExhausted(
                f"{plan.nodes} nodes exceed the cloudlet's quota {P.RESOURCE_MAX_NODES_PER_CLUSTER}"
                f" of {most}"
            )
        ours = [c for c in await self.clusters.ours() if c.name != plan.name]
        total = self._operator_quota(P.RESOURCE_TOTAL_NODES)
        used = sum(c.nodes for c in ours)
        if total and used + plan.nodes > total:
            raise PlatformResourceExhausted(
                f"{plan.nodes} more nodes exceed the cloudlet's quota {P.RESOURCE_TOTAL_NODES} "
                f"of {total} ({used} in use)"
            )
        if not new:
            return
        region_max = eks[QUOTA_CLUSTERS[1]]
        in_region = len(await self.clusters.all_names())
        if in_region >= region_max:
            raise PlatformResourceExhausted(
                f"the EKS quota {QUOTA_CLUSTERS[1]} allows {region_max} clusters in "
                f"{self.aws.region} and {in_region} exist; delete one or ask AWS for more"
            )
        allowed = self._operator_quota(P.RESOURCE_K8S_CLUSTERS)
        if allowed and len(ours) >= allowed:
            raise PlatformResourceExhausted(
                f"cloudlet {self.config.cloudlet_key_string} has {len(ours)} of its quota of "
                f"{allowed} {P.RESOURCE_K8S_CLUSTERS}; delete a ClusterInst first"
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
        plan = await self._plan(cluster)
        existing = await self.clusters.describe(plan.name)
        await self._check_quotas(plan, new=existing is None)
        timed_out = False
        try:
            async with asyncio.timeout(timeout if timeout > 0 else None):
                built = await self.clusters.create(plan, progress)
                progress.task("Getting cluster credentials")
                await self._cluster_access(plan.name, fresh=True)
        except BaseException as err:
            timed_out = isinstance(err, TimeoutError)
            keep = (
                cluster.skip_crm_cleanup_on_timeout
                if timed_out
                else cluster.skip_crm_cleanup_on_failure
                and not isinstance(err, asyncio.CancelledError)
            )
            if not keep and existing is None:
                progress.task("Cleaning up after a failed create")
                try:
                    await asyncio.shield(self.clusters.delete(plan.name, progress))
                except Exception as cleanup:  # the create's error is the one to report
                    log.warning("cleaning up EKS cluster %s failed: %s", plan.name, cleanup)
            if timed_out:
                raise PlatformTransientError(
                    f"creating ClusterInst {key} (EKS cluster {plan.name}) timed out after "
                    f"{timeout:g}s"
                ) from None
            raise
        return {"eks-cluster-name": plan.name, "eks-cluster-arn": str(built.get("arn", ""))}

    @override
    async def update_cluster_inst(
        self, cluster: clusterinst_pb2.ClusterInst, progress: Progress
    ) -> dict[str, str]:
        plan = await self._plan(cluster)
        if await self.clusters.describe(plan.name) is None:
            raise PlatformPermanentError(
                f"EKS cluster {plan.name} of ClusterInst {keys.key_string(cluster.key)} does "
                f"not exist in {self.aws.region}"
            )
        await self._check_quotas(plan, new=False)
        await self.clusters.resize(plan.name, plan.nodes, progress)
        return {"eks-cluster-name": plan.name}

    @override
    async def delete_cluster_inst(
        self, cluster: clusterinst_pb2.ClusterInst, progress: Progress
    ) -> None:
        name = self.cluster_name(cluster)
        await self.clusters.delete(name, progress)
        self._access.pop(name, None)

    @override
    async def get_cluster_infra_resources(
        self, cluster: clusterinst_pb2.ClusterInst
    ) -> infraresources_pb2.InfraResources:
        name = self.cluster_name(cluster)
        reply = await self.aws.call(
            "ec2",
            "describe_instances",
            Filters=[
                {"Name": "tag:eks:cluster-name", "Values": [name]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ],
        )
        out = infraresources_pb2.InfraResources()
        for reservation in reply.get("Reservations", []):
            for inst in reservation.get("Instances", []):
                vm = out.vms.add(
                    name=inst["InstanceId"],
                    type=str(NodeType.K8S_CLUSTER_NODE),
                    status=inst.get("State", {}).get("Name", ""),
                    infraFlavor=inst.get("InstanceType", ""),
                )
                vm.ipaddresses.add(
                    externalIp=inst.get("PublicIpAddress", ""),
                    internalIp=inst.get("PrivateIpAddress", ""),
                )
        return out

    async def _cluster_access(self, name: str, *, fresh: bool = False) -> ClusterAccess:
        """Endpoint, CA and a current token for a cluster (a new token before it expires)."""
        kept = self._access.get(name)
        if kept is not None and kept.fresh and not fresh:
            return kept
        described = await self.clusters.describe(name)
        if described is None:
            raise PlatformPermanentError(f"EKS cluster {name} does not exist in {self.aws.region}")
        if described.get("tags", {}).get(TAG_CLUSTER) != name:
            raise PlatformPermanentError(
                f"EKS cluster {name} in {self.aws.region} was not made by this platform"
            )
        endpoint = self._props[P.EKS_API_ENDPOINT_OVERRIDE] or str(described.get("endpoint", ""))
        if not endpoint:
            raise PlatformTransientError(f"EKS cluster {name} has no API endpoint yet")
        ca = self._props[P.EKS_API_CA_DATA]
        if not ca and not self._props[P.EKS_API_ENDPOINT_OVERRIDE]:
            ca = str(described.get("certificateAuthority", {}).get("data", ""))
        signed_at = time.time()
        token = await self.aws.run("sts presign", lambda: make_token(self.aws, name))
        access = ClusterAccess(name, endpoint.rstrip("/"), ca, token, signed_at)
        self._access[name] = access
        return access

    @override
    async def get_cluster_credentials(self, cluster: clusterinst_pb2.ClusterInst) -> bytes:
        return build_kubeconfig(await self._cluster_access(self.cluster_name(cluster)))

    # -- app instances -------------------------------------------------------------------------

    @staticmethod
    def _namespace(
        cluster: clusterinst_pb2.ClusterInst, app: app_pb2.App, app_inst: appinst_pb2.AppInst
    ) -> tuple[str, bool]:
        """The AppInst's namespace, and whether it is its own (made and removed with it).

        Its own: the per-AppInst `<name>-<org>` namespace (which the Controller may also
        have written into `app_inst.namespace`), not a cluster's single namespace nor an
        App that manages its namespaces.
        """
        namespace = app_inst_namespace(cluster, app, app_inst)
        per_inst = namespace_sanitize(f"{app_inst.key.name}-{app_inst.key.organization}")
        own = (
            not cluster.single_kubernetes_namespace
            and not app.manages_own_namespaces
            and namespace == per_inst
        )
        return namespace, own

    async def _manifest(
        self, app: app_pb2.App, app_inst: appinst_pb2.AppInst, *, deleting: bool = False
    ) -> str:
        """The manifest as deployed for this AppInst (env, secrets, labels added).

        Raises:
            NotSupportedByPlatform: A docker or VM App.
            FailedPrecondition: A Helm App (no chart repository access here).
            InvalidArgument: No manifest, or one that does not parse.
        """
        if self.check_deployment(app) is Deployment.HELM:
            # TODO(#9, helm): install charts once the CCRM can fetch and render them.
            raise self._unsupported(
                f"cannot deploy helm apps yet (App {keys.key_string(app.key)}): installing "
                "charts needs the helm client and access to the chart repository; deploy a "
                "Kubernetes manifest instead"
            )
        check_kubernetes_app(app)
        secrets: dict[str, str] = {}
        if app.secret_env_vars:
            if deleting:  # only the objects' names matter to a delete, not the values
                secrets = dict.fromkeys(app.secret_env_vars, "")
            elif self._dns is not None:
                secrets = await self._dns.get_app_secret_vars(keys.key_string(app.key))
        return app_inst_manifest(app, app_inst, secret_vars=secrets)

    async def _kubeconfig(self, cluster: clusterinst_pb2.ClusterInst | None, what: str) -> bytes:
        if cluster is None:
            raise PlatformPermanentError(f"{what} needs the cluster it runs on")
        return build_kubeconfig(await self._cluster_access(self.cluster_name(cluster)))

    @override
    async def create_app_inst(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
        flavor: flavor_pb2.Flavor | None,
        progress: Progress,
    ) -> None:
        manifest = await self._manifest(app, app_inst)
        key = keys.key_string(app_inst.key)
        kubeconfig = await self._kubeconfig(cluster, f"AppInst {key}")
        assert cluster is not None  # noqa: S101 - checked by _kubeconfig
        namespace, own = self._namespace(cluster, app, app_inst)
        async with KubeClient.from_kubeconfig(kubeconfig) as kube:
            try:
                progress.task(f"Creating namespace {namespace}")
                await ensure_namespace(kube, namespace)
                progress.task("Applying Kubernetes manifest")
                await apply_manifest(kube, namespace, manifest)
                progress.task("Waiting for the app to be ready")
                await wait_ready(kube, namespace, manifest, timeout=APP_READY_TIMEOUT)
                progress.task("Registering load balancer DNS names")
                await self._register_dns(kube, namespace, app_inst)
            except BaseException:
                progress.task("Cleaning up after a failed create")
                try:
                    await asyncio.shield(self._remove_app(kube, namespace, own, manifest, app_inst))
                except Exception as cleanup:  # the create's error is the one to report
                    log.warning("cleaning up AppInst %s failed: %s", key, cleanup)
                raise

    async def _load_balancers_of(
        self, kube: KubeClient, namespace: str
    ) -> list[tuple[str, str, list[str]]]:
        """(service name, address, `proto:port` list) of LoadBalancer services with an address."""
        with kube_errors(f"list services in namespace {namespace!r}"):
            services = await kube.core.list_namespaced_service(namespace)
        found: list[tuple[str, str, list[str]]] = []
        for svc in services.items:
            if svc.spec is None or svc.spec.type != "LoadBalancer":
                continue
            balancer = svc.status.load_balancer if svc.status else None
            ingress = (balancer.ingress if balancer else None) or []
            if not ingress or svc.metadata is None:
                continue
            address = ingress[0].ip or ingress[0].hostname or ""
            ports = [f"{(p.protocol or 'TCP').lower()}:{p.port}" for p in svc.spec.ports or []]
            if address:
                found.append((str(svc.metadata.name), address, ports))
        return found

    async def _register_dns(
        self, kube: KubeClient, namespace: str, app_inst: appinst_pb2.AppInst
    ) -> None:
        """`<service>.<uri>` for every LoadBalancer service: A for an IP, CNAME for a name."""
        for service, address, ports in await self._load_balancers_of(kube, namespace):
            for port in ports:
                app_inst.internal_port_to_lb_ip[port] = address
            if not app_inst.uri or self._dns is None:
                continue
            rtype = "A" if _IPV4.fullmatch(address) else "CNAME"
            await self._dns.create_or_update_dns_record(f"{service}.{app_inst.uri}", rtype, address)

    async def _remove_app(
        self,
        kube: KubeClient,
        namespace: str,
        own: bool,
        manifest: str,
        app_inst: appinst_pb2.AppInst,
    ) -> None:
        """DNS names, the manifest's objects, and the namespace when it is the AppInst's."""
        try:
            balancers = await self._load_balancers_of(kube, namespace)
        except NotFound:
            balancers = []
        if app_inst.uri and self._dns is not None:
            for service, _, _ in balancers:
                await self._dns.delete_dns_record(f"{service}.{app_inst.uri}")
        await delete_manifest(kube, namespace, manifest)
        if own:
            await delete_namespace(kube, namespace)

    @override
    async def update_app_inst(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
        flavor: flavor_pb2.Flavor | None,
        progress: Progress,
    ) -> None:
        manifest = await self._manifest(app, app_inst)
        kubeconfig = await self._kubeconfig(cluster, f"AppInst {keys.key_string(app_inst.key)}")
        assert cluster is not None  # noqa: S101 - checked by _kubeconfig
        namespace, _ = self._namespace(cluster, app, app_inst)
        async with KubeClient.from_kubeconfig(kubeconfig) as kube:
            progress.task("Applying Kubernetes manifest")
            await apply_manifest(kube, namespace, manifest)
            progress.task("Waiting for the app to be ready")
            await wait_ready(kube, namespace, manifest, timeout=APP_READY_TIMEOUT)
            await self._register_dns(kube, namespace, app_inst)

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
        if cluster is None or await self.clusters.describe(self.cluster_name(cluster)) is None:
            return  # its cluster is gone, and the workload with it
        manifest = await self._manifest(app, app_inst, deleting=True)
        kubeconfig = await self._kubeconfig(cluster, f"AppInst {key}")
        namespace, own = self._namespace(cluster, app, app_inst)
        progress.task("Deleting Kubernetes objects")
        try:
            async with KubeClient.from_kubeconfig(kubeconfig) as kube:
                await self._remove_app(kube, namespace, own, manifest, app_inst)
        except Exception as err:
            if not undo:
                raise
            log.warning("undoing AppInst %s left something behind: %s", key, err)

    @override
    async def get_app_inst_runtime(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
    ) -> appinst_pb2.AppInstRuntime:
        runtime = appinst_pb2.AppInstRuntime()
        kubeconfig = await self._kubeconfig(cluster, f"AppInst {keys.key_string(app_inst.key)}")
        assert cluster is not None  # noqa: S101 - checked by _kubeconfig
        namespace, _ = self._namespace(cluster, app, app_inst)
        async with KubeClient.from_kubeconfig(kubeconfig) as kube:
            with kube_errors(f"list pods in namespace {namespace!r}"):
                pods = await kube.core.list_namespaced_pod(namespace)
        runtime.container_ids.extend(
            sorted(str(p.metadata.name) for p in pods.items if p.metadata is not None)
        )
        return runtime
