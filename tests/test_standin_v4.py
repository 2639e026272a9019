"""The stand-in's introspection refuses what ZITADEL v4's does (``ActiveAccessTokenByToken``):
tokens of deactivated, locked or removed users, of terminated login sessions, after sign-out
and revocation; deactivated and removed grants leave the roles. And it writes the events
ZITADEL writes for each, in ZITADEL's shapes."""

import base64
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from fastapi_zitadel.testing import ZitadelStandIn
from fastapi_zitadel.testing._events import Event, rfc3339_nano, signature_header

from .helpers import STANDIN_ISSUER, FakeClock, World

ROLES = "urn:zitadel:iam:org:project:roles"
V2_JTI = re.compile(r"V2_(\d+)\.at_(\d+)")


class Introspector:
    """Introspects as an API application of the world's project (client secret)."""

    def __init__(self, world: World, http: httpx.AsyncClient) -> None:
        app = world.standin.add_api_app(world.project, "v4-api", auth="basic")
        assert app.client_secret is not None
        self.auth = (app.client_id, app.client_secret)
        self.http = http

    async def __call__(self, token: str) -> dict[str, Any]:
        answer = await self.http.post("/oauth/v2/introspect", data={"token": token}, auth=self.auth)
        assert answer.status_code == 200
        body: dict[str, Any] = answer.json()
        return body

    async def active(self, token: str) -> bool:
        return (await self(token))["active"] is True


@pytest.fixture
async def introspect(world: World) -> AsyncIterator[Introspector]:
    transport = world.standin.transport()
    async with httpx.AsyncClient(transport=transport, base_url=STANDIN_ISSUER) as http:
        yield Introspector(world, http)


def events_of(standin: ZitadelStandIn, event_type: str) -> list[Event]:
    return [event for event in standin.events if event.event_type == event_type]


async def test_tokens_carry_zitadel_v2_ids(world: World, introspect: Introspector) -> None:
    opaque = world.token()
    signed = world.token(jwt=True)
    for token in (opaque, signed):
        jti = (await introspect(token))["jti"]
        match = V2_JTI.fullmatch(jti)
        assert match is not None, jti
        added = [e for e in events_of(world.standin, "oidc_session.added")]
        session = next(e for e in added if e.aggregate_id == f"V2_{match.group(1)}")
        assert session.aggregate_type == "oidc_session"
        assert session.payload["userID"] == world.user.id
        assert session.payload["sessionID"] == world.standin.session_id(token)
    claims = jwt.decode(signed, options={"verify_signature": False})
    assert claims["jti"] == (await introspect(signed))["jti"]


async def test_the_dash_delimiter_of_some_versions(clock: FakeClock) -> None:
    standin = ZitadelStandIn(STANDIN_ISSUER, clock=clock, jti_delimiter="-")
    project = standin.add_project("p")
    user = standin.add_user(standin.add_org("o"), "u")
    token = standin.token_info(standin.issue_token(user, project))
    assert token is not None
    assert re.fullmatch(r"V2_\d+-at_\d+", token.id)


@pytest.mark.parametrize(
    ("refuse", "restore", "refused_event"),
    [
        ("deactivate_user", "reactivate_user", "user.deactivated"),
        ("lock_user", "unlock_user", "user.locked"),
    ],
)
async def test_user_state_refuses_earlier_tokens_for_good(
    world: World, introspect: Introspector, refuse: str, restore: str, refused_event: str
) -> None:
    standin = world.standin
    before = world.token()
    assert await introspect.active(before)
    getattr(standin, refuse)(world.user)
    assert not await introspect.active(before)
    assert not await introspect.active(world.token())  # nor one minted meanwhile
    getattr(standin, restore)(world.user)
    # ZITADEL checks for the event after the token was issued: reactivation revives nothing.
    assert not await introspect.active(before)
    after = world.token()
    assert await introspect.active(after)
    [event] = events_of(standin, refused_event)
    assert (event.aggregate_type, event.aggregate_id) == ("user", world.user.id)
    assert event.resource_owner == world.user.org.id
    assert event.editor == standin.admin_id  # who made the change, not the user
    [restored] = [
        e for e in standin.events if e.position > event.position and e.aggregate_id == world.user.id
    ]
    assert restored.sequence == event.sequence + 1


