"""The same from synchronous code, with the service user's client id and secret."""

import os

import httpx

from fastapi_zitadel import ServiceAccountAuth

auth = ServiceAccountAuth(
    os.environ["ZITADEL_ISSUER"],
    client_id=os.environ["REPORTER_CLIENT_ID"],  # the service user's *user name*
    client_secret=os.environ["REPORTER_CLIENT_SECRET"],
    project_id=os.environ["SHOP_PROJECT_ID"],
    roles=True,  # urn:zitadel:iam:org:projects:roles: the user's roles in the token's claims
)

with auth, httpx.Client(base_url=os.environ["SHOP_URL"], auth=auth) as shop:
    stats = shop.get("/admin/stats")  # 200 for a service user with the admin role, else 403
    token = auth.token()  # the raw token, for code that is not httpx (await auth.atoken())
