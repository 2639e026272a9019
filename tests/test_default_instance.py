"""Module-level require_* functions: bound at request time to the default instance."""

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from fastapi_zitadel import ConfigurationError, Principal
from fastapi_zitadel.defaults import (
    get_default_zitadel,
    require_any_scope,
    require_role,
    require_scope,
    set_default_zitadel,
)

from .helpers import World


@pytest.fixture(autouse=True)
def reset_default() -> Iterator[None]:
    set_default_zitadel(None)
    yield
    set_default_zitadel(None)


def declared_before_configuration() -> FastAPI:
    app = FastAPI()

    @app.get("/items")
    async def items(principal: Annotated[Principal, Depends(require_scope("items:read"))]) -> Any:
        return principal.subject

    @app.get("/any", dependencies=[Depends(require_any_scope("x", "items:read"))])
    async def any_scope() -> bool:
        return True

    @app.get("/admin", dependencies=[Depends(require_role("admin"))])
    async def admin() -> bool:
        return True

    @app.get("/owner", dependencies=[Depends(require_role("admin", "owner"))])
    async def owner() -> bool:
        return True

    return app


async def test_routes_use_the_default_set_later(world: World) -> None:
    app = declared_before_configuration()
    set_default_zitadel(world.client(swagger_client_id="web"))
    token = world.token(scopes=["openid", "items:read"])
    headers = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        assert (await http.get("/items", headers=headers)).json() == world.user.id
        assert (await http.get("/any", headers=headers)).status_code == 200
        assert (await http.get("/admin", headers=headers)).status_code == 200
        assert (await http.get("/owner", headers=headers)).status_code == 403
        assert (await http.get("/items")).status_code == 401
    schema = app.openapi()
    assert schema["paths"]["/items"]["get"]["security"] == [{"ZITADEL": ["items:read"]}]
    flow = schema["components"]["securitySchemes"]["ZITADEL"]["flows"]["authorizationCode"]
    assert "items:read" in flow["scopes"]


def test_default_comes_from_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, app_key: dict[str, Any]
) -> None:
    key_path = tmp_path / "key.json"
    key_path.write_text(json.dumps(app_key))
    monkeypatch.setenv("ZITADEL_ISSUER", "https://zitadel.example.test")
    monkeypatch.setenv("ZITADEL_KEY_FILE", str(key_path))
    default = get_default_zitadel()
    assert default.issuer == "https://zitadel.example.test"
    assert get_default_zitadel() is default


def test_unconfigured_default_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZITADEL_ISSUER", raising=False)
    with pytest.raises(ConfigurationError, match="ZITADEL_ISSUER"):
        get_default_zitadel()


async def test_override_principal_covers_module_level_dependencies(world: World) -> None:
    from fastapi_zitadel.testing import override_principal

    app = declared_before_configuration()
    zitadel = world.client()
    set_default_zitadel(zitadel)
    fake = Principal(subject="fixed", scopes=frozenset({"items:read"}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        with override_principal(app, zitadel, fake):
            assert (await http.get("/items")).json() == "fixed"
            assert (await http.get("/admin")).status_code == 403  # checks still apply
        assert (await http.get("/items")).status_code == 401
    assert world.standin.introspection_calls == 0


@pytest.fixture
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [name for name in os.environ if name.upper().startswith("ZITADEL_")]:
        monkeypatch.delenv(name)


def test_without_a_default_every_request_is_a_500_and_one_log_line(
    no_environment: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed (anonymous requests too), without a traceback per request: one ERROR line
    a minute names the fix."""
    from starlette.testclient import TestClient

    from fastapi_zitadel import defaults
    from fastapi_zitadel._log import RateLimitedLog

    monkeypatch.setattr(
        defaults.default_zitadel, "_unconfigured_log", RateLimitedLog(logging.ERROR)
    )

    caplog.set_level(logging.ERROR)
    app = declared_before_configuration()
    with TestClient(app) as client:
        for headers in ({}, {"Authorization": "Bearer some-token"}, {}):
            answer = client.get("/admin", headers=headers)
            assert answer.status_code == 500
            assert answer.json()["detail"]["error"] == "server_error"
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, [record.getMessage() for record in errors]
    assert errors[0].exc_info is None
    message = errors[0].getMessage()
    assert "call set_default_zitadel(zitadel) when the app is built" in message
    assert "ZITADEL_ISSUER" in message
    assert "some-token" not in message


def test_installed_app_without_a_default_fails_to_start(no_environment: None, world: World) -> None:
    from starlette.testclient import TestClient

    app = declared_before_configuration()
    world.client().install(app)  # an instance, but not made the default: a common slip
    with (
        pytest.raises(ConfigurationError, match=r"call set_default_zitadel\(zitadel\)"),
        TestClient(app),
    ):
        pass


def test_an_app_with_only_role_routes_on_the_default_fails_to_start_too(
    no_environment: None, world: World
) -> None:
    """A role requirement is one dependency level: the default instance is not in the route's
    dependency tree, the requirement answers for it."""
    from starlette.testclient import TestClient

    app = FastAPI()

    @app.get("/admin", dependencies=[Depends(require_role("admin"))])
    async def admin() -> bool:
        return True

    world.client().install(app)
    with (
        pytest.raises(ConfigurationError, match=r"call set_default_zitadel\(zitadel\)"),
        TestClient(app),
    ):
        pass


async def test_installed_app_with_its_default_set_before_start_starts(
    no_environment: None, world: World
) -> None:
    app = declared_before_configuration()
    zitadel = world.client()
    zitadel.install(app)
    set_default_zitadel(zitadel)  # after the routes, before the start: as documented
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            token = world.token(scopes=["openid"])
            answer = await http.get("/admin", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200
