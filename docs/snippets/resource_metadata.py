"""RFC 9728: ZITADEL_RESOURCE=https://api.example.com/shop, then install() serves
/.well-known/oauth-protected-resource/shop and every 401 names it."""

from typing import Annotated

from fastapi import Depends, FastAPI

from fastapi_zitadel import Principal, ZitadelIntrospection

zitadel = ZitadelIntrospection.from_env(resource_name="Example shop")
app = FastAPI()
zitadel.install(app)


@app.get("/shop/items", dependencies=[Depends(zitadel.require_role("reader"))])
async def items() -> list[str]:
    return ["apple", "pear"]


@app.get("/shop/me")  # scopes_supported lists "profile": a scope ZITADEL issues
async def me(principal: Annotated[Principal, Depends(zitadel.require_scope("profile"))]) -> str:
    return principal.subject
