"""A database in the original Controller's format is served after `--auto-upgrade` (§2.8).

The database is ours (`go_json_samples.model_56_database`): data model 56 as the original
stored it, Go JSON with Apps sized by `default_flavor` and instances by `flavor`. Our
upgrades 57 (`NodePoolsFeature`) and 58 (`AppObjID`) run on it, a Controller's caches load
the result, and every object must equal what those upgrades are documented to make of it
(services/controller/_upgrade.py, controller.md §2.8), written out below by hand:

- Apps: Kubernetes or Helm ones get `kubernetes_resources` (the whole flavor as the CPU
  pool's totals and its one-node minimum topology), the others `node_resources`; their
  `default_flavor` becomes `{}`; 58 gives each a 26-character ULID `obj_id`.
- ClusterInsts: the Kubernetes one gets the pool `defaultpool` of `num_nodes` nodes of the
  flavor, the Docker one `node_resources`; the flavor stays.
- AppInsts: resources by their App's deployment; a VM instance's `vm_flavor` and external
  volume go into its node resources.
"""

from __future__ import annotations

from typing import Any

from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    decimal_pb2,
    flavor_pb2,
    resources_pb2,
)
from google.protobuf.message import Message

from edge_cloud.objects import keys, registry
from edge_cloud.store import EtcdStore
from services.controller._startup import VERSION_HASH, VERSION_ID, check_version, version_value
from services.controller._upgrade import UPGRADES
from tests.integration.controller.conftest import StartInstance
from tests.unit.edge_cloud import go_json_samples as samples

DEV = samples.MODEL_56_DEVELOPER
FLAVOR = samples.MODEL_56_FLAVOR
KUBERNETES = ("kubernetes", "helm")


def _node_resources(**extra: Any) -> resources_pb2.NodeResources:
    nodes = resources_pb2.NodeResources(
        vcpus=FLAVOR.vcpus, ram=FLAVOR.ram, disk=FLAVOR.disk, **extra
    )
    nodes.opt_res_map.update(samples.MODEL_56_OPT_RES)
    return nodes


def _kubernetes_resources() -> resources_pb2.KubernetesResources:
    kr = resources_pb2.KubernetesResources()
    pool = kr.cpu_pool
    pool.total_vcpus.CopyFrom(decimal_pb2.Udec64(whole=FLAVOR.vcpus))
    pool.total_memory, pool.total_disk = FLAVOR.ram, FLAVOR.disk
    pool.total_opt_res.update(samples.MODEL_56_OPT_RES)
    topology = pool.topology
    topology.min_node_vcpus, topology.min_node_memory = FLAVOR.vcpus, FLAVOR.ram
    topology.min_node_disk = FLAVOR.disk
    topology.min_node_opt_res.update(samples.MODEL_56_OPT_RES)
    topology.min_number_of_nodes = 1
    return kr


def _cloudlet() -> cloudletkey_pb2.CloudletKey:
    return cloudletkey_pb2.CloudletKey(**samples.MODEL_56_CLOUDLET)


