"""fastapi_zitadel against panva's oidc-provider, a real and independent authorization server.

Every scenario runs a FastAPI app protected by the library, served over real HTTP on
127.0.0.1 (uvicorn in a thread, so ``caplog`` sees the library's log records), called with
httpx, with tokens issued, introspected and revoked by oidc-provider (see ``server.mjs``).

Client assertion reuse, as read in oidc-provider's source (the version pinned in
package-lock.json; paths inside ``tests/interop/node_modules/oidc-provider/``):

* ``lib/shared/jwt_client_auth.js`` requires a ``jti`` in every client assertion ("unique jti
  (JWT ID) must be provided") and, after the signature and claim checks, calls
  ``provider.ReplayDetection.unique(iss, jti, exp + clockTolerance)``; when that answers
  false it throws ``InvalidClientAuth('client assertion tokens must only be used once')``.
* ``lib/models/replay_detection.js`` remembers ``sha256(iss + jti)`` until the assertion's
  ``exp``: the first use records it, every later use is refused.
* ``lib/helpers/errors.js``: ``InvalidClientAuth`` is HTTP 401 ``invalid_client``.

So oidc-provider does NOT accept a reused ``jti`` (ZITADEL does). With default settings the
library's second introspection, which reuses the cached assertion, is refused with 401
``invalid_client``; the library retries once with a fresh assertion, which passes, logs one
WARNING and signs a fresh assertion for every later call. ``test_reused_assertion_*`` checks
exactly that, and the server's own log line for the refusal.
"""

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from pydantic import BaseModel

from fastapi_zitadel import Principal, ZitadelIntrospection
from fastapi_zitadel.testing import LoopbackServer
from tests.helpers import FakeClock

from .support import (
    ADMIN_CALLER,
    ADMIN_ROLES,
    BASIC_CLIENT_ID,
    BASIC_CLIENT_SECRET,
    HERE,
    JWT_CLIENT_ID,
    KEY_ID,
    PLAIN_CALLER,
    RESOURCE,
    ROLES_CLAIM,
    SHORT_CALLER,
    SHORT_TTL,
    OidcServer,
    new_rsa_key,
    write_key_file,
)

pytestmark = pytest.mark.interop

LOGGER = "fastapi_zitadel"
# oidc-provider's reasons for refusing our client authentication, as server.mjs logs them.
REPLAY_REFUSAL = "client assertion tokens must only be used once"
BAD_SIGNATURE = "invalid_client (signature verification failed)"
BAD_SECRET = "invalid_client (invalid secret provided)"
SWITCH_WARNING = "switching to a new assertion per introspection"


# The protected app -------------------------------------------------------------------------


class InvalidateRequest(BaseModel):
    token: str


@dataclass
class Api:
    """A protected app being served, and an HTTP client for it."""

    zitadel: ZitadelIntrospection
    http: httpx.Client
    seen: list[Principal]

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return self.http.get(path, headers=headers)

    def post(self, path: str, token: str, json: Any = None) -> httpx.Response:
        return self.http.post(path, headers={"Authorization": f"Bearer {token}"}, json=json)


