"""TrustPolicyApi: outbound traffic allowed from cloudlets (controller.md §3.12).

Create, update and delete are server-streaming: progress lines arrive as `Result`
messages, a failure ends the stream with a gRPC status.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc.aio
from edgeproto import (
    cloudlet_pb2,
    cloudletkey_pb2,
    result_pb2,
    trustpolicy_pb2,
    trustpolicy_pb2_grpc,
)

from edge_cloud.errors import EdgeError, FailedPrecondition
from edge_cloud.objects import keys, registry
from services.controller import _uses, _validate
from services.controller._cloudlet_ops import CloudletOps
from services.controller._engine import Txn
from services.controller._followons import (
    check_cloudlets_using_trust_policy,
    cloudlets_using_trust_policy,
)
from services.controller._progress import compact_text
from services.controller._runtime import Runtime
from services.controller._tracked import TrackedRuntime

__all__ = ["UPDATABLE", "TrustPolicyApi", "add"]

UPDATABLE: Final = frozenset({"3"})
"""outbound_security_rules."""

CLOUDLET: Final = registry.by_class(cloudlet_pb2.Cloudlet)
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
        """Replace the rules, then push them to the cloudlets using the policy.

        Refused while an AppInst on one of those cloudlets would not comply.
        """
        update = trustpolicy_pb2.TrustPolicy()
        update.CopyFrom(request)
        _validate.fixup_security_rules(update.outbound_security_rules)

        def check(
            txn: Txn, merged: trustpolicy_pb2.TrustPolicy, current: trustpolicy_pb2.TrustPolicy
        ) -> None:
            _validate.check_trust_policy(merged)
            check_cloudlets_using_trust_policy(txn, self._rt.caches, merged)

        await self._rt.engine.update(update, updatable=UPDATABLE, check=check)
        names = cloudlets_using_trust_policy(self._rt.caches, update.key)
        if not names or not isinstance(self._rt, TrackedRuntime):
            # without CCRMs and Redis (a bare runtime) there is nothing to push through
            yield result_pb2.Result(message="Trust policy updated, no cloudlets affected")
            return
        async for result in self._update_cloudlets(self._rt, names):
            yield result

    async def _update_cloudlets(
        self, runtime: TrackedRuntime, names: list[str]
    ) -> AsyncIterator[result_pb2.Result]:
        """Push the stored policy to every cloudlet using it, at once; report as the original.

        Progress lines are passed on as they come. A cloudlet that timed out is "in
        progress" (it may still succeed), so the update fails only when no cloudlet passed
        and none is still in progress; the policy stays stored either way.

        Raises:
            FailedPrecondition: `Failed to update trust policy on any cloudlets`.
        """
        ops = CloudletOps(runtime)
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        async def one(name: str) -> str:
            cloudlet = runtime.caches.get(CLOUDLET, name)
            if cloudlet is None:
                return ""  # deleted meanwhile: nothing left to update
            try:
                await ops.update_trust_policy(cloudlet.key, lines.put_nowait)
            except EdgeError as err:
                return err.message
            return ""

        async def all_of() -> list[str]:
            try:
                return await asyncio.gather(*(one(n) for n in names))
            finally:
                lines.put_nowait(None)

        task = asyncio.ensure_future(all_of())
        try:
            while (line := await lines.get()) is not None:
                yield result_pb2.Result(message=line)
            errors = await task
        finally:
            task.cancel()
        passed = in_progress = failed = 0
        for name, error in zip(names, errors, strict=True):
            key_text = compact_text(keys.parse_key_string(cloudletkey_pb2.CloudletKey, name))
            if not error:
                passed += 1
            elif "timed out" in error.lower():
                in_progress += 1
                yield result_pb2.Result(
                    message=f"Update cloudlet is in progress: {key_text} - {error} Please use "
                    "'cloudlet show' to check current status"
                )
            else:
                failed += 1
                yield result_pb2.Result(message=f"Failed to update cloudlet: {key_text} - {error}")
        yield result_pb2.Result(
            message=f"Processed: {len(names)} Cloudlets.  Passed: {passed} "
            f"InProgress: {in_progress} Failed: {failed}"
        )
        if passed == 0 and in_progress == 0:
            raise FailedPrecondition("Failed to update trust policy on any cloudlets")

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
