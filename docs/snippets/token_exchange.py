"""A gateway that calls the shop on behalf of its caller: the caller's token, exchanged."""

import os
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request

from fastapi_zitadel import Principal, ServiceAccountAuth, TokenExchange, ZitadelIntrospection

zitadel = ZitadelIntrospection.from_env()  # the gateway's own API application
exchange = TokenExchange(
    os.environ["ZITADEL_ISSUER"],
    key_file=os.environ["GATEWAY_APP_KEY_FILE"],  # an OIDC application with Token Exchange
    actor=ServiceAccountAuth(  # optional: the token then says who acts (act)
        os.environ["ZITADEL_ISSUER"],
        key_file=os.environ["GATEWAY_ROBOT_KEY_FILE"],  # a service user, impersonator role
        project_id=os.environ["ZITADEL_PROJECT_ID"],  # the gateway's project
    ),
)
app = FastAPI()
zitadel.install(app)


@app.get("/shop-items")
async def shop_items(request: Request, principal: Annotated[Principal, Depends(zitadel)]) -> Any:
    caller_token = request.headers["authorization"].split(" ", 1)[1]
    on_behalf = await exchange.aexchange(caller_token, audience=os.environ["SHOP_PROJECT_ID"])
    async with httpx.AsyncClient(base_url=os.environ["SHOP_URL"], auth=on_behalf) as shop:
        return (await shop.get("/items")).json()
