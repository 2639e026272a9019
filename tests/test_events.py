"""ZITADEL's events (Actions v2): the receiver refuses what it cannot verify, and each event
type it acts on takes effect in every mode, against the stand-in on a loopback port.

The stand-in keeps answering "active" for the tokens here: whatever refuses them is the
event's marker, nothing else. Calls are signed here with hmac directly (not with the
library's signer), so a mistake on one side cannot hide behind the same one on the other."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.routing import Route

from fastapi_zitadel import (
    ConfigurationError,
    InvalidTokenError,
    ZitadelIntrospection,
    ZitadelMiddleware,
)

from .events_support import (
    KEY,
    MODES,
    OTHER_KEY,
    PATH,
    app_for,
    claims_of,
    event,
    instance,
    sign,
)
from .helpers import ISSUER, FakeClock, HeldIntrospections, active_claims
from .jwt_support import JwtWorld, compact, settled

pytestmark = pytest.mark.loopback  # the stand-in serves on a loopback port


@asynccontextmanager
async def served(zitadel: ZitadelIntrospection) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_for(zitadel))
    async with zitadel, httpx.AsyncClient(transport=transport, base_url="http://api.test") as c:
        yield c


async def post_event(
    client: httpx.AsyncClient, clock: Callable[[], float], body: dict[str, Any], key: str = KEY
) -> httpx.Response:
    data = json.dumps(body).encode()
    return await client.post(PATH, content=data, headers=sign(data, key, int(clock())))


async def status(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get("/me", headers={"Authorization": f"Bearer {token}"})).status_code


# The receiver --------------------------------------------------------------------------------
def test_settings_validated_and_the_key_never_shown(jwt_world: JwtWorld) -> None:
    zitadel = jwt_world.local(events_signing_key=f"{KEY}, {OTHER_KEY}")
    assert KEY not in repr(zitadel.config)
    assert KEY not in repr(zitadel.events_app)
    with pytest.raises(ConfigurationError, match="events_signing_key") as refused:
        jwt_world.local(events_signing_key=f"{KEY},,")
    assert KEY not in str(refused.value)
    with pytest.raises(ConfigurationError, match="events_signing_key"):
        _ = jwt_world.local().events_app
    with pytest.raises(ConfigurationError, match="events_path"):
        jwt_world.local(events_signing_key=KEY, events_path="no-slash")


async def test_the_receiver_is_outside_openapi_and_needs_no_bearer(jwt_world: JwtWorld) -> None:
    zitadel = jwt_world.local(events_signing_key=KEY)
    app = app_for(zitadel)
    assert PATH not in app.openapi()["paths"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        answer = await post_event(client, jwt_world.clock, event("user.unlocked", "u1", 0))
        assert answer.status_code == 200
        assert answer.json() == {"status": "ignored"}
        assert (await client.get(PATH)).status_code == 405
    assert zitadel.metrics().events_ignored == 1


async def test_the_receiver_is_not_behind_app_wide_dependencies(jwt_world: JwtWorld) -> None:
    zitadel = jwt_world.local(events_signing_key=KEY)
    app = FastAPI(dependencies=[Depends(zitadel)])  # every operation needs a token...
    zitadel.install(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        answer = await post_event(client, jwt_world.clock, event("user.unlocked", "u1", 0))
    assert answer.status_code == 200  # ...but ZITADEL's signed calls carry none


async def test_refused_calls_change_nothing_and_never_log_the_body(
    jwt_world: JwtWorld, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fastapi_zitadel")
    token = jwt_world.token()
    sub = claims_of(token)["sub"]
    now = jwt_world.clock()
    secret_word = "do-not-log-this-body"
    zitadel = jwt_world.local(events_signing_key=KEY, events_max_body=2048)
    async with served(zitadel) as client:
        assert await status(client, token) == 200
        body = event("user.deactivated", sub, now, payload={"note": secret_word})
        data = json.dumps(body).encode()
        t = int(now)
        cases = [
            ({"Content-Type": "application/json"}, data, 401),  # unsigned
            (sign(data, "forged-key", t), data, 401),  # forged
            (sign(data, KEY, t - 301), data, 401),  # stale
            (sign(data, KEY, t + 301), data, 401),  # from the future
            ({"ZITADEL-Signature": "t=1,v1=xyz"}, data, 401),  # malformed header
            (sign(b"{nope", KEY, t), b"{nope", 400),  # signed, not JSON
            (sign(b'{"event_type":"x"}', KEY, t), b'{"event_type":"x"}', 400),  # not an event
            (sign(b"x" * 4096, KEY, t), b"x" * 4096, 413),  # oversized
        ]
        for headers, content, expected in cases:
            answer = await client.post(PATH, content=content, headers=headers)
            assert answer.status_code == expected, headers
        assert await status(client, token) == 200  # nothing applied
        metrics = zitadel.metrics()
        assert metrics.events_received == len(cases)  # every call counted, refused or not
        assert metrics.events_applied == 0
        assert metrics.events_refused == {
            "missing": 1,
            "mismatch": 1,
            "stale": 2,
            "malformed": 3,
            "oversized": 1,
        }
        # a replay of a good call within the maximum age: applied once, then refused
        assert (
            await client.post(PATH, content=data, headers=sign(data, KEY, t))
        ).status_code == 200
        replay = await client.post(PATH, content=data, headers=sign(data, KEY, t))
        assert replay.status_code == 401
        assert zitadel.metrics().events_applied == 1
        assert zitadel.metrics().events_refused["replayed"] == 1
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert secret_word not in logged
    assert KEY not in logged


async def test_a_body_larger_than_the_cap_is_not_read_past_it(jwt_world: JwtWorld) -> None:
    zitadel = jwt_world.local(events_signing_key=KEY, events_max_body=1024)
    received: list[int] = []

    async def chunks() -> Any:
        for _ in range(100):
            received.append(1)
            yield b"x" * 512

    async with served(zitadel) as client:
        answer = await client.post(PATH, content=chunks(), headers=sign(b"", KEY, 0))
    assert answer.status_code == 413
    assert len(received) < 100


async def test_events_of_another_instance_are_refused(jwt_world: JwtWorld) -> None:
    zitadel = jwt_world.local(events_signing_key=KEY)
    now = jwt_world.clock()
    async with served(zitadel) as client:
        assert (
            await post_event(client, jwt_world.clock, event("user.unlocked", "u", now))
        ).is_success
        other = {**event("user.deactivated", "u", now), "instanceID": "999"}
        assert (await post_event(client, jwt_world.clock, other)).status_code == 403
    assert zitadel.metrics().events_refused == {"instance": 1}


def token_for(jwt_world: JwtWorld, mode: str, username: str = "alice") -> str:
    return (
        jwt_world.token(username) if mode != "introspection" else jwt_world.project.token(username)
    )


async def subject_and_jti(zitadel: ZitadelIntrospection, token: str) -> tuple[str, str]:
    found = await zitadel.verify(token)
    assert found.subject is not None
    assert found.token_id is not None
    return found.subject, found.token_id


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "event_type", ["user.deactivated", "user.locked", "user.removed", "user.human.signed.out"]
)
async def test_user_events_refuse_the_users_tokens(
    jwt_world: JwtWorld, mode: str, event_type: str
) -> None:
    zitadel = instance(jwt_world, mode)
    token, other = token_for(jwt_world, mode), token_for(jwt_world, mode, "bob")
    async with served(zitadel) as client:
        sub, _ = await subject_and_jti(zitadel, token)
        assert await status(client, token) == await status(client, other) == 200
        answer = await post_event(
            client, jwt_world.clock, event(event_type, sub, jwt_world.clock())
        )
        assert answer.json() == {"status": "applied"}
        assert await status(client, token) == 401  # cached, and the stand-in says active
        assert await status(client, other) == 200  # another user
        jwt_world.clock.advance(2)  # a login after the event (reactivated) is not refused
        assert await status(client, token_for(jwt_world, mode)) == 200
        assert await status(client, token) == 401  # reactivation revives nothing
        with pytest.raises(InvalidTokenError):
            await zitadel.verify(token)
    assert zitadel.metrics().events_applied == 1
    assert zitadel.metrics().events_lag_count == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("event_type", ["user.token.removed", "user.pat.removed"])
async def test_token_events_refuse_that_token(
    jwt_world: JwtWorld, mode: str, event_type: str
) -> None:
    zitadel = instance(jwt_world, mode)
    token, sibling = token_for(jwt_world, mode), token_for(jwt_world, mode)
    async with served(zitadel) as client:
        sub, jti = await subject_and_jti(zitadel, token)
        assert await status(client, sibling) == 200
        body = event(event_type, sub, jwt_world.clock(), payload={"tokenId": jti})
        assert (await post_event(client, jwt_world.clock, body)).is_success
        assert await status(client, token) == 401
        assert await status(client, sibling) == 200  # the same user's other token


@pytest.mark.parametrize("mode", ["local", "hybrid"])
async def test_session_events_refuse_the_sessions_tokens(jwt_world: JwtWorld, mode: str) -> None:
    zitadel = instance(jwt_world, mode)
    now = jwt_world.clock()
    first = jwt_world.forge(jti="V2_300000000000000001-at_1")
    second = jwt_world.forge(jti="V2_300000000000000002.at_1")
    other = jwt_world.forge(jti="V2_300000000000000003-at_1")
    async with served(zitadel) as client:
        assert await status(client, first) == await status(client, second) == 200
        revoked = event(
            "oidc_session.access_token.revoked",
            "V2_300000000000000001",
            now,
            aggregate_type="oidc_session",
        )
        added = event(
            "oidc_session.added",
            "V2_300000000000000002",
            now,
            aggregate_type="oidc_session",
            payload={"sessionID": "login-7", "userID": "u"},
        )
        terminated = event("session.terminated", "login-7", now, aggregate_type="session")
        for body in (revoked, added, terminated):
            assert (await post_event(client, jwt_world.clock, body)).is_success
        assert await status(client, first) == 401
        assert await status(client, second) == 401
        assert await status(client, other) == 200


@pytest.mark.parametrize("mode", MODES)
async def test_grant_events_drop_the_users_verdicts(jwt_world: JwtWorld, mode: str) -> None:
    zitadel = instance(jwt_world, mode)
    token, other = token_for(jwt_world, mode), token_for(jwt_world, mode, "bob")
    # A verification costs one validation; in hybrid mode two: the JWT, then its confirming
    # introspection, which a token's second request waits for (hybrid_unconfirmed_limit=1).
    per = 2 if mode == "hybrid" else 1

    async def checked(*tokens: str) -> list[int]:
        answers = [await status(client, one) for one in tokens]
        if mode == "hybrid":
            answers = [await status(client, one) for one in tokens]  # confirmed by now
        return answers

    async with served(zitadel) as client:
        sub, _ = await subject_and_jti(zitadel, token)
        await checked(token, other)
        verified = jwt_world.standin.introspection_calls, zitadel.metrics().jwt_verified
        now = jwt_world.clock()
        added = event(
            "user.grant.added", "grant-1", now, aggregate_type="usergrant", payload={"userId": sub}
        )
        jwt_world.clock.advance(1)
        assert (await post_event(client, jwt_world.clock, added)).is_success
        jwt_world.clock.advance(1)
        assert await checked(token) == [200]  # still good: verified again
        assert await checked(other) == [200]  # bob's verdict stands
        again = jwt_world.standin.introspection_calls, zitadel.metrics().jwt_verified
        assert sum(again) == sum(verified) + per
        # a grant we cannot map to a user drops every verdict
        unknown = event(
            "user.grant.removed", "grant-9", jwt_world.clock(), aggregate_type="usergrant"
        )
        jwt_world.clock.advance(1)
        assert (await post_event(client, jwt_world.clock, unknown)).is_success
        assert await checked(token, other) == [200, 200]
        last = jwt_world.standin.introspection_calls, zitadel.metrics().jwt_verified
        assert sum(last) == sum(again) + 2 * per


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "event_type",
    [
        "user.grant.changed",
        "user.grant.cascade.changed",
        "user.grant.removed",
        "user.grant.cascade.removed",
        "user.grant.deactivated",
    ],
)
async def test_a_grant_taken_away_is_never_served_from_an_older_jwt(
    jwt_world: JwtWorld, mode: str, event_type: str
) -> None:
    """Roles re-read by introspection; a JWT's cannot be: local mode refuses a JWT issued
    before the change (a new token carries the roles of now), hybrid mode asks ZITADEL."""
    zitadel = instance(jwt_world, mode)
    token = token_for(jwt_world, mode)
    async with served(zitadel) as client:
        sub, _ = await subject_and_jti(zitadel, token)
        await settled(zitadel)
        added = event(
            "user.grant.added", "grant-7", 0, aggregate_type="usergrant", payload={"userId": sub}
        )
        assert (await post_event(client, jwt_world.clock, added)).is_success
        assert await status(client, token) == 200  # a grant added takes nothing away
        await settled(zitadel)
        calls = jwt_world.standin.introspection_calls
        changed = event(event_type, "grant-7", jwt_world.clock(), aggregate_type="usergrant")
        jwt_world.clock.advance(1)
        assert (await post_event(client, jwt_world.clock, changed)).is_success
        expected = 401 if mode == "local" else 200
        assert await status(client, token) == expected
        if mode != "local":  # ZITADEL was asked for the roles of now
            assert jwt_world.standin.introspection_calls == calls + 1
        jwt_world.clock.advance(1)
        assert await status(client, token_for(jwt_world, mode)) == 200  # a token of now


async def test_a_non_fastapi_app_mounts_the_receiver_behind_the_middleware(
    jwt_world: JwtWorld,
) -> None:
    zitadel = jwt_world.local(events_signing_key=KEY)
    app = Starlette(routes=[Route(PATH, zitadel.events_app, methods=["POST"])])
    app.add_middleware(ZitadelMiddleware, zitadel=zitadel)
    transport = httpx.ASGITransport(app=app)
    async with zitadel, httpx.AsyncClient(transport=transport, base_url="http://a.test") as client:
        answer = await post_event(client, jwt_world.clock, event("user.unlocked", "u", 0))
        assert answer.status_code == 200  # no bearer token needed, the signature decides
        forged = await post_event(client, jwt_world.clock, event("user.locked", "u", 0), "x")
        assert forged.status_code == 401
        assert (await client.get("/zitadel/other")).status_code == 401  # the rest is protected


async def test_jwt_payload_type_is_verified_against_the_issuers_keys(jwt_world: JwtWorld) -> None:
    token = jwt_world.token()
    sub = claims_of(token)["sub"]
    zitadel = jwt_world.local(events_signing_key=KEY)
    async with served(zitadel) as client:
        assert await status(client, token) == 200
        body = event("user.locked", sub, jwt_world.clock())
        kid = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]
        forged = compact({"alg": "RS256", "kid": kid, "typ": "JWT"}, body, b"\x00" * 256)
        assert (await post_jws(client, jwt_world.clock, forged)).status_code == 401
        assert await status(client, token) == 200
        garbage = "ey\u00e9.\u00e9.\u00e9"  # not ASCII: refused, never a 500
        assert (await post_jws(client, jwt_world.clock, garbage)).status_code == 401
        signed = jwt_world.standin.sign_jwt(body, headers={"typ": "JWT"})
        assert (await post_jws(client, jwt_world.clock, signed)).status_code == 200
        assert await status(client, token) == 401
    assert zitadel.metrics().events_refused == {"jws": 2}


async def post_jws(
    client: httpx.AsyncClient, clock: Callable[[], float], jws: str, *, hmac_signed: bool = True
) -> httpx.Response:
    """A ``PAYLOAD_TYPE_JWT`` call: the JWS as the body, with (as ZITADEL sends it) or without
    a ``ZITADEL-Signature`` over it."""
    data = jws.encode()
    headers = sign(data, KEY, int(clock())) if hmac_signed else {}
    return await client.post(
        PATH, content=data, headers={**headers, "Content-Type": "application/jwt"}
    )


async def test_a_jws_body_without_the_signature_header_is_refused_before_the_jwks(
    jwt_world: JwtWorld,
) -> None:
    """ZITADEL signs every target call with the target's key, a JWS body too: a JWS without the
    header is not ZITADEL's, refused (401 ``missing``) before its ``kid`` reaches the JWKS,
    even when the JWS itself verifies."""
    zitadel = jwt_world.local(events_signing_key=KEY)
    genuine = jwt_world.standin.sign_jwt(event("user.locked", "u", jwt_world.clock()))
    async with served(zitadel) as client:
        answer = await post_jws(client, jwt_world.clock, genuine, hmac_signed=False)
        assert answer.status_code == 401
        assert zitadel.metrics().events_refused == {"missing": 1}
        assert (jwt_world.standin.jwks_calls, zitadel.metrics().jwks_fetches) == (0, 0)


@pytest.mark.parametrize(
    ("header", "description"),
    [
        ({"kid": "k" * 257}, "the token names no usable key id (kid)"),
        ({"crit": ["exp"]}, "the token has critical header parameters this API does not know"),
        ({"b64": False}, "tokens with an unencoded payload (b64) are not accepted"),
    ],
)
async def test_an_event_jws_is_held_to_the_tokens_header_rules_before_any_key_lookup(
    jwt_world: JwtWorld,
    caplog: pytest.LogCaptureFixture,
    header: dict[str, Any],
    description: str,
) -> None:
    """The same header rules as a JWT access token (``_jws``): a ``kid`` over 256 characters,
    a ``crit`` or ``b64: false`` refuses the body before the JWKS is looked at, so a sender
    with the HMAC key but not the web key cannot make the receiver fetch keys for it."""
    zitadel = jwt_world.local(events_signing_key=KEY)
    body = event("user.locked", "u", jwt_world.clock())
    jws = compact({"alg": "RS256", "kid": "a-new-kid", "typ": "JWT", **header}, body, b"s" * 256)
    async with served(zitadel) as client:
        with caplog.at_level(logging.WARNING, logger="fastapi_zitadel"):
            assert (await post_jws(client, jwt_world.clock, jws)).status_code == 401
        assert zitadel.metrics().events_refused == {"jws": 1}
        assert (jwt_world.standin.jwks_calls, zitadel.metrics().jwks_fetches) == (0, 0)
    assert description in caplog.text


# Introspection answers made by hand: V2 token ids, and an outage ------------------------------
def answering(clock: FakeClock, answers: dict[str, dict[str, Any]]) -> httpx.AsyncClient:
    """ZITADEL's introspection as a function of the token; ``fail`` makes it unreachable."""

    def handler(request: httpx.Request) -> httpx.Response:
        token = dict(httpx.QueryParams(request.content.decode()))["token"]
        if answers.get("fail"):
            raise httpx.ConnectError("down")
        return httpx.Response(200, json=answers.get(token, {"active": False}))

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def by_hand(
    app_key: dict[str, Any], clock: FakeClock, http: httpx.AsyncClient, **options: Any
) -> ZitadelIntrospection:
    return ZitadelIntrospection(
        ISSUER,
        key_file=app_key,
        introspection_endpoint=f"{ISSUER}/oauth/v2/introspect",
        http_client=http,
        max_retries=0,
        clock=clock,
        monotonic=clock,
        events_signing_key=KEY,
        **options,
    )


