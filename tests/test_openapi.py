"""OpenAPI: a valid document with our scheme, scopes per operation, documented error
responses, and Swagger UI's PKCE login when a web client id is configured."""

from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Security
from openapi_spec_validator import validate

from fastapi_zitadel import Principal, ZitadelIntrospection

from .helpers import World


def _app(zitadel: ZitadelIntrospection) -> FastAPI:
    app = FastAPI(title="shop")
    zitadel.install(app)

    @app.get("/public")
    async def public() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/items", dependencies=[Depends(zitadel.require_scope("items:read"))])
    async def items() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/either", dependencies=[Depends(zitadel.require_any_scope("a:x", "b:y"))])
    async def either() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/admin", dependencies=[Depends(zitadel.require_role("admin"))])
    async def admin() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/me")
    async def me(principal: Annotated[Principal, Security(zitadel, scopes=["openid"])]) -> Any:
        return principal.subject

    return app


def _operation(schema: dict[str, Any], path: str) -> dict[str, Any]:
    operation: dict[str, Any] = schema["paths"][path]["get"]
    return operation


def test_bearer_scheme_scopes_and_responses(world: World) -> None:
    schema = _app(world.client()).openapi()
    validate(schema)
    scheme = schema["components"]["securitySchemes"]["ZITADEL"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert world.standin.issuer in scheme["description"]
    assert "security" not in _operation(schema, "/public")
    assert "401" not in _operation(schema, "/public")["responses"]
    assert _operation(schema, "/items")["security"] == [{"ZITADEL": ["items:read"]}]
    assert _operation(schema, "/either")["security"] == [{"ZITADEL": ["a:x", "b:y"]}]
    assert _operation(schema, "/admin")["security"] == [{"ZITADEL": []}]
    assert _operation(schema, "/me")["security"] == [{"ZITADEL": ["openid"]}]
    for path in ("/items", "/either", "/admin", "/me"):
        responses = _operation(schema, path)["responses"]
        assert {"401", "403", "503"} <= set(responses), path
        assert "WWW-Authenticate" in responses["401"]["headers"]
        assert "Retry-After" in responses["503"]["headers"]


def test_scheme_name_and_description_are_configurable(world: World) -> None:
    zitadel = world.client(scheme_name="Shop", scheme_description="Shop tokens")
    schema = _app(zitadel).openapi()
    validate(schema)
    assert schema["components"]["securitySchemes"]["Shop"]["description"] == "Shop tokens"
    assert _operation(schema, "/items")["security"] == [{"Shop": ["items:read"]}]


async def test_oauth2_pkce_when_web_client_configured(world: World) -> None:
    zitadel = world.client(swagger_client_id="web-client-1")
    app = _app(zitadel)
    schema = app.openapi()
    validate(schema)
    scheme = schema["components"]["securitySchemes"]["ZITADEL"]
    assert scheme["type"] == "oauth2"
    flow = scheme["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == world.standin.issuer + "/oauth/v2/authorize"
    assert flow["tokenUrl"] == world.standin.issuer + "/oauth/v2/token"
    assert f"urn:zitadel:iam:org:project:id:{world.project.id}:aud" in flow["scopes"]
    assert "items:read" in flow["scopes"]  # scopes used by routes can be requested
    assert app.swagger_ui_init_oauth == {
        "clientId": "web-client-1",
        "usePkceWithAuthorizationCodeGrant": True,
        "scopes": zitadel.swagger_ui_init_oauth["scopes"] if zitadel.swagger_ui_init_oauth else "",
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        docs = (await http.get("/docs")).text
        assert "web-client-1" in docs
        assert "usePkceWithAuthorizationCodeGrant" in docs
        served = (await http.get("/openapi.json")).json()
    assert served["paths"]["/items"]["get"]["responses"]["401"]


def test_no_swagger_login_without_client(world: World) -> None:
    zitadel = world.client()
    app = _app(zitadel)
    assert zitadel.swagger_ui_init_oauth is None
    assert app.swagger_ui_init_oauth is None


def _responses(schema: dict[str, Any], path: str, method: str = "get") -> set[str]:
    return set(schema["paths"][path][method]["responses"])


def test_403_only_where_a_scope_or_role_is_checked(world: World) -> None:
    from fastapi import APIRouter

    from fastapi_zitadel.defaults import require_role, set_default_zitadel

    zitadel = world.client()
    app = _app(zitadel)

    @app.get("/whoami")
    async def whoami(principal: Annotated[Principal, Depends(zitadel)]) -> str | None:
        return principal.subject

    @app.get("/default-role", dependencies=[Depends(require_role("admin"))])
    async def default_role() -> None: ...

    router = APIRouter(prefix="/team", dependencies=[Depends(zitadel.require_role("admin"))])

    @router.get("/open")
    async def team_open(principal: Annotated[Principal, Depends(zitadel)]) -> None: ...

    app.include_router(router)
    set_default_zitadel(zitadel)
    try:
        schema = app.openapi()
    finally:
        set_default_zitadel(None)
    validate(schema)
    assert _operation(schema, "/whoami")["security"] == [{"ZITADEL": []}]
    assert _responses(schema, "/whoami") >= {"401", "503"}
    assert "403" not in _responses(schema, "/whoami")  # a valid token is all it takes
    for path in ("/items", "/either", "/admin", "/me", "/default-role", "/team/open"):
        assert {"401", "403", "503"} <= _responses(schema, path), path


def test_optional_routes_list_anonymous_access(world: World) -> None:
    zitadel = world.client()
    app = _app(zitadel)

    @app.get("/hello")
    async def hello(principal: Annotated[Principal | None, Depends(zitadel.optional)]) -> str:
        return "hi"

    @app.get("/hello-scoped")
    async def hello_scoped(
        principal: Annotated[Principal | None, Security(zitadel.optional, scopes=["email"])],
    ) -> str:
        return "hi"

    @app.get("/both", dependencies=[Depends(zitadel)])
    async def both(principal: Annotated[Principal | None, Depends(zitadel.optional)]) -> str:
        return "hi"

    schema = app.openapi()
    validate(schema)
    hello_op = _operation(schema, "/hello")
    assert hello_op["security"] == [{"ZITADEL": []}, {}]
    assert {"401", "503"} <= _responses(schema, "/hello")  # an invalid token is still a 401
    assert "403" not in _responses(schema, "/hello")
    assert _operation(schema, "/hello-scoped")["security"] == [{"ZITADEL": ["email"]}, {}]
    assert "403" in _responses(schema, "/hello-scoped")
    assert _operation(schema, "/both")["security"] == [{"ZITADEL": []}]  # a token is required


def test_example_app_documents_what_each_route_can_answer(world: World) -> None:
    from example_app.app import create_app
    from fastapi_zitadel.defaults import set_default_zitadel

    try:
        schema = create_app(world.client(), org_id="1").openapi()
    finally:
        set_default_zitadel(None)
    validate(schema)
    assert _operation(schema, "/hello")["security"] == [{"ZITADEL": []}, {}]
    assert "403" not in _responses(schema, "/me")
    assert "403" in _responses(schema, "/items")
    assert "403" in _responses(schema, "/profile")  # module-level require_scope
    assert "403" in _responses(schema, "/org/report")
    assert "403" in _responses(schema, "/admin/cache", "delete")
    assert "security" not in _operation(schema, "/")


def test_an_app_changing_its_schema_changes_no_other_app(world: World) -> None:
    """The documented errors are copied into each schema, not shared between apps."""
    zitadel = world.client()
    first, second = _app(zitadel), _app(zitadel)
    responses = first.openapi()["paths"]["/items"]["get"]["responses"]
    responses["401"]["description"] = "changed by the first app"
    responses["401"]["headers"]["WWW-Authenticate"]["description"] = "changed too"
    other = second.openapi()["paths"]["/items"]["get"]["responses"]["401"]
    assert other["description"] == "Missing, invalid, expired or revoked bearer token"
    assert other["headers"]["WWW-Authenticate"]["description"] == (
        "RFC 6750 challenge with the error code"
    )
