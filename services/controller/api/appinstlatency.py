"""AppInstLatencyApi: ask the devices of an AppInst to measure their latency (issue 4).

`RequestAppInstLatency` becomes the debug request `request-appinst-latency` for every DME
(node type `dme`), with the AppInstKey as JSON in `args` (aux_services.md §5.1, dme.md
§2.10): each DME sends `EVENT_LATENCY_REQUEST` to the edge-events clients of that AppInst,
which measure and report back with `EVENT_LATENCY_SAMPLES`. The original's Controller hands
the call to the NotifyRoot, which runs the debug request over its notify tree; here the
DMEs are notify clients of the Controllers, so the Controller runs it over its own tree
through the debug framework (`edge_cloud.debug`), which waits for every matching DME or
its timeout.

The answer is the DMEs' output in `Result.message`, as the original returns it: one text
when they all said the same ("successfully sent latency request"), else one
`<dme>: <output>` line per DME so a DME that timed out is visible.
"""

from __future__ import annotations

from typing import Any

import grpc.aio
from edgeproto import appinst_pb2, appinst_pb2_grpc, debug_pb2, result_pb2, svcnode_pb2

from edge_cloud.errors import FailedPrecondition, InvalidArgument
from edge_cloud.objects import keys
from edge_cloud.svcnode import NODE_TYPE_DME
from services.controller._inst_common import APP_INST
from services.controller._runtime import Runtime
from services.controller.api.svcnode import node_hub

__all__ = ["REQUEST_APPINST_LATENCY", "AppInstLatencyApi", "add"]

_Ctx = grpc.aio.ServicerContext[Any, Any]

REQUEST_APPINST_LATENCY = "request-appinst-latency"
"""The DME debug command (the original's uaemcommon.RequestAppInstLatency)."""


class AppInstLatencyApi(appinst_pb2_grpc.AppInstLatencyApiServicer):
    """RequestAppInstLatency."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def RequestAppInstLatency(
        self, request: appinst_pb2.AppInstLatency, context: _Ctx
    ) -> result_pb2.Result:
        """Have every DME ask the AppInst's connected devices for latency samples.

        Raises:
            InvalidArgument: The key lacks its name or organization.
            NotFound: No such AppInst.
            FailedPrecondition: No DME is connected to this Controller to ask.
        """
        key = request.key
        if not key.name or not key.organization:
            raise InvalidArgument(
                "AppInst key needs both name and organization to request its latency"
            )
        if self._rt.caches.get(APP_INST, keys.key_string(key)) is None:
            raise keys.not_found(key)
        debug = node_hub(self._rt)
        ask = debug_pb2.DebugRequest(
            node=svcnode_pb2.SvcNodeKey(type=NODE_TYPE_DME),
            cmd=REQUEST_APPINST_LATENCY,
            args=keys.key_string(key),
        )
        replies = [reply async for reply in debug.request(ask)]
        if not replies:
            raise FailedPrecondition(
                "no DME is connected to this Controller to pass the latency request to "
                f"AppInst {keys.key_string(key)}; check that the DMEs run and reach its "
                "notify port"
            )
        outputs = {reply.output for reply in replies}
        if len(outputs) == 1:
            return result_pb2.Result(message=outputs.pop())
        lines = sorted(f"{reply.node.name}: {reply.output}" for reply in replies)
        return result_pb2.Result(message="\n".join(lines))


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    appinst_pb2_grpc.add_AppInstLatencyApiServicer_to_server(AppInstLatencyApi(runtime), server)
    return ["edgeproto.AppInstLatencyApi"]
