"""`edge_cloud.platform`: features as data, the ABC's defaults, config, progress, errors."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from distributed_match_engine import appcommon_pb2
from edgeproto import (
    app_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    clusterinst_pb2,
    common_pb2,
    infraresources_pb2,
)

from edge_cloud.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotSupportedByPlatform,
    PlatformPermanentError,
    PlatformTransientError,
    Unimplemented,
)
from edge_cloud.platform import (
    Deployment,
    InfoSender,
    LocalAccessApi,
    Platform,
    PlatformConfig,
    PlatformFeatures,
    PlatformResourceExhausted,
    PropertyInfo,
    QuotaResource,
    RecordedProgress,
    classify,
    render_status,
    set_status_step,
    set_status_task,
)

# -- PlatformFeatures mirrors the wire message ----------------------------------------------


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (PlatformFeatures, cloudlet_pb2.PlatformFeatures),
        (PropertyInfo, cloudlet_pb2.PropertyInfo),
        (QuotaResource, infraresources_pb2.InfraResource),
    ],
)
def test_dataclasses_cover_the_wire_message_field_for_field(cls, message) -> None:
    ours = {f.name for f in dataclasses.fields(cls)}
    wire = {f.name for f in message.DESCRIPTOR.fields}
    assert ours == wire


def full_features() -> PlatformFeatures:
    """Every field set to a non-default value, so a dropped field shows."""
    values: dict[str, object] = {}
    for f in dataclasses.fields(PlatformFeatures):
        if f.type == "bool":
            values[f.name] = True
    values.update(
        platform_type="openstack",
        node_type="ccrm",
        requires_crm_off_edge=False,
        access_vars={"OS_PASSWORD": PropertyInfo(name="pw", secret=True, mandatory=True)},
        properties={"P": PropertyInfo(name="p", value="1", description="d", internal=True)},
        resource_quota_properties=(QuotaResource(name="RAM", description="ram", units="MB"),),
    )
    return PlatformFeatures(**values)  # type: ignore[arg-type]


def test_to_proto_sets_every_field_and_from_proto_restores_it() -> None:
    features = full_features()
    msg = features.to_proto()
    for f in cloudlet_pb2.PlatformFeatures.DESCRIPTOR.fields:
        if f.name == "requires_crm_off_edge":
            continue
        value = getattr(msg, f.name)
        assert value, f"{f.name} was not carried over"
    assert msg.access_vars["OS_PASSWORD"].secret
    assert msg.resource_quota_properties[0].units == "MB"
    assert PlatformFeatures.from_proto(msg) == features


def test_features_are_immutable() -> None:
    features = full_features()
    with pytest.raises(dataclasses.FrozenInstanceError):
        features.is_fake = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        features.properties["X"] = PropertyInfo()  # type: ignore[index]
    assert hash(features) == hash(dataclasses.replace(features))


def test_features_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="platform_type"):
        PlatformFeatures(platform_type="")
    with pytest.raises(ValueError, match="both on and off"):
        PlatformFeatures(platform_type="x", requires_crm_on_edge=True, requires_crm_off_edge=True)


def test_derive_makes_a_variant() -> None:
    base = PlatformFeatures(platform_type="fake", is_fake=True)
    variant = base.derive("fakevmpool", is_vm_pool=True)
    assert (variant.platform_type, variant.is_fake, variant.is_vm_pool) == (
        "fakevmpool",
        True,
        True,
    )
    assert not base.is_vm_pool


# -- the ABC ------------------------------------------------------------------------------------


class MinimalPlatform(Platform):
    """Only the abstract methods, to see the defaults of everything else."""

    features = PlatformFeatures(platform_type="minimal", supports_kubernetes_only=True)

    async def init(self, config, access, progress) -> None:
        progress.task("init")

    async def create_cloudlet(self, cloudlet, pf_config, flavor, progress) -> None:
        return None

    async def delete_cloudlet(self, cloudlet, pf_config, progress) -> None:
        return None

    async def gather_cloudlet_info(self) -> cloudlet_pb2.CloudletInfo:
        return cloudlet_pb2.CloudletInfo(os_max_ram=7, flavors=[cloudlet_pb2.FlavorInfo(name="f")])

    async def get_cloudlet_infra_resources(self):
        snap = infraresources_pb2.InfraResourcesSnapshot()
        snap.info.add(name="RAM", value=1)
        return snap

    async def create_cluster_inst(self, cluster, progress, *, timeout) -> dict[str, str]:  # noqa: ASYNC109
        return {}

    async def delete_cluster_inst(self, cluster, progress) -> None:
        return None

    async def create_app_inst(self, cluster, app, app_inst, flavor, progress) -> None:
        self.check_deployment(app)

    async def delete_app_inst(self, cluster, app, app_inst, progress, *, undo=False) -> None:
        return None


def test_abstract_methods_are_required() -> None:
    class Incomplete(Platform):
        features = PlatformFeatures(platform_type="incomplete")

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]


async def test_optional_methods_raise_not_supported_naming_the_platform() -> None:
    p = MinimalPlatform()
    cluster = clusterinst_pb2.ClusterInst()
    calls = [
        p.update_trust_policy(None),
        p.get_cloudlet_manifest(cloudlet_pb2.Cloudlet(), cloudlet_pb2.PlatformConfig(), None),
        p.update_cluster_inst(cluster, RecordedProgress()),
        p.get_cluster_credentials(cluster),
        p.get_console_url(app_pb2.App(), None),
        p.get_bare_metal_hosts(),
        p.get_cloudlet_managed_clusters(),
        p.verify_vms([]),
    ]
    for call in calls:
        with pytest.raises(NotSupportedByPlatform, match="platform minimal"):
            await call
    assert NotSupportedByPlatform.code == grpc.StatusCode.UNIMPLEMENTED


async def test_harmless_defaults() -> None:
    p = MinimalPlatform()
    assert p.name_sanitize("a.b") == "a.b"
    assert p.compatibility_version() == ""
    assert (await p.get_root_lb_flavor()).key.name == ""
    assert p.get_cluster_additional_resources(cloudlet_pb2.Cloudlet(), []) == {}
    assert not (await p.get_cluster_infra_resources(clusterinst_pb2.ClusterInst())).vms
    await p.update_cloudlet(cloudlet_pb2.Cloudlet(), RecordedProgress())
    await p.init_ha_conditional(RecordedProgress())


async def test_uses_root_lb_without_a_flavor_is_a_plugin_bug() -> None:
    class NoFlavor(MinimalPlatform):
        features = PlatformFeatures(platform_type="noflavor", uses_root_lb=True)

    with pytest.raises(NotSupportedByPlatform, match="uses_root_lb"):
        await NoFlavor().get_root_lb_flavor()


async def test_get_cloudlet_resources_combines_info_and_snapshot() -> None:
    info = await MinimalPlatform().get_cloudlet_resources()
    assert info.os_max_ram == 7
    assert info.resources_snapshot.info[0].name == "RAM"
    assert {"6", "10", "17", "46"} <= set(info.fields)
    assert [f.name for f in await MinimalPlatform().get_flavors()] == ["f"]


async def test_deployment_check_follows_kubernetes_only() -> None:
    p = MinimalPlatform()
    await p.create_app_inst(None, app_pb2.App(deployment="helm"), None, None, RecordedProgress())
    with pytest.raises(NotSupportedByPlatform, match="Kubernetes apps only, not vm"):
        await p.create_app_inst(None, app_pb2.App(deployment="vm"), None, None, RecordedProgress())
    with pytest.raises(InvalidArgument, match="unknown deployment type 'lxc'"):
        p.check_deployment(app_pb2.App(deployment="lxc"))
    assert Deployment.of("") is Deployment.KUBERNETES
    assert not Deployment.VM.needs_cluster
    assert Deployment.HELM.is_kubernetes


# -- config ---------------------------------------------------------------------------------


def cloudlet(**env: str) -> cloudlet_pb2.Cloudlet:
    c = cloudlet_pb2.Cloudlet(
        key=cloudletkey_pb2.CloudletKey(organization="op", name="c1"), platform_type="fake"
    )
    c.env_var.update(env)
    return c


def test_property_order_is_cloudlet_then_process_then_default() -> None:
    cfg = PlatformConfig.for_cloudlet(
        cloudlet(A="cloudlet"), process_env={"A": "process", "B": "process"}
    )
    declared = {n: PropertyInfo(value="default") for n in "ABC"}
    assert cfg.resolve_properties(declared) == {"A": "cloudlet", "B": "process", "C": "default"}
    assert cfg.physical_name == "c1"
    assert cfg.cloudlet_key_string == '{"organization":"op","name":"c1"}'


def test_missing_mandatory_properties_fail_outside_test_mode() -> None:
    declared = {"NEED": PropertyInfo(mandatory=True), "OK": PropertyInfo()}
    with pytest.raises(InvalidArgument, match="mandatory properties NEED"):
        PlatformConfig.for_cloudlet(cloudlet()).resolve_properties(declared)
    relaxed = PlatformConfig.for_cloudlet(cloudlet(), test_mode=True)
    assert relaxed.resolve_properties(declared) == {"NEED": "", "OK": ""}


# -- progress -------------------------------------------------------------------------------


def test_status_rendering_is_the_originals() -> None:
    status = common_pb2.StatusInfo()
    set_status_task(status, "Creating")
    set_status_task(status, "Creating")  # unchanged: ignored
    set_status_step(status, "step a")
    set_status_task(status, "")  # empty: ignored
    status.max_tasks = 3
    set_status_task(status, "Next")
    assert list(status.msgs) == ["Creating", "Creating, step a", "Next(2 of 3)"]
    assert status.msg_count == 3
    assert render_status(common_pb2.StatusInfo()) == ""


def test_info_sender_sends_copies_with_fields() -> None:
    sent: list[clusterinst_pb2.ClusterInstInfo] = []
    info = clusterinst_pb2.ClusterInstInfo()
    info.key.name = "c"
    sender = InfoSender(
        info, sent.append, state_enum=common_pb2.TrackedState.DESCRIPTOR, fields=("4", "5", "6")
    )
    sender.send_state(common_pb2.CREATING, reset=True)
    sender.task("First Create Task")
    sender.step("half")
    sender.send_state(common_pb2.CREATE_ERROR, error="boom")
    sender.send_update(lambda i: i.infra_annotations.update({"a": "b"}), ["45"])
    assert [list(s.fields) for s in sent] == [
        ["4", "5", "6"],
        ["6"],
        ["6"],
        ["4", "5", "6"],
        ["45"],
    ]
    assert list(sent[3].status.msgs) == [
        "Creating", "First Create Task", "First Create Task, half", "CreateError"
    ]  # fmt: skip
    assert list(sent[3].errors) == ["boom"]
    assert sent[0].key.name == "c"
    assert sent[0] is not sent[1]
    cloudlet_sender = InfoSender(
        cloudlet_pb2.CloudletInfo(),
        sent.append,
        state_enum=appcommon_pb2.CloudletState.DESCRIPTOR,
        fields=("3", "9", "11"),
    )
    cloudlet_sender.send_state(appcommon_pb2.CLOUDLET_STATE_READY)
    assert sent[-1].status.msgs[-1] == "CloudletStateReady"


# -- errors ---------------------------------------------------------------------------------


def test_errors_are_classified() -> None:
    assert classify(PlatformTransientError("x")) == "transient"
    assert classify(DeadlineExceeded("x")) == "transient"
    assert classify(TimeoutError()) == "transient"
    assert classify(ConnectionResetError()) == "transient"
    assert classify(PlatformPermanentError("x")) == "permanent"
    assert classify(PlatformResourceExhausted("x")) == "permanent"
    assert classify(ValueError("x")) == "permanent"
    assert PlatformResourceExhausted.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert issubclass(PlatformResourceExhausted, FailedPrecondition)
    assert issubclass(NotSupportedByPlatform, Unimplemented)


# -- the local access API ---------------------------------------------------------------------


async def test_local_access_api() -> None:
    access = LocalAccessApi({"APIKey": "k"}, {"app": {"S": "1"}})
    assert await access.get_cloudlet_access_vars() == {"APIKey": "k"}
    await access.create_or_update_dns_record("a.example", "A", "10.0.0.1")
    await access.create_or_update_dns_record("a.example", "A", "10.0.0.2")
    assert [r.content for r in await access.get_dns_records("a.example")] == ["10.0.0.2"]
    await access.delete_dns_record("a.example")
    assert await access.get_dns_records("a.example") == []
    with pytest.raises(InvalidArgument, match="MX"):
        await access.create_or_update_dns_record("a.example", "MX", "x")
    with pytest.raises(FailedPrecondition, match="needs Vault"):
        await access.sign_ssh_key("ssh-ed25519 AAAA")
    assert await access.get_app_secret_vars("app") == {"S": "1"}
    assert (await access.get_registry_auth("reg.example/img:1")).hostname == "reg.example"
