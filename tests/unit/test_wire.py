"""Wire-compatibility checks on the descriptors of the generated protobuf modules.

Two layers:

* Committed facts (``wire_facts.py``): every message, field, enum value, RPC, reserved number
  and oneof of ``edgeproto`` and ``distributed_match_engine``, plus package totals. These run
  everywhere the generated code is importable.
* The specification itself: when ``objects.md`` / ``dme.md`` are present next to the repository
  (``/work/shared/spec`` or ``../shared/spec``), every table row is parsed and checked against
  the descriptors, so a drift between spec, facts and ``proto/`` cannot go unnoticed.

Types are looked up by full name in the default descriptor pool, so the ``.proto`` file paths
do not matter to these checks (except the explicit file-layout check against the spec).
"""

from __future__ import annotations

import importlib
import re
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import pytest
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    ServiceDescriptor,
)
from google.protobuf.descriptor_pool import DescriptorPool

from tests.unit.wire_facts import (
    ALLDATA_FIELD_ORDER,
    CAMELCASE_FIELDS,
    DME_MODULES,
    EDGEPROTO_MODULES,
    ENUM_VALUE_FACTS,
    FIELD_FACTS,
    MESSAGE_NAMES,
    METHOD_FACTS,
    ONEOF_FACTS,
    PACKAGE_TOTALS,
    RESERVED_FACTS,
    SPEC_DEVIATIONS,
)

EDGEPROTO = "edgeproto"
DME = "distributed_match_engine"
PACKAGE_MODULES: dict[str, tuple[str, ...]] = {EDGEPROTO: EDGEPROTO_MODULES, DME: DME_MODULES}
ALLOWED_GOOGLE_IMPORTS = {"google/protobuf/timestamp.proto", "google/protobuf/any.proto"}
AETCD_FILE_NAMES = {"kv.proto", "auth.proto", "rpc.proto"}

_SCALAR_NAMES: dict[int, str] = {
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
}
SCALARS = frozenset(_SCALAR_NAMES.values())

# (field number, type, label) keyed by field name
FieldShape = tuple[int, str, str]
# (request, response, client_streaming, server_streaming) keyed by method name
MethodShape = tuple[str, str, bool, bool]
Row = TypeVar("Row", bound=tuple[object, ...])


# --------------------------------------------------------------------------------------------
# Descriptor helpers


def import_generated(package: str, suffix: str = "_pb2") -> list[ModuleType]:
    """Import every generated module of one package (``<package>.<stem><suffix>``)."""
    return [
        importlib.import_module(f"{package}.{stem}{suffix}") for stem in PACKAGE_MODULES[package]
    ]


def package_files(package: str) -> list[FileDescriptor]:
    """File descriptors of one package, in module order."""
    return [module.DESCRIPTOR for module in import_generated(package)]


@pytest.fixture(scope="module")
def pool() -> DescriptorPool:
    """The default descriptor pool, with every generated module of both packages loaded."""
    for package in PACKAGE_MODULES:
        import_generated(package)
    return descriptor_pool.Default()


def is_map(fd: FieldDescriptor) -> bool:
    """Whether a field is a proto ``map<K,V>`` (a repeated synthetic map-entry message)."""
    message_type = fd.message_type
    return message_type is not None and message_type.GetOptions().map_entry


def field_type(fd: FieldDescriptor) -> str:
    """Type of a field as written in the facts: scalar name, full name or ``map<K,V>``."""
    if fd.message_type is not None:
        entry = fd.message_type
        if entry.GetOptions().map_entry:
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            return f"map<{field_type(key)},{field_type(value)}>"
        return str(entry.full_name)
    if fd.enum_type is not None:
        return str(fd.enum_type.full_name)
    return _SCALAR_NAMES[fd.type]


def field_label(fd: FieldDescriptor) -> str:
    """Label of a field as written in the facts: ``optional``, ``repeated`` or ``map``."""
    if is_map(fd):
        return "map"
    return "repeated" if fd.is_repeated else "optional"


def message_shape(desc: Descriptor) -> dict[str, FieldShape]:
    """All fields of a message as ``{name: (number, type, label)}``."""
    return {fd.name: (fd.number, field_type(fd), field_label(fd)) for fd in desc.fields}


def reserved_of(desc: Descriptor) -> tuple[set[int], set[str]]:
    """Reserved field numbers (ranges expanded) and reserved names of a message."""
    proto = descriptor_pb2.DescriptorProto()
    desc.CopyToProto(proto)
    numbers = {n for rng in proto.reserved_range for n in range(rng.start, rng.end)}
    return numbers, set(proto.reserved_name)


