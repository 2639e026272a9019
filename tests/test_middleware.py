"""``ZitadelMiddleware`` through real apps: the dependency's errors and headers, public paths
and methods, Starlette's ``request.user`` / ``@requires``, anonymous mode, WebSockets, one
lookup per request behind a dependency, outages; and on the same apps the RFC 9728 metadata,
``allowed_client_ids``, ``principal_loader`` and ``principal_class``."""

import asyncio
import re
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request, WebSocket
from pydantic import Field
from starlette.authentication import requires
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from fastapi_zitadel import (
    ConfigurationError,
    Principal,
    ZitadelIntrospection,
    ZitadelMiddleware,
)

from .helpers import World


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def build_app(zitadel: ZitadelIntrospection, **options: Any) -> FastAPI:
    app = FastAPI()
    zitadel.install(app)
    options.setdefault("public_paths", ["/health", "/static/*", "OPTIONS *"])
    app.add_middleware(ZitadelMiddleware, zitadel=zitadel, **options)

    @app.get("/health")
    async def health(request: Request) -> dict[str, bool]:
        return {"authenticated": request.user.is_authenticated}

    @app.get("/static/{name:path}")
    async def static(name: str) -> dict[str, str]:
        return {"name": name}

    @app.options("/items")
    @app.get("/items")
    async def items(request: Request) -> dict[str, Any]:
        user = request.user
        return {
            "authenticated": user.is_authenticated,
            "name": user.display_name,
            "scopes": list(request.auth.scopes),
        }

    @app.get("/admin")
    @requires("role:admin")
    async def admin(request: Request) -> dict[str, bool]:
        return {"ok": True}

    @app.get("/writer")
    @requires("items:write")
    async def writer(request: Request) -> dict[str, bool]:
        return {"ok": True}

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(zitadel)]) -> dict[str, Any]:
        return {"sub": principal.subject}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"name": websocket.user.display_name})
        await websocket.close()

    return app


@pytest.fixture
def token(world: World) -> str:
    return world.token(scopes=["openid", "profile", "items:read"])


def test_no_token_is_the_dependencys_401(world: World) -> None:
    zitadel = world.client()
    with TestClient(build_app(zitadel)) as client:
        by_middleware = client.get("/items")
        app = FastAPI()

        @app.get("/items")
        async def items(principal: Annotated[Principal, Depends(zitadel)]) -> None:
            return None

        by_dependency = TestClient(app).get("/items")
    assert by_middleware.status_code == by_dependency.status_code == 401
    assert by_middleware.json() == by_dependency.json()
    assert by_middleware.headers["www-authenticate"] == by_dependency.headers["www-authenticate"]
    assert by_middleware.headers["www-authenticate"] == 'Bearer realm="api"'


def test_invalid_and_malformed_tokens(world: World) -> None:
    with TestClient(build_app(world.client())) as client:
        bad = client.get("/items", headers=bearer("not-a-token"))
        assert bad.status_code == 401
        assert 'error="invalid_token"' in bad.headers["www-authenticate"]
        assert bad.json()["detail"]["error"] == "invalid_token"
        two = client.get(
            "/items", headers=[("authorization", "Bearer a"), ("authorization", "Bearer b")]
        )
        assert two.status_code == 400
        assert two.json()["detail"]["error"] == "invalid_request"


def test_public_paths_and_methods_pass_without_a_token(world: World) -> None:
    with TestClient(build_app(world.client())) as client:
        assert client.get("/health").json() == {"authenticated": False}
        assert client.get("/static/css/site.css").json() == {"name": "css/site.css"}
        assert client.options("/items").json()["authenticated"] is False
        assert client.get("/items").status_code == 401  # GET is not public
        assert client.get("/static/../items").status_code == 401  # no dot-segment escape
        assert client.get("/healthz").status_code == 401  # exact means exact


def test_user_auth_and_starlette_requires(world: World, token: str) -> None:
    zitadel = world.client()
    with TestClient(build_app(zitadel)) as client:
        answer = client.get("/items", headers=bearer(token)).json()
        assert answer["authenticated"] is True
        assert answer["name"] == "alice"
        assert {"openid", "items:read", "role:admin", "role:reader"} <= set(answer["scopes"])
        assert client.get("/admin", headers=bearer(token)).json() == {"ok": True}
        assert client.get("/writer", headers=bearer(token)).status_code == 403
    assert zitadel.introspection_calls == 1


