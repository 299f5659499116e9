"""RateLimitSettingsApi: the DME's rate-limit settings (controller.md §1.2 step 14, dme.md §2.11).

Settings are stored as the original stores them, one record per named part:
`FlowRateLimitSettings` (token or leaky bucket) and `MaxReqsRateLimitSettings` (fixed
window), each keyed by a name and the `RateLimitSettingsKey` (API name, endpoint type,
target) it belongs to. `ShowRateLimitSettings` folds them back into the user-facing
`RateLimitSettings` per key (the original's `DbToUserSettings`). The notify server sends
both record types to DMEs, which apply every change live.

Every check-and-write is one etcd transaction (create refuses an existing key, update and
delete a missing one, in the same transaction as the write). All calls are refused while
`Settings.disable_rate_limit` is set, with the original's texts; the Show calls of a
test-mode Controller answer nothing instead, as the original's do.

At start the Controller writes the original's default DME settings
(`edgeproto.GetDefaultRateLimitSettings`) where absent (`ensure_defaults`), so operators'
changes survive restarts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Final, TypeVar

import grpc.aio
from edgeproto import ratelimit_pb2, ratelimit_pb2_grpc, result_pb2
from google.protobuf.message import Message

from edge_cloud.errors import FailedPrecondition, InvalidArgument
from edge_cloud.objects import fields, keys, registry
from services.controller._engine import Engine, Txn
from services.controller._runtime import Runtime

__all__ = [
    "DEFAULT_FLOW_SETTINGS",
    "RateLimitSettingsApi",
    "add",
    "check_flow",
    "check_max_reqs",
    "ensure_defaults",
    "to_user_settings",
]

FLOW: Final = registry.by_class(ratelimit_pb2.FlowRateLimitSettings)
MAX_REQS: Final = registry.by_class(ratelimit_pb2.MaxReqsRateLimitSettings)
_Ctx = grpc.aio.ServicerContext[Any, Any]
_RL = ratelimit_pb2
_TOKEN: Final = _RL.FlowRateLimitAlgorithm.TOKEN_BUCKET_ALGORITHM
_LEAKY: Final = _RL.FlowRateLimitAlgorithm.LEAKY_BUCKET_ALGORITHM
_FIXED: Final = _RL.MaxReqsRateLimitAlgorithm.FIXED_WINDOW_ALGORITHM
_DME: Final = _RL.ApiEndpointType.DME
_ALL: Final = _RL.RateLimitTarget.ALL_REQUESTS
_PER_IP: Final = _RL.RateLimitTarget.PER_IP


def _default(
    api: str, target: _RL.RateLimitTarget.ValueType, name: str, rps: float, burst: int
) -> _RL.FlowRateLimitSettings:
    return _RL.FlowRateLimitSettings(
        key=_RL.FlowRateLimitSettingsKey(
            flow_settings_name=name,
            rate_limit_key=_RL.RateLimitSettingsKey(
                api_name=api, api_endpoint_type=_DME, rate_limit_target=target
            ),
        ),
        settings=_RL.FlowSettings(flow_algorithm=_TOKEN, reqs_per_second=rps, burst_size=burst),
    )


DEFAULT_FLOW_SETTINGS: Final = (
    _default("Global", _ALL, "dmeglobalallreqs1", 25000, 250),
    _default("VerifyLocation", _ALL, "verifylocallreqs1", 5000, 50),
    _default("PersistentConnection", _ALL, "persistentconnectionallreqs1", 100, 10),
    _default("Global", _PER_IP, "dmeglobalperip1", 10000, 100),
    _default("VerifyLocation", _PER_IP, "verifylocperip1", 1000, 25),
)
"""The original's default DME settings; it has no default max-requests settings."""


def check_flow(settings: _RL.FlowSettings) -> None:
    """The original's `FlowSettings.Validate`, with its texts.

    Raises:
        InvalidArgument: An unknown algorithm, a rate that is not positive, or a burst size
            that is missing (token bucket) or given (leaky bucket, which has none).
    """
    algorithm = settings.flow_algorithm
    if algorithm not in (_TOKEN, _LEAKY):
        raise InvalidArgument("Invalid FlowAlgorithm")
    if settings.reqs_per_second <= 0:
        raise InvalidArgument(
            f"Invalid ReqsPerSecond {settings.reqs_per_second:f}, must be greater than 0"
        )
    if algorithm == _TOKEN and settings.burst_size <= 0:
        raise InvalidArgument(f"Invalid BurstSize {settings.burst_size}, must be greater than 0")
    if algorithm == _LEAKY and settings.burst_size != 0:
        raise InvalidArgument("BurstSize does not apply for the leaky bucket algorithm")


