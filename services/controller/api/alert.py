"""AlertApi: the alerts the Controllers of the region hold (aux_services.md §1.9).

Alerts are written by the notify handlers and the Controller itself (`_alerts`); the API
only shows them. A filter's labels must all be present with the same values (the labels
are the alert's key); empty fields match anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
from edgeproto import alert_pb2, alert_pb2_grpc

from services.controller._runtime import Runtime

__all__ = ["AlertApi", "add"]

_Ctx = grpc.aio.ServicerContext[Any, Any]


class AlertApi(alert_pb2_grpc.AlertApiServicer):
    """Show alerts from the cache, every controller's (they share etcd)."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def ShowAlert(
        self, request: alert_pb2.Alert, context: _Ctx
    ) -> AsyncIterator[alert_pb2.Alert]:
        """Every cached alert matching the filter."""
        for alert in self._rt.engine.show(request):
            yield alert


def add(server: grpc.aio.Server, runtime: Runtime) -> list[str]:
    """Register the servicer; returns its full service name."""
    alert_pb2_grpc.add_AlertApiServicer_to_server(AlertApi(runtime), server)
    return ["edgeproto.AlertApi"]
