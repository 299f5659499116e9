"""`until_first`: run a connection's send and receive loops, and stop both when one ends."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


async def until_first(*coros: Coroutine[Any, Any, None]) -> None:
    """Run `coros` as tasks until the first one ends, then cancel and await the others.

    Why not a TaskGroup: on Python 3.11 a TaskGroup whose child fails while it is already
    exiting cancels its parent task and never takes that back, so a later `cancel()` of the
    parent (a client being closed) can be swallowed. This helper never cancels its caller.

    Args:
        coros: The loops; each may end normally or raise.

    Raises:
        Exception: What the first loop to end raised, if it raised.
    """
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc] # checked just above
