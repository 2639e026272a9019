"""The step that decides what the caches could not: is this token live, and what are its claims?

A ``Validator`` answers a token and a deadline with the token's claims, ``None`` when the
authority says it is not active, ``InvalidTokenError`` for a token it found bad itself, or an
``IdentityProviderError`` when it cannot tell now. The pipeline does the caching, the sharing
of concurrent calls and the claim checks.

``IntrospectionValidator`` asks the IdP (RFC 7662), guarded by the circuit breaker and the
concurrency cap, counted in the metrics. Only the IdP's own failures count towards the breaker:
an error answer, a refused connection, or no answer within the call's own budget
(``_resilience/call_budget.py``), never the time our own queue spent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from fastapi_zitadel._exceptions import (
    ClientCredentialsRejected,
    IdentityProviderUnavailable,
    QueueTimeout,
    TokenTypeUnsupported,
)
from fastapi_zitadel._idp.introspection import IntrospectionClient, OutOfTimeFailure
from fastapi_zitadel._log import RateLimitedLog
from fastapi_zitadel._metrics import Metrics
from fastapi_zitadel._resilience.call_budget import CallBudget
from fastapi_zitadel._resilience.circuit_breaker import CircuitBreaker
from fastapi_zitadel._resilience.concurrency_limit import ConcurrencyLimit

__all__ = ["IntrospectionValidator", "Validator"]


class Validator(Protocol):
    async def validate(self, token: str, deadline: float) -> Mapping[str, Any] | None:
        """The claims of a live token, or ``None`` when it is not active."""
        ...


class IntrospectionValidator:
    def __init__(
        self,
        *,
        client: IntrospectionClient,
        breaker: CircuitBreaker,
        limit: ConcurrencyLimit,
        metrics: Metrics,
        outage_log: RateLimitedLog,
        budget: CallBudget,
        monotonic: Callable[[], float],
    ) -> None:
        self._client = client
        self._breaker = breaker
        self._limit = limit
        self._metrics = metrics
        self._outage_log = outage_log
        self._budget = budget
        self._monotonic = monotonic

    async def validate(self, token: str, deadline: float) -> Mapping[str, Any] | None:
        breaker = self._breaker
        try:
            breaker.before_call()
        except IdentityProviderUnavailable:
            self._metrics.circuit_rejections += 1
            raise
        budget = self._budget
        had = 0.0
        try:
            async with self._limit.slot(deadline):
                started = self._monotonic()
                had = deadline - started
                if had < budget.needed():
                    raise QueueTimeout(
                        f"waited for one of {self._limit.limit} introspection slots until "
                        f"{had:.2f} s were left, less than the identity provider needs",
                        retry_after=1.0,
                    )
                with self._metrics.idp_call() as call:
                    claims = await self._client.introspect(token, deadline)
                    call["outcome"] = "inactive" if claims is None else "active"
                budget.answered(self._monotonic() - started)
        except ClientCredentialsRejected:
            breaker.succeeded()  # the IdP is up; our credentials are the problem
            raise
        except QueueTimeout:
            breaker.abandoned()  # we never asked the IdP: our own queue was full
            raise
        except IdentityProviderUnavailable as exc:
            if isinstance(exc, TokenTypeUnsupported):
                breaker.succeeded()  # the IdP is up, and answered
            elif isinstance(exc, OutOfTimeFailure) and not budget.counts(had):
                breaker.abandoned()  # our queue spent the time, not the IdP
                raise QueueTimeout(
                    f"{exc.description}: only {had:.2f} s were left after waiting for an "
                    "introspection slot",
                    retry_after=1.0,
                ) from None
            else:
                breaker.failed()
            self._outage_log(
                "identity provider unavailable: %s (answering 503, retry after %.0f s)",
                exc.description,
                exc.retry_after or 1.0,
            )
            raise
        except BaseException:
            breaker.abandoned()
            raise
        breaker.succeeded()
        return claims
