"""The stand-in is as strict as ZITADEL: each client-assertion rule, Basic decoding, the token
and revocation endpoints, and the exact shapes of active and inactive answers."""

import base64
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt
import pytest

from fastapi_zitadel._credentials.client_auth import CLIENT_ASSERTION_TYPE
from fastapi_zitadel.testing import ZitadelStandIn

from .helpers import World

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture
async def http(world: World) -> AsyncIterator[httpx.AsyncClient]:
    transport = world.standin.transport()
    async with httpx.AsyncClient(transport=transport, base_url=world.standin.issuer) as client:
        yield client


def assertion(world: World, *, drop: tuple[str, ...] = (), **overrides: Any) -> str:
    """A client assertion for the world's API app, with claims or header changed."""
    now = int(world.clock.now)
    claims: dict[str, Any] = {
        "iss": world.app.client_id,
        "sub": world.app.client_id,
        "aud": world.standin.issuer,
        "iat": now - 5,
        "exp": now + 600,
        "jti": "j1",
    }
    headers: dict[str, Any] = {"kid": world.app.key_id}
    for name, value in overrides.items():
        if name.startswith("header_"):
            headers[name.removeprefix("header_")] = value
        else:
            claims[name] = value
    for name in drop:
        claims.pop(name, None)
        headers.pop(name, None)
    key = overrides.get("signing_key", world.app.private_key)
    assert key is not None
    claims.pop("signing_key", None)
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


async def introspect(http: httpx.AsyncClient, token: str, **form: str) -> httpx.Response:
    return await http.post("/oauth/v2/introspect", data={"token": token, **form})


async def with_assertion(http: httpx.AsyncClient, token: str, signed: str) -> httpx.Response:
    return await introspect(
        http, token, client_assertion_type=CLIENT_ASSERTION_TYPE, client_assertion=signed
    )


async def test_valid_assertion_gets_zitadel_shaped_answer(
    world: World, http: httpx.AsyncClient
) -> None:
    token = world.token(
        scopes=[
            "openid",
            "profile",
            "email",
            "urn:zitadel:iam:user:resourceowner",
            "urn:zitadel:iam:user:metadata",
        ]
    )
    response = await with_assertion(http, token, assertion(world))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["active"] is True
    assert isinstance(body["aud"], list)
    assert world.project.id in body["aud"]
    assert body["scope"].split() == [
        "openid",
        "profile",
        "email",
        "urn:zitadel:iam:user:resourceowner",
        "urn:zitadel:iam:user:metadata",
    ]
    assert body["token_type"] == "Bearer"
    assert all(isinstance(body[name], int) for name in ("exp", "iat", "nbf"))
    assert body["iss"] == world.standin.issuer
    assert body["username"] == body["preferred_username"] == "alice"
    assert body["email_verified"] is True
    assert body["locale"] is None
    org = world.user.org
    assert body["urn:zitadel:iam:user:resourceowner:id"] == org.id
    assert body["urn:zitadel:iam:user:resourceowner:primary_domain"] == org.primary_domain
    assert body["urn:zitadel:iam:user:metadata"] == {"tier": "Z29sZA"}  # unpadded base64url
    roles = {"admin": {org.id: org.primary_domain}, "reader": {org.id: org.primary_domain}}
    assert body["urn:zitadel:iam:org:project:roles"] == roles
    assert body[f"urn:zitadel:iam:org:project:{world.project.id}:roles"] == roles


async def test_claims_are_scope_gated(world: World, http: httpx.AsyncClient) -> None:
    body = (await with_assertion(http, world.token(scopes=["openid"]), assertion(world))).json()
    for absent in ("username", "name", "email", "urn:zitadel:iam:user:resourceowner:id"):
        assert absent not in body
    assert "urn:zitadel:iam:user:metadata" not in body


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"drop": ("kid",)}, "kid is required"),
        ({"header_kid": "999"}, "unknown kid"),
        ({"iss": "someone-else"}, "iss must be the key owner"),
        ({"sub": "someone-else"}, "sub must be the key owner"),
        ({"aud": "https://elsewhere.test"}, "aud without the issuer"),
        ({"aud": "http://zitadel.localhost/oauth/v2/introspect"}, "the endpoint alone"),
        ({"aud": "http://zitadel.localhost/"}, "a trailing slash"),
        ({"drop": ("exp",)}, "exp is required"),
        ({"exp": (1_800_000_000 + 1)}, "exp must be over 1 s ahead"),
        ({"drop": ("iat",)}, "iat is required"),
        ({"iat": (1_800_000_000 + 2)}, "iat over 1 s ahead"),
        ({"iat": (1_800_000_000 - 3601)}, "iat over an hour old"),
    ],
)
async def test_each_assertion_rule(
    world: World, http: httpx.AsyncClient, change: dict[str, Any], why: str
) -> None:
    response = await with_assertion(http, world.token(), assertion(world, **change))
    assert response.status_code == 400, why
    assert response.json()["error"] == "unauthorized_client", why


