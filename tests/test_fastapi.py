"""The FastAPI layer through real apps: every status and header of RFC 6750, scopes and roles
on app, router and route, the optional mode, WebSockets, overrides and per-request reuse."""

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Security, WebSocket
from fastapi.routing import APIRoute
from fastapi.security import SecurityScopes
from starlette.requests import HTTPConnection
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from fastapi_zitadel import (
    ConfigurationError,
    InsufficientScopeError,
    Principal,
    ZitadelIntrospection,
)
from fastapi_zitadel.testing import override_principal

from .helpers import World


def build_app(zitadel: ZitadelIntrospection, org_id: str) -> FastAPI:
    app = FastAPI()
    zitadel.install(app)

    @app.get("/public")
    async def public() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(zitadel)]) -> dict[str, Any]:
        return {"sub": principal.subject, "scopes": sorted(principal.scopes)}

    @app.get("/items")
    async def items(
        principal: Annotated[Principal, Security(zitadel, scopes=["items:read"])],
    ) -> dict[str, Any]:
        return {"sub": principal.subject}

    @app.get("/scoped")
    async def scoped(
        principal: Annotated[Principal, Depends(zitadel.require_scope("items:read"))],
    ) -> dict[str, Any]:
        return {"sub": principal.subject}

    @app.get("/write", dependencies=[Depends(zitadel.require_scope("items:read", "items:write"))])
    async def write() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/any", dependencies=[Depends(zitadel.require_any_scope("items:write", "openid"))])
    async def any_scope() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/admin", dependencies=[Depends(zitadel.require_role("admin"))])
    async def admin() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/org-admin", dependencies=[Depends(zitadel.require_role("admin", org_id=org_id))])
    async def org_admin() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/other-org", dependencies=[Depends(zitadel.require_role("admin", org_id="999"))])
    async def other_org() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/all-roles", dependencies=[Depends(zitadel.require_role("admin", "owner"))])
    async def all_roles() -> dict[str, bool]:
        return {"ok": True}

    # Scopes required around a require_* (every kind): checked as well as its own rule.
    wrapped = {
        "role": zitadel.require_role("admin"),
        "any-role": zitadel.require_any_role("admin", "owner"),
        "any-scope": zitadel.require_any_scope("items:read", "openid"),
        "scope": zitadel.require_scope("items:read"),
    }
    for name, requirement in wrapped.items():

        @app.get(f"/wrapped/{name}", dependencies=[Security(requirement, scopes=["items:write"])])
        async def wrapped_route() -> dict[str, bool]:
            return {"ok": True}

    @app.get("/maybe")
    async def maybe(
        principal: Annotated[Principal | None, Depends(zitadel.optional)],
    ) -> dict[str, Any]:
        return {"sub": principal.subject if principal else None}

    router = APIRouter(prefix="/shop", dependencies=[Security(zitadel, scopes=["openid"])])

    @router.get("/orders", dependencies=[Depends(zitadel.require_scope("items:read"))])
    async def orders(principal: Annotated[Principal, Depends(zitadel)]) -> dict[str, Any]:
        return {"sub": principal.subject}

    app.include_router(router)

    @app.websocket("/ws")
    async def socket(
        websocket: WebSocket, principal: Annotated[Principal, Depends(zitadel)]
    ) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": principal.subject})
        await websocket.close()

    return app


@pytest.fixture
async def zitadel(world: World) -> AsyncIterator[ZitadelIntrospection]:
    async with world.client() as client:
        yield client


@pytest.fixture
def app(world: World, zitadel: ZitadelIntrospection) -> FastAPI:
    return build_app(zitadel, world.user.org.id)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge(response: httpx.Response) -> str:
    # httpx types Headers.get as returning Any; a header value is a str.
    return cast(str, response.headers.get("www-authenticate", ""))


READ = ["openid", "items:read"]


async def test_public_route_needs_nothing(http: httpx.AsyncClient) -> None:
    assert (await http.get("/public")).status_code == 200


async def test_no_token_is_401_without_error_code(http: httpx.AsyncClient) -> None:
    response = await http.get("/me")
    assert response.status_code == 401
    assert challenge(response) == 'Bearer realm="api"'
    assert response.json()["detail"]["error"] == "missing_token"


