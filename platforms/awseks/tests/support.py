"""Helpers for the awseks tests: a platform initialised against moto, and a leftovers check."""

from __future__ import annotations

import datetime
import itertools
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from edgeproto import cloudlet_pb2, cloudletkey_pb2, clusterinst_pb2, flavor_pb2

from edge_cloud.localservers import ServerProcess
from edge_cloud.objects import keys
from edge_cloud.platform import LocalAccessApi, PlatformCaches, PlatformConfig, RecordedProgress
from platforms.awseks import AwsEksPlatform
from platforms.awseks._cluster import ROLE_PATH, TAG_CLOUDLET
from platforms.awseks._kubeconfig import decode_token

REGION = "ap-southeast-2"  # no other test uses it: the EC2 plugin's tests share this moto
CREDS = {"AWS_ACCESS_KEY_ID": "AKIAEKSTEST000000001", "AWS_SECRET_ACCESS_KEY": "eks-secret"}
TEST_FLAVORS = r"^(t3|m5)\."  # listing every instance type takes moto ~10 s; tests narrow it
_counter = itertools.count(1)


def check_token(
    token: str,
    cluster: str,
    secrets: Mapping[str, str],
    *,
    sts_host: str,
    now: datetime.datetime | None = None,
) -> str:
    """Validate an EKS bearer token as STS does for the API server's authenticator.

    The check is the Kubernetes API test server's (`eks_token_problem` with the accounts'
    secrets): a SigV4-presigned `GetCallerIdentity` on the STS emulator that signs the
    `x-k8s-aws-id` header with this cluster's name, at most 15 minutes old, with a signature
    the account's secret key reproduces.

    Args:
        token: The bearer token.
        cluster: The cluster name the API server expects in `x-k8s-aws-id`.
        secrets: Secret key by access key id (the accounts STS knows).
        sts_host: The STS emulator's `host:port` (moto on loopback).
        now: The time to check against (default: now).

    Returns:
        The access key id the token proves.

    Raises:
        ValueError: What is wrong with the token.
    """
    # imported here: conftest imports this module before pytest may load the k8sapi plugin
    from tests.support.k8sapi import eks_token_problem

    problem = eks_token_problem(
        token, extra_hosts=[sts_host], now=now, accounts=secrets, clusters=cluster
    )
    if problem is not None:
        raise ValueError(problem)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(decode_token(token)).query)
    return query["X-Amz-Credential"][0].split("/")[0]


def api_token_checker(
    sts_endpoint: str, cluster: str | Collection[str], secrets: Mapping[str, str]
) -> Callable[[str], bool]:
    """The test Kubernetes API server's authenticator for EKS clusters.

    The token must be one STS would accept (`eks_token_checker`, with the STS emulator's
    address allowed and the accounts' secrets to verify the signature) for the cluster, or
    one of the clusters (a collection the caller may keep adding to), this server stands for.
    """
    # imported here: conftest imports this module before pytest may load the k8sapi plugin
    from tests.support.k8sapi import eks_token_checker

    host = urllib.parse.urlsplit(sts_endpoint).netloc
    return eks_token_checker([host], accounts=secrets, clusters=cluster)


def moto_url(server: ServerProcess) -> str:
    return server.endpoints["client"]


def client(server: ServerProcess, service: str) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=moto_url(server),
        aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"],
    )


@dataclass
class Site:
    """One test cloudlet with its initialised platform."""

    platform: AwsEksPlatform
    cloudlet: cloudlet_pb2.Cloudlet
    access: LocalAccessApi
    progress: RecordedProgress = field(default_factory=RecordedProgress)

    @property
    def tag(self) -> str:
        return f"{self.cloudlet.key.organization}/{self.cloudlet.physical_name}"


async def make_site(
    endpoint: str,
    *,
    env: Mapping[str, str] | None = None,
    access_vars: Mapping[str, str] | None = None,
    quotas: Mapping[str, int] | None = None,
    process_env: Mapping[str, str] | None = None,
) -> Site:
    """A cloudlet of a unique name, its platform initialised against `endpoint`."""
    name = f"eks{next(_counter)}-{uuid.uuid4().hex[:6]}"
    cloudlet = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization="aws-op", name=name),
        platform_type="awseks",
        physical_name=name,
    )
    cloudlet.env_var.update(
        {
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": endpoint,
            "FLAVOR_MATCH_PATTERN": TEST_FLAVORS,
            **(env or {}),
        }
    )
    for qname, value in (quotas or {}).items():
        cloudlet.resource_quotas.add(name=qname, value=value)
    caches = PlatformCaches(cloudlets={keys.key_string(cloudlet.key): cloudlet})
    config = PlatformConfig.for_cloudlet(
        cloudlet, caches=caches, process_env=dict(process_env or {})
    )
    access = LocalAccessApi(access_vars=CREDS if access_vars is None else access_vars)
    platform = AwsEksPlatform()
    site = Site(platform, cloudlet, access)
    await platform.init(config, access, site.progress)
    return site


def cluster_inst(
    name: str, *, nodes: int = 2, flavor: str = "t3.medium"
) -> clusterinst_pb2.ClusterInst:
    cluster = clusterinst_pb2.ClusterInst(deployment="kubernetes", num_nodes=nodes)
    cluster.key.name = name
    cluster.key.organization = "dev.org"
    cluster.node_resources.infra_node_flavor = flavor
    return cluster


async def create_cloudlet(site: Site) -> None:
    await site.platform.create_cloudlet(
        site.cloudlet, cloudlet_pb2.PlatformConfig(), flavor_pb2.Flavor(), site.progress
    )


def leftovers(server: ServerProcess, tag: str) -> dict[str, list[str]]:
    """Every EKS, IAM and EC2 resource tagged for a cloudlet; empty lists when clean."""
    tag_filter = [{"Name": f"tag:{TAG_CLOUDLET}", "Values": [tag]}]
    ec2 = client(server, "ec2")
    eks = client(server, "eks")
    iam = client(server, "iam")
    found: dict[str, list[str]] = {
        "clusters": [
            n
            for n in eks.list_clusters()["clusters"]
            if eks.describe_cluster(name=n)["cluster"].get("tags", {}).get(TAG_CLOUDLET) == tag
        ],
        "roles": [
            r["RoleName"]
            for r in iam.list_roles(PathPrefix=ROLE_PATH)["Roles"]
            if {"Key": TAG_CLOUDLET, "Value": tag}
            in iam.list_role_tags(RoleName=r["RoleName"])["Tags"]
        ],
        "vpcs": [v["VpcId"] for v in ec2.describe_vpcs(Filters=tag_filter)["Vpcs"]],
        "subnets": [s["SubnetId"] for s in ec2.describe_subnets(Filters=tag_filter)["Subnets"]],
        "security_groups": [
            g["GroupId"] for g in ec2.describe_security_groups(Filters=tag_filter)["SecurityGroups"]
        ],
        "gateways": [
            g["InternetGatewayId"]
            for g in ec2.describe_internet_gateways(Filters=tag_filter)["InternetGateways"]
        ],
        "route_tables": [
            t["RouteTableId"] for t in ec2.describe_route_tables(Filters=tag_filter)["RouteTables"]
        ],
    }
    return found


def nothing(found: dict[str, list[str]]) -> bool:
    return not any(found.values())
