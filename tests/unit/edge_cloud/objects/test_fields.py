import pytest
from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import (
    alert_pb2,
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    flavor_pb2,
    metric_pb2,
    refs_pb2,
    resources_pb2,
    settings_pb2,
    zonepool_pb2,
)
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from edge_cloud.errors import InvalidArgument
from edge_cloud.objects import registry
from edge_cloud.objects.fields import (
    FieldSet,
    all_field_paths,
    apply_fields,
    check_updatable,
    diff_fields,
    field_path_ident,
    field_path_name,
    field_paths,
    is_selected,
    key_field_number,
    set_fields,
)
from edge_cloud.objects.keys import key_of, set_key
from edge_cloud.objects.registry import Identity, descriptor_of
from tests.unit.edge_cloud.objects.strategies import messages

CLOUDLET = cloudlet_pb2.Cloudlet.DESCRIPTOR
APP_INST = appinst_pb2.AppInst.DESCRIPTOR
CLUSTER_INST = clusterinst_pb2.ClusterInst.DESCRIPTOR


# --- path tables (objects.md §1.6) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("desc", "path", "ident", "name"),
    [
        (CLOUDLET, "5.1", "LocationLatitude", "Location Latitude"),
        (CLOUDLET, "2.1", "KeyOrganization", "Key Organization"),
        (CLOUDLET, "5.8.1", "LocationTimestampSeconds", "Location Timestamp Seconds"),
        (CLOUDLET, "22.2.1", "ResTagMapValueName", "Res Tag Map Value Name"),
        (CLOUDLET, "41", "HostController", "Host Controller"),
        (CLOUDLET, "9.4", "TimeLimitsCreateAppInstTimeout", "Time Limits Create App Inst Timeout"),
        (APP_INST, "9.1", "MappedPortsProto", "Mapped Ports Proto"),
        (APP_INST, "38", "InternalPortToLbIp", "Internal Port To Lb Ip"),
        (APP_INST, "38.1", "InternalPortToLbIpKey", "Internal Port To Lb Ip Key"),
        (APP_INST, "38.2", "InternalPortToLbIpValue", "Internal Port To Lb Ip Value"),
        (
            APP_INST,
            "55.1.1.2",
            "KubernetesResourcesCpuPoolTotalVcpusNanos",
            "Kubernetes Resources Cpu Pool Total Vcpus Nanos",
        ),
        (CLUSTER_INST, "46.2", "NodePoolsNumNodes", "Node Pools Num Nodes"),
        (settings_pb2.Settings.DESCRIPTOR, "8", "CreateAppInstTimeout", "Create App Inst Timeout"),
        (
            cloudlet_pb2.CloudletInfo.DESCRIPTOR,
            "17.5",
            "ResourcesSnapshotK8SAppInsts",
            "Resources Snapshot K8 S App Insts",
        ),
    ],
)
def test_path_names_follow_the_original(desc: Descriptor, path: str, ident: str, name: str) -> None:
    assert path in all_field_paths(desc)
    assert field_path_ident(desc, path) == ident
    assert field_path_name(desc, path) == name


def test_flavor_paths_in_declaration_order_parents_first() -> None:
    assert all_field_paths(flavor_pb2.Flavor.DESCRIPTOR) == (
        "2", "2.1", "3", "4", "5", "6", "6.1", "6.2", "7",
        "8", "8.1", "8.2", "8.3", "8.4", "8.5",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("cls", "count"),
    # How many <Msg>Field constants the original generates for these messages.
    [
        (cloudlet_pb2.Cloudlet, 151),
        (appinst_pb2.AppInst, 173),
        (app_pb2.App, 155),
        (clusterinst_pb2.ClusterInst, 118),
        (cloudlet_pb2.CloudletInfo, 125),
        (settings_pb2.Settings, 42),
        (flavor_pb2.Flavor, 15),
    ],
)
def test_path_counts_match_the_originals_tables(cls: type[Message], count: int) -> None:
    assert len(all_field_paths(cls.DESCRIPTOR)) == count


