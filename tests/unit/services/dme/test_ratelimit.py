"""DME rate limiting: algorithms, fallbacks, settings and the exact texts (dme.md §2.11)."""

from __future__ import annotations

import grpc
import pytest
from edgeproto import ratelimit_pb2, settings_pb2

from edge_cloud.errors import ResourceExhausted
from edge_cloud.objects.durations import MILLISECOND, SECOND
from services.dme._ratelimit import (
    DEFAULT_SETTINGS,
    GLOBAL_API,
    PERSISTENT_CONNECTION_API,
    RateLimitManager,
    default_flow_settings,
)

FIND = "/distributed_match_engine.MatchEngineApi/FindCloudlet"
VERIFY = "/distributed_match_engine.Location/VerifyLocation"
DME = ratelimit_pb2.ApiEndpointType.DME
ALL = ratelimit_pb2.RateLimitTarget.ALL_REQUESTS
PER_IP = ratelimit_pb2.RateLimitTarget.PER_IP


class Clock:
    def __init__(self) -> None:
        self.ns = 1_000 * SECOND

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limits(clock: Clock) -> RateLimitManager:
    return RateLimitManager(clock=clock)


def rkey(api: str, target: int, endpoint: int = DME) -> ratelimit_pb2.RateLimitSettingsKey:
    return ratelimit_pb2.RateLimitSettingsKey(
        api_name=api,
        api_endpoint_type=endpoint,  # type: ignore[arg-type]
        rate_limit_target=target,  # type: ignore[arg-type]
    )


def flow(
    api: str,
    target: int,
    name: str,
    rps: float,
    burst: int = 0,
    algorithm: int = ratelimit_pb2.TOKEN_BUCKET_ALGORITHM,
    endpoint: int = DME,
) -> ratelimit_pb2.FlowRateLimitSettings:
    return ratelimit_pb2.FlowRateLimitSettings(
        key=ratelimit_pb2.FlowRateLimitSettingsKey(
            flow_settings_name=name, rate_limit_key=rkey(api, target, endpoint)
        ),
        settings=ratelimit_pb2.FlowSettings(
            flow_algorithm=algorithm,  # type: ignore[arg-type]
            reqs_per_second=rps,
            burst_size=burst,
        ),
    )


def max_reqs(
    api: str, target: int, name: str, count: int, interval_ns: int
) -> ratelimit_pb2.MaxReqsRateLimitSettings:
    return ratelimit_pb2.MaxReqsRateLimitSettings(
        key=ratelimit_pb2.MaxReqsRateLimitSettingsKey(
            max_reqs_settings_name=name, rate_limit_key=rkey(api, target)
        ),
        settings=ratelimit_pb2.MaxReqsSettings(
            max_reqs_algorithm=ratelimit_pb2.FIXED_WINDOW_ALGORITHM,
            max_requests=count,
            interval=interval_ns,
        ),
    )


def passes(limits: RateLimitManager, n: int, method: str = FIND, ip: str = "10.0.0.1") -> None:
    for _ in range(n):
        assert limits.limit_call(method, ip) == 0


def refusal(limits: RateLimitManager, method: str = FIND, ip: str = "10.0.0.1") -> str:
    with pytest.raises(ResourceExhausted) as info:
        limits.limit_call(method, ip)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    return info.value.message


def test_defaults_are_the_originals() -> None:
    table = {
        (s.key.rate_limit_key.api_name, s.key.rate_limit_key.rate_limit_target): (
            s.key.flow_settings_name,
            s.settings.flow_algorithm,
            s.settings.reqs_per_second,
            s.settings.burst_size,
        )
        for s in default_flow_settings()
    }
    tb = ratelimit_pb2.TOKEN_BUCKET_ALGORITHM
    assert table == {
        (GLOBAL_API, ALL): ("dmeglobalallreqs1", tb, 25000, 250),
        (GLOBAL_API, PER_IP): ("dmeglobalperip1", tb, 10000, 100),
        ("VerifyLocation", ALL): ("verifylocallreqs1", tb, 5000, 50),
        ("VerifyLocation", PER_IP): ("verifylocperip1", tb, 1000, 25),
        (PERSISTENT_CONNECTION_API, ALL): ("persistentconnectionallreqs1", tb, 100, 10),
    }
    started = {(s.key.rate_limit_key.api_name) for s in DEFAULT_SETTINGS}
    assert started == {GLOBAL_API, "VerifyLocation"}


