"""An MCP server built with the official SDK, protected by ZITADEL, over streamable HTTP on
loopback and driven by the SDK's own client: the 401 and its ``resource_metadata``, the
metadata document the client reads, tools listed and called with a stand-in token, and what
an IdP outage looks like (503 in front of the SDK, never a 401)."""

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.auth.utils import (
    extract_resource_metadata_from_www_auth,
    handle_protected_resource_response,
)
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.provider import TokenVerifier

from example_app.mcp_server import create_mcp_app
from fastapi_zitadel import ConfigurationError, IdentityProviderError, ZitadelIntrospection
from fastapi_zitadel.mcp import ZitadelTokenVerifier
from fastapi_zitadel.testing import LoopbackServer, StandInProject, ZitadelStandIn, bind_socket

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@dataclass
class Served:
    standin: ZitadelStandIn
    project: StandInProject
    zitadel: ZitadelIntrospection
    sock: socket.socket  # bound for the MCP server: its port is in ``url``
    url: str


@contextmanager
def mcp_world(resource: str | None = None, **options: Any) -> Iterator[Served]:
    """A stand-in project in-process (the MCP server reaches it through its transport) and an
    instance whose ``resource`` is ``url``: by default that of a socket bound for the server."""
    standin = ZitadelStandIn()
    with StandInProject(standin) as project:
        sock = bind_socket("127.0.0.1", 0)
        url = resource or f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
        zitadel = project.introspection(
            resource=url, http_client=httpx.AsyncClient(transport=standin.transport()), **options
        )
        with sock:
            yield Served(standin, project, zitadel, sock, url)


@pytest.fixture
def served() -> Iterator[Served]:
    with (
        mcp_world(max_retries=0) as world,
        LoopbackServer(create_mcp_app(world.zitadel), sock=world.sock),
    ):
        yield world


def test_the_verifier_is_the_sdks_token_verifier() -> None:
    standin = ZitadelStandIn()
    with StandInProject(standin) as project:
        verifier: TokenVerifier = ZitadelTokenVerifier(project.introspection())
        assert isinstance(verifier, ZitadelTokenVerifier)
        with pytest.raises(ConfigurationError, match="needs resource"):
            ZitadelTokenVerifier(project.introspection()).auth_settings()


def test_required_scopes_may_be_any_iterable() -> None:
    """An iterator is read once: the SDK and the verifier get the same scopes."""
    standin = ZitadelStandIn()
    with StandInProject(standin) as project:
        verifier = ZitadelTokenVerifier(project.introspection(resource="https://mcp.test/mcp"))
        settings = verifier.auth_settings(required_scopes=iter(["a", "b"]))
        assert settings.required_scopes == ["a", "b"]
        assert verifier.required_scopes == ("a", "b")


async def test_no_token_401_points_to_metadata_the_client_reads(served: Served) -> None:
    async with httpx2.AsyncClient() as http:
        refused = await http.post(served.url, json=INITIALIZE, headers=MCP_HEADERS)
        assert refused.status_code == 401
        metadata_url = extract_resource_metadata_from_www_auth(refused)
        assert metadata_url == served.url.replace(
            "/mcp", "/.well-known/oauth-protected-resource/mcp"
        )
        metadata = await handle_protected_resource_response(await http.get(metadata_url))
    assert metadata is not None
    assert str(metadata.resource) == served.url
    assert [str(server) for server in metadata.authorization_servers] == [served.standin.issuer]


async def test_a_standin_token_lists_and_calls_tools(served: Served) -> None:
    token = served.project.token("alice", roles=["reader"])
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(served.url, http_client=http)) as client:
        tools = await client.list_tools()
        assert {tool.name for tool in tools.tools} == {"stock", "items"}
        result = await client.call_tool("stock", {"item": "pear"})
    assert not result.is_error
    content: Any = result.content[0]
    assert content.text == "5"


