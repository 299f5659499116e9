"""TrustPolicyApi: outbound traffic allowed from cloudlets (controller.md §3.12).

Create, update and delete are server-streaming: progress lines arrive as `Result`
messages, a failure ends the stream with a gRPC status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
from edgeproto import result_pb2, trustpolicy_pb2, trustpolicy_pb2_grpc

from services.controller import _uses, _validate
from services.controller._engine import Txn
from services.controller._followons import (
    check_cloudlets_using_trust_policy,
    cloudlets_using_trust_policy,
)
from services.controller._runtime import Runtime

__all__ = ["UPDATABLE", "TrustPolicyApi", "add"]

UPDATABLE: Final = frozenset({"3"})
"""outbound_security_rules."""

_Ctx = grpc.aio.ServicerContext[Any, Any]


class TrustPolicyApi(trustpolicy_pb2_grpc.TrustPolicyApiServicer):
    """Create, update, delete and show trust policies."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def CreateTrustPolicy(
        self, request: trustpolicy_pb2.TrustPolicy, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Normalise and validate the rules, then store the policy."""
        policy = trustpolicy_pb2.TrustPolicy()
        policy.CopyFrom(request)
        _validate.fixup_security_rules(policy.outbound_security_rules)
        _validate.check_trust_policy(policy)
        await self._rt.engine.create(policy, plain=True)
        for _ in ():
            yield result_pb2.Result()

    async def UpdateTrustPolicy(
        self, request: trustpolicy_pb2.TrustPolicy, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Replace the rules, refused if an AppInst on a cloudlet using the policy would break."""
        update = trustpolicy_pb2.TrustPolicy()
        update.CopyFrom(request)
        _validate.fixup_security_rules(update.outbound_security_rules)

        def check(
            txn: Txn, merged: trustpolicy_pb2.TrustPolicy, current: trustpolicy_pb2.TrustPolicy
        ) -> None:
            _validate.check_trust_policy(merged)
            check_cloudlets_using_trust_policy(txn, self._rt.caches, merged)

        await self._rt.engine.update(update, updatable=UPDATABLE, check=check)
        if not cloudlets_using_trust_policy(self._rt.caches, update.key):
            yield result_pb2.Result(message="Trust policy updated, no cloudlets affected")
            return
        # TODO(#4, Cloudlet): push the changed rules to each cloudlet using the policy
        # through its CRM or CCRM and report per-cloudlet results, as the original's
        # UpdateCloudletsUsingTrustPolicy does; until then the stored policy reaches an
        # on-edge CRM through notify only.
        yield result_pb2.Result(message="Trust policy updated")

    async def DeleteTrustPolicy(
        self, request: trustpolicy_pb2.TrustPolicy, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """Delete-prepare, refuse while a Cloudlet (in any state) uses it, delete."""
        engine = self._rt.engine
        await engine.delete(request, in_use=lambda p: _uses.trust_policy_users(engine.caches, p))
        for _ in ():
            yield result_pb2.Result()

    async def ShowTrustPolicy(
        self, request: trustpolicy_pb2.TrustPolicy, context: _Ctx
    ) -> AsyncIterator[trustpolicy_pb2.TrustPolicy]:
        """Every cached policy matching the filter."""
        for policy in self._rt.engine.show(request):
            yield policy


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    trustpolicy_pb2_grpc.add_TrustPolicyApiServicer_to_server(TrustPolicyApi(runtime), server)
    return ["edgeproto.TrustPolicyApi"]
