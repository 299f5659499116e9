"""`AwsEc2Platform`: edge cloudlets on AWS EC2, one VPC per cloudlet, on boto3 in process.

What it builds (crm_platforms.md §6.3, §11.5), all through the EC2 API and tagged so that
deletes find it again (see `_infra`):

- cloudlet: VPC, internet gateway and default route, cloudlet security group, external
  subnet, elastic IP and NAT gateway, internal route table; then the platform VM, whose
  cloud-init carries the CRM access key and the node self-configuration script, and the
  shared root LB with its DNS record;
- cluster: a subnet behind the NAT, a security group, the VMs (Kubernetes master and
  nodes, or one docker node) and its load balancer's port: an interface of the shared root
  LB in the cluster's subnet, or a dedicated root LB VM;
- VM app instance: a VM from the App's AMI with the App's cloud-init, a security group
  opening its ports, and its DNS name on the VM's public address.

What runs inside the VMs (kubeadm, docker, the CRM, proxies) is configured by the VMs
themselves from their cloud-init, or over ssh through the root LB in the original; this
plugin has no ssh yet, so anything that needs it raises `NotSupportedByPlatform` naming it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar, Final

from distributed_match_engine import appcommon_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletnode_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    infraresources_pb2,
    metric_pb2,
    refs_pb2,
)
from typing_extensions import override

from edge_cloud.errors import FailedPrecondition, InvalidArgument
from edge_cloud.objects import keys
from edge_cloud.platform import (
    DEFAULT_NODE_POOL,
    RESOURCE_EXTERNAL_IPS,
    RESOURCE_INSTANCES,
    RESOURCE_METRIC_INSTANCES,
    RESOURCE_RAM,
    RESOURCE_RAM_UNITS,
    RESOURCE_VCPUS,
    AccessApi,
    Deployment,
    NodeType,
    NoProgress,
    Platform,
    PlatformConfig,
    PlatformFeatures,
    PlatformPermanentError,
    PlatformTransientError,
    Progress,
)
from platforms.awsec2._client import AwsApi
from platforms.awsec2._infra import TAG_ROLE, Ec2Infra, Network, VmSpec, tags_of
from platforms.awsec2._props import FEATURES, Settings, parse_settings
from platforms.common.state import after_init

__all__ = ["AwsEc2Platform"]

COMPATIBILITY_VERSION: Final = "awsec2-1"
_LB_PORT_ROLE: Final = "lb-sg"
_PROTOCOLS: Final = {
    appcommon_pb2.L_PROTO_TCP: "tcp",
    appcommon_pb2.L_PROTO_HTTP: "tcp",
    appcommon_pb2.L_PROTO_UDP: "udp",
}


def _sanitize(text: str) -> str:
    """A name AWS and DNS both accept: lower case, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"


def _owner(kind: str, key: Any) -> str:
    return f"{kind}/{key.organization}/{key.name}"


def _ports(inst: appinst_pb2.AppInst) -> list[tuple[str, int, int]]:
    """Ingress rules (protocol, first, last) for an instance's public ports."""
    rules = []
    for port in inst.mapped_ports:
        if port.internal_vis_only or port.public_port <= 0:
            continue
        proto = _PROTOCOLS.get(port.proto)
        if proto is None:
            raise InvalidArgument(f"port {port.public_port} of AppInst has no usable protocol")
        rules.append((proto, port.public_port, port.end_port or port.public_port))
    return rules


def _cloud_config(files: Sequence[tuple[str, str, str]], commands: Sequence[str]) -> str:
    """A #cloud-config document; strings are JSON-quoted, which YAML reads as they are."""
    lines = ["#cloud-config", "write_files:"]
    for path, mode, content in files:
        lines += [
            f"  - path: {json.dumps(path)}",
            "    owner: root:root",
            f"    permissions: {json.dumps(mode)}",
            f"    content: {json.dumps(content)}",
        ]
    lines += ["ssh_pwauth: false", "timezone: UTC", "runcmd:"]
    lines += [f"  - {json.dumps(c)}" for c in commands]
    return "\n".join(lines) + "\n"


