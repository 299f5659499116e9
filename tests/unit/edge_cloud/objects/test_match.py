import pytest
from distributed_match_engine import loc_pb2
from edgeproto import (
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    common_pb2,
    flavor_pb2,
    refs_pb2,
    zonepool_pb2,
)
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from edge_cloud.objects.match import matches
from tests.unit.edge_cloud.objects.strategies import messages

CLOUDLET = cloudletkey_pb2.CloudletKey(organization="oper1", name="cloudlet1")


def _cluster(name: str, org: str) -> clusterinst_pb2.ClusterInst:
    return clusterinst_pb2.ClusterInst(
        key=cluster_pb2.ClusterKey(name=name, organization=org),
        cloudlet_key=CLOUDLET,
        state=common_pb2.READY,
        num_nodes=2,
    )


def test_empty_filter_matches_everything() -> None:
    assert matches(clusterinst_pb2.ClusterInst(), _cluster("c1", "dev"))


def test_non_zero_fields_must_equal() -> None:
    obj = _cluster("c1", "dev")
    by_org = clusterinst_pb2.ClusterInst(key=cluster_pb2.ClusterKey(organization="dev"))
    assert matches(by_org, obj)
    assert not matches(
        clusterinst_pb2.ClusterInst(key=cluster_pb2.ClusterKey(organization="x")), obj
    )
    assert matches(clusterinst_pb2.ClusterInst(state=common_pb2.READY), obj)
    assert not matches(clusterinst_pb2.ClusterInst(state=common_pb2.CREATING), obj)
    assert matches(
        clusterinst_pb2.ClusterInst(cloudlet_key=cloudletkey_pb2.CloudletKey(name="cloudlet1")), obj
    )
    assert not matches(clusterinst_pb2.ClusterInst(num_nodes=3), obj)


def test_nested_messages_match_recursively() -> None:
    obj = cloudlet_pb2.Cloudlet(key=CLOUDLET, location=loc_pb2.Loc(latitude=1.5, longitude=2))
    assert matches(cloudlet_pb2.Cloudlet(location=loc_pb2.Loc(latitude=1.5)), obj)
    assert not matches(cloudlet_pb2.Cloudlet(location=loc_pb2.Loc(latitude=1.0)), obj)


def test_the_fields_mask_is_ignored() -> None:
    assert matches(clusterinst_pb2.ClusterInst(fields=["14"]), _cluster("c1", "dev"))


def test_list_entries_must_each_be_present() -> None:
    zone = cloudletkey_pb2.ZoneKey
    obj = zonepool_pb2.ZonePool(
        zones=[zone(organization="o", name="z1"), zone(organization="o", name="z2")]
    )
    assert matches(zonepool_pb2.ZonePool(zones=[zone(name="z2")]), obj)
    assert not matches(zonepool_pb2.ZonePool(zones=[zone(name="z3")]), obj)
    assert matches(cloudlet_pb2.Cloudlet(errors=["b"]), cloudlet_pb2.Cloudlet(errors=["a", "b"]))
    assert not matches(
        cloudlet_pb2.Cloudlet(errors=["c"]), cloudlet_pb2.Cloudlet(errors=["a", "b"])
    )


def test_map_entries_must_each_be_present() -> None:
    obj = refs_pb2.AppInstRefs(insts={'{"name":"i1","organization":"dev"}': 1})
    assert matches(refs_pb2.AppInstRefs(insts={'{"name":"i1","organization":"dev"}': 1}), obj)
    assert not matches(refs_pb2.AppInstRefs(insts={'{"name":"i2","organization":"dev"}': 1}), obj)
    assert not matches(refs_pb2.AppInstRefs(insts={'{"name":"i1","organization":"dev"}': 2}), obj)
    ips = refs_pb2.CloudletIPs()
    ips.cluster_ips["k"].control_plane_ipv4 = "10.0.0.1"
    flt = refs_pb2.CloudletIPs()
    flt.cluster_ips["k"].SetInParent()
    assert matches(flt, ips)


def test_different_types_are_refused() -> None:
    with pytest.raises(TypeError):
        matches(flavor_pb2.Flavor(), cloudlet_pb2.Cloudlet())


@given(
    st.sampled_from(
        [cloudlet_pb2.Cloudlet, clusterinst_pb2.ClusterInst, refs_pb2.CloudletIPs]
    ).flatmap(messages)
)
def test_every_object_matches_itself_and_the_empty_filter(obj: Message) -> None:
    assert matches(obj, obj)
    assert matches(type(obj)(), obj)
