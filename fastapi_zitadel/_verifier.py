"""The per-token flow, from a bearer token to a verified ``Principal``.

    cache hit  -> the cached Principal (the hot path: one digest, one dict lookup, no lock)
    negative   -> InvalidTokenError
    miss       -> circuit breaker -> one shared introspection per token, within the
                  concurrency cap and the deadline -> checks -> cache -> Principal

Everything that can go wrong on a miss ends as ``InvalidTokenError`` (the token is bad) or an
``IdentityProviderError`` (we cannot tell right now); never as anything else.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Collection

from ._cache import CacheEntry, IntrospectionCache, NegativeCache
from ._circuit_breaker import CircuitBreaker
from ._concurrency_limit import ConcurrencyLimit
from ._config import ZitadelConfig
from ._exceptions import (
    ClientCredentialsRejected,
    IdentityProviderError,
    IdentityProviderUnavailable,
    InvalidTokenError,
)
from ._introspection_client import IntrospectionClient
from ._log import RateLimitedLog, logger
from ._principal import MalformedClaimError, Principal
from ._single_flight import SingleFlight
from ._validation import check_active_principal


def cache_namespace(config: ZitadelConfig) -> bytes:
    """What makes one instance's verdicts differ from another's.

    A shared cache (many replicas, or several APIs on one Redis) must never hand a result
    checked against one audience or project to an instance configured for another.
    """
    parts = [config.issuer, ",".join(sorted(config.audience)), config.project_id or ""]
    return hashlib.sha256("\n".join(parts).encode("utf-8")).digest()


class TokenVerifier:
    def __init__(
        self,
        *,
        config: ZitadelConfig,
        client: IntrospectionClient,
        cache: IntrospectionCache,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._client = client
        self._cache = cache
        self._clock = clock
        self._monotonic = monotonic
        self._namespace = cache_namespace(config)
        self._negative = NegativeCache(
            ttl=config.negative_cache_ttl, max_size=config.negative_cache_max_size, clock=clock
        )
        self._flight: SingleFlight[Principal] = SingleFlight()
        self.breaker = CircuitBreaker(
            threshold=config.circuit_breaker_threshold,
            cooldown=config.circuit_breaker_cooldown,
            monotonic=monotonic,
        )
        self.limit = ConcurrencyLimit(config.max_concurrent_introspections)
        self._audiences: Collection[str] = frozenset(config.audience)
        # Bumped by invalidate() and clear(): a lookup that started before must not cache
        # its (possibly revoked) result.
        self._generation = 0
        self._outage_log = RateLimitedLog(logging.WARNING, monotonic=monotonic)
        self._misconfiguration_log = RateLimitedLog(logging.ERROR, monotonic=monotonic)
        self._cache_log = RateLimitedLog(logging.WARNING, monotonic=monotonic)

    def key(self, token: str) -> bytes:
        return hashlib.sha256(self._namespace + token.encode("utf-8")).digest()

    async def verify(self, token: str) -> Principal:
        if not token or len(token) > self._config.max_token_length:
            raise InvalidTokenError("the token is empty or too long")
        key = self.key(token)
        # Hot path: this runs on every authenticated request.
        entry = await self._cached(key)
        if entry is not None and self._clock() < entry.expires_at:
            return entry.principal
        if key in self._negative:
            raise InvalidTokenError("the token is not active")
        try:
            return await asyncio.wait_for(
                self._flight.run(key, lambda: self._introspect(token, key)),
                timeout=self._config.timeout,
            )
        except asyncio.TimeoutError:
            failure: IdentityProviderError = IdentityProviderUnavailable(
                f"authentication did not finish within {self._config.timeout:.1f} s",
                retry_after=1.0,
            )
        except IdentityProviderUnavailable as exc:
            failure = exc
        # Stale-if-error: only when the IdP cannot answer, never when it said "inactive".
        if entry is not None and self._clock() < entry.stale_until:
            logger.warning(
                "identity provider unavailable (%s): serving a cached result past its "
                "lifetime (stale_if_error)",
                failure.description,
            )
            return entry.principal
        raise failure

    async def invalidate(self, token: str) -> None:
        key = self.key(token)
        self._generation += 1
        self._flight.forget(key)
        self._negative.discard(key)
        await self._cache.delete(key)

    async def clear(self) -> None:
        self._generation += 1
        self._flight.forget_all()
        self._negative.clear()
        await self._cache.clear()

    async def _cached(self, key: bytes) -> CacheEntry | None:
        try:
            return await self._cache.get(key)
        except Exception as exc:  # a shared backend down is a miss, not an outage
            self._cache_log("introspection cache unavailable (%s): treating as a miss", exc)
            return None

    async def _introspect(self, token: str, key: bytes) -> Principal:
        generation = self._generation
        deadline = self._monotonic() + self._config.timeout
        self.breaker.before_call()
        try:
            async with self.limit.slot(timeout=deadline - self._monotonic()):
                claims = await self._client.introspect(token, deadline)
        except ClientCredentialsRejected:
            self.breaker.succeeded()  # the IdP is up; our credentials are the problem
            raise
        except IdentityProviderUnavailable as exc:
            self.breaker.failed()
            self._outage_log(
                "identity provider unavailable: %s (answering 503, retry after %.0f s)",
                exc.description,
                exc.retry_after or 1.0,
            )
            raise
        except BaseException:
            self.breaker.abandoned()
            raise
        self.breaker.succeeded()
        fingerprint = key[:4].hex()
        if claims is None:
            logger.debug("token %s is inactive", fingerprint)
            self._negative.add(key)
            await self._cache.delete(key)  # no stale copy of a revoked token may survive
            raise InvalidTokenError("the token is not active")
        principal = self._checked(claims, key)
        now = self._clock()
        expires_at = now + self._config.cache_ttl
        stale_until = expires_at + self._config.stale_if_error
        if principal.expires_at is not None:
            token_exp = principal.expires_at.timestamp()
            expires_at, stale_until = min(expires_at, token_exp), min(stale_until, token_exp)
        if expires_at > now and generation == self._generation:
            entry = CacheEntry(principal, expires_at, stale_until)
            try:
                await self._cache.set(key, entry)
            except Exception as exc:
                self._cache_log("introspection cache unavailable (%s): not cached", exc)
        logger.debug("token %s is active, cached for %.0f s", fingerprint, expires_at - now)
        return principal

    def _checked(self, claims: dict[str, object], key: bytes) -> Principal:
        try:
            principal = Principal.from_claims(claims, project_id=self._config.project_id)
        except MalformedClaimError as exc:
            self._misconfiguration_log("malformed introspection answer: %s", exc)
            raise IdentityProviderUnavailable(
                f"malformed introspection answer: {exc}", retry_after=5.0
            ) from None
        if principal.issuer is not None and principal.issuer != self._config.issuer:
            # Not the caller's fault: our issuer setting differs from what the IdP says.
            self._misconfiguration_log(
                "the introspection answer names issuer %r but ZITADEL_ISSUER is %r: every "
                "token fails until the setting matches the issuer exactly",
                principal.issuer,
                self._config.issuer,
            )
            raise IdentityProviderUnavailable("issuer mismatch", retry_after=30.0)
        try:
            check_active_principal(
                principal,
                now=self._clock(),
                leeway=self._config.leeway,
                audiences=self._audiences,
            )
        except InvalidTokenError as exc:
            logger.debug("token %s rejected: %s", key[:4].hex(), exc.description)
            self._negative.add(key)
            raise
        return principal
