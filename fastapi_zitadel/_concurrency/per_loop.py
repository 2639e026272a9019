"""One object per live event loop, created on first use in that loop.

Connection pools (httpx, redis), semaphores and futures belong to the loop that made them. Apps
have one loop; test suites start one per test, and some apps run two at once (two
``TestClient``s, a thread with its own loop). Each loop's value is kept while it lives:
alternating between two loops reuses both instead of building a pool on every switch; values of
closed loops are dropped. Every loop-bound piece of the library (the HTTP pool, the concurrency
cap, single flight, the Redis connections) holds its state here: "one per loop" is written once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerLoop"]

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._values: dict[int, tuple[asyncio.AbstractEventLoop, T]] = {}
        self._last: tuple[asyncio.AbstractEventLoop, T] | None = None  # the fast path

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        entry = self._values.get(id(loop))
        if entry is None or entry[0] is not loop:
            # the values of loops that have closed go (nothing can run on them any more)
            for key in [k for k, (known, _) in self._values.items() if known.is_closed()]:
                del self._values[key]
            entry = self._values[id(loop)] = (loop, self._factory())
        self._last = entry
        return entry[1]

    def peek(self) -> T | None:
        """The value of the running loop, if one was made; never creates one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        entry = self._values.get(id(loop))
        return entry[1] if entry is not None and entry[0] is loop else None

    def pop_current(self) -> T | None:
        """The value of the running loop, forgotten (to be closed by the caller)."""
        loop = asyncio.get_running_loop()
        entry = self._values.get(id(loop))
        if entry is None or entry[0] is not loop:
            return None
        del self._values[id(loop)]
        if self._last is entry:
            self._last = None
        return entry[1]