async def test_an_invalid_token_is_the_librarys_401_with_resource_metadata(
    served: Served,
) -> None:
    async with httpx2.AsyncClient() as http:
        refused = await http.post(
            served.url,
            json=INITIALIZE,
            headers={**MCP_HEADERS, "Authorization": "Bearer not-a-token"},
        )
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert extract_resource_metadata_from_www_auth(refused) is not None


async def test_an_outage_is_a_503_not_a_401(served: Served) -> None:
    token = served.project.token("bob", roles=["reader"])  # never verified: not cached
    served.standin.inject("status", status=503, times=None)
    async with httpx2.AsyncClient() as http:
        answer = await http.post(
            served.url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"}
        )
    assert answer.status_code == 503
    assert int(answer.headers["retry-after"]) >= 1


async def test_through_the_sdk_alone_an_outage_is_a_500_never_a_401() -> None:
    """Without ``protect()``, the SDK's own middleware lets the exception through."""
    from mcp.server.mcpserver import MCPServer

    with mcp_world(max_retries=0) as world:
        standin, project, zitadel, sock, url = (
            world.standin,
            world.project,
            world.zitadel,
            world.sock,
            world.url,
        )
        verifier = ZitadelTokenVerifier(zitadel)
        server = MCPServer("bare", token_verifier=verifier, auth=verifier.auth_settings())
        token = project.token("alice")
        standin.inject("status", status=503, times=None)
        with LoopbackServer(server.streamable_http_app(), sock=sock):
            async with httpx2.AsyncClient() as http:
                answer = await http.post(
                    url,
                    json=INITIALIZE,
                    headers={**MCP_HEADERS, "Authorization": f"Bearer {token}"},
                )
        await zitadel.aclose()
    assert answer.status_code == 500


async def test_the_verifier_raises_on_an_outage_and_maps_the_principal() -> None:
    with mcp_world("https://mcp.example.test/mcp", max_retries=0) as world:
        standin, project, zitadel = world.standin, world.project, world.zitadel
        verifier = ZitadelTokenVerifier(zitadel)
        async with zitadel:
            token = project.token("alice", roles=["reader"])
            access = await verifier.verify_token(token)
            assert access is not None
            assert access.subject is not None
            assert "role:reader" in access.scopes
            assert access.resource == project.project.id
            assert access.expires_at is not None
            assert access.claims is not None
            assert access.claims["sub"] == access.subject
            assert await verifier.verify_token("garbage") is None
            standin.inject("status", status=503, times=None)
            with pytest.raises(IdentityProviderError):  # never None: that would be a 401
                await verifier.verify_token(project.token("bob"))


# The scope challenge, as the MCP specification asks for it --------------------------------


async def test_a_token_without_the_required_scope_gets_the_specifications_challenge() -> None:
    """403 ``insufficient_scope`` with the ``scope`` needed and ``resource_metadata``, so a
    client can ask for more (the SDK's own 403 leaves ``scope`` out); the tool stays unrun."""
    from mcp.server.mcpserver import MCPServer

    with mcp_world() as world:
        project, zitadel, sock, url = world.project, world.zitadel, world.sock, world.url
        verifier = ZitadelTokenVerifier(zitadel)
        settings = verifier.auth_settings(required_scopes=["role:writer"])
        server = MCPServer("scoped", token_verifier=verifier, auth=settings)
        calls: list[str] = []

        @server.tool()
        def restock(item: str) -> str:
            calls.append(item)
            return "ok"

        reader = project.token("alice", roles=["reader"])
        writer = project.token("bob", roles=["writer"])
        with LoopbackServer(verifier.protect(server.streamable_http_app()), sock=sock):
            async with httpx2.AsyncClient() as http:
                refused = await http.post(
                    url,
                    json=INITIALIZE,
                    headers={**MCP_HEADERS, "Authorization": f"Bearer {reader}"},
                )
            client_http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {writer}"})
            async with (
                client_http,
                Client(streamable_http_client(url, http_client=client_http)) as client,
            ):
                result = await client.call_tool("restock", {"item": "pear"})
    assert refused.status_code == 403
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="role:writer"' in challenge
    metadata = url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    assert f'resource_metadata="{metadata}"' in challenge
    assert extract_resource_metadata_from_www_auth(refused) == metadata
    assert refused.json()["detail"]["error"] == "insufficient_scope"
    assert not result.is_error
    assert calls == ["pear"]


