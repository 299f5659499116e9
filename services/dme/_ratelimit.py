"""Per-method, per-client rate limiting of DME calls (dme.md §2.11).

The Controller owns the settings (`FlowRateLimitSettings`, `MaxReqsRateLimitSettings`,
pushed over notify; only `api_endpoint_type = DME` ones apply) and the DME enforces them,
as the original's `pkg/cloudcommon/ratelimit` does:

- Each API (the gRPC *method* name: `FindCloudlet`, `VerifyLocation`, ..., or
  `PersistentConnection` for edge-events messages) has limiters for ALL_REQUESTS and per
  client IP; an API without its own entry falls back to `Global`.
- A call passes the per-IP limiters first (messages prefixed "Client exceeded api rate
  limit per ip. "), then the all-requests ones; within a target every limiter runs in turn
  (each consumes its token) and the first refusal wins.
- Token bucket: `golang.org/x/time/rate` semantics, full at start, refill `rps`/s up to
  `burst`; refusal "Exceeded rate of <rps %f> requests per second".
- Leaky bucket: a rate limiter of burst 1 that *delays* instead of refusing; `limit_call`
  returns the delay for the caller to sleep (refused only when it would pass the caller's
  deadline, in the original's words).
- Fixed window: `max_requests` per `interval`, the window starting when the limiter is
  created and restarting once `interval` has passed; refusal "Exceeded limit of <N>, retry
  again in <remaining Go duration>".

A refusal is `ResourceExhausted("Request for <full method> rate limited, please retry
later. Error is: <limiter message>.")`.

Deviations (dme.md guidance "fix and document"): per-IP limiters are keyed by the bare IP,
not IP:port (the caller passes `peer_ip`); test mode stays unlimited even after Settings
arrive (the original's Settings update re-enabled limiting in test mode); limiters of one
target run in settings-name order, not Go map order; evicting tracked IPs drops the
oldest first (the original: arbitrary).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from edgeproto import ratelimit_pb2, settings_pb2

from edge_cloud.errors import ResourceExhausted
from edge_cloud.objects.durations import SECOND, format_duration

__all__ = [
    "DEFAULT_MAX_TRACKED_IPS",
    "DEFAULT_SETTINGS",
    "GLOBAL_API",
    "PERSISTENT_CONNECTION_API",
    "RateLimitManager",
    "default_flow_settings",
]

GLOBAL_API: Final = "Global"
"""The API name whose limiters apply to methods without their own."""

PERSISTENT_CONNECTION_API: Final = "PersistentConnection"
"""The API name edge-events stream messages are limited under."""

DEFAULT_MAX_TRACKED_IPS: Final = 10000
"""`Settings.rate_limit_max_tracked_ips` default."""

_DME: Final = ratelimit_pb2.ApiEndpointType.DME
_ALL: Final = ratelimit_pb2.RateLimitTarget.ALL_REQUESTS
_PER_IP: Final = ratelimit_pb2.RateLimitTarget.PER_IP
_PER_USER: Final = ratelimit_pb2.RateLimitTarget.PER_USER
_TOKEN_BUCKET: Final = ratelimit_pb2.FlowRateLimitAlgorithm.TOKEN_BUCKET_ALGORITHM
_LEAKY_BUCKET: Final = ratelimit_pb2.FlowRateLimitAlgorithm.LEAKY_BUCKET_ALGORITHM
_FIXED_WINDOW: Final = ratelimit_pb2.MaxReqsRateLimitAlgorithm.FIXED_WINDOW_ALGORITHM

Clock = Callable[[], int]
"""Monotonic nanoseconds (`time.monotonic_ns`); tests pass a fake."""


def _flow(
    api: str, target: ratelimit_pb2.RateLimitTarget.ValueType, name: str, rps: float, burst: int
) -> ratelimit_pb2.FlowRateLimitSettings:
    return ratelimit_pb2.FlowRateLimitSettings(
        key=ratelimit_pb2.FlowRateLimitSettingsKey(
            flow_settings_name=name,
            rate_limit_key=ratelimit_pb2.RateLimitSettingsKey(
                api_name=api, api_endpoint_type=_DME, rate_limit_target=target
            ),
        ),
        settings=ratelimit_pb2.FlowSettings(
            flow_algorithm=_TOKEN_BUCKET, reqs_per_second=rps, burst_size=burst
        ),
    )


def default_flow_settings() -> list[ratelimit_pb2.FlowRateLimitSettings]:
    """The original's built-in DME settings (`edgeproto.GetDefaultRateLimitSettings`).

    The Controller stores these; the DME starts with the Global and VerifyLocation ones
    (`DEFAULT_SETTINGS`) until notify delivers the stored set.

    Returns:
        Fresh messages, safe to modify.
    """
    return [
        _flow(GLOBAL_API, _ALL, "dmeglobalallreqs1", 25000, 250),
        _flow(GLOBAL_API, _PER_IP, "dmeglobalperip1", 10000, 100),
        _flow("VerifyLocation", _ALL, "verifylocallreqs1", 5000, 50),
        _flow("VerifyLocation", _PER_IP, "verifylocperip1", 1000, 25),
        _flow(PERSISTENT_CONNECTION_API, _ALL, "persistentconnectionallreqs1", 100, 10),
    ]


DEFAULT_SETTINGS: Final = tuple(
    s
    for s in default_flow_settings()
    if s.key.rate_limit_key.api_name in (GLOBAL_API, "VerifyLocation")
)
"""What the DME enforces from start-up, before notify delivers the Controller's settings."""


