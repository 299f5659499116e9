"""Cloudlet rules without servers: the original's error texts and defaults (§3.6, §10)."""

from __future__ import annotations

from typing import Any

import pytest
from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import cloudlet_pb2, cloudletkey_pb2, common_pb2, infraresources_pb2

from edge_cloud.errors import EdgeError, FailedPrecondition, InvalidArgument
from services.controller import _cloudlet
from services.controller._ccrm import parse_platform_service_addrs
from services.controller._progress import compact_text, op_owner, stream_key


def cloudlet(**values: Any) -> cloudlet_pb2.Cloudlet:
    fields: dict[str, Any] = {
        "location": loc_pb2.Loc(latitude=37.1, longitude=-122.4),
        "num_dynamic_ips": 10,
        "platform_type": "fake",
        **values,
    }
    return cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization="UFGT Inc.", name="San Jose Site"), **fields
    )


def refused(error: type[EdgeError], fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(error) as caught:
        fn(*args, **kwargs)
    return caught.value.message


# --- create pre-checks -------------------------------------------------------------------


def test_precheck_defaults() -> None:
    c = cloudlet(gpu_config={"properties": {"a": "b"}})
    _cloudlet.precheck_create(c, version_tag="2026-03-01")
    assert c.ip_support == common_pb2.IP_SUPPORT_DYNAMIC
    assert c.notify_srv_addr == "127.0.0.1:0"
    assert c.secondary_notify_srv_addr == "127.0.0.1:0"
    assert c.container_version == "2026-03-01"
    assert c.default_resource_alert_threshold == 80
    assert c.deployment == "docker"
    assert not c.HasField("gpu_config")  # no driver: cleared


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ({"ip_support": common_pb2.IP_SUPPORT_STATIC}, "Only dynamic IPs are supported currently"),
        ({"num_dynamic_ips": 0}, "Must specify at least one dynamic public IP available"),
        ({"location": loc_pb2.Loc()}, "location is missing; 0,0 is not a valid location"),
        ({"deployment": "helm"}, "Invalid deployment, must be one of [docker kubernetes]"),
        (
            {"deployment_local": True},
            "deployment local is only for testing CRMs locally, must set CrmOnEdge to true",
        ),
        (
            {"deployment_local": True, "crm_on_edge": True, "deployment": "kubernetes"},
            "deployment type for local must be docker",
        ),
    ],
)
def test_precheck_errors(values: dict[str, Any], text: str) -> None:
    assert refused(InvalidArgument, _cloudlet.precheck_create, cloudlet(**values)) == text


# --- features ------------------------------------------------------------------------------


def pf(**flags: Any) -> cloudlet_pb2.PlatformFeatures:
    return cloudlet_pb2.PlatformFeatures(platform_type="fake", **flags)


@pytest.mark.parametrize(
    ("values", "flags", "error", "text"),
    [
        (
            {"edgebox_only": True},
            {},
            InvalidArgument,
            "Cloudlet is restricted to edgebox or mock only platforms; fake is not an edgebox "
            "or mock platform",
        ),
        (
            {"infra_api_access": cloudlet_pb2.RESTRICTED_ACCESS},
            {},
            InvalidArgument,
            "Infra flavor name is required for private deployments",
        ),
        (
            {
                "infra_api_access": cloudlet_pb2.RESTRICTED_ACCESS,
                "infra_config": {"flavor_name": "x"},
            },
            {},
            InvalidArgument,
            "Infra external network is required for private deployments",
        ),
        ({"vm_pool": "pool"}, {}, InvalidArgument, "Platform fake is not a VM Pool platform"),
        (
            {},
            {"is_vm_pool": True},
            InvalidArgument,
            "VM Pool platform fake requires a VmPool to be specified",
        ),
        (
            {"enable_default_serverless_cluster": True},
            {},
            InvalidArgument,
            "Serverless cluster not supported on fake",
        ),
        ({"trust_policy": "tp"}, {}, InvalidArgument, "Trust Policy not supported on fake"),
        (
            {"crm_on_edge": True},
            {"requires_crm_off_edge": True},
            FailedPrecondition,
            "platform fake requires CRM off edge site",
        ),
        (
            {"platform_high_availability": True},
            {},
            InvalidArgument,
            "Platform High Availability is only an option for CRM on Edge; when CRM runs "
            "centrally HA is automatically provided by horizontal scaling",
        ),
        (
            {"platform_high_availability": True, "crm_on_edge": True, "deployment": "docker"},
            {},
            InvalidArgument,
            "Platform High Availability not supported for docker on fake",
        ),
    ],
)
def test_feature_checks(
    values: dict[str, Any], flags: dict[str, Any], error: type[EdgeError], text: str
) -> None:
    assert refused(error, _cloudlet.check_features, cloudlet(**values), pf(**flags)) == text


