"""Items of the outside security review that are not about the shared tier: each test failed
against the code the review saw."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from fastapi import Depends, FastAPI, WebSocket
from fastapi.testclient import TestClient

from fastapi_zitadel import (
    ClientCredentialsRejected,
    ConfigurationError,
    IdentityProviderUnavailable,
    InvalidTokenError,
    KeyFileError,
    Principal,
    ZitadelIntrospection,
)
from fastapi_zitadel.config import ZitadelConfig

from .helpers import INTROSPECT_URL, ISSUER, World, active_claims

NOW_CLAIMS = active_claims(time.time())  # the engines below use the real clock


def _engine(app_key: dict[str, Any], handler: Any, **options: Any) -> ZitadelIntrospection:
    return ZitadelIntrospection(
        ISSUER,
        key_file=app_key,
        introspection_endpoint=INTROSPECT_URL,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        max_retries=0,
        **options,
    )


# 9. token_type ---------------------------------------------------------------------------


@pytest.mark.parametrize("token_type", ["refresh_token", "id_token", "urn:x:id-token", "N_A"])
async def test_only_access_tokens_pass(app_key: dict[str, Any], token_type: str) -> None:
    answer = {**NOW_CLAIMS, "token_type": token_type}
    zitadel = _engine(app_key, lambda request: httpx.Response(200, json=answer))
    with pytest.raises(InvalidTokenError, match="not an access token"):
        await zitadel.verify("token")


@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "access_token", None])
async def test_access_token_types_pass(app_key: dict[str, Any], token_type: str | None) -> None:
    answer = {**NOW_CLAIMS, "token_type": token_type}
    if token_type is None:
        del answer["token_type"]
    zitadel = _engine(app_key, lambda request: httpx.Response(200, json=answer))
    assert (await zitadel.verify("token")).subject == "user-1"


# 10. scopes split on U+0020 only ---------------------------------------------------------


@pytest.mark.parametrize(
    "separator", ["\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u3000"]
)
async def test_a_scope_is_never_split_on_other_whitespace(
    app_key: dict[str, Any], separator: str
) -> None:
    granted = f"openid urn:zitadel:iam:org:project:id:1:aud{separator}admin"
    answer = {**NOW_CLAIMS, "scope": granted}
    zitadel = _engine(app_key, lambda request: httpx.Response(200, json=answer))
    principal = await zitadel.verify("token")
    assert not principal.has_scope("admin")
    assert principal.scopes == {"openid"}  # the invalid token is dropped, not split


# 11. servers that refuse a reused assertion with other errors ----------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, "invalid_client"),
        (401, "invalid_client"),
        (400, "unauthorized_client"),
        (403, "unauthorized_client"),
        (400, "invalid_request"),
        (403, "invalid_client"),
    ],
)
async def test_a_reused_assertion_refused_any_way_is_retried_fresh(
    app_key: dict[str, Any], status: int, error: str
) -> None:
    """The server refuses an assertion it has seen: the retry with a fresh one succeeds and
    the library switches to one assertion per call, instead of opening its breaker."""
    seen: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        jti = jwt.decode(form["client_assertion"], options={"verify_signature": False})["jti"]
        if jti in seen:
            return httpx.Response(status, json={"error": error})
        seen.add(jti)
        return httpx.Response(200, json=NOW_CLAIMS)

    zitadel = _engine(app_key, handler, cache_ttl=0, circuit_breaker_threshold=2)
    for _ in range(6):
        assert (await zitadel.verify("token")).subject == "user-1"
    assert zitadel.circuit_state == "closed"
    assert zitadel.introspection_calls == 7  # one refused reuse, then a fresh one each time


async def test_invalid_request_for_a_fresh_assertion_is_not_our_credentials(
    app_key: dict[str, Any],
) -> None:
    zitadel = _engine(
        app_key,
        lambda request: httpx.Response(400, json={"error": "invalid_request"}),
        single_use_assertion=True,
    )
    with pytest.raises(IdentityProviderUnavailable, match="refused: HTTP 400 invalid_request"):
        await zitadel.verify("token")


async def test_403_unauthorized_client_is_our_credentials(app_key: dict[str, Any]) -> None:
    zitadel = _engine(
        app_key,
        lambda request: httpx.Response(403, json={"error": "unauthorized_client"}),
        single_use_assertion=True,
    )
    with pytest.raises(ClientCredentialsRejected) as info:
        await zitadel.verify("token")
    assert info.value.status == 403
    assert app_key["keyId"] in info.value.hint


# 12. assertion_audience ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, ISSUER),
        (INTROSPECT_URL, INTROSPECT_URL),
        ([ISSUER, INTROSPECT_URL], [ISSUER, INTROSPECT_URL]),
        (f"{ISSUER}, {INTROSPECT_URL}", [ISSUER, INTROSPECT_URL]),
    ],
)
async def test_assertion_audience(app_key: dict[str, Any], setting: Any, expected: Any) -> None:
    audiences: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        claims = jwt.decode(form["client_assertion"], options={"verify_signature": False})
        audiences.append(claims["aud"])
        return httpx.Response(200, json=NOW_CLAIMS)

    zitadel = _engine(app_key, handler, assertion_audience=setting)
    await zitadel.verify("token")
    assert audiences == [expected]


def test_assertion_audience_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, app_key_path: Path
) -> None:
    monkeypatch.setenv("ZITADEL_ISSUER", ISSUER)
    monkeypatch.setenv("ZITADEL_KEY_FILE", str(app_key_path))
    monkeypatch.setenv("ZITADEL_ASSERTION_AUDIENCE", INTROSPECT_URL)
    assert ZitadelIntrospection.from_env().config.assertion_audience == (INTROSPECT_URL,)


# 13. our own queue does not open the circuit ---------------------------------------------


async def test_our_own_queue_never_opens_the_circuit(world: World) -> None:
    """300 garbage tokens against a healthy IdP, with room for one introspection at a time:
    requests that waited too long for our own slot are 503 for themselves only; the IdP
    never failed, so the circuit stays closed and the next valid token passes."""
    async with world.client(
        max_concurrent_introspections=1, timeout=0.05, circuit_breaker_threshold=2
    ) as zitadel:
        import asyncio

        garbage = [f"garbage-{index}" for index in range(300)]
        outcomes = await asyncio.gather(
            *(zitadel.verify(token) for token in garbage), return_exceptions=True
        )
        queued = [o for o in outcomes if isinstance(o, IdentityProviderUnavailable)]
        assert queued, "nothing had to wait: the test does not test the queue"
        assert all("introspections in flight" in o.description for o in queued)
        assert zitadel.circuit_state == "closed"
        assert zitadel.metrics().circuit_rejections == 0
        assert (await zitadel.verify(world.token())).subject == world.user.id


# 14. a WebSocket's memo does not outlive a revocation ------------------------------------


def test_a_long_lived_socket_sees_a_revocation(world: World) -> None:
    zitadel = world.client(cache_ttl=3600)
    app = FastAPI()
    zitadel.install(app)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, principal: Principal = Depends(zitadel)) -> None:  # noqa: B008
        await websocket.accept()
        while True:
            message = await websocket.receive_text()
            if message == "revoke":
                await zitadel.invalidate(token)
                await websocket.send_text("revoked")
                continue
            try:  # how a long-lived socket re-checks its caller (docs/scopes-and-roles.md)
                again = await zitadel.principal_or_http_error(websocket)
            except Exception:
                await websocket.close(code=1008)
                return
            await websocket.send_text(again.subject or "")

    token = world.token()
    with (
        TestClient(app) as client,
        client.websocket_connect("/ws", headers={"Authorization": f"Bearer {token}"}) as socket,
    ):
        socket.send_text("who")
        assert socket.receive_text() == world.user.id
        world.standin.revoke(token)
        socket.send_text("revoke")
        assert socket.receive_text() == "revoked"
        socket.send_text("who")
        message = socket.receive()
        assert message["type"] == "websocket.close"
        assert message["code"] == 1008


# 16. key material never reaches an error message -----------------------------------------


def _key_material(app_key: dict[str, Any]) -> list[str]:
    return [json.dumps(app_key), app_key["key"], json.dumps(app_key, indent=2)]


def _leaks(message: str, app_key: dict[str, Any]) -> bool:
    lines = [line for line in app_key["key"].splitlines() if "-----" not in line]
    return "PRIVATE KEY" in message or any(line in message for line in lines)


def _failure(build: Any) -> str:
    """The message construction failed with ("" when it did not fail)."""
    try:
        build()
    except (ConfigurationError, KeyFileError, TypeError) as exc:
        return str(exc)
    return ""


TEXT_SETTINGS = [
    name
    for name, field in ZitadelConfig.model_fields.items()
    if "str" in str(field.annotation) or "Path" in str(field.annotation)
]


@pytest.mark.parametrize("setting", TEXT_SETTINGS)
def test_no_configuration_error_shows_key_material_keywords(
    app_key: dict[str, Any], setting: str
) -> None:
    for material in _key_material(app_key):
        options: dict[str, Any] = {"issuer": ISSUER, "client_id": "a", "client_secret": "b"}
        options[setting] = material
        build = functools.partial(ZitadelIntrospection, **options)
        assert not _leaks(_failure(build), app_key), setting


@pytest.mark.parametrize("setting", TEXT_SETTINGS)
def test_no_configuration_error_shows_key_material_environment(
    app_key: dict[str, Any], setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for material in _key_material(app_key):
        for name in ("ISSUER", "CLIENT_ID", "CLIENT_SECRET"):
            monkeypatch.setenv(f"ZITADEL_{name}", {"ISSUER": ISSUER}.get(name, "x"))
        monkeypatch.setenv(f"ZITADEL_{setting.upper()}", material)
        assert not _leaks(_failure(ZitadelIntrospection.from_env), app_key), setting


def test_json_in_the_path_variable_is_named(
    app_key: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZITADEL_ISSUER", ISSUER)
    monkeypatch.setenv("ZITADEL_KEY_FILE", json.dumps(app_key))
    with pytest.raises(ConfigurationError, match="ZITADEL_KEY_FILE holds a path") as info:
        ZitadelIntrospection.from_env()
    assert not _leaks(str(info.value), app_key)
