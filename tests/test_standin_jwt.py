"""The stand-in's JWT access tokens: ZITADEL's claims, its web keys and their rotation, the
grants that issue JWTs for applications and service users set to, and the fixtures."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from fastapi_zitadel import InvalidTokenError, ZitadelIntrospection
from fastapi_zitadel.testing import StandInProject, ZitadelStandIn

from .helpers import FakeClock


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def _jwks(standin: ZitadelStandIn) -> httpx.Response:
    async with httpx.AsyncClient(transport=standin.transport(), base_url=standin.issuer) as http:
        return await http.get("/oauth/v2/keys")


async def test_jwt_access_tokens_carry_zitadels_claims() -> None:
    standin = ZitadelStandIn()
    project = StandInProject(standin)
    project.user("alice", roles=["admin"]).metadata["tier"] = b"gold"
    token = project.token(
        "alice",
        jwt=True,
        scopes=(
            "openid",
            "profile",
            "email",
            "urn:zitadel:iam:user:resourceowner",
            "urn:zitadel:iam:user:metadata",
        ),
    )
    header, claims = jwt.get_unverified_header(token), _claims(token)
    assert header == {"alg": "RS256", "kid": standin.signing_key_id, "typ": "JWT"}
    assert set(claims) == {
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "urn:zitadel:iam:user:resourceowner:id",
        "urn:zitadel:iam:user:resourceowner:name",
        "urn:zitadel:iam:user:resourceowner:primary_domain",
        "urn:zitadel:iam:user:metadata",
        "urn:zitadel:iam:org:project:roles",
        f"urn:zitadel:iam:org:project:{project.project.id}:roles",
    }
    assert claims["aud"] == [project.app.client_id, project.project.id]
    assert claims["urn:zitadel:iam:user:metadata"] == {"tier": "Z29sZA"}
    response = await _jwks(standin)
    assert response.headers["cache-control"] == "max-age=300, must-revalidate"
    (jwk,) = response.json()["keys"]
    verified = jwt.decode(
        token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience=project.project.id
    )
    assert verified == claims


async def test_rotation_keeps_the_old_key_for_its_grace_period() -> None:
    clock = FakeClock()
    standin = ZitadelStandIn(clock=clock)
    first = standin.signing_key_id
    second = standin.rotate_signing_key(grace_period=100)
    third = standin.rotate_signing_key(algorithm="EdDSA", grace_period=50)
    assert standin.signing_key_id == third
    assert standin.published_key_ids == [first, second, third]
    clock.advance(60)
    assert standin.published_key_ids == [first, third]  # each its own grace period
    clock.advance(50)
    assert standin.published_key_ids == [third]
    keys = (await _jwks(standin)).json()["keys"]
    assert [(k["kid"], k["kty"], k["alg"], "d" in k) for k in keys] == [
        (third, "OKP", "EdDSA", False)
    ]


async def test_introspection_of_a_jwt_answers_as_for_an_opaque_token() -> None:
    standin = ZitadelStandIn()
    project = StandInProject(standin)
    jwt_token = project.token("alice", roles=["admin"], jwt=True)
    opaque = project.token("alice")
    transport = standin.transport()
    async with project.introspection(http_client=httpx.AsyncClient(transport=transport)) as z:
        from_jwt, from_opaque = await z.verify(jwt_token), await z.verify(opaque)
    skip = {"token_id", "claims", "issued_at", "expires_at", "not_before"}
    assert from_jwt.model_dump(exclude=skip) == from_opaque.model_dump(exclude=skip)
    standin.revoke(jwt_token)
    async with project.introspection(http_client=httpx.AsyncClient(transport=transport)) as z:
        with pytest.raises(InvalidTokenError, match="not active"):
            await z.verify(jwt_token)


async def test_service_users_set_to_jwt_get_jwts_from_the_token_endpoint() -> None:
    standin = ZitadelStandIn()
    project = StandInProject(standin)
    robot = standin.add_service_user(
        project.org,
        "robot",
        roles={project.project: ["writer"]},
        with_secret=True,
        jwt_access_tokens=True,
    )
    plain = standin.add_service_user(project.org, "plain", with_secret=True)
    scope = f"openid urn:zitadel:iam:org:project:id:{project.project.id}:aud"
    async with httpx.AsyncClient(transport=standin.transport(), base_url=standin.issuer) as http:
        tokens = {}
        for user in (robot, plain):
            assert user.client_secret is not None
            answer = await http.post(
                "/oauth/v2/token",
                data={"grant_type": "client_credentials", "scope": scope},
                auth=(user.username, user.client_secret),  # ZITADEL: the login name
            )
            tokens[user.username] = answer.json()["access_token"]
    assert jwt.get_unverified_header(tokens["robot"])["kid"] == standin.signing_key_id
    assert _claims(tokens["robot"])["sub"] == robot.id
    assert tokens["plain"].count(".") == 4  # opaque
    zitadel = ZitadelIntrospection(
        standin.issuer,
        validation="local",
        audience=project.project.id,
        project_id=project.project.id,
        http_client=httpx.AsyncClient(transport=standin.transport()),
    )
    async with zitadel:
        principal = await zitadel.verify(tokens["robot"])
    assert principal.verified_by == "jwt"
    assert principal.has_role("writer")


async def test_web_apps_set_to_jwt_get_jwts_from_the_code_flow() -> None:
    clock = FakeClock(time.time())
    standin = ZitadelStandIn(clock=clock)
    project = StandInProject(standin)
    project.user("alice", roles=["admin"])
    redirect = "http://app.localhost/cb"
    web = standin.add_web_app(project.project, redirect_uris=[redirect], jwt_access_tokens=True)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode()
    async with httpx.AsyncClient(transport=standin.transport(), base_url=standin.issuer) as http:
        page = await http.get(
            "/oauth/v2/authorize",
            params={
                "client_id": web.client_id,
                "redirect_uri": redirect,
                "response_type": "code",
                "scope": "openid",
                "code_challenge": challenge.rstrip("="),
                "code_challenge_method": "S256",
            },
        )
        request_id = page.text.split('name="auth_request" value="')[1].split('"')[0]
        alice = project.user("alice")
        login = await http.post(
            "/ui/login/select", data={"auth_request": request_id, "user": alice.id}
        )
        code = login.headers["location"].split("code=")[1].split("&")[0]
        body = (
            await http.post(
                "/oauth/v2/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "client_id": web.client_id,
                    "redirect_uri": redirect,
                    "code_verifier": verifier,
                },
            )
        ).json()
    access = body["access_token"]
    assert _claims(access)["aud"][0] == web.client_id
    id_claims = _claims(body["id_token"])
    assert id_claims["at_hash"]
    assert project.project.id in id_claims["aud"]
    zitadel = ZitadelIntrospection(
        standin.issuer,
        validation="local",
        audience=project.project.id,
        http_client=httpx.AsyncClient(transport=standin.transport()),
        clock=clock,
    )
    async with zitadel:
        assert (await zitadel.verify(access)).verified_by == "jwt"


def test_the_fixture_asks_for_a_jwt(zitadel_token: Callable[..., str]) -> None:
    token = zitadel_token("alice", roles=["reader"], jwt=True)
    assert jwt.get_unverified_header(token)["typ"] == "JWT"
    assert zitadel_token("bob").count(".") == 4


def test_a_fresh_standin_signs_with_one_key_whatever_thread_signs_first() -> None:
    """The first key is made on first use, from whichever thread comes first (the test
    signing, the served JWKS endpoint, the event worker): all of them get the same key, and
    the JWKS publishes it. Two racing first uses once made two keys, and a JWKS read between
    them missed the key a token was signed with (a 401 in tests/test_standin_receiver.py)."""
    standin = ZitadelStandIn()
    start = threading.Barrier(8)
    kids: list[str] = []

    def sign() -> None:
        start.wait()
        kids.append(jwt.get_unverified_header(standin.sign_jwt({"sub": "x"}))["kid"])

    threads = [threading.Thread(target=sign) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(kids) == 8
    assert set(kids) == {standin.signing_key_id}
    assert standin.published_key_ids == [standin.signing_key_id]
    standin.close()