async def test_valid_token(world: World, http: httpx.AsyncClient) -> None:
    response = await http.get("/me", headers=bearer(world.token(scopes=READ)))
    assert response.status_code == 200
    assert response.json() == {"sub": world.user.id, "scopes": ["items:read", "openid"]}


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
async def test_scheme_is_case_insensitive(
    world: World, http: httpx.AsyncClient, scheme: str
) -> None:
    response = await http.get("/me", headers={"Authorization": f"{scheme} {world.token()}"})
    assert response.status_code == 200


async def test_unknown_token_is_invalid_token(http: httpx.AsyncClient) -> None:
    response = await http.get("/me", headers=bearer("unknown-token"))
    assert response.status_code == 401
    header = challenge(response)
    assert header.startswith('Bearer realm="api", error="invalid_token", error_description="')
    assert response.json()["detail"] == {
        "error": "invalid_token",
        "error_description": "the token is not active",
    }


async def test_expired_token(world: World, http: httpx.AsyncClient) -> None:
    token = world.token(lifetime=10)
    world.clock.advance(11)
    response = await http.get("/me", headers=bearer(token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)


async def test_revoked_token(
    world: World, http: httpx.AsyncClient, zitadel: ZitadelIntrospection
) -> None:
    token = world.token()
    assert (await http.get("/me", headers=bearer(token))).status_code == 200
    world.standin.revoke(token)
    await zitadel.invalidate(token)
    response = await http.get("/me", headers=bearer(token))
    assert response.status_code == 401


async def test_wrong_audience(world: World) -> None:
    async with world.client(audience="another-project") as zitadel:
        app = build_app(zitadel, world.user.org.id)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            response = await http.get("/me", headers=bearer(world.token()))
    assert response.status_code == 401
    assert "audience" in challenge(response)


async def test_missing_scope_is_403_with_scope(world: World, http: httpx.AsyncClient) -> None:
    token = world.token(scopes=["openid"])
    for path in ("/items", "/scoped"):
        response = await http.get(path, headers=bearer(token))
        assert response.status_code == 403
        assert 'error="insufficient_scope"' in challenge(response)
        assert 'scope="items:read"' in challenge(response)
        assert response.json()["detail"]["error"] == "insufficient_scope"
    response = await http.get("/write", headers=bearer(world.token(scopes=READ)))
    assert response.status_code == 403
    assert 'scope="items:read items:write"' in challenge(response)


async def test_scopes_granted(world: World, http: httpx.AsyncClient) -> None:
    token = world.token(scopes=READ)
    for path in ("/items", "/scoped", "/any", "/shop/orders"):
        assert (await http.get(path, headers=bearer(token))).status_code == 200, path


async def test_any_scope(world: World, http: httpx.AsyncClient) -> None:
    response = await http.get("/any", headers=bearer(world.token(scopes=["profile"])))
    assert response.status_code == 403
    assert 'scope="items:write openid"' in challenge(response)


WRAPPED = ("role", "any-role", "any-scope", "scope")


async def test_scopes_around_a_requirement_are_checked_too(
    world: World, http: httpx.AsyncClient, app: FastAPI
) -> None:
    """``Security(zitadel.require_role("admin"), scopes=["items:write"])``: OpenAPI lists
    the scope, so the route must require it; one-level requirements once dropped it (200)."""
    without = world.token(scopes=READ)  # admin, items:read, no items:write
    with_it = world.token(scopes=[*READ, "items:write"])
    schema = (await http.get("/openapi.json")).json()["paths"]
    for name in WRAPPED:
        listed = schema[f"/wrapped/{name}"]["get"]["security"]
        assert any("items:write" in scopes for entry in listed for scopes in entry.values())
        refused = await http.get(f"/wrapped/{name}", headers=bearer(without))
        assert refused.status_code == 403, name
        assert "items:write" in challenge(refused).split("scope=")[-1], name
        granted = await http.get(f"/wrapped/{name}", headers=bearer(with_it))
        assert granted.status_code == 200, name


async def test_an_overridden_guard_gets_the_scopes_around_a_requirement(
    world: World, app: FastAPI, zitadel: ZitadelIntrospection
) -> None:
    """A test's override of the guard sees what the route requires, as FastAPI hands it to
    ``Security(zitadel, ...)`` routes."""
    seen: list[list[str]] = []
    alice = await zitadel.verify(world.token(scopes=READ))

    async def fake(security_scopes: SecurityScopes) -> Principal:
        seen.append(security_scopes.scopes)
        return alice

    app.dependency_overrides[zitadel] = fake
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        assert (await client.get("/wrapped/role")).status_code == 200
    assert seen == [["items:write"]]


async def test_roles(world: World, http: httpx.AsyncClient) -> None:
    token = world.token()
    assert (await http.get("/admin", headers=bearer(token))).status_code == 200
    assert (await http.get("/org-admin", headers=bearer(token))).status_code == 200
    other = await http.get("/other-org", headers=bearer(token))
    assert other.status_code == 403
    assert "organization 999" in other.json()["detail"]["error_description"]
    assert (await http.get("/all-roles", headers=bearer(token))).status_code == 403


async def test_forged_token_on_scoped_route_is_401_not_403(http: httpx.AsyncClient) -> None:
    for path in ("/items", "/scoped", "/any", "/admin", "/shop/orders"):
        response = await http.get(path, headers=bearer("forged"))
        assert response.status_code == 401, path


async def test_router_and_route_dependencies_introspect_once(
    world: World, http: httpx.AsyncClient, zitadel: ZitadelIntrospection
) -> None:
    response = await http.get("/shop/orders", headers=bearer(world.token(scopes=READ)))
    assert response.status_code == 200
    first = zitadel.metrics()
    # Three dependencies (router, route, parameter), one lookup: the rest read the memo.
    assert first.cache_hits + first.misses == 1
    denied = await http.get("/shop/orders", headers=bearer(world.token(scopes=["openid"])))
    assert denied.status_code == 403
    second = zitadel.metrics()
    assert second.cache_hits + second.misses == 2


async def test_app_wide_dependency(world: World, zitadel: ZitadelIntrospection) -> None:
    app = FastAPI(dependencies=[Depends(zitadel)])

    @app.get("/anything")
    async def anything() -> dict[str, bool]:
        return {"ok": True}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        assert (await http.get("/anything")).status_code == 401
        assert (await http.get("/anything", headers=bearer(world.token()))).status_code == 200


async def test_idp_outage_is_503_with_retry_after(world: World, http: httpx.AsyncClient) -> None:
    world.standin.inject("status", status=502, times=None)
    response = await http.get("/me", headers=bearer(world.token()))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert "www-authenticate" not in response.headers
    assert response.json()["detail"]["error"] == "temporarily_unavailable"


async def test_rejected_credentials_are_503_and_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    forged_key = world.forged_key_file()
    caplog.set_level(logging.ERROR, logger="fastapi_zitadel")
    async with world.client(key_file=forged_key) as zitadel:
        app = build_app(zitadel, world.user.org.id)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            response = await http.get("/me", headers=bearer(world.token()))
    assert response.status_code == 503
    assert "retry-after" in response.headers
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert world.app.key_file["keyId"] in errors[0]
    assert "unauthorized_client" in errors[0]


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ([("authorization", "Bearer a"), ("authorization", "Bearer b")], 400, "invalid_request"),
        ([("authorization", "Bearer two tokens")], 401, "invalid_token"),
        ([("authorization", "Bearer tok%en")], 401, "invalid_token"),
        ([("authorization", "Bearer ")], 401, "invalid_token"),
        ([("authorization", "Bearer " + "a" * 5000)], 401, "invalid_token"),
        ([("authorization", "Basic dXNlcjpwYXNz")], 401, "missing_token"),
    ],
)
async def test_malformed_requests(
    world: World,
    http: httpx.AsyncClient,
    headers: list[tuple[str, str]],
    status: int,
    error: str,
) -> None:
    response = await http.get("/me", headers=headers)
    assert response.status_code == status
    assert response.json()["detail"]["error"] == error
    assert world.standin.introspection_calls == 0


