r"""Object identity: key strings, etcd keys, key validation and the standard key errors.

A key string is what the original's `GetKeyString()` returns: Go `encoding/json` of the key
message (compact, snake_case names in declaration order, empty scalars omitted, nested keys
always present), or the bare string for string-keyed types. It is the `<key-string>` of
`1/<Type>/<key-string>` in etcd, the map key of `AppInstRefs.insts` and
`CloudletIPs.cluster_ips`, and the `{...}` in "Flavor key {...} not found"; any byte of
difference would make data written by one controller invisible to the other, so this module
reproduces Go's output exactly (including `\\u003c` for `<` and the like).

Validation follows controller.md §3.0 and the original's per-key messages ("Invalid cloudlet
name"); every check raises `InvalidArgument`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple, TypeAlias, TypeVar

from edgeproto import (
    appinst_pb2,
    appinstclient_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cloudletnode_pb2,
    cluster_pb2,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from edge_cloud.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from edge_cloud.objects import registry
from edge_cloud.objects.gojson import enum_from_go, enum_json_name, go_quote
from edge_cloud.objects.registry import SETTINGS_KEY, Identity, ObjectType, descriptor_of

__all__ = [
    "CLUSTER_NAME_RE",
    "REGION",
    "VALID_NAME_RE",
    "ObjKey",
    "StoreKey",
    "already_exists",
    "being_deleted",
    "key_json",
    "key_of",
    "key_string",
    "key_type_word",
    "labels_key",
    "not_found",
    "obj_name_error",
    "object_from_key_string",
    "object_store_key",
    "parse_key_string",
    "parse_store_key",
    "set_key",
    "store_key",
    "store_prefix",
    "strip_store_prefix",
    "valid_cluster_name",
    "valid_name",
    "validate_key",
]

M = TypeVar("M", bound=Message)
K = TypeVar("K", bound=Message)

ObjKey: TypeAlias = Message | str
"""A key: a key message, or the bare string of string-keyed types."""

REGION: Final = "1"
"""The fixed, deprecated region number every etcd key starts with."""

VALID_NAME_RE: Final = re.compile(r"[0-9a-zA-Z][-_0-9a-zA-Z .&,!]*")
"""The original's `ValidName`; use with `fullmatch` (Go's `$` does not accept a final newline)."""
CLUSTER_NAME_RE: Final = re.compile(r"[0-9a-zA-Z][-0-9a-zA-Z.]*")
"""The original's `ValidKubernetesName`, used for cluster names."""
_OBJ_NAME_RE: Final = re.compile(r"[a-zA-Z0-9_\-.]*")
_LDAP_NAME_RE: Final = re.compile(r"[-_0-9a-zA-Z .&,!]+")

# Go's encoding/json writes struct fields in declaration order. Where our proto copy declares
# a key's fields in another order than the original's .proto, the original order wins here.
_GO_FIELD_ORDER: Final[dict[str, tuple[str, ...]]] = {
    "edgeproto.SvcNodeKey": ("name", "type", "cloudlet_key", "region"),
}

_INT_TYPES: Final = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


# --- key strings ---------------------------------------------------------------------------


def key_of(obj: Message) -> ObjKey:
    """The identity of an object: its key message, or its key string for string-like keys.

    Args:
        obj: An object of a registered type (`Flavor` gives its `FlavorKey`, `OperatorCode`
            its code, `Settings` "settings", `Alert` its labels JSON), or a key message,
            which is returned as is.

    Returns:
        The key; a message is the object's own sub-message, not a copy.

    Raises:
        TypeError: For messages that are neither object types nor keys.
    """
    objtype = registry.find(descriptor_of(obj))
    if objtype is None:
        if registry.is_key_message(descriptor_of(obj)):
            return obj
        raise TypeError(f"{descriptor_of(obj).full_name} is neither an object type nor a key")
    match objtype.identity:
        case Identity.KEY:
            key: Message = getattr(obj, _key_field(objtype))
            return key
        case Identity.STRING:
            return str(getattr(obj, _key_field(objtype)))
        case Identity.SINGLETON:
            return SETTINGS_KEY
        case Identity.LABELS:
            return labels_key(getattr(obj, _key_field(objtype)))
        case Identity.SELF:
            return obj