async def test_session_events_in_introspection_mode(app_key: dict[str, Any]) -> None:
    clock = FakeClock()
    answers = {
        "first": active_claims(clock(), jti="V2_310000000000000001-at_1"),
        "second": active_claims(clock(), jti="V2_310000000000000002.at_1"),
        "other": active_claims(clock(), jti="V2_310000000000000003-at_1"),
    }
    zitadel = by_hand(app_key, clock, answering(clock, answers))
    async with served(zitadel) as client:
        for token in answers:
            assert await status(client, token) == 200
        now = clock()
        revoked = event(
            "oidc_session.refresh_token.revoked",
            "V2_310000000000000001",
            now,
            aggregate_type="oidc_session",
        )
        added = event(
            "oidc_session.added",
            "V2_310000000000000002",
            now,
            aggregate_type="oidc_session",
            payload=base64.b64encode(b'{"sessionID":"login-9","userID":"u"}').decode(),
        )
        terminated = event("session.terminated", "login-9", now, aggregate_type="session")
        for body in (revoked, added, terminated):
            assert (await post_event(client, clock, body)).is_success
        assert await status(client, "first") == 401
        assert await status(client, "second") == 401
        assert await status(client, "other") == 200


async def test_a_revoked_verdict_is_never_served_stale(app_key: dict[str, Any]) -> None:
    """stale_if_error bridges an outage with a cached verdict: never with a revoked one."""
    clock = FakeClock()
    answers: dict[str, Any] = {"token": active_claims(clock()), "other": active_claims(clock())}
    answers["other"]["sub"] = "user-2"
    zitadel = by_hand(app_key, clock, answering(clock, answers), stale_if_error=600)
    async with served(zitadel) as client:
        assert await status(client, "token") == await status(client, "other") == 200
        body = event("user.deactivated", "user-1", clock())
        assert (await post_event(client, clock, body)).is_success
        clock.advance(61)  # past cache_ttl: within stale_if_error
        answers["fail"] = True  # ZITADEL unreachable
        assert await status(client, "other") == 200  # served stale, as configured
        assert await status(client, "token") != 200  # revoked: never served stale
    assert zitadel.metrics().stale_served == 1


