"""The codec reads etcd values the original Controller wrote (controller.md §2.3, issue 4).

The samples (`go_json_samples`) are our own regions composed in the original's storage
format: Go `encoding/json` of its structs, written as JSON directly rather than through our
codec. Every value must come out of `decode` without loss. "Without loss" is checked
independently of the codec: each JSON member is looked up in the decoded message and
compared by what the original meant (enum by its Go JSON name, instants, decimal values,
duration text parsed by Go's rules); some objects are also compared whole against the
messages we built them from.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import re
import time
from typing import Any

import pytest
from edgeproto import (
    app_pb2,
    appinst_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    common_pb2,
    decimal_pb2,
    device_pb2,
    flavor_pb2,
    network_pb2,
    resources_pb2,
    settings_pb2,
    vmpool_pb2,
    zone_pb2,
    zonepool_pb2,
)
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_cloud.errors import EdgeError
from edge_cloud.objects import codec, keys, registry
from edge_cloud.objects.codec import decode, encode
from edge_cloud.objects.durations import HOUR, MINUTE, SECOND, format_duration, is_duration_field
from edge_cloud.objects.durations import parse_duration as go_parse_duration
from edge_cloud.objects.gojson import enum_json_name, timestamp_from_go, udec64_from_go
from tests.unit.edge_cloud import go_json_samples as samples
from tests.unit.edge_cloud.go_json_samples import Record
from tests.unit.edge_cloud.objects.strategies import messages

STORED = [t.message for t in registry.stored_types()]


def sample(records: list[Record], key: str) -> str:
    """The value stored under `key`."""
    [value] = [r.value for r in records if r.key == key]
    return value


# --- an independent reading of what the original meant -------------------------------------------

_RFC3339 = re.compile(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def instant(text: str) -> tuple[int, int]:
    """An RFC 3339 time as (seconds, nanos), through datetime (microseconds) + the digits."""
    match = _RFC3339.fullmatch(text)
    assert match is not None, text
    zone = "+00:00" if match[3] == "Z" else match[3]
    when = datetime.datetime.fromisoformat(match[1] + zone)
    return int(when.timestamp()), int((match[2] or "").ljust(9, "0"))


def is_zero(value: Any) -> bool:
    return value in (None, "", 0, False, {}, [])


def losses(desc: Descriptor, go: dict[str, Any], msg: Message, path: str) -> list[str]:
    """Where `msg` does not hold what the Go JSON object `go` says; [] when it all matches."""
    by_name = {f.name: f for f in desc.fields} | {f.json_name: f for f in desc.fields}
    out: list[str] = []
    for name, value in go.items():
        field = by_name.get(name)
        if field is None:
            if not is_zero(value):
                out.append(f"{desc.full_name}.{name}")
            continue
        out += field_losses(field, value, getattr(msg, field.name), f"{path}.{name}")
    return out


def field_losses(field: FieldDescriptor, go: Any, ours: Any, path: str) -> list[str]:
    mt = field.message_type
    if mt is not None and mt.GetOptions().map_entry:
        go = go or {}
        if sorted(str(k) for k in ours) != sorted(go):
            return [f"{path} keys {sorted(go)} != {sorted(ours)}"]
        integer_keys = mt.fields_by_name["key"].cpp_type != FieldDescriptor.CPPTYPE_STRING
        out: list[str] = []
        for key, value in go.items():
            mine = ours[int(key) if integer_keys else key]
            out += value_losses(mt.fields_by_name["value"], value, mine, f"{path}[{key}]")
        return out
    if field.is_repeated:
        go = go or []
        if len(go) != len(ours):
            return [f"{path}: {len(go)} items, {len(ours)} decoded"]
        out = []
        for i, (value, mine) in enumerate(zip(go, ours, strict=True)):
            out += value_losses(field, value, mine, f"{path}[{i}]")
        return out
    return value_losses(field, go, ours, path)


def value_losses(field: FieldDescriptor, go: Any, ours: Any, path: str) -> list[str]:
    mt = field.message_type
    if mt is not None and mt.full_name == "edgeproto.Udec64":
        want = decimal.Decimal(str(go))
        same = want == decimal.Decimal(ours.whole) + decimal.Decimal(ours.nanos).scaleb(-9)
    elif mt is not None and mt.full_name == "distributed_match_engine.Timestamp":
        same = (ours.seconds, ours.nanos) == ((0, 0) if go == "" else instant(go))
    elif mt is not None and mt.full_name == "google.protobuf.Timestamp":
        same = (ours.seconds, ours.nanos) == (go.get("seconds", 0), go.get("nanos", 0))
    elif mt is not None:
        return losses(mt, go or {}, ours, path)
    elif field.enum_type is not None:
        same = enum_json_name(field.enum_type, ours) == go
    elif is_duration_field(field):
        same = ours == (go_parse_duration(go) if isinstance(go, str) else go)
    elif field.type == FieldDescriptor.TYPE_BYTES:
        same = base64.b64decode(go) == ours
    else:
        same = go == ours
    return [] if same else [f"{path}: stored {go!r}, decoded {ours!r}"]


# --- the samples ---------------------------------------------------------------------------------


def test_every_current_value_decodes_without_loss_under_its_own_key() -> None:
    checked: set[str] = set()
    for rec in samples.current():
        objtype = registry.by_name(rec.type_name)
        msg = decode(objtype, rec.value)
        assert losses(objtype.message.DESCRIPTOR, rec.go, msg, rec.key) == []
        assert decode(objtype, encode(msg)) == msg  # and our own encoding keeps it all
        if rec.type_name != "Settings":  # the original's key string is ours too
            assert keys.store_key(rec.type_name, keys.key_string(msg)) == rec.key
        checked.add(rec.type_name)
    assert len(checked) >= 20


def test_older_values_lose_only_what_later_data_models_dropped() -> None:
    lost: set[str] = set()
    types: set[str] = set()
    for rec in samples.older():
        objtype = registry.by_name(rec.type_name)
        lost.update(losses(objtype.message.DESCRIPTOR, rec.go, decode(objtype, rec.value), rec.key))
        types.add(rec.type_name)
    assert lost == samples.OLDER_ONLY
    assert {"Settings", "App", "AppInst", "ClusterInst", "Cloudlet", "CloudletInfo"} <= types


def test_enums_node_pool_name_and_udec64_numbers() -> None:
    current = samples.current()
    app = decode(
        app_pb2.App,
        sample(current, '1/App/{"organization":"kestrelworks","name":"mapviewer","version":"1.0"}'),
    )
    assert app.image_type == app_pb2.IMAGE_TYPE_DOCKER  # "Docker"
    assert app.access_type == app_pb2.ACCESS_TYPE_LOAD_BALANCER  # "LoadBalancer"
    assert app.kubernetes_resources.cpu_pool.total_vcpus == decimal_pb2.Udec64(whole=6)
    assert app.kubernetes_resources.cpu_pool.topology.min_number_of_nodes == 2
    assert app.kubernetes_resources.gpu_pool.total_vcpus == decimal_pb2.Udec64()  # 0
    assert len(app.required_outbound_connections) == 0  # null
    helm = decode(
        app_pb2.App,
        sample(current, '1/App/{"organization":"kestrelworks","name":"telemetry","version":"1.0"}'),
    )
    assert not helm.HasField("updated_at")  # "updated_at":"" is unset
    assert helm.kubernetes_resources.cpu_pool.total_vcpus == decimal_pb2.Udec64(
        whole=3, nanos=500_000_000
    )  # "3.5"

    want = clusterinst_pb2.ClusterInst(
        key=cluster_pb2.ClusterKey(name="cl-0-0", organization="kestrelworks"),
        state=common_pb2.READY,
        ip_access=common_pb2.IP_ACCESS_SHARED,
        liveness=common_pb2.LIVENESS_STATIC,
        num_masters=1,
        num_nodes=3,
        deployment="kubernetes",
        dns_label="cl-0-0-kestrelworks",
        fqdn="cl-0-0-kestrelworks.harbor-east-tidewater.edge.example.net",
        obj_id="01jp00cluster00zxcvbnmlk",
        db_model_id=58,
        kubernetes_version="1.30",
    )
    want.resources.SetInParent()
    want.flavor.SetInParent()
    want.created_at.seconds = int(
        datetime.datetime(2025, 6, 10, 4, 5, 6, tzinfo=datetime.UTC).timestamp()
    )
    want.created_at.nanos = 5_000_000
    want.cloudlet_key.organization, want.cloudlet_key.name = "tidewater", "harbor-east"
    want.zone_key.organization, want.zone_key.name = "tidewater", "harbor-east"
    want.node_pools.add(
        Name="workers",
        num_nodes=2,
        node_resources=resources_pb2.NodeResources(vcpus=8, ram=16384, disk=120),
        scalable=True,
    )
    want.node_pools.add(
        Name="burst",
        num_nodes=1,
        node_resources=resources_pb2.NodeResources(vcpus=2, ram=4096, disk=40),
    )
    got = decode(
        clusterinst_pb2.ClusterInst,
        sample(current, '1/ClusterInst/{"name":"cl-0-0","organization":"kestrelworks"}'),
    )
    assert got == want
    gpu = decode(
        clusterinst_pb2.ClusterInst,
        sample(current, '1/ClusterInst/{"name":"cl-0-2","organization":"orchardlabs"}'),
    )
    [pool] = gpu.node_pools
    assert (pool.Name, pool.num_nodes, pool.node_resources.vcpus) == ("workers", 2, 8)
    assert pool.node_resources.opt_res_map == {"gpu": "pci:2"}


def test_timestamps_in_utc_and_with_an_offset() -> None:
    current = samples.current()
    zone_sample = sample(current, '1/Zone/{"organization":"tidewater","name":"harbor-east"}')
    assert '"created_at":"2025-03-09T07:41:12.0870013Z"' in zone_sample
    stamp = decode(zone_pb2.Zone, zone_sample).created_at
    assert (stamp.seconds, stamp.nanos) == (1741506072, 87_001_300)
    east = sample(current, '1/Zone/{"organization":"bluefjord","name":"harbor-east"}')
    assert '"created_at":"2025-03-09T07:41:20.0870013-05:00"' in east
    stamp = decode(zone_pb2.Zone, east).created_at
    assert (stamp.seconds, stamp.nanos) == (1741506080 + 5 * 3600, 87_001_300)

    apps = [r for r in current if r.type_name == "App" and r.go["created_at"].endswith("-07:00")]
    assert len(apps) == len(samples.APPS)
    for rec in apps:
        text = rec.go["created_at"]
        app = decode(app_pb2.App, rec.value)
        assert (app.created_at.seconds, app.created_at.nanos) == instant(text)
        assert app.created_at.seconds == instant(text.replace("-07:00", "Z"))[0] + 7 * 3600


def test_udec64_decimal_strings_and_durations() -> None:
    serverless = [
        decode(app_pb2.App, r.value).serverless_config.vcpus
        for r in samples.current()
        if r.type_name == "App" and '"vcpus":"0.' in r.value
    ]
    assert decimal_pb2.Udec64(whole=0, nanos=500_000_000) in serverless
    assert decimal_pb2.Udec64(whole=0, nanos=250_000_000) in serverless

    [value] = [r.value for r in samples.current() if r.type_name == "Settings"]
    stored = json.loads(value)
    assert stored["update_cloudlet_timeout"] == "25m0s"
    got = decode(settings_pb2.Settings, value)
    assert got.update_cloudlet_timeout == 25 * MINUTE
    assert got.create_cloudlet_timeout == HOUR + 30 * MINUTE
    assert got.cloudlet_maintenance_timeout == 7 * MINUTE + 30 * SECOND
    assert got.shepherd_metrics_collection_interval == 7 * SECOND
    assert got.shepherd_metrics_scrape_interval == SECOND // 2  # "500ms"
    assert got.cluster_auto_scale_averaging_duration_sec == 75  # a number, not a duration
    assert got.rate_limit_max_tracked_ips == 5000
    intervals = got.edge_events_metrics_continuous_queries_collection_intervals
    stored_intervals = stored["edge_events_metrics_continuous_queries_collection_intervals"]
    assert [(i.interval, i.retention) for i in intervals] == [
        (HOUR, 240 * HOUR),
        (12 * HOUR, 1440 * HOUR),
        (168 * HOUR, 8760 * HOUR),
    ]
    assert [(format_duration(i.interval), format_duration(i.retention)) for i in intervals] == [
        (i["interval"], i["retention"]) for i in stored_intervals
    ]


def test_tracked_state_liveness_health_and_cloudlet_enums() -> None:
    current = samples.current()
    inst = decode(
        appinst_pb2.AppInst,
        sample(current, '1/AppInst/{"name":"inst-1-1","organization":"orchardlabs"}'),
    )
    assert (inst.state, inst.liveness) == (common_pb2.CREATE_REQUESTED, common_pb2.LIVENESS_STATIC)
    assert [p.proto for p in inst.mapped_ports] == [1, 2]  # "Tcp", "Udp"
    assert list(inst.runtime_info.container_ids) == ["c0ffee01", "c0ffee02"]
    assert inst.kubernetes_resources.cpu_pool.total_vcpus == decimal_pb2.Udec64(
        whole=1, nanos=250_000_000
    )  # "1.25"
    vm = decode(
        appinst_pb2.AppInst,
        sample(current, '1/AppInst/{"name":"inst-0-3","organization":"kestrelworks"}'),
    )
    assert vm.health_check == 3  # "Ok": distributed_match_engine.HealthCheck.HEALTH_CHECK_OK
    assert vm.power_state == appinst_pb2.POWER_ON  # "PowerOn": its App is the VM one
    assert (vm.vm_flavor, vm.node_resources.infra_node_flavor) == ("ec.medium", "ec.medium")
    assert vm.state == common_pb2.UPDATE_ERROR
    assert list(vm.errors) == ["image pull back-off"]
    cloudlets = [
        decode(cloudlet_pb2.Cloudlet, r.value) for r in current if r.type_name == "Cloudlet"
    ]
    assert {c.ip_support for c in cloudlets} == {common_pb2.IP_SUPPORT_DYNAMIC}
    assert {c.infra_api_access for c in cloudlets} == {
        cloudlet_pb2.DIRECT_ACCESS,
        cloudlet_pb2.RESTRICTED_ACCESS,
    }


def composed() -> list[tuple[str, Message]]:
    """Objects of the current set with the messages we composed them from."""
    gpu = flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="ec.large.gpu"), ram=32768, vcpus=8)
    gpu.disk = 200
    gpu.opt_res_map["gpu"] = "pci:2"
    gpu.gpus.add(model_id="nvidia-t4", count=1, vendor="nvidia", memory=16)
    pool = zonepool_pb2.ZonePool(
        key=zonepool_pb2.ZonePoolKey(organization="tidewater", name="coastal")
    )
    for site in ("harbor-east", "quarry-2"):
        pool.zones.add(organization="tidewater", name=site)
    when = datetime.datetime(2025, 8, 8, 6, 8, 8, tzinfo=datetime.UTC)  # 08:08:08+02:00
    pool.created_at.seconds, pool.created_at.nanos = int(when.timestamp()), 808_000_000
    policy = autoprovpolicy_pb2.AutoProvPolicy(
        key=autoscalepolicy_pb2.PolicyKey(organization="kestrelworks", name="kestrelworks-spread"),
        deploy_client_count=4,
        deploy_interval_count=2,
        min_active_instances=1,
        max_instances=3,
    )
    for operator in ("tidewater", "granitenet", "bluefjord"):
        policy.zones.add(organization=operator, name="harbor-east")
    network = network_pb2.Network(
        key=network_pb2.NetworkKey(
            cloudlet_key=cloudletkey_pb2.CloudletKey(organization="tidewater", name="harbor-east"),
            name="backhaul",
        ),
        connection_type=network_pb2.CONNECT_TO_CLUSTER_NODES,
    )
    network.routes.add(destination_cidr="10.99.0.0/16", next_hop_ip="10.0.0.1")
    return [
        ('1/Flavor/{"name":"ec.large.gpu"}', gpu),
        ('1/ZonePool/{"organization":"tidewater","name":"coastal"}', pool),
        ('1/AutoProvPolicy/{"organization":"kestrelworks","name":"kestrelworks-spread"}', policy),
        (
            '1/Network/{"cloudlet_key":{"organization":"tidewater","name":"harbor-east"},'
            '"name":"backhaul"}',
            network,
        ),
    ]


def test_objects_equal_the_messages_they_were_composed_from() -> None:
    current = samples.current()
    for key, want in composed():
        assert decode(type(want), sample(current, key)) == want, key


def test_google_timestamps_as_gogo_writes_them() -> None:
    """Device and VM times are gogo `google.protobuf.Timestamp` structs, `{}` when zero."""
    current = samples.current()
    device = decode(
        device_pb2.Device,
        sample(
            current, '1/Device/{"unique_id_type":"sim-iccid","unique_id":"8944500102198304826"}'
        ),
    )
    assert (device.first_seen.seconds, device.first_seen.nanos) == (1740000000, 312_000_000)
    assert (device.last_seen.seconds, device.last_seen.nanos) == (1740003600, 0)
    assert device.notify_id == 11
    pool = decode(
        vmpool_pb2.VMPool, sample(current, '1/VMPool/{"organization":"tidewater","name":"metal-a"}')
    )
    assert [vm.state for vm in pool.vms] == [vmpool_pb2.VM_FREE, vmpool_pb2.VM_IN_USE]
    assert [(vm.updated_at.seconds, vm.updated_at.nanos) for vm in pool.vms] == [
        (0, 0),
        (1736950000, 4_200),
    ]
    assert pool.vms[0].HasField("updated_at")  # {} is a present zero, as for any message
    assert pool.vms[1].flavor.vcpus == 8
    assert pool.state == common_pb2.READY


def test_enum_spellings_the_originals_parser_takes() -> None:
    raw = '{"image_type":"%s","access_type":"%s"}'
    for image, access in [
        ("ImageTypeDocker", "AccessTypeLoadBalancer"),  # prefix kept
        ("docker", "load_balancer"),  # what Parse<Enum> CamelCases
        ("IMAGE_TYPE_DOCKER", "ACCESS_TYPE_LOAD_BALANCER"),  # ours
        ("1", "2"),  # a defined number as text
    ]:
        app = decode(app_pb2.App, raw % (image, access))
        assert (app.image_type, app.access_type) == (1, 2), (image, access)
    assert decode(app_pb2.App, '{"image_type":"17"}').image_type == 17  # Go's undefined value
    assert decode(app_pb2.App, '{"image_type":"Unikernel"}').image_type == 0  # newer: skipped


def test_every_go_enum_name_means_its_own_value() -> None:
    """A Go JSON name that was another value's proto name would decode to the wrong value."""
    enums: dict[str, EnumDescriptor] = {}

    def collect(desc: Descriptor, seen: set[str]) -> None:
        if desc.full_name in seen:
            return
        seen.add(desc.full_name)
        for field in desc.fields:
            if field.enum_type is not None:
                enums[field.enum_type.full_name] = field.enum_type
            if field.message_type is not None:
                collect(field.message_type, seen)

    seen: set[str] = set()
    for cls in STORED:
        collect(cls.DESCRIPTOR, seen)
    assert len(enums) > 20
    for enum in enums.values():
        for value in enum.values:
            go_name = enum_json_name(enum, value.number)
            other = enum.values_by_name.get(go_name)
            assert other is None or other.number == value.number, (enum.full_name, go_name)


