"""Concurrent misses for one key share one call.

When a popular token's cache entry lapses, hundreds of requests can miss at once; without this
each would introspect, and ZITADEL Cloud answers a burst like that with 429s.

The first caller runs the call itself (no task is created: most flights have one caller) and
the others wait on one shared future. If that first caller gives up (a client disconnect
cancels it), the waiters are not failed: one of them runs the call again. A failure is
delivered to every waiter.

The shared future cannot be cancelled: a waiter that is cancelled (its client went away)
would otherwise cancel it for all the others. Such a waiter's cancellation takes effect when
the shared call ends, which is bounded by the call's own deadline. This spares a herd of a
thousand callers a thousand ``asyncio.shield`` wrappers (a future and a callback each).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from .per_loop import PerLoop

__all__ = ["SingleFlight"]

T = TypeVar("T")


class _Abandoned(Exception):
    """The caller running the shared call was cancelled: a waiter takes over."""


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
        while (future := calls.get(key)) is not None:
            self.joined += 1
            try:
                result: T = await future
                return result
            except _Abandoned:
                continue  # the caller running it was cancelled: run it here instead
        future = _SharedResult()
        calls[key] = future
        try:
            result = await call()
        except BaseException as exc:
            failure = _Abandoned() if isinstance(exc, asyncio.CancelledError) else exc
            self._settle(calls, key, future)
            future.set_exception(failure)
            future.exception()  # retrieved: no "exception never retrieved" without waiters
            raise
        self._settle(calls, key, future)
        future.set_result(result)
        return result

    @staticmethod
    def _settle(calls: dict[Hashable, _SharedResult], key: Hashable, future: _SharedResult) -> None:
        if calls.get(key) is future:
            del calls[key]
