"""Stop calling an identity provider that keeps failing, and probe it once in a while.

While ZITADEL is down, every request would otherwise wait for its own timeout and retries,
tying up workers and hammering the IdP the moment it comes back. After ``threshold``
consecutive failures the breaker opens: new introspections fail at once with 503 for
``cooldown`` seconds (cache hits keep working); then a single probe decides whether it closes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from fastapi_zitadel._exceptions import IdentityProviderUnavailable
from fastapi_zitadel._log import logger

__all__ = ["CircuitBreaker", "CircuitState"]

CircuitState = Literal["closed", "open", "half-open"]
"""The circuit breaker's state: failing fast while ``open``, one probe while ``half-open``."""


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int,
        cooldown: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._cooldown = cooldown
        self._monotonic = monotonic
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._monotonic() - self._opened_at >= self._cooldown:
            return "half-open"
        return "open"

    def before_call(self) -> None:
        """Raise while open; in half-open, let exactly one caller through as the probe."""
        if self._opened_at is None:
            return
        waited = self._monotonic() - self._opened_at
        if waited < self._cooldown:
            raise IdentityProviderUnavailable(
                "identity provider unavailable (circuit open)",
                retry_after=self._cooldown - waited,
            )
        if self._probing:
            raise IdentityProviderUnavailable(
                "identity provider unavailable (probe in flight)", retry_after=1.0
            )
        self._probing = True

    def succeeded(self) -> None:
        if self._opened_at is not None:
            logger.warning("identity provider answered again: circuit closed")
        self._failures, self._opened_at, self._probing = 0, None, False

    def failed(self) -> None:
        self._failures += 1
        if self._probing:
            self._probing = False
            self._opened_at = self._monotonic()
            logger.warning("identity provider probe failed: circuit open again")
        elif self._threshold and self._opened_at is None and self._failures >= self._threshold:
            self._opened_at = self._monotonic()
            logger.warning(
                "identity provider failed %d times in a row: circuit open, failing fast for %.1f s",
                self._failures,
                self._cooldown,
            )

    def abandoned(self) -> None:
        """The call ended without a verdict (cancelled): let another caller probe."""
        self._probing = False