def test_the_fields_mask_and_unknown_paths_are_not_paths() -> None:
    assert "1" not in all_field_paths(CLOUDLET)
    assert "1" in all_field_paths(alert_pb2.Alert.DESCRIPTOR)  # Alert's field 1 is labels
    with pytest.raises(KeyError, match="has no field path '3'"):
        field_path_name(CLOUDLET, "3")
    assert field_paths(CLOUDLET)["5.1"].field.name == "latitude"


def test_key_field_numbers() -> None:
    assert key_field_number(CLOUDLET) == 2
    assert key_field_number(refs_pb2.CloudletRefs.DESCRIPTOR) == 1
    assert key_field_number(settings_pb2.Settings.DESCRIPTOR) is None
    assert key_field_number(cloudletkey_pb2.CloudletKey.DESCRIPTOR) is None


# --- selection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fields", "selected"),
    [
        ("5", ["5.1"], True),
        ("5.1", ["5"], True),
        ("5.8.1", ["5"], True),
        ("5", ["5.8.1"], True),
        ("5.2", ["5.1"], False),
        ("50", ["5"], False),
        ("5", ["50.1"], False),
        ("5.1", [], False),
    ],
)
def test_is_selected(path: str, fields: list[str], selected: bool) -> None:
    assert is_selected(path, fields) is selected


def test_field_set_rules() -> None:
    fs = FieldSet(["5.1", "10", "2"])
    assert fs.has("5.1")
    assert fs.has("5.1.7")
    assert not fs.has("5")
    assert fs.has_or_child("5")
    assert not fs.has_or_child("5.2")
    assert list(fs) == ["10", "2", "5.1"]  # Go's sort.Strings order
    assert len(fs) == 3
    assert "10" in fs
    assert "1" not in fs


# --- check_updatable (controller.md §3.0) --------------------------------------------------------


def test_nothing_specified_to_update() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_updatable([], ["3"], flavor_pb2.Flavor.DESCRIPTOR)
    assert info.value.message == "nothing specified to update"


def test_fields_that_cannot_be_modified_are_listed_in_sorted_path_order() -> None:
    with pytest.raises(InvalidArgument) as info:
        check_updatable(["5.1", "14", "12", "8"], ["8"], CLOUDLET)
    assert info.value.message == (
        "specified field(s) State,Deployment Local,Location Latitude cannot be modified"
    )


def test_allowed_parents_allow_children_and_keys_and_unknown_paths_pass() -> None:
    check_updatable(["5.1", "5.8.2", "2", "2.1", "999"], ["5"], CLOUDLET)
    with pytest.raises(
        InvalidArgument, match=r"^specified field\(s\) Location cannot be modified$"
    ):
        check_updatable(["5"], ["5.1"], CLOUDLET)


# --- apply_fields -----------------------------------------------------------------------------


def _cloudlet(lat: float, lon: float, name: str = "c") -> cloudlet_pb2.Cloudlet:
    return cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization="o", name=name),
        location=loc_pb2.Loc(latitude=lat, longitude=lon),
    )


def test_apply_copies_only_selected_leaves() -> None:
    dst = _cloudlet(1, 2)
    src = _cloudlet(10, 20)
    src.num_dynamic_ips = 7
    assert apply_fields(dst, src, ["5.1"]) == ["5.1"]
    assert (dst.location.latitude, dst.location.longitude, dst.num_dynamic_ips) == (10, 2, 0)


def test_apply_selected_message_is_copied_whole_and_cleared_when_absent() -> None:
    dst = _cloudlet(1, 2)
    src = _cloudlet(10, 20)
    assert apply_fields(dst, src, ["5"]) == ["5"]
    assert dst.location == src.location
    src.ClearField("location")
    assert apply_fields(dst, src, ["5"]) == ["5"]
    assert not dst.HasField("location")


def test_apply_ignores_key_paths_and_unchanged_values() -> None:
    dst = _cloudlet(1, 2, name="old")
    src = _cloudlet(1, 2, name="new")
    assert apply_fields(dst, src, ["2", "2.2", "5.1"]) == []
    assert dst.key.name == "old"