@contextmanager
def serve(zitadel: ZitadelIntrospection) -> Iterator[Api]:
    """Serve an app protected by ``zitadel`` on a loopback port while the block runs."""
    seen: list[Principal] = []
    app = FastAPI()

    @app.get("/items")
    async def list_items(
        principal: Annotated[Principal, Depends(zitadel.require_scope("items:read"))],
    ) -> dict[str, str | None]:
        seen.append(principal)
        return {"client_id": principal.client_id}

    @app.post("/items", dependencies=[Depends(zitadel.require_scope("items:write"))])
    async def add_item() -> dict[str, bool]:
        return {"added": True}

    @app.get("/admin")
    async def admin(
        principal: Annotated[Principal, Depends(zitadel.require_role("admin"))],
    ) -> dict[str, bool]:
        seen.append(principal)
        return {"admin_in_org1": principal.has_role("admin", org_id="org1")}

    # After revoking a token at the server, an operator drops it from the cache at once.
    @app.post(
        "/admin/invalidate",
        status_code=204,
        dependencies=[Depends(zitadel.require_role("admin"))],
    )
    async def invalidate(body: InvalidateRequest) -> None:
        await zitadel.invalidate(body.token)

    zitadel.install(app)
    with LoopbackServer(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        yield Api(zitadel, http, seen)


def with_key(server: OidcServer, key_file: Path, **options: Any) -> ZitadelIntrospection:
    """The library as an API application with a key file (``private_key_jwt``)."""
    return ZitadelIntrospection(server.issuer, key_file=key_file, audience=RESOURCE, **options)


def with_secret(server: OidcServer, secret: str, **options: Any) -> ZitadelIntrospection:
    """The library as a client with a secret (``client_secret_basic``)."""
    return ZitadelIntrospection(
        server.issuer,
        client_id=BASIC_CLIENT_ID,
        client_secret=secret,
        audience=RESOURCE,
        **options,
    )


def library_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


def sleep_until(wall_clock: float) -> None:
    time.sleep(max(0.0, wall_clock - time.time()))


def assert_unavailable(response: httpx.Response) -> None:
    """503 with Retry-After: never a 401, which would make callers discard good tokens."""
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["detail"]["error"] == "temporarily_unavailable"
    assert "WWW-Authenticate" not in response.headers


# 1. An active token ------------------------------------------------------------------------


def test_active_token_with_scope_carries_the_servers_claims(
    oidc_server: OidcServer, key_file: Path
) -> None:
    token = oidc_server.token(ADMIN_CALLER, ("items:read", "items:write"))
    with serve(with_key(oidc_server, key_file)) as api:
        response = api.get("/items", token)
        assert response.status_code == 200, response.text
        assert response.json() == {"client_id": ADMIN_CALLER}
        assert api.post("/items", token).status_code == 200

    [principal] = api.seen
    assert principal.client_id == ADMIN_CALLER
    assert principal.scopes == frozenset({"items:read", "items:write"})
    # oidc-provider sends ``aud`` as a plain string (ZITADEL: an array); the library turns
    # both into a tuple, and the configured audience matched it.
    assert principal.claims["aud"] == RESOURCE
    assert principal.audience == (RESOURCE,)
    assert principal.issuer == oidc_server.issuer
    assert principal.token_type == "Bearer"
    # A client credentials token has no end user: oidc-provider sends no ``sub``.
    assert "sub" not in principal.claims
    assert principal.subject is None
    assert principal.expires_at is not None
    assert principal.issued_at is not None
    lifetime = principal.expires_at - principal.issued_at
    assert lifetime.total_seconds() == 600
    assert principal.claims["active"] is True


# 2. Rejections -----------------------------------------------------------------------------


def test_missing_scope_is_403_and_bad_tokens_are_401(
    oidc_server: OidcServer, key_file: Path
) -> None:
    read_only = oidc_server.token(PLAIN_CALLER, ("items:read",))
    with serve(with_key(oidc_server, key_file)) as api:
        assert api.get("/items", read_only).status_code == 200
        forbidden = api.post("/items", read_only)
        assert forbidden.status_code == 403, forbidden.text
        challenge = forbidden.headers["WWW-Authenticate"]
        assert 'error="insufficient_scope"' in challenge
        assert 'scope="items:write"' in challenge

        garbage = api.get("/items", "this-token-was-never-issued-by-anyone")
        assert garbage.status_code == 401, garbage.text
        assert 'error="invalid_token"' in garbage.headers["WWW-Authenticate"]

        missing = api.get("/items")
        assert missing.status_code == 401
        assert missing.json()["detail"]["error"] == "missing_token"


def test_token_for_another_audience_is_401(oidc_server: OidcServer, key_file: Path) -> None:
    token = oidc_server.token(PLAIN_CALLER)
    zitadel = ZitadelIntrospection(
        oidc_server.issuer, key_file=key_file, audience="urn:fastapi-zitadel:another-api"
    )
    with serve(zitadel) as api:
        response = api.get("/items", token)
    assert response.status_code == 401, response.text
    assert "audience" in response.json()["detail"]["error_description"]


def test_expired_token_is_401(oidc_server: OidcServer, key_file: Path) -> None:
    with serve(with_key(oidc_server, key_file)) as api:
        # Fetched only now that the app is up: the token may have as little as
        # SHORT_TTL - 1 s left (the server counts whole seconds).
        token = oidc_server.token(SHORT_CALLER)
        assert api.get("/items", token).status_code == 200
        [principal] = api.seen
        assert principal.expires_at is not None
        assert principal.issued_at is not None
        assert (principal.expires_at - principal.issued_at).total_seconds() == SHORT_TTL

        # The cache keeps an active answer no longer than the token's ``exp``; after it the
        # server is asked again and answers inactive.
        sleep_until(principal.expires_at.timestamp() + 0.3)
        calls = api.zitadel.introspection_calls
        expired = api.get("/items", token)
        assert expired.status_code == 401, expired.text
        assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]
        assert api.zitadel.introspection_calls > calls


