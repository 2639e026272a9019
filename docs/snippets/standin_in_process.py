"""The stand-in without a port: httpx talks to it in-process (an async test)."""

import httpx
import pytest

from fastapi_zitadel import IdentityProviderUnavailable, InvalidTokenError
from fastapi_zitadel.testing import StandInProject, ZitadelStandIn


@pytest.mark.asyncio  # pytest-asyncio's default strict mode runs only marked tests
async def test_verify_in_process() -> None:
    standin = ZitadelStandIn()  # issuer http://zitadel.localhost, never on the network
    project = StandInProject(standin)  # organization, project, API application, key file
    token = project.token("alice", roles=["admin"])
    async with (
        httpx.AsyncClient(transport=standin.transport()) as http,
        project.introspection(http_client=http, max_retries=0) as zitadel,
    ):
        principal = await zitadel.verify(token)
        assert principal.username == "alice"
        assert principal.has_role("admin", project.org.id)

        # ZITADEL rate-limits the next call: 503 for the caller, with ZITADEL's Retry-After.
        standin.inject("rate_limit", seconds=30)
        with pytest.raises(IdentityProviderUnavailable) as outage:
            await zitadel.verify(project.token("bob"))
        assert outage.value.retry_after == 30

        # Revoked in ZITADEL: invalid as soon as the cached result is dropped.
        standin.revoke(token)
        await zitadel.invalidate(token)
        with pytest.raises(InvalidTokenError, match="the token is not active"):
            await zitadel.verify(token)
