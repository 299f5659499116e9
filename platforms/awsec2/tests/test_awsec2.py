"""awsec2 against moto in server mode: onboarding, clusters, VM apps, failures, clean-up.

Each test owns a cloudlet of its own name; everything is checked through a plain boto3
client by the cloudlet's tags, the way an operator would look in the AWS console.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from aiohttp import ClientSession, web
from edgeproto import cloudletkey_pb2, flavor_pb2

from edge_cloud.errors import InvalidArgument
from edge_cloud.localservers import ServerProcess
from edge_cloud.platform import (
    LocalAccessApi,
    NotSupportedByPlatform,
    PlatformConfig,
    PlatformPermanentError,
    PlatformResourceExhausted,
    PlatformTransientError,
    RecordedProgress,
    registry,
)
from platforms.awsec2 import AwsEc2Platform
from platforms.awsec2._client import MAX_ATTEMPTS
from platforms.awsec2._props import parse_settings
from platforms.awsec2.tests.emulator import AwsEmulator, EmulatedAccess, emulate

TAG = "tag:edgecloud:cloudlet"


def ec2(emu: AwsEmulator, moto: ServerProcess) -> Any:
    return boto3.session.Session(
        aws_access_key_id="AKIACHECK", aws_secret_access_key="x", region_name=emu.region
    ).client("ec2", endpoint_url=moto.client_url)


def leftovers(emu: AwsEmulator, moto: ServerProcess) -> dict[str, list[str]]:
    """Everything still carrying the cloudlet's tag (and ENIs in its VPCs)."""
    client = ec2(emu, moto)
    mine = [{"Name": TAG, "Values": [emu.tag]}]
    vpcs = [v["VpcId"] for v in client.describe_vpcs(Filters=mine)["Vpcs"]]
    alive = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping"]}]
    return {
        "vpc": vpcs,
        "subnet": [s["SubnetId"] for s in client.describe_subnets(Filters=mine)["Subnets"]],
        "igw": [
            g["InternetGatewayId"]
            for g in client.describe_internet_gateways(Filters=mine)["InternetGateways"]
        ],
        "nat": [
            n["NatGatewayId"]
            for n in client.describe_nat_gateways(Filter=mine)["NatGateways"]
            if n["State"] not in ("deleted", "failed")
        ],
        "eip": [a["AllocationId"] for a in client.describe_addresses(Filters=mine)["Addresses"]],
        "sg": [
            g["GroupId"] for g in client.describe_security_groups(Filters=mine)["SecurityGroups"]
        ],
        "rt": [
            r["RouteTableId"] for r in client.describe_route_tables(Filters=mine)["RouteTables"]
        ],
        "instance": [
            i["InstanceId"]
            for r in client.describe_instances(Filters=[*mine, *alive])["Reservations"]
            for i in r["Instances"]
        ],
        "eni": [
            n["NetworkInterfaceId"]
            for n in client.describe_network_interfaces(
                Filters=[{"Name": "vpc-id", "Values": vpcs}] if vpcs else mine
            )["NetworkInterfaces"]
        ],
    }


def assert_nothing_left(emu: AwsEmulator, moto: ServerProcess) -> None:
    left = {kind: ids for kind, ids in leftovers(emu, moto).items() if ids}
    assert left == {}, f"AWS resources of {emu.tag} left behind: {left}"