def service_shape(svc: ServiceDescriptor) -> dict[str, MethodShape]:
    """All methods of a service as ``{name: (request, response, client_stream, server_stream)}``."""
    return {
        m.name: (
            str(m.input_type.full_name),
            str(m.output_type.full_name),
            bool(m.client_streaming),
            bool(m.server_streaming),
        )
        for m in svc.methods
    }


def enum_shape(enum: EnumDescriptor) -> set[tuple[str, int]]:
    """All values of an enum as ``{(name, number)}``."""
    return {(v.name, v.number) for v in enum.values}


def varint(value: int) -> bytes:
    """Protobuf base-128 varint encoding of a non-negative integer."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def group_by_first(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Group fact rows by their first column (a full name)."""
    grouped: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        grouped[str(row[0])].append(row)
    return dict(grouped)


FIELDS_BY_MESSAGE = group_by_first(FIELD_FACTS)
METHODS_BY_SERVICE = group_by_first(METHOD_FACTS)
VALUES_BY_ENUM = group_by_first(ENUM_VALUE_FACTS)


# --------------------------------------------------------------------------------------------
# Committed facts


def test_facts_cover_the_important_messages() -> None:
    must_have = {
        "edgeproto.CloudletKey",
        "edgeproto.ZoneKey",
        "edgeproto.ClusterKey",
        "edgeproto.AppKey",
        "edgeproto.AppInstKey",
        "edgeproto.FlavorKey",
        "edgeproto.Flavor",
        "edgeproto.Cloudlet",
        "edgeproto.CloudletInfo",
        "edgeproto.ClusterInst",
        "edgeproto.App",
        "edgeproto.AppInst",
        "edgeproto.AppInstInfo",
        "edgeproto.Settings",
        "edgeproto.PlatformFeatures",
        "edgeproto.Notice",
        "edgeproto.CloudletRefs",
        "edgeproto.ClusterRefs",
        "edgeproto.AppInstRefs",
    }
    assert must_have <= FIELDS_BY_MESSAGE.keys()
    dme_messages = {name for name in MESSAGE_NAMES if name.startswith(f"{DME}.")}
    assert dme_messages <= FIELDS_BY_MESSAGE.keys()
    assert len(FIELD_FACTS) >= 400
    assert len(METHOD_FACTS) >= 40


def test_generated_modules_import_alongside_aetcd() -> None:
    # aetcd registers root-level kv.proto, auth.proto and rpc.proto in the same default pool;
    # a name clash would raise while importing either side.
    aetcd = pytest.importorskip("aetcd")
    assert importlib.import_module("aetcd.rpc") is aetcd.rpc
    for package, stems in PACKAGE_MODULES.items():
        for stem in stems:
            module = importlib.import_module(f"{package}.{stem}_pb2")
            importlib.import_module(f"{package}.{stem}_pb2_grpc")
            fd: FileDescriptor = module.DESCRIPTOR
            proto = descriptor_pb2.FileDescriptorProto()
            fd.CopyToProto(proto)
            assert fd.package == package
            assert proto.syntax == "proto3"
            assert "/" in fd.name, f"{fd.name} sits at the root of the import path"
            assert fd.name.rsplit("/", 1)[-1] not in AETCD_FILE_NAMES
            for dep in fd.dependencies:
                if dep.name.startswith("google/"):
                    assert dep.name in ALLOWED_GOOGLE_IMPORTS, f"{fd.name} imports {dep.name}"
                else:
                    assert dep.package in PACKAGE_MODULES, f"{fd.name} imports {dep.name}"


@pytest.mark.parametrize("message", MESSAGE_NAMES)
def test_message_fields(pool: DescriptorPool, message: str) -> None:
    desc = pool.FindMessageTypeByName(message)
    expected = {
        name: (num, typ, label) for _, name, num, typ, label in FIELDS_BY_MESSAGE.get(message, [])
    }
    assert message_shape(desc) == expected


@pytest.mark.parametrize("service", sorted(METHODS_BY_SERVICE))
def test_service_methods(pool: DescriptorPool, service: str) -> None:
    svc = pool.FindServiceByName(service)
    expected = {m: (req, resp, cs, ss) for _, m, req, resp, cs, ss in METHODS_BY_SERVICE[service]}
    assert service_shape(svc) == expected


