"""The shared-tier extension kit: what a cache of your own implements, and the tiers we ship.
``ZitadelIntrospection(cache=...)`` takes an ``IntrospectionCache``; ``RedisCache`` is the one for
several replicas (``redis_url=`` builds it for you). Most apps need none of this."""

from ._cache.base import CacheBinding, CacheEntry, CacheKey, IntrospectionCache, SuspectToken
from ._cache.memory import MemoryCache
from ._cache.redis_cache import RedisCache
from ._exceptions import SharedCacheUnavailable

__all__ = [
    "CacheBinding",
    "CacheEntry",
    "CacheKey",
    "IntrospectionCache",
    "MemoryCache",
    "RedisCache",
    "SharedCacheUnavailable",
    "SuspectToken",
]
