import json

import pytest
from edgeproto import app_pb2, cloudlet_pb2, common_pb2, ratelimit_pb2, vmpool_pb2
from hypothesis import given
from hypothesis import strategies as st

from edge_cloud.objects.gojson import (
    enum_common_prefix,
    enum_from_go,
    enum_go_name,
    enum_json_name,
    go_camel_case,
    go_field_name,
    go_quote,
)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain", '"plain"'),
        ("", '""'),
        ('say "hi" \\ bye', '"say \\"hi\\" \\\\ bye"'),
        ("<b>&amp;</b>", '"\\u003cb\\u003e\\u0026amp;\\u003c/b\\u003e"'),
        ("a\nb\rc\td", '"a\\nb\\rc\\td"'),
        ("\b\f", '"\\b\\f"'),
        ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
        ("\x7f", '"\x7f"'),
        ("line\u2028para\u2029", '"line\\u2028para\\u2029"'),
        ("caf\u00e9 \U0001f600", '"caf\u00e9 \U0001f600"'),
        ("\ud800", '"\\ufffd\\ufffd\\ufffd"'),
    ],
)
def test_go_quote_escapes_like_encoding_json(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


@given(st.text())
def test_go_quote_is_valid_json_for_the_same_text(text: str) -> None:
    if any(0xD800 <= ord(c) < 0xE000 for c in text):
        return
    assert json.loads(go_quote(text)) == text


@pytest.mark.parametrize(
    ("name", "go"),
    [
        ("internal_port_to_lb_ip", "InternalPortToLbIp"),
        ("HostController", "HostController"),
        ("externalIp", "ExternalIp"),
        (
            "k8s_app_insts",
            "K8SAppInsts",
        ),  # as the original: CloudletInfoFieldResourcesSnapshotK8SAppInsts
        ("enable_ipv6", "EnableIpv6"),
        ("Name", "Name"),
        ("_x", "XX"),
        ("a_1", "A_1"),
    ],
)
def test_go_field_name_is_protoc_gen_gogo_camel_case(name: str, go: str) -> None:
    assert go_field_name(name) == go


@pytest.mark.parametrize(
    ("name", "go"),
    [
        ("UNKNOWN_API_ENDPOINT_TYPE", "UnknownApiEndpointType"),
        ("DME", "Dme"),
        ("ALL_REQUESTS", "AllRequests"),
        ("IMAGE_TYPE_DOCKER", "ImageTypeDocker"),
        ("Every15Days", "Every15Days"),
        ("HTTPServer", "HttpServer"),
        ("all_requests", "AllRequests"),
    ],
)
def test_go_camel_case_is_the_originals_util_camel_case(name: str, go: str) -> None:
    assert go_camel_case(name) == go


def test_enum_json_names_trim_the_common_prefix() -> None:
    # controller.md §2.3: "image_type":"Docker", "access_type":"LoadBalancer",
    # "ip_support":"Dynamic", "state":"Ready".
    image = app_pb2.ImageType.DESCRIPTOR
    assert enum_common_prefix(image) == "ImageType"
    assert enum_go_name(image, app_pb2.IMAGE_TYPE_DOCKER) == "ImageTypeDocker"
    assert enum_json_name(image, app_pb2.IMAGE_TYPE_DOCKER) == "Docker"
    access = app_pb2.AccessType.DESCRIPTOR
    assert enum_json_name(access, app_pb2.ACCESS_TYPE_LOAD_BALANCER) == "LoadBalancer"
    ip = common_pb2.IpSupport.DESCRIPTOR
    assert enum_json_name(ip, common_pb2.IP_SUPPORT_DYNAMIC) == "Dynamic"
    state = common_pb2.TrackedState.DESCRIPTOR
    assert enum_common_prefix(state) == ""
    assert enum_json_name(state, common_pb2.READY) == "Ready"
    assert enum_json_name(state, common_pb2.CREATE_REQUESTED) == "CreateRequested"


def test_enum_names_without_shared_prefix_stay_whole() -> None:
    endpoint = ratelimit_pb2.ApiEndpointType.DESCRIPTOR
    assert enum_json_name(endpoint, ratelimit_pb2.DME) == "Dme"
    assert enum_json_name(endpoint, 0) == "UnknownApiEndpointType"
    target = ratelimit_pb2.RateLimitTarget.DESCRIPTOR
    assert enum_json_name(target, ratelimit_pb2.ALL_REQUESTS) == "AllRequests"


def test_report_schedule_keeps_its_every_prefix() -> None:
    # The original overrides the computed prefix ("Every") with an empty one.
    schedule = cloudlet_pb2.ReportSchedule.DESCRIPTOR
    assert enum_common_prefix(schedule) == ""
    assert enum_json_name(schedule, 0) == "EveryWeek"


def test_partial_word_prefixes_are_trimmed_as_in_the_original() -> None:
    vm_state = vmpool_pb2.VMState.DESCRIPTOR
    assert enum_common_prefix(vm_state) == "Vm"
    assert enum_json_name(vm_state, vmpool_pb2.VM_FORCE_FREE) == "ForceFree"


def test_undefined_enum_numbers_render_as_decimal_text() -> None:
    assert enum_json_name(ratelimit_pb2.RateLimitTarget.DESCRIPTOR, 42) == "42"


@pytest.mark.parametrize("text", ["Docker", "ImageTypeDocker", "IMAGE_TYPE_DOCKER", "docker", "1"])
def test_enum_from_go_accepts_the_originals_spellings(text: str) -> None:
    assert enum_from_go(app_pb2.ImageType.DESCRIPTOR, text) == app_pb2.IMAGE_TYPE_DOCKER


def test_enum_from_go_rejects_unknown_values_with_the_originals_message() -> None:
    with pytest.raises(ValueError, match=r'^Invalid ImageType value "Podman"$'):
        enum_from_go(app_pb2.ImageType.DESCRIPTOR, "Podman")
    with pytest.raises(ValueError, match=r"^Invalid ImageType value 9$"):
        enum_from_go(app_pb2.ImageType.DESCRIPTOR, 9)
    with pytest.raises(ValueError, match=r'^Invalid ImageType value "9"$'):
        enum_from_go(app_pb2.ImageType.DESCRIPTOR, "9")