@pytest.mark.parametrize("enum", sorted(VALUES_BY_ENUM))
def test_enum_values(pool: DescriptorPool, enum: str) -> None:
    expected = {(name, number) for _, name, number in VALUES_BY_ENUM[enum]}
    assert enum_shape(pool.FindEnumTypeByName(enum)) == expected


@pytest.mark.parametrize(
    ("enum", "missing"),
    [
        ("edgeproto.IpAccess", range(2, 3)),
        ("distributed_match_engine.MaintenanceState", range(10, 31)),
        ("edgeproto.OSType", range(2, 20)),
        ("edgeproto.ReportSchedule", range(2, 3)),
        ("edgeproto.VersionHash", range(1, 52)),
    ],
)
def test_enum_gaps_are_kept(pool: DescriptorPool, enum: str, missing: range) -> None:
    numbers = {v.number for v in pool.FindEnumTypeByName(enum).values}
    assert numbers.isdisjoint(missing)
    assert max(numbers) > max(missing)


@pytest.mark.parametrize(("message", "numbers", "names"), RESERVED_FACTS)
def test_reserved(
    pool: DescriptorPool, message: str, numbers: tuple[int, ...], names: tuple[str, ...]
) -> None:
    desc = pool.FindMessageTypeByName(message)
    assert reserved_of(desc) == (set(numbers), set(names))
    assert not set(numbers) & set(desc.fields_by_number)


@pytest.mark.parametrize("package", sorted(PACKAGE_MODULES))
def test_oneofs(package: str) -> None:
    actual = {
        (str(desc.full_name), oneof.name, tuple(f.name for f in oneof.fields))
        for fd in package_files(package)
        for desc in fd.message_types_by_name.values()
        for oneof in desc.oneofs
    }
    expected = {row for row in ONEOF_FACTS if row[0].startswith(f"{package}.")}
    assert actual == expected


@pytest.mark.parametrize("totals", PACKAGE_TOTALS, ids=lambda t: t[0])
def test_package_totals(totals: tuple[str, int, int, int, int, int]) -> None:
    package, n_messages, n_enums, n_nested_enums, n_services, n_rpcs = totals
    files = package_files(package)
    messages = [m for fd in files for m in fd.message_types_by_name.values()]
    nested_messages = [n for m in messages for n in m.nested_types if not n.GetOptions().map_entry]
    services = [s for fd in files for s in fd.services_by_name.values()]
    assert len(messages) == n_messages
    assert {m.full_name for m in messages} == {
        name for name in MESSAGE_NAMES if name.startswith(f"{package}.")
    }
    assert nested_messages == []
    assert sum(len(fd.enum_types_by_name) for fd in files) == n_enums
    assert sum(len(m.enum_types) for m in messages) == n_nested_enums
    assert len(services) == n_services
    assert sum(len(s.methods) for s in services) == n_rpcs


@pytest.mark.parametrize("package", sorted(PACKAGE_MODULES))
def test_top_level_enum_value_names_unique(package: str) -> None:
    seen: dict[str, str] = {}
    for fd in package_files(package):
        for enum in fd.enum_types_by_name.values():
            for value in enum.values:
                assert value.name not in seen, f"{value.name} in {enum.name} and {seen[value.name]}"
                seen[value.name] = enum.name
    assert seen


@pytest.mark.parametrize(("message", "name", "number"), CAMELCASE_FIELDS)
def test_camelcase_field_names(pool: DescriptorPool, message: str, name: str, number: int) -> None:
    desc = pool.FindMessageTypeByName(message)
    assert desc.fields_by_number[number].name == name
    assert name not in {f.name.lower() for f in desc.fields if f.name != name}


def test_alldata_declaration_order(pool: DescriptorPool) -> None:
    desc = pool.FindMessageTypeByName("edgeproto.AllData")
    assert [f.name for f in desc.fields] == list(ALLDATA_FIELD_ORDER)


@pytest.mark.parametrize(("message", "name", "spec_type", "our_type"), SPEC_DEVIATIONS)
def test_spec_deviations_are_applied(
    pool: DescriptorPool, message: str, name: str, spec_type: str, our_type: str
) -> None:
    fd = pool.FindMessageTypeByName(message).fields_by_name[name]
    assert field_type(fd) == our_type != spec_type