async def test_a_removed_users_tokens_are_gone(world: World, introspect: Introspector) -> None:
    token = world.token(jwt=True)
    world.standin.remove_user(world.user)
    assert not await introspect.active(token)
    assert events_of(world.standin, "user.removed")[0].aggregate_id == world.user.id


async def test_refusal_does_not_need_the_clock_to_move(
    world: World, introspect: Introspector
) -> None:
    """Ordered by position, not time: a frozen clock still tells before from after."""
    world.standin.deactivate_user(world.user)
    world.standin.reactivate_user(world.user)
    assert await introspect.active(world.token())


async def test_sign_out_ends_the_tokens_of_that_user_agent(
    world: World, introspect: Introspector
) -> None:
    standin = world.standin
    first, second = world.token(), world.token()
    first_session = standin.session_id(first)
    assert first_session is not None
    assert first_session != standin.session_id(second)
    standin.sign_out(world.user, session=first_session)
    assert not await introspect.active(first)
    assert await introspect.active(second)
    [event] = events_of(standin, "user.human.signed.out")
    assert event.aggregate_id == event.editor == world.user.id
    assert set(event.payload) == {"userAgentID"}
    standin.sign_out(world.user)
    assert not await introspect.active(second)
    assert await introspect.active(world.token())  # a new login afterwards


async def test_terminated_session_ends_all_its_tokens(
    world: World, introspect: Introspector
) -> None:
    standin = world.standin
    first = world.token()
    session = standin.session_id(first)
    assert session is not None
    same = standin.issue_token(world.user, world.project, session=session, jwt=True)
    other = world.token()
    standin.terminate_session(session)
    assert not await introspect.active(first)
    assert not await introspect.active(same)
    assert await introspect.active(other)
    [event] = events_of(standin, "session.terminated")
    assert (event.aggregate_type, event.aggregate_id) == ("session", session)
    with pytest.raises(ValueError, match="not one of this user's"):
        standin.issue_token(standin.add_user(world.user.org, "eve"), world.project, session=session)


async def test_service_user_tokens_have_no_login_session(world: World) -> None:
    robot = world.standin.add_service_user(world.user.org, "robot")
    token = world.standin.service_token(robot, [world.project])
    assert world.standin.session_id(token) is None
    with pytest.raises(ValueError, match="not one of this user's"):
        world.standin.sign_out(robot, session="nope")


async def test_revocation_ends_the_oidc_sessions_access_token(
    world: World, introspect: Introspector
) -> None:
    standin = world.standin
    token = world.token()
    info = standin.token_info(token)
    assert info is not None
    assert info.oidc_session is not None
    answer = await introspect.http.post(
        "/oauth/v2/revoke", data={"token": token}, auth=introspect.auth
    )
    assert answer.status_code == 200
    assert not await introspect.active(token)
    [event] = events_of(standin, "oidc_session.access_token.revoked")
    assert event.aggregate_id == info.oidc_session.id == info.id.split(".")[0]
    standin.revoke(token)  # twice: nothing new happens
    assert len(events_of(standin, "oidc_session.access_token.revoked")) == 1


async def test_a_jwt_is_revoked_by_its_jti(world: World, introspect: Introspector) -> None:
    """ZITADEL finds a JWT by its ``jti``: the same claims signed again name the same token."""
    standin = world.standin
    token = world.token(jwt=True)
    claims = jwt.decode(token, options={"verify_signature": False})
    resigned = standin.sign_jwt(claims, headers={"x-copy": "1"})
    assert resigned != token
    answer = await introspect.http.post(
        "/oauth/v2/revoke", data={"token": resigned}, auth=introspect.auth
    )
    assert answer.status_code == 200
    assert not await introspect.active(token)
    standin.revoke("a.b.c")  # not a JWT of ours: nothing
    standin.revoke(jwt.encode({"jti": claims["jti"]}, "k" * 32, algorithm="HS256"))


