"""validation="local": JWT access tokens verified against the stand-in's JWKS over a loopback
port, without credentials; the cache, key rotation, refreshes and outages."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest

from fastapi_zitadel import (
    ConfigurationError,
    IdentityProviderError,
    InvalidTokenError,
    ZitadelIntrospection,
)
from fastapi_zitadel.cache import MemoryCache
from fastapi_zitadel.testing import ZitadelStandIn

from .jwt_support import JwtWorld, bearer, client_for, settled

ISSUER = "https://zitadel.example.test"


def test_local_needs_no_credentials_but_an_audience() -> None:
    zitadel = ZitadelIntrospection(ISSUER, validation="local", audience="api")
    assert zitadel.validation == "local"
    assert zitadel.client is None
    assert zitadel.introspection_calls == 0
    modes: tuple[Literal["local", "hybrid"], ...] = ("local", "hybrid")
    for mode in modes:
        with pytest.raises(ConfigurationError, match=r"audience \(ZITADEL_AUDIENCE\)"):
            ZitadelIntrospection(ISSUER, validation=mode, client_id="c", client_secret="s")
    with pytest.raises(ConfigurationError, match="no client credentials"):
        ZitadelIntrospection(ISSUER, validation="hybrid", audience="api")
    with pytest.raises(ConfigurationError, match="validation"):
        ZitadelIntrospection(ISSUER, validation="jwt", audience="api")  # type: ignore[arg-type]


def test_local_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZITADEL_ISSUER", ISSUER)
    monkeypatch.setenv("ZITADEL_VALIDATION", "local")
    with pytest.raises(ConfigurationError, match="ZITADEL_AUDIENCE"):
        ZitadelIntrospection.from_env()
    monkeypatch.setenv("ZITADEL_AUDIENCE", "api,other")
    zitadel = ZitadelIntrospection.from_env()
    assert zitadel.config.validation == "local"
    assert zitadel.config.audience == ("api", "other")


def test_local_with_a_credential_still_checks_it(app_key_path: Any) -> None:
    zitadel = ZitadelIntrospection(
        ISSUER, validation="local", audience="api", key_file=app_key_path
    )
    assert zitadel.client is not None  # kept, unused: local mode never introspects
    with pytest.raises(ConfigurationError, match="not both"):
        ZitadelIntrospection(
            ISSUER,
            validation="local",
            audience="api",
            key_file=app_key_path,
            client_id="c",
            client_secret="s",
        )


def test_local_refuses_a_shared_tier(app_key_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="redis_url"):
        ZitadelIntrospection(
            ISSUER, validation="local", audience="api", redis_url="redis://127.0.0.1:1/0"
        )
    with pytest.raises(ConfigurationError, match="shared cache"):
        ZitadelIntrospection(
            ISSUER,
            validation="local",
            audience="api",
            cache=MemoryCache(max_size=10, clock=lambda: 0),
        )


async def test_a_jwt_verified_locally_has_zitadels_claim_shapes(jwt_world: JwtWorld) -> None:
    project = jwt_world.project
    user = project.user("alice", roles=["admin", "reader"])
    user.metadata["tier"] = b"gold"
    token = jwt_world.token(
        "alice",
        scopes=(
            "openid",
            "profile",
            "email",
            "urn:zitadel:iam:user:resourceowner",
            "urn:zitadel:iam:user:metadata",
        ),
    )
    async with jwt_world.local() as zitadel:
        principal = await zitadel.verify(token)
    assert principal.verified_by == "jwt"
    assert principal.subject == user.id
    assert principal.issuer == jwt_world.issuer
    assert project.project.id in principal.audience
    assert principal.has_all_roles(["admin", "reader"], org_id=project.org.id)
    assert principal.organization is not None
    assert principal.organization.primary_domain == project.org.primary_domain
    assert principal.metadata_text("tier") == "gold"
    assert principal.expires_at is not None
    assert principal.token_id is not None
    # ZITADEL's JWT access tokens carry no profile, e-mail or scope claims.
    for empty in ("username", "name", "email", "email_verified", "preferred_username"):
        assert getattr(principal, empty) is None, empty
    assert principal.scopes == frozenset()
    assert principal.client_id is None
    assert "scope" not in principal.claims
    assert jwt_world.standin.introspection_calls == 0


async def test_the_same_token_introspected_answers_alike(jwt_world: JwtWorld) -> None:
    """The stand-in's introspection of its own JWTs answers as for its opaque tokens."""
    token = jwt_world.token("alice", roles=["admin"])
    async with jwt_world.project.introspection(clock=jwt_world.clock) as zitadel:
        introspected = await zitadel.verify(token)
    assert introspected.verified_by == "introspection"
    assert introspected.has_role("admin")
    assert introspected.username == "alice"
    async with jwt_world.local() as zitadel:
        local = await zitadel.verify(token)
    assert (local.subject, local.token_id, local.audience) == (
        introspected.subject,
        introspected.token_id,
        introspected.audience,
    )
    assert dict(local.roles) == dict(introspected.roles)