def instances(
    emu: AwsEmulator, moto: ServerProcess, owner: str | None = None
) -> list[dict[str, Any]]:
    filters = [
        {"Name": TAG, "Values": [emu.tag]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]},
    ]
    if owner is not None:
        filters.append({"Name": "tag:edgecloud:owner", "Values": [owner]})
    reservations = ec2(emu, moto).describe_instances(Filters=filters)["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def names(items: list[dict[str, Any]]) -> set[str]:
    return {t["Value"] for i in items for t in i.get("Tags", []) if t["Key"] == "Name"}


async def create(emu: AwsEmulator) -> None:
    await emu.platform.create_cloudlet(
        emu.cloudlet, emu.pf_config, flavor_pb2.Flavor(), emu.progress
    )


# -- static declarations and settings -----------------------------------------------------------


def test_features_follow_the_spec() -> None:
    features = registry.features("awsec2")
    assert features.requires_crm_on_edge
    assert features.uses_root_lb
    assert not features.supports_kubernetes_only
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "aws_totp_secret_key"} == set(
        features.access_vars
    )
    assert features.access_vars["aws_totp_secret_key"].totp_secret
    assert features.properties["AWS_REGION"].mandatory
    assert features.properties["FLAVOR_MATCH_PATTERN"].value == r"^[acdhimrtz]\d+"
    assert {"AWS_ENDPOINT_URL", "AWS_USER_ARN", "AWS_OUTPOST_VPC", "MEX_ROUTER"} <= set(
        features.properties
    )
    assert "Instances" in {q.name for q in features.resource_quota_properties}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "AWS_REGION is required"),
        ({"AWS_REGION": "r", "MEX_ROUTER": "x"}, "NOCONFIG"),
        ({"AWS_REGION": "r", "FLAVOR_MATCH_PATTERN": "("}, "not a regular expression"),
        ({"AWS_REGION": "r", "AWS_OUTPOST_FLAVORS": "c5.large,2,x,40"}, "badly formatted"),
        ({"AWS_REGION": "r", "AWS_OUTPOST_VPC": "vpc-1"}, "AWS_OUTPOST_FLAVORS not set"),
        ({"AWS_REGION": "r", "MEX_NETWORK_SCHEME": "cidr=10.0.0.0/8"}, "cidr=A.B.X.0/24"),
    ],
)
def test_bad_properties_are_refused_by_name(values: dict[str, str], message: str) -> None:
    base = {"MEX_ROUTER": "NOCONFIG", "MEX_SHARED_ROOTLB_RAM": "1", "MEX_SHARED_ROOTLB_VCPUS": "1"}
    base["MEX_SHARED_ROOTLB_DISK"] = "1"
    with pytest.raises(InvalidArgument, match=re.escape(message)):
        parse_settings({**base, **values})


def test_settings_parse_outposts_and_image_names() -> None:
    settings = parse_settings(
        {
            "AWS_REGION": "us-east-1",
            "AWS_OUTPOST_VPC": "vpc-9",
            "AWS_OUTPOST_FLAVORS": "c5.large,2,4096,40;c5.xlarge,4,8192,40",
            "AWS_USER_ARN": "arn:aws:iam::123456789012:user/edge",
            "MEX_SHARED_ROOTLB_RAM": "4096",
            "MEX_SHARED_ROOTLB_VCPUS": "2",
            "MEX_SHARED_ROOTLB_DISK": "40",
        },
        "https://images.example/base/edgecloud-v5.0.0.qcow2#md5:abc",
    )
    assert [f.name for f in settings.outpost_flavors] == ["c5.large", "c5.xlarge"]
    assert settings.outpost_flavors[1].ram == 8192
    assert settings.mfa_serial == "arn:aws:iam::123456789012:mfa/edge"
    assert settings.os_image == "edgecloud-v5.0.0"
    assert settings.vpc_cidr == "10.101.0.0/16"


