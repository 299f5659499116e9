"""The objects around cloudlets on real etcd and Redis: features, networks, VM pools, GPU
drivers, CloudletInfo, and cloudlet updates (§3.6, §3.15-§3.17)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from distributed_match_engine import appcommon_pb2
from edgeproto import (
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    common_pb2,
    network_pb2,
    network_pb2_grpc,
    vmpool_pb2,
    vmpool_pb2_grpc,
)

from edge_cloud.errors import (
    AlreadyExists,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    from_rpc_error,
)
from edge_cloud.notify import NotifyClient, key_string
from edge_cloud.objects import keys
from tests.integration.controller.cloudlet_harness import (
    Controller,
    ControllerHarness,
    FakeCcrm,
    ccrm,
    collect,
    features,
    harness,
    new_cloudlet,
    put_features,
    unique_org,
)
from tests.integration.helpers import eventually

__all__ = ["ccrm", "harness"]

IGNORE_CRM = common_pb2.IGNORE_CRM


async def unary_error(call: Any) -> EdgeError:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return from_rpc_error(err)
    raise AssertionError("the call succeeded")


async def create(ctl: Controller, cloudlet: cloudlet_pb2.Cloudlet) -> list[str]:
    lines, err = await collect(ctl.cloudlets.CreateCloudlet(cloudlet, timeout=30))
    assert err is None, err
    return lines


# --- PlatformFeatures ----------------------------------------------------------------------


async def test_platform_features(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ctl = await harness.start(test_mode=False)
    stub = cloudlet_pb2_grpc.PlatformFeaturesApiStub(ctl.channel)
    await put_features(ctl, features("fakeccrm", is_fake=True))
    await put_features(ctl, features("openstack"))

    async def shown() -> list[str]:
        return [
            f.platform_type
            async for f in stub.ShowPlatformFeatures(cloudlet_pb2.PlatformFeatures(), timeout=10)
        ]

    assert await shown() == ["openstack"]  # fake platforms only in test mode
    org = unique_org()
    await create(ctl, new_cloudlet(org, platform_type="openstack", crm_override=IGNORE_CRM))
    err = await unary_error(
        stub.DeletePlatformFeatures(cloudlet_pb2.PlatformFeatures(platform_type="openstack"))
    )
    assert isinstance(err, FailedPrecondition)
    assert err.message == f"PlatformType in use by Cloudlets c1({org})"
    await stub.DeletePlatformFeatures(
        cloudlet_pb2.PlatformFeatures(platform_type="fakeccrm"), timeout=10
    )
    err = await unary_error(
        stub.DeletePlatformFeatures(cloudlet_pb2.PlatformFeatures(platform_type="fakeccrm"))
    )
    assert isinstance(err, NotFound)
    assert err.message == "PlatformFeatures key fakeccrm not found"
    props = await ctl.cloudlets.GetCloudletProps(
        cloudlet_pb2.CloudletProps(platform_type="openstack"), timeout=10
    )
    assert props.platform_type == "openstack"


# --- Network ---------------------------------------------------------------------------------


async def test_networks(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ctl = await harness.start()
    stub = network_pb2_grpc.NetworkApiStub(ctl.channel)
    await put_features(ctl, features())
    cloudlet = new_cloudlet(unique_org(), crm_override=IGNORE_CRM)
    network = network_pb2.Network(
        key=network_pb2.NetworkKey(cloudlet_key=cloudlet.key, name="net1"),
        connection_type=network_pb2.CONNECT_TO_CLUSTER_NODES,
        routes=[network_pb2.Route(destination_cidr="10.1.0.0/16", next_hop_ip="10.0.0.1")],
    )
    _, err = await collect(stub.CreateNetwork(network, timeout=10))
    assert isinstance(err, NotFound)
    assert err.message == f"Cloudlet key {keys.key_string(cloudlet.key)} not found"
    await create(ctl, cloudlet)
    for route, text in (
        (network_pb2.Route(destination_cidr="10.1.0.0", next_hop_ip="1.1.1.1"), "cidr"),
        (network_pb2.Route(destination_cidr="10.1.0.0/16", next_hop_ip="x"), "next hop"),
    ):
        bad = network_pb2.Network()
        bad.CopyFrom(network)
        del bad.routes[:]
        bad.routes.append(route)
        _, err = await collect(stub.CreateNetwork(bad, timeout=10))
        assert isinstance(err, InvalidArgument)
        assert err.message in ("Invalid route destination cidr", "Invalid next hop")
        assert text in err.message
    untyped = network_pb2.Network(key=network.key)
    _, err = await collect(stub.CreateNetwork(untyped, timeout=10))
    assert isinstance(err, InvalidArgument)
    assert err.message == "Invalid connection type"
    _, err = await collect(stub.CreateNetwork(network, timeout=10))
    assert err is None
    update = network_pb2.Network(key=network.key, connection_type=network_pb2.CONNECT_TO_ALL)
    update.fields.append("4")
    _, err = await collect(stub.UpdateNetwork(update, timeout=10))
    assert err is None
    [shown] = [n async for n in stub.ShowNetwork(network_pb2.Network(), timeout=10)]
    assert shown.connection_type == network_pb2.CONNECT_TO_ALL

    delete = cloudlet_pb2.Cloudlet(key=cloudlet.key, crm_override=IGNORE_CRM)
    _, err = await collect(ctl.cloudlets.DeleteCloudlet(delete, timeout=30))
    assert isinstance(err, FailedPrecondition)
    assert err.message == f"Cloudlet in use by Network {keys.key_string(network)}"
    assert ctl.cloudlet(cloudlet.key).state == common_pb2.READY  # type: ignore[union-attr]
    _, err = await collect(stub.DeleteNetwork(network, timeout=10))
    assert err is None
    _, err = await collect(ctl.cloudlets.DeleteCloudlet(delete, timeout=30))
    assert err is None


# --- VMPool ----------------------------------------------------------------------------------


def vm(name: str, internal: str, external: str = "") -> vmpool_pb2.VM:
    return vmpool_pb2.VM(
        name=name, net_info=vmpool_pb2.VMNetInfo(internal_ip=internal, external_ip=external)
    )


async def test_vm_pools(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ctl = await harness.start()
    stub = vmpool_pb2_grpc.VMPoolApiStub(ctl.channel)
    org = unique_org()
    key = vmpool_pb2.VMPoolKey(organization=org, name="pool")
    for vms, text in (
        ([vm("vm1", "")], "Missing internal IP for VM: vm1"),
        ([vm("vm1", "0.0.0.0")], "Invalid Address: 0.0.0.0"),
        (
            [vm("vm1", "10.0.0.1", "1.1.1.1"), vm("vm2", "10.0.0.2", "1.1.1.1")],
            "VM with same external IP 1.1.1.1 already exists",
        ),
    ):
        err = await unary_error(stub.CreateVMPool(vmpool_pb2.VMPool(key=key, vms=vms)))
        assert isinstance(err, InvalidArgument)
        assert err.message == text
    pool = vmpool_pb2.VMPool(key=key, vms=[vm("vm1", "10.0.0.1")])
    await stub.CreateVMPool(pool, timeout=10)
    err = await unary_error(stub.CreateVMPool(pool))
    assert isinstance(err, AlreadyExists)
    member = vmpool_pb2.VMPoolMember(key=key, vm=vm("vm1", "10.0.0.9"))
    err = await unary_error(stub.AddVMPoolMember(member))
    assert isinstance(err, FailedPrecondition)
    assert err.message == "VM with same name already exists as part of VM pool"
    member = vmpool_pb2.VMPoolMember(key=key, vm=vm("vm2", "10.0.0.1"))
    err = await unary_error(stub.AddVMPoolMember(member))
    assert err.message == "VM with same internal IP already exists as part of VM pool"
    await stub.AddVMPoolMember(vmpool_pb2.VMPoolMember(key=key, vm=vm("vm2", "10.0.0.2")))
    await stub.RemoveVMPoolMember(vmpool_pb2.VMPoolMember(key=key, vm=vm("vm1", "")))
    [shown] = [p async for p in stub.ShowVMPool(vmpool_pb2.VMPool(), timeout=10)]
    assert [v.name for v in shown.vms] == ["vm2"]

    # a CRM-on-edge cloudlet on the pool: changes go through its CRM
    await put_features(ctl, features("fakevmpool", is_vm_pool=True))
    cloudlet = new_cloudlet(
        org, platform_type="fakevmpool", vm_pool="pool", crm_on_edge=True, crm_override=IGNORE_CRM
    )
    await create(ctl, cloudlet)
    err = await unary_error(stub.DeleteVMPool(vmpool_pb2.VMPool(key=key)))
    assert isinstance(err, FailedPrecondition)
    assert err.message == "VM pool in use by Cloudlet"

    crm = NotifyClient([ctl.addr], name="crm", filter_cloudlet_key=True, backoff_initial=0.05)
    pools = crm.cache(vmpool_pb2.VMPool)
    async with crm:
        ready = appcommon_pb2.CLOUDLET_STATE_READY
        crm.send(cloudlet_pb2.CloudletInfo(key=cloudlet.key, state=ready))

        async def got_pool() -> None:
            assert key_string(pool) in pools  # a filtered CRM gets its cloudlet's pool

        await eventually(got_pool)

        async def add_member() -> None:
            new = vmpool_pb2.VMPoolMember(key=key, vm=vm("vm3", "10.0.0.3"))
            await stub.AddVMPoolMember(new, timeout=30)

        add = asyncio.create_task(add_member())

        async def requested() -> None:
            current = pools.get(key_string(pool))
            assert current is not None
            assert current.state == common_pb2.UPDATE_REQUESTED
            assert [v.name for v in current.vms] == ["vm2", "vm3"]
            assert current.vms[1].state == vmpool_pb2.VM_ADD

        await eventually(requested)
        done = vmpool_pb2.VMPoolInfo(
            key=key,
            state=common_pb2.READY,
            vms=[vm("vm2", "10.0.0.2"), vm("vm3", "10.0.0.3")],
        )
        crm.send(done)
        async with asyncio.timeout(10):
            await add
    [stored] = [p async for p in stub.ShowVMPool(vmpool_pb2.VMPool(), timeout=10)]
    assert [(v.name, v.state) for v in stored.vms] == [
        ("vm2", vmpool_pb2.VM_FREE),
        ("vm3", vmpool_pb2.VM_FREE),
    ]
    assert stored.state == common_pb2.TRACKED_STATE_UNKNOWN  # reset once the CRM is done


# --- GPUDriver ---------------------------------------------------------------------------------


async def test_gpu_drivers(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ctl = await harness.start()
    stub = cloudlet_pb2_grpc.GPUDriverApiStub(ctl.channel)
    org = unique_org()
    driver = cloudlet_pb2.GPUDriver(
        key=cloudlet_pb2.GPUDriverKey(name="t4", organization=org), properties={"a": "b"}
    )
    lines, err = await collect(stub.CreateGPUDriver(driver, timeout=10))
    assert err is None
    assert lines == ["GPU driver created successfully"]
    replay, err = await collect(ctl.streams.StreamGPUDriver(driver.key, timeout=10))
    assert err is None
    assert replay == lines
    with_build = cloudlet_pb2.GPUDriver(key=cloudlet_pb2.GPUDriverKey(name="v100"))
    with_build.builds.add(name="b1", driver_path="https://x/d.deb", md5sum="m", kernel_version="5")
    _, err = await collect(stub.CreateGPUDriver(with_build, timeout=10))
    assert isinstance(err, FailedPrecondition)
    assert "Vault" in err.message

    await put_features(ctl, features())
    cloudlet = new_cloudlet(org, crm_override=IGNORE_CRM, gpu_config={"driver": driver.key})
    await create(ctl, cloudlet)
    stored = ctl.cloudlet(cloudlet.key)
    assert stored is not None
    assert stored.license_config_storage_path == (
        f"local/{org}/t4/cloudlet/licenseconfig/c1/license.conf"
    )
    _, err = await collect(stub.DeleteGPUDriver(driver, timeout=10))
    assert isinstance(err, FailedPrecondition)
    assert err.message == "GPU driver in use by Cloudlet(s): c1"
    [shown] = [d async for d in stub.ShowGPUDriver(cloudlet_pb2.GPUDriver(), timeout=10)]
    assert shown.state == ""
    assert not shown.delete_prepare  # undone
    delete = cloudlet_pb2.Cloudlet(key=cloudlet.key, crm_override=IGNORE_CRM)
    _, err = await collect(ctl.cloudlets.DeleteCloudlet(delete, timeout=30))
    assert err is None
    lines, err = await collect(stub.DeleteGPUDriver(driver, timeout=10))
    assert err is None
    assert lines == ["GPU driver deleted successfully"]


# --- CloudletInfo, small edits, refusals ----------------------------------------------------------


async def test_cloudlet_info_and_small_edits(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ctl = await harness.start()
    infos = cloudlet_pb2_grpc.CloudletInfoApiStub(ctl.channel)
    await put_features(ctl, features())
    org = unique_org()
    cloudlet = new_cloudlet(org, crm_override=IGNORE_CRM)
    await create(ctl, cloudlet)
    injected = cloudlet_pb2.CloudletInfo(key=cloudlet.key, state=appcommon_pb2.CLOUDLET_STATE_READY)
    injected.status.msgs.append("not stored")
    await infos.InjectCloudletInfo(injected, timeout=10)
    [shown] = [i async for i in infos.ShowCloudletInfo(cloudlet_pb2.CloudletInfo(), timeout=10)]
    assert shown.state == appcommon_pb2.CLOUDLET_STATE_READY
    assert not shown.status.msgs

    orgs = cloudlet_pb2.CloudletAllianceOrg(key=cloudlet.key, organization="foo")
    await ctl.cloudlets.AddCloudletAllianceOrg(orgs, timeout=10)
    err = await unary_error(ctl.cloudlets.AddCloudletAllianceOrg(orgs))
    assert err.message == 'Duplicate alliance org "foo" specified'
    own = cloudlet_pb2.CloudletAllianceOrg(key=cloudlet.key, organization=org)
    err = await unary_error(ctl.cloudlets.AddCloudletAllianceOrg(own))
    assert err.message == f'Cannot add cloudlet\'s own org "{org}" as alliance org'
    await ctl.cloudlets.RemoveCloudletAllianceOrg(orgs, timeout=10)
    await ctl.cloudlets.RemoveCloudletAllianceOrg(orgs, timeout=10)  # twice is fine
    err = await unary_error(
        ctl.cloudlets.AddCloudletAllianceOrg(cloudlet_pb2.CloudletAllianceOrg(key=cloudlet.key))
    )
    assert err.message == "No alliance organization specified"

    mapping = cloudlet_pb2.CloudletResMap(key=cloudlet.key, mapping={"GPU": "gputags"})
    err = await unary_error(ctl.cloudlets.AddCloudletResMapping(mapping))
    assert isinstance(err, NotFound)
    assert err.message == f'ResTagTable key {{"name":"gputags","organization":"{org}"}} not found'

    err = await unary_error(ctl.cloudlets.GenerateAccessKey(cloudlet.key))
    assert isinstance(err, FailedPrecondition)
    assert "Vault" in err.message
    usage = await ctl.cloudlets.GetCloudletResourceUsage(
        cloudlet_pb2.CloudletResourceUsage(key=cloudlet.key), timeout=10
    )
    assert usage.key == cloudlet.key
    assert list(usage.info) == []  # no clusters and no limits reported yet
    await infos.EvictCloudletInfo(injected, timeout=10)
    assert [i async for i in infos.ShowCloudletInfo(cloudlet_pb2.CloudletInfo(), timeout=10)] == []


# --- updates -----------------------------------------------------------------------------------


async def test_cloudlet_updates(harness: ControllerHarness, ccrm: FakeCcrm) -> None:
    ctl = await harness.start()
    await put_features(ctl, features())
    org = unique_org()
    cloudlet = new_cloudlet(org)
    await create(ctl, cloudlet)

    async def update(**values: Any) -> tuple[list[str], EdgeError | None]:
        paths = values.pop("fields")
        request = cloudlet_pb2.Cloudlet(key=cloudlet.key, fields=paths, **values)
        lines, err = await collect(ctl.cloudlets.UpdateCloudlet(request, timeout=30))
        return lines, err

    _, err = await update(fields=[])
    assert err is not None
    assert err.message == "nothing specified to update"
    _, err = await update(fields=["15"], platform_type="x")
    assert err is not None
    assert err.message == "specified field(s) Platform Type cannot be modified"
    _, err = await update(fields=["8"], num_dynamic_ips=0)
    assert err is not None
    assert err.message == (
        "Cannot specify less than one dynamic IP unless Ip Support Static is specified"
    )
    _, err = await update(fields=["5.1"], location={"latitude": 91})
    assert err is not None
    assert err.message == "Invalid latitude value"

    lines, err = await update(fields=["5.1"], location={"latitude": 12.5})
    assert err is None
    assert lines == ["Cloudlet updated successfully"]
    assert ctl.cloudlet(cloudlet.key).location.latitude == 12.5  # type: ignore[union-attr]

    # env vars need the worker: UpdateRequested, the CCRM gets the changed fields and state
    lines, err = await update(fields=["19"], env_var={"DEBUG": "1"})
    assert err is None
    assert lines == ["Updating cloudlet", "Cloudlet updated successfully"]
    request = ccrm.requests[-1]
    assert request.state == common_pb2.UPDATE_REQUESTED
    assert list(request.fields) == ["19", "12"]
    assert ctl.cloudlet(cloudlet.key).state == common_pb2.READY  # type: ignore[union-attr]

    # maintenance without failover, through the CCRM (its CRM runs there)
    lines, err = await update(
        fields=["30"], maintenance_state=appcommon_pb2.MAINTENANCE_START_NO_FAILOVER
    )
    assert err is None
    assert lines == [
        "Starting CRM maintenance",
        "CRM maintenance started",
        "Cloudlet is in maintenance",
    ]
    stored = ctl.cloudlet(cloudlet.key)
    assert stored is not None
    assert stored.maintenance_state == appcommon_pb2.UNDER_MAINTENANCE
    _, err = await update(fields=["30"], maintenance_state=appcommon_pb2.MAINTENANCE_START)
    assert err is not None
    assert err.message == "Cloudlet must be in NormalOperation before starting maintenance"
    lines, err = await update(fields=["30"], maintenance_state=appcommon_pb2.NORMAL_OPERATION)
    assert err is None
    assert lines == ["Cloudlet is back to normal operation"]

    # a cloudlet whose CRM never reported cannot be updated
    bare = new_cloudlet(org, name="bare", crm_override=IGNORE_CRM)
    await create(ctl, bare)
    request = cloudlet_pb2.Cloudlet(key=bare.key, fields=["5.1"], location={"latitude": 1})
    _, err = await collect(ctl.cloudlets.UpdateCloudlet(request, timeout=30))
    assert err is not None
    assert err.message == f"Missing cloudlet info: {{{org} bare }}"
