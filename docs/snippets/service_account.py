"""Calling a protected API as a service user, from async code (its JSON key)."""

import os

import httpx

from fastapi_zitadel import ServiceAccountAuth

auth = ServiceAccountAuth(
    os.environ["ZITADEL_ISSUER"],
    key_file=os.environ["REPORTER_KEY_FILE"],  # the service user's key: "type": "serviceaccount"
    project_id=os.environ["SHOP_PROJECT_ID"],  # the called API's project (its audience scope)
)


async def list_items() -> list[str]:
    async with httpx.AsyncClient(base_url=os.environ["SHOP_URL"], auth=auth) as shop:
        response = await shop.get("/items")  # Authorization: Bearer <the service user's token>
        response.raise_for_status()
        items: list[str] = response.json()
        return items
