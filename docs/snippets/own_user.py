"""The app's own user: loaded once per verified token, injected with Depends(zitadel.user)."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import Field

from fastapi_zitadel import Principal, ZitadelIntrospection


@dataclass(frozen=True)
class Account:
    id: int
    subject: str
    plan: str


ACCOUNTS = {"alice": Account(1, "alice", "gold")}  # your database


class AcmePrincipal(Principal):
    """Custom claims as typed fields: the claim named by the alias (or the field name)."""

    org_domain: str | None = Field(None, alias="urn:zitadel:iam:user:resourceowner:primary_domain")


async def load_account(principal: AcmePrincipal) -> Account | None:
    """Runs once per verified token; None: not a user of this app (403)."""
    return ACCOUNTS.get(principal.username or "")


zitadel = ZitadelIntrospection.from_env(
    principal_loader=load_account, principal_class=AcmePrincipal
)
CurrentAccount = Annotated[Account, Depends(zitadel.user)]  # keeps the type for mypy
app = FastAPI()
zitadel.install(app)


@app.get("/account")
async def account(user: CurrentAccount) -> dict[str, str | int]:
    return {"id": user.id, "plan": user.plan}
