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
    """An active result and the wall-clock times (epoch seconds) that bound its use.

    Served until ``expires_at``; between that and ``stale_until`` only while the IdP is
    unavailable (``stale_if_error``). Neither is ever past the token's own ``exp``.
    ``verified_at`` is when the IdP vouched for it: a shared tier keeps it, so that an instance
    reading the entry holds it no longer than its own ``cache_ttl`` from then (a tier that
    leaves it ``None`` has its entries treated as verified when read). ``epoch`` is the
    revocation epoch the entry was last checked against (ZITADEL's events); a tier need not
    keep it.
    """

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
    """Identifies one token's entry.

    ``digest`` is the lookup key. ``token`` is there only so that a shared backend can derive
    secrets from it (the Redis tier encrypts each value with a key derived from its token);
    a backend must never store it. ``expires_at`` is the token's own ``exp`` (epoch seconds)
    when the caller knows it: a tier that keeps a tombstone for ``delete`` may keep it until
    then, so that a replica started hours after an invalidation still learns of it.
    """

    digest: bytes
    token: str = field(repr=False)
    expires_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SuspectToken:
    """What a shared tier answers when it holds no entry for a token but knows something
    against it: the tombstone an invalidation or another replica's inactive answer left.

    In hybrid mode such a token is introspected before it is served again, on every replica
    (one started after the invalidation, or deaf while it happened, included), instead of
    being served from its JWT.
    ``reason`` is for logs and metrics only.
    """

    reason: str = "invalidated"


@dataclass(frozen=True, slots=True)
class CacheBinding:
    """What a ``ZitadelIntrospection`` tells the shared tier it was given.

    ``namespace`` differs between instances whose verdicts differ (issuer, audience, project);
    ``secret`` is a digest of our own client credential, so only our replicas can seal entries;
    ``principal`` rebuilds a cached principal from its claims; ``on_invalidate`` and
    ``on_clear`` apply other replicas' invalidations to this process's local tier.
    """

    namespace: bytes = field(repr=False)
    secret: bytes = field(repr=False)
    principal: Callable[[Mapping[str, Any]], Principal]
    on_invalidate: Callable[[bytes], None]
    on_clear: Callable[[], None]


class IntrospectionCache(abc.ABC):
    """A shared tier for active results, asked after a local miss and before the IdP.

    Implement the four operations; ``read``, ``bind``, ``aclose`` and ``revocation_feed`` are
    optional, with defaults. A ``get`` or ``set`` that fails may raise: the verifier treats any
    exception as a miss.
    ``delete`` and ``clear`` must raise when they cannot confirm the change: ``invalidate()``
    and ``clear()`` retry them within the instance's ``timeout`` and then raise
    ``SharedCacheUnavailable`` instead of returning as if done.
    """

    @abc.abstractmethod
    async def get(self, key: CacheKey) -> CacheEntry | None: ...

    @abc.abstractmethod
    async def set(self, key: CacheKey, entry: CacheEntry) -> None: ...

    @abc.abstractmethod
    async def delete(self, key: CacheKey) -> None: ...

    @abc.abstractmethod
    async def clear(self) -> None: ...

    async def read(self, key: CacheKey) -> CacheEntry | SuspectToken | None:
        """``get``, telling "I know nothing of this token" (``None``) from "I know something
        against it" (a ``SuspectToken``: a tombstone that ``delete`` left). The verifier
        reads the tier through this method only, in one call.

        The default knows no tombstones and is ``get``; a tier that keeps them overrides it
        (why: ``SuspectToken``).
        """
        return await self.get(key)

    def bind(self, binding: CacheBinding) -> None:  # noqa: B027 - an optional hook
        """Called once, when the instance using the tier is built, with what the tier needs
        to know about it."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook
        """Release connections; called once, when the instance using the tier closes."""

    def revocation_feed(self, issuer: str) -> RevocationFeed | None:
        """Where ZITADEL's events reach the other replicas (``events_signing_key``); ``None``
        (the default): in this process only."""
        return None