def test_role_prefix_is_configurable(world: World, token: str) -> None:
    app = build_app(world.client(), role_prefix="urn:role:")
    with TestClient(app) as client:
        scopes = client.get("/items", headers=bearer(token)).json()["scopes"]
    assert "urn:role:admin" in scopes
    assert "role:admin" not in scopes


def test_a_dependency_behind_the_middleware_reuses_its_verdict(world: World, token: str) -> None:
    zitadel = world.client()
    with TestClient(build_app(zitadel)) as client:
        assert client.get("/me", headers=bearer(token)).json()["sub"] == world.user.id
        assert zitadel.metrics().cache_hits == 0  # the middleware's miss, then the memo
        client.get("/me", headers=bearer(token))
        assert zitadel.metrics().cache_hits == 1  # one lookup per request, not two
    assert zitadel.introspection_calls == 1


def test_require_false_lets_anonymous_through_but_not_bad_tokens(world: World, token: str) -> None:
    with TestClient(build_app(world.client(), require=False)) as client:
        assert client.get("/items").json()["authenticated"] is False
        assert client.get("/admin").status_code == 403  # Starlette's @requires
        assert client.get("/items", headers=bearer("garbage")).status_code == 401
        assert client.get("/items", headers=bearer(token)).json()["authenticated"] is True


def test_websockets(world: World, token: str) -> None:
    with TestClient(build_app(world.client())) as client:
        with client.websocket_connect("/ws", headers=bearer(token)) as ws:
            assert ws.receive_json() == {"name": "alice"}
        # Accepted, then closed at once: a real client receives the code (see test_websocket_close).
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws") as ws:
            ws.receive_text()
        assert refused.value.code == 1008
        world.standin.inject("status", status=503, times=None)
        other = world.token(scopes=["openid"])
        with (
            pytest.raises(WebSocketDisconnect) as later,
            client.websocket_connect("/ws", headers=bearer(other)) as ws,
        ):
            ws.receive_text()
        assert later.value.code == 1013  # try again later: an outage is never a refusal


def test_an_outage_is_a_503_never_a_401(world: World, token: str) -> None:
    zitadel = world.client(max_retries=0)
    world.standin.inject("status", status=502, times=None)
    with TestClient(build_app(zitadel)) as client:
        answer = client.get("/items", headers=bearer(token))
    assert answer.status_code == 503
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.json()["detail"]["error"] == "temporarily_unavailable"


def test_lifespan_and_other_scopes_pass_through(world: World) -> None:
    with TestClient(build_app(world.client())) as client:  # the lifespan ran through it
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("public_paths", "message"),
    [
        ("/health", "a list of paths"),
        (["FETCH /x"], "unknown HTTP method"),
        (["health"], "starting with '/'"),
    ],
)
def test_bad_public_paths_fail_at_start(world: World, public_paths: Any, message: str) -> None:
    app = FastAPI()
    app.add_middleware(ZitadelMiddleware, zitadel=world.client(), public_paths=public_paths)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        app.build_middleware_stack()


def test_regex_public_paths(world: World) -> None:
    app = build_app(world.client(), public_paths=[re.compile(r"/static/[a-z]+\.css")])
    with TestClient(app) as client:
        assert client.get("/static/site.css").status_code == 200
        assert client.get("/static/site.js").status_code == 401


# RFC 9728 ------------------------------------------------------------------------------------


def test_protected_resource_metadata_and_challenge(world: World, token: str) -> None:
    zitadel = world.client(
        resource="http://127.0.0.1:8000/api", resource_name="Shop API", audience=world.project.id
    )
    app = build_app(zitadel)

    @app.get("/scoped", dependencies=[Depends(zitadel.require_scope("items:read"))])
    async def scoped() -> None:
        return None

    url = "http://127.0.0.1:8000/.well-known/oauth-protected-resource/api"
    assert zitadel.resource_metadata_url == url
    with TestClient(app) as client:
        document = client.get("/.well-known/oauth-protected-resource/api")  # public
        assert document.status_code == 200
        assert document.json() == {
            "resource": "http://127.0.0.1:8000/api",
            "authorization_servers": [world.standin.issuer],
            "bearer_methods_supported": ["header"],
            "scopes_supported": ["items:read"],
            "resource_name": "Shop API",
        }
        for path in ("/items", "/me"):  # the middleware's 401 and the dependency's
            challenge = client.get(path).headers["www-authenticate"]
            assert challenge == f'Bearer realm="api", resource_metadata="{url}"'
        invalid = client.get("/me", headers=bearer("garbage")).headers["www-authenticate"]
        assert invalid.endswith(f', resource_metadata="{url}"')
    dependency_only = FastAPI()
    zitadel.install(dependency_only)

    @dependency_only.get("/me")
    async def me(principal: Annotated[Principal, Depends(zitadel)]) -> None:
        return None

    with TestClient(dependency_only) as client:
        assert f'resource_metadata="{url}"' in client.get("/me").headers["www-authenticate"]
        assert client.get("/.well-known/oauth-protected-resource/api").status_code == 200


