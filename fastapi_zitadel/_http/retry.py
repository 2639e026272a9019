"""Requests to ZITADEL as flows: one retry loop within a deadline, driven sync or async.

A *flow* is a generator, as httpx's ``Auth.auth_flow`` is: it yields a ``Send`` (a request and
the time it may take) or a ``Pause``, and is sent each response back (or has a
``TransportFailure`` thrown in). What a request means, how its answer is classified and when
to try again is written once, in the flow; ``run`` drives it with the async pool and
``asyncio.sleep``, ``run_sync`` with the sync pool and ``time.sleep``: nothing else differs,
so they cannot drift apart.

``Retries.flow`` is the one retry loop (introspection, the token endpoint, discovery, the
JWKS): an attempt raising ``Retryable`` (a transport failure, a 429 or 5xx:
``retry_if_overloaded``) is tried again after a jittered exponential backoff (50 ms doubling,
at most 1 s), or the server's longer ``Retry-After`` (parsed here only: ``retry_after``),
while ``max_retries`` and the deadline allow; else its ``final`` error is raised. Discovery
and the JWKS default to no retry within a call: they pace failed fetches across requests.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

import httpx

from fastapi_zitadel._exceptions import (
    IdentityProviderError,
    IdentityProviderUnavailable,
    TransportFailure,
)
from fastapi_zitadel._http.client import (
    HttpClientProvider,
    JsonResponse,
    send_for_json,
    send_for_json_sync,
)
from fastapi_zitadel._log import logger

__all__ = [
    "Flow",
    "Pause",
    "Retries",
    "Retryable",
    "Send",
    "get_json",
    "retry_after",
    "retry_if_overloaded",
    "run",
    "run_sync",
]

T = TypeVar("T")

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 1.0
_MARGIN = 0.05  # not worth pausing if less than this would be left for the next attempt


@dataclass(frozen=True)
class Send:
    """Send ``request``, its answer read within ``timeout`` seconds."""

    request: httpx.Request
    timeout: float


@dataclass(frozen=True)
class Pause:
    seconds: float


Flow = Generator["Send | Pause", JsonResponse, T]
"""Yields steps, is sent each ``Send``'s answer, returns the outcome."""


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (the HTTP-date form, rare for APIs, and more than an
    hour, nonsense, are treated as absent)."""
    try:
        seconds = float(value or "")
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None


class Retryable(Exception):
    """An attempt failed in a way worth another; ``final`` is raised when none is left.
    ``retry_after``: how long the server asked us to wait (its ``Retry-After``)."""

    def __init__(self, final: IdentityProviderError, *, retry_after: float | None = None) -> None:
        super().__init__(final.description)
        self.final = final
        self.retry_after = retry_after


def retry_if_overloaded(
    response: JsonResponse, final: Callable[[float | None], IdentityProviderError]
) -> None:
    """A 429 or 5xx is worth another attempt: raise ``Retryable`` with ``final(asked)`` (the
    error once no attempt is left), ``asked`` being the server's ``Retry-After``."""
    if response.status == 429 or response.status >= 500:
        asked = retry_after(response.headers.get("retry-after"))
        raise Retryable(final(asked), retry_after=asked)


def get_json(http: HttpClientProvider, url: str, remaining: float, what: str) -> Flow[JsonResponse]:
    """One GET attempt (discovery, the JWKS): a transport failure, 429 or 5xx is ``Retryable``;
    another status than 200 ``IdentityProviderUnavailable`` ("``what`` answered HTTP ...")."""
    try:
        response = yield Send(http.request("GET", url), remaining)
    except TransportFailure as failure:
        raise Retryable(failure) from None
    if response.status != 200:
        described = f"{what} answered HTTP {response.status}"
        retry_if_overloaded(response, lambda asked: IdentityProviderUnavailable(described))
        raise IdentityProviderUnavailable(described)
    return response


@dataclass(frozen=True, kw_only=True)
class Retries:
    """One client's retry policy: how many retries, on which clock, what to raise when the
    deadline passed before an attempt could start; ``name`` in the log ("introspection
    attempt 1 failed ...")."""

    max_retries: int
    monotonic: Callable[[], float]
    out_of_time: Callable[[], IdentityProviderError]
    name: str = "request"
    on_give_up: Callable[[IdentityProviderError], None] = lambda final: None

    def flow(self, deadline: float, attempt: Callable[[int, float], Flow[T]]) -> Flow[T]:
        """``attempt(number, seconds left)`` until one succeeds or raises anything but
        ``Retryable``; pausing between attempts while the deadline allows."""
        number = 0
        while True:
            remaining = deadline - self.monotonic()
            if remaining <= 0:
                raise self.out_of_time()
            try:
                return (yield from attempt(number, remaining))
            except Retryable as failure:
                pause = self._pause(failure, number, deadline)
                if pause is None:
                    self.on_give_up(failure.final)
                    raise failure.final from None
                logger.debug("%s attempt %d failed (%s)", self.name, number + 1, failure)
            yield Pause(pause)
            number += 1

    def _pause(self, failure: Retryable, number: int, deadline: float) -> float | None:
        if number >= self.max_retries:
            return None
        backoff = random.uniform(0, min(MAX_BACKOFF, FIRST_BACKOFF * 2**number))  # noqa: S311
        pause = max(backoff, failure.retry_after or 0.0)
        return None if self.monotonic() + pause + _MARGIN >= deadline else pause


async def run(flow: Flow[T], http: HttpClientProvider) -> T:
    """Drive ``flow`` with the async pool."""
    try:
        step = next(flow)
        while True:
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
                step = next(flow)
                continue
            try:
                answer = await send_for_json(http, step.request, timeout=step.timeout)
            except TransportFailure as failure:
                step = flow.throw(failure)
            else:
                step = flow.send(answer)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def run_sync(
    flow: Flow[T], http: HttpClientProvider, monotonic: Callable[[], float] = time.monotonic
) -> T:
    """Drive ``flow`` with the sync pool (the calling thread waits)."""
    try:
        step = next(flow)
        while True:
            if isinstance(step, Pause):
                time.sleep(step.seconds)
                step = next(flow)
                continue
            try:
                answer = send_for_json_sync(
                    http, step.request, timeout=step.timeout, monotonic=monotonic
                )
            except TransportFailure as failure:
                step = flow.throw(failure)
            else:
                step = flow.send(answer)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