def key_string(obj_or_key: Message | str) -> str:
    """The original's `GetKeyString()` of an object or key.

    Args:
        obj_or_key: An object (its identity is used), a key message, or a key string
            (returned unchanged).

    Returns:
        E.g. `{"organization":"oper1","name":"cloudlet1"}` for a CloudletKey (or a
        Cloudlet), `{"name":"c1","organization":"dev"}` for a ClusterKey, `310-260` for an
        OperatorCode, `settings` for Settings.
    """
    if isinstance(obj_or_key, str):
        return obj_or_key
    key = key_of(obj_or_key) if registry.find(descriptor_of(obj_or_key)) else obj_or_key
    if isinstance(key, str):
        return key
    return key_json(key)


def key_json(key: Message) -> str:
    """Go `json.Marshal` of a key message, whatever its type.

    Fields come in the original's declaration order under their proto names; empty strings,
    zero numbers, false and zero enums are left out; nested messages are always written
    (`{}` when empty); enums are the original's CamelCase names (`"Dme"`).

    Args:
        key: A message made only of strings, integers, bools, enums and nested messages.

    Returns:
        The compact JSON text.

    Raises:
        TypeError: When the message has a field kind no key uses (repeated, map, float,
            bytes), since its Go rendering is not reproduced here.
    """
    return _encoder(descriptor_of(key))(key)


def labels_key(labels: Mapping[str, str]) -> str:
    """An Alert's key string: its labels as compact JSON, keys sorted, Go escaping.

    Args:
        labels: The `labels` map.

    Returns:
        E.g. `{"alertname":"AppInstDown","app":"x"}`; `{}` when empty.
    """
    items = (f"{go_quote(k)}:{go_quote(labels[k])}" for k in sorted(labels))
    return "{" + ",".join(items) + "}"


def parse_key_string(key_cls: type[K], text: str) -> K:
    """Parse a key string back into its key message, as Go `json.Unmarshal` would.

    Field names match exactly or ignoring case, unknown names are ignored, enums accept the
    original's names or numbers.

    Args:
        key_cls: The key message class.
        text: The key string.

    Returns:
        A new key message.

    Raises:
        InvalidArgument: When the text is not a JSON object of the key's fields.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidArgument(f"invalid {descriptor_of(key_cls).name} key string {text!r}") from err
    key = key_cls()
    _fill(key, data, descriptor_of(key_cls).name)
    return key


def set_key(obj: Message, key: ObjKey) -> None:
    """Set an object's identity, the inverse of `key_of`.

    Args:
        obj: An object of a registered type.
        key: A key message of the right type, or the key string for string-like keys
            (an Alert takes its labels JSON).

    Raises:
        TypeError: When the key's kind does not fit the object type.
        InvalidArgument: When an Alert key string is not a JSON object of strings.
    """
    objtype = registry.of(obj)
    match objtype.identity:
        case Identity.KEY | Identity.SELF:
            if isinstance(key, str):
                raise TypeError(f"{objtype.name} needs a key message, not a string")
            target: Message = obj if objtype.identity is Identity.SELF else _key_sub(obj, objtype)
            if descriptor_of(target).full_name != descriptor_of(key).full_name:
                want, got = descriptor_of(target).name, descriptor_of(key).name
                raise TypeError(f"{objtype.name} needs a {want}, not a {got}")
            target.CopyFrom(key)
        case Identity.STRING:
            if not isinstance(key, str):
                raise TypeError(f"{objtype.name} is keyed by a string")
            setattr(obj, _key_field(objtype), key)
        case Identity.SINGLETON:
            return
        case Identity.LABELS:
            if not isinstance(key, str):
                raise TypeError(f"{objtype.name} is keyed by its labels JSON")
            labels = getattr(obj, _key_field(objtype))
            labels.clear()
            labels.update(_parse_labels(key))


def object_from_key_string(objtype: ObjectType[M] | type[M], text: str) -> M:
    """A new object with only its identity set, from a key string.

    Watch deletes and notify deletes carry nothing but the key; this turns the key part of
    an etcd key back into an object the caches can remove.

    Args:
        objtype: The object type or its message class.
        text: The key string (`strip_store_prefix` of the etcd key).

    Returns:
        The object, all other fields empty.

    Raises:
        InvalidArgument: When the text does not parse as that type's key.
    """
    t = objtype if isinstance(objtype, ObjectType) else registry.by_class(objtype)
    obj = t.new()
    key_cls = t.key_message
    set_key(obj, parse_key_string(key_cls, text) if key_cls is not None else text)
    return obj


# --- etcd keys -----------------------------------------------------------------------------


class StoreKey(NamedTuple):
    """An etcd key split like the original's `DbKeyPrefixParse`."""

    region: str
    type_name: str
    key: str


