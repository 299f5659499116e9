"""RateLimitSettingsApi against a real etcd: defaults, validation texts, show aggregation."""

from __future__ import annotations

from typing import Any

import pytest
from edgeproto import ratelimit_pb2 as rl
from edgeproto import settings_pb2

from edge_cloud.errors import (
    AlreadyExists,
    EdgeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from services.controller.api.ratelimit import (
    DEFAULT_FLOW_SETTINGS,
    RateLimitSettingsApi,
    ensure_defaults,
)
from services.controller.api.settings import SettingsApi
from tests.integration.controller.conftest import StartInstance

CTX: Any = None
FIND = rl.RateLimitSettingsKey(
    api_name="FindCloudlet",
    api_endpoint_type=rl.ApiEndpointType.DME,
    rate_limit_target=rl.RateLimitTarget.PER_IP,
)
FIND_JSON = '{"api_name":"FindCloudlet","api_endpoint_type":"Dme","rate_limit_target":"PerIp"}'
TOKEN = rl.FlowRateLimitAlgorithm.TOKEN_BUCKET_ALGORITHM
LEAKY = rl.FlowRateLimitAlgorithm.LEAKY_BUCKET_ALGORITHM
FIXED = rl.MaxReqsRateLimitAlgorithm.FIXED_WINDOW_ALGORITHM


def flow(name: str = "f1", rps: float = 10, burst: int = 5, algo: Any = TOKEN) -> Any:
    return rl.FlowRateLimitSettings(
        key=rl.FlowRateLimitSettingsKey(flow_settings_name=name, rate_limit_key=FIND),
        settings=rl.FlowSettings(flow_algorithm=algo, reqs_per_second=rps, burst_size=burst),
    )


def max_reqs(name: str = "m1", count: int = 3, interval: int = 10**9, algo: Any = FIXED) -> Any:
    return rl.MaxReqsRateLimitSettings(
        key=rl.MaxReqsRateLimitSettingsKey(max_reqs_settings_name=name, rate_limit_key=FIND),
        settings=rl.MaxReqsSettings(max_reqs_algorithm=algo, max_requests=count, interval=interval),
    )


async def refused(call: Any, error: type[EdgeError]) -> str:
    with pytest.raises(error) as caught:
        await call
    return caught.value.message


async def collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


async def test_defaults_written_once_where_absent(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = RateLimitSettingsApi(ctl.runtime)
    assert await ensure_defaults(ctl.engine) == len(DEFAULT_FLOW_SETTINGS)
    shown = await collect(api.ShowFlowRateLimitSettings(rl.FlowRateLimitSettings(), CTX))
    assert sorted(f.key.flow_settings_name for f in shown) == [
        "dmeglobalallreqs1",
        "dmeglobalperip1",
        "persistentconnectionallreqs1",
        "verifylocallreqs1",
        "verifylocperip1",
    ]
    # an operator's change survives the next start; a deleted default comes back
    glob = next(f for f in shown if f.key.flow_settings_name == "dmeglobalperip1")
    glob.settings.reqs_per_second = 7
    glob.fields[:] = ["3.2"]
    await api.UpdateFlowRateLimitSettings(glob, CTX)
    gone = next(f for f in shown if f.key.flow_settings_name == "verifylocperip1")
    await api.DeleteFlowRateLimitSettings(gone, CTX)
    assert await ensure_defaults(ctl.engine) == 1
    per_ip = rl.RateLimitSettingsKey(api_name="Global", rate_limit_target=rl.RateLimitTarget.PER_IP)
    (agg,) = await collect(api.ShowRateLimitSettings(rl.RateLimitSettings(key=per_ip), CTX))
    assert agg.flow_settings["dmeglobalperip1"].reqs_per_second == 7
    assert await ensure_defaults(ctl.engine) == 0


async def test_flow_and_max_reqs_crud(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = RateLimitSettingsApi(ctl.runtime)
    await api.CreateFlowRateLimitSettings(flow(), CTX)
    assert await refused(api.CreateFlowRateLimitSettings(flow(), CTX), AlreadyExists) == (
        f'FlowRateLimitSettings key {{"flow_settings_name":"f1","rate_limit_key":{FIND_JSON}}} '
        "already exists"
    )
    await api.CreateMaxReqsRateLimitSettings(max_reqs(), CTX)
    await api.CreateMaxReqsRateLimitSettings(max_reqs("m2", count=100), CTX)
    (agg,) = await collect(api.ShowRateLimitSettings(rl.RateLimitSettings(key=FIND), CTX))
    assert agg.key == FIND
    assert set(agg.flow_settings) == {"f1"}
    assert set(agg.max_reqs_settings) == {"m1", "m2"}
    assert agg.max_reqs_settings["m2"].max_requests == 100

    change = max_reqs(count=50)
    change.fields[:] = ["3.2"]
    await api.UpdateMaxReqsRateLimitSettings(change, CTX)
    (m1,) = await collect(api.ShowMaxReqsRateLimitSettings(max_reqs(count=0, interval=0), CTX))
    assert (m1.settings.max_requests, m1.settings.interval) == (50, 10**9)
    missing = max_reqs("nope")
    missing.fields[:] = ["3.2"]
    assert await refused(api.UpdateMaxReqsRateLimitSettings(missing, CTX), NotFound) == (
        f"RateLimitSettings key {FIND_JSON} not found"
    )
    missing_flow = flow("nope")
    missing_flow.fields[:] = ["3.2"]
    assert await refused(api.UpdateFlowRateLimitSettings(missing_flow, CTX), NotFound) == (
        f'FlowRateLimitSettings key {{"flow_settings_name":"nope","rate_limit_key":{FIND_JSON}}} '
        "not found"
    )
    assert await refused(api.UpdateFlowRateLimitSettings(flow(), CTX), InvalidArgument) == (
        "nothing specified to update"
    )
    await api.DeleteMaxReqsRateLimitSettings(max_reqs(), CTX)
    assert await refused(api.DeleteMaxReqsRateLimitSettings(max_reqs(), CTX), NotFound) == (
        f'MaxReqsRateLimitSettings key {{"max_reqs_settings_name":"m1","rate_limit_key":'
        f"{FIND_JSON}}} not found"
    )
    shown = await collect(api.ShowMaxReqsRateLimitSettings(rl.MaxReqsRateLimitSettings(), CTX))
    assert [m.key.max_reqs_settings_name for m in shown] == ["m2"]


@pytest.mark.parametrize(
    ("bad", "text"),
    [
        (flow(name=""), "Invalid FlowSettingsName"),
        (flow(algo=0), "Invalid FlowAlgorithm"),
        (flow(rps=0), "Invalid ReqsPerSecond 0.000000, must be greater than 0"),
        (flow(burst=0), "Invalid BurstSize 0, must be greater than 0"),
        (flow(algo=LEAKY), "BurstSize does not apply for the leaky bucket algorithm"),
        (max_reqs(name=""), "Invalid MaxReqsSettingsName"),
        (max_reqs(algo=0), "Invalid MaxReqsAlgorithm"),
        (max_reqs(count=-1), "Invalid MaxRequests -1, must be greater than 0"),
        (max_reqs(interval=0), "Invalid Interval 0, must be greater than 0"),
    ],
)
async def test_validation_texts(start_instance: StartInstance, bad: Any, text: str) -> None:
    ctl = await start_instance()
    api = RateLimitSettingsApi(ctl.runtime)
    create = (
        api.CreateFlowRateLimitSettings
        if isinstance(bad, rl.FlowRateLimitSettings)
        else api.CreateMaxReqsRateLimitSettings
    )
    assert await refused(create(bad, CTX), InvalidArgument) == text
    # and an update to the same invalid value is refused alike, nothing written
    good = flow() if isinstance(bad, rl.FlowRateLimitSettings) else max_reqs()
    await create(good, CTX)
    bad.fields[:] = ["3"]
    update = (
        api.UpdateFlowRateLimitSettings
        if isinstance(bad, rl.FlowRateLimitSettings)
        else api.UpdateMaxReqsRateLimitSettings
    )
    assert await refused(update(bad, CTX), InvalidArgument) == text


async def test_key_and_disabled(start_instance: StartInstance) -> None:
    ctl = await start_instance()
    api = RateLimitSettingsApi(ctl.runtime)
    no_target = flow()
    no_target.key.rate_limit_key.rate_limit_target = 0
    assert await refused(api.CreateFlowRateLimitSettings(no_target, CTX), InvalidArgument) == (
        "Invalid RateLimitTarget"
    )
    no_api = flow()
    no_api.key.rate_limit_key.api_name = ""
    assert await refused(api.DeleteFlowRateLimitSettings(no_api, CTX), InvalidArgument) == (
        "Invalid ApiName"
    )
    await SettingsApi(ctl.runtime).UpdateSettings(
        settings_pb2.Settings(disable_rate_limit=True, fields=["37"]), CTX
    )
    assert await refused(api.CreateFlowRateLimitSettings(flow(), CTX), FailedPrecondition) == (
        "DisableRateLimit must be false to CreateFlowRateLimitSettings"
    )
    assert await refused(
        collect(api.ShowRateLimitSettings(rl.RateLimitSettings(), CTX)), FailedPrecondition
    ) == ("DisableRateLimit must be false to ShowRateLimitSettings")
    assert await refused(
        collect(api.ShowMaxReqsRateLimitSettings(rl.MaxReqsRateLimitSettings(), CTX)),
        FailedPrecondition,
    ) == ("DisableRateLimit must be false to ShowMaxReqsRateLimitSettings")
