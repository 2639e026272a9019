"""The shared tier on Redis, for APIs running as many processes and replicas.

Without it every replica introspects every token again, multiplying the load on ZITADEL. With
it, one replica's verdict serves all of them, and a revocation reaches all of them.

Nothing in Redis is readable without the token it belongs to:

* the key is ``fastapi-zitadel:<namespace tag>:<SHA-256 of the token digest>``, never the token;
* the value is the introspection answer sealed with AES-256-GCM under a key derived (HKDF-SHA256)
  from the token itself and from a digest of our own client credential, with the Redis key as
  associated data: a dump of Redis (or a value moved to another key) reveals neither tokens nor
  claims, and someone who can write to Redis and holds a token still cannot forge its entry
  (e.g. add roles) without our key file or secret;
* the Redis expiry is the entry's own lifetime, never past the token's ``exp``.

Redis is an optimisation, never a dependency of availability: every Redis failure (down, slow:
a short timeout) is a cache miss, the tier is skipped for a few seconds after one, and each
change between "down" and "available again" is logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fastapi_zitadel._exceptions import ConfigurationError
from fastapi_zitadel._log import logger
from fastapi_zitadel._resilience.per_loop import PerLoop

from .base import CacheBinding, CacheEntry, CacheKey, IntrospectionCache

__all__ = ["CHANNEL", "RedisCache"]

CHANNEL = "fastapi-zitadel:invalidate"
_KEY_LABEL = b"fastapi-zitadel redis key v1\x00"
_VALUE_LABEL = b"fastapi-zitadel redis value v1"
_NONCE_BYTES = 12

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - depends on the environment
    aioredis = None  # type: ignore[assignment]
    RedisError = Exception  # type: ignore[assignment,misc]


class RedisCache(IntrospectionCache):
    """``IntrospectionCache`` on Redis; ``RedisCache.from_url(url)``, or ``redis_url=`` /
    ``ZITADEL_REDIS_URL`` to have one made for you.

    The instance it is given to binds it (its namespace, our credential's digest, how to
    rebuild a principal) before first use; one ``RedisCache`` serves one instance.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.25,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if aioredis is None:
            raise ConfigurationError(
                "redis_url needs the redis client: pip install 'fastapi-zitadel[redis]'"
            )
        self._url = url
        self._clock = clock
        self._monotonic = monotonic
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._down_until: float | None = None
        self._clients: PerLoop[Any] = PerLoop(self._connect)
        self._listeners: PerLoop[asyncio.Task[None]] = PerLoop(self._listen_forever)
        self._binding: CacheBinding | None = None
        self._tag = ""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 0.25,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> RedisCache:
        """A tier on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``).

        ``timeout`` bounds each Redis operation; after a failure the tier is skipped for
        ``retry_interval`` seconds.
        """
        return cls(
            url, timeout=timeout, retry_interval=retry_interval, clock=clock, monotonic=monotonic
        )

    def bind(self, binding: CacheBinding) -> None:
        if self._binding is not None and self._binding.namespace != binding.namespace:
            raise ConfigurationError(
                "this RedisCache already serves another ZitadelIntrospection: give each its own"
            )
        self._binding = binding
        self._tag = binding.namespace[:8].hex()

    @property
    def _bound(self) -> CacheBinding:
        if self._binding is None:
            raise ConfigurationError(
                "a RedisCache is used through a ZitadelIntrospection: pass it as cache=..."
            )
        return self._binding

    # IntrospectionCache -----------------------------------------------------------------
    async def get(self, key: CacheKey) -> CacheEntry | None:
        redis_key = self._redis_key(key)
        sealed = await self._call(lambda client: client.get(redis_key))
        if not isinstance(sealed, bytes):
            return None
        entry = self._open(sealed, key, redis_key)
        if entry is None:
            await self._call(lambda client: client.delete(redis_key))
        return entry

    async def set(self, key: CacheKey, entry: CacheEntry) -> None:
        lifetime_ms = int((entry.stale_until - self._clock()) * 1000)
        if lifetime_ms <= 0:
            return
        redis_key = self._redis_key(key)
        sealed = self._seal(entry, key, redis_key)
        await self._call(lambda client: client.set(redis_key, sealed, px=lifetime_ms))

    async def delete(self, key: CacheKey) -> None:
        redis_key = self._redis_key(key)
        message = f"{self._tag}:{key.digest.hex()}"
        await self._call(lambda client: client.delete(redis_key))
        await self._call(lambda client: client.publish(CHANNEL, message))

    async def clear(self) -> None:
        async def drop_namespace(client: Any) -> None:
            async for redis_key in client.scan_iter(match=f"fastapi-zitadel:{self._tag}:*"):
                await client.delete(redis_key)
            await client.publish(CHANNEL, f"{self._tag}:*")

        await self._call(drop_namespace)

    async def aclose(self) -> None:
        listener = self._listeners.pop_current()
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        client = self._clients.pop_current()
        if client is not None:
            await client.aclose()

    # Sealing ----------------------------------------------------------------------------
    def _redis_key(self, key: CacheKey) -> str:
        self._bound  # noqa: B018 - a clear error before anything reaches Redis
        return f"fastapi-zitadel:{self._tag}:{hashlib.sha256(_KEY_LABEL + key.digest).hexdigest()}"

    def _cipher(self, key: CacheKey) -> AESGCM:
        binding = self._bound
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=binding.namespace, info=_VALUE_LABEL)
        return AESGCM(hkdf.derive(binding.secret + key.token.encode("utf-8")))

    def _seal(self, entry: CacheEntry, key: CacheKey, redis_key: str) -> bytes:
        plain = json.dumps(
            {
                "claims": entry.principal.model_dump(mode="json", include={"claims"})["claims"],
                "expires_at": entry.expires_at,
                "stale_until": entry.stale_until,
            },
            separators=(",", ":"),
        ).encode("utf-8")
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._cipher(key).encrypt(nonce, plain, redis_key.encode("ascii"))

    def _open(self, sealed: bytes, key: CacheKey, redis_key: str) -> CacheEntry | None:
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            plain = self._cipher(key).decrypt(nonce, ciphertext, redis_key.encode("ascii"))
            data = json.loads(plain)
            principal = self._bound.principal(data["claims"])
            expires_at, stale_until = float(data["expires_at"]), float(data["stale_until"])
            if principal.expires_at is not None:  # never past the token's own exp
                token_exp = principal.expires_at.timestamp()
                expires_at, stale_until = min(expires_at, token_exp), min(stale_until, token_exp)
            return CacheEntry(principal, expires_at, stale_until)
        except (InvalidTag, ValueError, KeyError, TypeError):
            logger.warning("discarding an unreadable entry from the shared cache")
            return None

    # Availability -----------------------------------------------------------------------
    async def _call(self, operation: Callable[[Any], Any]) -> Any:
        """Run one Redis operation; any failure is logged once and treated as a miss."""
        if self._down_until is not None and self._monotonic() < self._down_until:
            return None
        try:
            client = self._clients.get()
            self._listeners.get()  # make sure this loop hears other replicas' invalidations
            result = await asyncio.wait_for(operation(client), timeout=self._timeout * 4)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            if self._down_until is None:
                logger.warning(
                    "shared cache (Redis) unavailable (%s): going straight to the identity "
                    "provider until it is back",
                    type(exc).__name__,
                )
            self._down_until = self._monotonic() + self._retry_interval
            return None
        if self._down_until is not None:
            self._down_until = None
            logger.warning("shared cache (Redis) available again")
        return result

    def _connect(self) -> Any:
        return aioredis.Redis.from_url(
            self._url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry_on_timeout=False,
        )

    def _listen_forever(self) -> asyncio.Task[None]:
        return asyncio.ensure_future(self._listen())

    async def _listen(self) -> None:
        """Apply other replicas' invalidations to the local tier; reconnect on failure."""
        while True:
            try:
                client = aioredis.Redis.from_url(self._url, socket_connect_timeout=self._timeout)
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis went away: try again shortly
                await asyncio.sleep(self._retry_interval / 5)

    def _apply(self, data: bytes) -> None:
        tag, _, target = data.decode("ascii", errors="replace").partition(":")
        if tag != self._tag:
            return
        if self._binding is None:
            return
        if target == "*":
            self._binding.on_clear()
        else:
            with contextlib.suppress(ValueError):
                self._binding.on_invalidate(bytes.fromhex(target))