def test_global_per_ip_burst_then_the_quoted_text(limits: RateLimitManager) -> None:
    passes(limits, 100)
    assert refusal(limits) == (
        "Request for /distributed_match_engine.MatchEngineApi/FindCloudlet rate limited, "
        "please retry later. Error is: Client exceeded api rate limit per ip. "
        "Exceeded rate of 10000.000000 requests per second."
    )


def test_token_bucket_refills_at_its_rate(limits: RateLimitManager, clock: Clock) -> None:
    passes(limits, 25, VERIFY)
    refusal(limits, VERIFY)
    clock.ns += MILLISECOND  # 1000 rps: one token per millisecond
    passes(limits, 1, VERIFY)
    assert refusal(limits, VERIFY).endswith(
        "Error is: Client exceeded api rate limit per ip. "
        "Exceeded rate of 1000.000000 requests per second."
    )
    clock.ns += 10 * SECOND  # never more than the burst
    passes(limits, 25, VERIFY)
    refusal(limits, VERIFY)


def test_per_ip_limits_are_per_ip_and_all_requests_are_shared(limits: RateLimitManager) -> None:
    passes(limits, 25, VERIFY, "10.0.0.1")
    passes(limits, 25, VERIFY, "10.0.0.2")
    refusal(limits, VERIFY, "10.0.0.1")
    # A third client passes its own per-IP bucket but meets the all-requests one (50).
    assert refusal(limits, VERIFY, "10.0.0.3") == (
        "Request for /distributed_match_engine.Location/VerifyLocation rate limited, please "
        "retry later. Error is: Exceeded rate of 5000.000000 requests per second."
    )


def test_a_refused_call_still_used_the_earlier_limiters(limits: RateLimitManager) -> None:
    # Per-IP runs first and keeps its consumed token when all-requests then refuses.
    limits.update_flow(flow("FindCloudlet", PER_IP, "ip", 0.001, 2))
    limits.update_flow(flow("FindCloudlet", ALL, "all", 0.001, 1))
    passes(limits, 1)
    assert refusal(limits).endswith("Error is: Exceeded rate of 0.001000 requests per second.")
    limits.update_flow(flow("FindCloudlet", ALL, "all", 0.001, 5))  # a fresh, full bucket
    assert refusal(limits).endswith(
        "Error is: Client exceeded api rate limit per ip. "
        "Exceeded rate of 0.001000 requests per second."
    )


def test_missing_ip_skips_per_ip_limits(limits: RateLimitManager) -> None:
    passes(limits, 250, FIND, "")
    assert refusal(limits, FIND, "").endswith(
        "Error is: Exceeded rate of 25000.000000 requests per second."
    )


def test_api_without_limiter_falls_back_to_global(limits: RateLimitManager) -> None:
    limits.update_flow(flow("FindCloudlet", PER_IP, "fc", 10, 2))
    passes(limits, 2)
    assert refusal(limits).endswith("Exceeded rate of 10.000000 requests per second.")
    # Other methods still use Global, whose per-IP buckets all its methods share.
    register = "/distributed_match_engine.Session/RegisterClient"
    passes(limits, 60, register, "10.0.0.9")
    passes(limits, 40, "/distributed_match_engine.Location/GetLocation", "10.0.0.9")
    assert "10000.000000" in refusal(limits, register, "10.0.0.9")
    # Removing FindCloudlet's only settings hands it back to Global.
    limits.delete_flow(
        ratelimit_pb2.FlowRateLimitSettingsKey(
            flow_settings_name="fc", rate_limit_key=rkey("FindCloudlet", PER_IP)
        )
    )
    passes(limits, 100)
    assert "10000.000000" in refusal(limits)


