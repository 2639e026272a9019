"""Hybrid mode keeps its promise, under any concurrency and on every replica.

At most ``hybrid_unconfirmed_limit`` requests per token (1 by default) are served before the
token's confirming introspection has answered; the others wait for it. No confirmation is
dropped: one the concurrency cap could not take queues again, one ZITADEL could not answer
leaves the token suspect. Whatever the shared tier knows against a token (the tombstone of an
invalidation, or of an inactive answer) makes a replica that never heard of it, one started
afterwards included, introspect the token before serving it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from fastapi_zitadel import (
    IdentityProviderError,
    InvalidTokenError,
    Principal,
    ZitadelIntrospection,
)
from fastapi_zitadel._build import Parts, build
from fastapi_zitadel._exceptions import QueueTimeout
from fastapi_zitadel.cache import (
    CacheEntry,
    CacheKey,
    IntrospectionCache,
    MemoryCache,
    SuspectToken,
)
from fastapi_zitadel.testing import LoopbackServer

from .helpers import FakeClock, HeldIntrospections
from .jwt_support import SAFETY, JwtWorld, bearer, settled, until
from .redis_support import REDIS_SERVER, RedisServer

# Every test here talks to the stand-in served by uvicorn on a loopback port (``jwt_world``).
pytestmark = pytest.mark.loopback
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="needs Debian's redis-server")


def held() -> tuple[HeldIntrospections, httpx.AsyncClient]:
    transport = HeldIntrospections(httpx.AsyncHTTPTransport())
    return transport, httpx.AsyncClient(transport=transport)


# The unconfirmed limit ---------------------------------------------------------------------
@pytest.mark.parametrize("limit", [1, 3])
async def test_at_most_the_limit_is_served_before_the_confirmation(
    jwt_world: JwtWorld, limit: int
) -> None:
    gate, http = held()
    token = jwt_world.token()
    options: dict[str, Any] = {"http_client": http}
    if limit != 1:
        options["hybrid_unconfirmed_limit"] = limit
    async with jwt_world.hybrid(**options) as zitadel:
        for _ in range(limit):  # none of them waits for ZITADEL
            assert (await zitadel.verify(token)).verified_by == "jwt"
        await gate.until_waiting(1)
        waiting = [asyncio.ensure_future(zitadel.verify(token)) for _ in range(5)]
        await until(lambda: zitadel.metrics().confirmation_waits == 5)
        assert not any(request.done() for request in waiting)
        gate.release()
        answers = await asyncio.gather(*waiting)
        assert {principal.verified_by for principal in answers} == {"introspection"}
        assert zitadel.metrics().jwt_verified == 1  # the others served from its record
    assert jwt_world.standin.introspection_calls == 1  # the one confirmation, joined
    await http.aclose()


async def test_nothing_is_served_unconfirmed_past_the_tokens_exp(jwt_world: JwtWorld) -> None:
    gate, http = held()
    token = jwt_world.token(lifetime=120)
    async with jwt_world.hybrid(http_client=http, hybrid_unconfirmed_limit=5) as zitadel:
        assert (await zitadel.verify(token)).verified_by == "jwt"
        await gate.until_waiting(1)  # its confirmation is held
        jwt_world.clock.advance(121)  # the token expires meanwhile
        late = asyncio.ensure_future(zitadel.verify(token))
        await until(lambda: zitadel.metrics().confirmation_waits == 1)  # not served
        gate.release()
        with pytest.raises(InvalidTokenError):
            await late
    await http.aclose()


async def test_a_concurrent_burst_serves_one_request_of_a_revoked_jwt(
    jwt_world: JwtWorld,
) -> None:
    gate, http = held()
    token = jwt_world.token(lifetime=43_200)
    jwt_world.standin.revoke(token)
    async with jwt_world.hybrid(http_client=http) as zitadel:
        burst = [asyncio.ensure_future(zitadel.verify(token)) for _ in range(50)]
        await gate.until_waiting(1)
        await until(lambda: zitadel.metrics().confirmation_waits == 49)
        gate.release()
        answers = await asyncio.gather(*burst, return_exceptions=True)
    served = [a for a in answers if isinstance(a, Principal)]
    refused = [a for a in answers if isinstance(a, InvalidTokenError)]
    assert (len(served), len(refused)) == (1, 49)
    assert jwt_world.standin.introspection_calls == 1
    await http.aclose()


async def test_the_limit_setting_is_read_and_checked(
    jwt_world: JwtWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZITADEL_HYBRID_UNCONFIRMED_LIMIT", "4")
    zitadel = ZitadelIntrospection.from_env(
        issuer=jwt_world.issuer,
        validation="hybrid",
        key_file=jwt_world.project.key_path,
        audience=jwt_world.audience,
    )
    assert zitadel.config.hybrid_unconfirmed_limit == 4
    assert jwt_world.hybrid().config.hybrid_unconfirmed_limit == 1  # the default
    with pytest.raises(ValueError, match="hybrid_unconfirmed_limit"):
        jwt_world.hybrid(hybrid_unconfirmed_limit=0)


# Over real HTTP ----------------------------------------------------------------------------
def plain_app(zitadel: ZitadelIntrospection) -> FastAPI:
    app = FastAPI()
    zitadel.install(app)

    @app.get("/plain")
    async def plain(principal: Principal = Depends(zitadel)) -> dict[str, str]:  # noqa: B008
        return {"verified_by": principal.verified_by}

    return app


async def test_a_revoked_jwt_burst_and_looping_clients_over_http(jwt_world: JwtWorld) -> None:
    """The measurement of the issue, as a test: a JWT revoked at ZITADEL before its first use,
    50 concurrent requests, then 8 clients looping while the confirmation is still pending."""
    token = jwt_world.token(lifetime=43_200)
    jwt_world.standin.revoke(token)
    jwt_world.standin.inject("latency", seconds=0.5, times=None)  # ZITADEL Cloud is slower
    zitadel = jwt_world.hybrid()
    limits = httpx.Limits(max_connections=100)
    with LoopbackServer(plain_app(zitadel)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=SAFETY, limits=limits) as client:

            async def request() -> int:
                return (await client.get("/plain", headers=bearer(token))).status_code

            async def looping() -> list[int]:
                return [await request() for _ in range(10)]

            burst = [asyncio.ensure_future(request()) for _ in range(50)]
            await asyncio.wait(burst, return_when=asyncio.FIRST_COMPLETED)
            looped = await asyncio.gather(*(looping() for _ in range(8)))
            statuses = await asyncio.gather(*burst)
    assert statuses.count(200) <= 1
    assert statuses.count(401) + statuses.count(200) == 50
    assert [status for one in looped for status in one].count(200) == 0
    assert zitadel.metrics().jwt_verified <= 50  # verified, but not served
    assert jwt_world.standin.introspection_calls >= 1


# No confirmation is dropped ----------------------------------------------------------------
class FullQueue:
    """The concurrency cap as a flood of new tokens leaves it: while ``full``, every wait for
    a slot lasts until the test says its deadline passed (``expire``), then is a
    ``QueueTimeout``, as ``max_concurrent_introspections`` busy for a whole ``timeout`` is."""

    def __init__(self, real: Callable[[float], Any], monotonic: FakeClock) -> None:
        self._real = real
        self._monotonic = monotonic
        self.full = True
        self.queued = 0
        self._deadline = asyncio.Event()

    def expire(self) -> None:
        """Every wait queued now reaches its deadline."""
        passed, self._deadline = self._deadline, asyncio.Event()
        passed.set()

    @asynccontextmanager
    async def slot(self, deadline: float) -> AsyncIterator[None]:
        if self.full:
            self.queued += 1
            try:
                await self._deadline.wait()
            finally:
                self.queued -= 1
            self._monotonic.now = max(self._monotonic.now, deadline)  # the deadline has come
            raise QueueTimeout("more than 50 introspections in flight", retry_after=1.0)
        async with self._real(deadline):
            yield


def built(zitadel: ZitadelIntrospection, world: JwtWorld) -> Parts:
    """A second set of working parts from ``zitadel``'s settings, whose pieces a test can
    reach (here: the concurrency cap)."""
    return build(
        zitadel.config, http_client=None, cache=None, clock=world.clock, monotonic=world.monotonic
    )


async def idle(parts: Parts) -> None:
    await until(lambda: parts.pipeline.sizes[2] == 0)


async def test_confirmations_are_never_dropped_when_the_queue_is_full(
    jwt_world: JwtWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = [jwt_world.token(f"user{i}", lifetime=43_200) for i in range(40)]
    jwt_world.standin.revoke(tokens[-1])
    parts = built(jwt_world.hybrid(), jwt_world)
    queue = FullQueue(parts.limit.slot, jwt_world.monotonic)
    monkeypatch.setattr(parts.limit, "slot", queue.slot)
    pipeline = parts.pipeline
    try:
        for token in tokens:  # a cold start: every one a first request, served at once
            assert (await pipeline.verify(token)).verified_by == "jwt"
        await until(lambda: queue.queued == len(tokens))
        for requeued in (len(tokens), 2 * len(tokens)):  # the whole timeout passes, twice
            queue.expire()

            def requeued_all(n: int = requeued) -> bool:
                return parts.metrics.confirmations_requeued == n

            await until(requeued_all)
            await until(lambda: queue.queued == len(tokens))  # queued again, not dropped
        # Meanwhile the tokens' next requests wait for their confirmation.
        waiting = asyncio.ensure_future(pipeline.verify(tokens[0]))
        await until(lambda: parts.metrics.confirmation_waits == 1)
        assert not waiting.done()
        assert jwt_world.standin.introspection_calls == 0
        queue.full = False
        queue.expire()
        assert (await waiting).verified_by == "introspection"
        await idle(parts)
        assert jwt_world.standin.introspection_calls == len(tokens)  # every one ran
        for token in tokens[:-1]:
            assert (await pipeline.verify(token)).verified_by == "introspection"
        with pytest.raises(InvalidTokenError, match="not active"):
            await pipeline.verify(tokens[-1])
        assert parts.metrics.jwt_verified == len(tokens)
    finally:
        await parts.aclose()


async def test_a_confirmation_the_idp_cannot_answer_leaves_the_token_pending(
    jwt_world: JwtWorld,
) -> None:
    token = jwt_world.token(lifetime=43_200)
    jwt_world.standin.inject("status", status=503, times=1)
    async with jwt_world.hybrid(max_retries=0) as zitadel:
        assert (await zitadel.verify(token)).verified_by == "jwt"
        await settled(zitadel)  # the confirmation failed: ZITADEL answered 503
        jwt_world.standin.revoke(token)
        with pytest.raises(InvalidTokenError, match="not active"):
            await zitadel.verify(token)  # introspected first, never served from its JWT
        assert zitadel.metrics().jwt_verified == 1
    assert jwt_world.standin.introspection_calls == 2


async def test_a_pending_token_waits_for_an_idp_that_stays_down(jwt_world: JwtWorld) -> None:
    """Fail closed: a token served once unconfirmed is not served again while ZITADEL cannot
    answer; a 503, never a 401."""
    token = jwt_world.token()
    jwt_world.standin.inject("status", status=503, times=None)
    async with jwt_world.hybrid(max_retries=0) as zitadel:
        assert (await zitadel.verify(token)).verified_by == "jwt"
        await settled(zitadel)
        with pytest.raises(IdentityProviderError):
            await zitadel.verify(token)
        jwt_world.standin.clear_faults()
        assert (await zitadel.verify(token)).verified_by == "introspection"


# The shared tier's knowledge, on every replica ----------------------------------------------
class TombstoningCache(IntrospectionCache):
    """A user's own shared tier that keeps tombstones and reports them through ``read``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.entries = MemoryCache(max_size=100, clock=clock)
        self.tombstones: set[bytes] = set()
        self.reads = 0

    async def get(self, key: CacheKey) -> CacheEntry | None:
        return None if key.digest in self.tombstones else await self.entries.get(key)

    async def read(self, key: CacheKey) -> CacheEntry | SuspectToken | None:
        self.reads += 1
        if key.digest in self.tombstones:
            return SuspectToken()
        return await self.get(key)

    async def set(self, key: CacheKey, entry: CacheEntry) -> None:
        if key.digest not in self.tombstones:
            await self.entries.set(key, entry)

    async def delete(self, key: CacheKey) -> None:
        self.tombstones.add(key.digest)
        await self.entries.delete(key)

    async def clear(self) -> None:
        await self.entries.clear()


