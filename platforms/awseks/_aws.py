"""AWS plumbing for the EKS plugin: the shared session (`platforms.common.aws`) plus EKS quotas.

Credentials, clients, retries, error translation and the instance-type catalogue are the
ones the EC2 plugin uses; what is EKS's own are the Service Quotas codes the original reads
and turning the catalogue into flavors filtered by `FLAVOR_MATCH_PATTERN`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from edgeproto import cloudlet_pb2

from platforms.common.aws import AwsCredentials, AwsSession, error_code

__all__ = [
    "DEFAULT_QUOTAS",
    "QUOTA_CLUSTERS",
    "QUOTA_NETWORK_LBS",
    "QUOTA_NODEGROUPS_PER_CLUSTER",
    "QUOTA_NODES_PER_NODEGROUP",
    "AwsCredentials",
    "EksSession",
    "error_code",
]

# Service Quotas codes the original reads (crm_platforms.md §11.6)
QUOTA_CLUSTERS: Final = ("eks", "L-1194D53C")
QUOTA_NODEGROUPS_PER_CLUSTER: Final = ("eks", "L-6D54EA21")
QUOTA_NODES_PER_NODEGROUP: Final = ("eks", "L-BD136A63")
QUOTA_NETWORK_LBS: Final = ("elasticloadbalancing", "L-69A177A2")

DEFAULT_QUOTAS: Final[Mapping[tuple[str, str], int]] = {
    QUOTA_CLUSTERS: 100,
    QUOTA_NODEGROUPS_PER_CLUSTER: 30,
    QUOTA_NODES_PER_NODEGROUP: 450,
    QUOTA_NETWORK_LBS: 50,
}
"""AWS's published default quotas, used when Service Quotas cannot answer for a service
(moto, for one, serves only the `vpc` service code)."""


class EksSession(AwsSession):
    """The shared AWS session, with the EKS plugin's flavor and quota views."""

    async def flavors(self, pattern: str) -> list[cloudlet_pb2.FlavorInfo]:
        """The region's instance types as flavors, names filtered by a regex.

        Args:
            pattern: `FLAVOR_MATCH_PATTERN` (searched, as Go's `regexp.MatchString` does).

        Returns:
            Flavors sorted by name: vCPUs, RAM in MB, and instance storage in GB (0 when
            the type has none: EBS volumes are sized separately).
        """
        regex = re.compile(pattern)
        types = await self.instance_types()
        return [
            cloudlet_pb2.FlavorInfo(name=name, vcpus=vcpus, ram=ram, disk=disk)
            for name, (vcpus, ram, disk) in sorted(types.items())
            if regex.search(name)
        ]

    async def quotas(self, service: str) -> dict[str, int]:
        """AWS's default quotas of one service, `DEFAULT_QUOTAS` filling what is not listed."""
        defaults = {code: v for (svc, code), v in DEFAULT_QUOTAS.items() if svc == service}
        return await self.default_quotas(service, defaults)
