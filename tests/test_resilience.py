"""Failing closed and staying up: deadlines, the circuit breaker, stale-if-error, the cap on
concurrent introspections, a broken cache backend, and the logs an operator sees."""

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

import httpx
import pytest

from fastapi_zitadel import IdentityProviderUnavailable, InvalidTokenError, ZitadelIntrospection
from fastapi_zitadel.cache import (
    CacheEntry,
    CacheKey,
    MemoryCache,
    SharedCacheUnavailable,
    SuspectToken,
)

from .helpers import FakeClock, HeldIntrospections, World


async def test_breaker_opens_after_consecutive_failures_and_probes_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_zitadel")
    world.standin.inject("status", status=503, times=None)
    async with world.client(max_retries=0, circuit_breaker_threshold=3) as zitadel:
        cached = world.token()
        world.standin.clear_faults()
        await zitadel.verify(cached)  # warm one entry before the outage
        world.standin.inject("status", status=503, times=None)
        for index in range(3):
            with pytest.raises(IdentityProviderUnavailable):
                await zitadel.verify(f"token-{index}")
        assert zitadel.circuit_state == "open"
        calls = world.standin.introspection_calls
        for index in range(20):
            with pytest.raises(IdentityProviderUnavailable, match="circuit open") as info:
                await zitadel.verify(f"other-{index}")
            assert info.value.retry_after is not None
            assert 0 < info.value.retry_after <= 5
        assert world.standin.introspection_calls == calls  # failing fast, IdP left alone
        assert (await zitadel.verify(cached)).subject == world.user.id  # hits still work
        world.clock.advance(5)
        states: list[str] = [zitadel.circuit_state]  # a property: it changes between reads
        with pytest.raises(IdentityProviderUnavailable):
            await zitadel.verify("probe-1")  # the probe fails: open again
        states.append(zitadel.circuit_state)
        world.clock.advance(5)
        world.standin.clear_faults()
        assert (await zitadel.verify(world.token())).subject == world.user.id
        states.append(zitadel.circuit_state)
        assert states == ["half-open", "open", "closed"]
    messages = [r.getMessage() for r in caplog.records if "circuit" in r.getMessage()]
    assert len(messages) == 3  # opened, probe failed, closed: one line per change
    assert "circuit open" in messages[0]
    assert "closed" in messages[-1]


async def test_half_open_lets_exactly_one_probe_through(world: World) -> None:
    world.standin.inject("status", status=503, times=2)
    async with world.client(max_retries=0, circuit_breaker_threshold=2) as zitadel:
        for index in range(2):
            with pytest.raises(IdentityProviderUnavailable):
                await zitadel.verify(f"t{index}")
        world.clock.advance(5)
        world.standin.inject("latency", seconds=0.1)
        results = await asyncio.gather(
            *(zitadel.verify(world.token()) for _ in range(10)), return_exceptions=True
        )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(
        isinstance(r, IdentityProviderUnavailable) for r in results if isinstance(r, BaseException)
    )
    assert world.standin.introspection_calls == 3


async def test_inactive_answers_do_not_trip_the_breaker(world: World) -> None:
    async with world.client(circuit_breaker_threshold=2) as zitadel:
        for index in range(10):
            with pytest.raises(InvalidTokenError):
                await zitadel.verify(f"garbage-{index}")
        assert zitadel.circuit_state == "closed"


