"""The per-token flow, from a bearer token to a verified ``Principal``.

    cache hit  -> the cached Principal (the hot path: one digest, one dict lookup, no lock)
    negative   -> InvalidTokenError
    shared hit -> the Principal another replica verified (when a shared tier is configured)
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
from collections.abc import Awaitable, Callable, Collection

from ._cache import CacheEntry, CacheKey, IntrospectionCache, MemoryCache, NegativeCache
from ._circuit_breaker import CircuitBreaker
from ._concurrency_limit import ConcurrencyLimit
from ._config import ZitadelConfig
from ._exceptions import (
    ClientCredentialsRejected,
    IdentityProviderUnavailable,
    InvalidTokenError,
)
from ._introspection_client import IntrospectionClient
from ._log import RateLimitedLog, logger
from ._metrics import Metrics, MetricsSnapshot
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
        shared: IntrospectionCache | None,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._client = client
        self._local = MemoryCache(max_size=config.cache_max_size, clock=clock)
        self._shared = shared
        attach = getattr(shared, "attach", None)
        if attach is not None:  # a shared tier that tells us about other replicas' revocations
            attach(self.forget_active, self.forget_all)
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
        self.metrics = Metrics()
        self.metrics.export(self.snapshot)
        self._audiences: Collection[str] = frozenset(config.audience)
        # Bumped by invalidate() and clear(): a lookup that started before must not cache
        # its (possibly revoked) result.
        self._generation = 0
        self._outage_log = RateLimitedLog(logging.WARNING, monotonic=monotonic)
        self._misconfiguration_log = RateLimitedLog(logging.ERROR, monotonic=monotonic)
        self._cache_log = RateLimitedLog(logging.WARNING, monotonic=monotonic)

    def snapshot(self) -> MetricsSnapshot:
        m = self.metrics
        return MetricsSnapshot(
            cache_hits=m.cache_hits,
            shared_hits=m.shared_hits,
            negative_hits=m.negative_hits,
            misses=m.misses,
            coalesced_waits=self._flight.joined,
            stale_served=m.stale_served,
            circuit_rejections=m.circuit_rejections,
            idp_calls=dict(m.idp_calls),
            idp_latency_count=m.idp_latency_count,
            idp_latency_sum=m.idp_latency_sum,
            idp_latency_max=m.idp_latency_max,
            circuit_state=self.breaker.state,
            cache_size=len(self._local),
            negative_cache_size=len(self._negative),
            in_flight=self._flight.in_flight(),
            slots_in_use=self.limit.in_use,
        )

    def key(self, token: str) -> bytes:
        return hashlib.sha256(self._namespace + token.encode("utf-8")).digest()

    def cached(self, token: str) -> Principal | None:
        """The hot path, run on every authenticated request: a fresh local hit, or ``None``.

        Synchronous on purpose: no coroutine, no lock, no I/O; one digest and a dict lookup.
        """
        if not token or len(token) > self._config.max_token_length:
            raise InvalidTokenError("the token is empty or too long")
        now = self._clock()
        entry = self._local.lookup(self.key(token), now)
        if entry is not None and now < entry.expires_at:
            self.metrics.cache_hits += 1
            return entry.principal
        return None

    async def verify(self, token: str) -> Principal:
        return self.cached(token) or await self.resolve(token)

    async def resolve(self, token: str) -> Principal:
        """Everything after a local miss: negative cache, shared tier, the IdP."""
        deadline = self._monotonic() + self._config.timeout
        generation = self._generation  # an invalidate() from here on voids what we hold
        digest = self.key(token)
        entry = self._local.lookup(digest, self._clock())  # maybe a stale one
        if digest in self._negative:
            self.metrics.negative_hits += 1
            raise InvalidTokenError("the token is not active")
        key = CacheKey(digest, token)
        if entry is None and self._shared is not None:
            entry = await self._shared_get(key, deadline)
            if entry is not None and generation == self._generation:
                self._local.store(digest, entry)
                if self._clock() < entry.expires_at:
                    self.metrics.shared_hits += 1
                    return entry.principal
        self.metrics.misses += 1
        # The deadline lives inside the shared call (every step in it is bounded by it), so
        # the callers waiting for it need no timer of their own: a herd of a thousand costs
        # a thousand awaits, not a thousand timer tasks.
        try:
            return await self._flight.run(digest, lambda: self._introspect(key, deadline))
        except IdentityProviderUnavailable as failure:
            stale_allowed = entry is not None and generation == self._generation
            if not stale_allowed or entry is None or self._clock() >= entry.stale_until:
                raise
            reason = failure.description
        # Stale-if-error: only when the IdP cannot answer, never when it said "inactive".
        self.metrics.stale_served += 1
        logger.warning(
            "identity provider unavailable (%s): serving a cached result past its "
            "lifetime (stale_if_error)",
            reason,
        )
        return entry.principal

    async def invalidate(self, token: str) -> None:
        digest = self.key(token)
        self.forget(digest)
        if self._shared is not None:
            await self._shared_call(
                "delete", self._shared.delete(CacheKey(digest, token)), self._spare_deadline()
            )

    def forget(self, digest: bytes) -> None:
        """Drop every local trace of one token."""
        self.forget_active(digest)
        self._negative.discard(digest)

    def forget_active(self, digest: bytes) -> None:
        """Drop a token's active entry: another replica saw it revoked or invalidated.

        Its negative entry, if any, stays: "inactive" is what that replica learned too.
        """
        self._generation += 1
        self._flight.forget(digest)
        self._local.discard(digest)

    async def clear(self) -> None:
        self.forget_all()
        if self._shared is not None:
            await self._shared_call("clear", self._shared.clear(), self._spare_deadline())

    def forget_all(self) -> None:
        self._generation += 1
        self._flight.forget_all()
        self._negative.clear()
        self._local.discard_all()

    async def aclose(self) -> None:
        close = getattr(self._shared, "aclose", None)
        if close is not None:
            await close()

    def _spare_deadline(self) -> float:
        return self._monotonic() + self._config.timeout

    async def _shared_get(self, key: CacheKey, deadline: float) -> CacheEntry | None:
        assert self._shared is not None
        try:
            remaining = max(deadline - self._monotonic(), 0.0)
            return await asyncio.wait_for(self._shared.get(key), timeout=remaining)
        except Exception as exc:  # a shared tier that is down or slow is a miss, not an outage
            self._cache_log(
                "shared introspection cache unavailable (%s): going to the IdP",
                type(exc).__name__,
            )
            return None

    async def _shared_call(self, what: str, call: Awaitable[None], deadline: float) -> None:
        """A write to the shared tier, within the request's deadline; failures are logged."""
        try:
            await asyncio.wait_for(call, timeout=max(deadline - self._monotonic(), 0.0))
        except Exception as exc:
            self._cache_log(
                "shared introspection cache unavailable (%s failed: %s)", what, type(exc).__name__
            )

    async def _introspect(self, key: CacheKey, deadline: float) -> Principal:
        generation = self._generation
        try:
            self.breaker.before_call()
        except IdentityProviderUnavailable:
            self.metrics.circuit_rejections += 1
            raise
        try:
            async with self.limit.slot(deadline, self._monotonic):
                with self.metrics.idp_call() as call:
                    try:
                        claims = await self._client.introspect(key.token, deadline)
                    except ClientCredentialsRejected:
                        call["outcome"] = "credentials_rejected"
                        raise
                    call["outcome"] = "inactive" if claims is None else "active"
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
        digest = key.digest
        fingerprint = digest[:4].hex()
        if claims is None:
            logger.debug("token %s is inactive", fingerprint)
            self._negative.add(digest)
            self._local.discard(digest)  # no stale copy of a revoked token may survive
            if self._shared is not None:
                await self._shared_call("delete", self._shared.delete(key), deadline)
            raise InvalidTokenError("the token is not active")
        principal = self._checked(claims, digest)
        now = self._clock()
        expires_at = now + self._config.cache_ttl
        stale_until = expires_at + self._config.stale_if_error
        if principal.expires_at is not None:
            token_exp = principal.expires_at.timestamp()
            expires_at, stale_until = min(expires_at, token_exp), min(stale_until, token_exp)
        if expires_at > now and generation == self._generation:
            entry = CacheEntry(principal, expires_at, stale_until)
            self._local.store(digest, entry)
            if self._shared is not None:
                await self._shared_call("set", self._shared.set(key, entry), deadline)
        logger.debug("token %s is active, cached for %.0f s", fingerprint, expires_at - now)
        return principal

    def _checked(self, claims: dict[str, object], key: bytes) -> Principal:
        try:
            principal = Principal.from_claims(claims, project_id=self._config.project_id)
        except RecursionError:  # nesting deep enough to parse but not to walk
            self._misconfiguration_log("malformed introspection answer: nested too deeply")
            raise IdentityProviderUnavailable(
                "malformed introspection answer: nested too deeply", retry_after=5.0
            ) from None
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