def test_path_follows_the_service_the_client_called(limits: RateLimitManager) -> None:
    legacy = "/distributed_match_engine.MatchEngineApi/VerifyLocation"
    passes(limits, 25, legacy)
    assert refusal(limits, legacy).startswith(f"Request for {legacy} rate limited")
    # Same API name, so the same limiter whatever the service.
    assert refusal(limits, VERIFY).startswith(f"Request for {VERIFY} rate limited")


def test_fixed_window(limits: RateLimitManager, clock: Clock) -> None:
    limits.update_max_reqs(max_reqs("FindCloudlet", ALL, "fw", 3, 60 * SECOND))
    passes(limits, 3)
    clock.ns += 500 * MILLISECOND
    assert refusal(limits) == (
        "Request for /distributed_match_engine.MatchEngineApi/FindCloudlet rate limited, "
        "please retry later. Error is: Exceeded limit of 3, retry again in 59.5s."
    )
    clock.ns += 59 * SECOND + 500 * MILLISECOND  # exactly the interval: not yet reset
    assert refusal(limits).endswith("retry again in 0s.")
    clock.ns += 1
    passes(limits, 3)
    refusal(limits)


def test_fixed_window_starts_when_the_limiter_is_made(
    limits: RateLimitManager, clock: Clock
) -> None:
    limits.update_max_reqs(max_reqs("FindCloudlet", ALL, "fw", 1, 10 * SECOND))
    clock.ns += 9 * SECOND
    passes(limits, 1)
    assert refusal(limits).endswith("retry again in 1s.")
    clock.ns += 2 * SECOND
    passes(limits, 1)


def test_per_ip_fixed_window(limits: RateLimitManager, clock: Clock) -> None:
    limits.update_max_reqs(max_reqs("FindCloudlet", PER_IP, "fw", 2, SECOND))
    passes(limits, 2, ip="10.0.0.1")
    passes(limits, 2, ip="10.0.0.2")
    clock.ns += 250 * MILLISECOND
    assert refusal(limits, ip="10.0.0.1").endswith(
        "Error is: Client exceeded api rate limit per ip. Exceeded limit of 2, "
        "retry again in 750ms."
    )


def test_limiters_of_a_target_run_in_turn(limits: RateLimitManager) -> None:
    limits.update_flow(flow("FindCloudlet", ALL, "a", 1, 5))
    limits.update_max_reqs(max_reqs("FindCloudlet", ALL, "b", 2, SECOND))
    passes(limits, 2)
    assert refusal(limits).endswith("Exceeded limit of 2, retry again in 1s.")


def test_leaky_bucket_queues_instead_of_refusing(limits: RateLimitManager, clock: Clock) -> None:
    limits.update_flow(
        flow("FindCloudlet", ALL, "lb", 10, algorithm=ratelimit_pb2.LEAKY_BUCKET_ALGORITHM)
    )
    assert limits.limit_call(FIND, "10.0.0.1") == 0
    assert limits.limit_call(FIND, "10.0.0.1") == 100 * MILLISECOND
    assert limits.limit_call(FIND, "10.0.0.2") == 200 * MILLISECOND
    clock.ns += 200 * MILLISECOND
    assert limits.limit_call(FIND, "10.0.0.1") == 100 * MILLISECOND
    with pytest.raises(ResourceExhausted) as info:
        limits.limit_call(FIND, "10.0.0.1", deadline_ns=clock.ns + 150 * MILLISECOND)
    assert info.value.message == (
        "Request for /distributed_match_engine.MatchEngineApi/FindCloudlet rate limited, "
        "please retry later. Error is: error during leakybucker rate limiting: rate: "
        "Wait(n=1) would exceed context deadline."
    )
    # The refused call reserved nothing.
    assert limits.limit_call(FIND, "10.0.0.1", deadline_ns=clock.ns + SECOND) == 200 * MILLISECOND