async def test_grants_decide_the_roles(world: World, introspect: Introspector) -> None:
    standin, user, project = world.standin, world.user, world.project
    token = world.token()
    assert set((await introspect(token))[ROLES]) == {"admin", "reader"}
    standin.change_grant(user, project, ["reader"])
    assert set((await introspect(token))[ROLES]) == {"reader"}
    standin.deactivate_grant(user, project)
    body = await introspect(token)
    assert body["active"] is True
    assert ROLES not in body  # left out (#8634)
    standin.reactivate_grant(user, project)
    assert set((await introspect(token))[ROLES]) == {"reader"}
    standin.remove_grant(user, project)
    body = await introspect(token)
    assert body["active"] is True
    assert ROLES not in body
    kinds = [e.event_type for e in standin.events if e.aggregate_type == "usergrant"]
    assert kinds == [
        "user.grant.added",
        "user.grant.changed",
        "user.grant.deactivated",
        "user.grant.reactivated",
        "user.grant.removed",
    ]
    added, changed = [e for e in standin.events if e.aggregate_type == "usergrant"][:2]
    assert added.payload == {
        "userId": user.id,
        "projectId": project.id,
        "roleKeys": ["admin", "reader"],
    }
    assert changed.payload == {"roleKeys": ["reader"]}
    assert added.aggregate_id == changed.aggregate_id
    with pytest.raises(ValueError, match="no grant"):
        standin.remove_grant(user, project)
    grant = standin.add_grant(user, project, ["admin"])
    assert grant != added.aggregate_id  # a new grant
    with pytest.raises(ValueError, match="already"):
        standin.add_grant(user, project)


async def test_roles_set_directly_get_a_grant_on_first_change(
    world: World, introspect: Introspector
) -> None:
    robot = world.standin.add_service_user(world.user.org, "robot")
    robot.roles[world.project.id] = {"reader"}  # as the command line's saved state does
    world.standin.deactivate_grant(robot, world.project)
    [event] = events_of(world.standin, "user.grant.deactivated")
    assert event.aggregate_type == "usergrant"


async def test_project_helpers_grant_only_what_is_missing(world: World) -> None:
    from fastapi_zitadel.testing import StandInProject

    with StandInProject(world.standin) as project:
        project.user("carol", roles=["reader"])
        project.user("carol", roles=["reader"])
        project.user("carol", roles=["admin"])
    grants = [e.event_type for e in world.standin.events if e.aggregate_type == "usergrant"]
    assert grants[-2:] == ["user.grant.added", "user.grant.changed"]
    assert world.standin.events[-1].payload == {"roleKeys": ["admin", "reader"]}


async def test_personal_access_tokens(world: World, introspect: Introspector) -> None:
    standin = world.standin
    robot = standin.add_service_user(world.user.org, "ops")
    pat = standin.personal_access_token(robot)
    info = standin.token_info(pat)
    assert info is not None
    assert info.personal
    assert not robot.iam_owner
    assert not await introspect.active(pat)  # made for ZITADEL's own API, not ours
    standin.revoke(pat)
    [event] = events_of(standin, "user.pat.removed")
    assert (event.aggregate_id, event.payload) == (robot.id, {"tokenId": info.id})
    with pytest.raises(ValueError, match="service users"):
        standin.personal_access_token(world.user)
    admin = standin.token_info(standin.admin_token())
    assert admin is not None
    assert admin.user.iam_owner
    again = standin.token_info(standin.admin_token())
    assert again is not None
    assert again.user is admin.user


async def test_the_login_page_leaves_out_unusable_users(world: World) -> None:
    web = world.standin.add_web_app(world.project, redirect_uris=["http://app/cb"])
    bob = world.standin.add_user(world.user.org, "bob")
    world.standin.lock_user(bob)
    transport = world.standin.transport()
    async with httpx.AsyncClient(transport=transport, base_url=STANDIN_ISSUER) as http:
        page = await http.get(
            "/oauth/v2/authorize",
            params={
                "client_id": web.client_id,
                "redirect_uri": "http://app/cb",
                "response_type": "code",
                "code_challenge": "x" * 43,
                "code_challenge_method": "S256",
            },
        )
    assert "alice" in page.text
    assert "bob" not in page.text


