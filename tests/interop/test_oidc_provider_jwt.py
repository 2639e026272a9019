"""Local JWT verification and hybrid mode against panva's oidc-provider, over real HTTP.

With a resource indicator whose access token format is ``jwt`` (``resource=`` in the token
request, see ``server.mjs``), oidc-provider issues RFC 9068 JWT access tokens: header
``typ: at+jwt``, RS256 with the key it publishes at ``jwks_uri``, claims ``iss``, ``sub``,
``aud`` (the resource, a string), ``client_id``, ``scope``, ``jti``, ``iat``, ``exp`` and our
extra claims. The library verifies them locally (``validation="local"``: no credentials, no
introspection).

Hybrid mode against it: oidc-provider refuses to introspect (or revoke) its JWT access tokens
on purpose (``lib/shared/reject_structured_tokens.js``: 400 ``unsupported_token_type``,
"Structured JWT Tokens cannot be introspected"), unlike ZITADEL, which introspects its JWTs
like its opaque tokens. So a JWT is served from its local verification and its background
confirmation fails without harm: ``zitadel.introspected`` answers 503 (never 401), the
circuit breaker stays closed (the IdP answered), and opaque tokens are introspected as ever.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI

from fastapi_zitadel import InvalidTokenError, Principal, ZitadelIntrospection
from fastapi_zitadel.testing import LoopbackServer

from .support import ADMIN_CALLER, ADMIN_ROLES, JWT_RESOURCE, RESOURCE, OidcServer

pytestmark = pytest.mark.interop


class Later:
    """The wall clock, ``offset`` seconds ahead: a token's expiry without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@contextmanager
def serve(zitadel: ZitadelIntrospection) -> Iterator[httpx.Client]:
    """``/items`` behind ``zitadel`` (scope items:read), ``/admin`` behind the admin role,
    ``/confirmed`` behind ``zitadel.introspected``; each answers how it was verified."""
    app = FastAPI()

    def describe(principal: Principal) -> dict[str, Any]:
        return {
            "verified_by": principal.verified_by,
            "client_id": principal.client_id,
            "subject": principal.subject,
            "scopes": sorted(principal.scopes),
            "admin": principal.has_role("admin", org_id="org1"),
        }

    @app.get("/items")
    async def items(
        principal: Annotated[Principal, Depends(zitadel.require_scope("items:read"))],
    ) -> dict[str, Any]:
        return describe(principal)

    @app.get("/admin")
    async def admin(
        principal: Annotated[Principal, Depends(zitadel.require_role("admin"))],
    ) -> dict[str, Any]:
        return describe(principal)

    @app.get("/confirmed")
    async def confirmed(
        principal: Annotated[Principal, Depends(zitadel.introspected)],
    ) -> dict[str, Any]:
        return describe(principal)

    zitadel.install(app)
    with LoopbackServer(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_oidc_providers_jwt_access_tokens_are_rfc_9068(oidc_server: OidcServer) -> None:
    token = oidc_server.token(ADMIN_CALLER, resource=JWT_RESOURCE)
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == JWT_RESOURCE
    assert claims["client_id"] == ADMIN_CALLER
    assert claims["iss"] == oidc_server.issuer


def test_local_verification_of_oidc_providers_jwts(oidc_server: OidcServer) -> None:
    token = oidc_server.token(ADMIN_CALLER, resource=JWT_RESOURCE)
    opaque = oidc_server.token(ADMIN_CALLER)  # the opaque resource
    clock = Later()
    zitadel = ZitadelIntrospection(
        oidc_server.issuer, validation="local", audience=JWT_RESOURCE, clock=clock
    )
    assert zitadel.client is None  # no credentials at all
    with serve(zitadel) as api:
        answer = api.get("/items", headers=bearer(token))
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "verified_by": "jwt",
            "client_id": ADMIN_CALLER,
            "subject": ADMIN_CALLER,  # oidc-provider: sub is the client for this grant
            "scopes": ["items:read", "items:write"],
            "admin": True,
        }
        assert api.get("/admin", headers=bearer(token)).status_code == 200
        refused = api.get("/items", headers=bearer(opaque))
        assert refused.status_code == 401
        assert "opaque tokens need introspection" in refused.json()["detail"]["error_description"]
        tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        tampered_answer = api.get("/items", headers=bearer(tampered))
        assert tampered_answer.status_code == 401, (token[-8:], tampered[-8:], tampered_answer.text)
        clock.offset = 700  # past a new token's exp (600 s) and the leeway (5 s)
        zitadel_later = api.get(
            "/items", headers=bearer(oidc_server.token(ADMIN_CALLER, resource=JWT_RESOURCE))
        )
        assert zitadel_later.status_code == 401
        assert "expired" in zitadel_later.json()["detail"]["error_description"]
    metrics = zitadel.metrics()
    assert metrics.jwks_fetches == 1
    assert metrics.idp_calls["active"] == metrics.idp_calls["inactive"] == 0


