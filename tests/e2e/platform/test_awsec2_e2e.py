"""awsec2 end to end: etcd, Redis, the Controller, the CCRM and the cloudlet's CRM as real
processes, the plugin in both daemons talking to moto (AWS in server mode).

awsec2 requires a CRM on the edge site, so the Controller forces `crm_on_edge`: the CCRM
onboards (network and platform VM) and the CRM in the platform VM does the rest. The first
test onboards through the CCRM: it registers the platform VM as a CloudletNode at the
Controller (`--controller-addr`), builds the network and the VMs in moto, and the CRM the
platform VM would run (started here by hand once the CCRM is done) takes the cloudlet to
READY; the delete removes the node and everything in AWS. The second test onboards with
`crm_override=IGNORE_CRM` and starts the CRM itself, as the platform VM would: the CRM
builds the network and shared root LB (as the original's CRM start-up does), then the
ClusterInst and the VM AppInst go Controller → notify → CRM → EC2, and DeleteCloudlet
through the CCRM removes everything. Both daemons get the AWS keys from their environment
(the plugin's fallback when the cloudlet has no access vars).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import grpc
import pytest
from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cloudletnode_pb2,
    cloudletnode_pb2_grpc,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
)

from edge_cloud.localservers import ServerProcess
from edge_cloud.objects import keys
from tests.e2e.support import (
    ControllerApi,
    Daemon,
    Platform,
    clean_env,
    cloudlet_info,
    ok,
    wait_for,
)

TS = common_pb2
CS = appcommon_pb2
REGION = "ap-northeast-3"  # only these tests use it in the session's moto
CREDS = {"AWS_ACCESS_KEY_ID": "AKIAE2EEC2", "AWS_SECRET_ACCESS_KEY": "e2e-secret"}
BASE_IMAGE = "edgecloud-e2e-v1"
APP_IMAGE = "hello-vm"
FLAVOR = "x1.small"
DEV = "ec2dev"
TIMEOUT = 120.0
TAG = "tag:edgecloud:cloudlet"

pytestmark = pytest.mark.timeout(300)


def ec2(moto: ServerProcess) -> Any:
    session = boto3.session.Session(region_name=REGION, **_keys())
    return session.client("ec2", endpoint_url=moto.client_url)


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDS["AWS_SECRET_ACCESS_KEY"],
    }


def ensure_image(client: Any, name: str) -> None:
    found = client.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
    if not found["Images"]:
        client.register_image(Name=name, RootDeviceName="/dev/sda1")


@dataclass
class World(ControllerApi):
    moto: ServerProcess
    workdir: Path


@pytest.fixture(scope="module")
def world(
    etcd_server: ServerProcess,
    redis_server: ServerProcess,
    moto_server: ServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    client = ec2(moto_server)
    ensure_image(client, BASE_IMAGE)
    ensure_image(client, APP_IMAGE)
    workdir = tmp_path_factory.mktemp("awsec2")
    platform = Platform(etcd_server.client_url, redis_server.client_url, workdir, ccrm_env=CREDS)
    platform.ccrm.args += ["--platforms", "awsec2", "--controller-addr", platform.api_addr]
    platform.start()
    try:
        with grpc.insecure_channel(platform.api_addr) as channel:
            world = World(platform, channel, moto_server, workdir)
            [features] = world.registered("awsec2", 30)
            assert features.requires_crm_on_edge
            assert features.node_type == "ccrm"
            assert "AWS_ACCESS_KEY_ID" in features.access_vars
            world.create_flavor(FLAVOR, disk=40)
            yield world
    finally:
        platform.stop()


def ec2_cloudlet(world: World) -> cloudlet_pb2.Cloudlet:
    key = cloudletkey_pb2.CloudletKey(organization="ec2op", name=f"e{uuid.uuid4().hex[:8]}")
    cloudlet = cloudlet_pb2.Cloudlet(
        key=key,
        platform_type="awsec2",
        location=loc_pb2.Loc(latitude=35.7, longitude=139.7),
        num_dynamic_ips=10,
    )
    cloudlet.env_var.update(
        {
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": world.moto.client_url,
            "MEX_OS_IMAGE": BASE_IMAGE,
        }
    )
    return cloudlet


def tagged(world: World, cloudlet: cloudlet_pb2.Cloudlet) -> dict[str, list[str]]:
    """Every AWS resource carrying the cloudlet's tag (NAT gateways not yet deleted)."""
    client = ec2(world.moto)
    mine = [{"Name": TAG, "Values": [f"{cloudlet.key.organization}/{cloudlet.key.name}"]}]
    alive = {"Name": "instance-state-name", "Values": ["pending", "running", "stopping"]}
    found = {
        "vpc": [v["VpcId"] for v in client.describe_vpcs(Filters=mine)["Vpcs"]],
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
        "instance": [
            i["InstanceId"]
            for r in client.describe_instances(Filters=[*mine, alive])["Reservations"]
            for i in r["Instances"]
        ],
        "eni": [
            n["NetworkInterfaceId"]
            for n in client.describe_network_interfaces(Filters=mine)["NetworkInterfaces"]
        ],
    }
    return {kind: ids for kind, ids in found.items() if ids}


