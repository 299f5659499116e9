"""Reading objects files for `edge apply` / `edge delete`."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgeproto import app_pb2, cloudlet_pb2, settings_pb2

from edge_cloud.cli import apply
from edge_cloud.errors import InvalidArgument

ROOT = Path(__file__).resolve().parents[4]


def test_sections_in_alldata_order_with_either_spelling() -> None:
    entries = apply.load(
        """
appinstances:
  - key: {name: i1, organization: dev}
apps:
  - key: {organization: dev, name: web, version: "1"}
    image_type: docker
    deployment: kubernetes
operatorcodes:
  - {code: "1", organization: op}
flavors:
  - key: {name: f1}
  - key: {name: f2}
settings:
  create_app_inst_timeout: 15m
cluster_insts:
  - key: {name: c1, organization: dev}
"""
    )
    assert [e.section for e in entries] == [
        "flavors",
        "flavors",
        "settings",
        "operator_codes",
        "cluster_insts",
        "apps",
        "app_instances",
    ]
    app = entries[5].message
    assert isinstance(app, app_pb2.App)
    assert app.image_type == app_pb2.IMAGE_TYPE_DOCKER
    settings = entries[2].message
    assert isinstance(settings, settings_pb2.Settings)
    assert settings.create_app_inst_timeout == 15 * 60 * 10**9


def test_create_order_is_alldata_declared_order() -> None:
    assert apply.CREATE_ORDER[:4] == ("flavors", "settings", "operator_codes", "res_tag_tables")
    assert apply.CREATE_ORDER.index("cloudlets") < apply.CREATE_ORDER.index("cluster_insts")
    assert apply.CREATE_ORDER.index("cluster_insts") < apply.CREATE_ORDER.index("apps")
    assert apply.CREATE_ORDER.index("apps") < apply.CREATE_ORDER.index("app_instances")
    assert set(apply.sections().values()) == set(apply.CREATE_ORDER)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("widgets: []", "unknown section 'widgets'"),
        ("- 1", "expected a mapping of AllData lists"),
        ("flavors: [1]", r"flavors\[0\]: expected a mapping"),
        ("flavors:\n  - {colour: red}", r"flavors\[0\]: invalid Flavor"),
        ("apps:\n  - {image_type: rocket}", "invalid ImageType value 'rocket'"),
        ("flavors: [", "not valid YAML"),
    ],
)
def test_bad_files(text: str, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        apply.load(text, "objects.yaml")


def test_empty_file() -> None:
    assert apply.load("") == []


def test_demo_world() -> None:
    entries = apply.load((ROOT / "docker/demo/world.yaml").read_text(), "world.yaml")
    cloudlets = [e.message for e in entries if e.section == "cloudlets"]
    assert len(cloudlets) == 3
    for cloudlet in cloudlets:
        assert isinstance(cloudlet, cloudlet_pb2.Cloudlet)
        assert cloudlet.platform_type == "fake"
        assert cloudlet.num_dynamic_ips > 0
        assert cloudlet.location.latitude != 0
    sections = [e.section for e in entries]
    assert sections.index("operator_codes") < sections.index("cloudlets") < sections.index("apps")