def test_updating_all_requests_settings_restarts_the_bucket(limits: RateLimitManager) -> None:
    limits.update_flow(flow("FindCloudlet", ALL, "a", 1, 2))
    passes(limits, 2)
    refusal(limits)
    limits.update_flow(flow("FindCloudlet", ALL, "a", 1, 3))
    passes(limits, 3)
    refusal(limits)


def test_non_dme_settings_are_ignored(limits: RateLimitManager) -> None:
    controller = ratelimit_pb2.ApiEndpointType.UNKNOWN_API_ENDPOINT_TYPE
    limits.update_flow(flow("FindCloudlet", ALL, "x", 1, 1, endpoint=controller))
    passes(limits, 100)


def test_prune_drops_unsent_settings(limits: RateLimitManager) -> None:
    limits.update_flow(flow("FindCloudlet", ALL, "keep", 1, 1))
    limits.update_max_reqs(max_reqs("FindCloudlet", ALL, "drop", 1, SECOND))
    limits.prune_max_reqs([])
    limits.prune_flow(
        [
            ratelimit_pb2.FlowRateLimitSettingsKey(
                flow_settings_name="keep", rate_limit_key=rkey("FindCloudlet", ALL)
            )
        ]
    )
    passes(limits, 1)
    assert refusal(limits).endswith("Exceeded rate of 1.000000 requests per second.")
    limits.prune_flow([])  # Global goes too: nothing limits any more
    passes(limits, 1000)


def test_settings_switch_limiting_off_and_on(limits: RateLimitManager) -> None:
    passes(limits, 100)
    refusal(limits)
    limits.update_settings(
        settings_pb2.Settings(disable_rate_limit=True, rate_limit_max_tracked_ips=10)
    )
    assert not limits.enabled
    passes(limits, 1000)
    limits.update_settings(settings_pb2.Settings(rate_limit_max_tracked_ips=10))
    refusal(limits)


def test_test_mode_stays_unlimited(clock: Clock) -> None:
    limits = RateLimitManager(test_mode=True, clock=clock)
    limits.update_settings(settings_pb2.Settings(rate_limit_max_tracked_ips=10))
    assert not limits.enabled
    passes(limits, 1000)


def test_tracked_ips_are_capped(limits: RateLimitManager) -> None:
    limits.update_settings(settings_pb2.Settings(rate_limit_max_tracked_ips=2))
    passes(limits, 25, VERIFY, "10.0.0.1")
    refusal(limits, VERIFY, "10.0.0.1")
    passes(limits, 1, VERIFY, "10.0.0.2")
    passes(limits, 1, VERIFY, "10.0.0.3")  # evicts 10.0.0.1, the oldest
    passes(limits, 1, VERIFY, "10.0.0.1")  # a fresh bucket


def test_persistent_connection_messages(limits: RateLimitManager) -> None:
    # Before the Controller's settings arrive, stream messages fall back to Global.
    for _ in range(100):
        limits.limit_api(PERSISTENT_CONNECTION_API, "10.0.0.1")
    with pytest.raises(ResourceExhausted) as info:
        limits.limit_api(PERSISTENT_CONNECTION_API, "10.0.0.1")
    assert info.value.message == (
        "Client exceeded api rate limit per ip. Exceeded rate of 10000.000000 requests per second"
    )
    pc = next(
        s
        for s in default_flow_settings()
        if s.key.rate_limit_key.api_name == PERSISTENT_CONNECTION_API
    )
    limits.update_flow(pc)
    for _ in range(10):
        limits.limit_api(PERSISTENT_CONNECTION_API, "10.0.0.1")
    with pytest.raises(
        ResourceExhausted, match=r"^Exceeded rate of 100\.000000 requests per second$"
    ):
        limits.limit_api(PERSISTENT_CONNECTION_API, "10.0.0.1")