async def test_token_in_url_is_refused(world: World, http: httpx.AsyncClient) -> None:
    token = world.token()
    response = await http.get("/me", params={"access_token": token})
    assert response.status_code == 400
    assert 'error="invalid_request"' in challenge(response)
    both = await http.get("/me", params={"access_token": token}, headers=bearer(token))
    assert both.status_code == 400


async def test_optional_mode(world: World, http: httpx.AsyncClient) -> None:
    assert (await http.get("/maybe")).json() == {"sub": None}
    valid = await http.get("/maybe", headers=bearer(world.token()))
    assert valid.json() == {"sub": world.user.id}
    invalid = await http.get("/maybe", headers=bearer("garbage"))
    assert invalid.status_code == 401  # an invalid token is never treated as anonymous


def refusal(client: TestClient, url: str, **options: Any) -> WebSocketDisconnect:
    with pytest.raises(WebSocketDisconnect) as info, client.websocket_connect(url, **options) as ws:
        ws.receive_json()
    return info.value


def test_websocket_query_token_is_off_by_default(world: World, app: FastAPI) -> None:
    with TestClient(app) as client:
        refused = refusal(client, f"/ws?access_token={world.token()}")
    assert refused.code == 1008
    assert "not in the URL" in refused.reason


def test_websocket_accepted_and_refused(world: World) -> None:
    app = build_app(world.client(websocket_query_token=True), world.user.org.id)
    token = world.token()
    with TestClient(app) as client:
        with client.websocket_connect("/ws", headers=bearer(token)) as ws:
            assert ws.receive_json() == {"sub": world.user.id}
        with client.websocket_connect(f"/ws?access_token={token}") as ws:
            assert ws.receive_json() == {"sub": world.user.id}
        for options in ({}, {"headers": bearer("garbage")}):
            refused = refusal(client, "/ws", **options)
            assert refused.code == 1008
            assert refused.reason
        both = refusal(client, f"/ws?access_token={token}", headers=bearer(token))
        assert both.code == 1008
        assert "more than one" in both.reason
        world.standin.inject("status", status=500, times=None)
        assert refusal(client, "/ws", headers=bearer(world.token())).code == 1013


