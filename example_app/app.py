"""A small shop API protected by fastapi-zitadel: every way to use the library, in one file.

ZITADEL roles decide what a user may do: ``reader`` may list items, ``admin`` may add them and
see the admin area. ``create_app(zitadel)`` builds the app around a configured instance.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Security, WebSocket

from fastapi_zitadel import Principal, ZitadelIntrospection
from fastapi_zitadel.defaults import require_scope, set_default_zitadel

ITEMS = ["apple", "pear"]


def create_app(
    zitadel: ZitadelIntrospection, *, org_id: str | None = None, app_wide: bool = False
) -> FastAPI:
    """The shop. ``org_id`` adds a route for admins of that one organization; ``app_wide``
    makes every route, even ``/``, require a valid token."""
    set_default_zitadel(zitadel)  # for the module-level require_scope below
    app = FastAPI(
        title="Example shop",
        description="Protected by fastapi-zitadel. Click Authorize and "
        + ("log in." if zitadel.swagger_ui_init_oauth else "paste a token."),
        dependencies=[Depends(zitadel)] if app_wide else [],
    )
    zitadel.install(app)  # lifespan, 401/403/503 in OpenAPI, Swagger UI login

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"docs": "/docs", "try": "/me with Authorization: Bearer <token>"}

    @app.get("/hello")
    async def hello(principal: Annotated[Principal | None, Depends(zitadel.optional)]) -> str:
        """Public, but personal when a valid token comes along (an invalid one is a 401)."""
        return f"hello {principal.username if principal else 'stranger'}"

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(zitadel)]) -> dict[str, Any]:
        return {
            "subject": principal.subject,
            "username": principal.username,
            "scopes": sorted(principal.scopes),
            "roles": {role: dict(orgs) for role, orgs in principal.roles.items()},
            "organization": principal.organization.id if principal.organization else None,
            "verified_by": principal.verified_by,
        }

    @app.get("/items")
    async def list_items(
        principal: Annotated[Principal, Depends(zitadel.require_any_role("reader", "admin"))],
    ) -> list[str]:
        return ITEMS

    @app.post("/items", status_code=201, dependencies=[Depends(zitadel.require_role("admin"))])
    async def add_item(name: str) -> dict[str, str]:
        return {"created": name}

    @app.get("/profile")
    async def profile(principal: Annotated[Principal, Depends(require_scope("profile"))]) -> Any:
        """Needs the ``profile`` scope (module-level ``require_scope``)."""
        return {"name": principal.name, "email": principal.email}

    @app.get("/email")
    async def email(principal: Annotated[Principal, Security(zitadel, scopes=["email"])]) -> Any:
        return {"email": principal.email}

    if org_id is not None:

        @app.get(
            "/org/report", dependencies=[Depends(zitadel.require_role("admin", org_id=org_id))]
        )
        async def org_report() -> dict[str, str]:
            """Only for users whose ``admin`` role was granted by organization ``org_id``."""
            return {"org": org_id}

    admin = APIRouter(prefix="/admin", dependencies=[Depends(zitadel.require_role("admin"))])

    @admin.get("/stats")
    async def stats() -> dict[str, int]:
        return {"items": len(ITEMS)}

    @admin.delete("/cache")
    async def drop_cache() -> dict[str, bool]:
        await zitadel.clear()
        return {"cleared": True}

    app.include_router(admin)

    @app.websocket("/ws")
    async def feed(websocket: WebSocket, principal: Annotated[Principal, Depends(zitadel)]) -> None:
        await websocket.accept()
        # A JWT verified locally carries no username (ZITADEL puts none in it): its subject.
        await websocket.send_json({"welcome": principal.username or principal.subject})
        await websocket.close()

    return app