def test_settings_maintenance_timeout_keeps_64_bit_nanoseconds() -> None:
    from edgeproto import settings_pb2

    five_minutes_ns = 5 * 60 * 1_000_000_000
    wire = settings_pb2.Settings(cloudlet_maintenance_timeout=five_minutes_ns).SerializeToString()
    assert wire == varint(19 << 3) + varint(five_minutes_ns)
    decoded = settings_pb2.Settings.FromString(wire)
    assert decoded.cloudlet_maintenance_timeout == five_minutes_ns


def test_golden_encodings() -> None:
    from distributed_match_engine import loc_pb2
    from edgeproto import cloudletkey_pb2, cluster_pb2, common_pb2

    key = cloudletkey_pb2.CloudletKey(organization="o", name="n", federated_organization="f")
    assert key.SerializeToString() == b"\n\x01o\x12\x01n\x1a\x01f"
    # ClusterKey numbers the name first, unlike CloudletKey.
    cluster = cluster_pb2.ClusterKey(name="c", organization="o")
    assert cluster.SerializeToString() == b"\n\x01c\x12\x01o"
    loc = loc_pb2.Loc(latitude=1.0, timestamp=loc_pb2.Timestamp(seconds=1))
    assert loc.SerializeToString() == b"\t" + struct.pack("<d", 1.0) + b"B\x02\x08\x01"
    status = common_pb2.StatusInfo(task_number=1, msgs=["a", "b"])
    assert status.SerializeToString() == b"\x08\x01\x32\x01a\x32\x01b"