async def test_an_opaque_token_in_local_mode_is_401_without_a_network_call(
    jwt_world: JwtWorld,
) -> None:
    opaque = jwt_world.project.token("alice")
    assert opaque.count(".") == 4  # ZITADEL's newer opaque tokens have dots too
    async with jwt_world.local() as zitadel, client_for(zitadel) as client:
        answer = await client.get("/plain", headers=bearer(opaque))
        assert answer.status_code == 401
        assert "opaque tokens need introspection" in answer.json()["detail"]["error_description"]
        assert zitadel.metrics().jwks_fetches == 0
    assert (jwt_world.standin.jwks_calls, jwt_world.standin.introspection_calls) == (0, 0)


async def test_a_verified_jwt_is_cached_until_min_of_ttl_and_exp(jwt_world: JwtWorld) -> None:
    short = jwt_world.forge(exp=int(jwt_world.clock()) + 30)
    long = jwt_world.token("bob", lifetime=3600)
    async with jwt_world.local(cache_ttl=60, leeway=0) as zitadel:
        for token in (short, long):
            await zitadel.verify(token)
            await zitadel.verify(token)
        metrics = zitadel.metrics()
        assert (metrics.misses, metrics.cache_hits, metrics.jwt_verified) == (2, 2, 2)
        jwt_world.clock.advance(31)  # the short token's exp: gone, whatever cache_ttl says
        with pytest.raises(InvalidTokenError, match="expired"):
            await zitadel.verify(short)
        await zitadel.verify(long)
        assert zitadel.metrics().cache_hits == 3
        jwt_world.clock.advance(30)  # past cache_ttl: verified again
        await zitadel.verify(long)
        assert zitadel.metrics().jwt_verified == 3


async def test_key_rotation_just_works(jwt_world: JwtWorld) -> None:
    standin = jwt_world.standin
    before = jwt_world.token("alice")
    async with jwt_world.local(cache_ttl=0) as zitadel:
        await zitadel.verify(before)
        old_kid = standin.signing_key_id
        new_kid = standin.rotate_signing_key(grace_period=600)
        assert standin.published_key_ids == [old_kid, new_kid]
        after = jwt_world.token("bob")
        jwt_world.monotonic.advance(31)
        assert (await zitadel.verify(after)).verified_by == "jwt"  # unknown kid: one fetch
        assert (await zitadel.verify(before)).verified_by == "jwt"  # in its grace period
        assert zitadel.metrics().jwks_fetches == 2
        # The grace period ends; the next background refresh (after max-age) drops the key.
        jwt_world.clock.advance(601)
        assert standin.published_key_ids == [new_kid]
        jwt_world.monotonic.advance(301)  # past the JWKS answer's max-age=300
        await zitadel.verify(after)  # served with the keys we have, refreshed behind it
        await settled(zitadel)
        assert zitadel.metrics().jwks_fetches == 3
        with pytest.raises(InvalidTokenError, match="does not publish"):
            await zitadel.verify(before)


async def _until(check: Any) -> None:
    async def poll() -> None:
        while True:  # a background refresh: nothing to wait on but its effect
            if check():
                return
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), 20)


async def test_other_web_key_algorithms(jwt_world: JwtWorld) -> None:
    standin = jwt_world.standin
    async with jwt_world.local(cache_ttl=0) as zitadel:
        algorithms: tuple[Literal["RS256", "ES256", "EdDSA"], ...] = ("ES256", "EdDSA", "RS256")
        for algorithm in algorithms:
            standin.rotate_signing_key(algorithm=algorithm)
            jwt_world.monotonic.advance(31)
            principal = await zitadel.verify(jwt_world.token())
            assert principal.verified_by == "jwt", algorithm
        published = {key["algorithm"] for key in await zitadel.signing_keys()}
    assert {"RS256", "ES256", "EdDSA"} <= published


