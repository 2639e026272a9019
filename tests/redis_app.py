"""An app for the multi-process test: configured from ZITADEL_* (Redis included), reporting
which worker process served each request."""

import os
from typing import Annotated

from fastapi import Depends, FastAPI

from fastapi_zitadel import Principal, ZitadelIntrospection

zitadel = ZitadelIntrospection.from_env()
app = FastAPI()
zitadel.install(app)


@app.get("/whoami")
async def whoami(principal: Annotated[Principal, Depends(zitadel)]) -> dict[str, object]:
    return {"sub": principal.subject, "pid": os.getpid()}
