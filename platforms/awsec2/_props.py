"""The awsec2 platform's features, properties, access variables and parsed settings.

Property names and defaults are the original's (`aws-generic/aws-props.go` plus the VM
provider properties an EC2 cloudlet reads); `AWS_ENDPOINT_URL` is ours: boto3's standard
name for a private endpoint (a VPC endpoint, a FIPS endpoint, or an emulator).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from edgeproto import cloudlet_pb2

from edge_cloud.errors import InvalidArgument
from edge_cloud.platform import (
    COMMON_QUOTA_RESOURCES,
    QUOTA_DESCRIPTIONS,
    RESOURCE_INSTANCES,
    PlatformFeatures,
    PropertyInfo,
    QuotaResource,
)

__all__ = [
    "ACCESS_VARS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_TOTP_SECRET_KEY",
    "FEATURES",
    "NO_CONFIG_ROUTER",
    "PLATFORM_TYPE",
    "PROPERTIES",
    "Settings",
    "parse_settings",
]

PLATFORM_TYPE: Final = "awsec2"
AWS_ACCESS_KEY_ID: Final = "AWS_ACCESS_KEY_ID"
AWS_SECRET_ACCESS_KEY: Final = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name
AWS_SESSION_TOKEN: Final = "AWS_SESSION_TOKEN"  # noqa: S105 - a variable name
AWS_TOTP_SECRET_KEY: Final = "aws_totp_secret_key"  # noqa: S105 - a variable name
NO_CONFIG_ROUTER: Final = "NOCONFIG"
"""The only `MEX_ROUTER` value EC2 accepts: routing is the VPC's, nothing to configure."""

ACCESS_VARS: Final[Mapping[str, PropertyInfo]] = {
    AWS_ACCESS_KEY_ID: PropertyInfo(name="AWS access key", mandatory=True),
    AWS_SECRET_ACCESS_KEY: PropertyInfo(
        name="AWS secret key associated with the access key", mandatory=True, secret=True
    ),
    AWS_TOTP_SECRET_KEY: PropertyInfo(
        name="AWS totp secret key",
        description=(
            "If MFA is enabled, this is the secret key that will be used to generate RFC 6238 "
            "TOTP codes. This is the text equivalent of the TOTP QR code for authentication apps."
        ),
        secret=True,
        totp_secret=True,
    ),
}

PROPERTIES: Final[Mapping[str, PropertyInfo]] = {
    "AWS_REGION": PropertyInfo(name="AWS Region", description="AWS Region", mandatory=True),
    "FLAVOR_MATCH_PATTERN": PropertyInfo(
        name="Flavor Match Pattern",
        description="Flavors matching this pattern will be used by Cloudlet to bringup VMs",
        value=r"^[acdhimrtz]\d+",
    ),
    "MEX_ROUTER": PropertyInfo(
        name="External Router Type",
        description=f"AWS Router must be {NO_CONFIG_ROUTER}",
        value=NO_CONFIG_ROUTER,
    ),
    "AWS_OUTPOST_VPC": PropertyInfo(
        name="AWS Outpost VPC", description="Pre-existing VPC for an outpost deployment"
    ),
    "AWS_AMI_IAM_OWNER": PropertyInfo(
        name="AWS Outpost AMI Owner", description="IAM Account that owns the base image"
    ),
    "AWS_OUTPOST_FLAVORS": PropertyInfo(
        name="AWS Outpost Flavors",
        description=(
            "AWS Outpost Flavors in format flavor1,vcpu,ram,disk;flavor2.. e.g. "
            "c5.large,2,4096,40;c5.xlarge,4,8192,40"
        ),
    ),
    "AWS_USER_ARN": PropertyInfo(
        name="AWS User ARN (Amazon Resource Name)",
        description="AWS User ARN (Amazon Resource Name); its MFA device signs session tokens",
    ),
    "AWS_ENDPOINT_URL": PropertyInfo(
        name="AWS endpoint URL",
        description="Endpoint for the EC2 and STS APIs instead of the public regional one",
    ),
    "MEX_OS_IMAGE": PropertyInfo(
        name="Cloudlet Image Name",
        description=(
            "Name of the AMI used for cloudlet VMs (platform VM, root LBs, cluster nodes); "
            "defaults to the base name of the cloudlet VM image path"
        ),
    ),
    "MEX_NETWORK_SCHEME": PropertyInfo(
        name="Internal Network Scheme",
        description="cidr=A.B.X.0/24: the VPC is A.B.0.0/16, X numbers the subnets",
        value="cidr=10.101.X.0/24",
    ),
    "MEX_SHARED_ROOTLB_RAM": PropertyInfo(
        name="RootLB RAM",
        description="Size of RAM (MB) required to bring up shared RootLB",
        value="4096",
    ),
    "MEX_SHARED_ROOTLB_VCPUS": PropertyInfo(
        name="RootLB vCPUs",
        description="Number of vCPUs required to bring up shared RootLB",
        value="2",
    ),
    "MEX_SHARED_ROOTLB_DISK": PropertyInfo(
        name="RootLB Disk",
        description="Size of disk (GB) required to bring up shared RootLB",
        value="40",
    ),
}