async def test_dependency_overrides_recipe(
    world: World, app: FastAPI, zitadel: ZitadelIntrospection, http: httpx.AsyncClient
) -> None:
    fake = Principal(subject="test-user", scopes=frozenset({"items:read"}))
    with override_principal(app, zitadel, fake):
        assert (await http.get("/me")).json()["sub"] == "test-user"
        assert (await http.get("/scoped")).status_code == 200
        assert (await http.get("/maybe")).json() == {"sub": "test-user"}
        assert (await http.get("/write")).status_code == 403  # checks still apply
        assert (await http.get("/admin")).status_code == 403
    with override_principal(app, zitadel, None):
        assert (await http.get("/me")).status_code == 401
        assert (await http.get("/maybe")).json() == {"sub": None}
    assert (await http.get("/me")).status_code == 401
    assert app.dependency_overrides == {}
    assert world.standin.introspection_calls == 0
    # The plain recipe: replace the dependency itself.
    app.dependency_overrides[zitadel] = lambda: fake
    assert (await http.get("/me")).json()["sub"] == "test-user"


async def test_a_plain_override_of_the_guard_reaches_the_role_and_any_scope_checks(
    world: World, app: FastAPI, zitadel: ZitadelIntrospection, http: httpx.AsyncClient
) -> None:
    """The one-level requirements call ``app.dependency_overrides[zitadel]`` themselves, as
    FastAPI would in the guard's place: sync or async, with the connection if it asks."""
    reader = Principal(subject="reader", roles={"reader": {}}, scopes=frozenset({"openid"}))
    admin = Principal(subject="admin", roles={"admin": {}})
    app.dependency_overrides[zitadel] = lambda: reader
    assert (await http.get("/admin")).status_code == 403
    assert (await http.get("/any")).status_code == 200

    async def as_admin(conn: HTTPConnection, security_scopes: SecurityScopes) -> Principal:
        assert conn.url.path in ("/admin", "/all-roles")
        assert security_scopes.scopes == []
        return admin

    app.dependency_overrides[zitadel] = as_admin
    assert (await http.get("/admin")).status_code == 200
    assert (await http.get("/all-roles")).status_code == 403  # the check still applies

    def needs_a_query(q: str) -> Principal:
        return admin

    app.dependency_overrides[zitadel] = needs_a_query
    with pytest.raises(ConfigurationError, match="only FastAPI could provide"):
        await http.get("/admin")
    assert world.standin.introspection_calls == 0


def test_role_requirements_are_one_dependency_level(world: World) -> None:
    """``require_role`` is itself the security dependency: FastAPI resolves nothing below it
    (each level costs about 13 µs a request, BENCHMARKS.md section 1)."""
    zitadel = world.client()
    app = FastAPI()
    role = zitadel.require_role("admin")
    any_scope = zitadel.require_any_scope("a", "b")

    @app.get("/role", dependencies=[Depends(role)])
    async def by_role() -> None:
        return None

    @app.get("/any", dependencies=[Depends(any_scope)])
    async def by_scope() -> None:
        return None

    routes = {route.path: route for route in app.routes if isinstance(route, APIRoute)}
    (level,) = routes["/role"].dependant.dependencies
    assert level.call is role
    assert level.dependencies == []
    (level,) = routes["/any"].dependant.dependencies
    assert level.call is any_scope
    (documentation,) = level.dependencies  # the scopes for OpenAPI, checking nothing
    assert documentation.dependencies == []