@pytest.mark.parametrize(
    "raw",
    [
        '{"created_at":"yesterday"}',  # not RFC 3339
        '{"created_at":"2023-02-30T00:00:00Z"}',  # no such day
        '{"kubernetes_resources":{"cpu_pool":{"total_vcpus":-1}}}',
        '{"kubernetes_resources":{"cpu_pool":{"total_vcpus":"0.1234567891"}}}',  # 10 decimals
        '{"kubernetes_resources":{"cpu_pool":{"total_vcpus":true}}}',
        '{"qos_session_duration":"soon"}',
        '{"image_type":"Docker","created_at":"yesterday"}',  # beside a value that is Go's
    ],
)
def test_values_neither_form_explains_are_left_to_json_format(raw: str) -> None:
    """As before this change: json_format's error, or its reading (a string → empty message)."""
    go_part = json.loads(raw).pop("image_type", None)
    rest = json.dumps({k: v for k, v in json.loads(raw).items() if k != "image_type"})
    try:
        want = json_format.Parse(rest, app_pb2.App(), ignore_unknown_fields=True)
    except json_format.ParseError:
        with pytest.raises(EdgeError, match=r"cannot decode stored edgeproto\.App: Failed to"):
            decode(app_pb2.App, raw)
        return
    if go_part is not None:
        want.image_type = app_pb2.IMAGE_TYPE_DOCKER
    assert decode(app_pb2.App, raw) == want


