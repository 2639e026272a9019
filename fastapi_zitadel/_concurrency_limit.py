"""A cap on concurrent introspections, so a flood of distinct tokens cannot open thousands of
connections to the IdP at once (ZITADEL Cloud rate-limits at about 50 requests a second).

Excess callers queue, within their deadline. The semaphore belongs to one event loop, so it is
created per loop (test suites run a new loop per test).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from ._exceptions import IdentityProviderUnavailable


class ConcurrencyLimit:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.in_use = 0

    @asynccontextmanager
    async def slot(self, deadline: float, monotonic: Callable[[], float]) -> AsyncIterator[None]:
        """Hold one of ``limit`` slots; wait for one until ``deadline`` at most."""
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:
            self._semaphore, self._loop, self.in_use = asyncio.Semaphore(self.limit), loop, 0
        semaphore = self._semaphore
        if semaphore.locked():  # only then is there a wait worth a timer
            try:
                await asyncio.wait_for(semaphore.acquire(), timeout=max(deadline - monotonic(), 0))
            except asyncio.TimeoutError:
                raise IdentityProviderUnavailable(
                    f"more than {self.limit} introspections in flight", retry_after=1.0
                ) from None
        else:
            await semaphore.acquire()
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1
            semaphore.release()