async def test_stale_if_error_serves_within_grace_only_when_idp_is_down(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    async with world.client(cache_ttl=60, stale_if_error=120, max_retries=0) as zitadel:
        token = world.token(lifetime=600)
        await zitadel.verify(token)
        world.clock.advance(90)  # past the cache lifetime, within the grace period
        world.standin.inject("status", status=502, times=None)
        assert (await zitadel.verify(token)).subject == world.user.id
        assert any("stale_if_error" in r.getMessage() for r in caplog.records)
        world.clock.advance(100)  # 190 s: past lifetime + grace
        with pytest.raises(IdentityProviderUnavailable):
            await zitadel.verify(token)


async def test_stale_if_error_never_past_token_exp(world: World) -> None:
    async with world.client(cache_ttl=60, stale_if_error=3600, max_retries=0) as zitadel:
        token = world.token(lifetime=100)
        await zitadel.verify(token)
        world.clock.advance(101)
        world.standin.inject("status", status=502, times=None)
        with pytest.raises(IdentityProviderUnavailable):
            await zitadel.verify(token)


async def test_stale_if_error_never_overrides_inactive(world: World) -> None:
    async with world.client(cache_ttl=60, stale_if_error=600) as zitadel:
        token = world.token()
        await zitadel.verify(token)
        world.standin.revoke(token)
        world.clock.advance(61)
        with pytest.raises(InvalidTokenError):
            await zitadel.verify(token)
        world.standin.inject("status", status=502, times=None)
        world.clock.advance(6)  # past the negative entry: the stale copy must be gone too
        with pytest.raises(IdentityProviderUnavailable):
            await zitadel.verify(token)


async def test_stale_if_error_is_off_by_default(world: World) -> None:
    async with world.client(max_retries=0) as zitadel:
        token = world.token()
        await zitadel.verify(token)
        world.clock.advance(61)
        world.standin.inject("status", status=502, times=None)
        with pytest.raises(IdentityProviderUnavailable):
            await zitadel.verify(token)


async def test_concurrent_introspections_are_capped(world: World) -> None:
    idp = HeldIntrospections(world.standin.transport())
    http = httpx.AsyncClient(transport=idp)
    async with world.client(max_concurrent_introspections=3, http_client=http) as zitadel:
        tokens = [world.token() for _ in range(9)]
        lookups = asyncio.gather(*(zitadel.verify(t) for t in tokens))
        try:
            await idp.until_waiting(3)  # the IdP holds three; the other six queue for a slot
            running, at_idp = zitadel.metrics(), idp.waiting
        finally:
            idp.release()
        results = await lookups
        assert zitadel.metrics().slots_in_use == 0
    assert running.in_flight == 9
    assert running.slots_in_use == 3
    assert at_idp == 3
    assert idp.peak == 3  # never more than three at the IdP at once
    assert idp.arrived == 9
    assert all(r.subject == world.user.id for r in results)


async def test_queueing_beyond_the_deadline_is_503(world: World) -> None:
    idp = HeldIntrospections(world.standin.transport(), hold_abandoned=True)
    http = httpx.AsyncClient(transport=idp)
    async with world.client(
        max_concurrent_introspections=1, timeout=0.4, max_retries=0, http_client=http
    ) as zitadel:
        holder = asyncio.ensure_future(zitadel.verify(world.token()))
        try:
            await idp.until_waiting(1)  # it holds the only slot until the IdP is released
            queued = await asyncio.gather(
                *(zitadel.verify(world.token()) for _ in range(4)), return_exceptions=True
            )
            slots_held = zitadel.metrics().slots_in_use
        finally:
            idp.release()
        (held,) = await asyncio.gather(holder, return_exceptions=True)
    assert slots_held == 1  # the queued callers gave up while the slot was held
    results = [*queued, held]
    assert all(isinstance(r, IdentityProviderUnavailable) for r in results)
    assert all("introspections in flight" in str(r) for r in queued)
    assert idp.arrived == 1  # none of the queued callers went on to the IdP


async def test_deadline_covers_discovery(app_key: dict[str, Any]) -> None:
    requested: list[str] = []

    async def never_answers(request: httpx.Request) -> httpx.Response:
        requested.append(request.url.path)
        await asyncio.Event().wait()  # until the deadline cancels it
        raise AssertionError("unreachable")

    client = httpx.AsyncClient(transport=httpx.MockTransport(never_answers))
    zitadel = ZitadelIntrospection(
        "https://zitadel.example.test", key_file=app_key, http_client=client, timeout=0.3
    )
    with pytest.raises(IdentityProviderUnavailable, match=r"discovery failed: .*timed out"):
        await zitadel.verify("token")
    assert requested == ["/.well-known/openid-configuration"]


async def test_slow_discovery_leaves_no_time_for_introspection(
    app_key: dict[str, Any], clock: FakeClock
) -> None:
    """One deadline for discovery and introspection together, not one each."""
    monotonic = FakeClock(0.0)
    requested: list[str] = []

    async def slow_discovery(request: httpx.Request) -> httpx.Response:
        requested.append(request.url.path)
        monotonic.advance(0.5)  # discovery answers, but only after the whole deadline
        return httpx.Response(
            200,
            json={
                "issuer": "https://zitadel.example.test",
                "introspection_endpoint": "https://zitadel.example.test/oauth/v2/introspect",
            },
        )

    zitadel = ZitadelIntrospection(
        "https://zitadel.example.test",
        key_file=app_key,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(slow_discovery)),
        timeout=0.3,
        max_retries=0,
        clock=clock,
        monotonic=monotonic,
    )
    with pytest.raises(IdentityProviderUnavailable, match=r"did not answer within 0\.3 s"):
        await zitadel.verify("token")
    assert requested == ["/.well-known/openid-configuration"]  # no introspection was sent


