"""How much of a request's deadline an IdP call is owed, and when its timeout is the IdP's fault.

A request's ``timeout`` covers waiting for one of our concurrency slots, then the IdP call. A
flood of new tokens (an attacker's junk, or a cold start) fills the queue, and a request that
waited most of its deadline reaches the IdP with too little time for even a healthy IdP to
answer. Its timeout says nothing about the IdP; counting it would let anyone open the circuit
breaker, taking authentication down for everybody, by sending junk.

So an IdP call has **its own budget: half of** ``timeout``. A call that had at least that and
got no answer is the IdP's failure and counts towards the breaker, like an error answer or a
refused connection (those count whatever the time left). One that had less ran out of the
time *our queue* spent: a 503 with ``Retry-After`` for its own request only. And a call is not
started when the time left is below what the IdP has been taking lately (1.5 times its recent
answer time, at most 4/5 of ``timeout``, so a request that did not wait can always ask): it
could not be answered in time and would only load the IdP. A call that gets its slot thus
always has more time than the IdP recently needed; one that times out all the same says
something about it.
"""

from __future__ import annotations

__all__ = ["CallBudget"]

_NEWEST = 0.2  # weight of the newest answer time in the running average of IdP latency
_MARGIN = 1.5  # margin over that average a call must have left to be started


class CallBudget:
    def __init__(self, timeout: float) -> None:
        self.own = timeout / 2
        self._most = timeout * 0.8  # never required: a request that did not queue may ask
        self._latency: float | None = None  # running average of answered calls, seconds

    def needed(self) -> float:
        """The least time left worth starting a call with (0 before the IdP has answered)."""
        latency = self._latency
        return 0.0 if latency is None else min(_MARGIN * latency, self._most)

    def answered(self, seconds: float) -> None:
        """The IdP answered a call in ``seconds``."""
        latency = self._latency
        self._latency = seconds if latency is None else latency + _NEWEST * (seconds - latency)

    def counts(self, had: float) -> bool:
        """Whether a call that had ``had`` seconds and got no answer is the IdP's failure."""
        return had >= self.own
