from typing import Any

import pytest
from edgeproto import (
    alert_pb2,
    app_pb2,
    appinst_pb2,
    appinstclient_pb2,
    autoscalepolicy_pb2,
    baremetalhost_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cloudletnode_pb2,
    cluster_pb2,
    clusterinst_pb2,
    controller_pb2,
    device_pb2,
    flavor_pb2,
    network_pb2,
    operatorcode_pb2,
    ratelimit_pb2,
    refs_pb2,
    settings_pb2,
    svcnode_pb2,
    trustpolicyexception_pb2,
    zonepool_pb2,
)
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import given
from hypothesis import strategies as st

from edge_cloud.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from edge_cloud.objects import keys, registry
from edge_cloud.objects.fields import diff_fields
from edge_cloud.objects.keys import (
    StoreKey,
    already_exists,
    being_deleted,
    key_json,
    key_of,
    key_string,
    labels_key,
    not_found,
    object_from_key_string,
    object_store_key,
    parse_key_string,
    parse_store_key,
    set_key,
    store_key,
    store_prefix,
    strip_store_prefix,
    valid_cluster_name,
    valid_name,
    validate_key,
)
from tests.unit.edge_cloud.objects.protos import find_message
from tests.unit.edge_cloud.objects.strategies import messages

CLOUDLET = cloudletkey_pb2.CloudletKey(organization="oper1", name="cloudlet1")
CLUSTER = cluster_pb2.ClusterKey(name="c1", organization="dev")
APP = app_pb2.AppKey(organization="dev", name="app", version="1.0")
KEY_CLASSES: list[type[Message]] = [
    GetMessageClass(find_message(name)) for name in sorted(registry.KEY_MESSAGES)
]


# --- key strings: controller.md §2.2 and objects.md §1.5 examples ---------------------------


@pytest.mark.parametrize(
    ("key", "text"),
    [
        (CLOUDLET, '{"organization":"oper1","name":"cloudlet1"}'),
        (
            cloudletkey_pb2.CloudletKey(organization="o", name="c"),
            '{"organization":"o","name":"c"}',
        ),
        (CLUSTER, '{"name":"c1","organization":"dev"}'),
        (
            appinst_pb2.AppInstKey(name="c1", organization="dev"),
            '{"name":"c1","organization":"dev"}',
        ),
        (APP, '{"organization":"dev","name":"app","version":"1.0"}'),
        (flavor_pb2.FlavorKey(name="x1.small"), '{"name":"x1.small"}'),
        (
            autoscalepolicy_pb2.PolicyKey(organization="dev", name="p"),
            '{"organization":"dev","name":"p"}',
        ),
        (
            network_pb2.NetworkKey(cloudlet_key=CLOUDLET, name="net"),
            '{"cloudlet_key":{"organization":"oper1","name":"cloudlet1"},"name":"net"}',
        ),
        (network_pb2.NetworkKey(name="net"), '{"cloudlet_key":{},"name":"net"}'),
        (
            trustpolicyexception_pb2.TrustPolicyExceptionKey(
                app_key=APP,
                zone_pool_key=zonepool_pb2.ZonePoolKey(organization="op", name="zp"),
                name="t",
            ),
            '{"app_key":{"organization":"dev","name":"app","version":"1.0"},'
            '"zone_pool_key":{"organization":"op","name":"zp"},"name":"t"}',
        ),
        (controller_pb2.ControllerKey(addr="10.0.0.1:55001"), '{"addr":"10.0.0.1:55001"}'),
        (cloudletkey_pb2.CloudletKey(), "{}"),
        (
            cloudletkey_pb2.CloudletKey(organization="o", name="c", federated_organization="f"),
            '{"organization":"o","name":"c","federated_organization":"f"}',
        ),
    ],
)
def test_key_string_is_gos_json(key: Message, text: str) -> None:
    assert key_string(key) == text
    assert key_json(key) == text


def test_svc_node_key_uses_the_originals_declaration_order() -> None:
    # The original declares name, type, cloudlet_key, region (numbers 1, 4, 3, 5).
    key = svcnode_pb2.SvcNodeKey(name="crm1", type="crm", cloudlet_key=CLOUDLET, region="US")
    assert key_string(key) == (
        '{"name":"crm1","type":"crm","cloudlet_key":{"organization":"oper1","name":"cloudlet1"},'
        '"region":"US"}'
    )


def test_enum_fields_of_keys_use_the_originals_camel_names() -> None:
    key = ratelimit_pb2.FlowRateLimitSettingsKey(
        flow_settings_name="dmeglobalallreqs",
        rate_limit_key=ratelimit_pb2.RateLimitSettingsKey(
            api_name="Global",
            api_endpoint_type=ratelimit_pb2.DME,
            rate_limit_target=ratelimit_pb2.ALL_REQUESTS,
        ),
    )
    assert key_string(key) == (
        '{"flow_settings_name":"dmeglobalallreqs","rate_limit_key":{"api_name":"Global",'
        '"api_endpoint_type":"Dme","rate_limit_target":"AllRequests"}}'
    )
    assert key_string(ratelimit_pb2.RateLimitSettingsKey()) == "{}"