class _Refused(Exception):
    """A limiter said no; the message is the limiter's own text."""


class _TokenBucket:
    """`rate.Limiter.Allow()`: refill `rps` per second up to `burst`, one token a call."""

    __slots__ = ("_burst", "_clock", "_last", "_rps", "_tokens")

    def __init__(self, rps: float, burst: int, clock: Clock) -> None:
        self._rps = rps
        self._burst = burst
        self._clock = clock
        self._tokens = float(burst)  # x/time/rate starts full (its `last` is the zero time)
        self._last = clock()

    def _advance(self, now: int) -> float:
        elapsed = max(0, now - self._last)
        return min(float(self._burst), self._tokens + elapsed / SECOND * self._rps)

    def limit(self, deadline_ns: int | None) -> int:
        del deadline_ns  # Allow() never waits
        if self._rps <= 0:  # rate.Limit(0): the burst is all there will ever be
            if self._burst < 1:
                raise _Refused(f"Exceeded rate of {self._rps:f} requests per second")
            self._burst -= 1
            return 0
        now = self._clock()
        tokens = self._advance(now) - 1
        # rate.Limiter rounds the wait down to whole nanoseconds: a deficit worth less
        # than 1 ns still passes.
        if tokens < 0 and int(-tokens / self._rps * SECOND) > 0:
            raise _Refused(f"Exceeded rate of {self._rps:f} requests per second")
        self._tokens = tokens
        self._last = now
        return 0


class _LeakyBucket:
    """`rate.Limiter.Wait()` with burst 1: queue calls `1/rps` apart."""

    __slots__ = ("_clock", "_last", "_rps", "_tokens")

    def __init__(self, rps: float, clock: Clock) -> None:
        self._rps = rps
        self._clock = clock
        self._tokens = 1.0
        self._last = clock()

    def limit(self, deadline_ns: int | None) -> int:
        now = self._clock()
        elapsed = max(0, now - self._last)
        rps = self._rps
        if rps <= 0:  # never refills: the first call passes, later ones never would
            tokens = self._tokens - 1
            wait = 0 if tokens >= 0 else 1 << 62
        else:
            tokens = min(1.0, self._tokens + elapsed / SECOND * rps) - 1
            wait = int(-tokens / rps * SECOND) if tokens < 0 else 0
        if wait >= 1 << 62 or (deadline_ns is not None and wait > deadline_ns - now):
            raise _Refused(
                "error during leakybucker rate limiting: rate: Wait(n=1) would exceed "
                "context deadline"
            )
        self._tokens = tokens
        self._last = now
        return wait


