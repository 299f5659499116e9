"""Hypothesis strategies that build random protobuf messages from their descriptors."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

M = TypeVar("M", bound=Message)

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INT_RANGES:
        lo, hi = _INT_RANGES[t]
        return st.integers(lo, hi)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_STRING:
        return _TEXT
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=6)
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=False, allow_infinity=False)
    if t == FieldDescriptor.TYPE_FLOAT:
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    if t == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return st.sampled_from([v.number for v in field.enum_type.values])
    raise AssertionError(f"unhandled field type {t}")


@st.composite
def _fill(draw: st.DrawFn, msg: Message, depth: int) -> Message:
    desc: Descriptor = msg.DESCRIPTOR  # type: ignore[assignment]
    for field in desc.fields:
        if draw(st.integers(0, 3)) != 0:  # a quarter of the fields, to keep examples small
            continue
        sub = field.message_type
        if sub is not None and sub.GetOptions().map_entry:
            kf, vf = sub.fields_by_name["key"], sub.fields_by_name["value"]
            keys = draw(st.lists(_scalar(kf), max_size=2, unique=True))
            target = getattr(msg, field.name)
            for k in keys:
                if vf.message_type is not None:
                    if depth > 0:
                        draw(_fill(target[k], depth - 1))
                    else:
                        target[k].SetInParent()
                else:
                    target[k] = draw(_scalar(vf))
        elif field.is_repeated:
            target = getattr(msg, field.name)
            for _ in range(draw(st.integers(0, 2))):
                if sub is not None:
                    elem = target.add()
                    if depth > 0:
                        draw(_fill(elem, depth - 1))
                else:
                    target.append(draw(_scalar(field)))
        elif sub is not None and sub.full_name == "google.protobuf.Timestamp":
            # Only valid times: proto3 JSON cannot express the others (tested on their own).
            child = getattr(msg, field.name)
            child.seconds = draw(st.integers(-62135596800, 253402300799))
            child.nanos = draw(st.integers(0, 999_999_999))
        elif sub is not None:
            child = getattr(msg, field.name)
            child.SetInParent()
            if depth > 0:
                draw(_fill(child, depth - 1))
        else:
            setattr(msg, field.name, draw(_scalar(field)))
    return msg


def messages(cls: type[M], depth: int = 2) -> st.SearchStrategy[M]:
    """Random instances of `cls`, nested messages down to `depth` levels."""
    return st.deferred(lambda: _fill(cls(), depth)).map(lambda m: cast("M", m))