def store_prefix(type_name: str) -> str:
    """`1/<Type>/`: the prefix under which all objects of a type live.

    Args:
        type_name: The etcd type segment (`Flavor`, `CloudletDnsLabel`, ...).

    Returns:
        The prefix, trailing slash included so `Cloudlet` does not match `CloudletInfo`.
    """
    return f"{REGION}/{type_name}/"


def store_key(type_name: str, key_str: str) -> str:
    """`1/<Type>/<key-string>` (controller.md §2.2).

    Args:
        type_name: The etcd type segment.
        key_str: The key string.

    Returns:
        The etcd key.
    """
    return f"{REGION}/{type_name}/{key_str}"


def object_store_key(obj: Message) -> str:
    """The etcd key of an object of a registered type.

    Args:
        obj: The object.

    Returns:
        E.g. `1/Flavor/{"name":"x1.small"}`, `1/Settings/settings`.
    """
    return store_key(registry.of(obj).name, key_string(obj))


def parse_store_key(etcd_key: str) -> StoreKey:
    """Split an etcd key into region, type and key string.

    A key with a single segment after the region (`1/VersionV2`) has that segment as its
    type and an empty key, as in the original.

    Args:
        etcd_key: The key as read from etcd.

    Returns:
        The parts.

    Raises:
        ValueError: When the key has no region prefix.
    """
    region, sep, rest = etcd_key.partition("/")
    if not sep:
        raise ValueError(f"No region prefix on db key {etcd_key!r}")
    type_name, _, key = rest.partition("/")
    return StoreKey(region, type_name, key)


def strip_store_prefix(etcd_key: str) -> str:
    """The key string of an etcd key: everything after `1/<Type>/` (`DbKeyPrefixRemove`).

    Args:
        etcd_key: The etcd key.

    Returns:
        The key string; it may itself contain slashes.
    """
    return parse_store_key(etcd_key).key


# --- validation ----------------------------------------------------------------------------


def valid_name(name: str) -> bool:
    """The original's `ValidName`: `^[0-9a-zA-Z][-_0-9a-zA-Z .&,!]*$`.

    Args:
        name: A name from user input.

    Returns:
        Whether it is allowed; the empty name is not.
    """
    return VALID_NAME_RE.fullmatch(name) is not None


def valid_cluster_name(name: str) -> bool:
    """The original's `ValidKubernetesName`, for cluster names: `^[0-9a-zA-Z][-0-9a-zA-Z.]*$`.

    Args:
        name: A cluster name.

    Returns:
        Whether it is allowed.
    """
    return CLUSTER_NAME_RE.fullmatch(name) is not None


def obj_name_error(name: str) -> str | None:
    """The original's `ValidObjName` check for policy organizations, LDAP rules included.

    Args:
        name: The organization name.

    Returns:
        The original's error text ("name cannot be empty", ...) or None when valid.
    """
    if _OBJ_NAME_RE.fullmatch(name) is None:
        return "name can only contain letters, digits, _ . -"
    if not name:
        return "name cannot be empty"
    if name[0] == " " or name[-1] == " ":
        return "name cannot have leading or trailing spaces"
    if _LDAP_NAME_RE.fullmatch(name) is None:
        return "name does not match LDAP required format"
    return None


def validate_key(obj_or_key: Message) -> None:
    """Check a key (or an object's key) the way the original's `ValidateKey` does.

    Args:
        obj_or_key: An object of a registered type or a key message. Keys without rules
            in the original (FedAppInstKey, TPEInstanceKey, deprecated keys) always pass.

    Raises:
        InvalidArgument: With the original's message, e.g. "Invalid flavor name",
            "Invalid cloudlet organization name <org>", "Invalid cluster name".
    """
    objtype = registry.find(descriptor_of(obj_or_key))
    if objtype is not None and objtype.identity is Identity.STRING:
        if objtype.name == "OperatorCode" and not key_string(obj_or_key):
            raise InvalidArgument("No code specified")
        return
    if objtype is not None and objtype.identity in (Identity.SINGLETON, Identity.LABELS):
        return
    key = key_of(obj_or_key)
    if isinstance(key, Message):
        _validate(key)


