"""StreamObjApi: replay an object's latest operation and follow it to its end (§5.3).

The progress lines live in Redis (`_progress`), written by whichever controller ran the
operation, so any controller can serve this, also after the operation's own controller went
away (worker reports then end the stream with an info-end marker). A restricted-access
cloudlet that is Ready but still being brought up streams its CCRM's bring-up status and
then waits for its CRM's CloudletInfo, as the original does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import grpc.aio
from distributed_match_engine import appcommon_pb2
from edgeproto import (
    appinst_pb2,
    cloudlet_pb2,
    cloudletkey_pb2,
    cluster_pb2,
    common_pb2,
    result_pb2,
    stream_pb2_grpc,
)
from google.protobuf.message import Message

from edge_cloud.errors import DeadlineExceeded, PlatformPermanentError, Unavailable
from edge_cloud.objects import keys
from services.controller._cloudlet_ops import features_for
from services.controller._cloudletinfo import CLOUDLET, CLOUDLET_INFO
from services.controller._progress import stream_key
from services.controller._runtime import Runtime
from services.controller._tracked import Sink, TrackedRuntime, seconds, streamed

__all__ = ["PLATFORM_INIT_TIMEOUT", "StreamObjApi", "add"]

PLATFORM_INIT_TIMEOUT: Final = 20 * 60.0
"""Seconds a restricted cloudlet's bring-up may take (the original's PlatformInitTimeout)."""
_POLL: Final = 0.2
_DONE: Final = frozenset(
    {
        appcommon_pb2.CLOUDLET_STATE_READY,
        appcommon_pb2.CLOUDLET_STATE_ERRORS,
        appcommon_pb2.CLOUDLET_STATE_OFFLINE,
    }
)
_Ctx = grpc.aio.ServicerContext[Any, Any]


class _Status:
    """The original's StatusInfo task/step formatting of CCRM bring-up updates."""

    def __init__(self) -> None:
        self.task_number = 0
        self.task = ""
        self.step = ""

    def update(self, kind: int, value: str) -> str | None:
        if kind == 0:  # a new task
            if not value or value == self.task:
                return None
            self.task_number += 1
            self.task, self.step = value, ""
        elif kind == 1:
            self.step = value
        else:
            return None
        return f"{self.task}, {self.step}" if self.step else self.task


class StreamObjApi(stream_pb2_grpc.StreamObjApiServicer):
    """Progress of AppInsts, ClusterInsts, Cloudlets and GPU drivers."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _runtime(self) -> TrackedRuntime:
        if not isinstance(self._rt, TrackedRuntime):
            raise Unavailable("this Controller runs without Redis progress tracking")
        return self._rt

    async def _follow(self, key: Message) -> AsyncIterator[result_pb2.Result]:
        rt = self._runtime()
        progress = rt.tracked.progress

        async def work(sink: Sink) -> None:
            async def send(line: str) -> None:
                sink(line)

            await progress.follow(stream_key(key), send)

        async for result in streamed(work):
            yield result

    async def StreamAppInst(
        self, request: appinst_pb2.AppInstKey, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """The latest AppInst operation's progress."""
        async for result in self._follow(request):
            yield result

    async def StreamClusterInst(
        self, request: cluster_pb2.ClusterKey, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """The latest ClusterInst operation's progress."""
        async for result in self._follow(request):
            yield result

    async def StreamGPUDriver(
        self, request: cloudlet_pb2.GPUDriverKey, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """The latest GPU driver operation's progress."""
        async for result in self._follow(request):
            yield result

    async def StreamCloudlet(
        self, request: cloudletkey_pb2.CloudletKey, context: _Ctx
    ) -> AsyncIterator[result_pb2.Result]:
        """The latest Cloudlet operation's progress, or a restricted cloudlet's bring-up."""
        rt = self._runtime()
        cloudlet = rt.caches.get(CLOUDLET, keys.key_string(request))
        if (
            cloudlet is None
            or cloudlet.infra_api_access == cloudlet_pb2.DIRECT_ACCESS
            or cloudlet.state != common_pb2.READY
        ):
            async for result in self._follow(request):
                yield result
            return
        info = rt.caches.get(CLOUDLET_INFO, keys.key_string(request))
        if info is not None and info.state in _DONE:
            return

        async def work(sink: Sink) -> None:
            await self._bring_up(rt, cloudlet, sink)

        async for result in streamed(work):
            yield result

    async def _bring_up(
        self, rt: TrackedRuntime, cloudlet: cloudlet_pb2.Cloudlet, sink: Callable[[str], None]
    ) -> None:
        features = features_for(rt.caches, cloudlet.platform_type)
        status = _Status()
        timeout = seconds(rt.settings().create_cloudlet_timeout)
        async for update in rt.tracked.ccrm.restricted_cloudlet_status(
            features.node_type, cloudlet.key, timeout=timeout
        ):
            line = status.update(update.cache_update_type, update.status)
            if line is not None:
                sink(line)
        await _wait_ready(rt, cloudlet.key, sink)


async def _wait_ready(
    rt: TrackedRuntime, key: cloudletkey_pb2.CloudletKey, sink: Callable[[str], None]
) -> None:
    """Forward the CRM's status lines until its CloudletInfo is READY (or fails)."""
    sent = 0
    deadline = time.monotonic() + PLATFORM_INIT_TIMEOUT
    while time.monotonic() < deadline:
        info = rt.caches.get(CLOUDLET_INFO, keys.key_string(key))
        if info is not None:
            msgs = list(info.status.msgs)
            for line in msgs[sent:]:
                sink(line)
            sent = max(sent, len(msgs))
            if info.state == appcommon_pb2.CLOUDLET_STATE_READY:
                sink("Cloudlet setup successfully")
                return
            if info.state in (
                appcommon_pb2.CLOUDLET_STATE_ERRORS,
                appcommon_pb2.CLOUDLET_STATE_OFFLINE,
            ):
                error = f"Encountered failures: {', '.join(info.errors)}"
                sink(error)
                raise PlatformPermanentError(error)
        await asyncio.sleep(_POLL)
    sink("platform bringup timed out")
    raise DeadlineExceeded("Timed out waiting for cloudlet state to be Ready")


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    stream_pb2_grpc.add_StreamObjApiServicer_to_server(StreamObjApi(runtime), server)
    return ["edgeproto.StreamObjApi"]