async def test_init_without_credentials_names_the_access_vars() -> None:
    platform = AwsEc2Platform()
    config = PlatformConfig(
        cloudlet_key=cloudletkey_pb2.CloudletKey(organization="o", name="nocreds"),
        platform_type="awsec2",
        env_vars={"AWS_REGION": "eu-west-3"},
    )
    with pytest.raises(InvalidArgument, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        await platform.init(config, EmulatedAccess({}), RecordedProgress())


# -- against moto ---------------------------------------------------------------------------------


async def test_onboarding_builds_a_tagged_network_and_delete_leaves_nothing(
    moto_server: ServerProcess,
) -> None:
    async with emulate(moto_server=moto_server) as emu:
        await create(emu)
        client = ec2(emu, moto_server)
        made = leftovers(emu, moto_server)
        assert len(made["vpc"]) == 1
        assert len(made["igw"]) == 1
        assert len(made["nat"]) == 1
        assert len(made["eip"]) == 1
        assert len(made["rt"]) == 1
        assert len(made["sg"]) == 3  # cloudlet, platform VM, shared root LB
        vpc = client.describe_vpcs(VpcIds=made["vpc"])["Vpcs"][0]
        assert vpc["CidrBlock"] == "10.101.0.0/16"
        (igw,) = client.describe_internet_gateways(InternetGatewayIds=made["igw"])[
            "InternetGateways"
        ]
        assert igw["Attachments"][0]["VpcId"] == vpc["VpcId"]
        (subnet,) = client.describe_subnets(SubnetIds=made["subnet"])["Subnets"]
        assert subnet["CidrBlock"] == "10.101.255.0/24"
        (rt,) = client.describe_route_tables(RouteTableIds=made["rt"])["RouteTables"]
        assert any(r.get("NatGatewayId") == made["nat"][0] for r in rt["Routes"])
        vms = instances(emu, moto_server)
        pf = f"{emu.cloudlet.key.name}-emuop-pf"
        assert names(vms) == {pf, emu.cloudlet.root_lb_fqdn}
        (pf_vm,) = [v for v in vms if pf in names([v])]
        data = client.describe_instance_attribute(
            InstanceId=pf_vm["InstanceId"], Attribute="userData"
        )["UserData"]["Value"]

        cloud_init = base64.b64decode(data).decode()
        assert "/root/accesskey/accesskey.pem" in cloud_init
        assert "emulated-key" in cloud_init
        assert "confignode" in cloud_init
        assert pf in emu.access.nodes  # registered, its password is in the script
        (record,) = emu.access.dns[emu.cloudlet.root_lb_fqdn]
        assert record.rtype == "A"
        assert record.content
        assert "Creating NAT Gateway" in emu.progress.messages

        await create(emu)  # repeated: nothing new
        assert leftovers(emu, moto_server) == made
        resources = await emu.platform.get_cloudlet_resources()
        snapshot = {r.name: r for r in resources.resources_snapshot.info}
        assert snapshot["Instances"].value == 2
        assert snapshot["Instances"].infra_max_value == 20
        assert snapshot["External IPs"].value == 3  # two VMs and the NAT's elastic IP
        assert snapshot["vCPUs"].value > 0
        assert snapshot["RAM"].value > 0
        assert {v.type for v in resources.resources_snapshot.platform_vms} == {
            "platformvm",
            "sharedrootlb",
        }
        assert all(re.match(r"^[acdhimrtz]\d+", f.name) for f in resources.flavors)

        await emu.platform.delete_cloudlet(emu.cloudlet, emu.pf_config, emu.progress)
        assert_nothing_left(emu, moto_server)
        assert emu.access.nodes == {}
        assert emu.cloudlet.root_lb_fqdn not in emu.access.dns
        await emu.platform.delete_cloudlet(emu.cloudlet, emu.pf_config, emu.progress)


async def test_cluster_and_vm_app_lifecycle(moto_server: ServerProcess) -> None:
    async with emulate(moto_server=moto_server) as emu:
        await create(emu)
        client = ec2(emu, moto_server)
        platform = emu.platform
        k8s = emu.cluster("k8s", nodes=2)
        docker = emu.cluster("dock", deployment="docker", dedicated=True)
        await platform.create_cluster_inst(k8s, emu.progress, timeout=60)
        await platform.create_cluster_inst(docker, emu.progress, timeout=60)
        assert names(instances(emu, moto_server, "cluster/devorg/k8s")) == {
            "k8s-devorg-master-1",
            "k8s-devorg-node-cpupool-1",
            "k8s-devorg-node-cpupool-2",
        }
        assert names(instances(emu, moto_server, "cluster/devorg/dock")) == {
            "dock-devorg-docker",
            docker.fqdn,
        }
        assert docker.fqdn in emu.access.dns  # the dedicated LB's name
        vms = await platform.get_cluster_infra_resources(k8s)
        assert {v.type for v in vms.vms} == {"k8s-cluster-master", "k8s-cluster-node"}
        # the LBs' legs in the cluster subnets, as routers
        ports = client.describe_network_interfaces(
            Filters=[
                {"Name": "tag:edgecloud:role", "Values": ["lb-port"]},
                {"Name": TAG, "Values": [emu.tag]},
            ]
        )["NetworkInterfaces"]
        assert len(ports) == 2
        assert all(p["Status"] == "in-use" for p in ports)
        assert all(p["SourceDestCheck"] is False for p in ports)

        app = emu.app("vm")
        inst = emu.app_inst(app, None, ports=((1, 443), (2, 5000)))
        await platform.create_app_inst(None, app, inst, None, emu.progress)
        await platform.create_app_inst(None, app, inst, None, emu.progress)  # repeated
        (vm,) = instances(emu, moto_server, "appinst/devorg/inst1")
        assert vm["ImageId"]
        assert vm["InstanceType"] == emu.node_flavor
        group = client.describe_security_groups(
            Filters=[{"Name": "tag:edgecloud:owner", "Values": ["appinst/devorg/inst1"]}]
        )["SecurityGroups"][0]
        opened = {(p["IpProtocol"], p["FromPort"]) for p in group["IpPermissions"]}
        assert opened == {("tcp", 443), ("udp", 5000)}
        assert emu.access.dns[inst.uri][0].content == vm["PublicIpAddress"]
        runtime = await platform.get_app_inst_runtime(None, app, inst)
        assert list(runtime.container_ids) == [vm["InstanceId"]]

        del inst.mapped_ports[1]
        await platform.update_app_inst(None, app, inst, None, emu.progress)
        group = client.describe_security_groups(GroupIds=[group["GroupId"]])["SecurityGroups"][0]
        assert {(p["IpProtocol"], p["FromPort"]) for p in group["IpPermissions"]} == {("tcp", 443)}

        kube_app = emu.app("kubernetes", name="kapp")
        with pytest.raises(NotSupportedByPlatform, match="ssh"):
            await platform.create_app_inst(
                k8s, kube_app, emu.app_inst(kube_app, k8s), None, emu.progress
            )

        await platform.delete_app_inst(None, app, inst, emu.progress)
        assert instances(emu, moto_server, "appinst/devorg/inst1") == []
        assert inst.uri not in emu.access.dns
        for cluster in (k8s, docker):
            await platform.delete_cluster_inst(cluster, emu.progress)
            await platform.delete_cluster_inst(cluster, emu.progress)
        left = leftovers(emu, moto_server)
        assert len(left["subnet"]) == 1
        assert len(left["instance"]) == 2
        assert docker.fqdn not in emu.access.dns
        await platform.delete_cloudlet(emu.cloudlet, emu.pf_config, emu.progress)
        assert_nothing_left(emu, moto_server)


async def test_a_cluster_above_the_instance_limit_is_refused_before_anything_is_made(
    moto_server: ServerProcess,
) -> None:
    async with emulate(moto_server=moto_server) as emu:
        await create(emu)
        before = leftovers(emu, moto_server)
        huge = emu.cluster("huge", nodes=25)
        with pytest.raises(PlatformResourceExhausted, match="max-instances"):
            await emu.platform.create_cluster_inst(huge, emu.progress, timeout=60)
        assert leftovers(emu, moto_server) == before


async def test_a_missing_image_is_a_clear_error_and_makes_nothing(
    moto_server: ServerProcess,
) -> None:
    async with emulate(moto_server=moto_server, env={"MEX_OS_IMAGE": "edgecloud-v9.9.9"}) as emu:
        with pytest.raises(PlatformPermanentError, match=r"edgecloud-v9\.9\.9.*does not exist"):
            await create(emu)
        assert_nothing_left(emu, moto_server)
    async with emulate(moto_server=moto_server) as emu:
        await create(emu)
        app = emu.app("vm")
        app.image_path = "ami-0123456789abcdef0"
        inst = emu.app_inst(app, None)
        with pytest.raises(PlatformPermanentError, match="ami-0123456789abcdef0 does not exist"):
            await emu.platform.create_app_inst(None, app, inst, None, emu.progress)
        assert instances(emu, moto_server, "appinst/devorg/inst1") == []
        assert not ec2(emu, moto_server).describe_security_groups(
            Filters=[{"Name": "tag:edgecloud:owner", "Values": ["appinst/devorg/inst1"]}]
        )["SecurityGroups"]
        app.image_path = "https://images.example/app.qcow2"
        with pytest.raises(NotSupportedByPlatform, match="import"):
            await emu.platform.create_app_inst(None, app, inst, None, emu.progress)
        # a URL whose file is already an AMI of that name in the region: used as it is
        name = f"appvm-{emu.cloudlet.key.name}"
        ec2(emu, moto_server).register_image(Name=name, RootDeviceName="/dev/sda1")
        app.image_path = f"https://artifactory.example/repo-devorg/{name}.qcow2#md5:0123"
        await emu.platform.create_app_inst(None, app, inst, None, emu.progress)
        assert len(instances(emu, moto_server, "appinst/devorg/inst1")) == 1


# -- failures injected by a proxy in front of moto ---------------------------------------------


@dataclass
class Proxy:
    """Forwards to moto; answers an AWS error instead for chosen actions, `times` times."""

    target: str
    url: str = ""
    faults: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def fail(self, action: str, code: str, *, status: int = 400, times: int = 10**6) -> None:
        self.faults[action] = (code, status, times)

    def count(self, action: str) -> int:
        return sum(1 for a, _, _ in self.seen if a == action)


_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
    "<Message>injected {code}</Message></Error></Errors><RequestID>test</RequestID></Response>"
)


