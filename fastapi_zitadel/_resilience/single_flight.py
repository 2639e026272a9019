"""Concurrent misses for one key share one call.

When a popular token's cache entry lapses, hundreds of requests can miss at once; without this
each would introspect, and ZITADEL Cloud answers a burst like that with 429s. The shared call
runs as its own task, so one caller giving up (a client disconnect) does not cancel it for the
others, and its outcome is delivered to every waiter.

Every caller, the first included, waits on one shared future that cannot be cancelled: a
waiter that is cancelled (its client went away) would otherwise cancel it for all the others.
Such a waiter's cancellation takes effect when the shared call ends, which its deadline
bounds. This spares a herd of a thousand callers a thousand ``asyncio.shield`` wrappers (a
future and a callback each).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from .per_loop import PerLoop

__all__ = ["SingleFlight"]

T = TypeVar("T")


class _SharedResult(asyncio.Future):  # type: ignore[type-arg]
    """A future that its waiters' cancellations do not cancel (see the module docstring)."""

    def cancel(self, msg: object = None) -> bool:
        return False


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._calls: PerLoop[dict[Hashable, _SharedResult]] = PerLoop(dict)
        self.joined = 0  # callers that waited for a call already running

    def in_flight(self) -> int:
        calls = self._calls.peek()
        return 0 if calls is None else len(calls)

    def forget(self, key: Hashable) -> None:
        """Later callers start a new call; those already waiting keep the running one."""
        calls = self._calls.peek()
        if calls is not None:
            calls.pop(key, None)

    def forget_all(self) -> None:
        calls = self._calls.peek()
        if calls is not None:
            calls.clear()

    async def run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        calls = self._calls.get()
        result = calls.get(key)
        if result is None:
            result = calls[key] = _SharedResult()
            task = asyncio.ensure_future(call())
            task.add_done_callback(lambda done: self._settle(calls, key, result, done))
        else:
            self.joined += 1
        value: T = await result
        return value

    @staticmethod
    def _settle(
        calls: dict[Hashable, _SharedResult],
        key: Hashable,
        result: _SharedResult,
        done: asyncio.Task[Any],
    ) -> None:
        if calls.get(key) is result:
            del calls[key]
        if done.cancelled():
            result.set_exception(asyncio.CancelledError())
        elif (failure := done.exception()) is not None:  # retrieved: never "unretrieved"
            result.set_exception(failure)
        else:
            result.set_result(done.result())
        result.exception()  # marked retrieved, also when nobody waits any more
