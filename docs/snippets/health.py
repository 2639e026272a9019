"""An unprotected health route that shows what authentication is doing."""

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Depends, FastAPI

from fastapi_zitadel import Principal, ZitadelIntrospection

zitadel = ZitadelIntrospection.from_env()
app = FastAPI()
zitadel.install(app)


@app.get("/healthz")
async def healthz() -> dict[str, Any]:
    snapshot = zitadel.metrics()
    lookups = snapshot.cache_hits + snapshot.shared_hits + snapshot.misses
    return {
        "auth": "degraded" if snapshot.circuit_state != "closed" else "ok",
        "cache_hit_ratio": snapshot.cache_hits / lookups if lookups else None,
        **asdict(snapshot),
    }


@app.get("/me")
async def me(principal: Annotated[Principal, Depends(zitadel)]) -> str | None:
    return principal.subject