def test_apply_treats_lists_and_maps_as_a_whole() -> None:
    dst = appinst_pb2.AppInst(
        mapped_ports=[appinst_pb2.InstPort(proto=appcommon_pb2.L_PROTO_TCP, internal_port=80)],
        internal_port_to_lb_ip={"80": "10.0.0.1", "81": "10.0.0.2"},
    )
    src = appinst_pb2.AppInst(
        mapped_ports=[
            appinst_pb2.InstPort(proto=appcommon_pb2.L_PROTO_UDP, internal_port=53),
            appinst_pb2.InstPort(proto=appcommon_pb2.L_PROTO_TCP, internal_port=443),
        ],
        internal_port_to_lb_ip={"53": "10.0.0.3"},
    )
    assert apply_fields(dst, src, ["9.1", "38.1"]) == ["9", "38"]
    assert list(dst.mapped_ports) == list(src.mapped_ports)
    assert dict(dst.internal_port_to_lb_ip) == {"53": "10.0.0.3"}


def test_apply_list_actions_add_and_remove() -> None:
    dst = app_pb2.App(auto_prov_policies=["a", "b"], env_vars={"X": "1"})
    src = app_pb2.App(auto_prov_policies=["b", "c"], env_vars={"Y": "2"})
    assert apply_fields(dst, src, ["32", "47"], list_action="add") == ["32", "47"]
    assert list(dst.auto_prov_policies) == ["a", "b", "c"]
    assert dict(dst.env_vars) == {"X": "1", "Y": "2"}
    assert apply_fields(dst, src, ["32", "47"], list_action="remove") == ["32", "47"]
    assert list(dst.auto_prov_policies) == ["a"]
    assert dict(dst.env_vars) == {"X": "1"}
    assert apply_fields(dst, src, ["32"], list_action="remove") == []


def test_apply_add_dedups_gpus_by_model_and_keys_by_key_string() -> None:
    gpu = resources_pb2.GPUResource
    dst = flavor_pb2.Flavor(gpus=[gpu(model_id="t4", count=1)])
    src = flavor_pb2.Flavor(gpus=[gpu(model_id="t4", count=2), gpu(model_id="a100", count=1)])
    apply_fields(dst, src, ["8"], list_action="add")
    assert [(g.model_id, g.count) for g in dst.gpus] == [("t4", 1), ("a100", 1)]
    apply_fields(dst, flavor_pb2.Flavor(gpus=[gpu(model_id="t4")]), ["8"], list_action="remove")
    assert [g.model_id for g in dst.gpus] == ["a100"]

    zone = cloudletkey_pb2.ZoneKey
    pool = zonepool_pb2.ZonePool(zones=[zone(organization="o", name="z1")])
    apply_fields(
        pool,
        zonepool_pb2.ZonePool(zones=[zone(organization="o", name="z1"), zone(name="z2")]),
        ["3"],
        list_action="add",
    )
    assert [z.name for z in pool.zones] == ["z1", "z2"]


def test_apply_unknown_list_action_replaces() -> None:
    dst = app_pb2.App(auto_prov_policies=["a"])
    apply_fields(dst, app_pb2.App(auto_prov_policies=["b"]), ["32"], list_action="")
    assert list(dst.auto_prov_policies) == ["b"]


def test_apply_into_unselected_parent_of_a_selected_child_message() -> None:
    dst = _cloudlet(1, 2)
    src = _cloudlet(1, 2)
    src.location.timestamp.seconds = 99
    assert apply_fields(dst, src, ["5.8"]) == ["5.8"]
    assert dst.location.timestamp.seconds == 99


def test_apply_oneof_members() -> None:
    dst = metric_pb2.MetricVal(name="x", ival=3)
    src = metric_pb2.MetricVal(name="x", dval=0.0)
    # Setting dval switches the oneof, which already drops ival: only "2" changes anything.
    assert apply_fields(dst, src, ["2", "3"]) == ["2"]
    assert dst.WhichOneof("value") == "dval"
    assert apply_fields(dst, metric_pb2.MetricVal(name="x"), ["2"]) == ["2"]
    assert dst.WhichOneof("value") is None