def test_onboarding_through_the_ccrm_registers_the_platform_vm(world: World) -> None:
    cloudlet = ec2_cloudlet(world)
    nodes = cloudletnode_pb2_grpc.CloudletNodeApiStub(world.channel)
    by_cloudlet = cloudletnode_pb2.CloudletNode()
    by_cloudlet.key.cloudlet_key.CopyFrom(cloudlet.key)
    call = world.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT)
    messages: list[str] = []
    crm: Daemon | None = None
    try:
        for result in call:
            messages.append(result.message)
            last_step = any("Creating Shared RootLB" in m for m in messages)
            if crm is None and last_step and "Waiting for VMs to run" in result.message:
                # the CCRM's last step: the platform VM would now boot its CRM
                crm = start_crm(world, cloudlet)
        assert crm is not None, messages
        assert messages[-1] == "Created Cloudlet successfully", messages
        assert "Creating Platform VM" in messages
        [node] = nodes.ShowCloudletNode(by_cloudlet, timeout=5)
        assert node.key.name.endswith("-pf")
        assert not node.password_hash  # never shown
        assert cloudlet_info(world, cloudlet.key).state == CS.CLOUDLET_STATE_READY

        ok(world.cloudlets.DeleteCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=TIMEOUT))
        assert list(nodes.ShowCloudletNode(by_cloudlet, timeout=5)) == []
        assert tagged(world, cloudlet) == {}
        process = crm.process
        assert process is not None
        assert wait_for(process.poll, 20, "the CRM to exit") == 0
    finally:
        if crm is not None:
            crm.stop(grace=5)


def start_crm(world: World, cloudlet: cloudlet_pb2.Cloudlet) -> Daemon:
    crm = Daemon(
        "crm",
        [
            "--notify-addrs", f"127.0.0.1:{world.platform.notify_port}",
            "--cloudlet-key", keys.key_string(cloudlet.key),
            "--metrics-addr", "",
            "--test-mode",
            "--init-timeout", "90",
            "--shutdown-grace", "2",
        ],
        world.workdir,
        env=clean_env(**CREDS),
    )  # fmt: skip
    crm.start()
    return crm


def settled(show: Any) -> Any:
    transient = {TS.CREATE_REQUESTED, TS.CREATING, TS.DELETE_REQUESTED, TS.DELETING}

    def terminal() -> Any:
        found = list(show())
        assert len(found) == 1, found
        return found[0] if found[0].state not in transient else None

    return wait_for(terminal, 20, "the object to settle")