@contextlib.asynccontextmanager
async def proxy_to(moto: ServerProcess) -> AsyncIterator[Proxy]:
    proxy = Proxy(moto.client_url)
    async with ClientSession() as session:

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            match = re.search(rb"(?:^|&)Action=([A-Za-z]+)", body)
            action = match.group(1).decode() if match else ""
            auth = request.headers.get("Authorization", "")
            key = re.search(r"Credential=([^/]+)/", auth)
            proxy.seen.append(
                (
                    action,
                    key.group(1) if key else "",
                    request.headers.get("X-Amz-Security-Token", ""),
                )
            )
            fault = proxy.faults.get(action)
            if fault is not None and fault[2] > 0:
                code, status, times = fault
                proxy.faults[action] = (code, status, times - 1)
                return web.Response(
                    status=status, text=_ERROR.format(code=code), content_type="text/xml"
                )
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in ("host", "content-length")
            }
            async with session.request(
                request.method, proxy.target + request.path_qs, data=body, headers=headers
            ) as upstream:
                payload = await upstream.read()
                return web.Response(
                    status=upstream.status,
                    body=payload,
                    headers={"Content-Type": upstream.headers.get("Content-Type", "text/xml")},
                )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        proxy.url = f"http://127.0.0.1:{port}"
        try:
            yield proxy
        finally:
            await runner.cleanup()


