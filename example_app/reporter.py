"""A second service that calls the shop API as a ZITADEL service user: ``ServiceAccountAuth``.

``GET /report`` asks the shop for its items and its admin stats with the service user's token
and says what it got: a ``reader`` sees the items and is refused the stats (403), an
``admin`` sees both. The token is fetched once, kept, renewed before it lapses and shared by
every request; a token the shop refuses (``401 invalid_token``) is replaced once.

Run it next to the example API (``python -m example_app``), with the service user's key or
secret::

    SHOP_URL=http://127.0.0.1:8000 ZITADEL_ISSUER=... ZITADEL_PROJECT_ID=<the shop's project> \\
    REPORTER_KEY_FILE=service-user.json python -m example_app.reporter

(``REPORTER_CLIENT_ID`` and ``REPORTER_CLIENT_SECRET`` instead of the key: client credentials.)
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from fastapi_zitadel import ServiceAccountAuth


def create_reporter(shop_url: str, auth: ServiceAccountAuth) -> FastAPI:
    """The reporter, calling the shop at ``shop_url`` as ``auth``'s service user."""
    client = httpx.AsyncClient(base_url=shop_url, auth=auth, timeout=10)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with auth, client:  # one pool to the shop, one to ZITADEL; closed at shutdown
            yield

    app = FastAPI(title="Example reporter", lifespan=lifespan)

    @app.get("/report")
    async def report() -> dict[str, Any]:
        me = await client.get("/me")
        items = await client.get("/items")
        stats = await client.get("/admin/stats")
        return {
            "as": me.json().get("username") if me.status_code == 200 else None,
            "items": items.json() if items.status_code == 200 else f"HTTP {items.status_code}",
            "stats": stats.json() if stats.status_code == 200 else f"HTTP {stats.status_code}",
        }

    return app


def auth_from_env() -> ServiceAccountAuth:
    """The service user from ``REPORTER_KEY_FILE`` or ``REPORTER_CLIENT_ID`` and
    ``REPORTER_CLIENT_SECRET``, for the shop's project ``ZITADEL_PROJECT_ID``."""
    issuer = os.environ["ZITADEL_ISSUER"]
    project = os.environ.get("ZITADEL_PROJECT_ID")
    if "REPORTER_KEY_FILE" in os.environ:
        return ServiceAccountAuth(
            issuer, key_file=os.environ["REPORTER_KEY_FILE"], project_id=project
        )
    return ServiceAccountAuth(
        issuer,
        client_id=os.environ["REPORTER_CLIENT_ID"],
        client_secret=os.environ["REPORTER_CLIENT_SECRET"],
        project_id=project,
    )


def main() -> None:
    app = create_reporter(os.environ.get("SHOP_URL", "http://127.0.0.1:8000"), auth_from_env())
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8001")))


if __name__ == "__main__":
    main()
