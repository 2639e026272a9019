"""Routes declared in a module that does not know the ZitadelIntrospection instance."""

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI

from fastapi_zitadel import Principal, ZitadelIntrospection
from fastapi_zitadel.defaults import require_role, require_scope, set_default_zitadel

router = APIRouter()


@router.get("/reports", dependencies=[Depends(require_role("admin"))])
async def reports() -> list[str]:
    return ["q1", "q2"]


@router.get("/whoami")
async def whoami(principal: Annotated[Principal, Depends(require_scope("profile"))]) -> str:
    return principal.username or ""


def create_app() -> FastAPI:
    zitadel = ZitadelIntrospection.from_env()
    set_default_zitadel(zitadel)  # the module-level require_* now use this instance
    app = FastAPI()
    zitadel.install(app)
    app.include_router(router)
    return app