def test_a_jwt_for_another_resource_is_refused_locally(oidc_server: OidcServer) -> None:
    token = oidc_server.token(ADMIN_CALLER, resource=JWT_RESOURCE)
    zitadel = ZitadelIntrospection(oidc_server.issuer, validation="local", audience=RESOURCE)
    with serve(zitadel) as api:
        answer = api.get("/items", headers=bearer(token))
    assert answer.status_code == 401
    assert "audience" in answer.json()["detail"]["error_description"]


def test_hybrid_against_oidc_provider(
    oidc_server: OidcServer, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    zitadel = ZitadelIntrospection(
        oidc_server.issuer,
        validation="hybrid",
        key_file=key_file,
        audience=[JWT_RESOURCE, RESOURCE],
        cache_ttl=0,  # every request a first one: a confirmation each time
    )
    opaque = oidc_server.token(ADMIN_CALLER)
    with serve(zitadel) as api:
        for _ in range(8):  # more than circuit_breaker_threshold (5)
            token = oidc_server.token(ADMIN_CALLER, resource=JWT_RESOURCE)
            served = api.get("/items", headers=bearer(token))
            assert served.status_code == 200, served.text
            assert served.json()["verified_by"] == "jwt"
            cannot_confirm = api.get("/confirmed", headers=bearer(token))
            assert cannot_confirm.status_code == 503, cannot_confirm.text
            assert int(cannot_confirm.headers["Retry-After"]) >= 1
        assert zitadel.circuit_state == "closed"
        answer = api.get("/admin", headers=bearer(opaque))
        assert answer.status_code == 200, answer.text
        assert answer.json()["verified_by"] == "introspection"
    assert "Structured JWT Tokens cannot be introspected" in oidc_server.stderr() or (
        "unsupported_token_type" in oidc_server.stderr()
    )
    assert any(
        "does not introspect this kind of token" in record.getMessage()
        for record in caplog.records
        if record.name == "fastapi_zitadel"
    )


def test_hybrid_still_introspects_opaque_tokens(oidc_server: OidcServer, key_file: Path) -> None:
    zitadel = ZitadelIntrospection(
        oidc_server.issuer, validation="hybrid", key_file=key_file, audience=RESOURCE
    )
    opaque = oidc_server.token(ADMIN_CALLER)
    with serve(zitadel) as api:
        answer = api.get("/admin", headers=bearer(opaque))
        assert answer.status_code == 200, answer.text
        assert answer.json()["verified_by"] == "introspection"
    assert zitadel.metrics().jwt_verified == 0
    assert ADMIN_ROLES == {"admin": {"org1": "acme.localhost"}}


async def test_verify_directly_in_local_mode(oidc_server: OidcServer) -> None:
    token = oidc_server.token(ADMIN_CALLER, resource=JWT_RESOURCE)
    async with ZitadelIntrospection(
        oidc_server.issuer, validation="local", audience=JWT_RESOURCE, discover_on_startup=True
    ) as zitadel:
        keys = await zitadel.signing_keys()
        assert "RS256" in {key["algorithm"] for key in keys}
        principal = await zitadel.verify(token)
        assert principal.verified_by == "jwt"
        with pytest.raises(InvalidTokenError):
            await zitadel.verify(token + "x")
