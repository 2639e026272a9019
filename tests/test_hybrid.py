"""validation="hybrid": a JWT is verified locally and its first request served at once,
ZITADEL's introspection confirms it in the background (once per cache lifetime, inside the
concurrency cap), further requests wait for that confirmation, and an inactive answer drops it
everywhere. ``zitadel.introspected`` waits for the confirmation.
Everything goes to the stand-in on a loopback port; introspections are held where the test
needs to see what happens before ZITADEL answers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

import httpx
import pytest

from fastapi_zitadel import IdentityProviderError, InvalidTokenError, ZitadelIntrospection

from .helpers import HeldIntrospections
from .jwt_support import JwtWorld, app_for, bearer, client_for, settled, until
from .redis_support import REDIS_SERVER, RedisServer, eventually, subscribers


def held() -> tuple[HeldIntrospections, httpx.AsyncClient]:
    """A pooled client over real sockets whose introspections wait for ``release()``."""
    transport = HeldIntrospections(httpx.AsyncHTTPTransport())
    return transport, httpx.AsyncClient(transport=transport)


async def test_a_jwt_is_served_before_zitadel_answers(jwt_world: JwtWorld) -> None:
    gate, http = held()
    token = jwt_world.token("alice", roles=["admin"])
    async with jwt_world.hybrid(http_client=http) as zitadel:
        first = await zitadel.verify(token)  # returns while the introspection is held
        assert first.verified_by == "jwt"
        assert first.email is None
        await gate.until_waiting(1)
        assert zitadel.metrics().background_introspections == 1
        again = asyncio.ensure_future(zitadel.verify(token))  # waits for the confirmation
        await until(lambda: zitadel.metrics().confirmation_waits == 1)
        assert not again.done()
        gate.release()
        confirmed = await again  # ZITADEL's answer, which the entry now holds
        assert confirmed.verified_by == "introspection"
        assert confirmed.email == "alice@acme.localhost"
        assert confirmed.has_role("admin")
        await settled(zitadel)
        assert await zitadel.verify(token) is confirmed  # a cache hit
    assert jwt_world.standin.introspection_calls == 1
    await http.aclose()


async def test_at_most_one_introspection_per_cache_lifetime(jwt_world: JwtWorld) -> None:
    token = jwt_world.token()
    async with jwt_world.hybrid(cache_ttl=60) as zitadel:
        for _ in range(10):
            await zitadel.verify(token)
            await settled(zitadel)
        assert jwt_world.standin.introspection_calls == 1
        jwt_world.clock.advance(61)  # the entry's lifetime is over
        assert (await zitadel.verify(token)).verified_by == "jwt"
        await settled(zitadel)
        for _ in range(5):
            await zitadel.verify(token)
        assert jwt_world.standin.introspection_calls == 2
        assert zitadel.metrics().background_introspections == 2


async def test_a_revoked_jwt_passes_at_most_one_request(jwt_world: JwtWorld) -> None:
    token = jwt_world.token(lifetime=43_200)
    jwt_world.standin.revoke(token)
    async with jwt_world.hybrid(negative_cache_ttl=5) as zitadel:
        assert (await zitadel.verify(token)).verified_by == "jwt"  # the one request
        await settled(zitadel)  # the background introspection said inactive
        with pytest.raises(InvalidTokenError):
            await zitadel.verify(token)
        calls = jwt_world.standin.introspection_calls
        for step in (6, 60, 3600):  # past the negative cache, past cache_ttl, and on
            jwt_world.clock.advance(step)
            jwt_world.monotonic.advance(step)
            with pytest.raises(InvalidTokenError, match="not active"):
                await zitadel.verify(token)  # suspect: introspected before it is served
        assert jwt_world.standin.introspection_calls == calls + 3
        assert zitadel.metrics().jwt_verified == 1


async def test_a_transient_inactive_answer_locks_nobody_out(jwt_world: JwtWorld) -> None:
    """ZITADEL also answers inactive on internal errors: a suspect token is introspected
    before it is served, and once ZITADEL says active it is served from its JWT again."""
    token = jwt_world.token()
    jwt_world.standin.inject("inactive")
    async with jwt_world.hybrid(negative_cache_ttl=5) as zitadel:
        await zitadel.verify(token)
        await settled(zitadel)
        jwt_world.clock.advance(6)
        assert (await zitadel.verify(token)).verified_by == "introspection"
        jwt_world.clock.advance(61)
        assert (await zitadel.verify(token)).verified_by == "jwt"  # no longer suspect


async def test_revoked_while_cached_passes_until_the_entry_lapses(jwt_world: JwtWorld) -> None:
    token = jwt_world.token()
    async with jwt_world.hybrid(cache_ttl=60) as zitadel:
        await zitadel.verify(token)
        await settled(zitadel)
        jwt_world.standin.revoke(token)
        assert (await zitadel.verify(token)).verified_by == "introspection"  # cached
        jwt_world.clock.advance(61)
        assert (await zitadel.verify(token)).verified_by == "jwt"  # at most one more
        await settled(zitadel)
        with pytest.raises(InvalidTokenError):
            await zitadel.verify(token)


async def test_introspected_waits_for_the_confirmation(jwt_world: JwtWorld) -> None:
    gate, http = held()
    token = jwt_world.token()
    async with jwt_world.hybrid(http_client=http) as zitadel, client_for(zitadel) as client:
        plain = await client.get("/plain", headers=bearer(token))
        assert plain.json()["verified_by"] == "jwt"
        waiting = asyncio.ensure_future(client.get("/confirmed", headers=bearer(token)))
        await gate.until_waiting(1)
        assert not waiting.done()
        plain_request = asyncio.ensure_future(client.get("/plain", headers=bearer(token)))
        await until(lambda: zitadel.metrics().confirmation_waits == 2)  # /plain waits too
        assert not waiting.done()
        gate.release()
        confirmed = await waiting
        assert confirmed.status_code == 200
        assert confirmed.json()["verified_by"] == "introspection"
        assert (await plain_request).json()["verified_by"] == "introspection"
    assert jwt_world.standin.introspection_calls == 1  # the background one, joined
    await http.aclose()


async def test_introspected_never_lets_a_revoked_token_pass(jwt_world: JwtWorld) -> None:
    token = jwt_world.token()
    jwt_world.standin.revoke(token)
    async with jwt_world.hybrid() as zitadel, client_for(zitadel) as client:
        first = await client.get("/confirmed", headers=bearer(token))
        assert first.status_code == 401
        assert (await client.get("/plain", headers=bearer(token))).status_code == 401
    assert jwt_world.standin.introspection_calls == 1


async def test_introspected_when_zitadel_is_down(jwt_world: JwtWorld) -> None:
    token = jwt_world.token()
    jwt_world.standin.inject("status", status=503, times=None)
    async with jwt_world.hybrid(max_retries=0) as zitadel, client_for(zitadel) as client:
        assert (await client.get("/plain", headers=bearer(token))).status_code == 200
        down = await client.get("/confirmed", headers=bearer(token))
        assert down.status_code == 503
        assert int(down.headers["retry-after"]) >= 1
        await settled(zitadel)
        # Served once unconfirmed: until ZITADEL answers, the token waits for it (fail closed)
        still_down = await client.get("/plain", headers=bearer(token))
        assert still_down.status_code == 503
        jwt_world.standin.clear_faults()
        back = await client.get("/plain", headers=bearer(token))
        assert back.status_code == 200
        assert back.json()["verified_by"] == "introspection"
        assert (await client.get("/confirmed", headers=bearer(token))).status_code == 200


async def test_introspected_in_the_other_modes_is_the_plain_dependency(
    jwt_world: JwtWorld,
) -> None:
    token = jwt_world.token()
    async with jwt_world.local() as zitadel, client_for(zitadel) as client:
        answer = await client.get("/confirmed", headers=bearer(token))
        assert answer.json()["verified_by"] == "jwt"
    introspection = jwt_world.project.introspection(clock=jwt_world.clock)
    async with introspection as zitadel, client_for(zitadel) as client:
        answer = await client.get("/confirmed", headers=bearer(token))
        assert answer.json()["verified_by"] == "introspection"
        assert (await client.get("/confirmed")).status_code == 401
    assert jwt_world.standin.introspection_calls == 1


async def test_opaque_tokens_are_introspected_as_today(jwt_world: JwtWorld) -> None:
    opaque = jwt_world.project.token("alice")
    async with jwt_world.hybrid() as zitadel:
        principal = await zitadel.verify(opaque)
        assert principal.verified_by == "introspection"
        await zitadel.verify(opaque)
        metrics = zitadel.metrics()
    assert (metrics.background_introspections, metrics.jwt_verified, metrics.cache_hits) == (
        0,
        0,
        1,
    )
    assert jwt_world.standin.introspection_calls == 1


async def test_background_introspections_stay_inside_the_concurrency_cap(
    jwt_world: JwtWorld,
) -> None:
    gate, http = held()
    tokens = [jwt_world.token(f"user{i}") for i in range(5)]
    async with jwt_world.hybrid(http_client=http, max_concurrent_introspections=1) as zitadel:
        for token in tokens:
            assert (await zitadel.verify(token)).verified_by == "jwt"  # none waits
        await gate.until_waiting(1)
        assert zitadel.metrics().slots_in_use == 1
        assert gate.peak == 1
        gate.release()
        await settled(zitadel)
        assert gate.peak == 1
        assert {(await zitadel.verify(t)).verified_by for t in tokens} == {"introspection"}
    assert jwt_world.standin.introspection_calls == 5
    await http.aclose()


async def test_closing_cancels_background_introspections(
    jwt_world: JwtWorld, caplog: pytest.LogCaptureFixture
) -> None:
    gate, http = held()
    zitadel = jwt_world.hybrid(http_client=http)
    async with zitadel:
        for name in ("alice", "bob", "carol"):
            await zitadel.verify(jwt_world.token(name))
        await gate.until_waiting(1)
        assert zitadel.metrics().in_flight == 3
    assert zitadel.metrics().in_flight == 0
    gate.release()
    gc.collect()
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    await http.aclose()


async def test_a_bad_jwt_is_refused_without_an_introspection(jwt_world: JwtWorld) -> None:
    forged = jwt_world.forge(exp=int(jwt_world.clock()) - 60)
    async with jwt_world.hybrid() as zitadel:
        with pytest.raises(InvalidTokenError, match="expired"):
            await zitadel.verify(forged)
        with pytest.raises(InvalidTokenError, match="signature"):
            await zitadel.verify(forged.rsplit(".", 1)[0] + ".AAAA")
    assert jwt_world.standin.introspection_calls == 0


@pytest.mark.skipif(REDIS_SERVER is None, reason="needs Debian's redis-server")
async def test_an_inactive_answer_reaches_the_other_replicas(
    jwt_world: JwtWorld, redis_server: RedisServer
) -> None:
    """Replica A finds the JWT revoked in the background: B, which verified the same JWT,
    introspects it before serving it again, and refuses it."""
    token = jwt_world.token()
    a = jwt_world.hybrid(redis_url=redis_server.url)
    b = jwt_world.hybrid(redis_url=redis_server.url)
    async with a, b:
        await a.verify(token)
        await settled(a)
        await b.verify(token)  # a shared hit: ZITADEL's answer that A stored
        await eventually(
            lambda: asyncio.sleep(0, subscribers(redis_server) >= 2), "replicas never subscribed"
        )
        jwt_world.standin.revoke(token)
        jwt_world.clock.advance(61)  # every tier's entry has lapsed
        assert (await a.verify(token)).verified_by == "jwt"  # A's one request
        await settled(a)

        async def b_heard_it() -> bool:
            return b.metrics().cache_size == 0

        await eventually(b_heard_it, "the invalidation never reached replica B")
        calls = jwt_world.standin.introspection_calls
        with pytest.raises(InvalidTokenError, match="not active"):
            await b.verify(token)  # suspect on B too: introspected, never its JWT
        assert jwt_world.standin.introspection_calls == calls + 1
        assert b.metrics().jwt_verified == 0


async def test_hybrid_construction(app_key_path: object) -> None:
    zitadel = ZitadelIntrospection(
        "https://zitadel.example.test",
        validation="hybrid",
        audience="api",
        key_file=app_key_path,  # type: ignore[arg-type]
    )
    assert zitadel.validation == "hybrid"
    assert zitadel.client is not None


async def test_override_principal_covers_introspected(jwt_world: JwtWorld) -> None:
    from fastapi_zitadel import Principal
    from fastapi_zitadel.testing import override_principal

    zitadel = jwt_world.hybrid()
    app = app_for(zitadel)
    fake = Principal(subject="fake-user")
    with override_principal(app, zitadel, fake):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api.test"
        ) as client:
            answer = await client.get("/confirmed")
    assert answer.json() == {"sub": "fake-user", "verified_by": "introspection"}
    assert jwt_world.standin.introspection_calls == 0


async def test_nothing_secret_reaches_the_logs(
    jwt_world: JwtWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """Tokens, forged or real, and the issuer's key material appear in no log record at any
    level, whatever happens to them: verified, refused, revoked, keys rotated, JWKS down."""
    caplog.set_level(logging.DEBUG, logger="fastapi_zitadel")
    standin = jwt_world.standin
    good, revoked = jwt_world.token("alice"), jwt_world.token("bob")
    standin.revoke(revoked)
    forged = jwt_world.forge(headers={"kid": "unknown-kid"}, aud="other")
    expired = jwt_world.forge(exp=int(jwt_world.clock()) - 600)
    tokens = [good, revoked, forged, expired, good[:-3] + "abc", jwt_world.project.token("carol")]
    async with jwt_world.hybrid() as zitadel:
        for token in tokens:
            with contextlib.suppress(InvalidTokenError, IdentityProviderError):
                await zitadel.verify(token)
            await settled(zitadel)
        standin.rotate_signing_key(grace_period=0)
        standin.inject("status", status=500, times=None, endpoint="keys")
        jwt_world.monotonic.advance(400)
        for token in [*tokens, jwt_world.token("dave")]:
            with contextlib.suppress(InvalidTokenError, IdentityProviderError):
                await zitadel.verify(token)
            await settled(zitadel)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records  # the test looked at something
    for token in [*tokens, good]:
        for part in token.split("."):
            assert part not in text
    async with httpx.AsyncClient() as http:
        standin.clear_faults()
        keys = (await http.get(jwt_world.issuer + "/oauth/v2/keys")).json()["keys"]
    for key in keys:
        assert key["n"][:24] not in text


async def test_introspected_with_scopes_and_in_openapi(jwt_world: JwtWorld) -> None:
    from fastapi import FastAPI, Security

    from fastapi_zitadel import Principal

    zitadel = jwt_world.hybrid()
    app = FastAPI()
    zitadel.install(app)

    @app.get("/profile")
    async def profile(
        principal: Principal = Security(zitadel.introspected, scopes=["profile"]),  # noqa: B008
    ) -> dict[str, str | None]:
        return {"email": principal.email}

    schema = app.openapi()["paths"]["/profile"]["get"]
    assert schema["security"] == [{"ZITADEL": ["profile"]}]
    assert {"401", "403", "503"} <= set(schema["responses"])
    with_profile = jwt_world.token("alice", scopes=("openid", "profile", "email"))
    without = jwt_world.token("bob", scopes=("openid",))
    async with (
        zitadel,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://api.test"
        ) as client,
    ):
        # The JWT carries no scopes; ZITADEL's answer does, and introspected waits for it.
        answer = await client.get("/profile", headers=bearer(with_profile))
        assert answer.json() == {"email": "alice@acme.localhost"}
        refused = await client.get("/profile", headers=bearer(without))
        assert refused.status_code == 403
        assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