def test_key_strings_escape_like_go() -> None:
    key = flavor_pb2.FlavorKey(name='a<b>&"c"\n\u2028')
    assert key_string(key) == '{"name":"a\\u003cb\\u003e\\u0026\\"c\\"\\n\\u2028"}'


def test_nested_empty_keys_are_always_present() -> None:
    assert key_string(trustpolicyexception_pb2.TPEInstanceKey()) == (
        '{"tpe_key":{"app_key":{},"zone_pool_key":{}},"app_inst_key":{},"cluster_key":{},'
        '"cloudlet_key":{}}'
    )
    assert key_string(appinstclient_pb2.AppInstClientKey(unique_id="u")) == (
        '{"app_inst_key":{},"unique_id":"u","app_key":{}}'
    )


def test_every_key_message_has_a_key_string() -> None:
    for cls in KEY_CLASSES:
        text = key_json(cls())
        assert text.startswith("{"), cls
        assert text.endswith("}"), cls


@given(st.sampled_from(KEY_CLASSES).flatmap(messages))
def test_key_strings_parse_back(key: Message) -> None:
    parsed = parse_key_string(type(key), key_json(key))
    assert diff_fields(parsed, key) == []  # equal up to presence of empty sub-keys
    assert key_json(parsed) == key_json(key)


# --- objects and string identities ----------------------------------------------------------


def test_key_of_objects() -> None:
    cloudlet = cloudlet_pb2.Cloudlet(key=CLOUDLET)
    assert key_of(cloudlet) == CLOUDLET
    assert key_string(cloudlet) == '{"organization":"oper1","name":"cloudlet1"}'
    assert key_of(clusterinst_pb2.ClusterInst(key=CLUSTER, cloudlet_key=CLOUDLET)) == CLUSTER
    assert key_of(operatorcode_pb2.OperatorCode(code="310-260", organization="o")) == "310-260"
    assert key_of(cloudlet_pb2.PlatformFeatures(platform_type="fake")) == "fake"
    assert key_of(settings_pb2.Settings(master_node_flavor="x")) == "settings"
    client = appinstclient_pb2.AppInstClientKey(unique_id="u", unique_id_type="t")
    assert key_of(client) is client
    with pytest.raises(TypeError, match="neither an object type nor a key"):
        key_of(cloudlet_pb2.CloudletProps())


def test_key_string_passes_strings_through() -> None:
    assert key_string("fake") == "fake"


def test_alert_key_is_its_labels_sorted_as_go_json() -> None:
    alert = alert_pb2.Alert(labels={"region": "US", "alertname": "AppInstDown", "app": "<x>"})
    assert key_string(alert) == '{"alertname":"AppInstDown","app":"\\u003cx\\u003e","region":"US"}'
    assert labels_key({}) == "{}"


@pytest.mark.parametrize(
    ("obj", "etcd_key"),
    [
        (
            flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x1.small")),
            '1/Flavor/{"name":"x1.small"}',
        ),
        (settings_pb2.Settings(), "1/Settings/settings"),
        (cloudlet_pb2.PlatformFeatures(platform_type="fake"), "1/PlatformFeatures/fake"),
        (
            controller_pb2.Controller(key=controller_pb2.ControllerKey(addr="127.0.0.1:55001")),
            '1/Controller/{"addr":"127.0.0.1:55001"}',
        ),
        (alert_pb2.Alert(labels={"b": "2", "a": "1"}), '1/Alert/{"a":"1","b":"2"}'),
        (
            clusterinst_pb2.ClusterInst(
                key=cluster_pb2.ClusterKey(name="foo", organization="edgecloudorg")
            ),
            '1/ClusterInst/{"name":"foo","organization":"edgecloudorg"}',
        ),
        (
            appinstclient_pb2.AppInstClientKey(unique_id="u"),
            '1/AppInstClientKey/{"app_inst_key":{},"unique_id":"u","app_key":{}}',
        ),
    ],
)
def test_object_store_keys(obj: Message, etcd_key: str) -> None:
    assert object_store_key(obj) == etcd_key


def test_store_key_helpers() -> None:
    assert store_prefix("Cloudlet") == "1/Cloudlet/"
    assert store_key("Cloudlet", key_string(CLOUDLET)) == (
        '1/Cloudlet/{"organization":"oper1","name":"cloudlet1"}'
    )
    assert parse_store_key('1/AppInstRefs/{"organization":"o","name":"a/b"}') == StoreKey(
        "1", "AppInstRefs", '{"organization":"o","name":"a/b"}'
    )
    assert parse_store_key("1/VersionV2") == StoreKey("1", "VersionV2", "")
    assert strip_store_prefix("1/PlatformFeatures/fake") == "fake"
    with pytest.raises(ValueError, match="No region prefix"):
        parse_store_key("Flavor")