# 3. Revocation -----------------------------------------------------------------------------


def test_revoked_token_passes_while_cached_then_fails(
    oidc_server: OidcServer, key_file: Path
) -> None:
    cache_ttl = 2.0
    # The library's wall clock starts at the real time and moves only by hand, so the cached
    # entry lives exactly until the test says so, however slow the machine. (Our client
    # assertions, dated by it, run at most cache_ttl ahead: within their 5 s back-dating.)
    clock = FakeClock(time.time())
    token = oidc_server.token(PLAIN_CALLER)
    with serve(with_key(oidc_server, key_file, cache_ttl=cache_ttl, clock=clock)) as api:
        assert api.get("/items", token).status_code == 200
        calls = api.zitadel.introspection_calls

        oidc_server.revoke(PLAIN_CALLER, token)
        # Still served from the cache: the documented price of caching (README, cache_ttl).
        assert api.get("/items", token).status_code == 200
        assert api.zitadel.introspection_calls == calls

        clock.advance(cache_ttl + 0.05)
        revoked = api.get("/items", token)
        assert revoked.status_code == 401, revoked.text
        assert api.zitadel.introspection_calls > calls


def test_invalidate_rejects_a_revoked_token_at_once(
    oidc_server: OidcServer, key_file: Path
) -> None:
    admin = oidc_server.token(ADMIN_CALLER)
    token = oidc_server.token(PLAIN_CALLER)
    with serve(with_key(oidc_server, key_file, cache_ttl=60)) as api:
        assert api.get("/items", token).status_code == 200
        oidc_server.revoke(PLAIN_CALLER, token)
        assert api.get("/items", token).status_code == 200  # cached for up to a minute

        invalidated = api.post("/admin/invalidate", admin, json={"token": token})
        assert invalidated.status_code == 204, invalidated.text
        revoked = api.get("/items", token)
        assert revoked.status_code == 401, revoked.text
        assert api.get("/items", admin).status_code == 200  # other entries are untouched


# 4. Our own key rejected -------------------------------------------------------------------