async def test_assertion_signed_by_another_key(world: World, http: httpx.AsyncClient) -> None:
    other = world.standin.add_api_app(world.project, "other")
    signed = assertion(world, signing_key=other.private_key)
    response = await with_assertion(http, world.token(), signed)
    assert (response.status_code, response.json()["error"]) == (400, "unauthorized_client")


async def test_boundaries_that_pass(world: World, http: httpx.AsyncClient) -> None:
    now = int(world.clock.now)
    for change in (
        {"iat": now + 1},
        {"iat": now - 3600},
        {"exp": now + 2},
        {
            "aud": [
                "x",
                world.standin.issuer,
            ]
        },
    ):
        response = await with_assertion(http, world.token(), assertion(world, **change))
        assert response.status_code == 200, change


async def test_jti_is_not_tracked(world: World, http: httpx.AsyncClient) -> None:
    signed = assertion(world)
    for _ in range(3):
        assert (await with_assertion(http, world.token(), signed)).json()["active"] is True


async def test_jti_tracking_when_asked(world: World, http: httpx.AsyncClient) -> None:
    world.standin.track_jti = True
    signed = assertion(world)
    assert (await with_assertion(http, world.token(), signed)).status_code == 200
    assert (await with_assertion(http, world.token(), signed)).status_code == 400


async def test_basic_auth_is_url_unescaped(world: World, http: httpx.AsyncClient) -> None:
    app = world.standin.add_api_app(world.project, "basic", auth="basic")
    assert app.client_secret is not None
    encoded = f"{quote_plus(app.client_id, safe='')}:{quote_plus(app.client_secret, safe='')}"
    assert "%40" in encoded
    header = "Basic " + base64.b64encode(encoded.encode()).decode()
    response = await http.post(
        "/oauth/v2/introspect", data={"token": world.token()}, headers={"Authorization": header}
    )
    assert response.json()["active"] is True
    wrong = "Basic " + base64.b64encode(f"{app.client_id}:nope".encode()).decode()
    response = await http.post(
        "/oauth/v2/introspect", data={"token": world.token()}, headers={"Authorization": wrong}
    )
    assert (response.status_code, response.json()["error"]) == (400, "unauthorized_client")