def test_only_401s_name_the_metadata(world: World) -> None:
    zitadel = world.client(resource="http://127.0.0.1:8000/api", max_retries=0)
    reader = world.token(scopes=["openid"])
    with TestClient(build_app(zitadel)) as client:
        app = client.app
        assert isinstance(app, FastAPI)

        @app.get("/needs-scope", dependencies=[Depends(zitadel.require_scope("items:write"))])
        async def needs_scope() -> None:
            return None

        forbidden = client.get("/needs-scope", headers=bearer(reader))
        assert forbidden.status_code == 403
        assert "resource_metadata" not in forbidden.headers["www-authenticate"]
        world.standin.inject("status", status=503, times=None)
        outage = client.get("/items", headers=bearer(world.token(scopes=["profile"])))
        assert outage.status_code == 503
        assert "www-authenticate" not in outage.headers


def test_metadata_path_without_a_resource_path(world: World) -> None:
    zitadel = world.client(resource="https://api.example.test/")
    assert zitadel.resource_metadata_url == (
        "https://api.example.test/.well-known/oauth-protected-resource"
    )
    app = FastAPI()
    zitadel.install(app)
    with TestClient(app) as client:
        body = client.get("/.well-known/oauth-protected-resource").json()
    assert body["resource"] == "https://api.example.test/"
    assert body["scopes_supported"] == []


def test_resource_settings_are_checked(world: World) -> None:
    with pytest.raises(ConfigurationError, match="fragment"):
        world.client(resource="https://api.example.test/#x")
    with pytest.raises(ConfigurationError, match="need resource"):
        world.client(resource_name="x")
    with pytest.raises(ConfigurationError, match="plain http"):
        world.client(resource="http://api.example.test/")


# allowed_client_ids --------------------------------------------------------------------------


async def test_allowed_client_ids(world: World) -> None:
    sibling = world.standin.add_api_app(world.project, "sibling")
    theirs = world.standin.issue_token(world.user, world.project, client_id=sibling.client_id)
    ours = world.standin.issue_token(world.user, world.project, client_id=world.app.client_id)
    async with world.client(allowed_client_ids=world.app.client_id) as zitadel:
        assert (await zitadel.verify(ours)).client_id == world.app.client_id
        with pytest.raises(Exception, match="issued to a client this API does not accept"):
            await zitadel.verify(theirs)
    async with world.client() as open_to_all:  # off by default
        await open_to_all.verify(theirs)


def test_allowed_client_ids_over_http(world: World) -> None:
    sibling = world.standin.add_api_app(world.project, "sibling")
    theirs = world.standin.issue_token(world.user, world.project, client_id=sibling.client_id)
    zitadel = world.client(allowed_client_ids=[world.app.client_id, "another"])
    with TestClient(build_app(zitadel)) as client:
        refused = client.get("/items", headers=bearer(theirs))
    assert refused.status_code == 401
    assert refused.json()["detail"] == {
        "error": "invalid_token",
        "error_description": "the token was issued to a client this API does not accept",
    }