FEATURES: Final = PlatformFeatures(
    platform_type=PLATFORM_TYPE,
    requires_crm_on_edge=True,
    uses_root_lb=True,
    access_vars=ACCESS_VARS,
    properties=PROPERTIES,
    resource_quota_properties=tuple(
        QuotaResource(name=n, description=QUOTA_DESCRIPTIONS.get(n, ""))
        for n in (*COMMON_QUOTA_RESOURCES, RESOURCE_INSTANCES)
    ),
)
"""What awsec2 does. Against the original (MT ON RLB GPUD) it leaves out multi-tenant
clusters and GPU drivers, which need ssh into the VMs (kubectl, driver installs) that this
plugin does not have yet; declaring them would let the Controller accept work we refuse."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Properties of one cloudlet, parsed and checked.

    Attributes:
        region: AWS region of everything the cloudlet makes.
        flavor_pattern: Instance types offered as flavors.
        outpost_vpc: Pre-existing VPC (Outpost mode), empty for a VPC of our own.
        ami_owner: Account that owns the base image; empty asks STS for our own.
        outpost_flavors: Flavors of an Outpost, which has no instance-type catalogue.
        user_arn: IAM user whose MFA device signs session tokens; empty for no MFA.
        endpoint_url: API endpoint override, empty for AWS's own.
        os_image: AMI name for cloudlet VMs.
        vpc_octets: First two octets of the VPC's /16.
        root_lb_vcpus: Smallest vCPUs of the shared root LB's flavor.
        root_lb_ram: Smallest RAM (MB) of the shared root LB's flavor.
        root_lb_disk: Smallest disk (GB) of the shared root LB's flavor.
    """

    region: str
    flavor_pattern: re.Pattern[str]
    outpost_vpc: str = ""
    ami_owner: str = ""
    outpost_flavors: tuple[cloudlet_pb2.FlavorInfo, ...] = ()
    user_arn: str = ""
    endpoint_url: str = ""
    os_image: str = ""
    vpc_octets: tuple[int, int] = (10, 101)
    root_lb_vcpus: int = 2
    root_lb_ram: int = 4096
    root_lb_disk: int = 40

    @property
    def mfa_serial(self) -> str:
        """The MFA device of `user_arn` (the original's `:user/` → `:mfa/`)."""
        return self.user_arn.replace(":user/", ":mfa/", 1)

    @property
    def vpc_cidr(self) -> str:
        """The VPC's address block."""
        return f"{self.vpc_octets[0]}.{self.vpc_octets[1]}.0.0/16"

    def subnet_cidr(self, octet: int) -> str:
        """The /24 numbered `octet` inside the VPC."""
        return f"{self.vpc_octets[0]}.{self.vpc_octets[1]}.{octet}.0/24"


