"""Random field values never make the Controller answer UNKNOWN or INTERNAL (issue 4).

One Controller (the cloudlet harness: engine, tracked runtime, Redis progress, notify) serves
every API on a loopback gRPC port, on the real etcd, for the whole module. It runs its own
event loop in a background thread so the hypothesis tests can stay synchronous and call it
over a plain gRPC channel, exactly as a client would.

Each Create/Update/Delete/Show (and CloudletInfo inject) RPC of the issue-4 objects, and
every RPC of the services added later (organizations, rate limits, trust policy exceptions,
cloudlet managed clusters, bare-metal hosts, AppInst latency, service nodes, debug), gets
random messages built from its request descriptor: random unicode strings (empty, huge),
integers at their limits, enum numbers the proto does not define, nested messages, maps,
repeated fields, and update field masks drawn from the message's real field paths mixed
with nonsense. Keys come half of the time from a small pool of plausible names, so creates
succeed and later updates and deletes find something to act on. Infrastructure is kept out
with `crm_override` IGNORE_CRM_AND_TRANSIENT_STATE on the objects that have it.

A bad request must be refused with a clean code (INVALID_ARGUMENT, NOT_FOUND, ...), never
with UNKNOWN or INTERNAL: those mean a crash the person calling cannot act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from distributed_match_engine import appcommon_pb2, loc_pb2
from edgeproto import (
    alertpolicy_pb2,
    app_pb2,
    appinst_pb2,
    autoprovpolicy_pb2,
    autoscalepolicy_pb2,
    baremetalhost_pb2,
    cloudlet_pb2,
    cloudlet_pb2_grpc,
    cloudletkey_pb2,
    cluster_pb2,
    clusterinst_pb2,
    common_pb2,
    debug_pb2,
    flavor_pb2,
    network_pb2,
    operatorcode_pb2,
    org_pb2,
    ratelimit_pb2,
    restagtable_pb2,
    settings_pb2,
    svcnode_pb2,
    trustpolicy_pb2,
    trustpolicyexception_pb2,
    vmpool_pb2,
    zone_pb2,
    zonepool_pb2,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_cloud.localservers import ServerProcess
from edge_cloud.objects.fields import all_field_paths
from tests.integration.controller.cloudlet_harness import (
    Controller,
    ControllerHarness,
    features,
    put_features,
)
from tests.support.servers import _REDIS_DBS
from tests.unit.edge_cloud.objects.strategies import messages

T = TypeVar("T")

CALL_TIMEOUT = 20.0
"""Seconds one RPC may take; with the CRM ignored nothing should come near it."""

FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

SERVICES = [
    flavor_pb2.DESCRIPTOR.services_by_name["FlavorApi"],
    operatorcode_pb2.DESCRIPTOR.services_by_name["OperatorCodeApi"],
    cloudlet_pb2.DESCRIPTOR.services_by_name["CloudletApi"],
    cloudlet_pb2.DESCRIPTOR.services_by_name["CloudletInfoApi"],
    cloudlet_pb2.DESCRIPTOR.services_by_name["GPUDriverApi"],
    zone_pb2.DESCRIPTOR.services_by_name["ZoneApi"],
    zonepool_pb2.DESCRIPTOR.services_by_name["ZonePoolApi"],
    clusterinst_pb2.DESCRIPTOR.services_by_name["ClusterInstApi"],
    app_pb2.DESCRIPTOR.services_by_name["AppApi"],
    appinst_pb2.DESCRIPTOR.services_by_name["AppInstApi"],
    restagtable_pb2.DESCRIPTOR.services_by_name["ResTagTableApi"],
    autoprovpolicy_pb2.DESCRIPTOR.services_by_name["AutoProvPolicyApi"],
    autoscalepolicy_pb2.DESCRIPTOR.services_by_name["AutoScalePolicyApi"],
    trustpolicy_pb2.DESCRIPTOR.services_by_name["TrustPolicyApi"],
    alertpolicy_pb2.DESCRIPTOR.services_by_name["AlertPolicyApi"],
    vmpool_pb2.DESCRIPTOR.services_by_name["VMPoolApi"],
    network_pb2.DESCRIPTOR.services_by_name["NetworkApi"],
]
# Services whose every RPC is fuzzed, whatever its verb (Register, RunDebug, ...).
WHOLE_SERVICES = [
    org_pb2.DESCRIPTOR.services_by_name["OrganizationApi"],
    ratelimit_pb2.DESCRIPTOR.services_by_name["RateLimitSettingsApi"],
    trustpolicyexception_pb2.DESCRIPTOR.services_by_name["TrustPolicyExceptionApi"],
    cloudlet_pb2.DESCRIPTOR.services_by_name["CloudletManagedClusterApi"],
    baremetalhost_pb2.DESCRIPTOR.services_by_name["BareMetalHostApi"],
    appinst_pb2.DESCRIPTOR.services_by_name["AppInstLatencyApi"],
    svcnode_pb2.DESCRIPTOR.services_by_name["SvcNodeApi"],
    debug_pb2.DESCRIPTOR.services_by_name["DebugApi"],
]
PREFIXES = ("Create", "Update", "Delete", "Show", "Inject")
_ALL = [m for s in SERVICES for m in s.methods if m.name.startswith(PREFIXES)] + [
    m for s in WHOLE_SERVICES for m in s.methods
]
# Calls that only read, or ask the (absent) DMEs and child nodes: fewer examples, the time
# goes to the calls that change things.
READ_ONLY = ("Show", "OrganizationInUse", "RequestAppInstLatency", "RunDebug")
# Deletes last, dependents first, so updates and dependents find the seeded objects.
METHODS: list[MethodDescriptor] = [m for m in _ALL if not m.name.startswith("Delete")] + [
    m for m in reversed(_ALL) if m.name.startswith("Delete")
]
SETTINGS_METHODS = list(settings_pb2.DESCRIPTOR.services_by_name["SettingsApi"].methods)

# Names a person would type: some valid, some colliding, some empty. Shared by every key so
# that objects refer to each other (an App's flavor, an AppInst's cloudlet, ...).
NAMES = ["", "dev", "oper", "x1", "a-b", "1.0", "m1.small", "fakeccrm", "local", "Ü"]
PLATFORM = "fakeccrm"

ObjectMessage = TypeVar("ObjectMessage", bound=Message)

IGNORE = common_pb2.IGNORE_CRM_AND_TRANSIENT_STATE
SECOND = 1_000_000_000
CLOUDLET_KEY = cloudletkey_pb2.CloudletKey(organization="oper", name="x1")
APP_KEY = app_pb2.AppKey(organization="dev", name="x1", version="1.0")
POLICY_KEY = {"organization": "dev", "name": "x1"}
RL_KEY = ratelimit_pb2.RateLimitSettingsKey(
    api_name="FindCloudlet",
    api_endpoint_type=ratelimit_pb2.DME,
    rate_limit_target=ratelimit_pb2.PER_IP,
)

# A flavor at the uint64 limits, referable by the random keys: sums of resources must not overflow.
HUGE_FLAVOR = flavor_pb2.Flavor(
    key=flavor_pb2.FlavorKey(name="m1.small"), ram=2**64 - 1, vcpus=2**64 - 1, disk=2**64 - 1
)

# Valid objects that random values are laid over, so that checks past the first one run.
TEMPLATES: dict[str, Message] = {
    "Flavor": flavor_pb2.Flavor(key=flavor_pb2.FlavorKey(name="x1"), ram=1024, vcpus=1, disk=10),
    "Cloudlet": cloudlet_pb2.Cloudlet(
        key=CLOUDLET_KEY,
        location=loc_pb2.Loc(latitude=37.1, longitude=-122.4),
        num_dynamic_ips=10,
        platform_type=PLATFORM,
        crm_override=IGNORE,
    ),
    "App": app_pb2.App(
        key=APP_KEY,
        image_type=app_pb2.IMAGE_TYPE_DOCKER,
        deployment="kubernetes",
        image_path="docker.io/dev/x1:1.0",
        access_ports="tcp:80",
        default_flavor=flavor_pb2.FlavorKey(name="x1"),
    ),
    "ClusterInst": clusterinst_pb2.ClusterInst(
        key=cluster_pb2.ClusterKey(organization="dev", name="x1"),
        cloudlet_key=CLOUDLET_KEY,
        flavor=flavor_pb2.FlavorKey(name="x1"),
        deployment="kubernetes",
        num_masters=1,
        num_nodes=1,
        crm_override=IGNORE,
    ),
    "AppInst": appinst_pb2.AppInst(
        key=appinst_pb2.AppInstKey(organization="dev", name="x1"),
        app_key=APP_KEY,
        cloudlet_key=CLOUDLET_KEY,
        crm_override=IGNORE,
    ),
    "AutoScalePolicy": autoscalepolicy_pb2.AutoScalePolicy(
        key=POLICY_KEY,
        min_nodes=1,
        max_nodes=2,
        target_cpu=50,  # type: ignore[arg-type]
    ),
    "AutoProvPolicy": autoprovpolicy_pb2.AutoProvPolicy(
        key=POLICY_KEY,
        deploy_client_count=1,
        deploy_interval_count=1,  # type: ignore[arg-type]
    ),
    "FlowRateLimitSettings": ratelimit_pb2.FlowRateLimitSettings(
        key=ratelimit_pb2.FlowRateLimitSettingsKey(flow_settings_name="x1", rate_limit_key=RL_KEY),
        settings=ratelimit_pb2.FlowSettings(
            flow_algorithm=ratelimit_pb2.TOKEN_BUCKET_ALGORITHM, reqs_per_second=10, burst_size=5
        ),
    ),
    "MaxReqsRateLimitSettings": ratelimit_pb2.MaxReqsRateLimitSettings(
        key=ratelimit_pb2.MaxReqsRateLimitSettingsKey(
            max_reqs_settings_name="x1", rate_limit_key=RL_KEY
        ),
        settings=ratelimit_pb2.MaxReqsSettings(
            max_reqs_algorithm=ratelimit_pb2.FIXED_WINDOW_ALGORITHM,
            max_requests=10,
            interval=SECOND,
        ),
    ),
    "TrustPolicyException": trustpolicyexception_pb2.TrustPolicyException(
        key=trustpolicyexception_pb2.TrustPolicyExceptionKey(
            app_key=APP_KEY,
            zone_pool_key=zonepool_pb2.ZonePoolKey(organization="oper", name="x1"),
            name="x1",
        ),
        outbound_security_rules=[
            trustpolicy_pb2.SecurityRule(
                protocol="tcp", port_range_min=443, port_range_max=443, remote_cidr="10.0.0.0/8"
            )
        ],
    ),
    "AlertPolicy": alertpolicy_pb2.AlertPolicy(
        key=POLICY_KEY,  # type: ignore[arg-type]
        cpu_utilization_limit=80,
        severity="warning",
        trigger_time=30 * SECOND,
    ),
}


# --- the Controller, on its own loop ---------------------------------------------------


@dataclass
class Served:
    """A Controller whose loop runs in a background thread, and a blocking channel to it."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    harness: ControllerHarness
    ctl: Controller
    channel: grpc.Channel

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the Controller's loop and wait (bounded) for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def call(self, method: MethodDescriptor, request: Message) -> grpc.StatusCode:
        """Call `method` with `request` over gRPC; the status code it ended with."""
        path = f"/{method.containing_service.full_name}/{method.name}"
        out = GetMessageClass(method.output_type)
        code, details = grpc.StatusCode.OK, ""
        try:
            if method.server_streaming:
                stream = self.channel.unary_stream(
                    path,
                    request_serializer=type(request).SerializeToString,
                    response_deserializer=out.FromString,
                )
                for _ in stream(request, timeout=CALL_TIMEOUT):
                    pass
            else:
                unary = self.channel.unary_unary(
                    path,
                    request_serializer=type(request).SerializeToString,
                    response_deserializer=out.FromString,
                )
                unary(request, timeout=CALL_TIMEOUT)
        except grpc.RpcError as err:
            failed: Any = err  # a grpc.Call as well: code() and details()
            code, details = failed.code(), failed.details()
        assert code not in FORBIDDEN, f"{method.name} answered {code}: {details}"
        return code