def test_apply_and_diff_refuse_mixed_types() -> None:
    with pytest.raises(TypeError):
        apply_fields(flavor_pb2.Flavor(), app_pb2.App(), ["2"])
    with pytest.raises(TypeError):
        diff_fields(flavor_pb2.Flavor(), app_pb2.App())


# --- diff_fields and set_fields ----------------------------------------------------------------


def test_diff_reports_leaves_and_whole_collections() -> None:
    ready, offline = appcommon_pb2.CLOUDLET_STATE_READY, appcommon_pb2.CLOUDLET_STATE_OFFLINE
    old = cloudlet_pb2.CloudletInfo(state=ready, errors=["e"], properties={"a": "1"})
    new = cloudlet_pb2.CloudletInfo(state=offline, errors=["e"], properties={"a": "2"})
    new.status.task_number = 4
    assert diff_fields(old, new) == ["3", "11.1", "20"]
    assert diff_fields(old, old) == []


def test_diff_ignores_presence_of_empty_messages() -> None:
    a = cloudlet_pb2.Cloudlet()
    b = cloudlet_pb2.Cloudlet()
    b.location.SetInParent()
    assert diff_fields(a, b) == []


def test_set_fields_lists_every_non_default_field() -> None:
    obj = _cloudlet(1.5, 0)
    obj.fields.append("5")
    obj.env_var["A"] = "b"
    obj.errors.append("x")
    assert set_fields(obj) == ["2.1", "2.2", "5.1", "10", "19"]
    assert set_fields(cloudlet_pb2.Cloudlet()) == []


# --- properties ---------------------------------------------------------------------------------

OBJECT_CLASSES = [
    cloudlet_pb2.Cloudlet,
    appinst_pb2.AppInst,
    app_pb2.App,
    clusterinst_pb2.ClusterInst,
    flavor_pb2.Flavor,
    settings_pb2.Settings,
    alert_pb2.Alert,
    refs_pb2.CloudletIPs,
]


def _pairs() -> st.SearchStrategy[tuple[Message, Message]]:
    return st.sampled_from(OBJECT_CLASSES).flatmap(
        lambda cls: st.tuples(messages(cls), messages(cls))
    )


def _same_identity(dst: Message, src: Message) -> None:
    """Updates never change the key, so give dst the key of src for whole-object comparisons."""
    objtype = registry.of(src)
    if objtype.identity is Identity.KEY and not src.HasField(objtype.key_field or ""):
        dst.ClearField(objtype.key_field or "")
    else:
        set_key(dst, key_of(src))
    for msg in (dst, src):
        if "fields" in msg.DESCRIPTOR.fields_by_name:
            msg.ClearField("fields")


@given(_pairs())
def test_apply_with_all_paths_is_a_full_copy(pair: tuple[Message, Message]) -> None:
    dst, src = pair
    _same_identity(dst, src)
    was_equal = dst == src
    changed = apply_fields(dst, src, all_field_paths(descriptor_of(src)))
    assert dst == src
    assert (changed == []) is was_equal


@given(_pairs())
def test_apply_with_top_level_paths_is_a_full_copy(pair: tuple[Message, Message]) -> None:
    dst, src = pair
    _same_identity(dst, src)
    top = [p for p in all_field_paths(descriptor_of(src)) if "." not in p]
    apply_fields(dst, src, top)
    assert dst == src


@given(_pairs())
def test_applying_the_diff_makes_objects_equal(pair: tuple[Message, Message]) -> None:
    dst, src = pair
    _same_identity(dst, src)
    diff = diff_fields(dst, src)
    changed = apply_fields(dst, src, diff)
    assert diff_fields(dst, src) == []
    assert set(changed) <= set(diff)


@given(st.sampled_from(OBJECT_CLASSES).flatmap(messages))
def test_set_fields_rebuilds_the_object(src: Message) -> None:
    dst = type(src)()
    _same_identity(dst, src)
    apply_fields(dst, src, set_fields(src))
    assert diff_fields(dst, src) == []