@pytest.mark.parametrize(
    ("cls", "text"),
    [
        (flavor_pb2.Flavor, '{"name":"x1.small"}'),
        (operatorcode_pb2.OperatorCode, "310-260"),
        (cloudlet_pb2.PlatformFeatures, "fake"),
        (settings_pb2.Settings, "settings"),
        (alert_pb2.Alert, '{"alertname":"x","region":"US"}'),
        (appinstclient_pb2.AppInstClientKey, '{"app_inst_key":{},"unique_id":"u","app_key":{}}'),
        (refs_pb2.AppInstRefs, '{"organization":"dev","name":"app","version":"1.0"}'),
        (
            svcnode_pb2.SvcNode,
            '{"name":"n","type":"crm","cloudlet_key":{"name":"c"},"region":"US"}',
        ),
    ],
)
def test_object_from_key_string_roundtrips(cls: type[Message], text: str) -> None:
    obj = object_from_key_string(cls, text)
    assert isinstance(obj, cls)
    assert key_string(obj) == text
    assert object_from_key_string(registry.by_class(cls), text) == obj


def test_parse_key_string_is_lenient_like_go_unmarshal() -> None:
    key = parse_key_string(
        ratelimit_pb2.RateLimitSettingsKey,
        '{"API_NAME":"Global","api_endpoint_type":"DME","rate_limit_target":3,"extra":1}',
    )
    assert key == ratelimit_pb2.RateLimitSettingsKey(
        api_name="Global",
        api_endpoint_type=ratelimit_pb2.DME,
        rate_limit_target=ratelimit_pb2.PER_USER,
    )


@pytest.mark.parametrize(
    "text", ["not json", "[]", '{"name":1}', '{"api_endpoint_type":"Nope"}', '{"name":true}']
)
def test_parse_key_string_rejects_garbage(text: str) -> None:
    cls: type[Any] = (
        ratelimit_pb2.RateLimitSettingsKey if "endpoint" in text else flavor_pb2.FlavorKey
    )
    with pytest.raises(InvalidArgument):
        parse_key_string(cls, text)


def test_set_key_checks_the_key_kind() -> None:
    flavor = flavor_pb2.Flavor()
    set_key(flavor, flavor_pb2.FlavorKey(name="x"))
    assert flavor.key.name == "x"
    with pytest.raises(TypeError, match="needs a FlavorKey, not a CloudletKey"):
        set_key(flavor, CLOUDLET)
    with pytest.raises(TypeError, match="needs a key message"):
        set_key(flavor, "x")
    with pytest.raises(TypeError, match="keyed by a string"):
        set_key(operatorcode_pb2.OperatorCode(), CLOUDLET)


