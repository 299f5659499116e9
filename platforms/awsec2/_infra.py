"""EC2 resources of one cloudlet: found by tags, made idempotently, removed by owner.

Every resource the plugin makes carries three tags: `edgecloud:cloudlet` (which cloudlet),
`edgecloud:owner` (`cloudlet`, `cluster/<org>/<name>` or `appinst/<org>/<name>`) and
`edgecloud:role` (vpc, nat, sharedrootlb, ...), plus the usual `Name`. Creating means
"find by tags, else make"; deleting means "remove whatever carries the owner's tags", in
dependency order. So repeated calls do nothing twice, a platform object keeps no state of
its own, and a delete after a crash still finds everything (crm_platforms.md §11.5).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from edgeproto import cloudlet_pb2

from edge_cloud.platform import (
    PlatformPermanentError,
    PlatformResourceExhausted,
    PlatformTransientError,
    Progress,
)
from platforms.awsec2._client import AwsApi, InstanceSize

__all__ = [
    "ALIVE_STATES",
    "OWNER_CLOUDLET",
    "TAG_CLOUDLET",
    "TAG_OWNER",
    "TAG_ROLE",
    "Ec2Infra",
    "Network",
    "VmSpec",
]

log = logging.getLogger(__name__)

TAG_CLOUDLET: Final = "edgecloud:cloudlet"
TAG_OWNER: Final = "edgecloud:owner"
TAG_ROLE: Final = "edgecloud:role"
OWNER_CLOUDLET: Final = "cloudlet"
ALIVE_STATES: Final = ("pending", "running", "shutting-down", "stopping", "stopped")
EXTERNAL_OCTET: Final = 255
"""The external subnet is the VPC's last /24, as in the original."""
WAIT_DELAY: Final = 5.0
"""Seconds between state polls; a waiter's first poll is immediate."""
_WITH_STORAGE: Final = ({"Name": "instance-storage-supported", "Values": ["true"]},)
_ANYWHERE: Final = ({"CidrIp": "0.0.0.0/0"},)
_ANYWHERE6: Final = ({"CidrIpv6": "::/0"},)


@dataclass(frozen=True, slots=True)
class Network:
    """The cloudlet's network, as ids.

    Attributes:
        vpc_id: The VPC.
        security_group_id: The cloudlet security group (intra-VPC traffic).
        external_subnet_id: Subnet with the internet gateway route; LBs and VM apps.
        internal_route_table_id: Route table through the NAT gateway; cluster subnets.
    """

    vpc_id: str
    security_group_id: str
    external_subnet_id: str
    internal_route_table_id: str


@dataclass(frozen=True, slots=True)
class VmSpec:
    """One instance to run.

    Attributes:
        name: Its Name tag (unique within the cloudlet).
        role: Node type (`platformvm`, `sharedrootlb`, `k8s-cluster-node`, ...).
        flavor: Instance type.
        image_id: AMI.
        subnet_id: Subnet of its first interface.
        security_group_ids: Groups of its first interface.
        public: Give it a public address.
        disk_gb: Root volume size; 0 keeps the image's.
        user_data: Cloud-init.
    """

    name: str
    role: str
    flavor: str
    image_id: str
    subnet_id: str
    security_group_ids: tuple[str, ...]
    public: bool = False
    disk_gb: int = 0
    user_data: str = ""


def tags_of(item: dict[str, Any]) -> dict[str, str]:
    """An EC2 item's tags as a dict."""
    return {t["Key"]: t["Value"] for t in item.get("Tags", item.get("TagSet", [])) or []}


