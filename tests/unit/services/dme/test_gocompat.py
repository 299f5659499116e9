"""Go library behaviour the tokens expose: base64 offsets, float text, JSON errors."""

from __future__ import annotations

import base64

import pytest

from services.dme._gocompat import Field, GoError, Struct, b64decode, b64encode, go_float, loads


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("x", 1),  # padded to "x===": the first "=" is at byte 1
        ("!", 0),
        ("ab!d", 2),
        ("YQ=a", 2),
        ("YWJj!", 4),
        ("YQ==YQ==", 4),  # data after padding
    ],
)
def test_b64_error_offsets(text: str, offset: int) -> None:
    with pytest.raises(GoError, match=rf"^illegal base64 data at input byte {offset}$"):
        b64decode(text, url=True, pad_segment=True)


def test_b64_matches_python_on_valid_input() -> None:
    for data in [b"", b"a", b"ab", b"abc", bytes(range(256))]:
        assert b64decode(b64encode(data), url=True, pad_segment=True) == data
        assert b64decode(base64.b64encode(data).decode(), url=False) == data


def test_b64_standard_decoding_is_gos() -> None:
    assert b64decode("YW\r\nJj", url=False) == b"abc"  # CR/LF are skipped
    with pytest.raises(GoError):
        b64decode("YQ", url=False)  # padding required
    with pytest.raises(GoError, match="byte 2"):
        b64decode("YW-j", url=False)  # URL alphabet is not standard


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (10.0, "10"),
        (0.5, "0.5"),
        (-32.5, "-32.5"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (123.456, "123.456"),
        (0.0, "0"),
        (-0.0, "-0"),
    ],
)
def test_go_float(value: float, text: str) -> None:
    assert go_float(value) == text


def test_go_float_refuses_nan() -> None:
    with pytest.raises(ValueError, match="unsupported value"):
        go_float(float("nan"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "unexpected end of JSON input"),
        (b"{", "unexpected end of JSON input"),
        (b'"abc', "unexpected end of JSON input"),
        (b"x", "invalid character 'x' looking for beginning of value"),
        (b"NaN", "invalid character 'N' looking for beginning of value"),
        (b'{"a" 1}', "invalid character '1' after object key"),
        (b'{"a":1 "b":2}', "invalid character '\"' after object key:value pair"),
        (b"[1 2]", "invalid character '2' after array element"),
        (b"{} {}", "invalid character '{' after top-level value"),
        (b"{a:1}", "invalid character 'a' looking for beginning of object key string"),
    ],
)
def test_json_syntax_errors(data: bytes, message: str) -> None:
    with pytest.raises(GoError) as info:
        loads(data)
    assert str(info.value) == message


INNER = Struct("Inner", (Field("n", "int32"), Field("s", "string")))
OUTER = Struct(
    "Outer",
    (
        Field("f", "float64"),
        Field("i", "int64"),
        Field("p", INNER, pointer=True),
        Field("v", INNER),
    ),
    "pkg.Outer",
)


def test_struct_decoding_rules() -> None:
    value = OUTER.decode(loads(b'{"F":1.5,"i":7,"p":{"N":3},"unknown":[1],"v":null}'))
    assert value == {"f": 1.5, "i": 7, "p": {"n": 3}}
    assert OUTER.decode(loads(b'{"p":null}')) == {"p": None}
    assert OUTER.decode(loads(b"null")) == {}
    assert OUTER.decode(loads(b'{"i":1,"I":2}')) == {"i": 2}  # last one wins


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[]", "json: cannot unmarshal array into Go value of type pkg.Outer"),
        (
            b'{"i":1.5}',
            "json: cannot unmarshal number 1.5 into Go struct field Outer.i of type int64",
        ),
        (b'{"i":"1"}', "json: cannot unmarshal string into Go struct field Outer.i of type int64"),
        (b'{"f":true}', "json: cannot unmarshal bool into Go struct field Outer.f of type float64"),
        (
            b'{"p":{"n":3000000000}}',
            "json: cannot unmarshal number 3000000000 into Go struct field Inner.p.n of type int32",
        ),
        (
            b'{"v":{"s":5}}',
            "json: cannot unmarshal number into Go struct field Inner.v.s of type string",
        ),
        (b'{"v":[1]}', "json: cannot unmarshal array into Go struct field Outer.v of type Inner"),
        (
            b'{"f":1e999,"i":"x"}',
            "json: cannot unmarshal number 1e999 into Go struct field Outer.f of type float64",
        ),
    ],
)
def test_struct_type_errors(data: bytes, message: str) -> None:
    with pytest.raises(GoError) as info:
        OUTER.decode(loads(data))
    assert str(info.value) == message