async def test_request_errors(world: World, http: httpx.AsyncClient) -> None:
    missing = await http.post(
        "/oauth/v2/introspect",
        data={"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion(world)},
    )
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")
    no_auth = await introspect(http, world.token())
    assert (no_auth.status_code, no_auth.json()["error"]) == (400, "unauthorized_client")
    both = await http.post(
        "/oauth/v2/introspect",
        data={
            "token": world.token(),
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion(world),
        },
        headers={"Authorization": "Basic " + base64.b64encode(b"a:b").decode()},
    )
    assert (both.status_code, both.json()["error"]) == (400, "invalid_request")


async def test_inactive_is_exactly_active_false(world: World, http: httpx.AsyncClient) -> None:
    other_project = world.standin.add_project("other")
    revoked = world.token()
    world.standin.revoke(revoked)
    expired = world.token(lifetime=5)
    world.clock.advance(6)
    for token in (
        "unknown",
        revoked,
        expired,
        world.standin.issue_token(world.user, other_project),
    ):
        response = await with_assertion(http, token, assertion(world))
        assert response.status_code == 200
        assert response.json() == {"active": False}


async def test_deactivated_user_is_inactive(world: World, http: httpx.AsyncClient) -> None:
    token = world.token()
    world.user.active = False
    assert (await with_assertion(http, token, assertion(world))).json() == {"active": False}


async def test_query_parameters_are_accepted(world: World, http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/oauth/v2/introspect",
        params={
            "token": world.token(),
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion(world),
        },
    )
    assert response.json()["active"] is True


def service_user_assertion(standin: ZitadelStandIn, user: Any, now: float) -> str:
    claims = {
        "iss": user.id,
        "sub": user.id,
        "aud": standin.issuer,
        "iat": int(now),
        "exp": int(now) + 300,
    }
    return jwt.encode(claims, user.private_key, algorithm="RS256", headers={"kid": user.key_id})


async def test_jwt_profile_grant_for_service_users(world: World, http: httpx.AsyncClient) -> None:
    robot = world.standin.add_service_user(
        world.user.org, "robot", roles={world.project: ["reader"]}
    )
    audience_scope = f"urn:zitadel:iam:org:project:id:{world.project.id}:aud"
    granted = await http.post(
        "/oauth/v2/token",
        data={
            "grant_type": JWT_BEARER,
            "assertion": service_user_assertion(world.standin, robot, world.clock.now),
            "scope": f"openid profile {audience_scope}",
        },
    )
    assert granted.status_code == 200
    token = granted.json()["access_token"]
    body = (await with_assertion(http, token, assertion(world))).json()
    assert body["active"] is True
    assert body["sub"] == robot.id
    assert body["urn:zitadel:iam:org:project:roles"] == {
        "reader": {world.user.org.id: world.user.org.primary_domain}
    }
    # Without the audience scope the token is not for this API: inactive.
    plain = await http.post(
        "/oauth/v2/token",
        data={
            "grant_type": JWT_BEARER,
            "assertion": service_user_assertion(world.standin, robot, world.clock.now),
            "scope": "openid",
        },
    )
    other = (await with_assertion(http, plain.json()["access_token"], assertion(world))).json()
    assert other == {"active": False}


async def test_client_credentials_grant(world: World, http: httpx.AsyncClient) -> None:
    robot = world.standin.add_service_user(world.user.org, "robot", with_secret=True)
    assert robot.client_secret is not None
    audience_scope = f"urn:zitadel:iam:org:project:id:{world.project.id}:aud"
    # The client id of a service user's secret is its login name, as ZITADEL looks it up
    # (clientCredentialsAuth: GetUserByLoginName), not its user id.
    granted = await http.post(
        "/oauth/v2/token",
        data={"grant_type": "client_credentials", "scope": audience_scope},
        auth=(robot.username, robot.client_secret),
    )
    token = granted.json()["access_token"]
    assert (await with_assertion(http, token, assertion(world))).json()["active"] is True
    # ZITADEL's refusals: a wrong secret is its InvalidArgument error, which its oidcError
    # turns into 400 invalid_request; an unknown name is 400 invalid_client ("client not found").
    refused = await http.post(
        "/oauth/v2/token", data={"grant_type": "client_credentials"}, auth=(robot.username, "x")
    )
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid_request",
        "error_description": "Errors.User.Machine.Secret.Invalid",
    }
    unknown = await http.post(
        "/oauth/v2/token", data={"grant_type": "client_credentials"}, auth=(robot.id, "x")
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_client"


async def test_revocation_endpoint(world: World, http: httpx.AsyncClient) -> None:
    token = world.token()
    revoke = await http.post(
        "/oauth/v2/revoke",
        data={
            "token": token,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion(world),
        },
    )
    assert revoke.status_code == 200
    assert (await with_assertion(http, token, assertion(world))).json() == {"active": False}


async def test_discovery_and_jwks(world: World, http: httpx.AsyncClient) -> None:
    document = (await http.get("/.well-known/openid-configuration")).json()
    assert document["issuer"] == world.standin.issuer
    assert document["introspection_endpoint"] == world.standin.issuer + "/oauth/v2/introspect"
    assert "private_key_jwt" in document["introspection_endpoint_auth_methods_supported"]
    keys = (await http.get("/oauth/v2/keys")).json()["keys"]
    assert keys
    assert keys[0]["kty"] == "RSA"
    assert "d" not in keys[0]


async def test_introspection_counter_and_faults(world: World, http: httpx.AsyncClient) -> None:
    world.standin.inject("status", status=503, times=2)
    world.standin.inject("garbage")
    codes = [
        (await with_assertion(http, world.token(), assertion(world))).status_code for _ in range(4)
    ]
    assert codes == [503, 503, 200, 200]
    assert world.standin.introspection_calls == 4
    world.standin.inject("rate_limit", seconds=7)
    limited = await with_assertion(http, world.token(), assertion(world))
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")


def test_real_clock_default() -> None:
    standin = ZitadelStandIn()
    assert abs(standin.clock() - time.time()) < 5
