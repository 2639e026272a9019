"""The shared tier on Redis, for APIs running as many processes and replicas.

Without it every replica introspects every token again, multiplying the load on ZITADEL. With
it, one replica's verdict serves all of them, and a revocation reaches all of them.

Nothing in Redis is readable without the token it belongs to:

* the key is ``fastapi-zitadel:<namespace tag>:<SHA-256 of the token digest>``, never the token;
* the value is the introspection answer sealed with AES-256-GCM under a key derived (HKDF-SHA256)
  from the token itself and from a digest of our own client credential, with the Redis key and
  the namespace generation as associated data: a dump of Redis (or a value moved to another
  key) reveals neither tokens nor claims, and someone who can write to Redis and holds a token
  still cannot forge its entry (e.g. add roles) without our key file or secret;
* the Redis expiry is the entry's own lifetime, never past the token's ``exp``; the sealed value
  carries when the IdP vouched for it, so a reader holds it no longer than its own ``cache_ttl``
  from then.

What nothing may undo:

* ``delete`` (an invalidation, or an inactive answer for a token some tier held) deletes the
  entry, writes a tombstone and publishes the invalidation in one script. While the tombstone
  lives (``tombstone_ttl``, 10 minutes by default, longer than any lookup's deadline, at
  least as long as the entry it replaced would have lived, and until the token's ``exp``
  when the caller knows it: ``CacheKey.expires_at``) the token's entry cannot be
  written: a lookup still in flight elsewhere cannot put it back, and neither can a replay of
  an earlier sealed value. ``get`` reads it as a miss; ``read`` (what the verifier uses, in
  the same one script) as a ``SuspectToken``, so that in hybrid mode every replica, one started
  after the invalidation included, introspects the token before serving its JWT;
* writes are one script too: set only if there is no tombstone and the namespace generation is
  the one this process knows;
* ``clear`` bumps the namespace generation (one ``INCR``, whatever the number of keys): values
  sealed under an older generation are misses from then on and expire on their own. A process
  that sees a generation it did not know drops its local tier, as if it had heard the clear.

Redis is an optimisation, never a dependency of availability: every failure on the request
path (down, slow: a short timeout) is a cache miss, the tier is skipped for a while after one
(``RedisCache``'s arguments), and each change between "down" and "available again" is logged
once. ``delete`` and ``clear`` use connections of their own, are never skipped, and raise when
Redis cannot confirm them (the instance retries them within its ``timeout``). Each time the
invalidation listener subscribes after a time in which it may have missed messages, it drops
the local tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fastapi_zitadel._concurrency.per_loop import PerLoop
from fastapi_zitadel._events.revocations import RevocationFeed
from fastapi_zitadel._exceptions import ConfigurationError
from fastapi_zitadel._extras import redis_asyncio
from fastapi_zitadel._http.urls import redis_url_problem
from fastapi_zitadel._log import logger

from .base import CacheBinding, CacheEntry, CacheKey, IntrospectionCache, SuspectToken
from .redis_revocations import RedisRevocationFeed

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["CHANNEL", "RedisCache"]

CHANNEL = "fastapi-zitadel:invalidate"
# v2: tombstones, generations and the verification time; v1 values are simply never read.
_KEY_LABEL = b"fastapi-zitadel redis key v2\x00"
_VALUE_LABEL = b"fastapi-zitadel redis value v2"
_NONCE_BYTES = 12
_PING = b"fastapi-zitadel"
_LONGEST_DEADLINE = 300.0  # the largest ``timeout`` setting
_LONGEST_TOMBSTONE = 31 * 86_400.0  # a token's exp beyond that is not believed
_TOMBSTONE = SuspectToken("invalidated")  # what a tombstone reads as (invalidated, or inactive)


# KEYS: the entry, its tombstone, the namespace generation. Returns {generation, value or
# nil}, or {generation, 0} when the tombstone exists: "known against the token", not a miss.
_GET = """
local generation = redis.call('GET', KEYS[3]) or '0'
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {generation, 0}
end
return {generation, redis.call('GET', KEYS[1])}
"""

# KEYS: as _GET. ARGV: the sealed value, its lifetime (ms), the generation it was sealed under.
# Returns {1 written, 0 refused; the current generation}.
_SET = """
local generation = redis.call('GET', KEYS[3]) or '0'
if redis.call('EXISTS', KEYS[2]) == 1 or generation ~= ARGV[3] then
  return {0, generation}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, generation}
