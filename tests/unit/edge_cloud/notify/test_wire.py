"""Notify's per-type key encoders give exactly the shared object layer's key strings."""

from __future__ import annotations

import pytest
from edgeproto import flavor_pb2, notice_pb2
from google.protobuf.descriptor import FieldDescriptor

from edge_cloud.notify import key_string
from edge_cloud.notify._wire import Message, key_encoder
from edge_cloud.objects import keys, registry
from edge_cloud.objects.registry import Identity, ObjectType


def _fill(msg: Message, salt: str) -> None:
    """Set every field of a key message, with characters Go's JSON escapes."""
    for field in msg.DESCRIPTOR.fields:
        if field.is_repeated:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            _fill(getattr(msg, field.name), salt)
        elif field.type == FieldDescriptor.TYPE_STRING:
            setattr(msg, field.name, f"{field.name}<{salt}>&\u2028")
        elif field.type == FieldDescriptor.TYPE_BOOL:
            setattr(msg, field.name, True)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            setattr(msg, field.name, field.enum_type.values[-1].number)
        else:
            setattr(msg, field.name, 7)


def sample(objtype: ObjectType[Message], salt: str) -> Message:
    obj = objtype.new()
    field = objtype.key_field
    match objtype.identity:
        case Identity.KEY:
            assert field is not None
            _fill(getattr(obj, field), salt)
        case Identity.SELF:
            _fill(obj, salt)
        case Identity.STRING:
            assert field is not None
            setattr(obj, field, f"code<{salt}>")
        case Identity.LABELS:
            assert field is not None
            getattr(obj, field).update({"alertname": f"x<{salt}", "app": "a&b", "b": ""})
        case Identity.SINGLETON:
            pass
    return obj


@pytest.mark.parametrize("objtype", registry.ALL_TYPES, ids=lambda t: t.name)
def test_key_encoders_match_the_object_layer_for_every_type(objtype: ObjectType[Message]) -> None:
    encode = key_encoder(objtype.message)
    assert key_encoder(objtype.message) is encode  # worked out once
    for obj in (objtype.new(), sample(objtype, "1"), sample(objtype, "two")):
        assert encode(obj) == keys.key_string(obj)
        assert key_string(obj) == keys.key_string(obj)


def test_key_messages_and_keyless_messages() -> None:
    key = flavor_pb2.FlavorKey(name="x1.small")
    assert key_string(key) == keys.key_string(key) == '{"name":"x1.small"}'
    with pytest.raises(TypeError):
        keys.key_string(notice_pb2.Notice())
    with pytest.raises(TypeError):
        key_string(notice_pb2.Notice())