def _validate(key: Message) -> None:
    check = _VALIDATORS.get(descriptor_of(key).full_name)
    if check is not None:
        check(key)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidArgument(message)


def _v_names(*checks: tuple[str, str]) -> Callable[[Any], None]:
    """A validator that requires `ValidName` of each (field, message) in order."""

    def check(key: Any) -> None:
        for field, message in checks:
            _require(valid_name(getattr(key, field)), message)

    return check


def _v_cloudlet(key: cloudletkey_pb2.CloudletKey) -> None:
    _require(valid_name(key.organization), f"Invalid cloudlet organization name {key.organization}")
    _require(valid_name(key.name), "Invalid cloudlet name")


def _v_zone(key: cloudletkey_pb2.ZoneKey) -> None:
    _require(valid_name(key.organization), f"Invalid zone organization name {key.organization}")
    _require(valid_name(key.name), "Invalid zone name")


def _v_cluster(key: cluster_pb2.ClusterKey) -> None:
    _require(valid_cluster_name(key.name), "Invalid cluster name")
    _require(valid_name(key.organization), "Invalid cluster organization")


def _v_gpu_driver(key: cloudlet_pb2.GPUDriverKey) -> None:
    _require(not key.organization or valid_name(key.organization), "Invalid organization name")
    _require(bool(key.name), "Missing gpu driver name")
    _require(valid_name(key.name), "Invalid gpu driver name")


def _v_policy(key: Any) -> None:
    err = obj_name_error(key.organization)
    if err is not None:
        raise InvalidArgument(f"Invalid organization {err[0].lower()}{err[1:]}")
    _require(bool(key.name), "Policy name cannot be empty")


def _v_network(key: Any) -> None:
    _v_cloudlet(key.cloudlet_key)
    _require(valid_name(key.name), "Invalid network name")


def _v_cloudlet_node(key: cloudletnode_pb2.CloudletNodeKey) -> None:
    _require(bool(key.name), "Name must not be empty")
    _v_cloudlet(key.cloudlet_key)


def _v_svc_node(key: Any) -> None:
    _require(bool(key.name), "Invalid node name")
    _v_cloudlet(key.cloudlet_key)


def _v_tpe(key: Any) -> None:
    for field, label in (("app_key", "AppKey"), ("zone_pool_key", "ZonePoolKey")):
        try:
            _validate(getattr(key, field))
        except InvalidArgument as err:
            raise InvalidArgument(
                f"Invalid {label} in TrustPolicyExceptionKey: {err.message}"
            ) from None
    _require(bool(key.name), "TrustPolicyException name cannot be empty")


def _v_rate_limit(key: Any) -> None:
    _require(bool(key.api_name), "Invalid ApiName")
    _require(key.rate_limit_target != 0, "Invalid RateLimitTarget")
    _require(key.api_endpoint_type != 0, "Invalid ApiEndpointType")


def _v_flow(key: Any) -> None:
    _require(bool(key.flow_settings_name), "Invalid FlowSettingsName")
    _v_rate_limit(key.rate_limit_key)


def _v_max_reqs(key: Any) -> None:
    _require(bool(key.max_reqs_settings_name), "Invalid MaxReqsSettingsName")
    _v_rate_limit(key.rate_limit_key)


def _v_device(key: Any) -> None:
    _require(bool(key.unique_id) and bool(key.unique_id_type), "Device id cannot be empty")


def _v_load_balancer(key: Any) -> None:
    _require(bool(key.name), "no load balancer name")
    _require(bool(key.namespace), "no load balancer namespace")


def _v_app_inst_client(key: appinstclient_pb2.AppInstClientKey) -> None:
    empty = appinst_pb2.AppInstKey()
    if key.app_inst_key == empty and not key.unique_id and not key.unique_id_type:
        raise InvalidArgument(
            f"At least one of the key fields must be non-empty {_go_compact_text(key)}"
        )


