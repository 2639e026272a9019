"""myapp.py: the app under test, built by a factory that reads ZITADEL_* by default."""

from typing import Annotated

from fastapi import Depends, FastAPI

from fastapi_zitadel import Principal, ZitadelIntrospection


def create_app(zitadel: ZitadelIntrospection | None = None) -> FastAPI:
    zitadel = zitadel or ZitadelIntrospection.from_env()
    app = FastAPI()
    zitadel.install(app)

    @app.get("/items")
    async def list_items(
        principal: Annotated[Principal, Depends(zitadel.require_any_role("reader", "admin"))],
    ) -> list[str]:
        return ["apple", "pear"]

    @app.post("/items", status_code=201, dependencies=[Depends(zitadel.require_role("admin"))])
    async def add_item(name: str) -> dict[str, str]:
        return {"created": name}

    return app
