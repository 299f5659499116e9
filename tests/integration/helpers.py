"""Bounded waiting for integration tests: poll with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]], *, within: float = 10.0, interval: float = 0.05
) -> T:
    """Call `check` until it stops raising AssertionError; re-raise the last one at the deadline."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(interval)


async def take(iterator: AsyncIterator[T], count: int, *, within: float = 10.0) -> list[T]:
    """The next `count` items of `iterator`; fails the test after `within` seconds."""
    items: list[T] = []
    async with asyncio.timeout(within):
        while len(items) < count:
            items.append(await anext(iterator))
    return items