async def test_outage_is_logged_once_not_per_request(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_zitadel")
    world.standin.inject("status", status=502, times=None)
    async with world.client(max_retries=0, circuit_breaker_threshold=0) as zitadel:
        for index in range(10):
            with pytest.raises(IdentityProviderUnavailable):
                await zitadel.verify(f"t{index}")
    outage = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(outage) == 1
    assert "502" in outage[0].getMessage()


class BrokenCache(MemoryCache):
    """A shared tier that is down: every operation raises."""

    async def get(self, key: CacheKey) -> CacheEntry | None:
        raise ConnectionError("cache backend down")

    async def set(self, key: CacheKey, entry: CacheEntry) -> None:
        raise ConnectionError("cache backend down")

    async def delete(self, key: CacheKey) -> None:
        raise ConnectionError("cache backend down")


async def test_broken_shared_tier_degrades_to_local_cache_and_idp(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    cache = BrokenCache(max_size=10, clock=world.clock)
    async with world.client(cache=cache, timeout=1) as zitadel:
        token = world.token()
        assert (await zitadel.verify(token)).subject == world.user.id
        assert (await zitadel.verify(token)).subject == world.user.id  # the local tier
        with pytest.raises(SharedCacheUnavailable):  # never "done" when the tier said no
            await zitadel.invalidate(token)
        assert (await zitadel.verify(token)).subject == world.user.id  # local copy dropped
    assert world.standin.introspection_calls == 2
    assert len([r for r in caplog.records if "shared introspection cache" in r.getMessage()]) == 1


class EagerlyBrokenCache(MemoryCache):
    """A shared tier written without ``async``: its calls raise before they return an
    awaitable."""

    def read(self, key: CacheKey) -> Awaitable[CacheEntry | SuspectToken | None]:  # type: ignore[override]
        raise ConnectionError("cache backend down")

    def set(self, key: CacheKey, entry: CacheEntry) -> Awaitable[None]:  # type: ignore[override]
        raise ConnectionError("cache backend down")


async def test_a_tier_raising_before_it_awaits_is_a_miss_too(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    async with world.client(cache=EagerlyBrokenCache(max_size=10, clock=world.clock)) as zitadel:
        assert (await zitadel.verify(world.token())).subject == world.user.id
    messages = [r.getMessage() for r in caplog.records]
    assert any("shared introspection cache unavailable (ConnectionError)" in m for m in messages)


async def test_given_cache_is_used_even_when_empty(world: World) -> None:
    cache = MemoryCache(max_size=10, clock=world.clock)
    async with world.client(cache=cache) as zitadel:
        await zitadel.verify(world.token())
    assert len(cache) == 1


async def test_closed_http_client_is_503(app_key: dict[str, Any]) -> None:
    client = httpx.AsyncClient()
    await client.aclose()
    zitadel = ZitadelIntrospection(
        "https://zitadel.example.test",
        key_file=app_key,
        http_client=client,
        introspection_endpoint="https://zitadel.example.test/oauth/v2/introspect",
        max_retries=0,
    )
    with pytest.raises(IdentityProviderUnavailable):
        await zitadel.verify("token")


class HangingCache(MemoryCache):
    """A shared tier whose writes never finish on their own."""

    def __init__(self, *, max_size: int, clock: FakeClock) -> None:
        super().__init__(max_size=max_size, clock=clock)
        self.writes_abandoned = 0

    async def set(self, key: CacheKey, entry: CacheEntry) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.writes_abandoned += 1
            raise


async def test_slow_shared_tier_cannot_stretch_the_deadline(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    cache = HangingCache(max_size=10, clock=world.clock)
    async with world.client(cache=cache, timeout=1) as z:
        assert (await z.verify(world.token())).subject == world.user.id
    assert cache.writes_abandoned == 1  # given up at the deadline, the answer still returned
    assert any("set failed" in r.getMessage() for r in caplog.records)


async def test_stale_copy_is_not_served_after_invalidate(
    app_key: dict[str, Any], clock: Any
) -> None:
    calls = 0
    failing = asyncio.Event()  # the second call is at the IdP
    revoked = asyncio.Event()  # the test has invalidated the token meanwhile

    async def active_then_slowly_failing(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(200, json={"active": True, "sub": "u"})
        failing.set()
        await revoked.wait()
        return httpx.Response(503, json={"error": "down"})

    zitadel = ZitadelIntrospection(
        "https://zitadel.example.test",
        key_file=app_key,
        introspection_endpoint="https://zitadel.example.test/oauth/v2/introspect",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(active_then_slowly_failing)),
        clock=clock,
        cache_ttl=60,
        stale_if_error=600,
        max_retries=0,
    )
    await zitadel.verify("token")
    clock.advance(61)
    lookup = asyncio.ensure_future(zitadel.verify("token"))  # stale entry, IdP failing slowly
    await failing.wait()
    await zitadel.invalidate("token")  # revoked meanwhile: the stale copy must not be served
    revoked.set()
    with pytest.raises(IdentityProviderUnavailable):
        await lookup