_VALIDATORS: Final[dict[str, Callable[[Any], None]]] = {
    "edgeproto.CloudletKey": _v_cloudlet,
    "edgeproto.ZoneKey": _v_zone,
    "edgeproto.ClusterKey": _v_cluster,
    "edgeproto.FlavorKey": _v_names(("name", "Invalid flavor name")),
    "edgeproto.AppKey": _v_names(
        ("name", "Invalid app name"),
        ("version", "Invalid app version"),
        ("organization", "Invalid app organization"),
    ),
    "edgeproto.AppInstKey": _v_names(
        ("name", "Invalid app instance name"),
        ("organization", "Invalid app instance organization"),
    ),
    "edgeproto.GPUDriverKey": _v_gpu_driver,
    "edgeproto.BareMetalHostKey": _v_names(
        ("organization", "invalid organization"),
        ("name", "invalid bare metal host name"),
        ("cloudlet", "invalid cloudlet name"),
    ),
    "edgeproto.ZonePoolKey": _v_names(
        ("organization", "Invalid zone pool organization"),
        ("name", "Invalid zone pool name"),
    ),
    "edgeproto.VMPoolKey": _v_names(
        ("organization", "Invalid organization name"),
        ("name", "Invalid VM pool name"),
    ),
    "edgeproto.ResTagTableKey": _v_names(("name", "Invalid ResTagTable name")),
    "edgeproto.AlertPolicyKey": _v_names(
        ("name", "Invalid alert policy name"),
        ("organization", "Invalid alert policy organization"),
    ),
    "edgeproto.PolicyKey": _v_policy,
    "edgeproto.NetworkKey": _v_network,
    "edgeproto.CloudletNodeKey": _v_cloudlet_node,
    "edgeproto.SvcNodeKey": _v_svc_node,
    "edgeproto.ControllerKey": lambda key: _require(bool(key.addr), "Invalid address"),
    "edgeproto.DeviceKey": _v_device,
    "edgeproto.LoadBalancerKey": _v_load_balancer,
    "edgeproto.TrustPolicyExceptionKey": _v_tpe,
    "edgeproto.RateLimitSettingsKey": _v_rate_limit,
    "edgeproto.FlowRateLimitSettingsKey": _v_flow,
    "edgeproto.MaxReqsRateLimitSettingsKey": _v_max_reqs,
    "edgeproto.AppInstClientKey": _v_app_inst_client,
}


# --- standard errors -----------------------------------------------------------------------


def key_type_word(obj_or_key: Message) -> str:
    """The type word of the original's key errors: the key message name without `Key`.

    Args:
        obj_or_key: An object or a key message.

    Returns:
        `Cluster` for a ClusterInst or ClusterKey, `Policy` for any policy, `TPEInstance`
        for a TPEInstanceState, the type name for string-keyed types (`PlatformFeatures`).
    """
    objtype = registry.find(descriptor_of(obj_or_key))
    if objtype is not None and objtype.key_message is None:
        return objtype.name
    key = key_of(obj_or_key)
    name = descriptor_of(key).name if isinstance(key, Message) else descriptor_of(obj_or_key).name
    return name.removesuffix("Key")


def not_found(obj_or_key: Message) -> NotFound:
    """`<Type> key <key-string> not found`, e.g. `Flavor key {"name":"x"} not found`.

    Args:
        obj_or_key: The object or key that was looked up.

    Returns:
        The exception, for the caller to raise.
    """
    return NotFound(f"{key_type_word(obj_or_key)} key {key_string(obj_or_key)} not found")


def already_exists(obj_or_key: Message) -> AlreadyExists:
    """`<Type> key <key-string> already exists`.

    Args:
        obj_or_key: The object or key being created.

    Returns:
        The exception, for the caller to raise.
    """
    return AlreadyExists(f"{key_type_word(obj_or_key)} key {key_string(obj_or_key)} already exists")


def being_deleted(obj_or_key: Message) -> FailedPrecondition:
    """`<Type> <key-string> is being deleted` (string-keyed types say `<Type> key <key>`).

    Args:
        obj_or_key: The object whose `delete_prepare` is set.

    Returns:
        The exception, for the caller to raise.
    """
    objtype = registry.find(descriptor_of(obj_or_key))
    word = key_type_word(obj_or_key)
    if objtype is not None and objtype.key_message is None:
        word += " key"
    return FailedPrecondition(f"{word} {key_string(obj_or_key)} is being deleted")


# --- internals -----------------------------------------------------------------------------


def _key_field(objtype: ObjectType[Any]) -> str:
    if objtype.key_field is None:
        raise TypeError(f"{objtype.name} has no key field")
    return objtype.key_field


def _key_sub(obj: Message, objtype: ObjectType[Any]) -> Message:
    sub: Message = getattr(obj, _key_field(objtype))
    return sub


