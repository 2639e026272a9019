"""One object per event loop, created on first use in that loop.

Connection pools (httpx, redis), semaphores and futures belong to the loop that made them. Apps
have one loop, but test suites start a new loop per test; rather than failing there, a value
used from a new loop is replaced by a fresh one. Every loop-bound piece of the library (the
HTTP client, the concurrency cap, single flight, the Redis connections) holds its state here,
so "replace it when the loop changes" is written once.
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
        self._value: T | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        if self._value is None or self._loop is not loop:
            self._value, self._loop = self._factory(), loop
        return self._value

    def peek(self) -> T | None:
        """The value of the running loop, if one was made; never creates one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        return self._value if self._loop is loop else None

    def pop_current(self) -> T | None:
        """The value of the running loop, forgotten (to be closed by the caller)."""
        value, self._value = self._value, None
        loop, self._loop = self._loop, None
        return value if loop is asyncio.get_running_loop() else None