async def test_throttling_is_retried_then_surfaced_as_transient(moto_server: ServerProcess) -> None:
    async with (
        proxy_to(moto_server) as proxy,
        emulate(moto_server=moto_server, endpoint=proxy.url) as emu,
    ):
        proxy.fail("DescribeVpcs", "RequestLimitExceeded", status=503, times=2)
        await create(emu)  # two throttled answers, then through
        assert proxy.count("DescribeVpcs") >= 3
        proxy.fail("DescribeVpcs", "RequestLimitExceeded", status=503)
        before = proxy.count("DescribeVpcs")
        with pytest.raises(PlatformTransientError, match="throttled") as caught:
            await emu.platform.delete_cloudlet(emu.cloudlet, emu.pf_config, emu.progress)
        assert proxy.count("DescribeVpcs") - before == MAX_ATTEMPTS
        assert caught.value.retry_after


async def test_limits_and_bad_credentials_from_aws_become_clear_errors(
    moto_server: ServerProcess,
) -> None:
    async with (
        proxy_to(moto_server) as proxy,
        emulate(moto_server=moto_server, endpoint=proxy.url) as emu,
    ):
        await create(emu)
        before = leftovers(emu, moto_server)
        proxy.fail("RunInstances", "VcpuLimitExceeded", times=1)
        cluster = emu.cluster("limited", nodes=2)
        with pytest.raises(PlatformResourceExhausted, match=r"VcpuLimitExceeded.*higher limit"):
            await emu.platform.create_cluster_inst(cluster, emu.progress, timeout=60)
        assert leftovers(emu, moto_server) == before  # the half-built cluster is gone
        proxy.fail("DescribeInstances", "AuthFailure", status=401, times=1)
        with pytest.raises(PlatformPermanentError, match="AWS_ACCESS_KEY_ID"):
            await emu.platform.get_cloudlet_infra_resources()