def expected() -> dict[tuple[str, str], Message]:
    """(type, key string) → the object the upgrades leave, from their documented behaviour."""
    flavor_key = flavor_pb2.FlavorKey(name=FLAVOR.name)
    out: dict[tuple[str, str], Message] = {}
    flavor = flavor_pb2.Flavor(key=flavor_key, ram=FLAVOR.ram, vcpus=FLAVOR.vcpus, disk=FLAVOR.disk)
    flavor.opt_res_map.update(samples.MODEL_56_OPT_RES)
    out["Flavor", keys.key_string(flavor)] = flavor
    for deployment in samples.MODEL_56_DEPLOYMENTS:
        vm = deployment == "vm"
        app = app_pb2.App(
            key=app_pb2.AppKey(organization=DEV, name=f"{deployment}-svc", version="0.9"),
            image_path="vm.qcow2#md5:0123456789abcdef0123456789abcdef"
            if vm
            else f"registry.example.net/{DEV}/svc:0.9",
            image_type=app_pb2.IMAGE_TYPE_QCOW if vm else app_pb2.IMAGE_TYPE_DOCKER,
            access_ports="tcp:7443",
            deployment=deployment,
            access_type=app_pb2.ACCESS_TYPE_LOAD_BALANCER,
        )
        app.default_flavor.SetInParent()  # {}: the resources size it from now on
        if deployment in KUBERNETES:
            app.kubernetes_resources.CopyFrom(_kubernetes_resources())
        else:
            app.node_resources.CopyFrom(_node_resources())
        out["App", keys.key_string(app)] = app

        inst = appinst_pb2.AppInst(
            key=appinst_pb2.AppInstKey(name=f"{deployment}-svc-1", organization=DEV),
            app_key=app.key,
            cloudlet_key=_cloudlet(),
            zone_key=cloudletkey_pb2.ZoneKey(**samples.MODEL_56_CLOUDLET),
            flavor=flavor_key,
            vm_flavor="m5.2xlarge" if vm else "",
            external_volume_size=50 if vm else 0,
            obj_id=f"01hz56inst{deployment[:3]}q1w2e3r4t5",
            db_model_id=56,
        )
        for empty in ("cluster_key", "cloudlet_loc", "runtime_info", "fed_key"):
            getattr(inst, empty).SetInParent()  # written as {} (no omitempty)
        inst.virtual_cluster_key.SetInParent()
        if deployment in KUBERNETES:
            inst.kubernetes_resources.CopyFrom(_kubernetes_resources())
        elif vm:
            inst.node_resources.CopyFrom(
                _node_resources(infra_node_flavor="m5.2xlarge", external_volume_size=50)
            )
        else:
            inst.node_resources.CopyFrom(_node_resources())
        out["AppInst", keys.key_string(inst)] = inst

    for deployment in ("docker", "kubernetes"):
        cluster = clusterinst_pb2.ClusterInst(
            key=cluster_pb2.ClusterKey(name=f"{deployment}-pool", organization=DEV),
            cloudlet_key=_cloudlet(),
            zone_key=cloudletkey_pb2.ZoneKey(**samples.MODEL_56_CLOUDLET),
            flavor=flavor_key,
            deployment=deployment,
            obj_id=f"01hz56cluster{deployment[:3]}a1s2d3f4",
            db_model_id=56,
        )
        cluster.resources.SetInParent()  # {"vms":null}
        if deployment == "kubernetes":
            cluster.num_masters, cluster.num_nodes = 1, 2
            cluster.shared_volume_size, cluster.master_node_flavor = 5, "ec.medium"
            cluster.node_pools.add(
                Name="defaultpool", num_nodes=2, node_resources=_node_resources()
            )
        else:
            cluster.node_resources.CopyFrom(_node_resources())
        out["ClusterInst", keys.key_string(cluster)] = cluster
    return out


async def test_a_model_56_database_loads_into_the_caches_after_the_upgrade(
    etcd_store: EtcdStore, start_instance: StartInstance
) -> None:
    [at_56] = [u for u in UPGRADES if u.id == 56]
    await etcd_store.put("1/VersionV2", version_value(at_56.hash, at_56.id))
    database = samples.model_56_database()
    for rec in database:
        await etcd_store.put(rec.key, rec.value.encode())

    await check_version(etcd_store, auto_upgrade=True)

    version = await etcd_store.get("1/VersionV2")
    assert version is not None
    assert version.value == version_value(VERSION_HASH, VERSION_ID)
    instance = await start_instance()
    want = expected()
    assert len(want) == len(database) == 11
    obj_ids: set[str] = set()
    for (type_name, key), obj in want.items():
        got = instance.sync.caches.get(registry.by_name(type_name), key)
        assert got is not None, (type_name, key)
        if type_name == "App":
            obj_id = got.obj_id  # type: ignore[attr-defined]
            assert len(obj_id) == 26, obj_id  # 58's ULID
            assert obj_id not in obj_ids, obj_id
            obj_ids.add(obj_id)
            obj.obj_id = obj_id  # type: ignore[attr-defined]
        assert got == obj, (type_name, key)
    assert len(obj_ids) == len(samples.MODEL_56_DEPLOYMENTS)
