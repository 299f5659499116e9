"""awseks against moto: cloudlet checks, flavors, quotas, the cluster lifecycle, nothing left."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import urllib.parse

import pytest
from edgeproto import cloudlet_pb2, refs_pb2

from edge_cloud.errors import InvalidArgument, NotSupportedByPlatform
from edge_cloud.localservers import ServerProcess
from edge_cloud.platform import PlatformPermanentError, PlatformResourceExhausted, registry
from platforms.awseks import AwsEksPlatform
from platforms.awseks._cluster import TAG_CLOUDLET
from platforms.awseks._kubeconfig import TOKEN_HEADER, decode_token
from platforms.awseks.tests.support import (
    CREDS,
    REGION,
    check_token,
    client,
    cluster_inst,
    create_cloudlet,
    leftovers,
    make_site,
    moto_url,
    nothing,
)

SECRETS = {CREDS["AWS_ACCESS_KEY_ID"]: CREDS["AWS_SECRET_ACCESS_KEY"]}


def test_features_are_a_managed_kubernetes_public_cloud() -> None:
    f = registry.features("awseks")
    assert registry.load("awseks") is AwsEksPlatform
    assert f.supports_kubernetes_only
    assert f.kubernetes_managed_control_plane
    assert f.ip_allocated_per_service
    assert f.requires_crm_off_edge
    assert f.uses_ingress
    assert not f.requires_crm_on_edge
    assert not f.uses_root_lb
    assert f.properties["AWS_REGION"].mandatory
    assert f.properties["FLAVOR_MATCH_PATTERN"].value == r"^[acdhimrtz]\d+"
    assert f.access_vars["AWS_SECRET_ACCESS_KEY"].secret
    assert {q.name for q in f.resource_quota_properties} >= {
        "K8s Clusters",
        "Maximum K8s Nodes Per Cluster",
        "Total Number Of K8s Nodes",
        "Network Load Balancers",
    }


def test_the_default_flavor_pattern_keeps_general_purpose_families() -> None:
    pattern = re.compile(registry.features("awseks").properties["FLAVOR_MATCH_PATTERN"].value)
    kept = ["t3.medium", "m5.large", "c6i.xlarge", "r7g.2xlarge", "z1d.large"]
    dropped = ["g4dn.xlarge", "p3.2xlarge", "x1e.xlarge", "inf1.xlarge", "u-6tb1.metal"]
    assert all(pattern.search(n) for n in kept)
    assert not any(pattern.search(n) for n in dropped)


def test_names_drop_dots_and_stay_legal_for_eks() -> None:
    p = AwsEksPlatform()
    assert p.name_sanitize("my.cluster-dev.org") == "mycluster-devorg"
    assert p.name_sanitize("a b/c") == "a-b-c"
    assert len(p.name_sanitize("x" * 300)) == 100


async def test_init_refuses_missing_region_and_credentials(eks_moto: ServerProcess) -> None:
    with pytest.raises(InvalidArgument, match="AWS_REGION"):
        await make_site(moto_url(eks_moto), env={"AWS_REGION": ""})
    with pytest.raises(InvalidArgument, match="has no AWS credentials"):
        await make_site(moto_url(eks_moto), access_vars={})
    with pytest.raises(InvalidArgument, match="FLAVOR_MATCH_PATTERN"):
        await make_site(moto_url(eks_moto), env={"FLAVOR_MATCH_PATTERN": "(["})


async def test_credentials_fall_back_to_the_daemon_environment(
    eks_moto: ServerProcess,
) -> None:
    site = await make_site(
        moto_url(eks_moto),
        access_vars={},
        process_env={"AWS_ACCESS_KEY_ID": "AKIAENV", "AWS_SECRET_ACCESS_KEY": "s"},
    )
    assert site.platform.aws.credentials.source == "environment"
    assert site.platform.aws.credentials.access_key_id == "AKIAENV"
    await create_cloudlet(site)


async def test_cloudlet_create_checks_the_account_and_lists_flavors(
    eks_moto: ServerProcess,
) -> None:
    site = await make_site(moto_url(eks_moto))
    await create_cloudlet(site)
    assert "Verifying AWS credentials" in site.progress.messages
    info = await site.platform.gather_cloudlet_info()
    names = {f.name: f for f in info.flavors}
    assert {"t3.medium", "m5.large"} <= set(names)
    assert all(n.startswith(("t3.", "m5.")) for n in names)  # TEST_FLAVORS, searched
    assert (names["t3.medium"].vcpus, names["t3.medium"].ram, names["t3.medium"].disk) == (
        2,
        4096,
        0,
    )
    narrow = await make_site(
        moto_url(eks_moto), env={"FLAVOR_MATCH_PATTERN": r"^t3\.(nano|micro)$"}
    )
    assert [f.name for f in await narrow.platform.get_flavors()] == ["t3.micro", "t3.nano"]
    restricted = cloudlet_pb2.Cloudlet()
    restricted.CopyFrom(site.cloudlet)
    restricted.infra_api_access = cloudlet_pb2.RESTRICTED_ACCESS
    with pytest.raises(NotSupportedByPlatform, match="restricted-access"):
        await site.platform.create_cloudlet(
            restricted, cloudlet_pb2.PlatformConfig(), cloudlet_pb2.Cloudlet().flavor, site.progress
        )


async def test_cluster_lifecycle_builds_everything_and_leaves_nothing(
    eks_moto: ServerProcess,
) -> None:
    site = await make_site(moto_url(eks_moto))
    await create_cloudlet(site)
    cluster = cluster_inst("web.1", nodes=2)
    annotations = await site.platform.create_cluster_inst(cluster, site.progress, timeout=60)
    name = "web1-devorg"
    assert annotations["eks-cluster-name"] == name
    eks, iam, ec2 = (client(eks_moto, s) for s in ("eks", "iam", "ec2"))
    described = eks.describe_cluster(name=name)["cluster"]
    assert described["status"] == "ACTIVE"
    assert described["tags"][TAG_CLOUDLET] == site.tag
    group = eks.describe_nodegroup(clusterName=name, nodegroupName="workers")["nodegroup"]
    assert group["scalingConfig"] == {"minSize": 2, "maxSize": 2, "desiredSize": 2}
    assert group["instanceTypes"] == ["t3.medium"]
    # two subnets in two zones, in a VPC of the cluster's own
    subnets = ec2.describe_subnets(SubnetIds=described["resourcesVpcConfig"]["subnetIds"])
    assert len({s["AvailabilityZone"] for s in subnets["Subnets"]}) == 2
    (vpc,) = {s["VpcId"] for s in subnets["Subnets"]}
    vpc_tags = ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["Tags"]
    assert {"Key": "edgecloud:cluster", "Value": name} in vpc_tags
    # roles trust the right services and carry the managed policies
    cluster_role = described["roleArn"].rsplit("/", 1)[-1]
    trust = iam.get_role(RoleName=cluster_role)["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"]["Service"] == "eks.amazonaws.com"
    node_role = group["nodeRole"].rsplit("/", 1)[-1]
    policies = {
        p["PolicyName"]
        for p in iam.list_attached_role_policies(RoleName=node_role)["AttachedPolicies"]
    }
    assert policies == {
        "AmazonEKSWorkerNodePolicy",
        "AmazonEKS_CNI_Policy",
        "AmazonEC2ContainerRegistryReadOnly",
    }
    assert "Creating EKS cluster" in site.progress.messages

    # a repeated create is a no-op
    again = await site.platform.create_cluster_inst(cluster, site.progress, timeout=60)
    assert again["eks-cluster-arn"] == annotations["eks-cluster-arn"]
    assert len(eks.list_nodegroups(clusterName=name)["nodegroups"]) == 1

    # update scales the node group
    cluster.num_nodes = 3
    await site.platform.update_cluster_inst(cluster, site.progress)
    group = eks.describe_nodegroup(clusterName=name, nodegroupName="workers")["nodegroup"]
    assert group["scalingConfig"]["desiredSize"] == 3

    snapshot = await site.platform.get_cloudlet_infra_resources()
    used = {r.name: (r.value, r.infra_max_value) for r in snapshot.info}
    assert used["K8s Clusters"] == (1, 100)  # moto serves no EKS quotas: AWS's default
    assert used["Total Number Of K8s Nodes"][0] == 3
    assert used["Maximum K8s Nodes Per Cluster"] == (3, 450)

    await site.platform.delete_cluster_inst(cluster, site.progress)
    assert nothing(leftovers(eks_moto, site.tag)), leftovers(eks_moto, site.tag)
    await site.platform.delete_cluster_inst(cluster, site.progress)  # idempotent


async def test_kubeconfig_carries_a_signed_sts_token(eks_moto: ServerProcess) -> None:
    site = await make_site(moto_url(eks_moto))
    cluster = cluster_inst("kc", nodes=1)
    await site.platform.create_cluster_inst(cluster, site.progress, timeout=60)
    try:
        config = json.loads(await site.platform.get_cluster_credentials(cluster))
        described = client(eks_moto, "eks").describe_cluster(name="kc-devorg")["cluster"]
        assert config["clusters"][0]["cluster"]["server"] == described["endpoint"].rstrip("/")
        assert (
            config["clusters"][0]["cluster"]["certificate-authority-data"]
            == described["certificateAuthority"]["data"]
        )
        token = config["users"][0]["user"]["token"]
        assert token.startswith("k8s-aws-v1.")
        assert "=" not in token
        url = decode_token(token)
        assert url.startswith(moto_url(eks_moto))
        assert "Action=GetCallerIdentity" in url
        assert "X-Amz-Signature=" in url
        assert TOKEN_HEADER in url.split("X-Amz-SignedHeaders=")[1].split("&")[0]
        # what STS checks for the API server: signature, header, age
        sts = urllib.parse.urlsplit(moto_url(eks_moto)).netloc
        assert check_token(token, "kc-devorg", SECRETS, sts_host=sts) == CREDS["AWS_ACCESS_KEY_ID"]
        with pytest.raises(ValueError, match="signature does not match"):
            check_token(token, "other-cluster", SECRETS, sts_host=sts)
        with pytest.raises(ValueError, match="unknown access key id"):
            check_token(token, "kc-devorg", {"AKIAOTHER": "x"}, sts_host=sts)
        with pytest.raises(ValueError, match=r"presigned URL .* is not"):
            check_token(token, "kc-devorg", SECRETS, sts_host="127.0.0.1:1")
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=16)
        with pytest.raises(ValueError, match="expired"):
            check_token(token, "kc-devorg", SECRETS, sts_host=sts, now=later)
        # a kept token is reused while fresh, and re-signed a minute before it expires
        assert json.loads(await site.platform.get_cluster_credentials(cluster)) == config
        kept = site.platform._access["kc-devorg"]
        site.platform._access["kc-devorg"] = dataclasses.replace(
            kept, signed_at=kept.signed_at - 14.5 * 60
        )
        renewed = json.loads(await site.platform.get_cluster_credentials(cluster))
        assert site.platform._access["kc-devorg"].signed_at >= kept.signed_at
        assert check_token(renewed["users"][0]["user"]["token"], "kc-devorg", SECRETS, sts_host=sts)
        # an override endpoint (operator proxy) replaces EKS's and drops its CA
        proxied = await make_site(
            moto_url(eks_moto),
            env={"EKS_API_ENDPOINT_OVERRIDE": "http://127.0.0.1:9/"},
        )
        proxied.platform._config = site.platform.config  # same cloudlet tag, other property
        other = json.loads(await proxied.platform.get_cluster_credentials(cluster))
        assert other["clusters"][0]["cluster"] == {"server": "http://127.0.0.1:9"}
    finally:
        await site.platform.delete_cluster_inst(cluster, site.progress)
    assert nothing(leftovers(eks_moto, site.tag))


async def test_unknown_flavor_and_pool_shapes_are_refused(eks_moto: ServerProcess) -> None:
    site = await make_site(moto_url(eks_moto))
    with pytest.raises(PlatformPermanentError, match=r"instance type x9\.huge .* not offered"):
        await site.platform.create_cluster_inst(
            cluster_inst("bad", flavor="x9.huge"), site.progress, timeout=60
        )
    two_pools = cluster_inst("pools")
    for pool in ("a", "b"):
        two_pools.node_pools.add(
            Name=pool, num_nodes=1
        ).node_resources.infra_node_flavor = "t3.medium"
    with pytest.raises(PlatformPermanentError, match="one node pool per cluster"):
        await site.platform.create_cluster_inst(two_pools, site.progress, timeout=60)
    with pytest.raises(PlatformPermanentError, match="need worker nodes"):
        await site.platform.create_cluster_inst(
            cluster_inst("none", nodes=0), site.progress, timeout=60
        )
    assert nothing(leftovers(eks_moto, site.tag))


async def test_cloudlet_cluster_quota_is_enforced_before_anything_is_made(
    eks_moto: ServerProcess,
) -> None:
    site = await make_site(moto_url(eks_moto), quotas={"K8s Clusters": 1})
    first = cluster_inst("q1", nodes=1)
    await site.platform.create_cluster_inst(first, site.progress, timeout=60)
    try:
        with pytest.raises(PlatformResourceExhausted, match="quota of 1 K8s Clusters"):
            await site.platform.create_cluster_inst(
                cluster_inst("q2", nodes=1), site.progress, timeout=60
            )
        assert [c.name for c in await site.platform.clusters.ours()] == ["q1-devorg"]
    finally:
        await site.platform.delete_cluster_inst(first, site.progress)
    nodes = await make_site(moto_url(eks_moto), quotas={"Maximum K8s Nodes Per Cluster": 2})
    with pytest.raises(PlatformResourceExhausted, match="Maximum K8s Nodes Per Cluster of 2"):
        await nodes.platform.create_cluster_inst(
            cluster_inst("big", nodes=3), nodes.progress, timeout=60
        )
    assert nothing(leftovers(eks_moto, site.tag))
    assert nothing(leftovers(eks_moto, nodes.tag))


def test_additional_resources_count_clusters_nodes_and_load_balancers() -> None:
    p = AwsEksPlatform()
    res = []
    for cluster, kind, count in (
        ("a", "k8s-cluster-node", 2),
        ("a", "k8s-cluster-node", 1),
        ("b", "k8s-cluster-node", 4),
        ("b", "k8s-lb-svc", 2),
    ):
        r = refs_pb2.VMResource(type=kind, count=count)
        r.key.name, r.key.organization = cluster, "o"
        res.append(r)
    out = p.get_cluster_additional_resources(cloudlet_pb2.Cloudlet(), res)
    assert {k: v.value for k, v in out.items()} == {
        "K8s Clusters": 2,
        "Maximum K8s Nodes Per Cluster": 4,
        "Total Number Of K8s Nodes": 7,
        "Network Load Balancers": 2,
    }


async def test_cloudlet_delete_sweeps_whatever_is_tagged_for_it(eks_moto: ServerProcess) -> None:
    site = await make_site(moto_url(eks_moto))
    await site.platform.create_cluster_inst(
        cluster_inst("left", nodes=1), site.progress, timeout=60
    )
    # and a half-made network from an interrupted create
    ec2 = client(eks_moto, "ec2")
    vpc = ec2.create_vpc(
        CidrBlock="10.9.0.0/16",
        TagSpecifications=[
            {"ResourceType": "vpc", "Tags": [{"Key": TAG_CLOUDLET, "Value": site.tag}]}
        ],
    )["Vpc"]["VpcId"]
    assert not nothing(leftovers(eks_moto, site.tag))
    await site.platform.delete_cloudlet(site.cloudlet, cloudlet_pb2.PlatformConfig(), site.progress)
    assert nothing(leftovers(eks_moto, site.tag)), leftovers(eks_moto, site.tag)
    assert not ec2.describe_vpcs(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Vpcs"]
    assert REGION == "ap-southeast-2"