class Ec2Infra:
    """The EC2 side of one cloudlet.

    Args:
        api: Its clients.
        cloudlet_tag: Value of `edgecloud:cloudlet` (`<org>/<name>`).
        vpc_name: Name tag of its VPC.
    """

    def __init__(self, api: AwsApi, cloudlet_tag: str, vpc_name: str) -> None:
        self.api = api
        self.cloudlet_tag = cloudlet_tag
        self.vpc_name = vpc_name

    # -- tags and lookups ----------------------------------------------------------------------

    def tags(self, owner: str, role: str, name: str) -> list[dict[str, str]]:
        """The tags of a new resource."""
        return [
            {"Key": "Name", "Value": name},
            {"Key": TAG_CLOUDLET, "Value": self.cloudlet_tag},
            {"Key": TAG_OWNER, "Value": owner},
            {"Key": TAG_ROLE, "Value": role},
        ]

    def spec(self, kind: str, owner: str, role: str, name: str) -> list[dict[str, Any]]:
        """A `TagSpecifications` value."""
        return [{"ResourceType": kind, "Tags": self.tags(owner, role, name)}]

    def filters(self, owner: str | None = None, role: str | None = None) -> list[dict[str, Any]]:
        """Filters selecting this cloudlet's resources (of one owner, of one role)."""
        out: list[dict[str, Any]] = [{"Name": f"tag:{TAG_CLOUDLET}", "Values": [self.cloudlet_tag]}]
        if owner is not None:
            out.append({"Name": f"tag:{TAG_OWNER}", "Values": [owner]})
        if role is not None:
            out.append({"Name": f"tag:{TAG_ROLE}", "Values": [role]})
        return out

    async def _one(self, op: str, key: str, **params: Any) -> dict[str, Any] | None:
        items = await self.api.pages(op, key, **params)
        return items[0] if items else None

    async def instances(
        self, owner: str | None = None, role: str | None = None
    ) -> list[dict[str, Any]]:
        """This cloudlet's instances that are not terminated, oldest first."""
        filters = [
            *self.filters(owner, role),
            {"Name": "instance-state-name", "Values": list(ALIVE_STATES)},
        ]
        reservations = await self.api.pages("describe_instances", "Reservations", Filters=filters)
        found = [i for r in reservations for i in r.get("Instances", [])]
        return sorted(
            found, key=lambda i: (i.get("LaunchTime") or dt.datetime.min, i["InstanceId"])
        )

    async def vpc(self) -> dict[str, Any] | None:
        """The cloudlet's VPC, if made."""
        return await self._one("describe_vpcs", "Vpcs", Filters=self.filters(role="vpc"))

    async def network(self) -> Network:
        """The cloudlet network's ids.

        Raises:
            PlatformPermanentError: The cloudlet's network is not (completely) there.
        """
        vpc = await self.vpc()
        sg = await self._one(
            "describe_security_groups", "SecurityGroups", Filters=self.filters(role="cloudlet-sg")
        )
        subnet = await self._one(
            "describe_subnets", "Subnets", Filters=self.filters(role="external")
        )
        rt = await self._one(
            "describe_route_tables", "RouteTables", Filters=self.filters(role="internal-rt")
        )
        if vpc is None or sg is None or subnet is None or rt is None:
            raise PlatformPermanentError(
                f"the network of AWS cloudlet {self.cloudlet_tag} (VPC {self.vpc_name} in "
                f"{self.api.region}) is missing or incomplete: create the cloudlet first"
            )
        return Network(vpc["VpcId"], sg["GroupId"], subnet["SubnetId"], rt["RouteTableId"])

    # -- flavors and images --------------------------------------------------------------------

    async def catalogue(self) -> Mapping[str, InstanceSize]:
        """Instance types with instance storage (the original's filter), cached an hour."""
        session = await self.api.session()
        return await session.instance_types(_WITH_STORAGE)

    async def flavors(self) -> list[cloudlet_pb2.FlavorInfo]:
        """Flavors: instance types matching `FLAVOR_MATCH_PATTERN` (or the Outpost's list)."""
        settings = self.api.settings
        if settings.outpost_flavors:
            copies = []
            for flavor in settings.outpost_flavors:
                copy = cloudlet_pb2.FlavorInfo()
                copy.CopyFrom(flavor)
                copies.append(copy)
            return copies
        types = await self.catalogue()
        return [
            cloudlet_pb2.FlavorInfo(name=name, vcpus=v, ram=r, disk=d)
            for name, (v, r, d) in sorted(types.items())
            if settings.flavor_pattern.search(name)
        ]

    async def flavor_sizes(self, names: Iterable[str]) -> dict[str, tuple[int, int, int]]:
        """Sizes of instance types, asking AWS for those outside the catalogue."""
        known = {f.name: (f.vcpus, f.ram, f.disk) for f in self.api.settings.outpost_flavors}
        known.update(await self.catalogue())
        missing = sorted({n for n in names if n and n not in known})
        if missing:
            session = await self.api.session()
            for name, (vcpus, ram, _) in (await session.sizes_of(missing)).items():
                known[name] = (vcpus, ram, 0)  # EBS-only: the root disk is sized separately
        return known

    async def account_owner(self) -> str:
        """The account that owns images: `AWS_AMI_IAM_OWNER`, else our own (STS)."""
        if self.api.settings.ami_owner:
            return self.api.settings.ami_owner
        return await self.api.caller_account()

    async def image(self, name_or_id: str, what: str) -> dict[str, Any]:
        """An available AMI by id (`ami-...`) or by name and owner.

        Raises:
            PlatformPermanentError: No such image, or it is not available.
        """
        if name_or_id.startswith("ami-"):
            images = await self.api.pages(
                "describe_images",
                "Images",
                Filters=[{"Name": "image-id", "Values": [name_or_id]}],
            )
            where = f"image id {name_or_id}"
        else:
            owner = await self.account_owner()
            images = await self.api.pages(
                "describe_images",
                "Images",
                Owners=sorted({owner, "self"}),
                Filters=[{"Name": "name", "Values": [name_or_id]}],
            )
            where = f"image named {name_or_id!r} owned by account {owner}"
        if not images:
            raise PlatformPermanentError(
                f"{what}: {where} does not exist in AWS region {self.api.region}; register the "
                "AMI there (or set AWS_AMI_IAM_OWNER to the account that shares it)"
            )
        image = images[0]
        if image.get("State", "available") != "available":
            raise PlatformPermanentError(
                f"{what}: {where} is not available (state {image.get('State')}); retry once "
                "AWS has finished registering it"
            )
        return image

    # -- the cloudlet network ------------------------------------------------------------------

    async def ensure_network(self, progress: Progress) -> tuple[Network, bool]:
        """Make (or find) the VPC, gateways, security group, subnet and route tables.

        Returns:
            The network, and whether the VPC was made by this call.
        """
        s = self.api.settings
        call, owner = self.api.call, OWNER_CLOUDLET
        vpc = await self.vpc()
        made = vpc is None
        if vpc is None:
            progress.task("Creating VPC")
            vpc = (
                await call(
                    "create_vpc",
                    settle=True,
                    CidrBlock=s.vpc_cidr,
                    TagSpecifications=self.spec("vpc", owner, "vpc", self.vpc_name),
                )
            )["Vpc"]
        vpc_id = vpc["VpcId"]

        igw = await self._one(
            "describe_internet_gateways", "InternetGateways", Filters=self.filters(role="igw")
        )
        if igw is None:
            progress.task("Creating Internet Gateway")
            igw = (
                await call(
                    "create_internet_gateway",
                    settle=True,
                    TagSpecifications=self.spec("internet-gateway", owner, "igw", self.vpc_name),
                )
            )["InternetGateway"]
        if not any(a.get("VpcId") == vpc_id for a in igw.get("Attachments", [])):
            await call(
                "attach_internet_gateway",
                settle=True,
                InternetGatewayId=igw["InternetGatewayId"],
                VpcId=vpc_id,
            )
        main = await self._one(
            "describe_route_tables",
            "RouteTables",
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "association.main", "Values": ["true"]},
            ],
        )
        if main is None:
            raise PlatformTransientError(f"VPC {vpc_id} has no main route table yet; retry")
        if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in main.get("Routes", [])):
            await call(
                "create_route",
                settle=True,
                RouteTableId=main["RouteTableId"],
                DestinationCidrBlock="0.0.0.0/0",
                GatewayId=igw["InternetGatewayId"],
            )

        sg_id = await self.ensure_security_group(
            owner, "cloudlet-sg", f"{self.vpc_name}-cloudlet-sg", vpc_id, progress
        )
        await self.allow(sg_id, [("-1", 0, 0)], [{"CidrIp": s.vpc_cidr}])

        subnet = await self._one(
            "describe_subnets", "Subnets", Filters=self.filters(role="external")
        )
        if subnet is None:
            progress.task("Creating Subnet")
            subnet = (
                await call(
                    "create_subnet",
                    settle=True,
                    VpcId=vpc_id,
                    CidrBlock=s.subnet_cidr(EXTERNAL_OCTET),
                    TagSpecifications=self.spec(
                        "subnet", owner, "external", "external-network-shared"
                    ),
                )
            )["Subnet"]

        eip = await self._one(
            "describe_addresses", "Addresses", Filters=self.filters(role="nat-eip")
        )
        if eip is None:
            progress.task("Getting Elastic IP")
            eip = await call(
                "allocate_address",
                settle=True,
                Domain="vpc",
                TagSpecifications=self.spec("elastic-ip", owner, "nat-eip", self.vpc_name),
            )
        nat = await self._one(
            "describe_nat_gateways",
            "NatGateways",
            Filter=[
                *self.filters(role="nat"),
                {"Name": "state", "Values": ["pending", "available"]},
            ],
        )
        if nat is None:
            progress.task("Creating NAT Gateway")
            nat = (
                await call(
                    "create_nat_gateway",
                    settle=True,
                    SubnetId=subnet["SubnetId"],
                    AllocationId=eip["AllocationId"],
                    TagSpecifications=self.spec("natgateway", owner, "nat", self.vpc_name),
                )
            )["NatGateway"]
        await self.api.wait(
            "nat_gateway_available", WAIT_DELAY, 60, NatGatewayIds=[nat["NatGatewayId"]]
        )

        rt = await self._one(
            "describe_route_tables", "RouteTables", Filters=self.filters(role="internal-rt")
        )
        if rt is None:
            progress.task("Creating Route Table")
            rt = (
                await call(
                    "create_route_table",
                    settle=True,
                    VpcId=vpc_id,
                    TagSpecifications=self.spec(
                        "route-table", owner, "internal-rt", "mex-k8s-net-1"
                    ),
                )
            )["RouteTable"]
        if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in rt.get("Routes", [])):
            await call(
                "create_route",
                settle=True,
                RouteTableId=rt["RouteTableId"],
                DestinationCidrBlock="0.0.0.0/0",
                NatGatewayId=nat["NatGatewayId"],
            )
        return Network(vpc_id, sg_id, subnet["SubnetId"], rt["RouteTableId"]), made

    async def ensure_security_group(
        self, owner: str, role: str, name: str, vpc_id: str, progress: Progress
    ) -> str:
        """A security group of an owner, made if missing; its id."""
        found = await self._one(
            "describe_security_groups", "SecurityGroups", Filters=self.filters(owner, role)
        )
        if found is not None:
            return str(found["GroupId"])
        progress.task("Creating Security Group")
        made = await self.api.call(
            "create_security_group",
            settle=True,
            GroupName=name,
            Description=f"{role} of {owner} on cloudlet {self.cloudlet_tag}",
            VpcId=vpc_id,
            TagSpecifications=self.spec("security-group", owner, role, name),
        )
        return str(made["GroupId"])

    @staticmethod
    def _permissions(
        rules: Sequence[tuple[str, int, int]], ranges: Sequence[dict[str, str]]
    ) -> list[dict[str, Any]]:
        v4 = [r for r in ranges if "CidrIp" in r]
        v6 = [r for r in ranges if "CidrIpv6" in r]
        out: list[dict[str, Any]] = []
        for proto, low, high in rules:
            perm: dict[str, Any] = {"IpProtocol": proto, "IpRanges": v4, "Ipv6Ranges": v6}
            if proto != "-1":
                perm.update(FromPort=low, ToPort=high)
            out.append(perm)
        return out

    async def allow(
        self,
        group_id: str,
        rules: Sequence[tuple[str, int, int]],
        ranges: Sequence[dict[str, str]] = (*_ANYWHERE, *_ANYWHERE6),
    ) -> None:
        """Open ingress rules (protocol, from port, to port) that are not open yet."""
        group = await self._one("describe_security_groups", "SecurityGroups", GroupIds=[group_id])
        existing = {
            (
                p.get("IpProtocol"),
                p.get("FromPort"),
                p.get("ToPort"),
                c.get("CidrIp") or c.get("CidrIpv6"),
            )
            for p in (group or {}).get("IpPermissions", [])
            for c in [*p.get("IpRanges", []), *p.get("Ipv6Ranges", [])]
        }
        wanted = []
        for perm in self._permissions(rules, ranges):
            for cidr in [*perm["IpRanges"], *perm["Ipv6Ranges"]]:
                low, high = perm.get("FromPort"), perm.get("ToPort")
                entry = (perm["IpProtocol"], low, high, cidr.get("CidrIp") or cidr.get("CidrIpv6"))
                if entry not in existing:
                    wanted.append(
                        {
                            **{
                                k: v for k, v in perm.items() if k not in ("IpRanges", "Ipv6Ranges")
                            },
                            "IpRanges": [cidr] if "CidrIp" in cidr else [],
                            "Ipv6Ranges": [cidr] if "CidrIpv6" in cidr else [],
                        }
                    )
        if wanted:
            await self.api.call(
                "authorize_security_group_ingress",
                settle=True,
                GroupId=group_id,
                IpPermissions=wanted,
            )

    async def revoke(self, group_id: str, rules: Sequence[tuple[str, int, int]]) -> None:
        """Close ingress rules opened with `allow` (anywhere); closed ones are fine."""
        group = await self._one("describe_security_groups", "SecurityGroups", GroupIds=[group_id])
        if group is None:
            return
        present = {
            (p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort"))
            for p in group.get("IpPermissions", [])
        }
        perms = [
            p
            for p in self._permissions(rules, (*_ANYWHERE, *_ANYWHERE6))
            if (p["IpProtocol"], p.get("FromPort"), p.get("ToPort")) in present
        ]
        if perms:
            await self.api.call(
                "revoke_security_group_ingress", GroupId=group_id, IpPermissions=perms
            )

    # -- instances -----------------------------------------------------------------------------

    async def check_capacity(self, count: int, what: str) -> None:
        """Refuse `count` more instances that would pass the account's `max-instances`.

        AWS only says no once a launch is under way; asking first keeps a half-built cluster
        from being made and torn down again.

        Raises:
            PlatformResourceExhausted: The region has no room for them.
        """
        if count <= 0:
            return
        attrs = await self.api.call("describe_account_attributes", AttributeNames=["max-instances"])
        limit = _attribute(attrs, "max-instances")
        if limit <= 0:
            return
        reservations = await self.api.pages(
            "describe_instances",
            "Reservations",
            Filters=[{"Name": "instance-state-name", "Values": list(ALIVE_STATES)}],
        )
        running = sum(len(r.get("Instances", [])) for r in reservations)
        if running + count > limit:
            raise PlatformResourceExhausted(
                f"{what} needs {count} more EC2 instances, but the account runs {running} of its "
                f"limit of {limit} (max-instances) in {self.api.region}: delete instances or ask "
                "AWS for a higher limit"
            )

    async def run(
        self, owner: str, vms: Sequence[VmSpec], progress: Progress
    ) -> list[dict[str, Any]]:
        """Launch the VMs of an owner that are not running yet, and wait until all run.

        Returns:
            The owner's instances, running.
        """
        present = {tags_of(i).get("Name") for i in await self.instances(owner)}
        todo = [vm for vm in vms if vm.name not in present]
        for vm in todo:
            progress.step(f"Creating VM {vm.name}")
            params: dict[str, Any] = {
                "ImageId": vm.image_id,
                "InstanceType": vm.flavor,
                "MinCount": 1,
                "MaxCount": 1,
                "NetworkInterfaces": [
                    {
                        "DeviceIndex": 0,
                        "SubnetId": vm.subnet_id,
                        "Groups": list(vm.security_group_ids),
                        "AssociatePublicIpAddress": vm.public,
                        "DeleteOnTermination": True,
                    }
                ],
                "TagSpecifications": [
                    *self.spec("instance", owner, vm.role, vm.name),
                    *self.spec("volume", owner, vm.role, vm.name),
                ],
            }
            if vm.user_data:
                params["UserData"] = vm.user_data
            if vm.disk_gb > 0:
                params["BlockDeviceMappings"] = [
                    {
                        "DeviceName": "/dev/sda1",
                        "Ebs": {"VolumeSize": vm.disk_gb, "DeleteOnTermination": True},
                    }
                ]
            await self.api.call("run_instances", settle=True, **params)
        running = await self.instances(owner)
        if todo:
            progress.step("Waiting for VMs to run")
            await self.api.wait(
                "instance_running", WAIT_DELAY, 120, InstanceIds=[i["InstanceId"] for i in running]
            )
            running = await self.instances(owner)
        return running

    async def attach_interface(
        self, owner: str, instance: dict[str, Any], subnet_id: str, group_id: str, name: str
    ) -> None:
        """Plug an instance (a root LB) into a subnet, as its router (no source/dest check)."""
        found = await self._one(
            "describe_network_interfaces",
            "NetworkInterfaces",
            Filters=[*self.filters(owner, "lb-port"), {"Name": "subnet-id", "Values": [subnet_id]}],
        )
        if found is None:
            found = (
                await self.api.call(
                    "create_network_interface",
                    settle=True,
                    SubnetId=subnet_id,
                    Groups=[group_id],
                    Description=f"port {name}",
                    TagSpecifications=self.spec("network-interface", owner, "lb-port", name),
                )
            )["NetworkInterface"]
        eni = found["NetworkInterfaceId"]
        attachment = found.get("Attachment") or {}
        if attachment.get("InstanceId") != instance["InstanceId"]:
            used = {
                n.get("Attachment", {}).get("DeviceIndex", 0)
                for n in instance.get("NetworkInterfaces", [])
            }
            await self.api.call(
                "attach_network_interface",
                settle=True,
                NetworkInterfaceId=eni,
                InstanceId=instance["InstanceId"],
                DeviceIndex=max(used, default=0) + 1,
            )
        await self.api.call(
            "modify_network_interface_attribute",
            NetworkInterfaceId=eni,
            SourceDestCheck={"Value": False},
        )

    async def free_octet(self, vpc_id: str) -> int:
        """The lowest /24 of the VPC no subnet uses (1 to 254)."""
        subnets = await self.api.pages(
            "describe_subnets", "Subnets", Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]
        )
        used = {int(s["CidrBlock"].split(".")[2]) for s in subnets}
        for octet in range(1, EXTERNAL_OCTET):
            if octet not in used:
                return octet
        raise PlatformResourceExhausted(
            f"VPC {vpc_id} of cloudlet {self.cloudlet_tag} has no free /24 for another cluster"
        )

    async def ensure_subnet(self, owner: str, name: str, net: Network, progress: Progress) -> str:
        """An owner's subnet behind the NAT gateway, made if missing; its id."""
        found = await self._one(
            "describe_subnets", "Subnets", Filters=self.filters(owner, "subnet")
        )
        if found is None:
            progress.task("Creating Subnet")
            for _ in range(5):  # another cluster may take the same /24 at the same time
                cidr = self.api.settings.subnet_cidr(await self.free_octet(net.vpc_id))
                try:
                    found = (
                        await self.api.call(
                            "create_subnet",
                            settle=True,
                            VpcId=net.vpc_id,
                            CidrBlock=cidr,
                            TagSpecifications=self.spec("subnet", owner, "subnet", name),
                        )
                    )["Subnet"]
                    break
                except PlatformPermanentError as err:
                    if "InvalidSubnet.Conflict" not in str(err):
                        raise
            if found is None:
                raise PlatformTransientError(f"no free subnet for {name} after 5 tries; retry")
        subnet_id = str(found["SubnetId"])
        rt = await self._one(
            "describe_route_tables", "RouteTables", RouteTableIds=[net.internal_route_table_id]
        )
        if rt is not None and not any(
            a.get("SubnetId") == subnet_id for a in rt.get("Associations", [])
        ):
            await self.api.call(
                "associate_route_table",
                settle=True,
                RouteTableId=net.internal_route_table_id,
                SubnetId=subnet_id,
            )
        return subnet_id

    # -- removal -------------------------------------------------------------------------------

    async def terminate(self, owner: str | None, progress: Progress) -> list[dict[str, Any]]:
        """Terminate an owner's instances (all of the cloudlet's with None) and wait."""
        doomed = await self.instances(owner)
        if not doomed:
            return []
        ids = [i["InstanceId"] for i in doomed]
        progress.step(f"Deleting {len(ids)} VMs")
        await self.api.call("terminate_instances", settle=True, InstanceIds=ids)
        await self.api.wait("instance_terminated", WAIT_DELAY, 120, InstanceIds=ids)
        return doomed

    async def delete_owned(self, owner: str, progress: Progress) -> None:
        """Remove everything an owner (a cluster, an app instance) made, in dependency order."""
        await self.terminate(owner, progress)
        for eni in await self.api.pages(
            "describe_network_interfaces", "NetworkInterfaces", Filters=self.filters(owner)
        ):
            attachment = eni.get("Attachment") or {}
            if attachment.get("AttachmentId"):
                await self.api.call(
                    "detach_network_interface", AttachmentId=attachment["AttachmentId"], Force=True
                )
            await self._ignore_missing(
                "delete_network_interface", NetworkInterfaceId=eni["NetworkInterfaceId"]
            )
        for subnet in await self.api.pages(
            "describe_subnets", "Subnets", Filters=self.filters(owner)
        ):
            await self._delete_subnet(subnet)
        for sg in await self.api.pages(
            "describe_security_groups", "SecurityGroups", Filters=self.filters(owner)
        ):
            await self._ignore_missing("delete_security_group", GroupId=sg["GroupId"])

    async def _delete_subnet(self, subnet: dict[str, Any]) -> None:
        subnet_id = subnet["SubnetId"]
        tables = await self.api.pages(
            "describe_route_tables",
            "RouteTables",
            Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}],
        )
        for table in tables:
            for assoc in table.get("Associations", []):
                if assoc.get("SubnetId") == subnet_id:
                    await self._ignore_missing(
                        "disassociate_route_table", AssociationId=assoc["RouteTableAssociationId"]
                    )
        # interfaces AWS left behind (detached ports) would keep the subnet alive
        for eni in await self.api.pages(
            "describe_network_interfaces",
            "NetworkInterfaces",
            Filters=[
                {"Name": "subnet-id", "Values": [subnet_id]},
                {"Name": "status", "Values": ["available"]},
            ],
        ):
            await self._ignore_missing(
                "delete_network_interface", NetworkInterfaceId=eni["NetworkInterfaceId"]
            )
        await self._ignore_missing("delete_subnet", SubnetId=subnet_id)

    async def _ignore_missing(self, op: str, **params: Any) -> None:
        try:
            await self.api.call(op, **params)
        except PlatformPermanentError as err:
            if ".NotFound" not in str(err) and "NotFound" not in str(err).split(":")[0]:
                raise
            log.info("%s: already gone (%s)", op, err)

    async def delete_network(self, progress: Progress) -> None:
        """Remove every resource tagged with the cloudlet, in dependency order."""
        await self.terminate(None, progress)
        vpc = await self.vpc()
        progress.task("Deleting NAT Gateway")
        nats = await self.api.pages(
            "describe_nat_gateways",
            "NatGateways",
            Filter=[
                *self.filters(),
                {"Name": "state", "Values": ["pending", "available", "deleting"]},
            ],
        )
        for nat in nats:
            if nat.get("State") != "deleting":
                await self._ignore_missing("delete_nat_gateway", NatGatewayId=nat["NatGatewayId"])
        if nats:
            await self._wait_nat_deleted([n["NatGatewayId"] for n in nats])
        for eni in await self.api.pages(
            "describe_network_interfaces", "NetworkInterfaces", Filters=self.filters()
        ):
            attachment = eni.get("Attachment") or {}
            if attachment.get("AttachmentId"):
                await self.api.call(
                    "detach_network_interface", AttachmentId=attachment["AttachmentId"], Force=True
                )
            await self._ignore_missing(
                "delete_network_interface", NetworkInterfaceId=eni["NetworkInterfaceId"]
            )
        progress.task("Releasing Elastic IPs")
        for address in await self.api.pages(
            "describe_addresses", "Addresses", Filters=self.filters()
        ):
            if address.get("AssociationId"):
                await self._ignore_missing(
                    "disassociate_address", AssociationId=address["AssociationId"]
                )
            await self._ignore_missing("release_address", AllocationId=address["AllocationId"])
        progress.task("Deleting Subnets")
        for subnet in await self.api.pages("describe_subnets", "Subnets", Filters=self.filters()):
            await self._delete_subnet(subnet)
        for table in await self.api.pages(
            "describe_route_tables", "RouteTables", Filters=self.filters()
        ):
            await self._ignore_missing("delete_route_table", RouteTableId=table["RouteTableId"])
        for sg in await self.api.pages(
            "describe_security_groups", "SecurityGroups", Filters=self.filters()
        ):
            await self._ignore_missing("delete_security_group", GroupId=sg["GroupId"])
        for igw in await self.api.pages(
            "describe_internet_gateways", "InternetGateways", Filters=self.filters()
        ):
            for attachment in igw.get("Attachments", []):
                await self._ignore_missing(
                    "detach_internet_gateway",
                    InternetGatewayId=igw["InternetGatewayId"],
                    VpcId=attachment["VpcId"],
                )
            await self._ignore_missing(
                "delete_internet_gateway", InternetGatewayId=igw["InternetGatewayId"]
            )
        if vpc is not None:
            progress.task("Deleting VPC")
            await self._ignore_missing("delete_vpc", VpcId=vpc["VpcId"])

    async def _wait_nat_deleted(self, ids: list[str]) -> None:
        # no boto3 waiter exists for deletion; NAT gateways take about a minute on AWS
        delay, deadline = 0.2, time.monotonic() + 600
        while True:
            nats = await self.api.pages("describe_nat_gateways", "NatGateways", NatGatewayIds=ids)
            if all(n.get("State") in ("deleted", "failed") for n in nats):
                return
            if time.monotonic() > deadline:
                raise PlatformTransientError(
                    f"NAT gateways {', '.join(ids)} of cloudlet {self.cloudlet_tag} are still "
                    "being deleted after 10 minutes; retry the delete later"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, WAIT_DELAY)


def _attribute(response: dict[str, Any], name: str) -> int:
    for attr in response.get("AccountAttributes", []):
        if attr.get("AttributeName") == name:
            for value in attr.get("AttributeValues", []):
                raw = str(value.get("AttributeValue", ""))
                if raw.isdigit():
                    return int(raw)
    return 0
