from fastapi import Depends, FastAPI

from fastapi_zitadel import ZitadelIntrospection

zitadel = ZitadelIntrospection.from_env()  # 1. configure from ZITADEL_* variables
app = FastAPI(dependencies=[Depends(zitadel)])  # 2. every route needs a valid token
zitadel.install(app)  # 3. lifespan, OpenAPI responses, Swagger UI login


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