def test_the_mcp_extra_allows_only_the_tested_sdk_range() -> None:
    """The ``mcp`` extra's range is what CI installs and tests; the fields filled in
    ``AccessToken`` exist throughout it."""
    import re
    from importlib.metadata import version
    from pathlib import Path

    from mcp.server.auth.provider import AccessToken
    from packaging.requirements import Requirement

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^mcp = \["([^"]+)"\]$', pyproject, re.MULTILINE)  # the extra
    assert found is not None
    extra = found.group(1)
    requirement = Requirement(extra)
    assert requirement.specifier.contains(version("mcp")), (extra, version("mcp"))
    assert {str(s) for s in requirement.specifier} == {">=2.3", "<3"}  # what CI has run
    assert {"resource", "subject", "claims"} <= set(AccessToken.model_fields)


def test_a_scope_never_passes_for_a_role() -> None:
    """``role:admin`` in a token's ``scope`` (a server that grants whatever a client asks for)
    is not the project role ``admin``, for the SDK's ``required_scopes`` and for Starlette's
    ``@requires`` behind ``ZitadelMiddleware`` alike."""
    from fastapi_zitadel import Principal, ZitadelCredentials

    standin = ZitadelStandIn()
    with StandInProject(standin) as project:
        verifier = ZitadelTokenVerifier(project.introspection())
    asking = Principal(subject="mallory", scopes=frozenset({"openid", "role:admin"}))
    holding = Principal(
        subject="alice", scopes=frozenset({"openid"}), roles={"admin": {"org": "acme"}}
    )
    assert verifier.access_token("t", asking).scopes == ["openid"]
    assert verifier.access_token("t", holding).scopes == ["openid", "role:admin"]
    assert ZitadelCredentials(asking).scopes == ["openid"]
    assert ZitadelCredentials(asking, role_prefix="").scopes == ["openid", "role:admin"]


BAD_TOKENS = [
    "",
    " ",
    "\x00",
    "\n",
    "é",
    "x y",
    "Bearer x",
    "null",
    "%00",
    "a" * 5000,  # over max_token_length
    "a" * 100_000,
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",  # alg none
]
OUTAGES: list[tuple[str, dict[str, Any]]] = [
    ("status", {"status": 500}),
    ("status", {"status": 503}),
    ("status", {"status": 400}),
    ("status", {"status": 401}),
    ("garbage", {}),
    ("drop", {}),
    ("latency", {"seconds": 2.0}),
    ("rate_limit", {"seconds": 1.0}),
]


async def test_none_only_for_a_bad_token_and_never_for_an_outage() -> None:
    """The protocol's ``None`` is a 401: 13 bad tokens get it, 8 kinds of outage raise."""
    with mcp_world(
        "https://mcp.example.test/mcp",
        max_retries=0,
        timeout=0.5,
        circuit_breaker_threshold=0,
        cache_ttl=0,
        negative_cache_ttl=0,
    ) as world:
        standin, project, zitadel = world.standin, world.project, world.zitadel
        verifier = ZitadelTokenVerifier(zitadel)
        async with zitadel:
            for token in [*BAD_TOKENS, project.token("alice") + "x"]:
                assert await verifier.verify_token(token) is None, token[:20]
            for kind, options in OUTAGES:
                standin.inject(kind, times=None, **options)  # type: ignore[arg-type]
                with pytest.raises(IdentityProviderError):
                    await verifier.verify_token(project.token("alice"))
                standin.clear_faults()
            assert await verifier.verify_token(project.token("alice")) is not None
