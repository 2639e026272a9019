"""Every refusal goes through the instance's one renderer (``zitadel.refusal``): with
``resource`` set, every 401 names the RFC 9728 metadata (§5.1), whichever path refused.

No ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime.
"""

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Security

from fastapi_zitadel import Principal, ZitadelIntrospection, ZitadelMiddleware
from fastapi_zitadel.testing import override_principal

from .helpers import World
from .jwt_support import JwtWorld, bearer, client_for

RESOURCE = "https://api.example.test"
METADATA = 'resource_metadata="https://api.example.test/.well-known/oauth-protected-resource"'


async def _load_user(principal: Principal) -> dict[str, Any]:
    return {"id": principal.subject}


def every_path(zitadel: ZitadelIntrospection) -> FastAPI:
    """One route per way the library can refuse a request."""
    app = FastAPI()

    @app.get("/depends")
    async def depends(principal: Annotated[Principal, Depends(zitadel)]) -> str:
        return str(principal.subject)

    @app.get("/security")
    async def security(
        principal: Annotated[Principal, Security(zitadel, scopes=["openid"])],
    ) -> str:
        return str(principal.subject)

    @app.get("/optional")
    async def optional(principal: Annotated[Principal | None, Depends(zitadel.optional)]) -> str:
        return str(principal)

    @app.get("/introspected")
    async def introspected(principal: Annotated[Principal, Depends(zitadel.introspected)]) -> str:
        return str(principal.subject)

    @app.get("/user")
    async def user(loaded: Annotated[dict[str, Any], Depends(zitadel.user)]) -> dict[str, Any]:
        return loaded

    for path, dependency in {
        "/scope": zitadel.require_scope("openid"),
        "/any-scope": zitadel.require_any_scope("openid", "email"),
        "/role": zitadel.require_role("admin"),
        "/any-role": zitadel.require_any_role("admin", "owner"),
    }.items():

        async def guarded() -> str:
            return "ok"

        app.add_api_route(path, guarded, dependencies=[Depends(dependency)])
    return app


PATHS = [
    "/depends",
    "/security",
    "/introspected",
    "/user",
    "/scope",
    "/any-scope",
    "/role",
    "/any-role",
]


async def test_every_401_names_the_resource_metadata(world: World) -> None:
    zitadel = world.client(resource=RESOURCE, principal_loader=_load_user)
    app = every_path(zitadel)
    transport = httpx.ASGITransport(app=app)
    async with zitadel, httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        for path in [*PATHS, "/optional"]:
            invalid = await http.get(path, headers=bearer("not-a-token-zitadel-knows"))
            assert invalid.status_code == 401, path
            assert METADATA in invalid.headers["www-authenticate"], path
        for path in PATHS:
            missing = await http.get(path)
            assert missing.status_code == 401, path
            assert METADATA in missing.headers["www-authenticate"], path
        with override_principal(app, zitadel, None):  # anonymous, in a user's tests
            for path in PATHS:
                anonymous = await http.get(path)
                assert anonymous.status_code == 401, path
                assert METADATA in anonymous.headers["www-authenticate"], path


async def test_the_middlewares_401_names_the_resource_metadata(world: World) -> None:
    zitadel = world.client(resource=RESOURCE)
    inner = FastAPI()

    @inner.get("/")
    async def root() -> str:
        return "ok"

    app = ZitadelMiddleware(inner, zitadel=zitadel)
    transport = httpx.ASGITransport(app=app)
    async with zitadel, httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
        for headers in ({}, bearer("not-a-token-zitadel-knows")):
            answer = await http.get("/", headers=headers)
            assert answer.status_code == 401
            assert METADATA in answer.headers["www-authenticate"]


@pytest.mark.loopback
async def test_a_refused_confirmation_names_the_resource_metadata(jwt_world: JwtWorld) -> None:
    """Hybrid mode: ``zitadel.introspected`` refuses a revoked JWT once ZITADEL answers."""
    token = jwt_world.token()
    jwt_world.standin.revoke(token)
    async with jwt_world.hybrid(resource=RESOURCE) as zitadel, client_for(zitadel) as client:
        refused = await client.get("/confirmed", headers=bearer(token))
    assert refused.status_code == 401
    assert METADATA in refused.headers["www-authenticate"]