def test_reading_the_security_scheme_changes_nothing(world: World) -> None:
    """Scopes are listed when a route declares them, not whenever FastAPI reads ``model``."""
    oauth = world.client(swagger_client_id="web")
    before = oauth.model.model_dump()
    assert oauth.model.model_dump() == before
    oauth.require_scope("items:read")
    after = oauth.model.model_dump()
    assert "items:read" in after["flows"]["authorizationCode"]["scopes"]
    assert oauth.model.model_dump() == after
    assert set(oauth.required_scopes) == {"items:read"}


def test_reading_the_instance_s_dependencies_changes_nothing(world: World) -> None:
    """``user``, ``optional``, ``introspected`` and ``model`` are built with the instance: a
    first read (from any thread) stores nothing and gives the same object every time."""

    async def load(principal: Principal) -> str:
        return str(principal.subject)

    zitadel = world.client(principal_loader=load)
    before = dict(vars(zitadel))
    for name in ("user", "optional", "introspected", "model"):
        assert getattr(zitadel, name) is getattr(zitadel, name)
    assert vars(zitadel) == before


async def test_optional_with_scopes(world: World, zitadel: ZitadelIntrospection) -> None:
    app = FastAPI()

    @app.get("/feed")
    async def feed(
        principal: Annotated[Principal | None, Security(zitadel.optional, scopes=["items:read"])],
    ) -> dict[str, Any]:
        return {"sub": principal.subject if principal else None}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        assert (await http.get("/feed")).json() == {"sub": None}
        weak = await http.get("/feed", headers=bearer(world.token(scopes=["openid"])))
        assert weak.status_code == 403
        strong = await http.get("/feed", headers=bearer(world.token(scopes=READ)))
        assert strong.json() == {"sub": world.user.id}
    assert app.openapi()["paths"]["/feed"]["get"]["security"] == [{"ZITADEL": ["items:read"]}]


@pytest.mark.parametrize("name", ["access%5Ftoken", "%61ccess_token"])
async def test_encoded_url_token_is_refused_too(
    world: World, http: httpx.AsyncClient, name: str
) -> None:
    token = world.token()
    response = await http.get(f"/me?{name}={token}", headers=bearer(token))
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("roles", "org_id", "any_of", "description"),
    [
        (("admin",), None, False, "requires the role admin"),
        (("admin",), None, True, "requires the role admin"),
        (("admin",), "2983", False, "requires the role admin in organization 2983"),
        (("admin", "auditor"), None, False, "requires all of the roles admin, auditor"),
        (("reader", "admin"), None, True, "requires one of the roles reader, admin"),
    ],
)
def test_a_role_403_reads_naturally(
    roles: tuple[str, ...], org_id: str | None, any_of: bool, description: str
) -> None:
    error = InsufficientScopeError.for_roles(roles, org_id=org_id, any_of=any_of)
    assert error.description == description


def _connection(token: str | None) -> HTTPConnection:
    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
    return HTTPConnection({"type": "http", "headers": headers, "query_string": b""})


async def test_the_two_connection_lookups_differ_only_in_the_error_they_raise(
    world: World,
) -> None:
    """``principal_or_http_error`` raises what FastAPI sends, ``principal_or_zitadel_error``
    the ``ZitadelError`` itself; both give the same principal and ``None`` when allowed."""
    from fastapi import HTTPException

    from fastapi_zitadel import InvalidTokenError, MissingTokenError

    async with world.client() as zitadel:
        token = world.token()
        http = await zitadel.principal_or_http_error(_connection(token))
        assert http.subject == world.user.id
        verdict = await zitadel.principal_or_zitadel_error(_connection(token))
        assert verdict is not None
        assert verdict.subject == world.user.id
        assert await zitadel.principal_or_http_error(_connection(None), optional=True) is None
        assert await zitadel.principal_or_zitadel_error(_connection(None)) is None
        with pytest.raises(HTTPException) as missing:
            await zitadel.principal_or_http_error(_connection(None))
        assert missing.value.status_code == 401
        assert missing.value.headers == {"WWW-Authenticate": MissingTokenError().challenge("api")}
        for optional in (False, True):
            with pytest.raises(HTTPException) as invalid:
                await zitadel.principal_or_http_error(_connection("junk"), optional=optional)
            assert invalid.value.status_code == 401
        with pytest.raises(InvalidTokenError):
            await zitadel.principal_or_zitadel_error(_connection("junk"))