def check_max_reqs(settings: _RL.MaxReqsSettings) -> None:
    """The original's `MaxReqsSettings.Validate`, with its texts.

    Raises:
        InvalidArgument: An unknown algorithm, or a count or interval that is not positive.
    """
    if settings.max_reqs_algorithm != _FIXED:
        raise InvalidArgument("Invalid MaxReqsAlgorithm")
    if settings.max_requests <= 0:
        raise InvalidArgument(
            f"Invalid MaxRequests {settings.max_requests}, must be greater than 0"
        )
    if settings.interval <= 0:
        raise InvalidArgument(f"Invalid Interval {settings.interval}, must be greater than 0")


def to_user_settings(
    flows: list[_RL.FlowRateLimitSettings], max_reqs: list[_RL.MaxReqsRateLimitSettings]
) -> list[_RL.RateLimitSettings]:
    """Fold stored records into one `RateLimitSettings` per key (`DbToUserSettings`).

    Keys come in the order they first appear; the original's order is Go map order.
    """
    by_key: dict[bytes, _RL.RateLimitSettings] = {}

    def entry(key: _RL.RateLimitSettingsKey) -> _RL.RateLimitSettings:
        ident = key.SerializeToString(deterministic=True)
        found = by_key.get(ident)
        if found is None:
            found = by_key[ident] = _RL.RateLimitSettings(key=key)
        return found

    for flow in flows:
        entry(flow.key.rate_limit_key).flow_settings[flow.key.flow_settings_name].CopyFrom(
            flow.settings
        )
    for mreq in max_reqs:
        entry(mreq.key.rate_limit_key).max_reqs_settings[mreq.key.max_reqs_settings_name].CopyFrom(
            mreq.settings
        )
    return list(by_key.values())


async def ensure_defaults(engine: Engine, *, wait: bool = True) -> int:
    """Write the default DME settings that are absent, in one transaction.

    Args:
        engine: The Controller's engine.
        wait: Wait for the caches to have the write (False before they are loaded).

    Returns:
        How many defaults were written (0 when all were there, e.g. after a restart or
        when an operator changed them).
    """
    reads = [keys.object_store_key(d) for d in DEFAULT_FLOW_SETTINGS]

    def fn(txn: Txn) -> int:
        written = 0
        for default in DEFAULT_FLOW_SETTINGS:
            if txn.get(FLOW, default.key) is None:
                txn.put(default)
                written += 1
        return written

    return await engine.apply(fn, reads=reads, wait=wait)


