"""Wiring: from a validated configuration to the working parts, once per instance.

This is the only place that knows which piece needs which; the pieces themselves are handed
what they use. Data then flows one way: bearer -> pipeline (caches, single flight) ->
validator (introspection, local JWT verification, or both) -> claim checks -> ``Principal``.

What ``validation`` builds:

    introspection   client authentication, introspection client and validator
    local           JWKS cache and JWT verifier; no credentials needed, no shared tier
    hybrid          both; the pipeline confirms JWTs by introspection in the background
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import httpx

from ._cache.base import CacheBinding, IntrospectionCache
from ._cache.memory import MemoryCache, NegativeCache
from ._concurrency.tasks import KeyedTasks
from ._config import ZitadelConfig
from ._credentials.client_auth import ClientAuthentication, ClientSecretBasic, PrivateKeyJwt
from ._credentials.key_file import load_key_file, require_key_type, source_label
from ._events.receiver import EventReceiver, jwks_verifier
from ._events.revocations import RevocationFeed, Revocations
from ._exceptions import ConfigurationError
from ._http.client import HttpClientProvider
from ._idp.discovery import Discovery
from ._idp.introspection import IntrospectionClient
from ._idp.jwks import JwksCache
from ._log import RateLimitedLog
from ._metrics import Metrics, MetricsSnapshot
from ._pipeline.checks import ClaimChecks
from ._pipeline.jwt_validator import JwtValidator
from ._pipeline.pipeline import CachePolicy, VerificationPipeline
from ._pipeline.validator import IntrospectionValidator
from ._principal import Principal
from ._resilience.call_budget import CallBudget
from ._resilience.circuit_breaker import CircuitBreaker
from ._resilience.concurrency_limit import ConcurrencyLimit

__all__ = ["SUSPICION_TTL", "Parts", "build", "cache_namespace"]

# Hybrid mode: how long a token found inactive (or invalidated) is introspected before it is
# served again, at least. ZITADEL's default access token lifetime; an active answer ends it.
SUSPICION_TTL = 43_200.0


def cache_namespace(config: ZitadelConfig) -> bytes:
    """What makes one instance's verdicts differ from another's: a shared cache (many
    replicas, or several APIs on one Redis) must never hand a result checked against one
    audience or project to an instance configured for another."""
    parts = [config.issuer, ",".join(sorted(config.audience)), config.project_id or ""]
    if config.allowed_client_ids:  # only when set: other namespaces stay as they were
        parts.append("clients:" + ",".join(sorted(config.allowed_client_ids)))
    return hashlib.sha256("\n".join(parts).encode("utf-8")).digest()


@dataclass(frozen=True)
class Parts:
    """The working pieces of one ``ZitadelIntrospection``."""

    auth: ClientAuthentication | None  # None: validation="local" without credentials
    http: HttpClientProvider
    discovery: Discovery
    client: IntrospectionClient | None  # None: validation="local"
    breaker: CircuitBreaker
    limit: ConcurrencyLimit
    metrics: Metrics
    pipeline: VerificationPipeline
    jwks: JwksCache | None  # None: validation="introspection"
    revocations: Revocations
    receiver: EventReceiver | None = None  # None: no events_signing_key
    feed: RevocationFeed | None = None  # None: events reach this process only
    events_jwks: JwksCache | None = None  # the issuer's keys for JWS events, if not ``jwks``

    def snapshot(self) -> MetricsSnapshot:
        jwks = self.jwks
        cache_size, negative_cache_size, in_flight = self.pipeline.sizes
        if jwks is not None:
            in_flight += jwks.in_flight
        return MetricsSnapshot(
            **self.metrics.counts(),
            circuit_state=self.breaker.state,
            cache_size=cache_size,
            negative_cache_size=negative_cache_size,
            in_flight=in_flight,
            slots_in_use=self.limit.in_use,
            jwks_fetches=0 if jwks is None else jwks.fetches,
        )

    async def aclose(self) -> None:
        """Background work first (it may still use the pool), then the pool."""
        await self.pipeline.aclose()
        for part in (self.feed, self.jwks, self.events_jwks):
            if part is not None:
                await part.aclose()
        await self.discovery.aclose()
        await self.http.aclose()


def client_authentication(
    config: ZitadelConfig, *, clock: Callable[[], float], monotonic: Callable[[], float]
) -> ClientAuthentication | None:
    """The configured credential (the model has already checked there is at most one, and
    one unless ``validation="local"``)."""
    if not config.has_credentials:
        return None
    source = config.key_source()
    if source is None:
        assert config.client_id is not None
        assert config.client_secret is not None
        return ClientSecretBasic(config.client_id, config.client_secret.get_secret_value())
    audiences = config.assertion_audience or (config.issuer,)
    key = require_key_type(
        load_key_file(source),
        "application",
        source=source_label(source) if config.key is None else "(the key setting)",
        where="ZitadelIntrospection",
    )
    return PrivateKeyJwt(
        key,
        audience=audiences[0] if len(audiences) == 1 else list(audiences),
        lifetime=config.assertion_lifetime,
        single_use=config.single_use_assertion,
        clock=clock,
        monotonic=monotonic,
    )


def build(
    config: ZitadelConfig,
    *,
    http_client: httpx.AsyncClient | None,
    cache: IntrospectionCache | None,
    clock: Callable[[], float],
    monotonic: Callable[[], float],
    principal_class: type[Principal] = Principal,
) -> Parts:
    mode = config.validation
    if mode == "local" and cache is not None:
        raise ConfigurationError(
            "validation='local' has no use for a shared cache (cache=...): each replica "
            "verifies JWTs itself, and a locally verified JWT cannot be revoked; use "
            "validation='hybrid' to share introspection answers"
        )
    auth = client_authentication(config, clock=clock, monotonic=monotonic)
    http = HttpClientProvider(http_client, timeout=config.timeout)
    discovery = Discovery(
        config.issuer,
        http=http,
        introspection_endpoint=config.introspection_endpoint,
        timeout=config.timeout,
        allow_insecure_http=config.allow_insecure_http,
        monotonic=monotonic,
        required_endpoint=None if mode == "local" else "introspection_endpoint",
    )
    breaker = CircuitBreaker(
        threshold=config.circuit_breaker_threshold,
        cooldown=config.circuit_breaker_cooldown,
        monotonic=monotonic,
    )
    limit = ConcurrencyLimit(config.max_concurrent_introspections, monotonic=monotonic)
    flight: KeyedTasks[Principal] = KeyedTasks()
    metrics = Metrics(coalesced_waits=lambda: flight.joined)
    client = validator = None
    if mode != "local":
        assert auth is not None  # the configuration's credential rule
        client = IntrospectionClient(
            http=http,
            discovery=discovery,
            auth=auth,
            timeout=config.timeout,
            max_retries=config.max_retries,
            monotonic=monotonic,
        )
        validator = IntrospectionValidator(
            client=client,
            breaker=breaker,
            limit=limit,
            metrics=metrics,
            outage_log=RateLimitedLog(logging.WARNING, monotonic=monotonic),
            budget=CallBudget(config.timeout),
            monotonic=monotonic,
        )
    jwks = jwt = None
    if mode != "introspection":
        jwks = JwksCache(
            http=http,
            discovery=discovery,
            timeout=config.timeout,
            # ``pipeline`` is bound below; keys are removed only once fetches happen
            on_keys_removed=lambda: pipeline.forget_local_jwts(),
            monotonic=monotonic,
        )
        jwt = JwtValidator(keys=jwks)
    suspects = None
    if mode == "hybrid":
        suspects = NegativeCache(
            ttl=max(config.cache_ttl, SUSPICION_TTL), max_size=config.cache_max_size, clock=clock
        )
    namespace = cache_namespace(config)
    shared = cache
    if mode != "local" and cache is None and config.redis_url is not None:
        from ._cache.redis_cache import RedisCache  # the optional 'redis' extra

        shared = RedisCache.from_url(config.redis_url.get_secret_value(), clock=clock)
    revocations = Revocations(clock=clock)
    pipeline = VerificationPipeline(
        namespace=namespace,
        local=MemoryCache(max_size=config.cache_max_size, clock=clock),
        negative=NegativeCache(
            ttl=config.negative_cache_ttl, max_size=config.negative_cache_max_size, clock=clock
        ),
        shared=shared,
        flight=flight,
        validator=validator,
        checks=ClaimChecks(
            issuer=config.issuer,
            audiences=config.audience,
            leeway=config.leeway,
            project_id=config.project_id,
            clock=clock,
            monotonic=monotonic,
            allowed_client_ids=config.allowed_client_ids,
            principal_class=principal_class,
        ),
        policy=CachePolicy(ttl=config.cache_ttl, stale_if_error=config.stale_if_error),
        metrics=metrics,
        timeout=config.timeout,
        max_token_length=config.max_token_length,
        clock=clock,
        monotonic=monotonic,
        jwt=jwt,
        suspects=suspects,
        unconfirmed_limit=config.hybrid_unconfirmed_limit,
        revocations=revocations,
    )
    if shared is not None:
        assert auth is not None  # a shared tier needs introspection, hence a credential
        shared.bind(
            CacheBinding(
                namespace=namespace,
                secret=auth.secret_digest,
                principal=partial(principal_class.from_claims, project_id=config.project_id),
                on_invalidate=pipeline.forget,
                on_clear=pipeline.forget_all,
            )
        )
    receiver = feed = events_jwks = None
    if config.events_signing_key is not None:
        # How events reach the other replicas: the shared tier's feed, or (local mode, which
        # has no shared tier) one on ``redis_url``; ``None``: this process only.
        if shared is not None:
            feed = shared.revocation_feed(config.issuer)
        elif config.redis_url is not None:
            from ._cache.redis_revocations import RedisRevocationFeed  # the 'redis' extra

            feed = RedisRevocationFeed(config.redis_url.get_secret_value(), issuer=config.issuer)
        keys = jwks
        if keys is None:  # introspection mode: the issuer's keys, for JWT payload targets
            keys = events_jwks = JwksCache(
                http=http, discovery=discovery, timeout=config.timeout, monotonic=monotonic
            )
        receiver = EventReceiver(
            keys=config.events_keys(),
            revocations=revocations,
            metrics=metrics,
            feed=feed,
            max_age=config.events_max_age,
            max_body=config.events_max_body,
            timeout=config.timeout,
            clock=clock,
            monotonic=monotonic,
            jws=jwks_verifier(keys),
        )
    parts = Parts(
        auth,
        http,
        discovery,
        client,
        breaker,
        limit,
        metrics,
        pipeline,
        jwks,
        revocations,
        receiver,
        feed,
        events_jwks,
    )
    metrics.export(parts.snapshot)
    return parts
