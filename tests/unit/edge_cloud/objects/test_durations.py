import pytest
from edgeproto import settings_pb2
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import given
from hypothesis import strategies as st

from edge_cloud.errors import InvalidArgument
from edge_cloud.objects.durations import (
    DURATION_FIELDS,
    HOUR,
    MICROSECOND,
    MILLISECOND,
    MINUTE,
    NANOSECOND,
    SECOND,
    InvalidDuration,
    format_duration,
    is_duration_field,
    parse_duration,
)
from tests.unit.edge_cloud.objects.protos import find_message

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


# Expected texts are Go's time.Duration.String() (the cases of Go's own format tests).
@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1 * NANOSECOND, "1ns"),
        (1100 * NANOSECOND, "1.1\u00b5s"),
        (1 * MICROSECOND, "1\u00b5s"),
        (1500, "1.5\u00b5s"),
        (2200 * MICROSECOND, "2.2ms"),
        (300 * MILLISECOND, "300ms"),
        (1500 * MILLISECOND, "1.5s"),
        (3 * SECOND, "3s"),
        (30 * MINUTE, "30m0s"),
        (4 * MINUTE + 5 * SECOND, "4m5s"),
        (4 * MINUTE + 5001 * MILLISECOND, "4m5.001s"),
        (5 * HOUR + 6 * MINUTE + 7001 * MILLISECOND, "5h6m7.001s"),
        (90 * MINUTE, "1h30m0s"),
        (8 * MINUTE + 1, "8m0.000000001s"),
        (-1 * NANOSECOND, "-1ns"),
        (-(90 * MINUTE), "-1h30m0s"),
        (INT64_MAX, "2562047h47m16.854775807s"),
        (INT64_MIN, "-2562047h47m16.854775808s"),
        (5 * MINUTE, "5m0s"),
    ],
)
def test_format_duration_matches_go(ns: int, text: str) -> None:
    assert format_duration(ns) == text


def test_format_duration_refuses_values_outside_int64() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        format_duration(INT64_MAX + 1)


# Go's ParseDuration test table.
@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("5s", 5 * SECOND),
        ("30s", 30 * SECOND),
        ("1478s", 1478 * SECOND),
        ("-5s", -5 * SECOND),
        ("+5s", 5 * SECOND),
        ("-0", 0),
        ("+0", 0),
        ("5.0s", 5 * SECOND),
        ("5.6s", 5 * SECOND + 600 * MILLISECOND),
        ("5.s", 5 * SECOND),
        (".5s", 500 * MILLISECOND),
        ("1.004s", 1 * SECOND + 4 * MILLISECOND),
        ("100.00100s", 100 * SECOND + 1 * MILLISECOND),
        ("10ns", 10),
        ("11us", 11 * MICROSECOND),
        ("12\u00b5s", 12 * MICROSECOND),
        ("12\u03bcs", 12 * MICROSECOND),
        ("13ms", 13 * MILLISECOND),
        ("15m", 15 * MINUTE),
        ("16h", 16 * HOUR),
        ("3h30m", 3 * HOUR + 30 * MINUTE),
        ("10.5s4m", 4 * MINUTE + 10 * SECOND + 500 * MILLISECOND),
        ("-2m3.4s", -(2 * MINUTE + 3 * SECOND + 400 * MILLISECOND)),
        ("1h2m3s4ms5us6ns", HOUR + 2 * MINUTE + 3 * SECOND + 4 * MILLISECOND + 5006),
        ("39h9m14.425s", 39 * HOUR + 9 * MINUTE + 14 * SECOND + 425 * MILLISECOND),
        ("52763797000ns", 52763797000),
        ("0.3333333333333333333h", 20 * MINUTE),
        ("9007199254740993ns", (1 << 53) + 1),
        ("9223372036854775807ns", INT64_MAX),
        ("9223372036854775.807us", INT64_MAX),
        ("9223372036s854ms775us807ns", INT64_MAX),
        ("-9223372036s854ms775us808ns", INT64_MIN),
        ("-9223372036854775808ns", INT64_MIN),
        ("-9223372036854775.808us", INT64_MIN),
        ("-2562047h47m16.854775808s", INT64_MIN),
        ("0.100000000000000000000h", 6 * MINUTE),
        ("0.830103483285477580700h", 49 * MINUTE + 48 * SECOND + 372539827),
    ],
)
def test_parse_duration_matches_go(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("3", 'time: missing unit in duration "3"'),
        ("-", 'time: invalid duration "-"'),
        ("s", 'time: invalid duration "s"'),
        (".", 'time: invalid duration "."'),
        ("-.", 'time: invalid duration "-."'),
        (".s", 'time: invalid duration ".s"'),
        ("+.s", 'time: invalid duration "+.s"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("3\u00b5", 'time: unknown unit "\\xc2\\xb5" in duration "3\\xc2\\xb5"'),
        ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
        ("9223372036854775.808us", 'time: invalid duration "9223372036854775.808us"'),
        ("9223372036854ms775us808ns", 'time: invalid duration "9223372036854ms775us808ns"'),
        ("-9223372036854775809ns", 'time: invalid duration "-9223372036854775809ns"'),
        ("1h\n", 'time: unknown unit "h\\x0a" in duration "1h\\x0a"'),
    ],
)
def test_parse_duration_errors_are_gos(text: str, message: str) -> None:
    with pytest.raises(InvalidDuration) as info:
        parse_duration(text)
    assert str(info.value) == message


def test_invalid_duration_is_both_invalid_argument_and_value_error() -> None:
    with pytest.raises(InvalidArgument):
        parse_duration("soon")
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("soon")


@given(st.integers(INT64_MIN, INT64_MAX))
def test_format_then_parse_roundtrips(ns: int) -> None:
    assert parse_duration(format_duration(ns)) == ns


@given(st.integers(INT64_MIN, INT64_MAX))
def test_format_is_canonical(ns: int) -> None:
    text = format_duration(ns)
    assert format_duration(parse_duration(text)) == text


def test_duration_fields_are_the_44_int_fields_of_the_spec() -> None:
    assert len(DURATION_FIELDS) == 44
    int_types = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_INT32}
    for full_name, number in DURATION_FIELDS:
        field = find_message(full_name).fields_by_number[number]
        assert field.type in int_types, (full_name, number)
        assert not field.name.endswith(("_sec", "_km", "_retries", "_intervals"))
        assert is_duration_field(field)


def test_settings_maintenance_timeout_is_a_64_bit_duration() -> None:
    field = settings_pb2.Settings.DESCRIPTOR.fields_by_name["cloudlet_maintenance_timeout"]
    assert is_duration_field(field)
    assert field.type == FieldDescriptor.TYPE_INT64
    assert not is_duration_field(
        settings_pb2.Settings.DESCRIPTOR.fields_by_name["master_node_flavor"]
    )
    assert not is_duration_field(
        settings_pb2.Settings.DESCRIPTOR.fields_by_name["auto_deploy_interval_sec"]
    )