def test_vm_pool_in_use() -> None:
    text = refused(
        FailedPrecondition,
        _cloudlet.check_features,
        cloudlet(vm_pool="pool"),
        pf(is_vm_pool=True),
        vm_pool_in_use=True,
    )
    assert text == "VM Pool with this name is already in use by some other Cloudlet"


def test_crm_on_edge_decision() -> None:
    c = cloudlet()
    _cloudlet.check_features(c, pf(requires_crm_on_edge=True))
    assert c.crm_on_edge
    c = cloudlet(
        infra_api_access=cloudlet_pb2.RESTRICTED_ACCESS,
        infra_config={"flavor_name": "m1", "external_network_name": "ext"},
    )
    _cloudlet.check_features(c, pf())
    assert c.crm_on_edge  # restricted access always runs its CRM on the site
    c = cloudlet()
    _cloudlet.check_features(c, pf())
    assert not c.crm_on_edge


def test_alliance_orgs() -> None:
    own = cloudlet(alliance_orgs=["UFGT Inc."])
    assert refused(InvalidArgument, _cloudlet.validate_alliance_orgs, own) == (
        'Cannot add cloudlet\'s own org "UFGT Inc." as alliance org'
    )
    dup = cloudlet(alliance_orgs=["foo", "bar", "foo"])
    assert refused(InvalidArgument, _cloudlet.validate_alliance_orgs, dup) == (
        'Duplicate alliance org "foo" specified'
    )
    _cloudlet.validate_alliance_orgs(cloudlet(alliance_orgs=["foo", "bar"]))


def test_prop_vars() -> None:
    props = {
        "A": cloudlet_pb2.PropertyInfo(name="a", mandatory=True),
        "B": cloudlet_pb2.PropertyInfo(name="b"),
    }
    assert refused(
        InvalidArgument, _cloudlet.check_prop_vars, {"Z": "1", "Y": "2"}, props, "env"
    ) == ("Invalid env vars Y, Z, valid vars are A, B")
    assert refused(InvalidArgument, _cloudlet.check_prop_vars, {"B": "1"}, props, "access") == (
        "Missing required access vars A"
    )
    _cloudlet.check_prop_vars({"A": "1"}, props, "env")


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ({"location": loc_pb2.Loc(latitude=90.5, longitude=1)}, "Invalid latitude value"),
        ({"location": loc_pb2.Loc(latitude=-90.5, longitude=1)}, "Invalid latitude value"),
        ({"location": loc_pb2.Loc(latitude=1, longitude=180.1)}, "Invalid longitude value"),
        (
            {"maintenance_state": appcommon_pb2.UNDER_MAINTENANCE},
            "Invalid maintenance state, only normal operation and maintenance start states are "
            "allowed",
        ),
        ({"vm_image_version": "-bad"}, "ImageVersion can only contain letters, digits, -, ., _"),
        ({"ip_support": 7}, "invalid IpSupport"),
        ({"infra_api_access": 9}, "invalid InfraApiAccess"),
        (
            {"default_resource_alert_threshold": 101},
            "Invalid resource alert threshold 101 specified, valid threshold is in the range of "
            "0 to 100",
        ),
        (
            {
                "resource_quotas": [
                    {"name": "nvidia-t4", "resource_type": "gpu", "alert_threshold": -1}
                ]
            },
            "Invalid resource quota alert threshold -1 specified for gpu nvidia-t4, valid "
            "threshold is in the range of 0 to 100",
        ),
    ],
)
def test_validate_cloudlet(values: dict[str, Any], text: str) -> None:
    assert refused(InvalidArgument, _cloudlet.validate_cloudlet, cloudlet(**values)) == text


def test_validate_only_listed_fields() -> None:
    bad = cloudlet(location=loc_pb2.Loc(latitude=95, longitude=1))
    _cloudlet.validate_cloudlet(bad, ["8"])  # latitude not being updated: not checked
    with pytest.raises(InvalidArgument):
        _cloudlet.validate_cloudlet(bad, ["5"])  # the parent selects its children