def test_notice_any_type_url_uses_package_name() -> None:
    from edgeproto import flavor_pb2, notice_pb2

    packed = any_pb2.Any()
    packed.Pack(flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x1.small")))
    assert packed.type_url == "type.googleapis.com/edgeproto.Flavor"
    notice = notice_pb2.Notice(action=notice_pb2.UPDATE, version=1, any=packed)
    decoded = notice_pb2.Notice.FromString(notice.SerializeToString())
    assert decoded == notice
    flavor = flavor_pb2.Flavor()
    assert decoded.any.Unpack(flavor)
    assert flavor.key.name == "x1.small"


class RecordingChannel:
    """Stand-in for ``grpc.Channel`` that records the method paths stubs register."""

    def __init__(self) -> None:
        self.paths: dict[str, tuple[bool, bool]] = {}

    def _record(self, streaming: tuple[bool, bool]) -> Callable[..., object]:
        def register(path: str, *args: object, **kwargs: object) -> object:
            self.paths[path] = streaming
            return object()

        return register

    def __getattr__(self, name: str) -> Callable[..., object]:
        kinds = {
            "unary_unary": (False, False),
            "unary_stream": (False, True),
            "stream_unary": (True, False),
            "stream_stream": (True, True),
        }
        if name not in kinds:
            raise AttributeError(name)
        return self._record(kinds[name])


@pytest.mark.parametrize("package", sorted(PACKAGE_MODULES))
def test_grpc_stub_paths(package: str) -> None:
    channel = RecordingChannel()
    for module in import_generated(package, "_pb2_grpc"):
        for attr, value in vars(module).items():
            if attr.endswith("Stub") and isinstance(value, type):
                value(channel)
                service = attr.removesuffix("Stub")
                assert callable(getattr(module, f"add_{service}Servicer_to_server"))
    expected = {
        f"/{svc}/{method}": (cs, ss)
        for svc, method, _, _, cs, ss in METHOD_FACTS
        if svc.startswith(f"{package}.")
    }
    assert channel.paths == expected


def test_notify_stream_is_bidirectional(pool: DescriptorPool) -> None:
    method = pool.FindMethodByName("edgeproto.NotifyApi.StreamNotice")
    assert method.client_streaming
    assert method.server_streaming
    assert method.input_type.full_name == method.output_type.full_name == "edgeproto.Notice"


def test_legacy_match_engine_api_mirrors_split_services(pool: DescriptorPool) -> None:
    legacy = service_shape(pool.FindServiceByName(f"{DME}.MatchEngineApi"))
    split: dict[str, MethodShape] = {}
    for fd in package_files(DME):
        for svc in fd.services_by_name.values():
            if svc.name != "MatchEngineApi":
                split.update(service_shape(svc))
    assert len(legacy) == 13
    assert set(split) - set(legacy) == {"SendToGroup"}
    for name, shape in split.items():
        if name in legacy:
            assert legacy[name] == shape, name
    services = [s.name for fd in package_files(DME) for s in fd.services_by_name.values()]
    assert services.count("MatchEngineApi") == 1


# --------------------------------------------------------------------------------------------
# The specification tables themselves

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_DIRS = (Path("/work/shared/spec"), REPO_ROOT.parent / "shared" / "spec")
FIELD_RE = re.compile(r"(\d+) `((?:repeated )?(?:map<[^>]+>|[\w.]+)) (\w+)`")
ONEOF_RE = re.compile(r"oneof `(\w+)` \{([^}]*)\}")


def spec_file(name: str) -> Path:
    """Path of a specification file, or skip the test when it is not available."""
    for directory in SPEC_DIRS:
        if (directory / name).is_file():
            return directory / name
    pytest.skip(f"specification {name} not found in {', '.join(map(str, SPEC_DIRS))}")


@dataclass
class SpecMessage:
    """One message row of a spec table."""

    fields: dict[str, FieldShape] = field(default_factory=dict)
    oneofs: dict[str, list[str]] = field(default_factory=dict)
    reserved_numbers: set[int] = field(default_factory=set)
    reserved_names: set[str] = field(default_factory=set)
    nested_enums: dict[str, set[tuple[str, int]]] = field(default_factory=dict)


@dataclass
class Spec:
    """Everything the tables of one spec file say about one package."""

    messages: dict[str, SpecMessage] = field(default_factory=dict)
    enums: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    methods: dict[str, dict[str, MethodShape]] = field(default_factory=dict)
    file_types: dict[str, set[str]] = field(default_factory=dict)
    service_counts: dict[str, int] = field(default_factory=dict)
    key_fields: dict[str, set[tuple[int, str]]] = field(default_factory=dict)
    unused_numbers: dict[str, set[int]] = field(default_factory=dict)
    reserved_numbers: dict[str, set[int]] = field(default_factory=dict)
    totals: tuple[int, ...] = ()
    declared_order: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    legacy_methods: list[str] = field(default_factory=list)


def qualify(type_name: str, package: str, nested: Iterable[str] = (), owner: str = "") -> str:
    """Fully qualify a type written in a spec table."""
    if type_name.startswith("map<"):
        key, value = type_name[4:-1].split(",")
        return f"map<{qualify(key, package)},{qualify(value, package, nested, owner)}>"
    if type_name in SCALARS or "." in type_name:
        return type_name
    if type_name in nested:
        return f"{package}.{owner}.{type_name}"
    return f"{package}.{type_name}"


def make_shape(type_text: str, number: str, package: str) -> FieldShape:
    """Field shape from the ``[repeated ]type`` text of a table cell."""
    if type_text.startswith("repeated "):
        return int(number), qualify(type_text.removeprefix("repeated "), package), "repeated"
    label = "map" if type_text.startswith("map<") else "optional"
    return int(number), qualify(type_text, package), label


def table_rows(text: str) -> Iterator[tuple[list[str], list[str]]]:
    """Yield ``(header cells, row cells)`` for every body row of every markdown table."""
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(line.strip()) <= set("|-: "):
            yield header, cells


def parse_number_list(text: str) -> set[int]:
    """Numbers from text such as ``3, 6, 10-11, 59-99`` (the spec writes ranges with en dashes)."""
    numbers: set[int] = set()
    for lo, hi in re.findall(r"(\d+)(?:[-\u2013](\d+))?", text):
        numbers.update(range(int(lo), int(hi or lo) + 1))
    return numbers


def parse_object_fields(cell: str, msg: SpecMessage) -> None:
    """Fill a SpecMessage from an objects.md field cell."""
    for oneof, body in ONEOF_RE.findall(cell):
        for number, type_text, name in FIELD_RE.findall(body):
            msg.fields[name] = make_shape(type_text, number, EDGEPROTO)
            msg.oneofs.setdefault(oneof, []).append(name)
    for part in ONEOF_RE.sub("", cell).split(";"):
        part = part.strip()
        if match := re.fullmatch(r"\(reserved (\d+)\)", part):
            msg.reserved_numbers.add(int(match.group(1)))
        elif match := re.fullmatch(r"\(reserved names: (.*)\)", part):
            msg.reserved_names.update(re.findall(r"`(\w+)`", match.group(1)))
        elif match := FIELD_RE.fullmatch(part.rstrip("†‡")):
            number, type_text, name = match.groups()
            msg.fields[name] = make_shape(type_text, number, EDGEPROTO)
        elif part not in ("", "*(no fields)*"):
            raise AssertionError(f"unparsed spec field text: {part!r}")


def parse_objects_md(text: str) -> Spec:
    """Parse every table of objects.md that describes the wire."""
    spec = Spec()
    for header, cells in table_rows(text):
        name = cells[0].strip("`")
        if header[:2] == ["Message", "Kind"]:
            msg = SpecMessage()
            parse_object_fields(cells[2], msg)
            spec.messages[f"{EDGEPROTO}.{name}"] = msg
        elif header == ["Message", "Fields"]:
            msg = SpecMessage()
            for number, type_text, fname in FIELD_RE.findall(cells[1]):
                msg.fields[fname] = make_shape(type_text, number, name.rsplit(".", 1)[0])
            spec.messages[name] = msg
        elif header[0].startswith("Enum") and header[1] == "Values":
            full = name if "." in name else f"{EDGEPROTO}.{name}"
            spec.enums[full] = {(v, int(n)) for n, v in re.findall(r"(\d+) `(\w+)`", cells[1])}
        elif header[:2] == ["Service", "RPC"]:
            req, resp = cells[2].strip("`"), cells[3].strip("`")
            shape = (
                qualify(req.removeprefix("stream "), EDGEPROTO),
                qualify(resp.removeprefix("stream "), EDGEPROTO),
                req.startswith("stream "),
                resp.startswith("stream "),
            )
            expected_kind = {"unary": (False, False), "server": (False, True), "bidi": (True, True)}
            assert expected_kind[cells[4]] == shape[2:], f"streaming column of {cells[:2]}"
            spec.methods.setdefault(f"{EDGEPROTO}.{name}", {})[cells[1].strip("`")] = shape
        elif header[0] == "File":
            types = re.findall(r"`(\w+)`", " ".join(cells[1:]))
            spec.file_types[name] = {f"{EDGEPROTO}.{t}" for t in types}
        elif header[:2] == ["Service", "File"] and not name.startswith("**"):
            spec.service_counts[f"{EDGEPROTO}.{name}"] = int(cells[2])
        elif header[:2] == ["Object(s)", "Key message"]:
            keys = re.findall(r"(\d+) `(?:[\w.]+ )?(\w+)`", cells[2])
            spec.key_fields[f"{EDGEPROTO}.{cells[1].strip('`')}"] = {(int(n), k) for n, k in keys}
        elif header[:2] == ["Message", "Unused numbers below the maximum"]:
            spec.unused_numbers[f"{EDGEPROTO}.{name}"] = parse_number_list(cells[1])
            reserved = cells[2].split("+")[0]
            spec.reserved_numbers[f"{EDGEPROTO}.{name}"] = parse_number_list(reserved)
    totals = re.search(r"\*\*Totals in package `edgeproto`:\*\*(.*)", text)
    assert totals, "totals line not found in objects.md"
    spec.totals = tuple(int(n) for n in re.findall(r"(\d+)", totals.group(1)))
    order = re.search(r"Declared order of `AllData` fields\.(.*)", text)
    assert order, "AllData declared order not found in objects.md"
    pairs = re.findall(r"(\w+) \((\d+)\)", order.group(1))
    spec.declared_order[f"{EDGEPROTO}.AllData"] = [(name, int(num)) for name, num in pairs]
    return spec


def parse_dme_md(text: str) -> Spec:
    """Parse the wire tables of dme.md section 1."""
    wire = text.split("## 1. Wire API", 1)[1].split("### 1.4", 1)[0]
    spec = Spec()
    for header, cells in table_rows(wire):
        name = cells[0].strip("`")
        if header == ["message", "fields"] and "." in name:
            owner, enum = name.split(".")
            values = {(v, int(n)) for v, n in re.findall(r"`(\w+)`=(\d+)", cells[1])}
            spec.messages[f"{DME}.{owner}"].nested_enums[enum] = values
        elif header == ["message", "fields"]:
            msg = SpecMessage()
            for part in cells[1].split(";"):
                part = part.strip()
                if match := FIELD_RE.match(part):
                    number, type_text, fname = match.groups()
                    msg.fields[fname] = make_shape(type_text, number, DME)
                elif part.startswith("100 tags"):
                    msg.fields["tags"] = (100, "map<string,string>", "map")
                elif match := re.match(r"\((\d+) reserved", part):
                    msg.reserved_numbers.add(int(match.group(1)))
                else:
                    raise AssertionError(f"unparsed dme.md field text in {name}: {part!r}")
            spec.messages[f"{DME}.{name}"] = msg
        elif header == ["enum", "values"]:
            values = {(v, int(n)) for v, n in re.findall(r"`(\w+)`=(\d+)", cells[1])}
            spec.enums[f"{DME}.{name}"] = values
        elif header[0].startswith("gRPC service"):
            req, resp = (x.strip().replace("`", "") for x in cells[2].split("→"))
            shape = (
                f"{DME}.{req.removeprefix('stream ')}",
                f"{DME}.{resp.removeprefix('stream ')}",
                req.startswith("stream "),
                resp.startswith("stream "),
            )
            spec.methods.setdefault(name, {})[cells[1].strip("`")] = shape
    # Nested enum references are written unqualified; qualify them with their owner.
    for full, msg in spec.messages.items():
        owner = full.removeprefix(f"{DME}.")
        for fname, (number, typ, label) in msg.fields.items():
            short = typ.removeprefix(f"{DME}.")
            if short in msg.nested_enums:
                msg.fields[fname] = (number, f"{DME}.{owner}.{short}", label)
    legacy = re.search(r"one service `distributed_match_engine\.MatchEngineApi` \(([^)]*)\)", text)
    assert legacy, "legacy MatchEngineApi RPC list not found in dme.md"
    for item in re.split(r",\s*", " ".join(legacy.group(1).split())):
        if "/" in item:  # "QosPrioritySessionCreate/Delete"
            first, second = item.split("/")
            spec.legacy_methods += [first, re.sub(r"[A-Z][a-z]+$", second, first)]
        else:
            spec.legacy_methods.append(item)
    return spec


@pytest.fixture(scope="module")
def objects_spec() -> Spec:
    """The parsed objects.md (skips when the specification is not available)."""
    return parse_objects_md(spec_file("objects.md").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def dme_spec() -> Spec:
    """The parsed dme.md (skips when the specification is not available)."""
    return parse_dme_md(spec_file("dme.md").read_text(encoding="utf-8"))


def deviated(spec_fields: dict[str, FieldShape], message: str) -> dict[str, FieldShape]:
    """Spec fields of a message with the documented deliberate deviations applied."""
    fields = dict(spec_fields)
    for dev_message, name, spec_type, our_type in SPEC_DEVIATIONS:
        if dev_message == message:
            number, typ, label = fields[name]
            assert typ == spec_type, f"deviation for {message}.{name} no longer matches the spec"
            fields[name] = (number, our_type, label)
    return fields


def compare_messages(pool: DescriptorPool, messages: dict[str, SpecMessage]) -> list[str]:
    """Differences between spec messages and descriptors, one line each."""
    problems: list[str] = []
    for full, msg in messages.items():
        desc = pool.FindMessageTypeByName(full)
        if (actual := message_shape(desc)) != (expected := deviated(msg.fields, full)):
            for name in sorted(actual.keys() | expected.keys()):
                if actual.get(name) != expected.get(name):
                    problems.append(
                        f"{full}.{name}: spec {expected.get(name)} != {actual.get(name)}"
                    )
        numbers, names = reserved_of(desc)
        if not full.startswith("google.") and (numbers, names) != (
            msg.reserved_numbers,
            msg.reserved_names,
        ):
            problems.append(f"{full}: reserved {numbers, names} != spec {msg.reserved_numbers}")
        oneofs = {o.name: [f.name for f in o.fields] for o in desc.oneofs}
        if oneofs != msg.oneofs:
            problems.append(f"{full}: oneofs {oneofs} != spec {msg.oneofs}")
        nested = {e.name: enum_shape(e) for e in desc.enum_types}
        if nested != msg.nested_enums:
            problems.append(f"{full}: nested enums {nested} != spec {msg.nested_enums}")
    return problems


def test_spec_objects_messages(pool: DescriptorPool, objects_spec: Spec) -> None:
    messages = {k: v for k, v in objects_spec.messages.items() if k.startswith(f"{EDGEPROTO}.")}
    assert len(messages) == objects_spec.totals[1]
    assert sum(len(m.fields) for m in messages.values()) > 1000
    assert compare_messages(pool, objects_spec.messages) == []
    compiled = {
        m.full_name for fd in package_files(EDGEPROTO) for m in fd.message_types_by_name.values()
    }
    assert compiled == messages.keys()


def test_spec_objects_enums(pool: DescriptorPool, objects_spec: Spec) -> None:
    assert len(objects_spec.enums) >= objects_spec.totals[2]
    for full, values in objects_spec.enums.items():
        assert enum_shape(pool.FindEnumTypeByName(full)) == values, full
    compiled = {
        e.full_name for fd in package_files(EDGEPROTO) for e in fd.enum_types_by_name.values()
    }
    assert compiled == {e for e in objects_spec.enums if e.startswith(f"{EDGEPROTO}.")}


def test_spec_objects_rpcs(pool: DescriptorPool, objects_spec: Spec) -> None:
    for service, methods in objects_spec.methods.items():
        assert service_shape(pool.FindServiceByName(service)) == methods, service
        assert len(methods) == objects_spec.service_counts[service], service
    compiled = {
        s.full_name for fd in package_files(EDGEPROTO) for s in fd.services_by_name.values()
    }
    assert compiled == objects_spec.methods.keys() == objects_spec.service_counts.keys()


def test_spec_objects_totals(objects_spec: Spec) -> None:
    n_files, n_messages, n_enums, n_services, n_rpcs = objects_spec.totals
    files = package_files(EDGEPROTO)
    services = [s for fd in files for s in fd.services_by_name.values()]
    assert len(files) == n_files == len(objects_spec.file_types)
    assert sum(len(fd.message_types_by_name) for fd in files) == n_messages
    assert sum(len(fd.enum_types_by_name) for fd in files) == n_enums
    assert len(services) == n_services
    assert sum(len(s.methods) for s in services) == n_rpcs
    assert sum(objects_spec.service_counts.values()) == n_rpcs


def test_spec_objects_file_layout(objects_spec: Spec) -> None:
    actual: dict[str, set[str]] = defaultdict(set)
    for fd in package_files(EDGEPROTO):
        base = fd.name.rsplit("/", 1)[-1]
        for group in (fd.message_types_by_name, fd.enum_types_by_name, fd.services_by_name):
            actual[base].update(d.full_name for d in group.values())
    assert dict(actual) == objects_spec.file_types


def test_spec_objects_declared_order(pool: DescriptorPool, objects_spec: Spec) -> None:
    assert objects_spec.declared_order
    for message, order in objects_spec.declared_order.items():
        desc = pool.FindMessageTypeByName(message)
        assert [(f.name, f.number) for f in desc.fields] == order


def test_spec_objects_keys_and_numbering(pool: DescriptorPool, objects_spec: Spec) -> None:
    assert objects_spec.key_fields
    for key, fields in objects_spec.key_fields.items():
        desc = pool.FindMessageTypeByName(key)
        assert {(f.number, f.name) for f in desc.fields} == fields, key
    assert objects_spec.unused_numbers
    for message, unused in objects_spec.unused_numbers.items():
        desc = pool.FindMessageTypeByName(message)
        assert unused.isdisjoint(desc.fields_by_number), message
        assert reserved_of(desc)[0] == objects_spec.reserved_numbers[message], message


def test_spec_dme_messages(pool: DescriptorPool, dme_spec: Spec) -> None:
    assert len(dme_spec.messages) >= 40
    assert compare_messages(pool, dme_spec.messages) == []
    compiled = {m.full_name for fd in package_files(DME) for m in fd.message_types_by_name.values()}
    assert compiled == dme_spec.messages.keys()


def test_spec_dme_enums(pool: DescriptorPool, dme_spec: Spec) -> None:
    for full, values in dme_spec.enums.items():
        assert enum_shape(pool.FindEnumTypeByName(full)) == values, full
    compiled = {e.full_name for fd in package_files(DME) for e in fd.enum_types_by_name.values()}
    assert compiled == dme_spec.enums.keys()


def test_spec_dme_services(pool: DescriptorPool, dme_spec: Spec) -> None:
    legacy_name = f"{DME}.MatchEngineApi"
    for service, methods in dme_spec.methods.items():
        actual = service_shape(pool.FindServiceByName(service))
        if service == legacy_name:
            # The compiled MatchEngineApi is the legacy superset; the table lists the newest split.
            actual = {m: s for m, s in actual.items() if m in methods}
        assert actual == methods, service
    legacy = service_shape(pool.FindServiceByName(legacy_name))
    assert len(dme_spec.legacy_methods) == 13
    assert set(legacy) == set(dme_spec.legacy_methods)
    split = {m: s for svc, ms in dme_spec.methods.items() for m, s in ms.items()}
    for method in dme_spec.legacy_methods:
        assert legacy[method] == split[method], method
    compiled = {s.full_name for fd in package_files(DME) for s in fd.services_by_name.values()}
    assert compiled == dme_spec.methods.keys()
