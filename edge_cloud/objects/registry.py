"""Every stored or replicated object type, with how it is identified and how it travels.

The Controller's etcd layer, the notify protocol, the CRM and the DME all need the same facts
about an object type: its etcd type name (`1/<Type>/...`), where its identity lives (a `key`
sub-message, one string field, a singleton, a label map), and the notify flags of
objects.md §1 (Kind S, C, M, F). The original generated them per type from protogen options
that our proto copies no longer carry, so they are written down here, once, and tested
against the descriptors.

Look types up with `by_name("Flavor")`, `by_full_name("edgeproto.Flavor")` (what notify's
`want_objs` and `Any` type URLs carry), `by_class(flavor_pb2.Flavor)` or `of(obj)`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeAlias, TypeVar, cast

from edgeproto import (
    alert_pb2,
    alertpolicy_pb2,
    app_pb2,
    appinst_pb2,
    appinstclient_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    baremetalhost_pb2,
    cloudlet_pb2,
    cloudletnode_pb2,
    clusterinst_pb2,
    controller_pb2,
    device_pb2,
    flavor_pb2,
    network_pb2,
    operatorcode_pb2,
    ratelimit_pb2,
    refs_pb2,
    restagtable_pb2,
    settings_pb2,
    svcnode_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
    vmpool_pb2,
    zone_pb2,
    zonepool_pb2,
)
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

if TYPE_CHECKING:
    from google._upb._message import Descriptor as _UpbDescriptor

    AnyDescriptor: TypeAlias = Descriptor | _UpbDescriptor
else:
    AnyDescriptor = Descriptor
"""What `Message.DESCRIPTOR` is typed as: the Python or the upb class (same API)."""

__all__ = [
    "ALL_TYPES",
    "KEY_MESSAGES",
    "PACKAGE",
    "SETTINGS_KEY",
    "AnyDescriptor",
    "Identity",
    "ObjectType",
    "by_class",
    "by_full_name",
    "by_name",
    "cached_types",
    "descriptor_of",
    "find",
    "is_key_message",
    "of",
    "stored_types",
]

M = TypeVar("M", bound=Message)

PACKAGE: Final = "edgeproto"
SETTINGS_KEY: Final = "settings"
"""The fixed key string of the one `Settings` object (`1/Settings/settings`)."""

_KEY_NAMES: Final = (
    "AlertPolicyKey",
    "AppInstClientKey",
    "AppInstKey",
    "AppInstKeyV1",
    "AppInstKeyV2",
    "AppKey",
    "BareMetalHostKey",
    "CloudletKey",
    "CloudletManagedClusterKey",
    "CloudletNodeKey",
    "ClusterInstKeyV1",
    "ClusterInstKeyV2",
    "ClusterKey",
    "ClusterKeyV1",
    "ControllerKey",
    "DeviceKey",
    "FedAppInstKey",
    "FlavorKey",
    "FlowRateLimitSettingsKey",
    "GPUDriverKey",
    "LoadBalancerKey",
    "MaxReqsRateLimitSettingsKey",
    "NetworkKey",
    "PolicyKey",
    "RateLimitSettingsKey",
    "ResTagTableKey",
    "SvcNodeKey",
    "TPEInstanceKey",
    "TrustPolicyExceptionKey",
    "VMPoolKey",
    "VirtualClusterInstKeyV1",
    "ZoneKey",
    "ZonePoolKey",
)
KEY_MESSAGES: Final[frozenset[str]] = frozenset(f"{PACKAGE}.{name}" for name in _KEY_NAMES)
"""Full names of the key messages (Kind K of objects.md): they render as Go JSON key strings."""


def descriptor_of(message: Message | type[Message] | AnyDescriptor) -> Descriptor:
    """A message's descriptor, typed as the Python API.

    The stubs type `DESCRIPTOR` as either the pure-Python or the upb class; both offer the
    same API, and everything here is written against the Python one.

    Args:
        message: A message, a message class, or a descriptor (returned as is).

    Returns:
        Its descriptor.
    """
    if isinstance(message, Message) or (isinstance(message, type) and issubclass(message, Message)):
        return cast("Descriptor", message.DESCRIPTOR)
    return cast("Descriptor", message)


class Identity(enum.Enum):
    """Where an object type keeps its identity, which decides its key string."""

    KEY = "key"
    """A key sub-message field (`key`, or `client_key` for AppInstClient): Go JSON of it."""
    STRING = "string"
    """One string field is the key (`OperatorCode.code`, `PlatformFeatures.platform_type`)."""
    SINGLETON = "singleton"
    """Only one object exists, under `SETTINGS_KEY`."""
    LABELS = "labels"
    """Alert: the `labels` map as compact JSON with sorted keys."""
    SELF = "self"
    """The message is its own key (`AppInstClientKey`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectType(Generic[M]):
    """One object type: its message, identity and notify behaviour.

    Attributes:
        name: The proto message name, also the etcd type segment (`1/<name>/...`).
        message: The generated message class.
        identity: Where the key lives.
        key_field: The field holding the key for KEY, STRING and LABELS identities.
        stored: Kind S: persisted in etcd by the Controller.
        cached: Kind C: replicated over notify as cached state.
        filter_cloudlet: Kind F: notify sends are filtered by cloudlet key for CRM peers.
        notify_message: Kind M: also sent over notify as a one-off, uncached message.
        notify_flush: The notify server drops a peer's objects of this type when it leaves.
        custom_update: The original hooks notify sends of this type (cloudlet filtering
            and the like need per-type logic, objects.md §4.1).
        parent: For Info objects, the type whose remote state they report.
    """

    name: str
    message: type[M]
    identity: Identity
    key_field: str | None = None
    stored: bool = False
    cached: bool = False
    filter_cloudlet: bool = False
    notify_message: bool = False
    notify_flush: bool = False
    custom_update: bool = False
    parent: str | None = None

    @property
    def descriptor(self) -> Descriptor:
        """The message descriptor."""
        return descriptor_of(self.message)

    @property
    def full_name(self) -> str:
        """`edgeproto.<name>`: what notify's `want_objs` lists."""
        return self.descriptor.full_name

    @property
    def type_url(self) -> str:
        """The `Any` type URL notify packs this type under."""
        return f"type.googleapis.com/{self.full_name}"

    @property
    def store_prefix(self) -> str:
        """`1/<name>/`: the etcd prefix of all objects of this type."""
        return f"1/{self.name}/"

    @property
    def key_field_descriptor(self) -> FieldDescriptor | None:
        """The field holding the identity, None for singletons and self-keyed types."""
        if self.key_field is None:
            return None
        return self.descriptor.fields_by_name[self.key_field]

    @property
    def key_message(self) -> type[Message] | None:
        """The key message class for KEY and SELF identities, None for string-like keys."""
        if self.identity is Identity.SELF:
            return self.message
        if self.identity is Identity.KEY:
            field = self.key_field_descriptor
            if field is None or field.message_type is None:
                raise TypeError(f"{self.name}.{self.key_field} is not a key message field")
            return message_factory.GetMessageClass(field.message_type)
        return None

    @property
    def has_fields(self) -> bool:
        """Whether the message carries the `fields` update mask (objects.md §1.6)."""
        fields = self.descriptor.fields
        return bool(fields) and fields[0].name == "fields"

    def new(self) -> M:
        """An empty message of this type."""
        return self.message()


def _t(
    name: str,
    message: type[M],
    identity: Identity = Identity.KEY,
    key_field: str | None = "key",
    *,
    flags: str = "S C",
    parent: str | None = None,
) -> ObjectType[M]:
    """Build one table row; `flags` spells the objects.md kinds plus `flush` and `custom`."""
    words = set(flags.split())
    unknown = words - {"S", "C", "F", "M", "flush", "custom"}
    if unknown:
        raise ValueError(f"unknown flags {sorted(unknown)} for {name}")
    if identity in (Identity.SINGLETON, Identity.SELF):
        key_field = None
    return ObjectType(
        name=name,
        message=message,
        identity=identity,
        key_field=key_field,
        stored="S" in words,
        cached="C" in words,
        filter_cloudlet="F" in words,
        notify_message="M" in words,
        notify_flush="flush" in words,
        custom_update="custom" in words,
        parent=parent,
    )


_STRING = Identity.STRING

ALL_TYPES: Final[tuple[ObjectType[Any], ...]] = (
    _t("Flavor", flavor_pb2.Flavor),
    _t("OperatorCode", operatorcode_pb2.OperatorCode, _STRING, "code"),
    _t("Settings", settings_pb2.Settings, Identity.SINGLETON),
    _t("Cloudlet", cloudlet_pb2.Cloudlet, flags="S C custom"),
    _t("CloudletInfo", cloudlet_pb2.CloudletInfo, flags="S C flush", parent="Cloudlet"),
    _t("CloudletInternal", cloudlet_pb2.CloudletInternal),
    _t("Zone", zone_pb2.Zone),
    _t("ZonePool", zonepool_pb2.ZonePool),
    _t("ClusterInst", clusterinst_pb2.ClusterInst, flags="S C F custom"),
    _t("ClusterInstInfo", clusterinst_pb2.ClusterInstInfo, flags="S C flush", parent="ClusterInst"),
    _t("App", app_pb2.App, flags="S C custom"),
    _t("AppInst", appinst_pb2.AppInst, flags="S C F custom"),
    _t("AppInstInfo", appinst_pb2.AppInstInfo, flags="S C flush", parent="AppInst"),
    _t("ResTagTable", restagtable_pb2.ResTagTable, flags="S C M"),
    _t("AutoProvPolicy", autoprovpolicy_pb2.AutoProvPolicy),
    _t("AutoProvInfo", autoprovpolicy_pb2.AutoProvInfo, flags="S C flush"),
    _t("AutoScalePolicy", autoscalepolicy_pb2.AutoScalePolicy),
    _t("TrustPolicy", trustpolicy_pb2.TrustPolicy),
    _t(
        "TrustPolicyException",
        trustpolicyexception_pb2.TrustPolicyException,
        flags="S C F custom",
    ),
    _t("TPEInstanceState", trustpolicyexception_pb2.TPEInstanceState, flags="S C F custom"),
    _t("AlertPolicy", alertpolicy_pb2.AlertPolicy),
    _t("VMPool", vmpool_pb2.VMPool, flags="S C F custom"),
    _t("VMPoolInfo", vmpool_pb2.VMPoolInfo, flags="S C flush", parent="VMPool"),
    _t("Network", network_pb2.Network),
    _t("PlatformFeatures", cloudlet_pb2.PlatformFeatures, _STRING, "platform_type"),
    _t("GPUDriver", cloudlet_pb2.GPUDriver, flags="S C F custom"),
    _t("CloudletRefs", refs_pb2.CloudletRefs, flags="S"),
    _t("ClusterRefs", refs_pb2.ClusterRefs),
    _t("AppInstRefs", refs_pb2.AppInstRefs),
    _t("CloudletIPs", refs_pb2.CloudletIPs),
    _t("LoadBalancer", refs_pb2.LoadBalancer),
    _t("FlowRateLimitSettings", ratelimit_pb2.FlowRateLimitSettings),
    _t("MaxReqsRateLimitSettings", ratelimit_pb2.MaxReqsRateLimitSettings),
    _t("RateLimitSettings", ratelimit_pb2.RateLimitSettings, flags="S"),
    _t("Alert", alert_pb2.Alert, Identity.LABELS, "labels", flags="S C flush"),
    _t("Controller", controller_pb2.Controller, flags="S"),
    _t("CloudletNode", cloudletnode_pb2.CloudletNode, flags="S C F"),
    _t("SvcNode", svcnode_pb2.SvcNode, flags="S C flush"),
    _t("Device", device_pb2.Device, flags="S C flush"),
    _t("DeviceReport", device_pb2.DeviceReport, flags="S"),
    _t("AppInstClientKey", appinstclient_pb2.AppInstClientKey, Identity.SELF, flags="S C M"),
    _t("AppInstClient", appinstclient_pb2.AppInstClient, key_field="client_key", flags="M"),
    _t("FedAppInst", appinst_pb2.FedAppInst, flags="S"),
    _t("BareMetalHost", baremetalhost_pb2.BareMetalHost, flags="S"),
    # Keyed and shown, but never stored: the CCRM lists these from the infrastructure.
    _t("CloudletManagedCluster", cloudlet_pb2.CloudletManagedCluster, flags=""),
)
"""Every object type with an identity, in objects.md order."""

_BY_NAME: Final[dict[str, ObjectType[Any]]] = {t.name: t for t in ALL_TYPES}
_BY_FULL_NAME: Final[dict[str, ObjectType[Any]]] = {t.full_name: t for t in ALL_TYPES}


def by_name(name: str) -> ObjectType[Message]:
    """Look a type up by its message (and etcd type) name.

    Args:
        name: `Flavor`, `CloudletInfo`, ...

    Returns:
        The type.

    Raises:
        KeyError: For names that are not object types.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a stored or replicated object type") from None


def by_full_name(full_name: str) -> ObjectType[Message]:
    """Look a type up by its full proto name, as notify's `want_objs` and `Any` URLs carry it.

    Args:
        full_name: `edgeproto.Flavor`; a `type.googleapis.com/` prefix is accepted too.

    Returns:
        The type.

    Raises:
        KeyError: For names that are not object types.
    """
    name = full_name.rpartition("/")[2]
    try:
        return _BY_FULL_NAME[name]
    except KeyError:
        raise KeyError(f"{full_name!r} is not a stored or replicated object type") from None


def by_class(cls: type[M]) -> ObjectType[M]:
    """Look a type up by its generated message class.

    Args:
        cls: `flavor_pb2.Flavor`, ...

    Returns:
        The type, typed after the class.

    Raises:
        KeyError: For messages that are not object types.
    """
    return cast("ObjectType[M]", by_full_name(descriptor_of(cls).full_name))


def of(obj: M) -> ObjectType[M]:
    """The type of a message instance.

    Args:
        obj: An object message.

    Returns:
        Its type.

    Raises:
        KeyError: For messages that are not object types.
    """
    return cast("ObjectType[M]", by_full_name(descriptor_of(obj).full_name))


def find(descriptor: AnyDescriptor) -> ObjectType[Message] | None:
    """The type of a descriptor, or None when the message is not an object type.

    Args:
        descriptor: Any message descriptor.

    Returns:
        The type or None.
    """
    return _BY_FULL_NAME.get(descriptor.full_name)


def is_key_message(descriptor: AnyDescriptor) -> bool:
    """Whether a message is a key (Kind K): it renders as a Go JSON key string.

    Args:
        descriptor: Any message descriptor.

    Returns:
        True for the 33 key messages of objects.md.
    """
    return descriptor.full_name in KEY_MESSAGES


def stored_types() -> Iterator[ObjectType[Any]]:
    """The types the Controller persists in etcd (Kind S)."""
    return (t for t in ALL_TYPES if t.stored)


def cached_types() -> Iterator[ObjectType[Any]]:
    """The types replicated over notify as cached state (Kind C)."""
    return (t for t in ALL_TYPES if t.cached)