async def test_an_answer_on_its_way_when_the_users_grants_change_is_not_cached(
    jwt_world: JwtWorld,
) -> None:
    """The introspection of alice's token is under way when her grants change: its answer
    (possibly with the old roles) serves that request, and is not cached for the next."""
    gate = HeldIntrospections(httpx.AsyncHTTPTransport())
    zitadel = jwt_world.project.introspection(
        clock=jwt_world.clock,
        monotonic=jwt_world.monotonic,
        events_signing_key=KEY,
        http_client=httpx.AsyncClient(transport=gate),
    )
    token = jwt_world.project.token("alice")
    sub = jwt_world.project.user("alice").id
    async with served(zitadel) as client:
        lookup = asyncio.ensure_future(zitadel.verify(token))
        await gate.until_waiting(1)
        added = event(
            "user.grant.added", "grant-3", 0, aggregate_type="usergrant", payload={"userId": sub}
        )
        jwt_world.clock.advance(1)
        assert (await post_event(client, jwt_world.clock, added)).is_success
        jwt_world.clock.advance(1)
        gate.release()
        assert (await lookup).subject == sub  # this request is served
        calls = jwt_world.standin.introspection_calls
        assert await status(client, token) == 200
        assert jwt_world.standin.introspection_calls == calls + 1  # asked again
        assert await status(client, token) == 200
        assert jwt_world.standin.introspection_calls == calls + 1  # that answer is cached
