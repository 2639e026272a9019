"""Concurrent misses for one key share one call.

When a popular token's cache entry lapses, hundreds of requests can miss at once; without this
each would introspect, and ZITADEL Cloud answers a burst like that with 429s. The shared call
runs as its own task, so one caller giving up (a client disconnect) does not cancel it for
the others, and its failure is delivered to every waiter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._calls: dict[Hashable, asyncio.Task[T]] = {}
        self.joined = 0  # callers that waited for a call already running

    def in_flight(self) -> int:
        return len(self._calls)

    def forget(self, key: Hashable) -> None:
        """Later callers start a new call; those already waiting keep the running one."""
        self._calls.pop(key, None)

    def forget_all(self) -> None:
        self._calls.clear()

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        task = self._calls.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(call())
            self._calls[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        else:
            self.joined += 1
        return await asyncio.shield(task)

    def _forget(self, key: Hashable, done: asyncio.Task[T]) -> None:
        if self._calls.get(key) is done:
            del self._calls[key]
        # Mark the exception as retrieved: if every waiter was cancelled, asyncio would
        # otherwise log "Task exception was never retrieved".
        if not done.cancelled():
            done.exception()