# --- the Go value readers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2025-03-09T07:41:12.0870013Z", (1741506072, 87_001_300)),
        ("2025-03-09T00:41:12.0870013-07:00", (1741506072, 87_001_300)),
        ("2025-03-09T10:11:12+02:30", (1741506072, 0)),
        ("1970-01-01T00:00:00.000000001Z", (0, 1)),
        ("1969-12-31T23:59:59.5Z", (-1, 500_000_000)),
        ("2025-03-09T07:41:12.9876543219876Z", (1741506072, 987654321)),  # Go drops digits
        ("0001-01-01T00:00:00Z", (-62135596800, 0)),
        ("  2025-03-09t07:41:12z ", (1741506072, 0)),
        ("", None),
        ("   ", None),
    ],
)
def test_timestamp_from_go(text: str, want: tuple[int, int] | None) -> None:
    assert timestamp_from_go(text) == want


@pytest.mark.parametrize(
    "text",
    ["2025-03-09", "2025-03-09T07:41:12", "2025-13-01T00:00:00Z", "2025-03-09T24:00:00Z",
     "2025-03-09T07:41:12+0700", "2025-03-09T07:41:12+24:00", "٢٠٢٥-03-09T07:41:12Z"],
)  # fmt: skip
def test_timestamp_from_go_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="invalid RFC3339 timestamp"):
        timestamp_from_go(text)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (4, (4, 0)),
        ("0.5", (0, 500_000_000)),
        ("1.000000001", (1, 1)),
        ("12", (12, 0)),
        (1.5, (1, 500_000_000)),
        (0.25, (0, 250_000_000)),
        (2.0, (2, 0)),
        (1e-05, (0, 10_000)),
        (2**64 - 1, (2**64 - 1, 0)),
    ],
)
def test_udec64_from_go(value: object, want: tuple[int, int]) -> None:
    assert udec64_from_go(value) == want


