"""A cap on concurrent introspections, so a flood of distinct tokens cannot open thousands of
connections to the IdP at once (ZITADEL Cloud rate-limits at about 50 requests a second).

Excess callers queue, within their deadline; one that runs out of time gets ``QueueTimeout``,
which is our own back-pressure and not an IdP failure (it never opens the circuit breaker).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi_zitadel._concurrency.per_loop import PerLoop
from fastapi_zitadel._exceptions import QueueTimeout

__all__ = ["ConcurrencyLimit"]


class _Slots:
    __slots__ = ("in_use", "semaphore")

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.in_use = 0


class ConcurrencyLimit:
    def __init__(self, limit: int, *, monotonic: Callable[[], float]) -> None:
        self.limit = limit
        self._monotonic = monotonic
        self._slots: PerLoop[_Slots] = PerLoop(lambda: _Slots(limit))

    @property
    def in_use(self) -> int:
        slots = self._slots.peek()
        return 0 if slots is None else slots.in_use

    @asynccontextmanager
    async def slot(self, deadline: float) -> AsyncIterator[None]:
        """Hold one of ``limit`` slots; wait for one until ``deadline`` at most."""
        slots = self._slots.get()
        semaphore = slots.semaphore
        if semaphore.locked():  # only then is there a wait worth a timer
            try:
                timeout = max(deadline - self._monotonic(), 0)
                await asyncio.wait_for(semaphore.acquire(), timeout=timeout)
            except asyncio.TimeoutError:
                raise QueueTimeout(
                    f"more than {self.limit} introspections in flight", retry_after=1.0
                ) from None
        else:
            await semaphore.acquire()
        slots.in_use += 1
        try:
            yield
        finally:
            slots.in_use -= 1
            semaphore.release()
