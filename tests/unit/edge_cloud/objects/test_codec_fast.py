"""The codec's fast decode path gives exactly what json_format gives."""

import json

import pytest
from edgeproto import appinst_pb2, flavor_pb2, refs_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from edge_cloud.errors import EdgeError
from edge_cloud.objects import codec, registry
from edge_cloud.objects.codec import decode, encode
from tests.unit.edge_cloud.objects.strategies import messages

STORED = [t.message for t in registry.stored_types()]


def reference(cls: type[Message], raw: bytes | str) -> Message:
    msg = cls()
    json_format.Parse(raw, msg, ignore_unknown_fields=True)
    return msg


@given(st.sampled_from(STORED).flatmap(messages))
def test_fast_path_takes_what_encode_writes_and_agrees_with_json_format(obj: Message) -> None:
    if "fields" in obj.DESCRIPTOR.fields_by_name:
        obj.ClearField("fields")
    raw = encode(obj)
    fast = codec._fast_build(type(obj), raw.decode())
    assert fast is not None, raw  # no fallback for our own output
    assert fast == reference(type(obj), raw) == obj
    assert decode(type(obj), raw) == obj


@pytest.mark.parametrize(
    "raw",
    [
        '{"key":{"name":"x"},"ram":"2","added_later":{"a":1}}',  # unknown field
        '{"key":{"name":"x"},"ram":2,"vcpus":"-3"}',  # numbers as numbers and strings
        '{"key":{"name":"x"},"optResMap":{"gpu":"1"}}',  # a lowerCamel JSON name
        '{"key":{"name":"x"},"ram":null}',  # null
        '{"key":{"name":"x"},"ram":2.0}',  # an integral float
        '{"key":{"name":"x"},"ram":" 2"}',  # json_format refuses spaces
        '{"key":{"name":"x"},"ram":"1e3"}',  # exponent strings
    ],
)
def test_inputs_outside_the_subset_decode_as_json_format_does(raw: str) -> None:
    try:
        want = reference(flavor_pb2.Flavor, raw)
    except json_format.ParseError:
        with pytest.raises(EdgeError, match=r"cannot decode stored edgeproto\.Flavor"):
            decode(flavor_pb2.Flavor, raw)
        return
    assert decode(flavor_pb2.Flavor, raw) == want


@pytest.mark.parametrize(
    "raw",
    [
        '{"state":"FUTURE_STATE","health_check":3}',  # unknown enum name; number
        '{"cloudlet_loc":{"latitude":"NaN"}}',  # double as string
        '{"cloudlet_loc":{"latitude":1,"longitude":2.5}}',  # double from int
        '{"created_at":{"seconds":"1780000000","nanos":5}}',  # the platform's Timestamp
        '{"created_at":"yesterday"}',  # a message given as a string: an error
        '{"mapped_ports":[{"proto":"L_PROTO_TCP","internal_port":80}],"flavor":{}}',
        '{"mapped_ports":{"proto":"L_PROTO_TCP"}}',  # repeated given as an object
        '{"dedicated_ip":"yes"}',  # bool as string
        '{"dedicated_ip":true,"internal_port_to_lb_ip":{"80":"10.0.0.1"},"tags":{}}',
        '{"power_state":"POWER_ON","key":{"name":"a","organization":"b"},"key2":[]}',
    ],
)
def test_app_inst_edge_cases_agree_with_json_format(raw: str) -> None:
    try:
        want = reference(appinst_pb2.AppInst, raw)
    except json_format.ParseError:
        with pytest.raises(EdgeError):
            decode(appinst_pb2.AppInst, raw)
        return
    got = decode(appinst_pb2.AppInst, raw)
    assert got == want
    assert got.HasField("flavor") == want.HasField("flavor")  # presence of an empty message


def test_integer_map_keys_and_out_of_range_values() -> None:
    refs = refs_pb2.CloudletRefs(used_dynamic_ips=3)
    refs.root_lb_ports[443] = 1
    refs.root_lb_ports[-5] = 2
    raw = encode(refs)
    assert json.loads(raw)["root_lb_ports"] == {"-5": 2, "443": 1}
    assert decode(refs_pb2.CloudletRefs, raw) == refs
    too_big = b'{"used_dynamic_ips":4294967296}'  # int32 overflow: json_format's error
    with pytest.raises(EdgeError, match=r"cannot decode stored edgeproto\.CloudletRefs"):
        decode(refs_pb2.CloudletRefs, too_big)


@given(st.sampled_from(STORED).flatmap(messages))
def test_fast_encode_is_json_format_output(obj: Message) -> None:
    want = codec._reference_dict(obj)
    try:
        fast = codec._fast_dict(obj, skip_mask=True)
    except codec._Unsupported:
        pass  # well-known types, NaN...: encode takes the reference path
    else:
        assert fast == want
        assert list(fast) == list(want)  # the same field order, so the same bytes
    assert encode(obj) == json.dumps(want, separators=(",", ":"), ensure_ascii=False).encode()


def test_encode_falls_back_where_json_format_has_special_forms() -> None:
    inst = appinst_pb2.AppInst(flavor=flavor_pb2.FlavorKey())  # an empty sub-message: {}
    inst.fields.append("4")
    inst.cloudlet_loc.latitude = float("nan")
    inst.health_check = 99  # no such enum value: the number
    inst.mapped_ports.add(max_pkt_size=2**40)
    inst.annotations["b"] = "2"
    inst.annotations["a"] = "1"
    data = json.loads(encode(inst))
    assert data == codec._reference_dict(inst)
    assert "fields" not in data
    assert data["cloudlet_loc"] == {"latitude": "NaN"}
    assert data["flavor"] == {}
    assert data["health_check"] == 99
    assert data["mapped_ports"] == [{"max_pkt_size": str(2**40)}]
    assert list(data["annotations"]) == ["a", "b"]
    assert list(inst.fields) == ["4"]  # the caller's object is left alone


def test_fast_encode_sorts_integer_map_keys_as_text() -> None:
    refs = refs_pb2.CloudletRefs()
    for port in (10, 9, 100):
        refs.root_lb_ports[port] = 1
    assert list(codec._fast_dict(refs)["root_lb_ports"]) == ["10", "100", "9"]
    assert codec._fast_dict(refs) == codec._reference_dict(refs)