class _FixedWindow:
    """The original's `IntervalLimiter`: at most N calls per window of `interval`."""

    __slots__ = ("_clock", "_count", "_interval", "_max", "_start")

    def __init__(self, max_requests: int, interval_ns: int, clock: Clock) -> None:
        self._max = max_requests
        self._interval = interval_ns
        self._clock = clock
        self._count = 0
        self._start = clock()

    def limit(self, deadline_ns: int | None) -> int:
        del deadline_ns
        now = self._clock()
        if now - self._start > self._interval:
            self._start = now
            self._count = 0
        if self._max != 0 and self._count >= self._max:
            remaining = self._interval - (now - self._start)
            raise _Refused(
                f"Exceeded limit of {self._max}, retry again in {format_duration(remaining)}"
            )
        self._count += 1
        return 0


_Limiter = _TokenBucket | _LeakyBucket | _FixedWindow


@dataclass(slots=True)
class _TargetSettings:
    """The original's `RateLimitSettings` for one (API, target): named flow/max-reqs parts."""

    flow: dict[str, ratelimit_pb2.FlowSettings] = field(default_factory=dict)
    max_reqs: dict[str, ratelimit_pb2.MaxReqsSettings] = field(default_factory=dict)

    def limiters(self, clock: Clock) -> list[_Limiter]:
        out: list[_Limiter] = []
        for _, flow in sorted(self.flow.items()):
            if flow.flow_algorithm == _TOKEN_BUCKET:
                out.append(_TokenBucket(flow.reqs_per_second, flow.burst_size, clock))
            elif flow.flow_algorithm == _LEAKY_BUCKET:
                out.append(_LeakyBucket(flow.reqs_per_second, clock))
        for _, max_reqs in sorted(self.max_reqs.items()):
            if max_reqs.max_reqs_algorithm == _FIXED_WINDOW:
                out.append(_FixedWindow(max_reqs.max_requests, max_reqs.interval, clock))
        return out

    def __len__(self) -> int:
        return len(self.flow) + len(self.max_reqs)


def _run(limiters: Iterable[_Limiter], deadline_ns: int | None) -> int:
    wait = 0
    for limiter in limiters:
        wait += limiter.limit(deadline_ns)
    return wait


