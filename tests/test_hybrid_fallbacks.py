"""Hybrid mode's fallbacks to introspection (an invalidation during a confirmation, a token it
cannot parse, a key not fetched yet): each a test that failed before its fix."""

from __future__ import annotations

import httpx
import pytest

from fastapi_zitadel import InvalidTokenError

from .helpers import HeldIntrospections
from .jwt_support import JwtWorld, settled


async def test_an_invalidation_during_a_confirmation_keeps_the_token_suspect(
    jwt_world: JwtWorld,
) -> None:
    """A confirmation fetched before ``invalidate()`` must not put the token back on the JWT
    path: after a revocation at ZITADEL, the next request is introspected and refused."""
    gate = HeldIntrospections(httpx.AsyncHTTPTransport())
    http = httpx.AsyncClient(transport=gate)
    token = jwt_world.token(lifetime=43_200)
    async with jwt_world.hybrid(http_client=http) as zitadel:
        assert (await zitadel.verify(token)).verified_by == "jwt"
        await gate.until_waiting(1)  # the background confirmation is in flight
        await zitadel.invalidate(token)  # marks the token suspect
        gate.release()  # the confirmation answers "active" (fetched before the invalidation)
        await settled(zitadel)
        jwt_world.standin.revoke(token)
        with pytest.raises(InvalidTokenError, match="not active"):
            await zitadel.verify(token)
        await settled(zitadel)
    await http.aclose()


async def test_a_non_ascii_token_is_an_invalid_token(jwt_world: JwtWorld) -> None:
    header, payload, signature = jwt_world.token().split(".")
    forged = f"{header}.{payload[:-1]}\u00e9.{signature}"
    async with jwt_world.hybrid() as zitadel:
        with pytest.raises(InvalidTokenError):
            await zitadel.verify(forged)
        await settled(zitadel)


async def test_hybrid_introspects_a_token_signed_by_a_key_not_fetched_yet(
    jwt_world: JwtWorld,
) -> None:
    """ZITADEL starts signing with a new web key right after our last JWKS fetch: locally
    the key is unknown until the throttle allows the next fetch, so hybrid mode asks
    introspection instead of answering 401 (and nothing is remembered as inactive)."""
    old = jwt_world.token()
    async with jwt_world.hybrid() as zitadel:
        await zitadel.verify(old)
        await settled(zitadel)
        jwt_world.standin.rotate_signing_key()
        new = jwt_world.token()
        principal = await zitadel.verify(new)
        assert principal.verified_by == "introspection"
        await settled(zitadel)
