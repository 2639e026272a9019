"""Where introspection results live between requests.

Keys are SHA-256 digests of the token, never the token: a heap dump or a shared backend then
holds nothing a caller could replay. Active and inactive answers are kept apart on purpose: a
flood of garbage tokens fills only the small negative cache, and can never push a real user's
active entry out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


class IntrospectionCache(Protocol):
    """Storage for active results; implement it for a shared backend."""

    async def get(self, key: bytes) -> CacheEntry | None: ...

    async def set(self, key: bytes, entry: CacheEntry) -> None: ...

    async def delete(self, key: bytes) -> None: ...

    async def clear(self) -> None: ...


class MemoryCache:
    """A bounded in-process cache in which every entry lives until its own ``expires_at``."""

    def __init__(self, *, max_size: int, clock: Callable[[], float]) -> None:
        self._entries: TLRUCache[bytes, CacheEntry] = TLRUCache(
            maxsize=max_size, ttu=_until_expiry, timer=clock
        )

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: bytes) -> CacheEntry | None:
        return self._entries.get(key)

    async def set(self, key: bytes, entry: CacheEntry) -> None:
        self._entries[key] = entry

    async def delete(self, key: bytes) -> None:
        self._entries.pop(key, None)

    async def clear(self) -> None:
        self._entries.clear()


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