@pytest.mark.parametrize(
    "value",
    [-1, 2**64, "1.", ".5", "-1", "1.0000000001", "1e3", True, None, [], float("nan"), 0.1 + 0.2],
)
def test_udec64_from_go_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="invalid unsigned decimal"):
        udec64_from_go(value)


# --- round trips ---------------------------------------------------------------------------------


def go_json(desc: Descriptor, data: dict[str, Any]) -> dict[str, Any]:
    """Our encoding of a message rewritten as the original's Go `encoding/json` writes it."""
    out: dict[str, Any] = {}
    for field in desc.fields:
        if field.name == "fields" and field.number == 1:
            continue
        if field.name not in data:
            if field.is_repeated:
                out[field.name] = None  # a nil slice or map without omitempty
            continue
        value = data[field.name]
        mt = field.message_type
        if mt is not None and mt.GetOptions().map_entry:
            vf = mt.fields_by_name["value"]
            out[field.name] = {k: go_value(vf, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [go_value(field, v) for v in value]
        else:
            out[field.name] = go_value(field, value)
    return out


def go_value(field: FieldDescriptor, value: Any) -> Any:
    mt = field.message_type
    if mt is not None and mt.full_name == "edgeproto.Udec64":
        whole, nanos = int(value.get("whole", 0)), value.get("nanos", 0)
        if nanos >= 1_000_000_000:
            return {"whole": whole, "nanos": nanos}  # beyond DecString: the struct form
        return whole if nanos == 0 else f"{whole}.{nanos:09d}".rstrip("0")
    if mt is not None and mt.full_name == "distributed_match_engine.Timestamp":
        seconds, nanos = int(value.get("seconds", 0)), value.get("nanos", 0)
        if seconds == nanos == 0 or not (0 <= nanos < 10**9 and 0 < seconds < 253402300799):
            return {"seconds": seconds, "nanos": nanos}  # the form Go reads from old data
        when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        when = when.astimezone(datetime.timezone(datetime.timedelta(hours=-7)))
        fraction = f".{nanos:09d}".rstrip("0").rstrip(".")
        return when.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "-07:00"
    if mt is not None and mt.full_name == "google.protobuf.Timestamp":
        stamp = timestamp_pb2.Timestamp()
        stamp.FromJsonString(value)
        return {k: v for k, v in (("seconds", stamp.seconds), ("nanos", stamp.nanos)) if v}
    if mt is not None:
        return go_json(mt, value)
    if field.enum_type is not None:
        number = field.enum_type.values_by_name[value].number
        return enum_json_name(field.enum_type, number)
    if is_duration_field(field):
        return format_duration(int(value))
    if field.cpp_type in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64):
        return int(value)  # Go writes 64-bit integers as numbers
    return value


def tame(msg: Message) -> None:
    """Keep the random decimals and DME times mostly within what Go writes as text."""
    name = msg.DESCRIPTOR.full_name
    if name in ("edgeproto.Udec64", "distributed_match_engine.Timestamp"):
        if msg.nanos % 3:  # type: ignore[attr-defined]
            msg.nanos %= 1_000_000_000  # type: ignore[attr-defined]
        if name.endswith("Timestamp") and msg.seconds % 3:  # type: ignore[attr-defined]
            msg.seconds %= 253402300799  # type: ignore[attr-defined]
        return
    for field, value in msg.ListFields():
        mt = field.message_type
        if mt is not None and mt.GetOptions().map_entry:
            if mt.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    tame(item)
        elif field.is_repeated and mt is not None:
            for item in value:
                tame(item)
        elif mt is not None:
            tame(value)


@settings(max_examples=150)
@given(st.sampled_from(STORED).flatmap(messages))
def test_what_the_original_would_write_decodes_to_the_same_object(obj: Message) -> None:
    if "fields" in obj.DESCRIPTOR.fields_by_name:
        obj.ClearField("fields")
    tame(obj)
    ours = encode(obj)
    go = json.dumps(go_json(obj.DESCRIPTOR, json.loads(ours)))
    assert decode(type(obj), go) == obj
    assert encode(decode(type(obj), go)) == ours  # and we write it back in our form


@given(st.sampled_from(STORED).flatmap(messages))
def test_our_encoding_is_unchanged_and_takes_the_fast_path(obj: Message) -> None:
    if "fields" in obj.DESCRIPTOR.fields_by_name:
        obj.ClearField("fields")
    raw = encode(obj)
    assert json.loads(raw) == codec._reference_dict(obj)  # proto3 JSON, as before
    assert codec._fast_build(type(obj), raw.decode()) == obj
    assert decode(type(obj), raw) == obj


def test_the_originals_values_decode_at_a_useful_speed() -> None:
    """Loading an etcd in the original's format goes through the tolerant path for every object.

    Measured on the 230 samples (CPU time, best of five, 2-core machine under load): ours
    ~25 µs an object, the same objects in the original's format ~50 µs, json_format
    ~140-175 µs. The bound fails if the original's values fell back to json_format.
    """
    values = [(registry.by_name(r.type_name), r.value) for r in samples.current() + samples.older()]
    ours = [(t, encode(decode(t, v))) for t, v in values]

    def cpu_seconds(batch: list[Any]) -> float:
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            for objtype, value in batch:
                decode(objtype, value)
            best = min(best, time.process_time() - start)
        return best

    go_time, our_time = cpu_seconds(values), cpu_seconds(ours)
    assert go_time < 4 * our_time + 0.002, (go_time, our_time)
    assert len(values) > 200
