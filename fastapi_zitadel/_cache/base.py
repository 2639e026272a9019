"""What a cache tier stores, and the base class a shared tier (Redis, or your own) extends.

Keys are SHA-256 digests of the token with the instance's namespace, never the token: a heap
dump or a shared backend holds nothing a caller could replay.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi_zitadel._events.revocations import RevocationFeed
from fastapi_zitadel._principal import Principal

__all__ = ["CacheBinding", "CacheEntry", "CacheKey", "IntrospectionCache", "SuspectToken"]


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """An active result, served until ``expires_at`` (epoch seconds), then until
    ``stale_until`` only while the IdP is unavailable (``stale_if_error``); neither is ever
    past the token's ``exp``. ``verified_at``: when the IdP vouched for it, kept by a shared
    tier so a reader holds it no longer than its own ``cache_ttl`` from then (``None``: treated
    as verified when read). ``epoch``: the revocation epoch (ZITADEL's events) it was last
    checked against; a tier need not keep it."""

    principal: Principal
    expires_at: float
    stale_until: float = 0.0
    verified_at: float | None = None
    epoch: int = 0

    def __post_init__(self) -> None:
        if self.stale_until < self.expires_at:
            object.__setattr__(self, "stale_until", self.expires_at)


@dataclass(frozen=True, slots=True)
class CacheKey:
    """One token's entry: ``digest`` is the lookup key; ``token`` only lets a shared backend
    derive secrets (the Redis tier encrypts each value with a key derived from its token) and
    must never be stored. ``expires_at``: the token's ``exp`` (epoch seconds) when known; a
    ``delete`` tombstone may be kept until then, so a replica started hours after an
    invalidation still learns of it."""

    digest: bytes
    token: str = field(repr=False)
    expires_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SuspectToken:
    """A shared tier's answer when it holds no entry but knows something against the token:
    the tombstone an invalidation or another replica's inactive answer left. In hybrid mode
    every replica (one started after the invalidation, or deaf while it happened, included)
    introspects such a token before serving it again, instead of trusting its JWT. ``reason``
    is for logs and metrics only."""

    reason: str = "invalidated"


@dataclass(frozen=True, slots=True)
class CacheBinding:
    """What a ``ZitadelIntrospection`` tells its shared tier. ``namespace`` differs between
    instances whose verdicts differ (issuer, audience, project); ``secret``, a digest of our
    client credential, lets only our replicas seal entries; ``principal`` rebuilds a cached
    principal from its claims; ``on_invalidate`` and ``on_clear`` apply other replicas'
    invalidations to this process's local tier."""

    namespace: bytes = field(repr=False)
    secret: bytes = field(repr=False)
    principal: Callable[[Mapping[str, Any]], Principal]
    on_invalidate: Callable[[bytes], None]
    on_clear: Callable[[], None]


class IntrospectionCache(abc.ABC):
    """A shared tier for active results, asked after a local miss and before the IdP.

    Implement the four operations (``read``, ``bind``, ``aclose``, ``revocation_feed`` have
    defaults). A failing ``get`` or ``set`` may raise: the verifier treats it as a miss.
    ``delete`` and ``clear`` must raise when they cannot confirm the change: ``invalidate()``
    and ``clear()`` retry them within ``timeout``, then raise ``SharedCacheUnavailable``
    rather than return as if done."""

    @abc.abstractmethod
    async def get(self, key: CacheKey) -> CacheEntry | None: ...

    @abc.abstractmethod
    async def set(self, key: CacheKey, entry: CacheEntry) -> None: ...

    @abc.abstractmethod
    async def delete(self, key: CacheKey) -> None: ...

    @abc.abstractmethod
    async def clear(self) -> None: ...

    async def read(self, key: CacheKey) -> CacheEntry | SuspectToken | None:
        """``get``, telling "nothing known of this token" (``None``) from "something against
        it" (a ``SuspectToken``: a ``delete`` tombstone). The verifier reads the tier through
        this only, in one call. The default knows no tombstones and is ``get``; a tier that
        keeps them overrides it (why: ``SuspectToken``)."""
        return await self.get(key)

    def bind(self, binding: CacheBinding) -> None:  # noqa: B027 - an optional hook
        """Called once, when the instance using the tier is built, with what to know of it."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook
        """Release connections; called once, when the instance using the tier closes."""

    def revocation_feed(self, issuer: str) -> RevocationFeed | None:
        """Where ZITADEL's events reach the other replicas (``events_signing_key``); ``None``
        (the default): in this process only."""
        return None
