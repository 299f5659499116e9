"""TrustPolicyExceptionApi: extra egress rules for one App on one ZonePool (controller.md §3.12).

A developer asks for an exception (it starts APPROVAL_REQUESTED, whatever state the request
carries); the pool's operator makes it ACTIVE or REJECTED with an update. Only then, and on
delete, do instances change: the Controller's `TpeApplier` (`services.controller._tpe`)
follows the stored TPEs and writes the per-instance `TPEInstanceState` records that CRMs and
CCRMs act on. Every check and its write is one etcd transaction, so a create cannot slip in
while its App or pool is being deleted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
from edgeproto import (
    app_pb2,
    result_pb2,
    trustpolicyexception_pb2,
    trustpolicyexception_pb2_grpc,
    zonepool_pb2,
)

from edge_cloud.errors import FailedPrecondition, InvalidArgument
from edge_cloud.objects import fields, keys, registry
from services.controller import _validate
from services.controller._engine import Txn
from services.controller._progress import compact_text
from services.controller._runtime import Runtime

__all__ = ["STATE_PATH", "TrustPolicyExceptionApi", "add", "validate"]

TPE: Final = registry.by_class(trustpolicyexception_pb2.TrustPolicyException)
APP: Final = registry.by_class(app_pb2.App)
ZONE_POOL: Final = registry.by_class(zonepool_pb2.ZonePool)
TPES = trustpolicyexception_pb2
STATE_PATH: Final = "3"
"""`fields` path of `state`."""
RULES_PATH: Final = "4"
"""`fields` path of `outbound_security_rules` (its children start with `4.`)."""
_Ctx = grpc.aio.ServicerContext[Any, Any]


def validate(tpe: trustpolicyexception_pb2.TrustPolicyException) -> None:
    """The original's `TrustPolicyException.Validate`: key, rules present, rules valid.

    Raises:
        InvalidArgument: What is wrong, in the original's words.
    """
    keys.validate_key(tpe)
    if not tpe.outbound_security_rules:
        raise InvalidArgument("Security rules must be specified")
    _validate.check_security_rules(tpe.outbound_security_rules)


class TrustPolicyExceptionApi(trustpolicyexception_pb2_grpc.TrustPolicyExceptionApiServicer):
    """Create, update, delete and show trust policy exceptions."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def CreateTrustPolicyException(
        self, request: trustpolicyexception_pb2.TrustPolicyException, context: _Ctx
    ) -> result_pb2.Result:
        """Store a new request for approval: the App must be trusted, App and pool present."""
        tpe = trustpolicyexception_pb2.TrustPolicyException()
        tpe.CopyFrom(request)
        _validate.fixup_security_rules(tpe.outbound_security_rules)
        validate(tpe)
        tpe.state = TPES.TRUST_POLICY_EXCEPTION_STATE_APPROVAL_REQUESTED

        def check(txn: Txn, new: trustpolicyexception_pb2.TrustPolicyException) -> None:
            app = txn.require(APP, new.key.app_key)
            if not app.trusted:
                raise FailedPrecondition(
                    f"Non trusted app: {compact_text(app.key).strip()} not compatible with trust "
                    f"policy: {compact_text(new.key)}"
                )
            txn.require(ZONE_POOL, new.key.zone_pool_key)

        await self._rt.engine.create(tpe, check=check)
        return result_pb2.Result()

    async def UpdateTrustPolicyException(
        self, request: trustpolicyexception_pb2.TrustPolicyException, context: _Ctx
    ) -> result_pb2.Result:
        """Approve or reject (state), or change the rules while approval is still requested.

        Other fields are ignored, as in the original; a request naming neither changes
        nothing.
        """
        paths = list(request.fields)
        state_given = STATE_PATH in paths
        rules_given = any(p == RULES_PATH or p.startswith(RULES_PATH + ".") for p in paths)
        key = keys.key_string(request)

        def fn(txn: Txn) -> None:
            current = txn.get(TPE, key)
            if current is None:
                raise keys.not_found(request)
            if state_given and request.state not in (
                TPES.TRUST_POLICY_EXCEPTION_STATE_ACTIVE,
                TPES.TRUST_POLICY_EXCEPTION_STATE_REJECTED,
            ):
                raise InvalidArgument("New state must be either Active or Rejected")
            if (
                rules_given
                and current.state != TPES.TRUST_POLICY_EXCEPTION_STATE_APPROVAL_REQUESTED
            ):
                raise FailedPrecondition(
                    "Can update security rules only when trust policy exception is still in "
                    "approval requested state"
                )
            if not (state_given or rules_given):
                return
            merged = trustpolicyexception_pb2.TrustPolicyException()
            merged.CopyFrom(current)
            wanted = [p for p in paths if p == STATE_PATH or p.split(".")[0] == RULES_PATH]
            fields.apply_fields(merged, request, wanted)
            _validate.fixup_security_rules(merged.outbound_security_rules)
            validate(merged)
            if merged != current:
                txn.put(merged)

        await self._rt.engine.apply(fn, reads=[keys.store_key(TPE.name, key)])
        return result_pb2.Result()

    async def DeleteTrustPolicyException(
        self, request: trustpolicyexception_pb2.TrustPolicyException, context: _Ctx
    ) -> result_pb2.Result:
        """Delete it; instances it opened are closed by the applier afterwards."""
        await self._rt.engine.delete(request)
        return result_pb2.Result()

    async def ShowTrustPolicyException(
        self, request: trustpolicyexception_pb2.TrustPolicyException, context: _Ctx
    ) -> AsyncIterator[trustpolicyexception_pb2.TrustPolicyException]:
        """Every cached exception matching the filter."""
        for tpe in self._rt.engine.show(request):
            yield tpe


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    trustpolicyexception_pb2_grpc.add_TrustPolicyExceptionApiServicer_to_server(
        TrustPolicyExceptionApi(runtime), server
    )
    return ["edgeproto.TrustPolicyExceptionApi"]