class _ApiLimiter:
    """The original's `apiEndpointLimiter`: the limiters of one API name."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.targets: dict[int, _TargetSettings] = {}
        self._all: list[_Limiter] = []
        self._per_ip: dict[str, list[_Limiter]] = {}

    def is_empty(self) -> bool:
        return not any(len(t) for t in self.targets.values())

    def changed(self, target: int) -> None:
        """Settings of a target changed: fresh limiters (full buckets, new windows)."""
        if target == _ALL:
            self._all = self.targets[_ALL].limiters(self._clock)
        elif target == _PER_IP:
            self._per_ip = {}

    def limit(self, client_ip: str, max_ips: int, deadline_ns: int | None) -> int:
        wait = 0
        per_ip = self.targets.get(_PER_IP)
        if per_ip is not None and client_ip:
            limiters = self._per_ip.get(client_ip)
            if limiters is None:
                while self._per_ip and len(self._per_ip) >= max_ips:
                    del self._per_ip[next(iter(self._per_ip))]
                limiters = self._per_ip[client_ip] = per_ip.limiters(self._clock)
            try:
                wait += _run(limiters, deadline_ns)
            except _Refused as exc:
                raise _Refused(f"Client exceeded api rate limit per ip. {exc}") from None
        # PER_USER is never evaluated: DME callers have no user (the original passes none).
        if _ALL in self.targets:
            wait += _run(self._all, deadline_ns)
        return wait


class RateLimitManager:
    """Every API's limiters, the settings that shape them, and the global switches.

    Not thread-safe; used from the daemon's event loop (the original held one mutex for
    all calls, which also serialised leaky-bucket waits; here the caller sleeps outside).

    Args:
        test_mode: The original's `-testMode`: no limiting at all, whatever Settings say.
        clock: Monotonic nanoseconds.
        initial: Settings enforced before notify delivers any (`DEFAULT_SETTINGS`).
    """

    def __init__(
        self,
        *,
        test_mode: bool = False,
        clock: Clock = time.monotonic_ns,
        initial: Iterable[ratelimit_pb2.FlowRateLimitSettings] = DEFAULT_SETTINGS,
    ) -> None:
        self._test_mode = test_mode
        self._clock = clock
        self._disabled = False
        self._max_ips = DEFAULT_MAX_TRACKED_IPS
        self._apis: dict[str, _ApiLimiter] = {}
        for settings in initial:
            self.update_flow(settings)

    # -- settings from notify --

    def update_settings(self, settings: settings_pb2.Settings) -> None:
        """Apply `disable_rate_limit` and `rate_limit_max_tracked_ips` from Settings.

        Args:
            settings: The region's Settings.
        """
        self._disabled = settings.disable_rate_limit
        self._max_ips = settings.rate_limit_max_tracked_ips

    def _api(self, api: str) -> _ApiLimiter:
        limiter = self._apis.get(api)
        if limiter is None:
            limiter = self._apis[api] = _ApiLimiter(self._clock)
        return limiter

    def update_flow(self, settings: ratelimit_pb2.FlowRateLimitSettings) -> None:
        """Add or replace flow (token/leaky bucket) settings; non-DME ones are ignored.

        Args:
            settings: The FlowRateLimitSettings message.
        """
        flow = ratelimit_pb2.FlowSettings()
        flow.CopyFrom(settings.settings)
        target = self._target(settings.key.rate_limit_key)
        if target is not None:
            target[1].flow[settings.key.flow_settings_name] = flow
            target[0].changed(settings.key.rate_limit_key.rate_limit_target)

    def update_max_reqs(self, settings: ratelimit_pb2.MaxReqsRateLimitSettings) -> None:
        """Add or replace max-requests (fixed window) settings; non-DME ones are ignored.

        Args:
            settings: The MaxReqsRateLimitSettings message.
        """
        max_reqs = ratelimit_pb2.MaxReqsSettings()
        max_reqs.CopyFrom(settings.settings)
        target = self._target(settings.key.rate_limit_key)
        if target is not None:
            target[1].max_reqs[settings.key.max_reqs_settings_name] = max_reqs
            target[0].changed(settings.key.rate_limit_key.rate_limit_target)

    def _target(
        self, key: ratelimit_pb2.RateLimitSettingsKey
    ) -> tuple[_ApiLimiter, _TargetSettings] | None:
        """The limiter and target settings a DME settings key addresses, created if new."""
        if key.api_endpoint_type != _DME:
            return None
        limiter = self._api(key.api_name)
        if key.rate_limit_target not in (_ALL, _PER_IP, _PER_USER):
            return None
        return limiter, limiter.targets.setdefault(key.rate_limit_target, _TargetSettings())

    def delete_flow(self, key: ratelimit_pb2.FlowRateLimitSettingsKey) -> None:
        """Remove flow settings; an API left with none falls back to Global again.

        Args:
            key: The settings' key.
        """
        rkey = key.rate_limit_key
        if rkey.api_endpoint_type == _DME:
            self._remove(rkey, lambda t: t.flow.pop(key.flow_settings_name, None))

    def delete_max_reqs(self, key: ratelimit_pb2.MaxReqsRateLimitSettingsKey) -> None:
        """Remove max-requests settings; an API left with none falls back to Global again.

        Args:
            key: The settings' key.
        """
        rkey = key.rate_limit_key
        if rkey.api_endpoint_type == _DME:
            self._remove(rkey, lambda t: t.max_reqs.pop(key.max_reqs_settings_name, None))

    def _remove(
        self, rkey: ratelimit_pb2.RateLimitSettingsKey, drop: Callable[[_TargetSettings], object]
    ) -> None:
        limiter = self._apis.get(rkey.api_name)
        if limiter is None:
            return
        target = limiter.targets.get(rkey.rate_limit_target)
        if target is not None:
            drop(target)
            limiter.changed(rkey.rate_limit_target)
        if limiter.is_empty():
            del self._apis[rkey.api_name]

    def prune_flow(self, keep: Iterable[ratelimit_pb2.FlowRateLimitSettingsKey]) -> None:
        """Drop flow settings the Controller did not send in its last full sync.

        Args:
            keep: The keys it sent.
        """
        wanted = {_flow_ident(k) for k in keep}
        for api, limiter in list(self._apis.items()):
            for target_id, target in limiter.targets.items():
                gone = [n for n in target.flow if (api, target_id, n) not in wanted]
                for name in gone:
                    del target.flow[name]
                if gone:
                    limiter.changed(target_id)
            if limiter.is_empty():
                del self._apis[api]

    def prune_max_reqs(self, keep: Iterable[ratelimit_pb2.MaxReqsRateLimitSettingsKey]) -> None:
        """Drop max-requests settings the Controller did not send in its last full sync.

        Args:
            keep: The keys it sent.
        """
        wanted = {_max_reqs_ident(k) for k in keep}
        for api, limiter in list(self._apis.items()):
            for target_id, target in limiter.targets.items():
                gone = [n for n in target.max_reqs if (api, target_id, n) not in wanted]
                for name in gone:
                    del target.max_reqs[name]
                if gone:
                    limiter.changed(target_id)
            if limiter.is_empty():
                del self._apis[api]

    # -- enforcement --

    @property
    def enabled(self) -> bool:
        """Whether calls are limited at all (neither test mode nor `disable_rate_limit`)."""
        return not (self._test_mode or self._disabled)

    def limit_api(self, api: str, client_ip: str, *, deadline_ns: int | None = None) -> int:
        """Count one call of an API against its limiters (or Global's).

        Args:
            api: The method name (`FindCloudlet`) or `PersistentConnection`.
            client_ip: The caller's bare IP ("" skips per-IP limits, as the original does).
            deadline_ns: The call's deadline on this manager's clock, for leaky buckets.

        Returns:
            Nanoseconds the caller must wait before proceeding (leaky buckets), else 0.

        Raises:
            ResourceExhausted: With the limiter's own message, e.g. "Client exceeded api
                rate limit per ip. Exceeded rate of 10000.000000 requests per second".
        """
        if not self.enabled:
            return 0
        limiter = self._apis.get(api) or self._apis.get(GLOBAL_API)
        if limiter is None:
            return 0
        try:
            return limiter.limit(client_ip, self._max_ips, deadline_ns)
        except _Refused as exc:
            raise ResourceExhausted(str(exc)) from None

    def limit_call(
        self, full_method: str, client_ip: str, *, deadline_ns: int | None = None
    ) -> int:
        """The rate-limit step of every unary and streaming call (before authentication).

        Args:
            full_method: The gRPC method path, `/distributed_match_engine.Session/RegisterClient`
                (legacy clients call `/distributed_match_engine.MatchEngineApi/...`).
            client_ip: The caller's bare IP.
            deadline_ns: The call's deadline on this manager's clock.

        Returns:
            Nanoseconds to wait before handling the call.

        Raises:
            ResourceExhausted: "Request for <full_method> rate limited, please retry
                later. Error is: <limiter message>."
        """
        api = full_method.rpartition("/")[2]
        try:
            return self.limit_api(api, client_ip, deadline_ns=deadline_ns)
        except ResourceExhausted as exc:
            raise ResourceExhausted(
                f"Request for {full_method} rate limited, please retry later. "
                f"Error is: {exc.message}."
            ) from None


def _flow_ident(key: ratelimit_pb2.FlowRateLimitSettingsKey) -> tuple[str, int, str]:
    rkey = key.rate_limit_key
    return (rkey.api_name, rkey.rate_limit_target, key.flow_settings_name)


def _max_reqs_ident(key: ratelimit_pb2.MaxReqsRateLimitSettingsKey) -> tuple[str, int, str]:
    rkey = key.rate_limit_key
    return (rkey.api_name, rkey.rate_limit_target, key.max_reqs_settings_name)