@pytest.fixture(scope="module")
def served(etcd_server: ServerProcess, redis_server: ServerProcess) -> Iterator[Served]:
    """One Controller for the module, on a fresh etcd namespace and Redis database."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-controller", daemon=True)
    thread.start()
    harness = ControllerHarness(
        etcd_server.client_url,
        f"/test/fuzz{uuid.uuid4().hex[:8]}/",
        redis_server.client_url,
        next(_REDIS_DBS),
    )

    async def start() -> Controller:
        ctl = await harness.start()
        await ctl.redis.flushdb()
        await put_features(ctl, features(PLATFORM))
        return ctl

    def seed(ctl: Controller) -> None:
        """The flavor and cloudlet the templates refer to, so ClusterInsts and AppInsts go deep."""
        flavors = flavor_pb2.DESCRIPTOR.services_by_name["FlavorApi"]
        cloudlets = cloudlet_pb2.DESCRIPTOR.services_by_name["CloudletApi"]
        apps = app_pb2.DESCRIPTOR.services_by_name["AppApi"]
        infos = cloudlet_pb2.DESCRIPTOR.services_by_name["CloudletInfoApi"]
        info = cloudlet_pb2.CloudletInfo(
            key=CLOUDLET_KEY,
            state=appcommon_pb2.CLOUDLET_STATE_READY,
            flavors=[cloudlet_pb2.FlavorInfo(name="m1.large", vcpus=16, ram=32768, disk=100)],
        )
        for method, obj in [
            (flavors.methods_by_name["CreateFlavor"], TEMPLATES["Flavor"]),
            (cloudlets.methods_by_name["CreateCloudlet"], TEMPLATES["Cloudlet"]),
            (infos.methods_by_name["InjectCloudletInfo"], info),
            (flavors.methods_by_name["CreateFlavor"], HUGE_FLAVOR),
            (apps.methods_by_name["CreateApp"], TEMPLATES["App"]),
        ]:
            assert result.call(method, obj) == grpc.StatusCode.OK, method.name

    ctl = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
    channel = grpc.insecure_channel(ctl.addr)
    result = Served(loop, thread, harness, ctl, channel)
    try:
        seed(ctl)
        yield result
    finally:
        channel.close()

        async def stop() -> None:
            with contextlib.suppress(Exception):
                await ctl.store.delete_prefix("")
            await ctl.redis.flushdb()
            await harness.stop_all()

        result.run(stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


# --- random requests ---------------------------------------------------------------------


@st.composite
def _plausible(draw: st.DrawFn, msg: Message, depth: int = 3) -> Message:
    """Fill every string of a key (and its sub-keys) from NAMES, so objects meet."""
    desc: Descriptor = msg.DESCRIPTOR
    for field in desc.fields:
        if field.is_repeated:
            continue
        if field.type == FieldDescriptor.TYPE_STRING:
            setattr(msg, field.name, draw(st.sampled_from(NAMES)))
        elif field.message_type is not None and depth > 0:
            draw(_plausible(getattr(msg, field.name), depth - 1))
    return msg


def _overlay(draw: st.DrawFn, template: ObjectMessage, random: Message) -> ObjectMessage:
    """`template` with one or two of `random`'s set fields laid over it."""
    present = [f for f, _ in random.ListFields()]
    keep = set(draw(st.lists(st.sampled_from(present), max_size=2))) if present else set()
    patch = type(random)()
    patch.CopyFrom(random)
    out = type(template)()
    out.CopyFrom(template)
    for field in present:
        if field not in keep:
            patch.ClearField(field.name)
        else:
            out.ClearField(field.name)
    out.MergeFrom(patch)
    return out


