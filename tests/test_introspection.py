"""The engine end to end against the in-process ZITADEL stand-in: every outcome, the caches,
single flight, revocation and the reused-assertion fallback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from fastapi_zitadel import (
    ClientCredentialsRejected,
    IdentityProviderUnavailable,
    InvalidTokenError,
    ZitadelIntrospection,
)
from fastapi_zitadel.cache import MemoryCache

from .helpers import STANDIN_ISSUER as ISSUER
from .helpers import World


@pytest.fixture
async def zitadel(world: World) -> AsyncIterator[ZitadelIntrospection]:
    async with world.client() as client:
        yield client


async def test_active_token_gives_principal(world: World, zitadel: ZitadelIntrospection) -> None:
    token = world.token(
        scopes=[
            "openid",
            "profile",
            "email",
            "items:read",
            "urn:zitadel:iam:user:resourceowner",
            "urn:zitadel:iam:user:metadata",
        ]
    )
    principal = await zitadel.verify(token)
    assert principal.subject == world.user.id
    assert principal.username == "alice"
    assert principal.name == "Alice A."
    assert principal.email == "alice@acme.localhost"
    assert principal.email_verified is True
    assert principal.locale is None
    assert principal.has_scope("items:read")
    assert principal.issuer == ISSUER
    assert world.app.client_id in principal.audience
    assert world.project.id in principal.audience
    assert principal.organization is not None
    assert principal.organization.primary_domain == "acme.localhost"
    assert principal.has_role("admin", org_id=world.user.org.id)
    assert principal.roles_in_org(world.user.org.id) == {"admin", "reader"}
    assert principal.metadata["tier"] == b"gold"
    assert principal.expires_at is not None
    assert world.standin.introspection_calls == 1


async def test_cache_hit_needs_no_introspection(
    world: World, zitadel: ZitadelIntrospection
) -> None:
    token = world.token()
    first = await zitadel.verify(token)
    second = await zitadel.verify(token)
    assert first is second
    assert world.standin.introspection_calls == 1
    assert zitadel.introspection_calls == 1


async def test_unknown_token_is_invalid_and_negatively_cached(
    world: World, zitadel: ZitadelIntrospection
) -> None:
    for _ in range(3):
        with pytest.raises(InvalidTokenError):
            await zitadel.verify("not-a-real-token")
    assert world.standin.introspection_calls == 1
    world.clock.advance(6)  # past the default negative TTL of 5 s
    with pytest.raises(InvalidTokenError):
        await zitadel.verify("not-a-real-token")
    assert world.standin.introspection_calls == 2


async def test_negative_cache_can_be_off(world: World) -> None:
    async with world.client(negative_cache_ttl=0) as zitadel:
        for _ in range(3):
            with pytest.raises(InvalidTokenError):
                await zitadel.verify("unknown")
    assert world.standin.introspection_calls == 3


async def test_revoked_token_fails_after_cache_lifetime(
    world: World, zitadel: ZitadelIntrospection
) -> None:
    token = world.token()
    await zitadel.verify(token)
    world.standin.revoke(token)
    await zitadel.verify(token)  # still cached: the documented revocation delay
    world.clock.advance(61)
    with pytest.raises(InvalidTokenError):
        await zitadel.verify(token)


async def test_invalidate_forgets_at_once(world: World, zitadel: ZitadelIntrospection) -> None:
    token = world.token()
    await zitadel.verify(token)
    world.standin.revoke(token)
    await zitadel.invalidate(token)
    with pytest.raises(InvalidTokenError):
        await zitadel.verify(token)


async def test_clear_forgets_everything(world: World, zitadel: ZitadelIntrospection) -> None:
    token = world.token()
    await zitadel.verify(token)
    await zitadel.clear()
    await zitadel.verify(token)
    assert world.standin.introspection_calls == 2


async def test_entry_never_outlives_token_exp(world: World) -> None:
    async with world.client(cache_ttl=3600) as zitadel:
        token = world.token(lifetime=30)
        await zitadel.verify(token)
        world.clock.advance(29)
        await zitadel.verify(token)
        assert world.standin.introspection_calls == 1
        world.clock.advance(2)
        with pytest.raises(InvalidTokenError):
            await zitadel.verify(token)
    assert world.standin.introspection_calls == 2


async def test_cache_ttl_zero_introspects_every_time(world: World) -> None:
    async with world.client(cache_ttl=0) as zitadel:
        token = world.token()
        await zitadel.verify(token)
        await zitadel.verify(token)
    assert world.standin.introspection_calls == 2


async def test_audience_must_match_when_configured(world: World) -> None:
    token = world.token()
    async with world.client(audience=world.project.id) as zitadel:
        assert (await zitadel.verify(token)).subject == world.user.id
    async with world.client(audience="some-other-project,another") as zitadel:
        with pytest.raises(InvalidTokenError, match="audience"):
            await zitadel.verify(token)


async def test_token_for_another_project_is_inactive(
    world: World, zitadel: ZitadelIntrospection
) -> None:
    other = world.standin.add_project("other")
    token = world.standin.issue_token(world.user, other)
    with pytest.raises(InvalidTokenError):
        await zitadel.verify(token)


async def test_oversized_or_empty_token_never_reaches_idp(
    world: World, zitadel: ZitadelIntrospection
) -> None:
    for token in ("", "a" * 4097):
        with pytest.raises(InvalidTokenError):
            await zitadel.verify(token)
    assert world.standin.introspection_calls == 0


async def test_client_secret_basic(world: World) -> None:
    basic_app = world.standin.add_api_app(world.project, "basic-api", auth="basic")
    assert basic_app.client_secret is not None
    async with world.client(
        key_file=None, client_id=basic_app.client_id, client_secret=basic_app.client_secret
    ) as zitadel:
        principal = await zitadel.verify(world.token())
    assert principal.subject == world.user.id


async def test_wrong_key_is_credentials_rejected_not_invalid_token(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    forged = world.forged_key_file()
    caplog.set_level(logging.ERROR, logger="fastapi_zitadel")
    async with world.client(key_file=forged) as zitadel:
        for _ in range(3):
            with pytest.raises(ClientCredentialsRejected) as info:
                await zitadel.verify(world.token())
    assert info.value.error_code == "unauthorized_client"
    assert info.value.status == 400
    assert info.value.retry_after is not None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # one actionable line, not one per request
    assert world.app.key_file["keyId"] in errors[0]
    assert "unauthorized_client" in errors[0]


async def test_server_rejecting_reused_jti_switches_to_single_use(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.standin.track_jti = True
    async with world.client() as zitadel:
        await zitadel.verify(world.token())
        await zitadel.verify(world.token())  # reused assertion rejected, fresh one accepted
        await zitadel.verify(world.token())
        await zitadel.verify(world.token())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "fresh" in warnings[0].getMessage()
    # 4 verifications, one of them needed a second request.
    assert world.standin.introspection_calls == 5


async def test_single_flight_100_concurrent_callers_one_call(world: World) -> None:
    world.standin.inject("latency", seconds=0.05)
    async with world.client() as zitadel:
        token = world.token()
        principals = await asyncio.gather(*(zitadel.verify(token) for _ in range(100)))
    assert world.standin.introspection_calls == 1
    assert len({id(p) for p in principals}) == 1


async def test_single_flight_shares_failures(world: World) -> None:
    world.standin.inject("status", status=500, times=None)
    async with world.client(max_retries=1) as zitadel:
        results = await asyncio.gather(
            *(zitadel.verify(world.token()) for _ in range(1)),
            *(zitadel.verify("same-token") for _ in range(100)),
            return_exceptions=True,
        )
    assert all(isinstance(r, IdentityProviderUnavailable) for r in results)
    # two distinct tokens, each tried twice (one retry)
    assert world.standin.introspection_calls == 4


async def test_negative_entries_never_evict_active_ones(world: World) -> None:
    async with world.client(cache_max_size=10, negative_cache_max_size=5) as zitadel:
        token = world.token()
        await zitadel.verify(token)
        for index in range(200):
            with pytest.raises(InvalidTokenError):
                await zitadel.verify(f"garbage-{index}")
        calls = world.standin.introspection_calls
        await zitadel.verify(token)
        assert world.standin.introspection_calls == calls


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        ("status", {"status": 503}),
        ("status", {"status": 502}),
        ("rate_limit", {"seconds": 0}),
        ("drop", {}),
    ],
)
async def test_transient_faults_are_retried(
    world: World, fault: Any, options: dict[str, Any]
) -> None:
    world.standin.inject(fault, **options)
    async with world.client() as zitadel:
        principal = await zitadel.verify(world.token())
    assert principal.subject == world.user.id
    assert world.standin.introspection_calls == 2


async def test_persistent_5xx_is_unavailable_after_bounded_retries(world: World) -> None:
    world.standin.inject("status", status=500, times=None)
    async with world.client(max_retries=2) as zitadel:
        with pytest.raises(IdentityProviderUnavailable) as info:
            await zitadel.verify(world.token())
    assert "500" in info.value.description
    assert info.value.retry_after is not None
    assert world.standin.introspection_calls == 3


async def test_rate_limit_keeps_retry_after(world: World) -> None:
    world.standin.inject("rate_limit", seconds=120, times=None)
    async with world.client() as zitadel:
        with pytest.raises(IdentityProviderUnavailable) as info:
            await zitadel.verify(world.token())
    assert info.value.retry_after == 120
    assert world.standin.introspection_calls == 1  # waiting 120 s would blow the deadline


async def test_garbage_body_is_unavailable(world: World) -> None:
    world.standin.inject("garbage")
    async with world.client() as zitadel:
        with pytest.raises(IdentityProviderUnavailable, match="not JSON"):
            await zitadel.verify(world.token())


async def test_internal_error_answered_inactive_is_only_briefly_cached(world: World) -> None:
    world.standin.inject("inactive")
    async with world.client() as zitadel:
        token = world.token()
        with pytest.raises(InvalidTokenError):
            await zitadel.verify(token)
        world.clock.advance(6)
        assert (await zitadel.verify(token)).subject == world.user.id


async def test_slow_idp_hits_the_deadline(world: World) -> None:
    world.standin.inject("latency", seconds=5, times=None)
    async with world.client(timeout=0.3) as zitadel:
        # The 0.3 s deadline ends the wait (the message names it), not the answer 5 s later.
        with pytest.raises(
            IdentityProviderUnavailable, match=r"(timed out after|did not answer within) 0\.3 s"
        ):
            await zitadel.verify(world.token())
        assert zitadel.metrics().idp_calls["unavailable"] == 1


# Outcomes that need a hand-made answer -----------------------------------------------------


def _mock_client(
    introspection: httpx.Response | Exception, *, calls: list[httpx.Request] | None = None
) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(request)
        if isinstance(introspection, Exception):
            raise introspection
        return introspection

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def _engine(app_key: dict[str, Any], client: httpx.AsyncClient) -> ZitadelIntrospection:
    return ZitadelIntrospection(
        "https://zitadel.example.test",
        key_file=app_key,
        introspection_endpoint="https://zitadel.example.test/oauth/v2/introspect",
        http_client=client,
        max_retries=1,
    )


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(200, json=[1, 2]), "boolean 'active'"),
        (httpx.Response(200, json={"active": "true"}), "boolean 'active'"),
        (httpx.Response(200, json={"scope": "x"}), "boolean 'active'"),
        (httpx.Response(200, text='{"active": tr'), "not JSON|not valid JSON"),
        (
            httpx.Response(
                200, content=b'{"active": true}', headers={"Content-Type": "text/plain"}
            ),
            "content type",
        ),
        (httpx.Response(200, content=b" " * (1024 * 1024 + 10)), "exceeds"),
        (httpx.Response(200, json={"active": True, "exp": "tomorrow"}), "exp"),
        (httpx.Response(200, json={"active": True, "aud": 7}), "aud"),
        (httpx.Response(200, json={"active": True, "sub": {"id": 1}}), "sub"),
        (httpx.Response(400, json={"error": "invalid_request"}), "400 invalid_request"),
        (httpx.Response(404, text="not found"), "404"),
        (httpx.Response(302, headers={"Location": "https://elsewhere"}), "302"),
    ],
)
async def test_unusable_answers_are_idp_faults(
    app_key: dict[str, Any], response: httpx.Response, message: str
) -> None:
    async with _engine(app_key, _mock_client(response)) as zitadel:
        with pytest.raises(IdentityProviderUnavailable, match=message):
            await zitadel.verify("some-token")


async def test_deep_nesting_is_an_idp_fault(app_key: dict[str, Any]) -> None:
    body = b'{"active": true, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = httpx.Response(200, content=body, headers={"Content-Type": "application/json"})
    async with _engine(app_key, _mock_client(response)) as zitadel:
        with pytest.raises(IdentityProviderUnavailable):
            await zitadel.verify("some-token")


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, "unauthorized_client"), (401, "invalid_client"), (400, "invalid_client")],
)
async def test_credential_errors_are_classified(
    app_key: dict[str, Any], status: int, error: str
) -> None:
    response = httpx.Response(status, json={"error": error})
    async with _engine(app_key, _mock_client(response)) as zitadel:
        with pytest.raises(ClientCredentialsRejected) as info:
            await zitadel.verify("some-token")
    assert (info.value.status, info.value.error_code) == (status, error)


async def test_connect_error_is_retried_then_unavailable(app_key: dict[str, Any]) -> None:
    calls: list[httpx.Request] = []
    failing = _mock_client(httpx.ConnectError("refused"), calls=calls)
    async with _engine(app_key, failing) as zitadel:
        with pytest.raises(IdentityProviderUnavailable, match="unreachable"):
            await zitadel.verify("some-token")
    assert len(calls) == 2


async def test_request_shape(app_key: dict[str, Any]) -> None:
    calls: list[httpx.Request] = []
    client = _mock_client(httpx.Response(200, json={"active": False}), calls=calls)
    async with _engine(app_key, client) as zitadel:
        with pytest.raises(InvalidTokenError):
            await zitadel.verify("tok en+/=")
    request = calls[0]
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = dict(httpx.QueryParams(request.content.decode()))
    assert form["token"] == "tok en+/="
    assert form["client_assertion_type"].endswith("jwt-bearer")
    assert "client_assertion" in form


async def test_shared_cache_never_crosses_audiences(world: World) -> None:
    shared = MemoryCache(max_size=100, clock=world.clock)
    token = world.token()
    async with world.client(cache=shared) as lenient:
        await lenient.verify(token)
    async with world.client(cache=shared, audience="another-project") as strict:
        with pytest.raises(InvalidTokenError, match="audience"):
            await strict.verify(token)


async def test_invalidate_during_lookup_is_not_undone(app_key: dict[str, Any]) -> None:
    answers: list[dict[str, Any]] = [{"active": True, "sub": "u"}, {"active": False}]
    travelling = asyncio.Event()  # the active answer is on its way
    revoked = asyncio.Event()  # the test has invalidated the token meanwhile

    async def slow_then_revoked(request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if answer["active"]:
            travelling.set()
            await revoked.wait()  # the token is revoked while this answer travels
        return httpx.Response(200, json=answer)

    client = httpx.AsyncClient(transport=httpx.MockTransport(slow_then_revoked))
    async with _engine(app_key, client) as zitadel:
        lookup = asyncio.ensure_future(zitadel.verify("token"))
        await travelling.wait()
        await zitadel.invalidate("token")
        revoked.set()
        assert (await lookup).subject == "u"  # began before the revocation
        with pytest.raises(InvalidTokenError):
            await zitadel.verify("token")  # its answer was not cached


async def test_issuer_mismatch_is_our_misconfiguration_not_a_bad_token(
    app_key: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    response = httpx.Response(200, json={"active": True, "iss": "https://zitadel.example.test:443"})
    async with _engine(app_key, _mock_client(response)) as zitadel:
        for _ in range(3):
            with pytest.raises(IdentityProviderUnavailable, match="issuer"):
                await zitadel.verify("some-token")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "ZITADEL_ISSUER" in errors[0]


async def test_retry_after_5xx_signs_a_fresh_assertion(app_key: dict[str, Any]) -> None:
    """A server that records the jti and then fails must not see the same assertion again."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assertion = dict(httpx.QueryParams(request.content.decode()))["client_assertion"]
        if assertion in seen:
            return httpx.Response(400, json={"error": "invalid_client"})
        seen.append(assertion)
        if len(seen) == 1:
            return httpx.Response(503, json={"error": "overloaded"})
        return httpx.Response(200, json={"active": True, "sub": "u"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with _engine(app_key, client) as zitadel:
        assert (await zitadel.verify("some-token")).subject == "u"
    assert len(seen) == 2


def test_credentials_repr_hides_secrets() -> None:
    from fastapi_zitadel._credentials.client_auth import ClientSecretBasic

    credentials = ClientSecretBasic("api", "hunter2").credentials()
    assert "Basic" not in repr(credentials)


async def test_concurrent_first_requests_on_a_jti_tracking_server(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.standin.track_jti = True
    world.standin.inject("latency", seconds=0.05, times=8)
    async with world.client() as zitadel:
        principals = await asyncio.gather(*(zitadel.verify(world.token()) for _ in range(8)))
    assert all(p.subject == world.user.id for p in principals)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_nesting_deep_enough_to_parse_but_not_to_walk(app_key: dict[str, Any]) -> None:
    body = b'{"active": true, "x": ' + b"[" * 900 + b"]" * 900 + b"}"
    response = httpx.Response(200, content=body, headers={"Content-Type": "application/json"})
    async with _engine(app_key, _mock_client(response)) as zitadel:
        with pytest.raises(IdentityProviderUnavailable, match="nested too deeply"):
            await zitadel.verify("some-token")


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"audience": "another-project"}, "audience mismatch"),
        ({"allowed_client_ids": "another-app"}, "issued to a client this API does not accept"),
    ],
)
async def test_every_refusal_of_a_token_gives_the_first_reason(
    world: World, options: dict[str, Any], reason: str
) -> None:
    """The negative cache remembers why: the second request within negative_cache_ttl hears
    the same reason and detail as the first, never "not active"."""
    token = world.token()
    async with world.client(**options) as zitadel:
        refusals = []
        for _ in range(3):
            with pytest.raises(InvalidTokenError) as refused:
                await zitadel.verify(token)
            refusals.append((refused.value.description, refused.value.detail))
    assert reason in refusals[0][0]
    assert refusals[0][1] is not None
    assert refusals == [refusals[0]] * 3
    assert world.standin.introspection_calls == 1  # the later ones came from the cache


async def test_a_rejected_client_secret_is_logged_without_a_key_id(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    basic_app = world.standin.add_api_app(world.project, "basic-api", auth="basic")
    caplog.set_level(logging.ERROR, logger="fastapi_zitadel")
    async with world.client(
        key_file=None, client_id=basic_app.client_id, client_secret="not-its-secret"
    ) as zitadel:
        with pytest.raises(ClientCredentialsRejected):
            await zitadel.verify(world.token())
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"for client {basic_app.client_id}, a client secret." in errors[0]
    assert "key id" not in errors[0]
    assert "not-its-secret" not in errors[0]
