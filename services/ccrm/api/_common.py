"""What the three services share: `NameSanitize` and the context type."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc.aio
from edgeproto import ccrm_pb2, result_pb2

from services.ccrm._host import PlatformHost

__all__ = ["Ctx", "name_sanitize"]

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def name_sanitize(host: PlatformHost, request: ccrm_pb2.NameSanitizeReq) -> result_pb2.Result:
    """The cloudlet's platform's legal form of a name (uninitialised platform, pure).

    Raises:
        NotFound: Unknown cloudlet or platform.
    """
    platform = host.bare(host.cloudlet(request.cloudlet_key))
    return result_pb2.Result(message=platform.name_sanitize(request.message))