"""

# KEYS: the entry, its tombstone. ARGV: the tombstone's lifetime (ms), the channel, the message.
_DELETE = """
local lifetime = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do  -- never shorter than the entry, or than an earlier tombstone
  local left = redis.call('PTTL', key)
  if left > lifetime then
    lifetime = left
  end
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', lifetime)
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# KEYS: the namespace generation. ARGV: the channel, the message. Returns the new generation.
_CLEAR = """
local generation = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return generation
"""


class _Options(TypedDict, total=False):
    """``RedisCache``'s keyword arguments, for ``from_url``."""

    timeout: float
    retry_interval: float
    max_connections: int
    health_check_interval: float
    tombstone_ttl: float
    clock: Callable[[], float]
    monotonic: Callable[[], float]


def _options(timeout: float, *, retries: int, **more: Any) -> dict[str, Any]:
    """A client's options: ``timeout`` per socket operation, ``retries`` reconnects."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), retries),
        **more,
    }


class _Unanswered(Exception):
    """Redis did not confirm a subscription, or answer a health check, in time."""


class _Connections:
    """One event loop's clients: one pool for requests (bounded), one for invalidations."""

    def __init__(
        self, url: str, timeout: float, health_check_interval: float, max_connections: int
    ) -> None:
        aioredis = redis_asyncio()
        # one reconnect for a pooled connection that went stale; more is the caller's. A PING
        # first on a connection idle for longer (a pooled one may have died).
        options = _options(timeout, retries=1, health_check_interval=health_check_interval)
        self.requests = aioredis.Redis.from_url(url, max_connections=max_connections, **options)
        # invalidate() and clear(): never behind the requests, waiting (within the caller's
        # deadline) rather than failing when both are busy
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=2, timeout=None, **options
        )
        self.control = aioredis.Redis.from_pool(pool)  # closed with it
        self.get = self.requests.register_script(_GET)
        self.set = self.requests.register_script(_SET)
        self.delete = self.control.register_script(_DELETE)
        self.clear = self.control.register_script(_CLEAR)

    async def aclose(self) -> None:
        for client in (self.requests, self.control):
            with contextlib.suppress(Exception):
                await client.aclose()