def _go_fields(desc: Descriptor) -> tuple[FieldDescriptor, ...]:
    order = _GO_FIELD_ORDER.get(desc.full_name)
    if order is None:
        return tuple(desc.fields)
    return tuple(desc.fields_by_name[name] for name in order)


@functools.cache
def _encoder(desc: Descriptor) -> Callable[[Message], str]:
    """Compile the Go JSON encoder of one key message type (keys are encoded very often)."""
    steps: list[tuple[str, str, Any]] = []
    for field in _go_fields(desc):
        where = f"{desc.full_name}.{field.name}"
        if field.is_repeated:
            raise TypeError(f"{where}: repeated fields cannot be part of a key")
        head = f'"{field.name}":'
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            steps.append(("msg", head, _encoder(field.message_type)))
        elif field.type == FieldDescriptor.TYPE_STRING:
            steps.append(("str", head, None))
        elif field.type == FieldDescriptor.TYPE_BOOL:
            steps.append(("bool", head, None))
        elif field.type in _INT_TYPES:
            steps.append(("int", head, None))
        elif field.type == FieldDescriptor.TYPE_ENUM:
            steps.append(("enum", head, field.enum_type))
        else:
            raise TypeError(f"{where}: this field type cannot be part of a key")
    names = [f.name for f in _go_fields(desc)]

    def encode(msg: Message) -> str:
        parts: list[str] = []
        for (kind, head, extra), name in zip(steps, names, strict=True):
            value = getattr(msg, name)
            if kind == "msg":
                parts.append(head + extra(value))
            elif not value:
                continue
            elif kind == "str":
                parts.append(head + go_quote(value))
            elif kind == "bool":
                parts.append(head + "true")
            elif kind == "int":
                parts.append(head + str(value))
            else:
                parts.append(head + go_quote(enum_json_name(extra, value)))
        return "{" + ",".join(parts) + "}"

    return encode


def _fill(msg: Message, data: object, where: str) -> None:
    """Set a key message from decoded JSON the way Go's `json.Unmarshal` fills a struct."""
    if data is None:
        return
    if not isinstance(data, dict):
        raise InvalidArgument(f"invalid {where} key: expected a JSON object")
    by_lower = {f.name.lower(): f for f in descriptor_of(msg).fields}
    for name, value in data.items():
        field = descriptor_of(msg).fields_by_name.get(name) or by_lower.get(name.lower())
        if field is None or value is None:
            continue
        here = f"{where}.{field.name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            sub = getattr(msg, field.name)
            _fill(sub, value, here)
            sub.SetInParent()  # Go writes nested keys always; keep them present, as written
        elif field.enum_type is not None:
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise InvalidArgument(f"invalid {here}: {value!r}")
            try:
                setattr(msg, field.name, enum_from_go(field.enum_type, value))
            except ValueError as err:
                raise InvalidArgument(str(err)) from None
        elif _json_type_fits(field, value):
            setattr(msg, field.name, value)
        else:
            raise InvalidArgument(f"invalid {here}: {value!r}")


def _json_type_fits(field: FieldDescriptor, value: object) -> bool:
    if field.type == FieldDescriptor.TYPE_STRING:
        return isinstance(value, str)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return isinstance(value, bool)
    return field.type in _INT_TYPES and isinstance(value, int) and not isinstance(value, bool)


def _parse_labels(text: str) -> dict[str, str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidArgument(f"invalid Alert key string {text!r}") from err
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InvalidArgument(f"invalid Alert key string {text!r}")
    return data


def _go_compact_text(msg: Message) -> str:
    """golang/protobuf `CompactTextString` of a key: what Go's `%v` prints for it."""
    parts: list[str] = []
    for field in _go_fields(descriptor_of(msg)):
        value = getattr(msg, field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            parts.append(f"{field.name}:<{_go_compact_text(value)}> ")
        elif value:
            text = _go_text_quote(value) if isinstance(value, str) else str(value).lower()
            parts.append(f"{field.name}:{text} ")
    return "".join(parts)


def _go_text_quote(value: str) -> str:
    out = ['"']
    for b in value.encode("utf-8", "surrogatepass"):
        c = chr(b)
        if c in '\n\r\t"\\':
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", '"': '\\"', "\\": "\\\\"}[c])
        elif 0x20 <= b < 0x7F:
            out.append(c)
        else:
            out.append(f"\\{b:03o}")
    out.append('"')
    return "".join(out)
