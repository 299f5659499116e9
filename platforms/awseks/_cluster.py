"""One EKS cluster and everything it needs, built and torn down with boto3.

What eksctl hides behind CloudFormation, done call by call (crm_platforms.md §11.6):

1. IAM: a cluster role trusting `eks.amazonaws.com` (AmazonEKSClusterPolicy) and a node role
   trusting `ec2.amazonaws.com` (worker, CNI and ECR read-only policies), under the path
   `/edgecloud/`;
2. network: a VPC with DNS support, an internet gateway and a public route table, one
   subnet in each of two availability zones (tagged so Kubernetes may put load balancers
   there) and a security group open inside itself;
3. `create_cluster`, waited on with `cluster_active`; one managed node group sized by the
   ClusterInst, waited on with `nodegroup_active`.

Every resource carries the tags `edgecloud:cloudlet` and `edgecloud:cluster`, and deletion
finds what to remove by those tags rather than by remembered ids: the platform object keeps
no state, a half-made cluster is found and removed the same way, and a sweep of the
cloudlet's tag leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from edge_cloud.platform import PlatformPermanentError, Progress
from platforms.awseks._aws import EksSession, error_code

__all__ = [
    "MANAGED_BY",
    "ROLE_PATH",
    "TAG_CLOUDLET",
    "TAG_CLUSTER",
    "ClusterPlan",
    "EksClusters",
    "NodeGroupState",
]

log = logging.getLogger(__name__)

TAG_CLOUDLET: Final = "edgecloud:cloudlet"
TAG_CLUSTER: Final = "edgecloud:cluster"
TAG_MANAGED: Final = "edgecloud:managed-by"
MANAGED_BY: Final = "edge-cloud-platform"
ROLE_PATH: Final = "/edgecloud/"
NODEGROUP: Final = "workers"
VPC_CIDR: Final = "10.0.0.0/16"
SUBNET_CIDRS: Final = ("10.0.0.0/19", "10.0.32.0/19")
WAIT_DELAY: Final = 15
"""Seconds between polls of an EKS waiter (clusters take minutes; moto answers at once)."""

_CLUSTER_POLICIES: Final = ("arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",)
_NODE_POLICIES: Final = (
    "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
)
_GONE: Final = frozenset(
    {
        "ResourceNotFoundException",
        "NoSuchEntity",
        "InvalidVpcID.NotFound",
        "InvalidSubnetID.NotFound",
        "InvalidGroup.NotFound",
        "InvalidInternetGatewayID.NotFound",
        "InvalidRouteTableID.NotFound",
        "InvalidAssociationID.NotFound",
        "Gateway.NotAttached",
    }
)


def _trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


def _gone(err: BaseException) -> bool:
    """Whether a failure says the thing is not there (deleting it again is done)."""
    return error_code(err.__cause__ or err) in _GONE


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """What to build for one ClusterInst.

    Attributes:
        name: EKS cluster name (sanitized ClusterInst name).
        instance_type: EC2 instance type of the workers (the matched flavor).
        nodes: Worker count (min = max = desired: autoscaling is the Controller's).
        version: Kubernetes version.
        labels: Kubernetes labels for the nodes.
    """

    name: str
    instance_type: str
    nodes: int
    version: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeGroupState:
    """A cluster as EKS reports it, for resource counts.

    Attributes:
        name: EKS cluster name.
        nodes: Desired size of its node group (0 when it has none yet).
        instance_type: Its instance type, empty without a node group.
        status: The cluster's status (`ACTIVE`, `CREATING`, ...).
    """

    name: str
    nodes: int
    instance_type: str
    status: str


class EksClusters:
    """Builds, resizes, lists and removes the EKS clusters of one cloudlet.

    Args:
        aws: The account's session.
        cloudlet_tag: Value of the `edgecloud:cloudlet` tag (`<org>/<physical name>`).
    """

    def __init__(self, aws: EksSession, cloudlet_tag: str) -> None:
        self.aws = aws
        self.cloudlet_tag = cloudlet_tag

    # -- naming and tags -----------------------------------------------------------------------

    def tags(self, cluster: str) -> dict[str, str]:
        """The tags every resource of a cluster carries."""
        return {TAG_CLOUDLET: self.cloudlet_tag, TAG_CLUSTER: cluster, TAG_MANAGED: MANAGED_BY}

    def _tag_list(self, cluster: str, name: str) -> list[dict[str, str]]:
        tags = [{"Key": k, "Value": v} for k, v in self.tags(cluster).items()]
        return [*tags, {"Key": "Name", "Value": name}]

    def _spec(self, kind: str, cluster: str, name: str) -> list[dict[str, Any]]:
        return [{"ResourceType": kind, "Tags": self._tag_list(cluster, name)}]

    @staticmethod
    def role_name(cluster: str, kind: str) -> str:
        """IAM role name of a cluster (64 characters at most, unique through a hash)."""
        digest = hashlib.sha256(cluster.encode()).hexdigest()[:8]
        return f"eks-{cluster[:40]}-{digest}-{kind}"

    # -- queries -------------------------------------------------------------------------------

    async def describe(self, name: str) -> dict[str, Any] | None:
        """The EKS cluster, or None when it does not exist."""
        try:
            reply = await self.aws.call("eks", "describe_cluster", name=name)
        except PlatformPermanentError as err:
            if _gone(err):
                return None
            raise
        cluster: dict[str, Any] = reply["cluster"]
        return cluster

    async def _nodegroup(self, name: str) -> dict[str, Any] | None:
        try:
            reply = await self.aws.call(
                "eks", "describe_nodegroup", clusterName=name, nodegroupName=NODEGROUP
            )
        except PlatformPermanentError as err:
            if _gone(err):
                return None
            raise
        group: dict[str, Any] = reply["nodegroup"]
        return group

    async def all_names(self) -> list[str]:
        """Every EKS cluster in the region, whoever made it (for the region's quota)."""

        def collect() -> list[str]:
            pages = self.aws.client("eks").get_paginator("list_clusters").paginate()
            return [n for page in pages for n in page.get("clusters", [])]

        return await self.aws.run("eks list_clusters", collect)

    async def ours(self) -> list[NodeGroupState]:
        """The clusters tagged for this cloudlet, with their node group sizes."""
        found: list[NodeGroupState] = []
        for name in await self.all_names():
            cluster = await self.describe(name)
            if cluster is None or cluster.get("tags", {}).get(TAG_CLOUDLET) != self.cloudlet_tag:
                continue
            group = await self._nodegroup(name)
            scaling = (group or {}).get("scalingConfig", {})
            types = (group or {}).get("instanceTypes") or [""]
            found.append(
                NodeGroupState(
                    name=name,
                    nodes=int(scaling.get("desiredSize", 0)),
                    instance_type=str(types[0]),
                    status=str(cluster.get("status", "")),
                )
            )
        return found

    # -- create --------------------------------------------------------------------------------

    async def create(self, plan: ClusterPlan, progress: Progress) -> dict[str, Any]:
        """Build a cluster, or finish one a previous attempt left half made.

        Returns:
            The ACTIVE cluster as `describe_cluster` reports it.

        Raises:
            PlatformPermanentError: The name is taken by a cluster that is not ours, or AWS
                refused a step. The caller removes the remains (`delete`).
        """
        existing = await self.describe(plan.name)
        if existing is not None:
            if existing.get("tags", {}).get(TAG_CLOUDLET) != self.cloudlet_tag:
                raise PlatformPermanentError(
                    f"an EKS cluster named {plan.name} already exists in {self.aws.region} and "
                    f"was not made for cloudlet {self.cloudlet_tag}; rename the ClusterInst"
                )
            progress.step(f"EKS cluster {plan.name} exists ({existing.get('status')})")
        else:
            progress.task("Creating IAM roles")
            cluster_role = await self._role(plan.name, "cluster", "eks.amazonaws.com")
            progress.task("Creating VPC")
            subnets, group = await self._network(plan.name)
            progress.task("Creating EKS cluster")
            await self.aws.call(
                "eks",
                "create_cluster",
                name=plan.name,
                version=plan.version,
                roleArn=cluster_role,
                resourcesVpcConfig={
                    "subnetIds": subnets,
                    "securityGroupIds": [group],
                    "endpointPublicAccess": True,
                    "endpointPrivateAccess": True,
                },
                tags=self.tags(plan.name),
            )
        progress.step("Waiting for the EKS cluster to become active")
        await self._wait("cluster_active", name=plan.name)
        if await self._nodegroup(plan.name) is None:
            progress.task("Creating node group")
            node_role_arn = await self._role(plan.name, "node", "ec2.amazonaws.com")
            cluster = await self.describe(plan.name) or {}
            subnets = list(cluster.get("resourcesVpcConfig", {}).get("subnetIds", []))
            await self.aws.call(
                "eks",
                "create_nodegroup",
                clusterName=plan.name,
                nodegroupName=NODEGROUP,
                scalingConfig={
                    "minSize": plan.nodes,
                    "maxSize": plan.nodes,
                    "desiredSize": plan.nodes,
                },
                instanceTypes=[plan.instance_type],
                subnets=subnets,
                nodeRole=node_role_arn,
                labels=dict(plan.labels),
                tags=self.tags(plan.name),
            )
        progress.step(f"Waiting for {plan.nodes} {plan.instance_type} nodes")
        await self._wait("nodegroup_active", clusterName=plan.name, nodegroupName=NODEGROUP)
        return await self.describe(plan.name) or {}

    async def _role(self, cluster: str, kind: str, service: str) -> str:
        """Create (or find) a role trusting `service` with its policies; its ARN."""
        name = self.role_name(cluster, kind)
        try:
            reply = await self.aws.call("iam", "get_role", RoleName=name)
        except PlatformPermanentError as err:
            if not _gone(err):
                raise
            reply = await self.aws.call(
                "iam",
                "create_role",
                RoleName=name,
                Path=ROLE_PATH,
                AssumeRolePolicyDocument=_trust(service),
                Description=f"EKS {kind} role of {cluster} ({self.cloudlet_tag})",
                Tags=[{"Key": k, "Value": v} for k, v in self.tags(cluster).items()],
            )
        policies = _CLUSTER_POLICIES if kind == "cluster" else _NODE_POLICIES
        for arn in policies:
            await self.aws.call("iam", "attach_role_policy", RoleName=name, PolicyArn=arn)
        return str(reply["Role"]["Arn"])

    async def _network(self, cluster: str) -> tuple[list[str], str]:
        """VPC, gateway, routes, two subnets in two zones and a security group."""
        ec2 = "ec2"
        vpc = (
            await self.aws.call(
                ec2,
                "create_vpc",
                CidrBlock=VPC_CIDR,
                TagSpecifications=self._spec("vpc", cluster, f"{cluster}-vpc"),
            )
        )["Vpc"]["VpcId"]
        for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):
            switch: dict[str, Any] = {attribute: {"Value": True}}
            await self.aws.call(ec2, "modify_vpc_attribute", VpcId=vpc, **switch)
        gateway = (
            await self.aws.call(
                ec2,
                "create_internet_gateway",
                TagSpecifications=self._spec("internet-gateway", cluster, f"{cluster}-igw"),
            )
        )["InternetGateway"]["InternetGatewayId"]
        await self.aws.call(ec2, "attach_internet_gateway", InternetGatewayId=gateway, VpcId=vpc)
        table = (
            await self.aws.call(
                ec2,
                "create_route_table",
                VpcId=vpc,
                TagSpecifications=self._spec("route-table", cluster, f"{cluster}-public"),
            )
        )["RouteTable"]["RouteTableId"]
        await self.aws.call(
            ec2,
            "create_route",
            RouteTableId=table,
            DestinationCidrBlock="0.0.0.0/0",
            GatewayId=gateway,
        )
        zones = [
            z["ZoneName"]
            for z in (
                await self.aws.call(
                    ec2,
                    "describe_availability_zones",
                    Filters=[{"Name": "state", "Values": ["available"]}],
                )
            )["AvailabilityZones"]
        ]
        if len(zones) < len(SUBNET_CIDRS):
            raise PlatformPermanentError(
                f"EKS needs subnets in {len(SUBNET_CIDRS)} availability zones; region "
                f"{self.aws.region} offers {len(zones)} ({', '.join(zones) or 'none'})"
            )
        subnets: list[str] = []
        for cidr, zone in zip(SUBNET_CIDRS, sorted(zones), strict=False):
            spec = self._spec("subnet", cluster, f"{cluster}-{zone}")
            spec[0]["Tags"] += [
                {"Key": f"kubernetes.io/cluster/{cluster}", "Value": "shared"},
                {"Key": "kubernetes.io/role/elb", "Value": "1"},
            ]
            subnet = (
                await self.aws.call(
                    ec2,
                    "create_subnet",
                    VpcId=vpc,
                    CidrBlock=cidr,
                    AvailabilityZone=zone,
                    TagSpecifications=spec,
                )
            )["Subnet"]["SubnetId"]
            await self.aws.call(
                ec2,
                "modify_subnet_attribute",
                SubnetId=subnet,
                MapPublicIpOnLaunch={"Value": True},
            )
            await self.aws.call(ec2, "associate_route_table", RouteTableId=table, SubnetId=subnet)
            subnets.append(subnet)
        group = (
            await self.aws.call(
                ec2,
                "create_security_group",
                GroupName=f"{cluster}-cluster",
                Description=f"EKS cluster {cluster} of {self.cloudlet_tag}",
                VpcId=vpc,
                TagSpecifications=self._spec("security-group", cluster, f"{cluster}-cluster"),
            )
        )["GroupId"]
        await self.aws.call(
            ec2,
            "authorize_security_group_ingress",
            GroupId=group,
            IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group}]}],
        )
        return subnets, group

    async def _wait(self, waiter: str, **params: Any) -> None:
        def wait() -> None:
            self.aws.client("eks").get_waiter(waiter).wait(
                WaiterConfig={"Delay": WAIT_DELAY, "MaxAttempts": 120}, **params
            )

        await self.aws.run(f"eks {waiter}", wait, settle=False)

    # -- update --------------------------------------------------------------------------------

    async def resize(self, name: str, nodes: int, progress: Progress) -> None:
        """Set the node group's size (`update_nodegroup_config`) and wait for it."""
        group = await self._nodegroup(name)
        if group is None:
            raise PlatformPermanentError(
                f"EKS cluster {name} has no node group {NODEGROUP} in {self.aws.region}; "
                "delete and recreate the ClusterInst"
            )
        if int(group.get("scalingConfig", {}).get("desiredSize", -1)) == nodes:
            return
        progress.task(f"Scaling node group to {nodes} nodes")
        await self.aws.call(
            "eks",
            "update_nodegroup_config",
            clusterName=name,
            nodegroupName=NODEGROUP,
            scalingConfig={"minSize": nodes, "maxSize": nodes, "desiredSize": nodes},
        )
        await self._wait("nodegroup_active", clusterName=name, nodegroupName=NODEGROUP)

    # -- delete --------------------------------------------------------------------------------

    async def delete(self, name: str, progress: Progress) -> None:
        """Remove a cluster and everything tagged for it; what is already gone is fine.

        Raises:
            PlatformPermanentError: A cluster of that name exists but is not ours.
        """
        cluster = await self.describe(name)
        if cluster is not None:
            if cluster.get("tags", {}).get(TAG_CLOUDLET) != self.cloudlet_tag:
                raise PlatformPermanentError(
                    f"EKS cluster {name} in {self.aws.region} was not made for cloudlet "
                    f"{self.cloudlet_tag}; not deleting it"
                )
            if await self._nodegroup(name) is not None:
                progress.task("Deleting node group")
                await self._ignore_gone(
                    self.aws.call(
                        "eks", "delete_nodegroup", clusterName=name, nodegroupName=NODEGROUP
                    )
                )
                await self._wait("nodegroup_deleted", clusterName=name, nodegroupName=NODEGROUP)
            progress.task("Deleting EKS cluster")
            await self._ignore_gone(self.aws.call("eks", "delete_cluster", name=name))
            await self._wait("cluster_deleted", name=name)
        progress.task("Deleting VPC")
        await self.delete_network({TAG_CLUSTER: name, TAG_CLOUDLET: self.cloudlet_tag})
        progress.task("Deleting IAM roles")
        for kind in ("node", "cluster"):
            await self._delete_role(self.role_name(name, kind))

    async def sweep(self, progress: Progress) -> list[str]:
        """Remove every cluster, network and role tagged for this cloudlet.

        Returns:
            Names of the clusters found and removed.
        """
        names = [c.name for c in await self.ours()]
        for name in names:
            await self.delete(name, progress)
        await self.delete_network({TAG_CLOUDLET: self.cloudlet_tag})
        for role in await self.roles():
            await self._delete_role(role)
        return names

    async def roles(self) -> list[str]:
        """Names of the IAM roles tagged for this cloudlet."""

        def collect() -> list[dict[str, Any]]:
            pages = (
                self.aws.client("iam").get_paginator("list_roles").paginate(PathPrefix=ROLE_PATH)
            )
            return [r for page in pages for r in page.get("Roles", [])]

        names: list[str] = []
        for role in await self.aws.run("iam list_roles", collect):
            try:
                tags = (await self.aws.call("iam", "list_role_tags", RoleName=role["RoleName"]))[
                    "Tags"
                ]
            except PlatformPermanentError as err:
                if _gone(err):
                    continue
                raise
            if {"Key": TAG_CLOUDLET, "Value": self.cloudlet_tag} in tags:
                names.append(str(role["RoleName"]))
        return names

    @staticmethod
    async def _ignore_gone(call: Any) -> None:
        try:
            await call
        except PlatformPermanentError as err:
            if not _gone(err):
                raise

    async def _delete_role(self, name: str) -> None:
        try:
            attached = await self.aws.call("iam", "list_attached_role_policies", RoleName=name)
        except PlatformPermanentError as err:
            if _gone(err):
                return
            raise
        for policy in attached.get("AttachedPolicies", []):
            await self._ignore_gone(
                self.aws.call(
                    "iam", "detach_role_policy", RoleName=name, PolicyArn=policy["PolicyArn"]
                )
            )
        await self._ignore_gone(self.aws.call("iam", "delete_role", RoleName=name))

    @staticmethod
    def _filters(tags: Mapping[str, str]) -> list[dict[str, Any]]:
        return [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]

    async def delete_network(self, tags: Mapping[str, str]) -> None:
        """Remove the VPCs carrying `tags` with their groups, subnets, routes and gateways."""
        ec2 = "ec2"
        vpcs = (await self.aws.call(ec2, "describe_vpcs", Filters=self._filters(tags)))["Vpcs"]
        for vpc in vpcs:
            vpc_id = vpc["VpcId"]
            in_vpc = [{"Name": "vpc-id", "Values": [vpc_id]}]
            groups = (await self.aws.call(ec2, "describe_security_groups", Filters=in_vpc))[
                "SecurityGroups"
            ]
            for group in groups:
                if group.get("GroupName") != "default":
                    await self._ignore_gone(
                        self.aws.call(ec2, "delete_security_group", GroupId=group["GroupId"])
                    )
            tables = (await self.aws.call(ec2, "describe_route_tables", Filters=in_vpc))[
                "RouteTables"
            ]
            for table in tables:
                if any(a.get("Main") for a in table.get("Associations", [])):
                    continue
                for assoc in table.get("Associations", []):
                    await self._ignore_gone(
                        self.aws.call(
                            ec2,
                            "disassociate_route_table",
                            AssociationId=assoc["RouteTableAssociationId"],
                        )
                    )
                await self._ignore_gone(
                    self.aws.call(ec2, "delete_route_table", RouteTableId=table["RouteTableId"])
                )
            subnets = (await self.aws.call(ec2, "describe_subnets", Filters=in_vpc))["Subnets"]
            for subnet in subnets:
                await self._ignore_gone(
                    self.aws.call(ec2, "delete_subnet", SubnetId=subnet["SubnetId"])
                )
            gateways = (
                await self.aws.call(
                    ec2,
                    "describe_internet_gateways",
                    Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}],
                )
            )["InternetGateways"]
            for gateway in gateways:
                gw = gateway["InternetGatewayId"]
                await self._ignore_gone(
                    self.aws.call(
                        ec2, "detach_internet_gateway", InternetGatewayId=gw, VpcId=vpc_id
                    )
                )
                await self._ignore_gone(
                    self.aws.call(ec2, "delete_internet_gateway", InternetGatewayId=gw)
                )
            await self._ignore_gone(self.aws.call(ec2, "delete_vpc", VpcId=vpc_id))
        # gateways of a VPC that a failed attempt never attached to it
        loose = (
            await self.aws.call(ec2, "describe_internet_gateways", Filters=self._filters(tags))
        )["InternetGateways"]
        for gateway in loose:
            await self._ignore_gone(
                self.aws.call(
                    ec2, "delete_internet_gateway", InternetGatewayId=gateway["InternetGatewayId"]
                )
            )