_CONFIGURE_NODE: Final = """#!/bin/bash
# Fetch this node's ansible configuration when it changed, and apply it (crm_platforms.md §6.3).
set -u
cd /root
base="$ANSIBLE_ADDR/confignode"
auth="$NODE_NAME:$NODE_PASSWORD"
changed=0
for f in ansible.tar.gz vars.yaml; do
  curl -sf -u "$auth" -o "$f.md5.new" "$base/$f.md5" || exit 1
  if ! cmp -s "$f.md5.new" "$f.md5"; then
    curl -sf -u "$auth" -o "$f" "$base/$f" || exit 1
    mv "$f.md5.new" "$f.md5"
    changed=1
  fi
done
if [ "$changed" = 1 ] || [ ! -f ansible_run_ok ]; then
  rm -f ansible_run_ok
  rm -rf ansible && mkdir ansible && tar -xzf ansible.tar.gz -C ansible
  cp vars.yaml ansible/vars.yml
  ansible-playbook -e @ansible/vars.yml ansible/playbook.yml && touch ansible_run_ok
fi
"""


class AwsEc2Platform(Platform):
    """The `awsec2` platform: VM-based cloudlets in an AWS region."""

    features: ClassVar[PlatformFeatures] = FEATURES

    def __init__(self) -> None:
        self._config: PlatformConfig | None = None
        self._settings: Settings | None = None
        self._access: AccessApi | None = None
        self._infra: Ec2Infra | None = None

    # -- helpers -------------------------------------------------------------------------------

    @property
    def config(self) -> PlatformConfig:
        """The config given to `init`.

        Raises:
            FailedPrecondition: `init` has not run.
        """
        return after_init(self._config, "awsec2")

    @property
    def infra(self) -> Ec2Infra:
        """The cloudlet's EC2 resources (after `init`)."""
        return after_init(self._infra, "awsec2")

    @property
    def settings(self) -> Settings:
        """The cloudlet's parsed properties (after `init`)."""
        return after_init(self._settings, "awsec2")

    @property
    def access(self) -> AccessApi:
        """The cloudlet's access API (after `init`)."""
        return after_init(self._access, "awsec2")

    def _cloudlet_prefix(self) -> str:
        key = self.config.cloudlet_key
        return _sanitize(f"{key.name}-{key.organization}")

    def _root_lb_name(self) -> str:
        if self.config.root_lb_fqdn:
            return self.config.root_lb_fqdn
        key = self.config.cloudlet_key
        return f"{_sanitize(key.name)}.{_sanitize(key.organization)}.{self.config.app_dns_root}"

    def _refuse_outpost(self, what: str) -> None:
        if self.settings.outpost_vpc:
            raise self._unsupported(
                f"cannot {what} in Outpost mode (AWS_OUTPOST_VPC) yet: assigning the Outpost's "
                "pre-created subnets is not built"
            )

    async def _base_image(self) -> str:
        if not self.settings.os_image:
            raise InvalidArgument(
                "the awsec2 cloudlet needs the AMI of its VMs: set the MEX_OS_IMAGE property "
                "(or a cloudlet VM image path whose file name is the AMI name)"
            )
        image = await self.infra.image(self.settings.os_image, "cloudlet VM image MEX_OS_IMAGE")
        return str(image["ImageId"])

    async def _match_flavor(self, vcpus: int, ram: int, disk: int, what: str) -> str:
        """The smallest flavor with at least these resources (§8.3 without GPUs)."""
        flavors = sorted(await self.infra.flavors(), key=lambda f: (f.vcpus, f.ram, f.disk))
        for f in flavors:
            if f.vcpus >= vcpus and f.ram >= ram and (f.disk == 0 or f.disk >= disk):
                return str(f.name)
        raise PlatformPermanentError(
            f"no suitable infra flavor for {what} ({vcpus} vCPUs, {ram} MB RAM, {disk} GB disk) "
            f"among {len(flavors)} instance types matching FLAVOR_MATCH_PATTERN in "
            f"{self.settings.region}"
        )

    async def _flavor(self, name: str, what: str) -> str:
        if not name:
            raise InvalidArgument(f"{what} names no infra flavor (instance type)")
        return name

    # -- identity and initialisation ---------------------------------------------------------

    @override
    async def init(self, config: PlatformConfig, access: AccessApi, progress: Progress) -> None:
        settings = parse_settings(
            config.resolve_properties(self.features.properties), config.cloudlet_vm_image_path
        )
        access_vars = await access.get_cloudlet_access_vars()
        api = await AwsApi.connect(
            settings, access_vars, config.process_env, access, config.cloudlet_key_string
        )
        key = config.cloudlet_key
        vpc_name = settings.outpost_vpc or _sanitize(config.physical_name or key.name)
        self._config, self._settings, self._access = config, settings, access
        self._infra = Ec2Infra(api, f"{key.organization}/{key.name}", vpc_name)

    @override
    async def init_ha_conditional(self, progress: Progress) -> None:
        self._refuse_outpost("set up the shared root LB")
        # as the original's InitProvider at CRM start: the network is (re)ensured too
        net, _ = await self.infra.ensure_network(progress)
        await self._ensure_shared_root_lb(await self._base_image(), net, progress)

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
            raise self._unsupported(
                "has no restricted-access onboarding yet (no cloudlet manifest for EC2)"
            )
        self._refuse_outpost("create a cloudlet")
        progress.task("Creating Cloudlet")
        image_id = await self._base_image()  # before anything is made: nothing to undo
        pf_flavor = await self._match_flavor(
            flavor.vcpus or 2, flavor.ram or 4096, flavor.disk or 20, "the platform VM"
        )
        node_name = f"{self._cloudlet_prefix()}-pf"
        password = ""
        if not await self.infra.instances("cloudlet", str(NodeType.PLATFORM_VM)):
            password = await self._register_node(cloudlet, node_name)  # refusals come first
        made = False
        try:
            net, made = await self.infra.ensure_network(progress)
            if password:
                await self._ensure_platform_vm(
                    node_name, password, pf_config, pf_flavor, image_id, net, progress
                )
            # The original leaves the shared root LB to the CRM's InitHAConditional; making it
            # here (and again, idempotently, there) gives a cloudlet that works without it.
            await self._ensure_shared_root_lb(image_id, net, progress)
        except BaseException:
            if made:
                await self.infra.delete_network(NoProgress())
            if password:
                key = cloudletnode_pb2.CloudletNodeKey(name=node_name)
                key.cloudlet_key.CopyFrom(cloudlet.key)
                await self.access.delete_cloudlet_node(key)
            raise

    async def _register_node(self, cloudlet: cloudlet_pb2.Cloudlet, name: str) -> str:
        """Register the platform VM as a CloudletNode; the password its script logs in with."""
        node = cloudletnode_pb2.CloudletNode(
            node_type=str(NodeType.PLATFORM_VM), node_role="dockercrm"
        )
        node.key.name = name
        node.key.cloudlet_key.CopyFrom(cloudlet.key)
        try:
            return await self.access.create_cloudlet_node(node)
        except FailedPrecondition as err:
            raise PlatformPermanentError(
                f"the platform VM {name} must be registered as a CloudletNode to fetch its "
                f"configuration (crm_platforms.md §6.3), and the access API refused: {err}"
            ) from err

    async def _ensure_platform_vm(
        self,
        name: str,
        password: str,
        pf_config: cloudlet_pb2.PlatformConfig,
        flavor: str,
        image_id: str,
        net: Network,
        progress: Progress,
    ) -> None:
        progress.task("Creating Platform VM")
        group = await self.infra.ensure_security_group(
            "cloudlet", "platform-sg", f"{name}-sg", net.vpc_id, progress
        )
        await self.infra.allow(group, [("tcp", 22, 22)])
        script = (
            f"ANSIBLE_ADDR={pf_config.ansible_public_addr}\nNODE_NAME={name}\n"
            f"NODE_PASSWORD={password}\n" + _CONFIGURE_NODE
        )
        files = [
            ("/root/accesskey/accesskey.pem", "0600", pf_config.crm_access_private_key),
            ("/root/configure-node.sh", "0700", script),
            (
                "/etc/cron.d/configure-node",
                "0644",
                "*/10 * * * * root /root/configure-node.sh >> /root/configure-node.log 2>&1\n",
            ),
        ]
        commands = ["/root/configure-node.sh >> /root/configure-node.log 2>&1"]
        await self.infra.check_capacity(1, "the platform VM")
        await self.infra.run(
            "cloudlet",
            [
                VmSpec(
                    name=name,
                    role=str(NodeType.PLATFORM_VM),
                    flavor=flavor,
                    image_id=image_id,
                    subnet_id=net.external_subnet_id,
                    security_group_ids=(net.security_group_id, group),
                    public=True,
                    user_data=_cloud_config(files, commands),
                )
            ],
            progress,
        )

    async def _ensure_shared_root_lb(self, image_id: str, net: Network, progress: Progress) -> None:
        name = self._root_lb_name()
        role = str(NodeType.SHARED_ROOT_LB)
        found = await self.infra.instances("cloudlet", role)
        if not found:
            progress.task("Creating Shared RootLB")
            flavor = (await self.get_root_lb_flavor()).key.name
            group = await self.infra.ensure_security_group(
                "cloudlet", _LB_PORT_ROLE, f"{_sanitize(name)}-sg", net.vpc_id, progress
            )
            await self.infra.allow(group, [("tcp", 22, 22)])
            await self.infra.check_capacity(1, "the shared root LB")
            found = await self.infra.run(
                "cloudlet",
                [
                    VmSpec(
                        name=name,
                        role=role,
                        flavor=flavor,
                        image_id=image_id,
                        subnet_id=net.external_subnet_id,
                        security_group_ids=(net.security_group_id, group),
                        public=True,
                        disk_gb=self.settings.root_lb_disk,
                    )
                ],
                progress,
            )
            found = [i for i in found if tags_of(i).get(TAG_ROLE) == role]
        address = found[0].get("PublicIpAddress", "") if found else ""
        if address:
            await self.access.create_or_update_dns_record(name, "A", address)

    @override
    async def delete_cloudlet(
        self,
        cloudlet: cloudlet_pb2.Cloudlet,
        pf_config: cloudlet_pb2.PlatformConfig,
        progress: Progress,
    ) -> None:
        progress.task("Deleting Cloudlet")
        if self.settings.outpost_vpc:
            raise self._unsupported("cannot delete an Outpost cloudlet (AWS_OUTPOST_VPC) yet")
        await self.infra.delete_network(progress)
        await self.access.delete_dns_record(self._root_lb_name())
        key = cloudletnode_pb2.CloudletNodeKey(name=f"{self._cloudlet_prefix()}-pf")
        key.cloudlet_key.CopyFrom(cloudlet.key)
        await self.access.delete_cloudlet_node(key)

    @override
    async def gather_cloudlet_info(self) -> cloudlet_pb2.CloudletInfo:
        info = cloudlet_pb2.CloudletInfo()
        info.key.CopyFrom(self.config.cloudlet_key)
        info.flavors.extend(await self.infra.flavors())
        return info

    @override
    async def get_cloudlet_infra_resources(self) -> infraresources_pb2.InfraResourcesSnapshot:
        instances = await self.infra.instances()
        sizes = await self.infra.flavor_sizes(i.get("InstanceType", "") for i in instances)
        attrs = await self.infra.api.call(
            "describe_account_attributes", AttributeNames=["max-instances", "vpc-max-elastic-ips"]
        )
        limits = {
            a["AttributeName"]: int(a["AttributeValues"][0]["AttributeValue"])
            for a in attrs.get("AccountAttributes", [])
            if a.get("AttributeValues") and a["AttributeValues"][0]["AttributeValue"].isdigit()
        }
        addresses = await self.infra.api.pages(
            "describe_addresses", "Addresses", Filters=self.infra.filters()
        )
        vcpus = ram = public = 0
        snapshot = infraresources_pb2.InfraResourcesSnapshot()
        for inst in instances:
            v, r, _ = sizes.get(inst.get("InstanceType", ""), (0, 0, 0))
            vcpus, ram = vcpus + v, ram + r
            public += 1 if inst.get("PublicIpAddress") else 0
            tags = tags_of(inst)
            if tags.get("edgecloud:owner") == "cloudlet":
                snapshot.platform_vms.append(self._vm_info(inst))
        public += len(addresses)
        snapshot.info.extend(
            [
                infraresources_pb2.InfraResource(
                    name=RESOURCE_RAM, value=ram, units=RESOURCE_RAM_UNITS
                ),
                infraresources_pb2.InfraResource(name=RESOURCE_VCPUS, value=vcpus),
                infraresources_pb2.InfraResource(
                    name=RESOURCE_EXTERNAL_IPS,
                    value=public,
                    infra_max_value=limits.get("vpc-max-elastic-ips", 0),
                ),
                infraresources_pb2.InfraResource(
                    name=RESOURCE_INSTANCES,
                    value=len(instances),
                    infra_max_value=limits.get("max-instances", 0),
                ),
            ]
        )
        return snapshot

    @staticmethod
    def _vm_info(inst: dict[str, Any]) -> infraresources_pb2.VmInfo:
        tags = tags_of(inst)
        info = infraresources_pb2.VmInfo(
            name=tags.get("Name", inst["InstanceId"]),
            type=tags.get(TAG_ROLE, ""),
            status=str(inst.get("State", {}).get("Name", "")),
            infraFlavor=inst.get("InstanceType", ""),
        )
        info.ipaddresses.add(
            externalIp=inst.get("PublicIpAddress", ""), internalIp=inst.get("PrivateIpAddress", "")
        )
        return info

    @override
    async def get_root_lb_flavor(self) -> flavor_pb2.Flavor:
        s = self.settings
        name = await self._match_flavor(
            s.root_lb_vcpus, s.root_lb_ram, s.root_lb_disk, "the shared root LB"
        )
        for f in await self.infra.flavors():
            if f.name == name:
                return flavor_pb2.Flavor(
                    key=flavor_pb2.FlavorKey(name=name), vcpus=f.vcpus, ram=f.ram, disk=f.disk
                )
        return flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name=name))

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

    # -- cluster -------------------------------------------------------------------------------

    def _cluster_plan(self, cluster: clusterinst_pb2.ClusterInst) -> list[tuple[str, str, str]]:
        """The VMs of a cluster: (name, node type, instance type)."""
        prefix = _sanitize(f"{cluster.key.name}-{cluster.key.organization}")
        node_flavor = cluster.node_flavor or cluster.node_resources.infra_node_flavor
        try:
            deployment = Deployment.of(cluster.deployment)
        except ValueError:
            raise InvalidArgument(f"unknown cluster deployment {cluster.deployment!r}") from None
        plan: list[tuple[str, str, str]] = []
        if deployment is Deployment.DOCKER:
            plan.append((f"{prefix}-docker", str(NodeType.DOCKER_CLUSTER_NODE), node_flavor))
            return plan
        master = cluster.master_node_flavor or node_flavor
        for i in range(max(cluster.num_masters, 1)):
            plan.append((f"{prefix}-master-{i + 1}", str(NodeType.K8S_CLUSTER_MASTER), master))
        if cluster.node_pools:
            for pool in cluster.node_pools:
                tag = "" if pool.Name in ("", DEFAULT_NODE_POOL) else f"-{_sanitize(pool.Name)}"
                flavor = pool.node_resources.infra_node_flavor or node_flavor
                plan += [
                    (f"{prefix}-node{tag}-{i + 1}", str(NodeType.K8S_CLUSTER_NODE), flavor)
                    for i in range(pool.num_nodes)
                ]
        else:
            plan += [
                (f"{prefix}-node-{i + 1}", str(NodeType.K8S_CLUSTER_NODE), node_flavor)
                for i in range(cluster.num_nodes)
            ]
        for name, _, flavor in plan:
            if not flavor:
                raise InvalidArgument(
                    f"ClusterInst {keys.key_string(cluster.key)}: VM {name} has no infra flavor"
                )
        return plan

    @override
    async def create_cluster_inst(
        self,
        cluster: clusterinst_pb2.ClusterInst,
        progress: Progress,
        *,
        timeout: float,
    ) -> dict[str, str]:
        self._refuse_outpost("create clusters")
        owner = _owner("cluster", cluster.key)
        plan = self._cluster_plan(cluster)
        dedicated = cluster.ip_access == common_pb2.IP_ACCESS_DEDICATED
        try:
            async with asyncio.timeout(timeout if timeout > 0 else None):
                await self._create_cluster(cluster, owner, plan, dedicated, progress)
        except BaseException as err:
            timed_out = isinstance(err, TimeoutError)
            keep = (
                cluster.skip_crm_cleanup_on_timeout
                if timed_out
                else cluster.skip_crm_cleanup_on_failure
                and not isinstance(err, asyncio.CancelledError)
            )
            if not keep:
                await self.infra.delete_owned(owner, NoProgress())
                if dedicated:
                    await self._forget_dns(cluster.fqdn)
            if timed_out:
                raise PlatformTransientError(
                    f"creating ClusterInst {keys.key_string(cluster.key)} timed out after "
                    f"{timeout:g}s"
                ) from None
            raise
        return {}

    async def _create_cluster(
        self,
        cluster: clusterinst_pb2.ClusterInst,
        owner: str,
        plan: list[tuple[str, str, str]],
        dedicated: bool,
        progress: Progress,
    ) -> None:
        progress.task("Creating Cluster")
        infra = self.infra
        net = await infra.network()
        image_id = await self._base_image()
        present = {tags_of(i).get("Name") for i in await infra.instances(owner)}
        lb_name = cluster.fqdn or f"{_sanitize(cluster.key.name)}-lb"
        missing = [p for p in plan if p[0] not in present]
        if dedicated and lb_name not in present:
            missing.append((lb_name, str(NodeType.DEDICATED_ROOT_LB), ""))
        await infra.check_capacity(len(missing), f"ClusterInst {keys.key_string(cluster.key)}")
        prefix = _sanitize(f"{cluster.key.name}-{cluster.key.organization}")
        subnet = await infra.ensure_subnet(owner, f"{prefix}-subnet", net, progress)
        group = await infra.ensure_security_group(
            owner, "cluster-sg", f"{prefix}-sg", net.vpc_id, progress
        )
        await infra.allow(group, [("-1", 0, 0)], [{"CidrIp": self.settings.vpc_cidr}])
        vms = [
            VmSpec(
                name=name,
                role=role,
                flavor=flavor,
                image_id=image_id,
                subnet_id=subnet,
                security_group_ids=(net.security_group_id, group),
            )
            for name, role, flavor in plan
        ]
        if dedicated:
            progress.task("Creating Dedicated RootLB")
            lb_flavor = (await self.get_root_lb_flavor()).key.name
            lb_group = await infra.ensure_security_group(
                owner, _LB_PORT_ROLE, f"{prefix}-lb-sg", net.vpc_id, progress
            )
            await infra.allow(lb_group, [("tcp", 22, 22)])
            vms.append(
                VmSpec(
                    name=lb_name,
                    role=str(NodeType.DEDICATED_ROOT_LB),
                    flavor=lb_flavor,
                    image_id=image_id,
                    subnet_id=net.external_subnet_id,
                    security_group_ids=(net.security_group_id, lb_group),
                    public=True,
                    disk_gb=self.settings.root_lb_disk,
                )
            )
        progress.task("Creating VMs")
        running = await infra.run(owner, vms, progress)
        if dedicated:
            lb = next(i for i in running if tags_of(i).get("Name") == lb_name)
            await infra.attach_interface(owner, lb, subnet, group, f"{lb_name}-{prefix}")
            if lb.get("PublicIpAddress") and cluster.fqdn:
                await self.access.create_or_update_dns_record(
                    cluster.fqdn, "A", lb["PublicIpAddress"]
                )
        else:
            shared = await infra.instances("cloudlet", str(NodeType.SHARED_ROOT_LB))
            if not shared:
                raise PlatformPermanentError(
                    f"the shared root LB of cloudlet {infra.cloudlet_tag} is missing: the "
                    "cloudlet's create (or its CRM's start-up) makes it; re-create the cloudlet"
                )
            await infra.attach_interface(owner, shared[0], subnet, group, f"rootlb-{prefix}")

    async def _forget_dns(self, fqdn: str) -> None:
        if fqdn:
            await self.access.delete_dns_record(fqdn)

    @override
    async def delete_cluster_inst(
        self, cluster: clusterinst_pb2.ClusterInst, progress: Progress
    ) -> None:
        progress.task("Deleting Cluster")
        await self.infra.delete_owned(_owner("cluster", cluster.key), progress)
        if cluster.ip_access == common_pb2.IP_ACCESS_DEDICATED:
            await self._forget_dns(cluster.fqdn)

    @override
    async def get_cluster_infra_resources(
        self, cluster: clusterinst_pb2.ClusterInst
    ) -> infraresources_pb2.InfraResources:
        out = infraresources_pb2.InfraResources()
        for inst in await self.infra.instances(_owner("cluster", cluster.key)):
            out.vms.append(self._vm_info(inst))
        return out

    # -- app instances -------------------------------------------------------------------------

    async def _app_image(self, app: app_pb2.App) -> dict[str, Any]:
        """The AMI of a VM App: its id or name, or for a URL the AMI named like the file.

        The original's VM platforms look for the image in the infrastructure's store first
        and upload it only when missing; EC2 has no upload here yet (VM import), so a
        missing image names the AMI to register instead.
        """
        path = app.image_path.strip()
        what = f"VM App {keys.key_string(app.key)}"
        if not path:
            raise InvalidArgument(f"{what} has no image path: give the AMI id or name")
        if "://" not in path:
            return await self.infra.image(path.partition("#")[0], what)
        name = path.partition("#")[0].rstrip("/").rsplit("/", 1)[-1]
        name = re.sub(r"\.(qcow2|vmdk|ova|ovf|img|raw)$", "", name)
        try:
            return await self.infra.image(name, what)
        except PlatformPermanentError as err:
            raise self._unsupported(
                f"cannot import the VM image {path} into EC2 yet (VM import): register it as "
                f"an AMI named {name!r} in {self.settings.region} ({err})"
            ) from None

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
        if deployment is not Deployment.VM:
            raise self._unsupported(
                f"cannot deploy {deployment} apps yet: that runs kubectl/docker on the cluster's "
                "root LB over ssh, which this plugin does not have (only VM apps run on awsec2)"
            )
        self._refuse_outpost("create VM app instances")
        owner = _owner("appinst", app_inst.key)
        progress.task("Creating VM App Instance")
        try:
            await self._create_vm_app(app, app_inst, owner, progress)
        except BaseException:
            await self.infra.delete_owned(owner, NoProgress())
            await self._forget_dns(app_inst.uri)
            raise

    async def _create_vm_app(
        self,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
        owner: str,
        progress: Progress,
    ) -> None:
        infra = self.infra
        name = app_inst.dns_label or _sanitize(f"{app_inst.key.name}-{app_inst.key.organization}")
        instance_type = await self._flavor(
            app_inst.node_resources.infra_node_flavor or app_inst.vm_flavor,
            f"AppInst {keys.key_string(app_inst.key)}",
        )
        rules = _ports(app_inst)
        net = await infra.network()
        image = await self._app_image(app)
        if not await infra.instances(owner):
            await infra.check_capacity(1, f"AppInst {keys.key_string(app_inst.key)}")
        group = await infra.ensure_security_group(
            owner, "appvm-sg", f"{name}-sg", net.vpc_id, progress
        )
        if rules:
            progress.step("Opening ports")
            await infra.allow(group, rules)
        running = await infra.run(
            owner,
            [
                VmSpec(
                    name=name,
                    role=str(NodeType.APP_VM),
                    flavor=instance_type,
                    image_id=str(image["ImageId"]),
                    subnet_id=net.external_subnet_id,
                    security_group_ids=(net.security_group_id, group),
                    public=True,
                    disk_gb=app_inst.node_resources.disk,
                    user_data=app.deployment_manifest,
                )
            ],
            progress,
        )
        address = running[0].get("PublicIpAddress", "") if running else ""
        if app_inst.uri and address:
            progress.step("Registering DNS")
            await self.access.create_or_update_dns_record(app_inst.uri, "A", address)

    @override
    async def update_app_inst(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
        flavor: flavor_pb2.Flavor | None,
        progress: Progress,
    ) -> None:
        deployment = self.check_deployment(app)
        if deployment is not Deployment.VM:
            raise self._unsupported(f"cannot update {deployment} apps yet (needs ssh)")
        owner = _owner("appinst", app_inst.key)
        groups = await self.infra.api.pages(
            "describe_security_groups",
            "SecurityGroups",
            Filters=self.infra.filters(owner, "appvm-sg"),
        )
        if not groups or not await self.infra.instances(owner):
            raise PlatformPermanentError(
                f"AppInst {keys.key_string(app_inst.key)} has no VM on cloudlet "
                f"{self.infra.cloudlet_tag}; delete and re-create it"
            )
        progress.task("Updating ports")
        wanted = set(_ports(app_inst))
        group_id = groups[0]["GroupId"]
        current = {
            (p["IpProtocol"], p["FromPort"], p["ToPort"])
            for p in groups[0].get("IpPermissions", [])
            if p.get("IpProtocol") in ("tcp", "udp")
        }
        await self.infra.revoke(group_id, sorted(current - wanted))
        await self.infra.allow(group_id, sorted(wanted))

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
        progress.task("Deleting App Instance")
        try:
            deployment = Deployment.of(app.deployment)
        except ValueError:
            deployment = Deployment.VM
        if deployment is not Deployment.VM:
            return  # nothing of a cluster app was ever made on EC2 (create refuses them)
        await self.infra.delete_owned(_owner("appinst", app_inst.key), progress)
        await self._forget_dns(app_inst.uri)

    @override
    async def get_app_inst_runtime(
        self,
        cluster: clusterinst_pb2.ClusterInst | None,
        app: app_pb2.App,
        app_inst: appinst_pb2.AppInst,
    ) -> appinst_pb2.AppInstRuntime:
        runtime = appinst_pb2.AppInstRuntime()
        if app.deployment == Deployment.VM:
            for inst in await self.infra.instances(_owner("appinst", app_inst.key)):
                runtime.container_ids.append(inst["InstanceId"])
        return runtime
