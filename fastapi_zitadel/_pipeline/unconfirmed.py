"""Hybrid mode: the JWTs served before ZITADEL's introspection has confirmed them.

A JWT is verified locally and its first request served at once, while its confirming
introspection runs in the background (one per token at a time, inside the concurrency cap,
once per cache lifetime). The promise is a number: at most ``limit`` requests per token (1 by
default) are served before that introspection answered, whatever the concurrency; the others
join the confirmation, within their deadline.

A token's record lives from its first served request until its confirmation ends; then the
local tier holds ZITADEL's answer, or the token is refused, or *suspect*. So the tiers of a
hybrid pipeline only hold introspection answers: a cache hit never asks if it was confirmed.

A token is *suspect* when ZITADEL said inactive, when it was invalidated (here, on another
replica, or before this replica started: the shared tier's tombstone), or when its
confirmation could not run: until ZITADEL says it is active, it is introspected before it is
served. A confirmation is never silently dropped: one that finds the concurrency cap full
queues again while its token is pending (the pipeline's ``_confirmation_answer``), and one
the IdP could not answer leaves the token suspect.

Deciding is synchronous (no ``await`` between reading the count and raising it): concurrent
requests cannot all see "none served yet". Records are capped; a token that finds no room
waits for its confirmation, so a flood of new tokens costs latency, never the promise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi_zitadel._cache.base import CacheKey
from fastapi_zitadel._cache.memory import NegativeCache
from fastapi_zitadel._concurrency.tasks import KeyedTasks, joined
from fastapi_zitadel._metrics import Metrics
from fastapi_zitadel._principal import Principal

__all__ = ["Confirmations", "Unconfirmed", "UnconfirmedRecord"]


@dataclass(slots=True)
class UnconfirmedRecord:
    """One token served from its JWT, and how many requests it served so far."""

    principal: Principal
    served: int = 1


class Unconfirmed(dict[bytes, UnconfirmedRecord]):
    """The records by token digest, at most ``max_size`` of them: records are added through
    ``open`` only, which keeps that cap."""

    def __init__(self, *, limit: int, max_size: int) -> None:
        assert limit >= 1, "at least the first request is served"
        super().__init__()
        self.limit = limit
        self._max_size = max_size

    def open(self, digest: bytes, principal: Principal) -> UnconfirmedRecord | None:
        """Count the first request of a token not served before; ``None`` when the records
        are full (that request then waits for the confirmation)."""
        if len(self) >= self._max_size:
            return None
        record = self[digest] = UnconfirmedRecord(principal)
        return record

    def admit(self, record: UnconfirmedRecord, now: float) -> bool:
        """Whether one more request may be served (and count it): not beyond the limit, never
        past the token's ``exp`` (a confirmation queued behind a full cap can outlast it)."""
        if record.served >= self.limit:
            return False
        expires = record.principal.expires_at
        if expires is not None and now >= expires.timestamp():
            return False
        record.served += 1
        return True


class Confirmations:
    """The confirming introspections (``confirm``: one token's, one task per token), the
    tokens served before them, and the suspects."""

    def __init__(
        self,
        *,
        confirm: Callable[[CacheKey], Awaitable[Principal]],
        suspects: NegativeCache,
        records: Unconfirmed,
        metrics: Metrics,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self._confirm = confirm
        self._suspects = suspects
        self._records = records
        self._metrics = metrics
        self._clock = clock
        self._monotonic = monotonic
        self._tasks: KeyedTasks[Principal] = KeyedTasks()

    def record(self, digest: bytes) -> UnconfirmedRecord | None:
        """The token's record while it is served before its confirmation, else ``None``."""
        return self._records.get(digest)

    def is_suspect(self, digest: bytes) -> bool:
        return digest in self._suspects

    def suspect(self, digest: bytes) -> None:
        """Introspect this token before serving it again, until ZITADEL says it is active."""
        self._suspects.add(digest)
        self._records.pop(digest, None)

    def cleared(self, digest: bytes) -> None:
        """ZITADEL said active, and nothing voided that answer since: JWT path again."""
        self._suspects.discard(digest)

    def ended(self, digest: bytes) -> None:
        """The confirmation ended (or was voided): the token's next request decides anew."""
        self._records.pop(digest, None)

    def admit(self, key: CacheKey, verified: Principal | None) -> Principal | None:
        """The principal to serve before the confirmation answered, counted; ``None`` when
        the token served its limit (or no record fits): the request waits. Synchronous on
        purpose (see the module docstring)."""
        records = self._records
        record = records.get(key.digest)
        if record is not None:
            if not records.admit(record, self._clock()):
                return None
            principal = record.principal
        elif verified is None or records.open(key.digest, verified) is None:
            return None
        else:
            principal = verified  # the first request of this token: never waits for ZITADEL
        # Introspected without holding up the request: its task is made in the next pass of
        # the loop, after the request (scheduled already but for the first: a dict lookup).
        if self._tasks.start_soon(key.digest, lambda: self._confirm(key)):
            self._metrics.background_introspections += 1
        return principal

    async def join(self, key: CacheKey, deadline: float) -> Principal:
        """Join the token's confirmation in flight (or start one) until ``deadline``;
        ``InvalidTokenError`` if ZITADEL says inactive, an ``IdentityProviderError`` if it
        cannot tell now or not before ``deadline``."""
        digest = key.digest
        if not self._tasks.scheduled(digest):
            self._metrics.background_introspections += 1
        task = self._tasks.start(digest, lambda: self._confirm(key))
        return await joined(
            task, deadline - self._monotonic(), what="the introspection confirming a JWT"
        )

    def still_pending(self, digest: bytes) -> bool:
        """Whether a token was served from its JWT, is unexpired, and its confirmation owed."""
        record = self._records.get(digest)
        if record is None:
            return False
        expires = record.principal.expires_at
        return expires is None or self._clock() < expires.timestamp()

    def forget(self, digest: bytes) -> None:
        """The token was invalidated: a confirmation in flight is void, and it is suspect."""
        self._tasks.forget(digest)
        self.suspect(digest)

    def forget_all(self) -> None:
        """Every confirmation in flight is void: their tokens are introspected first."""
        self._tasks.forget_all()
        for digest in list(self._records):
            self.suspect(digest)

    def forget_served(self) -> None:
        """Forget every token served unconfirmed (verified again, and so introspected)."""
        self._records.clear()

    def in_flight(self) -> int:
        return self._tasks.in_flight()

    async def aclose(self) -> None:
        """Cancel the confirmations still running."""
        await self._tasks.aclose()
        self._records.clear()
