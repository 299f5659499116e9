"""Platform errors, classified transient or permanent (architecture §6, §9).

Plugins raise `PlatformTransientError` (worth retrying later), `PlatformPermanentError`
(the cloud refused; the object goes to its error state) or `PlatformResourceExhausted` (a
permanent refusal for lack of capacity, sent as RESOURCE_EXHAUSTED). `NotSupportedByPlatform`
means a caller asked for something the platform's features do not declare. `classify`
sorts any exception, so callers never compare messages.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import grpc

from edge_cloud.errors import (
    DeadlineExceeded,
    NotSupportedByPlatform,
    PlatformPermanentError,
    PlatformTransientError,
    Unavailable,
)

__all__ = [
    "NotSupportedByPlatform",
    "PlatformPermanentError",
    "PlatformResourceExhausted",
    "PlatformTransientError",
    "classify",
]


class PlatformResourceExhausted(PlatformPermanentError):
    """The infrastructure has no room for what was asked (RAM, vCPUs, IPs, ...).

    Permanent: retrying the same request will fail the same way until something is freed.
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def classify(err: BaseException) -> Literal["transient", "permanent"]:
    """Whether a failure is worth retrying.

    Transient: `PlatformTransientError` and other `Unavailable`, deadlines and timeouts,
    connection errors. Everything else, including unexpected exceptions, is permanent: an
    unknown failure repeated by a reconciler helps nobody.

    Args:
        err: What a platform call raised.

    Returns:
        "transient" or "permanent".
    """
    transient = (
        PlatformTransientError,
        Unavailable,
        DeadlineExceeded,
        TimeoutError,
        asyncio.TimeoutError,
        ConnectionError,
    )
    return "transient" if isinstance(err, transient) else "permanent"
