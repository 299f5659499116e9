import pytest
from edgeproto import (
    alert_pb2,
    appinstclient_pb2,
    cloudlet_pb2,
    flavor_pb2,
    operatorcode_pb2,
    settings_pb2,
    trustpolicyexception_pb2,
)

from edge_cloud.objects import registry
from edge_cloud.objects.registry import ALL_TYPES, KEY_MESSAGES, Identity
from tests.unit.edge_cloud.objects.protos import find_message

# objects.md §4.1, "cached / replicated (37)".
NOTIFY_CACHED = {
    "Alert",
    "AlertPolicy",
    "Settings",
    "Flavor",
    "OperatorCode",
    "ResTagTable",
    "AutoScalePolicy",
    "TrustPolicy",
    "App",
    "AppInst",
    "AppInstInfo",
    "CloudletInternal",
    "PlatformFeatures",
    "GPUDriver",
    "Cloudlet",
    "CloudletInfo",
    "Zone",
    "ZonePool",
    "VMPool",
    "VMPoolInfo",
    "AutoProvPolicy",
    "AutoProvInfo",
    "TrustPolicyException",
    "TPEInstanceState",
    "Network",
    "ClusterInst",
    "ClusterInstInfo",
    "ClusterRefs",
    "AppInstRefs",
    "CloudletIPs",
    "LoadBalancer",
    "FlowRateLimitSettings",
    "MaxReqsRateLimitSettings",
    "AppInstClientKey",
    "CloudletNode",
    "SvcNode",
    "Device",
}
# objects.md §4.1, "filtered by cloudlet key when the peer asks".
FILTERED = {
    "AppInst",
    "GPUDriver",
    "VMPool",
    "TrustPolicyException",
    "TPEInstanceState",
    "ClusterInst",
    "CloudletNode",
}
# controller.md §2.2 and objects.md: every type the original keeps under 1/<Type>/.
STORED = NOTIFY_CACHED | {
    "CloudletRefs",
    "RateLimitSettings",
    "Controller",
    "DeviceReport",
    "FedAppInst",
    "BareMetalHost",
}


def test_cached_types_are_the_37_of_the_notify_table() -> None:
    assert {t.name for t in registry.cached_types()} == NOTIFY_CACHED
    assert len(NOTIFY_CACHED) == 37


def test_stored_types_are_everything_kept_in_etcd() -> None:
    assert {t.name for t in registry.stored_types()} == STORED


def test_cloudlet_filtered_types() -> None:
    assert {t.name for t in ALL_TYPES if t.filter_cloudlet} == FILTERED


def test_every_name_is_the_message_name_and_unique() -> None:
    names = [t.name for t in ALL_TYPES]
    assert len(names) == len(set(names))
    for t in ALL_TYPES:
        assert t.descriptor.name == t.name
        assert t.full_name == f"edgeproto.{t.name}"


def test_identity_fields_exist_with_the_right_kind() -> None:
    for t in ALL_TYPES:
        field = t.key_field_descriptor
        if t.identity is Identity.KEY:
            assert field is not None, t.name
            assert field.message_type is not None, t.name
            assert field.message_type.full_name in KEY_MESSAGES, t.name
            assert t.key_message is not None
            assert t.key_message.DESCRIPTOR.full_name == field.message_type.full_name
        elif t.identity is Identity.STRING:
            assert field is not None, t.name
            assert field.message_type is None, t.name
            assert t.key_message is None
        elif t.identity is Identity.SELF:
            assert t.key_message is t.message
            assert t.full_name in KEY_MESSAGES


def test_identities_from_objects_md_1_5() -> None:
    assert registry.by_name("OperatorCode").key_field == "code"
    assert registry.by_name("PlatformFeatures").key_field == "platform_type"
    assert registry.by_name("Settings").identity is Identity.SINGLETON
    assert registry.by_name("Alert").identity is Identity.LABELS
    assert registry.by_name("AppInstClientKey").identity is Identity.SELF
    assert registry.by_name("AppInstClient").key_field == "client_key"
    tpe = registry.by_name("TPEInstanceState")
    assert tpe.key_field_descriptor is not None
    assert tpe.key_field_descriptor.number == 1
    flavor_key = registry.by_name("Flavor").key_field_descriptor
    assert flavor_key is not None
    assert flavor_key.number == 2


def test_key_messages_all_exist() -> None:
    assert len(KEY_MESSAGES) == 33
    for full_name in KEY_MESSAGES:
        assert find_message(full_name).full_name == full_name


def test_lookups_agree() -> None:
    flavor = registry.by_name("Flavor")
    assert registry.by_full_name("edgeproto.Flavor") is flavor
    assert registry.by_full_name("type.googleapis.com/edgeproto.Flavor") is flavor
    assert registry.by_class(flavor_pb2.Flavor) is flavor
    assert registry.of(flavor_pb2.Flavor()) is flavor
    assert registry.find(flavor_pb2.Flavor.DESCRIPTOR) is flavor
    assert registry.find(flavor_pb2.FlavorKey.DESCRIPTOR) is None
    assert flavor.type_url == "type.googleapis.com/edgeproto.Flavor"
    assert flavor.store_prefix == "1/Flavor/"
    assert isinstance(flavor.new(), flavor_pb2.Flavor)


@pytest.mark.parametrize("name", ["FlavorKey", "Notice", "", "edgeproto.Flavor"])
def test_unknown_names_raise_key_error(name: str) -> None:
    with pytest.raises(KeyError, match="not a stored or replicated object type"):
        registry.by_name(name)


def test_unknown_classes_raise_key_error() -> None:
    with pytest.raises(KeyError):
        registry.by_class(flavor_pb2.FlavorKey)


def test_flags_of_some_types() -> None:
    info = registry.by_name("CloudletInfo")
    assert (info.parent, info.notify_flush, info.stored, info.cached) == (
        "Cloudlet",
        True,
        True,
        True,
    )
    res_tag = registry.by_name("ResTagTable")
    assert (res_tag.notify_message, res_tag.cached) == (True, True)
    client = registry.by_class(appinstclient_pb2.AppInstClient)
    assert (client.notify_message, client.stored, client.cached) == (True, False, False)
    managed = registry.by_class(cloudlet_pb2.CloudletManagedCluster)
    assert (managed.stored, managed.cached) == (False, False)


def test_has_fields_follows_the_descriptor() -> None:
    assert registry.by_class(flavor_pb2.Flavor).has_fields
    assert registry.by_class(settings_pb2.Settings).has_fields
    assert not registry.by_class(operatorcode_pb2.OperatorCode).has_fields
    assert not registry.by_class(alert_pb2.Alert).has_fields
    assert not registry.by_class(trustpolicyexception_pb2.TPEInstanceState).has_fields