def test_key_validation() -> None:
    c = cloudlet()
    c.key.name = "-bad"
    assert refused(InvalidArgument, _cloudlet.validate_cloudlet, c) == "Invalid cloudlet name"


def test_resource_quotas() -> None:
    props = [infraresources_pb2.InfraResource(name="Instances")]
    quotas = [cloudlet_pb2.ResourceQuota(name="Floating IPs", value=3)]
    assert refused(InvalidArgument, _cloudlet.validate_resource_quotas, props, None, quotas) == (
        "invalid quota for Floating IPs, valid quotas are for Disk, External IPs, GPUs, "
        "Instances, RAM, vCPUs"
    )
    ok = [cloudlet_pb2.ResourceQuota(name="RAM", value=4096)]
    _cloudlet.validate_resource_quotas(props, None, ok)
    infra = {"RAM": infraresources_pb2.InfraResource(name="RAM", infra_max_value=2048)}
    assert refused(InvalidArgument, _cloudlet.validate_resource_quotas, props, infra, ok) == (
        "resource quota for RAM exceeded max supported value: 2048"
    )


# --- names -----------------------------------------------------------------------------------


def test_dns_labels() -> None:
    key = cloudletkey_pb2.CloudletKey(organization="def", name="abc")
    assert _cloudlet.cloudlet_base_label(key) == "abc-def"
    odd = cloudletkey_pb2.CloudletKey(organization="d,ef", name="ab,c")
    assert _cloudlet.cloudlet_base_label(odd) == "abc-def"  # the collision of §10.20
    assert _cloudlet.dns_label_candidates(key)[:3] == ["abc-def", "abc-def1", "abc-def2"]
    long = cloudletkey_pb2.CloudletKey(organization="o" * 30, name="n" * 60)
    labels = _cloudlet.dns_label_candidates(long)
    assert labels[0] == "n" * 40 + "-" + "o" * 9  # name cut to 40, org to 20, label to 50
    assert labels[1] == "n" * 40 + "-" + "o" * 8 + "1"
    assert all(len(label) <= 50 for label in labels)
    assert _cloudlet.dns_sanitize("_My Site-1_") == "mysite-1"
    assert _cloudlet.root_lb_fqdn("abc-def", "US_West", "example.net") == (
        "shared.abc-def.us-west.example.net"
    )


def test_gpu_license_storage_path() -> None:
    ckey = cloudletkey_pb2.CloudletKey(organization="op", name="c1")
    public = cloudlet_pb2.GPUDriverKey(name="drv")
    assert _cloudlet.gpu_license_storage_path(public, "local", ckey) == (
        "local/edgecloudorg/drv/cloudlet/licenseconfig/op/c1/license.conf"
    )
    own = cloudlet_pb2.GPUDriverKey(name="drv", organization="op")
    assert _cloudlet.gpu_license_storage_path(own, "local", ckey) == (
        "local/op/drv/cloudlet/licenseconfig/c1/license.conf"
    )
    other = cloudlet_pb2.GPUDriverKey(name="drv", organization="x")
    text = refused(InvalidArgument, _cloudlet.gpu_license_storage_path, other, "local", ckey)
    assert text == "Can only use x or '' org gpu drivers"


def test_stream_keys_are_the_originals() -> None:
    ckey = cloudletkey_pb2.CloudletKey(organization="o", name="c")
    assert stream_key(ckey) == 'CloudletStreamKey: organization:"o" name:"c" '
    from edgeproto import cluster_pb2

    assert stream_key(cluster_pb2.ClusterKey(name="c1", organization="dev")) == (
        'ClusterInstStreamKey: name:"c1" organization:"dev" '
    )
    assert compact_text(cloudletkey_pb2.CloudletKey(name='a"b')) == 'name:"a\\"b" '
    assert op_owner("host@1.2.3.4:55001#abc") == "host@1.2.3.4:55001"
    assert op_owner("4bf92f3577b34da6a3ce929d0e0e4736") is None


def test_platform_service_addrs() -> None:
    assert parse_platform_service_addrs(["ccrm=127.0.0.1:19001", "k8s:10.0.0.1:19002"]) == {
        "ccrm": "127.0.0.1:19001",
        "k8s": "10.0.0.1:19002",
    }
    with pytest.raises(ValueError, match="nodeType=host:port"):
        parse_platform_service_addrs(["ccrm"])
