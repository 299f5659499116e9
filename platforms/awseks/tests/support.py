"""Helpers for the awseks tests: a platform initialised against moto, and a leftovers check."""

from __future__ import annotations

import atexit
import datetime
import hashlib
import hmac
import itertools
import os
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from edgeproto import cloudlet_pb2, cloudletkey_pb2, clusterinst_pb2, flavor_pb2

from edge_cloud.localservers import ServerProcess, ServerStartError, find_binary, free_port
from edge_cloud.objects import keys
from edge_cloud.platform import LocalAccessApi, PlatformCaches, PlatformConfig, RecordedProgress
from platforms.awseks import AwsEksPlatform
from platforms.awseks._cluster import ROLE_PATH, TAG_CLOUDLET
from platforms.awseks._kubeconfig import TOKEN_HEADER, decode_token

REGION = "ap-southeast-2"  # no other test uses it: the EC2 plugin's tests share this moto
CREDS = {"AWS_ACCESS_KEY_ID": "AKIAEKSTEST000000001", "AWS_SECRET_ACCESS_KEY": "eks-secret"}
TEST_FLAVORS = r"^(t3|m5)\."  # listing every instance type takes moto ~10 s; tests narrow it
_counter = itertools.count(1)


def check_token(
    token: str,
    cluster: str,
    secrets: Mapping[str, str],
    *,
    now: datetime.datetime | None = None,
) -> str:
    """Validate an EKS bearer token the way STS does for the API server's authenticator.

    moto's server cannot route a presigned GET to STS (it infers the service from the
    Authorization header or the host, and a presigned URL has neither), so the check is
    done here: the URL must be a SigV4-presigned `GetCallerIdentity` that signs the
    `x-k8s-aws-id` header with this cluster's name, be at most 15 minutes old, and carry a
    signature that the account's secret key reproduces.

    Args:
        token: The bearer token.
        cluster: The cluster name the API server expects in `x-k8s-aws-id`.
        secrets: Secret key by access key id (the accounts STS knows).
        now: The time to check against (default: now).

    Returns:
        The access key id the token proves.

    Raises:
        ValueError: What is wrong with the token.
    """
    parts = urllib.parse.urlsplit(decode_token(token))
    params = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    if params.get("Action") != "GetCallerIdentity":
        raise ValueError(f"token is for {params.get('Action')!r}, not GetCallerIdentity")
    if params.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        raise ValueError("token is not SigV4-signed")
    signed = params.get("X-Amz-SignedHeaders", "").split(";")
    if TOKEN_HEADER not in signed:
        raise ValueError(f"token does not sign the {TOKEN_HEADER} header")
    key_id, day, region, service, _ = params["X-Amz-Credential"].split("/")
    if service != "sts":
        raise ValueError(f"token is signed for {service}, not sts")
    signed_at = datetime.datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(
        tzinfo=datetime.UTC
    )
    age = ((now or datetime.datetime.now(datetime.UTC)) - signed_at).total_seconds()
    if not -300 <= age <= 900:
        raise ValueError(f"token was signed {age:.0f}s ago; it is valid for 15 minutes")
    if key_id not in secrets:
        raise ValueError(f"unknown access key id {key_id}")
    values = {"host": parts.netloc, TOKEN_HEADER: cluster}
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(params.items())
        if k != "X-Amz-Signature"
    )
    canonical = "\n".join(
        [
            "GET",
            parts.path or "/",
            canonical_query,
            "".join(f"{h}:{values[h]}\n" for h in signed),
            ";".join(signed),
            hashlib.sha256(b"").hexdigest(),  # a GET has an empty body, and SigV4 signs it
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            params["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secrets[key_id]).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, params.get("X-Amz-Signature", "")):
        raise ValueError("token signature does not match (wrong secret, cluster or host)")
    return key_id


def start_iam_moto(root: Path) -> ServerProcess:
    """A moto server that knows AWS's managed IAM policies (the EKS roles attach them).

    `localservers.start_moto` strips `MOTO_*` variables from moto's environment, and moto
    loads the managed policies only with `MOTO_IAM_LOAD_MANAGED_POLICIES=true`, so the EKS
    tests start their own moto the same way with that one variable set.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    env["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    log_path = root / "moto.log"
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            [str(find_binary("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=root,
            env=env,
            start_new_session=True,
        )
    server = ServerProcess(
        name="moto",
        pid=popen.pid,
        popen=popen,
        endpoints={"client": f"http://127.0.0.1:{port}"},
        data_dir=root,
        log_path=log_path,
        ports={"client": port},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=2):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise ServerStartError(f"moto did not answer on port {port}: {server.log_tail()}")


def api_token_checker(
    sts_endpoint: str, cluster: str | Collection[str], secrets: Mapping[str, str]
) -> Callable[[str], bool]:
    """The test Kubernetes API server's authenticator for EKS clusters.

    The token must be well formed for the API server (`eks_token_problem`, with the STS
    emulator's address allowed) and carry a valid signature for the cluster (or one of the
    clusters, a collection the caller may keep adding to) that this server stands for
    (`check_token`), as STS would confirm.
    """
    # imported here: conftest imports this module before pytest may load the k8sapi plugin
    from tests.support.k8sapi import eks_token_problem

    host = urllib.parse.urlsplit(sts_endpoint).netloc
    names = [cluster] if isinstance(cluster, str) else cluster

    def check(token: str) -> bool:
        if eks_token_problem(token, extra_hosts=[host]) is not None:
            return False
        for name in list(names):
            try:
                check_token(token, name, secrets)
            except ValueError:
                continue
            return True
        return False

    return check


_shared: list[ServerProcess] = []


def shared_iam_moto(root: Path) -> ServerProcess:
    """One `start_iam_moto` server per test process, stopped (by its PID) at exit.

    The awseks tests and the conformance suite's awseks emulator share it: moto's first EC2
    call in a region loads its catalogue for seconds, which one server pays once.
    """
    if _shared and _shared[0].alive():
        return _shared[0]
    server = start_iam_moto(root)
    _shared[:] = [server]
    atexit.register(server.stop, 1.0)  # moto ignores SIGTERM; it holds nothing to save
    return server


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
