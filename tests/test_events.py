"""ZITADEL's events (Actions v2): the receiver refuses what it cannot verify, and each event
type it acts on takes effect in every mode, against the stand-in on a loopback port.

The stand-in keeps answering "active" for the tokens here: whatever refuses them is the
event's marker, nothing else. Calls are signed here with hmac directly (not with the
library's signer), so a mistake on one side cannot hide behind the same one on the other."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Route

from fastapi_zitadel import (
    ConfigurationError,
    InvalidTokenError,
    Principal,
    ZitadelIntrospection,
    ZitadelMiddleware,
)
from fastapi_zitadel._events.payload import EventMalformed, parse_event, parse_event_json
from fastapi_zitadel._events.revocations import REFUSED, STALE, Marker, Revocations
from fastapi_zitadel._events.signature import SignatureRefused, verify_signature

from .helpers import ISSUER, FakeClock, active_claims
from .jwt_support import JwtWorld, compact, settled

KEY = "events-signing-key-1"
OTHER_KEY = "events-signing-key-2"
PATH = "/zitadel/events"
INSTANCE = "280000000000000001"


def sign(body: bytes, key: str, t: int, *, extra: str = "") -> dict[str, str]:
    mac = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"ZITADEL-Signature": f"t={t}{extra},v1={mac}", "Content-Type": "application/json"}


def rfc3339(when: float) -> str:
    moment = datetime.fromtimestamp(when, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # nanoseconds, as ZITADEL


_sequence = iter(range(1, 1_000_000))


def event(
    event_type: str,
    aggregate_id: str,
    when: float,
    *,
    payload: Any = None,
    aggregate_type: str = "user",
    sequence: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "aggregateID": aggregate_id,
        "aggregateType": aggregate_type,
        "resourceOwner": "280000000000000002",
        "instanceID": INSTANCE,
        "version": "v1",
        "sequence": next(_sequence) if sequence is None else sequence,
        "event_type": event_type,
        "created_at": rfc3339(when),
        "userID": "280000000000000099",  # the editor: never the user the event is about
    }
    if payload is not None:
        body["event_payload"] = payload
    return body


def claims_of(jwt: str) -> dict[str, Any]:
    part = jwt.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def app_for(zitadel: ZitadelIntrospection) -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(principal: Principal = Depends(zitadel)) -> dict[str, Any]:  # noqa: B008
        return {"sub": principal.subject, "roles": sorted(principal.roles)}

    zitadel.install(app)
    return app


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


# The signature -------------------------------------------------------------------------------
def test_signature_accepts_any_matching_v1_and_any_configured_key() -> None:
    body, now = b'{"a":1}', 1_800_000_000
    good = sign(body, KEY, now)["ZITADEL-Signature"]
    other = sign(body, OTHER_KEY, now)["ZITADEL-Signature"].split(",")[1]
    verify_signature(good, body, [KEY.encode()], now=now, max_age=300)
    verify_signature(good + "," + other, body, [OTHER_KEY.encode()], now=now, max_age=300)
    verify_signature(good, body, [OTHER_KEY.encode(), KEY.encode()], now=now + 299, max_age=300)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("t=1800000000", "malformed"),
        ("v1=" + "0" * 64, "malformed"),
        ("t=abc,v1=" + "0" * 64, "malformed"),
        ("t=1800000000,v1=zz" + "0" * 62, "malformed"),
        ("t=1800000000,v1=00", "malformed"),
        ("garbage", "malformed"),
        ("t=1800000000,t=1800000000,v1=" + "0" * 64, "malformed"),
        ("t=1800000000,v1=" + "0" * 64, "mismatch"),
        ("t=1799999000,v1=" + "0" * 64, "stale"),
        ("t=1800001000,v1=" + "0" * 64, "stale"),
    ],
)
def test_signature_refusals(header: str | None, reason: str) -> None:
    with pytest.raises(SignatureRefused) as refused:
        verify_signature(header, b"{}", [KEY.encode()], now=1_800_000_000, max_age=300)
    assert refused.value.reason == reason
    assert KEY not in refused.value.description


def test_a_signature_over_another_body_or_time_does_not_verify() -> None:
    now = 1_800_000_000
    header = sign(b'{"a":1}', KEY, now)["ZITADEL-Signature"]
    with pytest.raises(SignatureRefused):
        verify_signature(header, b'{"a":2}', [KEY.encode()], now=now, max_age=300)
    moved = header.replace(f"t={now}", f"t={now + 1}")
    with pytest.raises(SignatureRefused):
        verify_signature(moved, b'{"a":1}', [KEY.encode()], now=now, max_age=300)


@pytest.mark.hypothesis
@settings(max_examples=300, deadline=None)
@given(header=st.text(max_size=300), body=st.binary(max_size=100))
def test_any_header_is_verified_or_refused_never_crashes(header: str, body: bytes) -> None:
    try:
        verify_signature(header, body, [KEY.encode()], now=1_800_000_000, max_age=300)
    except SignatureRefused:
        return
    pytest.fail("an arbitrary header verified")


# The payload ---------------------------------------------------------------------------------
def test_event_payload_as_object_base64_or_empty() -> None:
    base = event("user.token.removed", "u1", 1_800_000_000.5)
    as_object = parse_event({**base, "event_payload": {"tokenId": "t1"}})
    encoded = base64.b64encode(b'{"tokenId":"t1"}').decode().rstrip("=")
    as_base64 = parse_event({**base, "event_payload": encoded})
    empty = parse_event({**base, "event_payload": {}})
    assert as_object.payload == as_base64.payload == {"tokenId": "t1"}
    assert empty.payload == {}
    assert as_object.created_at == pytest.approx(1_800_000_000.5, abs=1e-3)
    assert as_object.editor == "280000000000000099"
    assert parse_event({**base, "sequence": "42"}).sequence == 42


@pytest.mark.parametrize(
    "broken",
    [
        {"event_type": 1},
        {"aggregateID": ""},
        {"sequence": -1},
        {"sequence": True},
        {"sequence": "x"},
        {"created_at": "yesterday"},
        {"created_at": "2025-01-01T00:00:00"},
    ],
)
def test_malformed_events(broken: dict[str, Any]) -> None:
    with pytest.raises(EventMalformed):
        parse_event({**event("user.locked", "u1", 1_800_000_000), **broken})
    with pytest.raises(EventMalformed):
        parse_event_json(b"not json")
    with pytest.raises(EventMalformed):
        parse_event_json(b"[1]")


@pytest.mark.hypothesis
@settings(max_examples=300, deadline=None)
@given(
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
        max_leaves=20,
    )
)
def test_any_json_is_an_event_or_malformed(data: Any) -> None:
    try:
        parsed = parse_event(data)
    except EventMalformed:
        return
    assert isinstance(parsed.event_type, str)
    assert parsed.event_type


# The markers ---------------------------------------------------------------------------------
def principal(**fields: Any) -> Principal:
    return Principal(**fields)


def test_markers_refuse_tokens_issued_before_the_event_only() -> None:
    clock = FakeClock(1_000.0)
    revocations = Revocations(clock=clock)
    before = datetime.fromtimestamp(900, tz=timezone.utc)
    after = datetime.fromtimestamp(1_100, tz=timezone.utc)
    markers = revocations.markers(parse_event(event("user.deactivated", "u1", 1_000)), 1_000)
    assert markers is not None
    epoch = revocations.epoch
    revocations.apply(markers)
    assert revocations.epoch != epoch
    assert revocations.verdict(principal(subject="u1", issued_at=before), 2_000) == REFUSED
    assert revocations.verdict(principal(subject="u1", issued_at=after), 2_000) == 0
    assert revocations.verdict(principal(subject="u2", issued_at=before), 2_000) == 0
    # a JWT without iat cannot show it is newer; an introspected verdict without one is
    # dropped if it was made before the event and stands if ZITADEL vouched for it after
    assert revocations.verdict(principal(subject="u1", verified_by="jwt"), 2_000) == REFUSED
    assert revocations.verdict(principal(subject="u1"), 999) == REFUSED
    assert revocations.verdict(principal(subject="u1"), 1_001) == 0


def test_session_markers_read_both_token_id_delimiters_and_the_login_mapping() -> None:
    revocations = Revocations(clock=FakeClock(1_000.0))
    issued = datetime.fromtimestamp(900, tz=timezone.utc)
    added = parse_event(
        event(
            "oidc_session.added",
            "V2_oidc1",
            950,
            aggregate_type="oidc_session",
            payload={"sessionID": "login1", "userID": "u1"},
        )
    )
    revocations.apply(revocations.markers(added, 950) or [])
    terminated = parse_event(event("session.terminated", "login1", 1_000, aggregate_type="session"))
    markers = revocations.markers(terminated, 1_000)
    assert markers == [Marker("session", "oidc1", 1_000.0, 1_000.0)]
    revocations.apply(markers)
    for jti in ("V2_oidc1-at_7", "V2_oidc1.at_7"):
        assert revocations.verdict(principal(token_id=jti, issued_at=issued), 2_000) == REFUSED
    assert revocations.verdict(principal(token_id="V2_oidc2-at_7", issued_at=issued), 2_000) == 0


def test_grant_markers_drop_verdicts_and_unknown_grants_drop_all() -> None:
    revocations = Revocations(clock=FakeClock(1_000.0))
    added = parse_event(
        event("user.grant.added", "g1", 900, aggregate_type="usergrant", payload={"userId": "u1"})
    )
    revocations.apply(revocations.markers(added, 900) or [])
    removed = parse_event(event("user.grant.removed", "g1", 1_000, aggregate_type="usergrant"))
    revocations.apply(revocations.markers(removed, 1_000) or [])
    assert revocations.verdict(principal(subject="u1"), 999) == STALE
    assert revocations.verdict(principal(subject="u1"), 1_001) == 0
    assert revocations.verdict(principal(subject="u2"), 999) == 0
    unknown = parse_event(event("user.grant.deactivated", "g9", 1_100, aggregate_type="usergrant"))
    assert revocations.markers(unknown, 1_100) == [Marker("all", "", verified_before=1_100.0)]
    revocations.apply(revocations.markers(unknown, 1_100) or [])
    assert revocations.verdict(principal(subject="u2"), 1_050) == STALE
    assert revocations.verdict(principal(subject="u2"), 1_101) == 0


def test_markers_travel_unchanged() -> None:
    marker = Marker("session", "oidc1", 1.5, 2.5)
    assert Marker.decode(marker.encode()) == marker
    with pytest.raises(ValueError, match="not a revocation marker"):
        Marker.decode(b'{"kind":"everything"}')


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
        assert metrics.events_applied == 0
        assert metrics.events_refused == {
            "missing": 1,
            "mismatch": 1,
            "stale": 2,
            "malformed": 3,
            "oversized": 1,
        }
        # a replay of a good call is applied once: the second is a duplicate
        assert (
            await client.post(PATH, content=data, headers=sign(data, KEY, t))
        ).status_code == 200
        replay = await client.post(PATH, content=data, headers=sign(data, KEY, t))
        assert replay.json() == {"status": "duplicate"}
        assert zitadel.metrics().events_applied == 1
        assert zitadel.metrics().events_refused["duplicate"] == 1
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


MODES = ["introspection", "local", "hybrid"]


def instance(jwt_world: JwtWorld, mode: str, **options: Any) -> ZitadelIntrospection:
    options = {"events_signing_key": KEY, **options}
    if mode == "local":
        return jwt_world.local(**options)
    if mode == "hybrid":
        return jwt_world.hybrid(**options)
    return jwt_world.project.introspection(
        clock=jwt_world.clock, monotonic=jwt_world.monotonic, **options
    )


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
    async with served(zitadel) as client:
        sub, _ = await subject_and_jti(zitadel, token)
        await status(client, other)
        verified = jwt_world.standin.introspection_calls, zitadel.metrics().jwt_verified
        now = jwt_world.clock()
        added = event(
            "user.grant.added", "grant-1", now, aggregate_type="usergrant", payload={"userId": sub}
        )
        jwt_world.clock.advance(1)
        assert (await post_event(client, jwt_world.clock, added)).is_success
        jwt_world.clock.advance(1)
        assert await status(client, token) == 200  # still good: verified again
        assert await status(client, other) == 200  # bob's verdict stands
        again = jwt_world.standin.introspection_calls, zitadel.metrics().jwt_verified
        assert sum(again) == sum(verified) + 1
        # a grant we cannot map to a user drops every verdict
        unknown = event(
            "user.grant.removed", "grant-9", jwt_world.clock(), aggregate_type="usergrant"
        )
        jwt_world.clock.advance(1)
        assert (await post_event(client, jwt_world.clock, unknown)).is_success
        assert await status(client, token) == await status(client, other) == 200
        last = jwt_world.standin.introspection_calls, zitadel.metrics().jwt_verified
        assert sum(last) == sum(again) + 2


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
        headers = {"Content-Type": "application/jwt"}
        assert (await client.post(PATH, content=forged, headers=headers)).status_code == 401
        assert await status(client, token) == 200
        signed = jwt_world.standin.sign_jwt(body, headers={"typ": "JWT"})
        assert (await client.post(PATH, content=signed, headers=headers)).status_code == 200
        assert await status(client, token) == 401
    assert zitadel.metrics().events_refused == {"jws": 1}


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
