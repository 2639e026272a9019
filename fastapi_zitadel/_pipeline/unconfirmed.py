"""Hybrid mode: the JWTs served before ZITADEL's introspection has confirmed them.

Hybrid mode's promise is a number: at most ``limit`` requests per token (1 by default) are
served from the token's local verification before its confirming introspection has answered,
whatever the concurrency. The first request of a fresh JWT never waits for ZITADEL; the
requests beyond the limit wait for the confirmation (the pipeline joins it).

A token's record lives from its first served request until its confirmation ends, whatever
the outcome: then the local tier holds ZITADEL's answer, or the token is refused, or it is
*suspect* (the confirmation could not run: its next request is introspected before it is
served). So the local tier of a hybrid pipeline only ever holds introspection answers, and a
cache hit (the hot path) never has to ask whether it was confirmed.

Deciding is synchronous (no ``await`` between reading the count and raising it): concurrent
requests of one event loop cannot all see "none served yet". The number of records is capped;
a token that finds no room is not served before its confirmation (it waits, as in
introspection mode), so a flood of new tokens costs latency, never the promise.
"""

from __future__ import annotations

from fastapi_zitadel._principal import Principal

__all__ = ["Unconfirmed", "UnconfirmedRecord"]


class UnconfirmedRecord:
    """One token served from its JWT, and how many requests it served so far."""

    __slots__ = ("principal", "served")

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.served = 1


class Unconfirmed:
    def __init__(self, *, limit: int, max_size: int) -> None:
        assert limit >= 1, "at least the first request is served"
        self.limit = limit
        self._max_size = max_size
        self._records: dict[bytes, UnconfirmedRecord] = {}

    def __len__(self) -> int:
        return len(self._records)

    def get(self, digest: bytes) -> UnconfirmedRecord | None:
        return self._records.get(digest)

    def open(self, digest: bytes, principal: Principal) -> UnconfirmedRecord | None:
        """Count the first request of a token not served before; ``None`` when the records
        are full (that request then waits for the confirmation)."""
        if len(self._records) >= self._max_size:
            return None
        record = self._records[digest] = UnconfirmedRecord(principal)
        return record

    def admit(self, record: UnconfirmedRecord, now: float) -> bool:
        """Whether one more request may be served before the confirmation (and count it):
        not beyond the limit, and never past the token's ``exp`` (a confirmation can last
        longer than a token: it queues again while the concurrency cap is full)."""
        if record.served >= self.limit:
            return False
        expires = record.principal.expires_at
        if expires is not None and now >= expires.timestamp():
            return False
        record.served += 1
        return True

    def close(self, digest: bytes) -> None:
        """The confirmation has ended (or was voided): the next request decides anew."""
        self._records.pop(digest, None)

    def digests(self) -> list[bytes]:
        return list(self._records)

    def clear(self) -> None:
        self._records.clear()