# --- validation: controller.md §3.0 and the original's messages ------------------------------


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("cloudlet1", True),
        ("A b.c-d_e&f,g!", True),
        ("0start", True),
        ("", False),
        ("-leading", False),
        (" leading", False),
        ("bad/slash", False),
        ("bad\n", False),
        ("ünicode", False),
    ],
)
def test_valid_name(name: str, ok: bool) -> None:
    assert valid_name(name) is ok


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("c1", True),
        ("my-cluster.x", True),
        ("under_score", False),
        ("with space", False),
        ("", False),
    ],
)
def test_valid_cluster_name(name: str, ok: bool) -> None:
    assert valid_cluster_name(name) is ok


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="bad/name")), "Invalid flavor name"),
        (
            cloudletkey_pb2.CloudletKey(organization="b@d", name="c"),
            "Invalid cloudlet organization name b@d",
        ),
        (cloudletkey_pb2.CloudletKey(organization="o"), "Invalid cloudlet name"),
        (cluster_pb2.ClusterKey(name="a_b", organization="dev"), "Invalid cluster name"),
        (cluster_pb2.ClusterKey(name="ab", organization=""), "Invalid cluster organization"),
        (app_pb2.AppKey(organization="dev", name="app"), "Invalid app version"),
        (appinst_pb2.AppInstKey(name="", organization="dev"), "Invalid app instance name"),
        (operatorcode_pb2.OperatorCode(organization="o"), "No code specified"),
        (
            autoscalepolicy_pb2.PolicyKey(organization="a b", name="p"),
            "Invalid organization name can only contain letters, digits, _ . -",
        ),
        (
            autoscalepolicy_pb2.PolicyKey(organization="", name="p"),
            "Invalid organization name cannot be empty",
        ),
        (autoscalepolicy_pb2.PolicyKey(organization="dev"), "Policy name cannot be empty"),
        (
            network_pb2.NetworkKey(cloudlet_key=CLOUDLET, name="n/1"),
            "Invalid network name",
        ),
        (cloudletnode_pb2.CloudletNodeKey(cloudlet_key=CLOUDLET), "Name must not be empty"),
        (svcnode_pb2.SvcNodeKey(type="crm"), "Invalid node name"),
        (controller_pb2.ControllerKey(), "Invalid address"),
        (device_pb2.DeviceKey(unique_id="u"), "Device id cannot be empty"),
        (refs_pb2.LoadBalancerKey(name="lb"), "no load balancer namespace"),
        (baremetalhost_pb2.BareMetalHostKey(organization="o", name="h"), "invalid cloudlet name"),
        (cloudlet_pb2.GPUDriverKey(organization="o"), "Missing gpu driver name"),
        (
            trustpolicyexception_pb2.TrustPolicyExceptionKey(app_key=APP),
            "Invalid ZonePoolKey in TrustPolicyExceptionKey: Invalid zone pool organization",
        ),
        (
            ratelimit_pb2.MaxReqsRateLimitSettingsKey(
                max_reqs_settings_name="m",
                rate_limit_key=ratelimit_pb2.RateLimitSettingsKey(api_name="a"),
            ),
            "Invalid RateLimitTarget",
        ),
        (
            appinstclient_pb2.AppInstClientKey(
                app_key=app_pb2.AppKey(organization="dev", name="a")
            ),
            "At least one of the key fields must be non-empty "
            'app_inst_key:<> app_key:<organization:"dev" name:"a" > ',
        ),
    ],
)
def test_validate_key_uses_the_originals_messages(obj: Message, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_key(obj)
    assert info.value.message == message


@pytest.mark.parametrize(
    "obj",
    [
        cloudlet_pb2.Cloudlet(key=CLOUDLET),
        clusterinst_pb2.ClusterInst(key=CLUSTER),
        app_pb2.App(key=APP),
        settings_pb2.Settings(),
        alert_pb2.Alert(),
        cloudlet_pb2.PlatformFeatures(),
        appinst_pb2.FedAppInstKey(),
        cloudlet_pb2.GPUDriverKey(name="drv"),
        operatorcode_pb2.OperatorCode(code="310"),
    ],
)
def test_validate_key_accepts_good_keys(obj: Message) -> None:
    validate_key(obj)


# --- standard errors ------------------------------------------------------------------------


def test_not_found_texts_match_the_original() -> None:
    err = not_found(cluster_pb2.ClusterKey(name="foo", organization="edgecloudorg"))
    assert isinstance(err, NotFound)
    assert str(err) == 'Cluster key {"name":"foo","organization":"edgecloudorg"} not found'
    assert str(not_found(cloudlet_pb2.PlatformFeatures(platform_type="fake"))) == (
        "PlatformFeatures key fake not found"
    )
    policy = autoscalepolicy_pb2.AutoScalePolicy(
        key=autoscalepolicy_pb2.PolicyKey(organization="o", name="p")
    )
    assert str(not_found(policy)) == 'Policy key {"organization":"o","name":"p"} not found'
    assert str(not_found(flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x")))) == (
        'Flavor key {"name":"x"} not found'
    )
    tpe = trustpolicyexception_pb2.TPEInstanceState()
    assert str(not_found(tpe)).startswith('TPEInstance key {"tpe_key":')
    assert str(not_found(appinstclient_pb2.AppInstClientKey(unique_id="u"))).startswith(
        "AppInstClient key {"
    )
    assert (
        str(not_found(operatorcode_pb2.OperatorCode(code="310")))
        == "OperatorCode key 310 not found"
    )


def test_exists_and_being_deleted_texts() -> None:
    flavor = flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x1.small"))
    exists = already_exists(flavor)
    assert isinstance(exists, AlreadyExists)
    assert str(exists) == 'Flavor key {"name":"x1.small"} already exists'
    deleting = being_deleted(flavor)
    assert isinstance(deleting, FailedPrecondition)
    assert str(deleting) == 'Flavor {"name":"x1.small"} is being deleted'
    assert str(being_deleted(cloudlet_pb2.PlatformFeatures(platform_type="fake"))) == (
        "PlatformFeatures key fake is being deleted"
    )
    assert (
        str(being_deleted(CLUSTER)) == 'Cluster {"name":"c1","organization":"dev"} is being deleted'
    )


def test_key_type_word() -> None:
    assert keys.key_type_word(clusterinst_pb2.ClusterInstInfo()) == "Cluster"
    assert keys.key_type_word(cloudletkey_pb2.ZoneKey()) == "Zone"
    assert keys.key_type_word(alert_pb2.Alert()) == "Alert"
