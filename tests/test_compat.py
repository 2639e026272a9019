"""Every dependency the library offers answers 401 or 200, never 422, on every supported
FastAPI: `python3 scripts/dev.py compat oldest` runs this on the oldest supported set
(FastAPI 0.115.0, Starlette 0.37.2, pydantic 2.7.0, Python 3.10), where string annotations on a
dependency's ``__call__`` made FastAPI ask for ``conn`` and ``security_scopes`` as query
parameters (422) or fail to declare the route at all.

No ``from __future__ import annotations`` here either: a user's app may have it or not, and
the routes below are declared the way the README declares them."""

from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Security, WebSocket
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import fastapi_zitadel
from fastapi_zitadel import Principal, ZitadelIntrospection
from fastapi_zitadel.defaults import set_default_zitadel

from .helpers import World

ROUTES = (
    "/depends",
    "/security",
    "/optional",
    "/introspected",
    "/scope",
    "/any-scope",
    "/role",
    "/any-role",
    "/module-role",
    "/user",
    "/in-dependencies",
)


@pytest.fixture
def zitadel(world: World) -> Iterator[ZitadelIntrospection]:
    zitadel = world.client(principal_loader=_load_user)
    set_default_zitadel(zitadel)
    yield zitadel
    set_default_zitadel(None)


async def _load_user(principal: Principal) -> dict[str, str]:
    return {"name": principal.subject or ""}


def _app(zitadel: ZitadelIntrospection) -> FastAPI:
    app = FastAPI()
    zitadel.install(app)

    @app.get("/depends")
    async def depends(principal: Annotated[Principal, Depends(zitadel)]) -> Any:
        return principal.subject

    @app.get("/security")
    async def security(
        principal: Annotated[Principal, Security(zitadel, scopes=["openid"])],
    ) -> Any:
        return principal.subject

    @app.get("/optional")
    async def optional(principal: Annotated[Principal | None, Depends(zitadel.optional)]) -> Any:
        return principal.subject if principal else "anonymous"

    @app.get("/introspected")
    async def introspected(principal: Annotated[Principal, Depends(zitadel.introspected)]) -> Any:
        return principal.subject

    @app.get("/scope")
    async def scope(
        principal: Annotated[Principal, Depends(zitadel.require_scope("openid"))],
    ) -> Any:
        return principal.subject

    @app.get("/any-scope")
    async def any_scope(
        principal: Annotated[Principal, Depends(zitadel.require_any_scope("openid", "x"))],
    ) -> Any:
        return principal.subject

    @app.get("/role")
    async def role(principal: Annotated[Principal, Depends(zitadel.require_role("admin"))]) -> Any:
        return principal.subject

    @app.get("/any-role")
    async def any_role(
        principal: Annotated[Principal, Depends(zitadel.require_any_role("admin", "x"))],
    ) -> Any:
        return principal.subject

    @app.get("/module-role")
    async def module_role(
        principal: Annotated[Principal, Depends(fastapi_zitadel.defaults.require_role("admin"))],
    ) -> Any:
        return principal.subject

    @app.get("/user")
    async def user(me: Annotated[Any, Depends(zitadel.user)]) -> Any:
        return me["name"]

    @app.get("/in-dependencies", dependencies=[Depends(zitadel.require_role("reader"))])
    async def in_dependencies() -> Any:
        return "ok"

    @app.websocket("/ws")
    async def ws(socket: WebSocket, principal: Annotated[Principal, Depends(zitadel)]) -> None:
        await socket.accept()
        await socket.send_text(principal.subject or "")
        await socket.close()

    return app


async def test_every_dependency_answers_401_or_200_never_422(
    world: World, zitadel: ZitadelIntrospection
) -> None:
    app = _app(zitadel)
    token = world.token(scopes=["openid", "urn:zitadel:iam:org:project:role:admin"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        for path in ROUTES:
            anonymous = await http.get(path)
            expected = 200 if path == "/optional" else 401
            assert anonymous.status_code == expected, (path, anonymous.text)
            served = await http.get(path, headers={"Authorization": f"Bearer {token}"})
            assert served.status_code == 200, (path, served.text)
            assert served.json() in (world.user.id, "ok"), path


def test_no_library_parameter_leaks_into_openapi(zitadel: ZitadelIntrospection) -> None:
    schema = _app(zitadel).openapi()
    for path in ROUTES:
        operation = schema["paths"][path]["get"]
        assert "parameters" not in operation, (path, operation.get("parameters"))
        assert any("ZITADEL" in requirement for requirement in operation["security"]), path
    assert schema["paths"]["/security"]["get"]["security"] == [{"ZITADEL": ["openid"]}]
    assert schema["paths"]["/scope"]["get"]["security"] == [{"ZITADEL": ["openid"]}]


def test_websocket_route_accepts_a_token_and_refuses_none(
    world: World, zitadel: ZitadelIntrospection
) -> None:
    token = world.token(scopes=["openid"])
    with TestClient(_app(zitadel)) as client:
        with client.websocket_connect("/ws", headers={"Authorization": f"Bearer {token}"}) as ws:
            assert ws.receive_text() == world.user.id
        with pytest.raises(WebSocketDisconnect), client.websocket_connect("/ws") as ws:
            ws.receive_text()