_ODD_TEXT = st.sampled_from(["x" * 70_000, "\x00", "🙂" * 300, " ", "a/b", '{"k":1}', "\u202e"])


@st.composite
def requests(draw: st.DrawFn, cls: type[ObjectMessage]) -> ObjectMessage:
    """A random `cls`, its key often plausible, its field mask often made of real paths."""
    msg = draw(messages(cls))
    desc: Descriptor = msg.DESCRIPTOR
    template = TEMPLATES.get(desc.name)
    if template is not None and draw(st.booleans()):
        msg = _overlay(draw, template, msg)
    dyn: Any = msg  # fields by name, whatever the class
    for ref in desc.fields:  # the key and every reference to another object's key
        kind = ref.message_type
        if kind is None or ref.is_repeated or not kind.name.endswith("Key"):
            continue
        if draw(st.booleans()):
            getattr(msg, ref.name).Clear()
            draw(_plausible(getattr(msg, ref.name)))
    if "fields" in desc.fields_by_name and draw(st.booleans()):
        paths = list(all_field_paths(desc))
        mask = draw(st.lists(st.sampled_from(paths) | st.text(max_size=4), max_size=4))
        del dyn.fields[:]
        dyn.fields.extend(mask)
    strings = [
        f for f in desc.fields if f.type == FieldDescriptor.TYPE_STRING and not f.is_repeated
    ]
    if strings and draw(st.integers(0, 5)) == 0:
        setattr(msg, draw(st.sampled_from(strings)).name, draw(_ODD_TEXT))
    enums = [f for f in desc.fields if f.type == FieldDescriptor.TYPE_ENUM and not f.is_repeated]
    if enums and draw(st.integers(0, 5)) == 0:  # a number the proto does not define
        setattr(msg, draw(st.sampled_from(enums)).name, draw(st.sampled_from([99, -1, 2**31 - 1])))
    if "crm_override" in desc.fields_by_name:
        dyn.crm_override = IGNORE
    if desc.name == "Cloudlet" and draw(st.booleans()):
        dyn.platform_type = PLATFORM
    return msg


