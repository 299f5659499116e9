"""Streaming an operation's Info updates back to the caller while the operation runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Final, TypeVar

from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

from edge_cloud.crmutil import field_number, info_fields
from edge_cloud.platform import InfoSender

__all__ = ["field_number", "info_fields", "stream_items", "stream_work"]

InfoT = TypeVar("InfoT", bound=Message)
ItemT = TypeVar("ItemT")

_DONE: Final = object()


async def stream_items(
    work: Callable[[Callable[[ItemT], None]], Coroutine[Any, Any, None]],
) -> AsyncIterator[ItemT]:
    """Run `work(emit)` and yield what it emits, as it emits it.

    The work's exception is raised after its last item, so the RPC ends with that status.
    If the caller goes away (the generator is closed or cancelled), the work is cancelled
    and awaited, so platforms get to clean up.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def run() -> None:
        try:
            await work(queue.put_nowait)
        finally:
            queue.put_nowait(_DONE)

    task = asyncio.create_task(run())
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            yield item
        await task  # raises the work's failure, if any
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def stream_work(
    info: InfoT,
    state_enum: EnumDescriptor,
    work: Callable[[InfoSender[InfoT]], Coroutine[Any, Any, object]],
) -> AsyncIterator[InfoT]:
    """Run `work(sender)` and yield every Info update it sends.

    Args:
        info: The starting Info (its key).
        state_enum: The enum of its `state` field.
        work: The operation; it reports through the sender (also a `Progress`).

    Returns:
        The stream of Info updates.
    """

    async def run(emit: Callable[[InfoT], None]) -> None:
        sender = InfoSender(info, emit, state_enum=state_enum, fields=info_fields(type(info)))
        await work(sender)  # what it returns (whether it acted) only matters to a CRM

    return stream_items(run)