def test_event_body_and_its_payload_quirks(world: World) -> None:
    world.clock.now = 1_800_000_000.123456
    world.standin.deactivate_user(world.user)
    event = world.standin.events[-1]
    body = event.body()
    assert body == {
        "aggregateID": world.user.id,
        "aggregateType": "user",
        "resourceOwner": world.user.org.id,
        "instanceID": world.standin.instance_id,
        "version": "v2",
        "sequence": event.sequence,
        "event_type": "user.deactivated",
        "created_at": "2027-01-15T08:00:00.123456Z",
        "userID": world.standin.admin_id,
        "event_payload": {},
    }
    world.standin.remove_user(world.user)
    removed = world.standin.events[-1]
    assert removed.body()["event_payload"] == {"userName": "alice"}
    encoded = removed.body("base64")["event_payload"]
    assert json.loads(base64.b64decode(encoded)) == {"userName": "alice"}
    assert removed.body("empty")["event_payload"] == {}


def test_rfc3339_nano_trims_as_go_does() -> None:
    assert rfc3339_nano(0) == "1970-01-01T00:00:00Z"
    assert rfc3339_nano(1.5) == "1970-01-01T00:00:01.5Z"
    assert rfc3339_nano(1.000000001) == "1970-01-01T00:00:01.000000001Z"


def test_signature_is_zitadels_hmac() -> None:
    body = b'{"a":1}'
    header = signature_header("key", body, 1700000000)
    expected = hmac.new(b"key", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"


def test_positions_order_tokens_and_events(world: World) -> None:
    first = world.standin.token_info(world.token())
    world.standin.deactivate_user(world.user)
    assert first is not None
    positions = [event.position for event in world.standin.events]
    assert positions == sorted(positions)
    assert first.position < world.standin.events[-1].position


async def test_the_user_and_session_api_for_trying_it_by_hand(
    world: World, introspect: Introspector
) -> None:
    """ZITADEL's API v2 calls, for an IAM owner: each is the Python call of the same name, and
    the editor of its event is the caller."""
    standin = world.standin
    admin = standin.admin_token()
    owner = standin.token_info(admin)
    assert owner is not None
    token = world.token()
    session = standin.session_id(token)
    bearer = {"Authorization": f"Bearer {admin}"}
    http = introspect.http
    user = f"/v2/users/{world.user.id}"
    answer = await http.post(user + "/lock", headers=bearer)
    assert answer.status_code == 200
    assert "changeDate" in answer.json()["details"]
    assert not await introspect.active(token)
    assert standin.events[-1].event_type == "user.locked"
    assert standin.events[-1].editor == owner.user.id
    for change in ("unlock", "deactivate", "reactivate"):
        assert (await http.post(f"{user}/{change}", headers=bearer)).status_code == 200
    kinds = [e.event_type for e in standin.events if e.aggregate_id == world.user.id][-3:]
    assert kinds == ["user.unlocked", "user.deactivated", "user.reactivated"]
    fresh = world.token()
    fresh_session = standin.session_id(fresh)
    assert (await http.delete(f"/v2/sessions/{fresh_session}", headers=bearer)).status_code == 200
    assert not await introspect.active(fresh)
    assert standin.events[-1].event_type == "session.terminated"
    assert (await http.delete("/v2/sessions/nope", headers=bearer)).status_code == 404
    assert (await http.delete(user, headers=bearer)).status_code == 200
    assert world.user.removed
    assert (await http.post(user + "/lock", headers=bearer)).status_code == 404
    assert (await http.post(user + "/nonsense", headers=bearer)).status_code == 501
    assert (await http.delete(user)).status_code == 401
    robot = standin.add_service_user(world.user.org, "nobody")
    plain = {"Authorization": f"Bearer {standin.personal_access_token(robot)}"}
    assert (await http.delete(f"/v2/sessions/{session}", headers=plain)).status_code == 403