def test_wrong_key_is_503_with_one_error_naming_the_key(
    oidc_server: OidcServer, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with serve(with_key(oidc_server, key_file)) as api:
        assert api.get("/items", oidc_server.token(PLAIN_CALLER)).status_code == 200

    # The key is replaced by one the server does not know: same key id and client id.
    write_key_file(key_file, new_rsa_key())
    refusals_before = oidc_server.stderr().count(BAD_SIGNATURE)
    with serve(with_key(oidc_server, key_file)) as api:
        for _ in range(3):
            assert_unavailable(api.get("/items", oidc_server.token(PLAIN_CALLER)))
        # A rejected assertion is discarded, so each request signs a new one and is refused
        # once: one call per request, no futile retry doubling the load on the server.
        assert api.zitadel.introspection_calls == 3

    errors = library_records(caplog, logging.ERROR)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert KEY_ID in message
    assert JWT_CLIENT_ID in message
    assert "invalid_client" in message
    assert oidc_server.stderr().count(BAD_SIGNATURE) == refusals_before + 3


# 5. Reusing the client assertion -----------------------------------------------------------


def test_reused_assertion_is_refused_once_then_fresh_ones_are_used(
    oidc_server: OidcServer, key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    tokens = [oidc_server.token(PLAIN_CALLER) for _ in range(4)]
    refusals_before = oidc_server.stderr().count(REPLAY_REFUSAL)
    zitadel = with_key(oidc_server, key_file)  # default settings: the assertion is reused
    assert zitadel.config.single_use_assertion is False
    with serve(zitadel) as api:
        for token in tokens:
            response = api.get("/items", token)
            assert response.status_code == 200, response.text

    # oidc-provider refuses the second use of a jti (see the module docstring): one refusal,
    # one retry with a fresh assertion, one WARNING, and single-use from then on.
    warnings = [r.getMessage() for r in library_records(caplog, logging.WARNING)]
    assert len(warnings) == 1, warnings
    assert SWITCH_WARNING in warnings[0]
    assert KEY_ID in warnings[0]
    assert library_records(caplog, logging.ERROR) == []
    assert zitadel.introspection_calls == len(tokens) + 1
    assert oidc_server.stderr().count(REPLAY_REFUSAL) == refusals_before + 1


# 6. client_secret_basic --------------------------------------------------------------------


def test_client_secret_basic(oidc_server: OidcServer) -> None:
    token = oidc_server.token(PLAIN_CALLER)
    with serve(with_secret(oidc_server, BASIC_CLIENT_SECRET)) as api:
        response = api.get("/items", token)
        assert response.status_code == 200, response.text
        assert api.get("/items", "not-a-token").status_code == 401
    [principal] = api.seen
    assert principal.client_id == PLAIN_CALLER
    assert principal.audience == (RESOURCE,)


def test_wrong_client_secret_is_503_never_401(
    oidc_server: OidcServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    refusals_before = oidc_server.stderr().count(BAD_SECRET)
    with serve(with_secret(oidc_server, "not-the-secret")) as api:
        for _ in range(2):
            assert_unavailable(api.get("/items", oidc_server.token(PLAIN_CALLER)))
        assert api.zitadel.introspection_calls == 2  # a secret is never retried
    assert oidc_server.stderr().count(BAD_SECRET) == refusals_before + 2
    errors = library_records(caplog, logging.ERROR)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert BASIC_CLIENT_ID in errors[0].getMessage()
    assert library_records(caplog, logging.WARNING) == []


# 7. ZITADEL's role claim -------------------------------------------------------------------


def test_role_claim_reaches_the_principal(oidc_server: OidcServer, key_file: Path) -> None:
    admin = oidc_server.token(ADMIN_CALLER)
    plain = oidc_server.token(PLAIN_CALLER)
    with serve(with_key(oidc_server, key_file)) as api:
        response = api.get("/admin", admin)
        assert response.status_code == 200, response.text
        assert response.json() == {"admin_in_org1": True}
        denied = api.get("/admin", plain)
        assert denied.status_code == 403, denied.text
        assert 'error="insufficient_scope"' in denied.headers["WWW-Authenticate"]

    [principal] = api.seen
    assert principal.claims[ROLES_CLAIM] == ADMIN_ROLES
    assert principal.roles == ADMIN_ROLES
    assert principal.has_role("admin", org_id="org1")
    assert not principal.has_role("admin", org_id="org2")
    assert principal.roles_in_org("org1") == frozenset({"admin"})


# The record ---------------------------------------------------------------------------------


def test_compatibility_record_names_the_pinned_version(oidc_server: OidcServer) -> None:
    record = (HERE / "COMPATIBILITY.md").read_text()
    assert re.search(rf"\|\s*oidc-provider\s*\|\s*{re.escape(oidc_server.version)}\s*\|", record)
    assert oidc_server.metadata["issuer"] == oidc_server.issuer
