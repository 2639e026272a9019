"""Every kind of check, in one app configured from ZITADEL_* variables."""

# --8<-- [start:setup]
import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Security

from fastapi_zitadel import InsufficientScopeError, Principal, ZitadelIntrospection

zitadel = ZitadelIntrospection.from_env()
app = FastAPI()
zitadel.install(app)

# --8<-- [end:setup]


# --8<-- [start:token]
@app.get("/me")
async def me(principal: Annotated[Principal, Depends(zitadel)]) -> dict[str, Any]:
    """Any valid token."""
    return {"subject": principal.subject, "username": principal.username}


@app.get("/hello")
async def hello(principal: Annotated[Principal | None, Depends(zitadel.optional)]) -> str:
    """Anonymous callers get None; a token, when sent, must be valid (else 401)."""
    return f"hello {principal.username if principal else 'stranger'}"


# --8<-- [end:token]
# --8<-- [start:scopes]
@app.get("/profile")
async def profile(
    principal: Annotated[Principal, Depends(zitadel.require_scope("openid", "profile"))],
) -> dict[str, str | None]:
    """All of the scopes."""
    return {"name": principal.name}


@app.get("/contact")
async def contact(
    principal: Annotated[Principal, Depends(zitadel.require_any_scope("email", "phone"))],
) -> dict[str, str | None]:
    """At least one of the scopes."""
    return {"email": principal.email}


@app.get("/email")
async def email(principal: Annotated[Principal, Security(zitadel, scopes=["email"])]) -> Any:
    """FastAPI's own form: the same as require_scope("email")."""
    return {"email": principal.email}


# --8<-- [end:scopes]
# --8<-- [start:roles]
@app.get("/items")
async def list_items(
    principal: Annotated[Principal, Depends(zitadel.require_any_role("reader", "admin"))],
) -> list[str]:
    """At least one of the roles."""
    return ["apple", "pear"]


@app.post("/items", status_code=201, dependencies=[Depends(zitadel.require_role("admin"))])
async def add_item(name: str) -> dict[str, str]:
    return {"created": name}


@app.get("/audit", dependencies=[Depends(zitadel.require_role("admin", "auditor"))])
async def audit() -> dict[str, str]:
    """Every one of the roles."""
    return {"audit": "ok"}


# A whole router: every route below needs the role.
admin = APIRouter(prefix="/admin", dependencies=[Depends(zitadel.require_role("admin"))])


@admin.get("/stats")
async def stats() -> dict[str, int]:
    return {"items": 2}


app.include_router(admin)
# --8<-- [end:roles]
# --8<-- [start:orgs]
# A role granted by one organization (its resource id), fixed at start-up:
BILLING_ORG_ID = os.environ["BILLING_ORG_ID"]


@app.get(
    "/billing",
    dependencies=[Depends(zitadel.require_role("admin", org_id=BILLING_ORG_ID))],
)
async def billing() -> dict[str, str]:
    return {"org": BILLING_ORG_ID}


# The organization taken from the request: check with the Principal's helpers.
@app.get("/orgs/{org_id}/roles", responses={403: {"description": "No role in that organization"}})
async def org_roles(
    org_id: str, request: Request, principal: Annotated[Principal, Depends(zitadel)]
) -> list[str]:
    if not principal.has_any_role(["admin", "reader"], org_id):
        # The same 403 and WWW-Authenticate header as the built-in checks.
        error = InsufficientScopeError(f"requires a role in organization {org_id}")
        raise error.to_http(request, zitadel.realm)
    return sorted(principal.roles_in_org(org_id))


# --8<-- [end:orgs]