class _Listener:
    """One event loop's subscription to invalidations, and what it may have missed."""

    def __init__(self, listen: Callable[[_Listener], Awaitable[None]]) -> None:
        self.subscribed = asyncio.Event()
        self.tried = asyncio.Event()  # the first attempt to subscribe has ended
        self.exposed = False  # the tier was used while no invalidation could reach us
        self.lost = False  # a subscription ended (logged once, until subscribed again)
        self.stopping = asyncio.Event()  # set by aclose(), even if a cancel gets swallowed
        self.task = asyncio.ensure_future(listen(self))


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
        max_connections: int = 64,
        health_check_interval: float = 5.0,
        tombstone_ttl: float = 600.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """A tier on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``).

        ``timeout`` bounds each socket operation (an operation, reconnect included, gets four times
        that); after a failure on the request path the tier is skipped for ``retry_interval``
        seconds. Requests use at most ``max_connections`` connections at once: beyond that a read is
        a miss at once, so a flood of garbage tokens cannot exhaust them. The invalidation listener
        pings Redis after ``health_check_interval`` idle seconds and reconnects when the answer does
        not come within as long again. A tombstone lives ``tombstone_ttl`` seconds (more than 300).
        """
        self._redis_error: type[Exception] = redis_asyncio().RedisError  # the package is there
        problem = redis_url_problem(url)
        if problem is not None:
            raise ConfigurationError(f"RedisCache url: {problem}")
        if tombstone_ttl <= _LONGEST_DEADLINE:
            raise ConfigurationError(
                "tombstone_ttl must be longer than the longest lookup deadline (300 s)"
            )
        if max_connections < 1 or health_check_interval <= 0 or timeout <= 0:
            raise ConfigurationError(
                "timeout, max_connections and health_check_interval must be positive"
            )
        self._url = url
        self._clock = clock
        self._monotonic = monotonic
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._max_connections = max_connections
        self._health_check_interval = health_check_interval
        self._tombstone_ms = int(tombstone_ttl * 1000)
        self._down_until: float | None = None
        self._busy = 0  # request-path operations in flight
        self._generation: bytes | None = None  # the namespace generation we know
        self._connections: PerLoop[_Connections] = PerLoop(
            lambda: _Connections(url, timeout, health_check_interval, max_connections)
        )
        self._listeners: PerLoop[_Listener] = PerLoop(lambda: _Listener(self._listen))
        self._binding: CacheBinding | None = None
        self._tag = ""

    @classmethod
    def from_url(cls, url: str, **options: Unpack[_Options]) -> RedisCache:
        """``RedisCache(url, **options)``, by the name redis-py uses for the same thing."""
        return cls(url, **options)

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
    def revocation_feed(self, issuer: str) -> RevocationFeed:
        """ZITADEL's events shared through a stream on this Redis (``redis_revocations``)."""
        return RedisRevocationFeed(self._url, issuer=issuer, timeout=self._timeout)

    async def get(self, key: CacheKey) -> CacheEntry | None:
        found = await self.read(key)
        return found if isinstance(found, CacheEntry) else None

    async def read(self, key: CacheKey) -> CacheEntry | SuspectToken | None:
        """The entry, or a ``SuspectToken`` while its tombstone lives: one round trip."""
        keys = self._keys(key)
        await self._listening()
        answer = await self._call(lambda c: c.get(keys=keys, client=c.requests))
        if not isinstance(answer, list) or len(answer) != 2:
            return None
        generation, sealed = answer
        self._observe(generation)
        if sealed == 0:
            return _TOMBSTONE
        if not isinstance(sealed, bytes):
            return None
        entry = self._open(sealed, key, keys[0], generation)
        if entry is None:
            await self._call(lambda c: c.requests.delete(keys[0]))
        return entry

    async def set(self, key: CacheKey, entry: CacheEntry) -> None:
        keys = self._keys(key)
        await self._listening()
        if self._generation is None:  # learn it first: a write is sealed under it
            await self.get(key)
        generation = self._generation
        lifetime_ms = int((entry.stale_until - self._clock()) * 1000)
        if generation is None or lifetime_ms <= 0:
            return
        sealed = self._seal(entry, key, keys[0], generation)
        args: list[bytes | int | str] = [sealed, lifetime_ms, generation]
        answer = await self._call(lambda c: c.set(keys=keys, args=args, client=c.requests))
        if isinstance(answer, list) and len(answer) == 2:
            self._observe(answer[1])

    async def delete(self, key: CacheKey) -> None:
        """Delete, tombstone and announce ``key``; raises when Redis does not confirm."""
        keys = self._keys(key)[:2]  # the entry's and its tombstone's
        lifetime_ms = self._tombstone_ms
        if key.expires_at is not None:  # as long as the token itself, within a bound
            until_exp = min(key.expires_at - self._clock(), _LONGEST_TOMBSTONE)
            lifetime_ms = max(lifetime_ms, int(until_exp * 1000))
        args: list[bytes | int | str] = [lifetime_ms, CHANNEL, f"{self._tag}:{key.digest.hex()}"]
        await self._control(lambda c: c.delete(keys=keys, args=args, client=c.control))

    async def clear(self) -> None:
        """Make every entry of the namespace unreachable (one generation bump) and announce
        it; raises when Redis does not confirm."""
        keys, args = [self._generation_key()], [CHANNEL, f"{self._tag}:*"]
        generation = await self._control(lambda c: c.clear(keys=keys, args=args, client=c.control))
        self._generation = str(generation).encode("ascii")

    async def aclose(self) -> None:
        listener = self._listeners.pop_current()
        if listener is not None:
            listener.stopping.set()
            while not listener.task.done():  # again if a cancel got swallowed on the way
                listener.task.cancel()
                await asyncio.wait({listener.task}, timeout=self._timeout * 4)
            if not listener.task.cancelled():
                listener.task.exception()  # retrieved: nothing to report at close
        connections = self._connections.pop_current()
        if connections is not None:
            await connections.aclose()

    # Keys and sealing -------------------------------------------------------------------
    def _keys(self, key: CacheKey) -> list[str]:
        """The entry's key, its tombstone's and the namespace generation's."""
        name = hashlib.sha256(_KEY_LABEL + key.digest).hexdigest()
        prefix = f"fastapi-zitadel:{self._tag}:"
        return [prefix + name, prefix + "tombstone:" + name, self._generation_key()]

    def _generation_key(self) -> str:
        self._bound  # noqa: B018 - a clear error before anything reaches Redis
        return f"fastapi-zitadel:{self._tag}:generation"

    def _cipher(self, key: CacheKey) -> AESGCM:
        binding = self._bound
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=binding.namespace, info=_VALUE_LABEL)
        return AESGCM(hkdf.derive(binding.secret + key.token.encode("utf-8")))

    @staticmethod
    def _associated(redis_key: str, generation: bytes) -> bytes:
        return redis_key.encode("ascii") + b"\x00" + generation

    def _seal(self, entry: CacheEntry, key: CacheKey, redis_key: str, generation: bytes) -> bytes:
        plain = json.dumps(
            {
                "claims": entry.principal.model_dump(mode="json", include={"claims"})["claims"],
                "expires_at": entry.expires_at,
                "stale_until": entry.stale_until,
                "verified_at": self._clock() if entry.verified_at is None else entry.verified_at,
            },
            separators=(",", ":"),
        ).encode("utf-8")
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._cipher(key).encrypt(nonce, plain, self._associated(redis_key, generation))
        return generation + b"|" + nonce + sealed

    def _open(
        self, sealed: bytes, key: CacheKey, redis_key: str, generation: bytes
    ) -> CacheEntry | None:
        written_under, _, rest = sealed.partition(b"|")
        if written_under != generation:
            return None  # from before a clear(): unreachable, it expires on its own
        nonce, ciphertext = rest[:_NONCE_BYTES], rest[_NONCE_BYTES:]
        try:
            associated = self._associated(redis_key, generation)
            plain = self._cipher(key).decrypt(nonce, ciphertext, associated)
            data = json.loads(plain)
            principal = self._bound.principal(data["claims"])
            expires_at, stale_until = float(data["expires_at"]), float(data["stale_until"])
            verified_at = float(data["verified_at"])
            if principal.expires_at is not None:  # never past the token's own exp
                token_exp = principal.expires_at.timestamp()
                expires_at, stale_until = min(expires_at, token_exp), min(stale_until, token_exp)
            return CacheEntry(principal, expires_at, stale_until, verified_at)
        except (InvalidTag, ValueError, KeyError, TypeError):
            logger.warning("discarding an unreadable entry from the shared cache")
            return None

    def _observe(self, generation: Any) -> None:
        """Note the namespace generation Redis answered; a new one means a clear() we may not
        have heard of: drop the local tier (and void the lookups in flight) as if we had."""
        if not isinstance(generation, bytes):
            generation = str(generation).encode("ascii")
        known, self._generation = self._generation, generation
        if known is not None and known != generation and self._binding is not None:
            self._binding.on_clear()

    # Availability -----------------------------------------------------------------------
    async def _call(self, operation: Callable[[_Connections], Any]) -> Any:
        """One request-path operation; a failure (logged once), or one beyond
        ``max_connections``, is a miss (``None``)."""
        if self._down_until is not None and self._monotonic() < self._down_until:
            return None
        if self._busy >= self._max_connections:
            return None  # a miss, not a wait: connections are for the requests that fit
        self._busy += 1
        try:
            connections = self._connections.get()
            result = await asyncio.wait_for(operation(connections), timeout=self._timeout * 4)
        except (self._redis_error, OSError, asyncio.TimeoutError) as exc:
            if self._down_until is None:
                logger.warning(
                    "shared cache (Redis) unavailable (%s): going straight to the identity "
                    "provider until it is back",
                    type(exc).__name__,
                )
            self._down_until = self._monotonic() + self._retry_interval
            return None
        finally:
            self._busy -= 1
        if self._down_until is not None:
            self._down_until = None
            logger.warning("shared cache (Redis) available again")
        return result

    async def _control(self, operation: Callable[[_Connections], Any]) -> Any:
        """Run one invalidation on its own connections; failures raise (the caller retries)."""
        connections = self._connections.get()
        self._listeners.get()  # make sure this loop hears other replicas' invalidations
        return await asyncio.wait_for(operation(connections), timeout=self._timeout * 4)

    async def _listening(self) -> None:
        """Before the first use in a loop, give the listener a chance to subscribe; whatever is
        cached while it is not subscribed is dropped when it is."""
        listener = self._listeners.get()
        if listener.subscribed.is_set():
            return
        if not listener.tried.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(listener.tried.wait(), timeout=self._timeout * 4)
        if not listener.subscribed.is_set():
            listener.exposed = True

    # The invalidation listener ----------------------------------------------------------
    async def _listen(self, listener: _Listener) -> None:
        """Apply other replicas' invalidations to the local tier, for as long as the loop runs.

        The idle pings (``health_check_interval``) are there because a silently dropped
        connection never fails on its own: unanswered, it is given up and a new one subscribes.
        """
        aioredis = redis_asyncio()
        while not listener.stopping.is_set():
            # no retry: never a silent re-subscription, we must know
            client = aioredis.Redis.from_url(self._url, **_options(self._timeout, retries=0))
            pubsub: Any = client.pubsub()
            try:
                await asyncio.wait_for(self._subscribe(pubsub), timeout=self._timeout * 4)
                exposed = listener.exposed or listener.lost
                listener.exposed = False
                listener.subscribed.set()
                listener.tried.set()
                if listener.lost:
                    listener.lost = False
                    logger.warning(
                        "shared cache (Redis) invalidation listener subscribed again: "
                        "the local cache was dropped, it may have missed invalidations"
                    )
                if exposed and self._binding is not None:
                    self._binding.on_clear()
                await self._receive(pubsub, listener)
            except Exception as exc:  # Redis went away, or stopped answering
                if listener.subscribed.is_set():  # before: the request path logs Redis down
                    listener.subscribed.clear()
                    listener.lost = True
                    logger.warning(
                        "shared cache (Redis) invalidation listener lost its connection (%s): "
                        "reconnecting",
                        "no answer" if isinstance(exc, _Unanswered) else type(exc).__name__,
                    )
            finally:
                listener.tried.set()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            with contextlib.suppress(asyncio.TimeoutError):  # a pause, cut short by aclose()
                await asyncio.wait_for(listener.stopping.wait(), self._retry_interval / 5)

    async def _subscribe(self, pubsub: Any) -> None:
        await pubsub.subscribe(CHANNEL)
        while True:
            message = await pubsub.get_message(timeout=self._timeout * 4)
            if message is None:
                raise _Unanswered
            if message.get("type") == "subscribe":
                return
            self._handle(message)

    async def _receive(self, pubsub: Any, listener: _Listener) -> None:
        pinged = False
        while not listener.stopping.is_set():
            message = await pubsub.get_message(timeout=self._health_check_interval)
            if message is not None:
                pinged = False
                self._handle(message)
            elif pinged:
                raise _Unanswered
            else:
                await pubsub.ping(_PING)
                pinged = True

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        tag, _, target = message["data"].decode("ascii", errors="replace").partition(":")
        if tag != self._tag or self._binding is None:
            return
        if target == "*":
            self._binding.on_clear()
        else:
            with contextlib.suppress(ValueError):
                self._binding.on_invalidate(bytes.fromhex(target))
