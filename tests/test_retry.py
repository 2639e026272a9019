"""The one retry loop (``_http/retry.py``), step by step: no network, an injected clock."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from fastapi_zitadel._exceptions import IdentityProviderUnavailable
from fastapi_zitadel._http.client import JsonResponse
from fastapi_zitadel._http.retry import Flow, Pause, Retries, Retryable, Send, retry_after

REQUEST = httpx.Request("GET", "https://zitadel.example.test/x")
OK = JsonResponse(200, httpx.Headers(), {"ok": True}, None)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def retries(clock: Clock, max_retries: int = 3) -> Retries:
    return Retries(
        max_retries=max_retries,
        monotonic=clock,
        out_of_time=lambda: IdentityProviderUnavailable("out of time", retry_after=1.0),
    )


def failing(
    times: int, asked: float | None = None
) -> tuple[list[int], Callable[[int, float], Flow[bool]]]:
    """An attempt that fails ``times`` times (the server asking ``asked`` s), then answers."""
    seen: list[int] = []

    def attempt(number: int, remaining: float) -> Flow[bool]:
        seen.append(number)
        response = yield Send(REQUEST, remaining)
        if number < times:
            final = IdentityProviderUnavailable(f"attempt {number}", retry_after=asked)
            raise Retryable(final, retry_after=asked)
        return bool(response.data["ok"])

    return seen, attempt


def drive(flow: Flow[bool], clock: Clock) -> tuple[bool, list[float]]:
    """Run ``flow`` as the drivers do, answering every ``Send`` with OK; the pauses taken."""
    pauses: list[float] = []
    step = next(flow)
    while True:
        if isinstance(step, Pause):
            pauses.append(step.seconds)
            clock.now += step.seconds
        try:
            step = flow.send(OK)
        except StopIteration as done:
            return done.value, pauses


def test_a_failed_attempt_is_retried_after_a_backoff() -> None:
    clock = Clock()
    seen, attempt = failing(2)
    outcome, pauses = drive(retries(clock).flow(clock.now + 10, attempt), clock)
    assert outcome is True
    assert seen == [0, 1, 2]
    assert len(pauses) == 2
    assert all(0 <= pause <= 1.0 for pause in pauses)


def test_the_servers_retry_after_is_honoured_when_the_deadline_allows() -> None:
    clock = Clock()
    _, attempt = failing(1, asked=3.0)
    outcome, pauses = drive(retries(clock).flow(clock.now + 10, attempt), clock)
    assert outcome is True
    assert pauses == [3.0]


def test_a_retry_after_past_the_deadline_ends_with_the_final_error() -> None:
    clock = Clock()
    _, attempt = failing(1, asked=30.0)
    with pytest.raises(IdentityProviderUnavailable, match="attempt 0") as info:
        drive(retries(clock).flow(clock.now + 10, attempt), clock)
    assert info.value.retry_after == 30.0


def test_no_retry_past_max_retries() -> None:
    clock = Clock()
    seen, attempt = failing(5)
    with pytest.raises(IdentityProviderUnavailable, match="attempt 1"):
        drive(retries(clock, max_retries=1).flow(clock.now + 10, attempt), clock)
    assert seen == [0, 1]


def test_no_attempt_once_the_deadline_has_passed() -> None:
    clock = Clock()
    seen, attempt = failing(0)
    with pytest.raises(IdentityProviderUnavailable, match="out of time"):
        drive(retries(clock).flow(clock.now - 1, attempt), clock)
    assert seen == []


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("5", 5.0), (" 0.5 ", 0.5), ("-1", None), ("7200", None), ("soon", None), (None, None)],
)
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    assert retry_after(header) == seconds
