"""Placeholder until the FastAPI integration lands: shows that the engine verifies a token."""

from __future__ import annotations

import asyncio

import httpx

from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.testing import ZitadelStandIn


async def main() -> None:
    standin = ZitadelStandIn("http://zitadel.localhost")
    org = standin.add_org("Acme")
    project = standin.add_project("shop")
    app = standin.add_api_app(project)
    user = standin.add_user(org, "alice", roles={project: ["admin"]})
    token = standin.issue_token(user, project, scopes=["openid", "profile"])
    client = httpx.AsyncClient(transport=standin.transport())
    async with ZitadelIntrospection(
        standin.issuer, key_file=app.key_file, project_id=project.id, http_client=client
    ) as zitadel:
        principal = await zitadel.verify(token)
    print(f"verified {principal.username} with roles {sorted(principal.roles)}")


if __name__ == "__main__":
    asyncio.run(main())