def test_cluster_and_vm_app_on_an_edge_crm_then_delete_leaves_nothing(world: World) -> None:
    cloudlet = ec2_cloudlet(world)
    cloudlet.crm_override = TS.IGNORE_CRM  # the platform VM's CRM is started by hand below
    ok(world.cloudlets.CreateCloudlet(cloudlet, timeout=TIMEOUT))
    [shown] = world.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=5)
    assert shown.crm_on_edge  # forced by the features
    crm = start_crm(world, cloudlet)
    try:

        def ready() -> bool | None:
            shown = list(
                world.infos.ShowCloudletInfo(cloudlet_pb2.CloudletInfo(key=cloudlet.key), timeout=5)
            )
            return True if shown and shown[0].state == CS.CLOUDLET_STATE_READY else None

        wait_for(
            ready,
            150,
            "the CRM to build the network and report READY",
        )
        info = cloudlet_info(world, cloudlet.key)
        assert info.flavors
        assert all(f.name[0] in "acdhimrtz" for f in info.flavors)
        built = tagged(world, cloudlet)
        assert (len(built["vpc"]), len(built["nat"]), len(built["instance"])) == (1, 1, 1)

        cluster = clusterinst_pb2.ClusterInst(
            deployment="docker", flavor=flavor_pb2.FlavorKey(name=FLAVOR)
        )
        cluster.key.name, cluster.key.organization = "web", DEV
        cluster.cloudlet_key.CopyFrom(cloudlet.key)
        messages = ok(world.clusters.CreateClusterInst(cluster, timeout=TIMEOUT))
        assert messages[-1] == "Created ClusterInst successfully", messages
        stored = settled(
            lambda: world.clusters.ShowClusterInst(
                clusterinst_pb2.ClusterInst(key=cluster.key), timeout=5
            )
        )
        assert stored.state == TS.READY
        assert {v.type for v in stored.resources.vms} >= {"docker-cluster-node"}

        app = app_pb2.App(
            deployment="vm",
            image_type=app_pb2.IMAGE_TYPE_QCOW,
            image_path=f"https://artifactory.example/repo-{DEV}/{APP_IMAGE}.qcow2"
            "#md5:7e9cfcb763e83573a4b9d9315f56cc5f",
            access_ports="tcp:443",
            default_flavor=flavor_pb2.FlavorKey(name=FLAVOR),
        )
        app.key.organization, app.key.name, app.key.version = DEV, "vmapp", "1.0"
        world.apps.CreateApp(app, timeout=10)
        inst = appinst_pb2.AppInst(app_key=app.key, cloudlet_key=cloudlet.key)
        inst.key.name, inst.key.organization = "vm1", DEV
        messages = ok(world.app_insts.CreateAppInst(inst, timeout=TIMEOUT))
        assert messages[-1] == "Created AppInst successfully", messages
        stored_inst = settled(
            lambda: world.app_insts.ShowAppInst(appinst_pb2.AppInst(key=inst.key), timeout=5)
        )
        assert stored_inst.state == TS.READY
        client = ec2(world.moto)
        owner = [{"Name": "tag:edgecloud:owner", "Values": [f"appinst/{DEV}/vm1"]}]
        [group] = client.describe_security_groups(Filters=owner)["SecurityGroups"]
        assert {(p["IpProtocol"], p["FromPort"]) for p in group["IpPermissions"]} == {("tcp", 443)}

        ok(world.app_insts.DeleteAppInst(inst, timeout=TIMEOUT))
        assert client.describe_security_groups(Filters=owner)["SecurityGroups"] == []
        ok(world.clusters.DeleteClusterInst(cluster, timeout=TIMEOUT))
        ok(world.cloudlets.DeleteCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key), timeout=TIMEOUT))
        assert list(world.cloudlets.ShowCloudlet(cloudlet_pb2.Cloudlet(key=cloudlet.key))) == []
        assert tagged(world, cloudlet) == {}
        process = crm.process
        assert process is not None
        assert wait_for(process.poll, 20, "the CRM to exit") == 0
    finally:
        crm.stop(grace=5)
