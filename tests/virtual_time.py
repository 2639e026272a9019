"""An event loop on virtual time: whenever nothing is ready to run, the clock jumps to the
next timer instead of sleeping until it.

Load scenarios measured in seconds (an IdP that answers in 0.5 s, thousands of requests with a
10 s deadline) then run in a fraction of a second and exactly the same way every time: the
order of events depends only on the program, never on how busy the machine is. Only for code
that does no real I/O (an ``httpx.MockTransport`` or an in-process ASGI app, no sockets, no
threads): a socket's data would not arrive while the clock jumps.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_on_virtual_time"]

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """Never blocks: polls, and moves the loop's clock by the timeout it was asked to wait."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if events:
            return events
        if timeout is None:
            raise RuntimeError("virtual time: nothing scheduled and nothing ready (deadlock)")
        self.now += timeout
        return events


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._selector_clock = _JumpingSelector()
        super().__init__(self._selector_clock)

    def time(self) -> float:
        return self._selector_clock.now


def run_on_virtual_time(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh loop whose ``time()`` is virtual."""
    loop = _VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
