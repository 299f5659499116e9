"""What a cloudlet's accounting counts beyond the requested node sizes (controller.md §4.1).

Platform VMs from the resources snapshot, whole infra flavors, a root LB per dedicated cluster
or VM app (its size from the CCRM's `GetRootLbFlavor`, matched to an infra flavor), one
external IP per LB or platform VM group, flavor counting on flavor-counting platforms, and the
CCRM's per-VM counters (`GetClusterAdditionalResources`): through gRPC on real etcd and Redis,
against a CCRM test server that answers those calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from edgeproto import (
    ccrm_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    common_pb2,
    flavor_pb2,
    infraresources_pb2,
)

from edge_cloud.errors import ResourceExhausted
from edge_cloud.objects import registry
from tests.integration.controller.cloudlet_harness import (
    Controller,
    ControllerHarness,
    collect,
    features,
    harness,
    put_features,
    unique_org,
)
from tests.integration.controller.clusterinst_harness import (
    InstCcrm,
    clusters,
    edit,
    inst_ccrm_server,
    new_cluster,
    put_flavor,
    ready_cloudlet,
)

__all__ = ["harness"]

CLOUDLET = registry.by_class(cloudlet_pb2.Cloudlet)
CLOUDLET_INFO = registry.by_class(cloudlet_pb2.CloudletInfo)
_Ctx = grpc.aio.ServicerContext[Any, Any]


@dataclass
class SizingCcrm(InstCcrm):
    """A CCRM that sizes root LBs (2 vCPUs, 4 GB) and counts one `Instances` per VM.

    Attributes:
        sizing_calls: How often each sizing RPC was called (the Controller keeps answers).
    """

    sizing_calls: dict[str, int] = field(default_factory=dict)

    async def GetRootLbFlavor(
        self, request: cloudletkey_pb2.CloudletKey, context: _Ctx
    ) -> flavor_pb2.Flavor:
        self.sizing_calls["lb"] = self.sizing_calls.get("lb", 0) + 1
        return flavor_pb2.Flavor(
            key=flavor_pb2.FlavorKey(name="rootlb"), vcpus=2, ram=4096, disk=40
        )

    async def GetClusterAdditionalResources(
        self, request: ccrm_pb2.ClusterResourcesReq, context: _Ctx
    ) -> ccrm_pb2.InfraResourceMap:
        self.sizing_calls["extras"] = self.sizing_calls.get("extras", 0) + 1
        found = ccrm_pb2.InfraResourceMap()
        count = sum(vm.count for vm in request.vm_resources)
        found.infra_resources["Instances"].CopyFrom(
            infraresources_pb2.InfraResource(name="Instances", value=count)
        )
        return found


async def started(harness: ControllerHarness, ccrm: SizingCcrm) -> Controller:
    ctl = await harness.start()
    await put_features(ctl, features(uses_root_lb=True))
    return ctl


def usage_rows(usage: cloudlet_pb2.CloudletResourceUsage) -> dict[str, int]:
    return {r.name: r.value for r in usage.info}


async def used(ctl: Controller, key: cloudletkey_pb2.CloudletKey) -> dict[str, int]:
    usage = await ctl.cloudlets.GetCloudletResourceUsage(
        cloudlet_pb2.CloudletResourceUsage(key=key), timeout=10
    )
    return usage_rows(usage)


def with_platform_vms(info: cloudlet_pb2.CloudletInfo) -> None:
    snapshot = info.resources_snapshot
    snapshot.platform_vms.add(name="pf", type="platformvm", infraFlavor="m1.small")
    snapshot.platform_vms.add(name="lb", type="sharedrootlb", infraFlavor="m1.small")


async def test_platform_vms_root_lbs_external_ips_and_ccrm_counters(
    harness: ControllerHarness,
) -> None:
    ccrm = SizingCcrm()
    async with inst_ccrm_server(ccrm) as addr:
        harness.ccrm_addr = addr
        ctl = await started(harness, ccrm)
        org = unique_org()
        cloudlet = await ready_cloudlet(ctl, org)
        await edit(ctl, CLOUDLET_INFO, cloudlet.key, with_platform_vms)
        await put_flavor(ctl)  # x1.small: 2 vCPUs → infra flavor m1.small (2 vCPUs, 4 GB)

        # the platform VM and the shared LB: whole m1.small flavors, two external IPs
        assert await used(ctl, cloudlet.key) == {
            "Disk": 80,
            "External IPs": 2,
            "Instances": 2,
            "RAM": 8192,
            "vCPUs": 4,
        }
        shared = new_cluster(org, cloudlet, "shared")
        _, err = await collect(clusters(ctl).CreateClusterInst(shared))
        assert err is None, err
        # a shared-access docker cluster: one node VM, no LB of its own
        after_shared = await used(ctl, cloudlet.key)
        assert (after_shared["vCPUs"], after_shared["External IPs"]) == (6, 2)
        assert after_shared["Instances"] == 3

        dedicated = new_cluster(
            org, cloudlet, "dedicated", ip_access=common_pb2.IP_ACCESS_DEDICATED
        )
        _, err = await collect(clusters(ctl).CreateClusterInst(dedicated))
        assert err is None, err
        # its node and its root LB (the CCRM's 2 vCPU / 4 GB size matched to m1.small)
        after_dedicated = await used(ctl, cloudlet.key)
        assert (after_dedicated["vCPUs"], after_dedicated["External IPs"]) == (10, 3)
        assert after_dedicated["Instances"] == 5
        assert ccrm.sizing_calls["lb"] == 1  # kept while the cloudlet's flavors are the same

        def ip_quota(cl: cloudlet_pb2.Cloudlet) -> None:
            cl.resource_quotas.add(name="External IPs", value=3)

        await edit(ctl, CLOUDLET, cloudlet.key, ip_quota)
        another = new_cluster(org, cloudlet, "dedicated2", ip_access=common_pb2.IP_ACCESS_DEDICATED)
        _, err = await collect(clusters(ctl).CreateClusterInst(another))
        assert isinstance(err, ResourceExhausted)
        assert err.message == (
            "not enough resources available: required External IPs is 1 but only 0 out of 3 "
            "is available"
        )
        # a shared cluster needs no IP and still fits
        _, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet, "s2")))
        assert err is None, err


async def test_flavor_counting_platform_counts_flavors(harness: ControllerHarness) -> None:
    ccrm = SizingCcrm()
    async with inst_ccrm_server(ccrm) as addr:
        harness.ccrm_addr = addr
        ctl = await started(harness, ccrm)
        await put_features(ctl, features(uses_root_lb=True, resource_calc_by_flavor_counts=True))
        org = unique_org()
        cloudlet = await ready_cloudlet(ctl, org)

        def four_small(info: cloudlet_pb2.CloudletInfo) -> None:
            info.resources_snapshot.info.add(name="flavor/m1.small", infra_max_value=2)

        await edit(ctl, CLOUDLET_INFO, cloudlet.key, four_small)
        await put_flavor(ctl)
        _, err = await collect(
            clusters(ctl).CreateClusterInst(
                new_cluster(org, cloudlet, "d1", ip_access=common_pb2.IP_ACCESS_DEDICATED)
            )
        )
        assert err is None, err
        counted = await used(ctl, cloudlet.key)
        # the node and its LB are two m1.small units; no vCPU/RAM sums on such a platform
        assert counted["flavor/m1.small"] == 2
        assert "vCPUs" not in counted or counted["vCPUs"] == 0
        _, err = await collect(clusters(ctl).CreateClusterInst(new_cluster(org, cloudlet, "d2")))
        assert isinstance(err, ResourceExhausted)
        assert err.message == (
            "not enough resources available: required flavor/m1.small is 1 but only 0 out of 2 "
            "is available"
        )