async def test_known_keys_keep_verifying_while_zitadel_is_down(jwt_world: JwtWorld) -> None:
    """The resilience gain: with ZITADEL unreachable, a token whose key we have verifies;
    one with a key we do not have cannot be decided (503, Retry-After), never a 401."""
    standin = jwt_world.standin
    known = jwt_world.token("alice")
    async with jwt_world.local(cache_ttl=0) as zitadel, client_for(zitadel) as client:
        assert (await client.get("/plain", headers=bearer(known))).status_code == 200
        standin.rotate_signing_key()
        unknown = jwt_world.token("bob")  # signed by a key we never fetched
        standin.inject("status", status=503, times=None, endpoint="keys")
        jwt_world.monotonic.advance(301)  # the set is stale: a refresh is tried and fails
        for _ in range(3):
            assert (await client.get("/plain", headers=bearer(known))).status_code == 200
        jwt_world.monotonic.advance(31)
        down = await client.get("/plain", headers=bearer(unknown))
        assert down.status_code == 503
        assert int(down.headers["retry-after"]) >= 1
        again = await client.get("/plain", headers=bearer(unknown))  # within the backoff
        assert again.status_code == 503
        assert (await client.get("/plain", headers=bearer(known))).status_code == 200
        standin.clear_faults()
        jwt_world.monotonic.advance(31)
        assert (await client.get("/plain", headers=bearer(unknown))).status_code == 200


async def test_the_issuer_gone_entirely(jwt_world: JwtWorld) -> None:
    """The stand-in's port closed: known keys keep verifying, unknown ones are 503."""
    standin = ZitadelStandIn(clock=jwt_world.clock)
    with standin.serve():
        zitadel = ZitadelIntrospection(
            standin.issuer,
            validation="local",
            audience="api",
            cache_ttl=0,
            clock=jwt_world.clock,
            monotonic=jwt_world.monotonic,
        )
        claims = jwt_world.claims(iss=standin.issuer, aud="api")
        token = standin.sign_jwt(claims)
        await zitadel.verify(token)
    async with zitadel:
        for _ in range(3):
            assert (await zitadel.verify(token)).verified_by == "jwt"
        jwt_world.monotonic.advance(301)  # stale: a refresh is tried, and fails
        assert (await zitadel.verify(token)).verified_by == "jwt"
        await settled(zitadel)
        assert (await zitadel.verify(token)).verified_by == "jwt"
        jwt_world.monotonic.advance(31)
        with pytest.raises(IdentityProviderError, match="JWKS"):
            await zitadel.verify(standin.sign_jwt(claims, headers={"kid": "new"}))


async def test_discover_on_startup_fetches_the_keys(jwt_world: JwtWorld) -> None:
    zitadel = jwt_world.local(discover_on_startup=True)
    async with zitadel:
        assert zitadel.metrics().jwks_fetches == 1
        assert (await zitadel.discover()).endswith("/oauth/v2/keys")
        keys = await zitadel.signing_keys()
    assert keys == [
        {"kid": jwt_world.standin.signing_key_id, "algorithm": "RS256", "key": "RSA 2048 bits"}
    ]


async def test_a_jwks_without_usable_keys_fails_the_start(jwt_world: JwtWorld) -> None:
    jwt_world.standin.inject("garbage", endpoint="keys")
    with pytest.raises(IdentityProviderError, match="JWKS"):
        async with jwt_world.local(discover_on_startup=True):
            pass


async def test_invalidate_in_local_mode_only_forgets(jwt_world: JwtWorld) -> None:
    token = jwt_world.token()
    async with jwt_world.local() as zitadel:
        await zitadel.verify(token)
        jwt_world.standin.revoke(token)
        await zitadel.invalidate(token)  # nothing can revoke a JWT locally
        assert (await zitadel.verify(token)).verified_by == "jwt"
        assert zitadel.metrics().jwt_verified == 2


async def test_concurrent_first_requests_share_one_fetch(jwt_world: JwtWorld) -> None:
    tokens = [jwt_world.token(f"user{i}") for i in range(20)]
    async with jwt_world.local() as zitadel:
        principals = await asyncio.gather(*(zitadel.verify(token) for token in tokens))
        assert {p.verified_by for p in principals} == {"jwt"}
        assert zitadel.metrics().jwks_fetches == 1
    assert jwt_world.standin.jwks_calls == 1


async def test_closing_cancels_a_fetch_in_flight(jwt_world: JwtWorld) -> None:
    jwt_world.standin.inject("latency", seconds=5, endpoint="keys")
    token = jwt_world.token()
    zitadel = jwt_world.local(cache_ttl=0, timeout=60)
    async with zitadel:
        request = asyncio.ensure_future(zitadel.verify(token))
        await _until(lambda: jwt_world.standin.jwks_calls == 1)
    with pytest.raises(IdentityProviderError, match="closing"):
        await request
    assert zitadel.metrics().in_flight == 0


@pytest.mark.loopback
async def test_a_refused_jwt_keeps_its_reason_in_the_negative_cache(jwt_world: JwtWorld) -> None:
    token = jwt_world.token()
    async with jwt_world.local(audience="another-project") as zitadel:
        reasons = []
        for _ in range(3):
            with pytest.raises(InvalidTokenError) as refused:
                await zitadel.verify(token)
            reasons.append(refused.value.description)
        assert zitadel.metrics().negative_hits == 2
    assert reasons == ["the token is not meant for this API (audience mismatch)"] * 3