class RateLimitSettingsApi(ratelimit_pb2_grpc.RateLimitSettingsApiServicer):
    """Create, update, delete and show the flow and max-requests settings."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _enabled(self, call: str) -> None:
        if self._rt.settings().disable_rate_limit:
            raise FailedPrecondition(f"DisableRateLimit must be false to {call}")

    def _show_enabled(self, call: str) -> bool:
        """Whether a Show answers; a test-mode Controller answers nothing when disabled."""
        if not self._rt.settings().disable_rate_limit:
            return True
        if self._rt.config.test_mode:
            return False
        raise FailedPrecondition(f"DisableRateLimit must be false to {call}")

    # -- ShowRateLimitSettings -------------------------------------------------------------

    async def ShowRateLimitSettings(
        self, request: _RL.RateLimitSettings, context: _Ctx
    ) -> AsyncIterator[_RL.RateLimitSettings]:
        """The settings of every key matching the request's key, both parts together.

        Refused while rate limiting is disabled, even in test mode, as the original.
        """
        self._enabled("ShowRateLimitSettings")
        flows = self._rt.engine.show(
            _RL.FlowRateLimitSettings(key=_RL.FlowRateLimitSettingsKey(rate_limit_key=request.key))
        )
        mreqs = self._rt.engine.show(
            _RL.MaxReqsRateLimitSettings(
                key=_RL.MaxReqsRateLimitSettingsKey(rate_limit_key=request.key)
            )
        )
        for settings in to_user_settings(flows, mreqs):
            yield settings

    # -- FlowRateLimitSettings -------------------------------------------------------------

    async def CreateFlowRateLimitSettings(
        self, request: _RL.FlowRateLimitSettings, context: _Ctx
    ) -> result_pb2.Result:
        """Store a new flow setting (`... key <key> already exists` when taken)."""
        self._enabled("CreateFlowRateLimitSettings")
        keys.validate_key(request)
        new = _RL.FlowRateLimitSettings(key=request.key, settings=request.settings)
        await self._rt.engine.create(new, check=lambda _txn, obj: check_flow(obj.settings))
        return result_pb2.Result()

    async def UpdateFlowRateLimitSettings(
        self, request: _RL.FlowRateLimitSettings, context: _Ctx
    ) -> result_pb2.Result:
        """Copy the listed fields onto a stored flow setting and validate the result."""
        self._enabled("UpdateFlowRateLimitSettings")
        keys.validate_key(request)
        await _update(self._rt, FLOW, request, request.key, check_flow)
        return result_pb2.Result()

    async def DeleteFlowRateLimitSettings(
        self, request: _RL.FlowRateLimitSettings, context: _Ctx
    ) -> result_pb2.Result:
        """Remove a flow setting (`FlowRateLimitSettings key <key> not found` when absent)."""
        self._enabled("DeleteFlowRateLimitSettings")
        keys.validate_key(request)
        await self._rt.engine.delete(request)
        return result_pb2.Result()

    async def ShowFlowRateLimitSettings(
        self, request: _RL.FlowRateLimitSettings, context: _Ctx
    ) -> AsyncIterator[_RL.FlowRateLimitSettings]:
        """Every stored flow setting matching the filter."""
        if not self._show_enabled("ShowFlowRateLimitSettings"):
            return
        for found in self._rt.engine.show(_filter(request)):
            yield found

    # -- MaxReqsRateLimitSettings ----------------------------------------------------------

    async def CreateMaxReqsRateLimitSettings(
        self, request: _RL.MaxReqsRateLimitSettings, context: _Ctx
    ) -> result_pb2.Result:
        """Store a new max-requests setting (`... key <key> already exists` when taken)."""
        self._enabled("CreateMaxReqsRateLimitSettings")
        keys.validate_key(request)
        new = _RL.MaxReqsRateLimitSettings(key=request.key, settings=request.settings)
        await self._rt.engine.create(new, check=lambda _txn, obj: check_max_reqs(obj.settings))
        return result_pb2.Result()

    async def UpdateMaxReqsRateLimitSettings(
        self, request: _RL.MaxReqsRateLimitSettings, context: _Ctx
    ) -> result_pb2.Result:
        """Copy the listed fields onto a stored max-requests setting and validate the result.

        A missing record is reported by its `RateLimitSettingsKey`, as the original does.
        """
        self._enabled("UpdateMaxReqsRateLimitSettings")
        keys.validate_key(request)
        await _update(self._rt, MAX_REQS, request, request.key.rate_limit_key, check_max_reqs)
        return result_pb2.Result()

    async def DeleteMaxReqsRateLimitSettings(
        self, request: _RL.MaxReqsRateLimitSettings, context: _Ctx
    ) -> result_pb2.Result:
        """Remove a max-requests setting (`... key <key> not found` when absent)."""
        self._enabled("DeleteMaxReqsRateLimitSettings")
        keys.validate_key(request)
        await self._rt.engine.delete(request)
        return result_pb2.Result()

    async def ShowMaxReqsRateLimitSettings(
        self, request: _RL.MaxReqsRateLimitSettings, context: _Ctx
    ) -> AsyncIterator[_RL.MaxReqsRateLimitSettings]:
        """Every stored max-requests setting matching the filter."""
        if not self._show_enabled("ShowMaxReqsRateLimitSettings"):
            return
        for found in self._rt.engine.show(_filter(request)):
            yield found


_M = TypeVar("_M", _RL.FlowRateLimitSettings, _RL.MaxReqsRateLimitSettings)


async def _update(
    rt: Runtime, otype: Any, request: _M, missing: Message, check: Callable[[Any], None]
) -> None:
    """Copy the listed fields onto a stored setting and validate the result, in one txn.

    Args:
        rt: The runtime.
        otype: The setting's object type.
        request: The update, with its `fields` mask.
        missing: The key named when nothing is stored (the original names different keys
            for the two kinds).
        check: Validates the merged `settings`.
    """
    paths = list(request.fields)
    if not paths:
        raise InvalidArgument("nothing specified to update")

    def change(_txn: Txn, merged: Any) -> None:
        if fields.apply_fields(merged, request, paths):
            check(merged.settings)

    await rt.engine.modify(otype, request.key, change, missing=lambda: keys.not_found(missing))


def _filter(request: _M) -> _M:
    """The request without its `fields` mask, which is no filter."""
    flt = type(request)()
    flt.CopyFrom(request)
    flt.ClearField("fields")
    return flt


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    ratelimit_pb2_grpc.add_RateLimitSettingsApiServicer_to_server(
        RateLimitSettingsApi(runtime), server
    )
    return ["edgeproto.RateLimitSettingsApi"]
