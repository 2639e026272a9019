"""A small shop API protected by fastapi-zitadel: the README's example, runnable as is."""

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Security, WebSocket

from fastapi_zitadel import Principal, ZitadelIntrospection


def create_app(zitadel: ZitadelIntrospection) -> FastAPI:
    app = FastAPI(title="Example shop", description="Protected by fastapi-zitadel")
    zitadel.install(app)  # lifespan, 401/403/503 in OpenAPI, Swagger UI login

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"docs": "/docs", "try": "/me with Authorization: Bearer <token>"}

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(zitadel)]) -> dict[str, Any]:
        return {
            "subject": principal.subject,
            "username": principal.username,
            "scopes": sorted(principal.scopes),
            "roles": {role: dict(orgs) for role, orgs in principal.roles.items()},
        }

    @app.get("/items")
    async def list_items(
        principal: Annotated[Principal, Depends(zitadel.require_role("reader", "admin"))],
    ) -> list[str]:
        return ["apple", "pear"]

    @app.post("/items", dependencies=[Depends(zitadel.require_role("admin"))])
    async def add_item() -> dict[str, bool]:
        return {"created": True}

    @app.get("/profile")
    async def profile(
        principal: Annotated[Principal, Security(zitadel, scopes=["profile"])],
    ) -> dict[str, Any]:
        return {"name": principal.name, "email": principal.email}

    @app.get("/hello")
    async def hello(principal: Annotated[Principal | None, Depends(zitadel.optional)]) -> str:
        return f"hello {principal.username if principal else 'stranger'}"

    @app.websocket("/ws")
    async def feed(websocket: WebSocket, principal: Annotated[Principal, Depends(zitadel)]) -> None:
        await websocket.accept()
        await websocket.send_json({"welcome": principal.username})
        await websocket.close()

    return app
