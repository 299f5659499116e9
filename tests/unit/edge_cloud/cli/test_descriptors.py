"""Objects, verbs and `field=value` arguments derived from the proto descriptors."""

from __future__ import annotations

import importlib
import pkgutil

import edgeproto
import pytest
from edgeproto import (
    app_pb2,
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    flavor_pb2,
    network_pb2,
    settings_pb2,
)

from edge_cloud.cli import _descriptors as d
from edge_cloud.errors import InvalidArgument


def test_every_user_rpc_is_a_verb() -> None:
    wanted = set()
    for info in pkgutil.iter_modules(edgeproto.__path__):
        if not info.name.endswith("_pb2") or info.name in d.INTERNAL_MODULES:
            continue
        module = importlib.import_module(f"edgeproto.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if not method.client_streaming:
                    wanted.add(f"/{service.full_name}/{method.name}")
    got = {verb.path for api in d.apis().values() for verb in api.verbs.values()}
    assert got == wanted
    assert "/edgeproto.NotifyApi/StreamNotice" not in got


def test_verb_names() -> None:
    flavor = d.apis()["flavor"]
    assert list(flavor.verbs) == ["create", "delete", "update", "show", "addres", "removeres"]
    assert flavor.verbs["show"].streaming
    assert not flavor.verbs["create"].streaming
    assert flavor.verbs["update"].is_update
    assert d.apis()["cloudlet"].verbs["create"].streaming
    assert "changedns" in d.apis()["cloudlet"].verbs
    assert d.apis()["appinst"].verbs["refresh"].method.name == "RefreshAppInst"
    assert d.apis()["settings"].verbs["reset"].path == "/edgeproto.SettingsApi/ResetSettings"
    assert d.find_api("app-inst") is d.apis()["appinst"]
    assert d.find_api("AppInst") is d.apis()["appinst"]
    assert d.find_api("nope") is None


def test_nested_paths_and_numeric_mask() -> None:
    args = d.parse_assignments(
        cloudlet_pb2.Cloudlet,
        ["name=paris", "org=op", "location.latitude=48.8", "num-dynamic-ips=10"],
        update_mask=True,
    )
    msg = args.message
    assert isinstance(msg, cloudlet_pb2.Cloudlet)
    assert (msg.key.name, msg.key.organization) == ("paris", "op")
    assert msg.location.latitude == pytest.approx(48.8)
    assert msg.num_dynamic_ips == 10
    assert args.paths == ["2.2", "2.1", "5.1", "8"]
    assert list(msg.fields) == ["5.1", "8"]  # key paths never in the mask


def test_mask_only_for_updates_and_explicit_mask_wins() -> None:
    created = d.parse_assignments(flavor_pb2.Flavor, ["name=x", "ram=1"]).message
    assert isinstance(created, flavor_pb2.Flavor)
    assert list(created.fields) == []
    explicit = d.parse_assignments(
        settings_pb2.Settings, ["fields=8,9", "create_app_inst_timeout=1m"], update_mask=True
    ).message
    assert isinstance(explicit, settings_pb2.Settings)
    assert list(explicit.fields) == ["8", "9"]


def test_durations_bools_and_numbers() -> None:
    msg = d.parse_assignments(
        settings_pb2.Settings,
        ["create_app_inst_timeout=15m", "delete_app_inst_timeout=7"],
        update_mask=True,
    ).message
    assert isinstance(msg, settings_pb2.Settings)
    assert msg.create_app_inst_timeout == 15 * 60 * 10**9
    assert msg.delete_app_inst_timeout == 7
    assert list(msg.fields) == ["8", "10"]
    app = d.parse_assignments(app_pb2.App, ["trusted=yes", "internal_ports=FALSE"]).message
    assert isinstance(app, app_pb2.App)
    assert app.trusted is True
    assert app.internal_ports is False
    with pytest.raises(InvalidArgument, match="not a bool"):
        d.parse_assignments(app_pb2.App, ["trusted=maybe"])
    with pytest.raises(InvalidArgument, match="ram=lots"):
        d.parse_assignments(flavor_pb2.Flavor, ["ram=lots"])
    with pytest.raises(InvalidArgument, match="create_app_inst_timeout=soon"):
        d.parse_assignments(settings_pb2.Settings, ["create_app_inst_timeout=soon"])


@pytest.mark.parametrize(
    "text", ["docker", "DOCKER", "Docker", "IMAGE_TYPE_DOCKER", "image-type-docker", "dock", "1"]
)
def test_enums_by_any_spelling(text: str) -> None:
    msg = d.parse_assignments(app_pb2.App, [f"image_type={text}"]).message
    assert isinstance(msg, app_pb2.App)
    assert msg.image_type == app_pb2.IMAGE_TYPE_DOCKER


def test_bad_enum_lists_the_values() -> None:
    with pytest.raises(InvalidArgument, match="IMAGE_TYPE_DOCKER"):
        d.parse_assignments(app_pb2.App, ["image_type=rocket"])


def test_aliases_from_keys() -> None:
    inst = d.parse_assignments(
        appinst_pb2.AppInst,
        ["name=web1", "org=dev", "cloudlet=paris", "cloudlet-org=op", "app=web", "app-vers=1.0"],
    ).message
    assert isinstance(inst, appinst_pb2.AppInst)
    assert (inst.key.name, inst.key.organization) == ("web1", "dev")
    assert (inst.cloudlet_key.name, inst.cloudlet_key.organization) == ("paris", "op")
    assert (inst.app_key.name, inst.app_key.version) == ("web", "1.0")

    cloudlet = d.parse_assignments(cloudlet_pb2.Cloudlet, ["cloudlet=paris", "cloudletorg=op"])
    assert isinstance(cloudlet.message, cloudlet_pb2.Cloudlet)
    assert cloudlet.message.key.name == "paris"
    assert cloudlet.message.key.organization == "op"

    net = d.parse_assignments(network_pb2.Network, ["name=n", "cloudlet=paris"]).message
    assert isinstance(net, network_pb2.Network)
    assert (net.key.name, net.key.cloudlet_key.name) == ("n", "paris")

    # a request that is itself a key message (CloudletApi.RefreshCerts takes a CloudletKey)
    key = d.parse_assignments(cloudletkey_pb2.CloudletKey, ["cloudlet=paris", "org=op"]).message
    assert key == cloudletkey_pb2.CloudletKey(name="paris", organization="op")

    app = d.parse_assignments(app_pb2.App, ["vers=2", "flavor=x1.small"]).message
    assert isinstance(app, app_pb2.App)
    assert (app.key.version, app.default_flavor.name) == ("2", "x1.small")
    assert "name" not in d.aliases(flavor_pb2.FlavorKey.DESCRIPTOR)  # a real field


def test_maps_lists_and_json() -> None:
    msg = d.parse_assignments(
        cloudlet_pb2.Cloudlet,
        [
            "env_var.A=1",
            "env_var.B=2",
            "env_var.app.kubernetes.io/name=web",
            "alliance_orgs=a,b",
            "alliance_orgs=c",
            "res_tag_map.gpu.name=tags",
            "resource_quotas.0.name=RAM",
            "resource_quotas.0.value=1024",
            "resource_quotas.1.name=vCPUs",
            'location={"latitude": 1.5, "longitude": 2}',
        ],
        update_mask=True,
    ).message
    assert isinstance(msg, cloudlet_pb2.Cloudlet)
    assert dict(msg.env_var) == {"A": "1", "B": "2", "app.kubernetes.io/name": "web"}
    assert list(msg.alliance_orgs) == ["a", "b", "c"]
    assert msg.res_tag_map["gpu"].name == "tags"
    assert [(q.name, q.value) for q in msg.resource_quotas] == [("RAM", 1024), ("vCPUs", 0)]
    assert (msg.location.latitude, msg.location.longitude) == (1.5, 2.0)
    assert "5" in msg.fields  # the whole location message


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        ("ram", "not FIELD=VALUE"),
        ("=1", "not FIELD=VALUE"),
        ("colour=red", "Flavor has no field 'colour'"),
        ("key=x", "key is a message"),
        ("ram.x=1", "ram has no sub-fields"),
        ("opt_res_map=x", "is a map"),
        ("gpus.x=1", "is a list"),
        ("gpus.3.model_id=1", "skips entries"),
        ("key={oops", "not JSON"),
    ],
)
def test_argument_errors(arg: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        d.parse_assignments(flavor_pb2.Flavor, [arg])


def test_normalize_dict_enums() -> None:
    data = d.normalize_dict(
        app_pb2.App.DESCRIPTOR,
        {"image_type": "docker", "accessType": "load_balancer", "key": {"name": "a"}},
    )
    assert data["image_type"] == app_pb2.IMAGE_TYPE_DOCKER
    assert data["accessType"] == app_pb2.ACCESS_TYPE_LOAD_BALANCER
    assert data["key"] == {"name": "a"}


def test_field_help_lists_paths_and_aliases() -> None:
    lines = d.field_help(app_pb2.App)
    text = "\n".join(lines)
    assert "name" in text
    assert "-> key.name" in text
    assert any(line.startswith("image_type") and "docker" in line for line in lines)
    assert any(line.startswith("qos_session_duration") and "duration" in line for line in lines)
    assert any(line.startswith("configs.N.FIELD") for line in lines)
    assert d.enum_short_names(app_pb2.ImageType.DESCRIPTOR)[:2] == ["unknown", "docker"]