def test_allowed_client_ids_from_the_environment(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZITADEL_ISSUER", world.standin.issuer)
    monkeypatch.setenv("ZITADEL_ALLOWED_CLIENT_IDS", "a@p, b@p")
    monkeypatch.setenv("ZITADEL_RESOURCE", "https://api.example.test/mcp")
    zitadel = ZitadelIntrospection.from_env(key_file=world.app.key_file)
    assert zitadel.config.allowed_client_ids == ("a@p", "b@p")
    assert zitadel.config.resource == "https://api.example.test/mcp"


# principal_loader and principal_class --------------------------------------------------------


class Account:
    def __init__(self, subject: str, number: int) -> None:
        self.subject = subject
        self.number = number


def loader_app(zitadel: ZitadelIntrospection) -> FastAPI:
    app = FastAPI()
    zitadel.install(app)
    current_account = Annotated[Account, Depends(zitadel.user)]

    @app.get("/account")
    async def account(user: current_account) -> dict[str, Any]:
        return {"subject": user.subject, "number": user.number}

    return app


def invalidate(client: TestClient, zitadel: ZitadelIntrospection, token: str) -> None:
    assert client.portal is not None
    client.portal.call(zitadel.invalidate, token)


def test_principal_loader_runs_once_per_verified_token(world: World, token: str) -> None:
    calls: list[str | None] = []

    async def load(principal: Principal) -> Account | None:
        calls.append(principal.subject)
        if principal.username == "nobody":
            return None
        return Account(principal.subject or "", len(calls))

    zitadel = world.client(principal_loader=load)
    with TestClient(loader_app(zitadel)) as client:
        first = client.get("/account", headers=bearer(token)).json()
        again = client.get("/account", headers=bearer(token)).json()
        assert first == again == {"subject": world.user.id, "number": 1}
        assert len(calls) == 1
        invalidate(client, zitadel, token)  # dropped with the verdict
        assert client.get("/account", headers=bearer(token)).json()["number"] == 2
        world.standin.revoke(token)
        invalidate(client, zitadel, token)
        assert client.get("/account", headers=bearer(token)).status_code == 401
        assert len(calls) == 2
        assert client.get("/account").status_code == 401


async def test_concurrent_first_requests_load_once(world: World, token: str) -> None:
    calls = 0
    started, release = asyncio.Event(), asyncio.Event()

    async def load(principal: Principal) -> Account:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return Account(principal.subject or "", calls)

    zitadel = world.client(principal_loader=load)
    app = loader_app(zitadel)
    await zitadel.verify(token)  # the verdict is cached: only the loader is concurrent
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        requests = [
            asyncio.ensure_future(client.get("/account", headers=bearer(token))) for _ in range(5)
        ]
        await started.wait()
        for _ in range(50):  # let every request reach the loader's single flight
            await asyncio.sleep(0)
        release.set()
        answers = await asyncio.gather(*requests)
    assert [answer.json()["number"] for answer in answers] == [1] * 5
    assert calls == 1
    await zitadel.aclose()


def test_a_loader_that_fails_is_a_500_and_not_kept(world: World, token: str) -> None:
    outcomes: list[Any] = [RuntimeError("database down"), None, Account("x", 7)]

    async def load(principal: Principal) -> Account | None:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[no-any-return]

    zitadel = world.client(principal_loader=load)
    with TestClient(loader_app(zitadel), raise_server_exceptions=False) as client:
        assert client.get("/account", headers=bearer(token)).status_code == 500
        unknown = client.get("/account", headers=bearer(token))
        assert unknown.status_code == 403
        assert unknown.json()["detail"]["error_description"] == "the user is not known to this API"
        assert client.get("/account", headers=bearer(token)).json()["number"] == 7
        assert client.get("/account", headers=bearer(token)).json()["number"] == 7
    assert outcomes == []


def test_unknown_user_can_be_a_401(world: World, token: str) -> None:
    async def load(principal: Principal) -> None:
        return None

    zitadel = world.client(principal_loader=load, unknown_user_status=401)
    with TestClient(loader_app(zitadel)) as client:
        answer = client.get("/account", headers=bearer(token))
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


def test_user_needs_a_loader(world: World) -> None:
    with pytest.raises(ConfigurationError, match="principal_loader"):
        _ = world.client().user


class TenantPrincipal(Principal):
    tier: str = Field(alias="urn:zitadel:iam:user:resourceowner:primary_domain")
    nickname: str | None = None


async def test_principal_class_reads_custom_claims(world: World) -> None:
    token = world.token(scopes=["openid", "urn:zitadel:iam:user:resourceowner"])
    async with world.client(principal_class=TenantPrincipal) as zitadel:
        principal = await zitadel.verify(token)
        assert isinstance(principal, TenantPrincipal)
        assert principal.tier == "acme.localhost"
        assert principal.nickname is None
        assert principal.subject == world.user.id
        without = world.token(scopes=["openid"])
        with pytest.raises(Exception, match="lacks claims this API requires"):
            await zitadel.verify(without)