# EDGE_FUZZ_EXAMPLES=N runs N random (not derandomized) examples per RPC, to hunt for crashes
# by hand; CI runs the fixed, derandomized 40.
HUNT = int(os.environ.get("EDGE_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=HUNT or 40,
    deadline=None,
    derandomize=not HUNT,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("method", METHODS, ids=[m.name for m in METHODS])
def test_random_requests_get_clean_codes(served: Served, method: MethodDescriptor) -> None:
    """Every object RPC answers OK or a clean refusal, whatever the field values."""
    cls = GetMessageClass(method.input_type)
    seen: set[grpc.StatusCode] = set()
    examples = FUZZ.max_examples // 5 if method.name.startswith(READ_ONLY) else FUZZ.max_examples

    @settings(FUZZ, max_examples=examples)
    @given(request=requests(cls))
    def check(request: Message) -> None:
        seen.add(served.call(method, request))

    check()
    assert seen, "no call was made"


def _reset(served: Served) -> None:
    method = settings_pb2.DESCRIPTOR.services_by_name["SettingsApi"].methods_by_name[
        "ResetSettings"
    ]
    assert served.call(method, settings_pb2.Settings()) == grpc.StatusCode.OK


@pytest.mark.parametrize("method", SETTINGS_METHODS, ids=[m.name for m in SETTINGS_METHODS])
def test_random_settings_get_clean_codes(served: Served, method: MethodDescriptor) -> None:
    """Settings updates with random values are refused cleanly; the defaults come back after."""
    seen: set[grpc.StatusCode] = set()

    @FUZZ
    @given(request=requests(settings_pb2.Settings))
    def check(request: settings_pb2.Settings) -> None:
        seen.add(served.call(method, request))

    try:
        check()
    finally:
        _reset(served)
    assert seen, "no call was made"


def _rpc(service: str, method: str) -> MethodDescriptor:
    for svc in [*SERVICES, settings_pb2.DESCRIPTOR.services_by_name["SettingsApi"]]:
        if svc.name == service:
            found: MethodDescriptor = svc.methods_by_name[method]
            return found
    raise KeyError(service)


def test_usage_of_clusters_beyond_uint64_is_capped(served: Served) -> None:
    """Found by hunting: two clusters of a uint64-limit flavor made the usage reports INTERNAL.

    Each cluster is valid on its own (the cloudlet reports no maxima), but their sum does not
    fit the reports' uint64 fields; the reports now cap at the maximum instead of failing.
    """
    # Names the random keys never use, so the fuzzing before cannot have deleted them.
    flavor = flavor_pb2.Flavor()
    flavor.CopyFrom(HUGE_FLAVOR)
    flavor.key.name = "huge.u64"
    assert served.call(_rpc("FlavorApi", "CreateFlavor"), flavor) == grpc.StatusCode.OK
    key = cloudletkey_pb2.CloudletKey(organization="oper", name="big")
    cloudlet = cloudlet_pb2.Cloudlet()
    cloudlet.CopyFrom(TEMPLATES["Cloudlet"])
    cloudlet.key.CopyFrom(key)
    assert served.call(_rpc("CloudletApi", "CreateCloudlet"), cloudlet) == grpc.StatusCode.OK
    info = cloudlet_pb2.CloudletInfo(
        key=key,
        state=appcommon_pb2.CLOUDLET_STATE_READY,
        flavors=[
            cloudlet_pb2.FlavorInfo(name="huge", vcpus=2**64 - 1, ram=2**64 - 1, disk=2**64 - 1)
        ],
    )
    assert served.call(_rpc("CloudletInfoApi", "InjectCloudletInfo"), info) == grpc.StatusCode.OK
    for name in ("big1", "big2"):
        cluster = clusterinst_pb2.ClusterInst()
        cluster.CopyFrom(TEMPLATES["ClusterInst"])
        cluster.key.name = name
        cluster.cloudlet_key.CopyFrom(key)
        cluster.flavor.CopyFrom(flavor.key)
        cluster.num_nodes = 2
        create = _rpc("ClusterInstApi", "CreateClusterInst")
        assert served.call(create, cluster) == grpc.StatusCode.OK

    shown = cloudlet_pb2_grpc.CloudletApiStub(served.channel).ShowCloudletResourceUsage(
        cloudlet_pb2.Cloudlet(key=key), timeout=CALL_TIMEOUT
    )
    [usage] = list(shown)
    ram = {row.name: row.value for row in usage.info}["RAM"]
    assert ram == 2**64 - 1
    for infra in (False, True):
        request = cloudlet_pb2.CloudletResourceUsage(key=key, infra_usage=infra)
        got = served.call(_rpc("CloudletApi", "GetCloudletResourceUsage"), request)
        assert got == grpc.StatusCode.OK
    shown_clusters = _rpc("ClusterInstApi", "ShowClusterResourceUsage")
    assert served.call(shown_clusters, clusterinst_pb2.ClusterInst()) == grpc.StatusCode.OK
