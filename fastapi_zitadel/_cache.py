"""Where introspection results live between requests.

Two tiers. The in-process ``MemoryCache`` is always in front: a hot token never leaves the
process. An optional shared tier (``IntrospectionCache``: Redis, or your own) is asked on a
local miss, before the IdP, so replicas do not each introspect the same token.

Keys are SHA-256 digests of the token with the instance's namespace, never the token: a heap
dump or a shared backend holds nothing a caller could replay. Active and inactive answers are
kept apart on purpose: a flood of garbage tokens fills only the small negative cache, and can
never push a real user's active entry out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from cachetools import TLRUCache, TTLCache

from ._principal import Principal


@dataclass(frozen=True)
class CacheEntry:
    """An active result and the wall-clock times (epoch seconds) that bound its use.

    Served until ``expires_at``; between that and ``stale_until`` only while the IdP is
    unavailable (``stale_if_error``). Neither is ever past the token's own ``exp``.
    """

    principal: Principal
    expires_at: float
    stale_until: float = 0.0

    def __post_init__(self) -> None:
        if self.stale_until < self.expires_at:
            object.__setattr__(self, "stale_until", self.expires_at)


@dataclass(frozen=True)
class CacheKey:
    """Identifies one token's entry.

    ``digest`` is the lookup key. ``token`` is there only so that a shared backend can derive
    secrets from it (the Redis tier encrypts each value with a key derived from its token);
    a backend must never store it.
    """

    digest: bytes
    token: str = field(repr=False)


class IntrospectionCache(Protocol):
    """A shared tier for active results (many replicas); see ``RedisCache``."""

    async def get(self, key: CacheKey) -> CacheEntry | None: ...

    async def set(self, key: CacheKey, entry: CacheEntry) -> None: ...

    async def delete(self, key: CacheKey) -> None: ...

    async def clear(self) -> None: ...


class MemoryCache:
    """A bounded in-process cache in which every entry lives until its own ``stale_until``.

    The verifier uses the synchronous ``lookup``/``store``/``discard`` (no coroutine on the
    hot path); the async methods make it usable as a shared tier in tests.
    """

    def __init__(self, *, max_size: int, clock: Callable[[], float]) -> None:
        self._entries: TLRUCache[bytes, CacheEntry] = TLRUCache(
            maxsize=max_size, ttu=_until_expiry, timer=clock
        )

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, digest: bytes) -> CacheEntry | None:
        return self._entries.get(digest)

    def store(self, digest: bytes, entry: CacheEntry) -> None:
        self._entries[digest] = entry

    def discard(self, digest: bytes) -> None:
        self._entries.pop(digest, None)

    def discard_all(self) -> None:
        self._entries.clear()

    async def get(self, key: CacheKey) -> CacheEntry | None:
        return self.lookup(key.digest)

    async def set(self, key: CacheKey, entry: CacheEntry) -> None:
        self.store(key.digest, entry)

    async def delete(self, key: CacheKey) -> None:
        self.discard(key.digest)

    async def clear(self) -> None:
        self.discard_all()


def _until_expiry(_key: bytes, entry: CacheEntry, _now: float) -> float:
    return entry.stale_until


class NegativeCache:
    """Recently inactive tokens, remembered briefly (``ttl`` 0 turns it off).

    Brief because ZITADEL also answers ``{"active": false}`` when it has an internal error: a
    long negative entry would lock a good token out long after the IdP recovered.
    """

    def __init__(self, *, ttl: float, max_size: int, clock: Callable[[], float]) -> None:
        self._entries: TTLCache[bytes, bool] | None = (
            TTLCache(maxsize=max_size, ttl=ttl, timer=clock) if ttl > 0 else None
        )

    def __len__(self) -> int:
        return 0 if self._entries is None else len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return self._entries is not None and key in self._entries

    def add(self, key: bytes) -> None:
        if self._entries is not None:
            self._entries[key] = True

    def discard(self, key: bytes) -> None:
        if self._entries is not None:
            self._entries.pop(key, None)

    def clear(self) -> None:
        if self._entries is not None:
            self._entries.clear()