def _int(values: Mapping[str, str], name: str) -> int:
    raw = values.get(name, "")
    try:
        value = int(raw)
    except ValueError:
        raise InvalidArgument(f"property {name}={raw!r} must be a whole number") from None
    if value < 0:
        raise InvalidArgument(f"property {name}={raw!r} must not be negative")
    return value


def _outpost_flavors(raw: str) -> tuple[cloudlet_pb2.FlavorInfo, ...]:
    flavors: list[cloudlet_pb2.FlavorInfo] = []
    for item in filter(None, (s.strip() for s in raw.split(";"))):
        parts = [p.strip() for p in item.split(",")]
        if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
            raise InvalidArgument(
                f"badly formatted outpost flavor {item!r} in AWS_OUTPOST_FLAVORS: "
                "expected name,vcpus,ramMB,diskGB"
            )
        flavors.append(
            cloudlet_pb2.FlavorInfo(
                name=parts[0], vcpus=int(parts[1]), ram=int(parts[2]), disk=int(parts[3])
            )
        )
    return tuple(flavors)


def _octets(scheme: str) -> tuple[int, int]:
    fields = dict(p.partition("=")[::2] for p in scheme.split(",") if p)
    match = re.fullmatch(r"(\d{1,3})\.(\d{1,3})\.X\.0/24", fields.get("cidr", "").upper())
    if match is None or not all(0 <= int(g) <= 255 for g in match.groups()):
        raise InvalidArgument(
            f"MEX_NETWORK_SCHEME={scheme!r} is not supported on AWS: use cidr=A.B.X.0/24"
        )
    return int(match.group(1)), int(match.group(2))


def parse_settings(values: Mapping[str, str], image_path: str = "") -> Settings:
    """Check and parse resolved property values.

    Args:
        values: Every declared property, defaults filled in (`resolve_properties`).
        image_path: The cloudlet VM image path, whose base name is the default AMI name.

    Returns:
        The settings.

    Raises:
        InvalidArgument: A value that cannot work, naming the property.
    """
    region = values.get("AWS_REGION", "")
    if not region:
        raise InvalidArgument("property AWS_REGION is required: the AWS region of the cloudlet")
    router = values.get("MEX_ROUTER", NO_CONFIG_ROUTER)
    if router != NO_CONFIG_ROUTER:
        raise InvalidArgument(f"property MEX_ROUTER={router!r}: AWS Router must be NOCONFIG")
    pattern = values.get("FLAVOR_MATCH_PATTERN", "")
    try:
        flavor_pattern = re.compile(pattern)
    except re.error as err:
        raise InvalidArgument(
            f"property FLAVOR_MATCH_PATTERN={pattern!r} is not a regular expression: {err}"
        ) from None
    outpost_vpc = values.get("AWS_OUTPOST_VPC", "")
    outpost_flavors = _outpost_flavors(values.get("AWS_OUTPOST_FLAVORS", ""))
    if outpost_vpc and not outpost_flavors:
        raise InvalidArgument("AWS_OUTPOST_FLAVORS not set: an Outpost cloudlet lists its flavors")
    image = values.get("MEX_OS_IMAGE", "")
    if not image and image_path:
        image = image_path.rstrip("/").rsplit("/", 1)[-1].split("#", 1)[0]
        image = re.sub(r"\.(qcow2|vmdk|ova|ovf|img|raw)$", "", image)
    return Settings(
        region=region,
        flavor_pattern=flavor_pattern,
        outpost_vpc=outpost_vpc,
        ami_owner=values.get("AWS_AMI_IAM_OWNER", ""),
        outpost_flavors=outpost_flavors,
        user_arn=values.get("AWS_USER_ARN", ""),
        endpoint_url=values.get("AWS_ENDPOINT_URL", ""),
        os_image=image,
        vpc_octets=_octets(values.get("MEX_NETWORK_SCHEME", "") or "cidr=10.101.X.0/24"),
        root_lb_vcpus=_int(values, "MEX_SHARED_ROOTLB_VCPUS"),
        root_lb_ram=_int(values, "MEX_SHARED_ROOTLB_RAM"),
        root_lb_disk=_int(values, "MEX_SHARED_ROOTLB_DISK"),
    )
