"""The library's logger, and a way to say the same thing at most once a minute.

During an outage or a misconfiguration every request fails the same way; one clear line a
minute tells the operator everything, a line per request buries it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog", "logger"]

logger = logging.getLogger("fastapi_zitadel")
_INTERVAL = 60.0  # seconds between two lines of one RateLimitedLog: one a minute, at most


class RateLimitedLog:
    def __init__(self, level: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._level = level
        self._monotonic = monotonic
        self._last = float("-inf")

    def __call__(self, message: str, *args: object) -> None:
        now = self._monotonic()
        if now - self._last >= _INTERVAL:
            self._last = now
            logger.log(self._level, message, *args)