async def test_a_users_own_tier_reports_a_tombstone_to_a_new_replica(
    jwt_world: JwtWorld,
) -> None:
    tier = TombstoningCache(jwt_world.clock)
    token = jwt_world.token(lifetime=43_200)
    async with jwt_world.hybrid(cache=tier) as first:
        await first.verify(token)
        await settled(first)
        jwt_world.standin.revoke(token)
        await first.invalidate(token)
    async with jwt_world.hybrid(cache=tier) as replica:
        with pytest.raises(InvalidTokenError, match="not active"):
            await replica.verify(token)
        assert replica.metrics().jwt_verified == 0  # never its JWT
    another = jwt_world.token("bob")
    async with jwt_world.hybrid(cache=tier) as replica:
        assert (await replica.verify(another)).verified_by == "jwt"  # no tombstone: a miss


def tombstones(server: RedisServer) -> list[bytes]:
    names = server.client().keys("fastapi-zitadel:*:tombstone:*")
    return [name for name in names if isinstance(name, bytes)]


@pytest.mark.redis
@needs_redis
async def test_replicas_started_after_an_invalidation_refuse_the_jwt(
    jwt_world: JwtWorld, redis_server: RedisServer
) -> None:
    revoked = jwt_world.token("alice", lifetime=43_200)
    still_good = jwt_world.token("bob", lifetime=43_200)
    async with jwt_world.hybrid(redis_url=redis_server.url) as a:
        for token in (revoked, still_good):
            await a.verify(token)
        await settled(a)  # both confirmed, their answers in Redis
        jwt_world.standin.revoke(revoked)
        await a.invalidate(revoked)
        await a.invalidate(still_good)  # invalidated, but ZITADEL still says active
    lifetimes = [redis_server.client().pttl(name) for name in tombstones(redis_server)]
    assert len(lifetimes) == 2
    assert min(lifetimes) > 43_000_000  # until the tokens' exp, not 10 minutes
    for options in ({}, {}, {"cache_ttl": 0}):  # three replicas started afterwards
        async with jwt_world.hybrid(redis_url=redis_server.url, **options) as replica:
            with pytest.raises(InvalidTokenError, match="not active"):
                await replica.verify(revoked)
            assert (await replica.verify(still_good)).verified_by == "introspection"
            assert replica.metrics().jwt_verified == 0


@pytest.mark.redis
@needs_redis
async def test_an_inactive_answer_reaches_replicas_started_later(
    jwt_world: JwtWorld, redis_server: RedisServer
) -> None:
    """A JWT revoked before its first use: replica A serves it once, its confirmation finds
    it inactive; a replica started afterwards introspects it first and refuses it."""
    token = jwt_world.token(lifetime=43_200)
    jwt_world.standin.revoke(token)
    async with jwt_world.hybrid(redis_url=redis_server.url) as a:
        assert (await a.verify(token)).verified_by == "jwt"  # A's one request
        await settled(a)
    # The tombstone lives as long as the token could be presented (12 h), not only
    # tombstone_ttl (10 minutes): a replica started hours later still knows.
    lifetimes = [redis_server.client().pttl(name) for name in tombstones(redis_server)]
    assert len(lifetimes) == 1
    assert lifetimes[0] > 43_000_000
    for _ in range(3):
        async with jwt_world.hybrid(redis_url=redis_server.url) as replica:
            with pytest.raises(InvalidTokenError, match="not active"):
                await replica.verify(token)
            assert replica.metrics().jwt_verified == 0
