"""The whole app behind ZITADEL, with Starlette's request.user and @requires."""

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from starlette.authentication import requires

from fastapi_zitadel import Principal, ZitadelIntrospection, ZitadelMiddleware

zitadel = ZitadelIntrospection.from_env()
app = FastAPI()
zitadel.install(app)
app.add_middleware(
    ZitadelMiddleware,
    zitadel=zitadel,
    # Swagger UI, its login's redirect page (install() sets the login up), CORS preflights
    public_paths=["/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "OPTIONS *"],
)


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}  # public: no token needed


@app.get("/me")
async def me(request: Request) -> dict[str, Any]:
    return {"name": request.user.display_name, "scopes": request.auth.scopes}


@app.get("/admin")
@requires("role:admin")  # project roles are "role:<name>" in request.auth.scopes
async def admin(request: Request) -> dict[str, bool]:
    return {"ok": True}


@app.get("/principal")
async def principal(caller: Annotated[Principal, Depends(zitadel)]) -> dict[str, Any]:
    return {"subject": caller.subject}  # the middleware's verdict: no second lookup