async def test_mfa_trades_the_account_keys_for_session_credentials(
    moto_server: ServerProcess,
) -> None:
    access_vars = {
        "AWS_ACCESS_KEY_ID": "AKIAACCOUNTKEY",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "aws_totp_secret_key": "",
    }
    env = {"AWS_USER_ARN": "arn:aws:iam::123456789012:user/edge"}
    async with (
        proxy_to(moto_server) as proxy,
        emulate(
            moto_server=moto_server, endpoint=proxy.url, env=env, access_vars=access_vars
        ) as emu,
    ):
        await emu.platform.get_cloudlet_infra_resources()
        assert emu.access.totp_requests == ["aws_totp_secret_key"]
        sts = [s for s in proxy.seen if s[0] == "GetSessionToken"]
        assert len(sts) == 1
        assert sts[0][1] == "AKIAACCOUNTKEY"
        # past half their life, the session credentials are renewed with a fresh code
        api = emu.platform.infra.api
        current = api._current
        assert current is not None
        assert current.credentials.expires is not None
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        api._current = api._session_for(dataclasses.replace(current.credentials, expires=soon))
        await emu.platform.get_cloudlet_infra_resources()
        assert len([s for s in proxy.seen if s[0] == "GetSessionToken"]) == 2
        assert len(emu.access.totp_requests) == 2
        ec2_calls = [s for s in proxy.seen if s[0].startswith("Describe")]
        assert ec2_calls
        assert all(k != "AKIAACCOUNTKEY" and token for _, k, token in ec2_calls)


async def test_mfa_secret_without_a_user_arn_is_refused(moto_server: ServerProcess) -> None:
    platform = AwsEc2Platform()
    config = PlatformConfig(
        cloudlet_key=cloudletkey_pb2.CloudletKey(organization="o", name="mfa"),
        platform_type="awsec2",
        env_vars={"AWS_REGION": "eu-west-3", "AWS_ENDPOINT_URL": moto_server.client_url},
    )
    access = EmulatedAccess(
        {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "aws_totp_secret_key": ""}
    )
    with pytest.raises(InvalidArgument, match="AWS_USER_ARN"):
        await platform.init(config, access, RecordedProgress())


async def test_an_access_api_that_cannot_register_nodes_stops_onboarding_cleanly(
    moto_server: ServerProcess,
) -> None:
    async with emulate(moto_server=moto_server) as emu:
        creds = {"AWS_ACCESS_KEY_ID": "AKIAEMULATED", "AWS_SECRET_ACCESS_KEY": "emulated"}
        await emu.platform.init(emu.config, LocalAccessApi(creds), emu.progress)
        with pytest.raises(PlatformPermanentError, match=r"CloudletNode.*needs Vault"):
            await create(emu)
        assert_nothing_left(emu, moto_server)


async def test_a_crm_starting_up_ensures_the_network_and_the_shared_root_lb(
    moto_server: ServerProcess,
) -> None:
    async with emulate(moto_server=moto_server) as emu:
        await emu.platform.init_ha_conditional(emu.progress)
        await emu.platform.init_ha_conditional(emu.progress)  # a restarted CRM: nothing new
        made = leftovers(emu, moto_server)
        assert len(made["vpc"]) == 1
        assert len(made["nat"]) == 1
        assert names(instances(emu, moto_server)) == {emu.cloudlet.root_lb_fqdn}
