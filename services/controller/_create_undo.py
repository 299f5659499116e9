"""What a failed create of a tracked object does, shared by Cloudlet, ClusterInst and AppInst.

Each create's worker runs under `TrackedOps._run`; when it fails, the object must reach a
terminal state. A cancelled create (the caller went away) is only marked CREATE_ERROR, since
the worker may still be running; any other failure is recorded and the object undone. The
three creates differ in how they undo, so these helpers cover the steps they share.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from edgeproto import common_pb2
from google.protobuf.message import Message

from edge_cloud.errors import EdgeError
from edge_cloud.objects import keys
from services.controller._progress import OpStream
from services.controller._runtime import Runtime
from services.controller._tracked import TRANSIENT

__all__ = ["gone_check", "mark_cancelled", "record_and_remove"]

SetState = Callable[..., Awaitable[None]]
"""`TrackedOps._set_state` of the ops object whose create failed."""


async def mark_cancelled(set_state: SetState, otype: Any, key: Message, err: BaseException) -> bool:
    """Mark a cancelled create CREATE_ERROR (only from a transient state); False if not cancelled.

    A cancelled create is not undone: the worker may still be building it, and a later
    delete cleans up whatever it left.
    """
    if not isinstance(err, asyncio.CancelledError):
        return False
    await set_state(
        otype,
        key,
        common_pb2.CREATE_ERROR,
        errors=["operation cancelled"],
        only_from=TRANSIENT,
    )
    return True


async def record_and_remove(
    set_state: SetState,
    otype: Any,
    key: Message,
    err: BaseException,
    stream: OpStream,
    note: str,
    remove: Callable[[], Awaitable[None]],
    logger: logging.Logger,
    what: str,
) -> None:
    """Record a failed create's error on the object, then remove it.

    The error is stored first so a reader sees why it failed even if the removal fails too;
    a failed removal is only logged, because the create's own error is what the caller gets.

    Args:
        set_state: The ops object's `_set_state`.
        otype: The object's type.
        key: Its key.
        err: Why the create failed.
        stream: The create's progress stream, told about the removal.
        note: The progress message announcing the removal.
        remove: Removes the object.
        logger: The caller's logger, so the warning names its module.
        what: How the warning names the object ("AppInst", "cluster").
    """
    message = err.message if isinstance(err, EdgeError) else str(err)
    await set_state(otype, key, common_pb2.CREATE_ERROR, errors=[message])
    await stream.send(note)
    try:
        await remove()
    except EdgeError as undo_err:
        logger.warning("undo of %s create %s failed: %s", what, key, undo_err)


def gone_check(rt: Runtime, otype: Any, key: Message) -> Callable[[], Awaitable[bool]]:
    """A check, for `cleanup_on_error`, that the object has left the cache (undo finished)."""

    async def gone() -> bool:
        return rt.caches.get(otype, keys.key_string(key)) is None

    return gone
