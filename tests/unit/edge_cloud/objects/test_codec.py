import json

import pytest
from edgeproto import (
    alert_pb2,
    app_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    common_pb2,
    device_pb2,
    flavor_pb2,
    settings_pb2,
)
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from edge_cloud.errors import EdgeError, InvalidArgument
from edge_cloud.objects import registry
from edge_cloud.objects.codec import decode, encode, from_dict, to_dict
from edge_cloud.objects.durations import MINUTE, SECOND
from tests.unit.edge_cloud.objects.strategies import messages


def test_encode_is_compact_proto3_json_with_original_names() -> None:
    flavor = flavor_pb2.Flavor(
        fields=["3"], key=flavor_pb2.FlavorKey(name="x1.small"), ram=1024, vcpus=2, disk=20
    )
    assert encode(flavor) == (b'{"key":{"name":"x1.small"},"ram":"1024","vcpus":"2","disk":"20"}')
    assert list(flavor.fields) == ["3"]  # the caller's object is left alone


def test_encode_writes_enums_by_name_and_sorts_maps() -> None:
    cluster = clusterinst_pb2.ClusterInst(
        key=cluster_pb2.ClusterKey(name="c1", organization="dev"),
        state=common_pb2.READY,
        ip_access=common_pb2.IP_ACCESS_DEDICATED,
    )
    cluster.annotations["z"] = "1"
    cluster.annotations["a"] = "2"
    data = json.loads(encode(cluster))
    assert data["state"] == "READY"
    assert data["ip_access"] == "IP_ACCESS_DEDICATED"
    assert list(data["annotations"]) == ["a", "z"]


def test_decode_roundtrip_and_type_forms() -> None:
    flavor = flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x"), ram=1)
    raw = encode(flavor)
    assert decode(flavor_pb2.Flavor, raw) == flavor
    assert decode(registry.by_name("Flavor"), raw.decode()) == flavor


def test_decode_ignores_unknown_fields_and_enum_values() -> None:
    raw = b'{"key":{"name":"x","newer":1},"ram":"2","added_later":{"a":1},"state":"NOT_YET"}'
    assert decode(flavor_pb2.Flavor, raw) == flavor_pb2.Flavor(
        key=flavor_pb2.FlavorKey(name="x"), ram=2
    )
    assert decode(clusterinst_pb2.ClusterInst, b'{"state":"FUTURE_STATE"}').state == 0


@pytest.mark.parametrize("raw", [b"not json", b'{"ram":"lots"}', b"\xff"])
def test_decode_garbage_is_an_internal_error_naming_the_type(raw: bytes) -> None:
    with pytest.raises(EdgeError, match=r"cannot decode stored edgeproto\.Flavor"):
        decode(flavor_pb2.Flavor, raw)


STORED = [t.message for t in registry.stored_types()]


@given(st.sampled_from(STORED).flatmap(messages))
def test_every_stored_type_roundtrips(obj: Message) -> None:
    if "fields" in obj.DESCRIPTOR.fields_by_name:
        obj.ClearField("fields")
    raw = encode(obj)
    assert decode(type(obj), raw) == obj
    assert encode(decode(type(obj), raw)) == raw


def test_to_and_from_dict() -> None:
    app = app_pb2.App(
        key=app_pb2.AppKey(organization="dev", name="a", version="1"),
        image_type=app_pb2.IMAGE_TYPE_DOCKER,
        qos_session_duration=90 * MINUTE,
    )
    data = to_dict(app)
    assert data["image_type"] == "IMAGE_TYPE_DOCKER"
    assert data["qos_session_duration"] == str(90 * MINUTE)
    assert to_dict(app, durations_as_text=True)["qos_session_duration"] == "1h30m0s"
    assert from_dict(app_pb2.App, data) == app
    assert from_dict(app_pb2.App, to_dict(app, durations_as_text=True)) == app


def test_from_dict_accepts_go_durations_where_the_original_does() -> None:
    settings = from_dict(
        settings_pb2.Settings,
        {
            "create_app_inst_timeout": "30m",
            "cloudlet_maintenance_timeout": "5m",
            "edge_events_metrics_continuous_queries_collection_intervals": [
                {"interval": "1h", "retention": 3600 * SECOND}
            ],
            "shepherd_health_check_retries": 3,
        },
    )
    assert settings.create_app_inst_timeout == 30 * MINUTE
    assert settings.cloudlet_maintenance_timeout == 300_000_000_000  # beyond int32, §1.4
    interval = settings.edge_events_metrics_continuous_queries_collection_intervals[0]
    assert (interval.interval, interval.retention) == (60 * MINUTE, 60 * MINUTE)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"no_such_field": 1}, "no_such_field"),
        ({"create_app_inst_timeout": "soon"}, 'time: invalid duration "soon"'),
        ({"master_node_flavor": 5}, "master_node_flavor"),
    ],
)
def test_from_dict_rejects_bad_input(data: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        from_dict(settings_pb2.Settings, data)


def test_from_dict_can_ignore_unknown_fields() -> None:
    key = from_dict(cloudletkey_pb2.CloudletKey, {"name": "c", "x": 1}, ignore_unknown_fields=True)
    assert key == cloudletkey_pb2.CloudletKey(name="c")


def test_invalid_well_known_values_are_refused() -> None:
    device = device_pb2.Device(key=device_pb2.DeviceKey(unique_id="u", unique_id_type="t"))
    device.first_seen.nanos = -1
    with pytest.raises(InvalidArgument, match=r"cannot encode edgeproto\.Device: .*Nanos -1"):
        encode(device)


def test_objects_without_mask_encode_as_is() -> None:
    alert = alert_pb2.Alert(labels={"b": "1", "a": "2"}, state="firing")
    assert encode(alert) == b'{"labels":{"a":"2","b":"1"},"state":"firing"}'
    assert (
        encode(cloudlet_pb2.PlatformFeatures(platform_type="fake")) == b'{"platform_type":"fake"}'
    )


def test_durations_as_text_convert_fields_whose_json_name_is_the_proto_name() -> None:
    """`interval` is both the proto and the JSON name: it must be formatted exactly once."""
    settings = settings_pb2.Settings(
        edge_events_metrics_continuous_queries_collection_intervals=[
            settings_pb2.CollectionInterval(interval=86_400_000_000_000)
        ]
    )
    data = to_dict(settings, durations_as_text=True)
    [row] = data["edge_events_metrics_continuous_queries_collection_intervals"]
    assert row["interval"] == "24h0m0s"
