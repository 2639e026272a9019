"""A flood of new tokens cannot open the circuit breaker; a failing IdP still does.

A request that waited for one of our own introspection slots reaches the IdP with what is
left of its deadline; its timeout is not the IdP's failure (``_resilience/call_budget.py``).
These scenarios are the outside review's, with its numbers, run on virtual time
(``tests/virtual_time.py``): an IdP that answers in 0.5 s and thousands of requests with a
10 s deadline play out exactly the same on every run, in about a second.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from fastapi_zitadel import IdentityProviderUnavailable, InvalidTokenError

from .idp_support import slow_world
from .virtual_time import run_on_virtual_time


@dataclass
class Outcome:
    served: int
    unavailable: list[IdentityProviderUnavailable]
    circuit_after_burst: str
    next_valid: str  # "200", or the error the next valid token got
    introspections: int


async def burst(
    count: int,
    *,
    latency: float,
    junk: bool,
    breaks: Literal["hangs", "errors"] | None = None,
    **options: Any,
) -> Outcome:
    """``count`` new tokens at once (junk, or real ones: a cold start), then one valid token.

    With ``breaks``, the IdP stops answering (``hangs``) or answers 500 (``errors``) after
    the first call."""
    async with slow_world(latency, **options) as world:  # discovery done, IdP healthy
        zitadel, standin, idp = world.zitadel, world.standin, world.idp
        if breaks == "hangs":
            idp.latency = 3600.0
        idp.failing = breaks == "errors"
        tokens = [f"junk-{i}" if junk else world.token() for i in range(count)]
        before = standin.introspection_calls
        outcomes = await asyncio.gather(
            *(zitadel.verify(token) for token in tokens), return_exceptions=True
        )
        circuit = zitadel.circuit_state
        try:
            await zitadel.verify(world.token())
            next_valid = "200"
        except IdentityProviderUnavailable as exc:
            next_valid = exc.description
        unexpected = [
            o
            for o in outcomes
            if isinstance(o, BaseException)
            and not isinstance(o, (IdentityProviderUnavailable, InvalidTokenError))
        ]
        assert not unexpected
        return Outcome(
            served=sum(not isinstance(o, IdentityProviderUnavailable) for o in outcomes),
            unavailable=[o for o in outcomes if isinstance(o, IdentityProviderUnavailable)],
            circuit_after_burst=circuit,
            next_valid=next_valid,
            introspections=standin.introspection_calls - before,
        )


def assert_only_the_late_ones_failed(outcome: Outcome) -> None:
    assert outcome.circuit_after_burst == "closed"
    assert outcome.next_valid == "200"
    assert outcome.unavailable, "nothing had to wait: the scenario does not test the queue"
    for failure in outcome.unavailable:  # each a 503 with Retry-After, for itself
        assert failure.headers("api")["Retry-After"] == "1"
        assert "circuit open" not in failure.description


def test_junk_burst_with_a_short_timeout_leaves_the_circuit_closed() -> None:
    """The review's second case: timeout=1, 10 slots, IdP at 0.2 s, 300 junk tokens (it
    opened the circuit)."""
    outcome = run_on_virtual_time(
        burst(300, latency=0.2, junk=True, timeout=1, max_concurrent_introspections=10)
    )
    assert_only_the_late_ones_failed(outcome)
    # 10 slots at 0.2 s serve 50 a second: about 40 within the 1 s deadline, not fewer.
    assert outcome.served >= 30


def test_calls_that_cannot_be_answered_in_time_are_not_started() -> None:
    outcome = run_on_virtual_time(
        burst(300, latency=0.2, junk=True, timeout=1, max_concurrent_introspections=10)
    )
    # Every introspection started was answered (the one more: the next valid token): none
    # was sent with too little time left.
    assert outcome.introspections == outcome.served + 1


@pytest.mark.soak
def test_junk_burst_at_the_defaults_leaves_the_circuit_closed() -> None:
    """The review's first case: defaults (10 s, 50 slots), IdP at 0.5 s, 1,500 junk tokens."""
    outcome = run_on_virtual_time(burst(1500, latency=0.5, junk=True))
    assert_only_the_late_ones_failed(outcome)
    assert outcome.served >= 900  # 100 a second for 10 s, minus the last round trip


@pytest.mark.soak
def test_cold_start_of_real_tokens_leaves_the_circuit_closed() -> None:
    """2,000 real new tokens at once, IdP at 0.5 s: every one served in its deadline is
    served; the rest are 503 for themselves, and the next valid token passes."""
    outcome = run_on_virtual_time(burst(2000, latency=0.5, junk=False))
    assert_only_the_late_ones_failed(outcome)
    assert outcome.served >= 900


def test_an_idp_that_does_not_answer_still_opens_the_circuit() -> None:
    """Calls that had their own budget (half the timeout) and got no answer are the IdP's."""
    outcome = run_on_virtual_time(
        burst(
            300, latency=0.2, junk=True, breaks="hangs", timeout=1, max_concurrent_introspections=10
        )
    )
    assert outcome.circuit_after_burst == "open"
    assert "circuit open" in outcome.next_valid


def test_an_idp_that_answers_errors_still_opens_the_circuit() -> None:
    """Error answers count whatever the time left: the IdP breaks after the warm-up call."""
    outcome = run_on_virtual_time(
        burst(
            300,
            latency=0.2,
            junk=True,
            breaks="errors",
            timeout=1,
            max_concurrent_introspections=10,
        )
    )
    assert outcome.circuit_after_burst == "open"
    assert "circuit open" in outcome.next_valid


def test_an_idp_taking_half_the_timeout_is_not_failed_by_a_burst() -> None:
    """IdP at 0.5 s, ``timeout=1``, 5 slots: a call started with just over half a second left
    would time out; none is started with less than the IdP lately needed (1.5 times its
    answer time), so no timeout, no open circuit."""
    outcome = run_on_virtual_time(
        burst(600, latency=0.5, junk=True, timeout=1, max_concurrent_introspections=5)
    )
    assert_only_the_late_ones_failed(outcome)
    assert all("introspection slot" in u.description for u in outcome.unavailable)
