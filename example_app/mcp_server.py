"""An MCP server protected by ZITADEL: ``python -m example_app.mcp_server``.

Built with the official MCP Python SDK (the ``mcp`` extra: ``pip install '.[mcp]'`` in this clone,
or ``pip install 'fastapi_zitadel-<version>-py3-none-any.whl[mcp]'`` with a wheel): the SDK's
``MCPServer`` serves streamable HTTP at ``/mcp`` and its RFC 9728 metadata, and
``ZitadelTokenVerifier`` verifies the bearer tokens. With ``ZITADEL_ISSUER`` (a key and
``ZITADEL_RESOURCE``, the server's URL such as ``https://mcp.example.com/mcp``) in the
environment it uses your ZITADEL instance; without, it starts the embedded stand-in and prints
a token to try.
"""

import argparse
import os
import sys
from contextlib import ExitStack

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.mcp import ZitadelTokenVerifier
from fastapi_zitadel.testing import PortInUse, StandInProject, ZitadelStandIn, bind_socket

INVENTORY = {"apple": 3, "pear": 5}


def create_mcp_app(zitadel: ZitadelIntrospection) -> ASGIApp:
    """The MCP server's ASGI app: tools behind ZITADEL, outages as 503 (see the docs)."""
    verifier = ZitadelTokenVerifier(zitadel)
    server = MCPServer("Example shop", token_verifier=verifier, auth=verifier.auth_settings())

    @server.tool()
    def stock(item: str) -> int:
        """How many of ``item`` are in stock."""
        return INVENTORY.get(item, 0)

    @server.tool()
    def items() -> list[str]:
        """Every item of the shop."""
        return sorted(INVENTORY)

    # In front of the SDK's app: outages are 503 with Retry-After, not 500; the app's
    # lifespan opens and closes the ZitadelIntrospection too.
    return verifier.protect(server.streamable_http_app())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8001")))
    args = parser.parse_args()
    try:
        sock = bind_socket("127.0.0.1", args.port)
    except PortInUse as exc:
        print(f"example: {exc}", file=sys.stderr)
        sys.exit(4)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    with ExitStack() as stack:
        stack.callback(sock.close)
        if os.environ.get("ZITADEL_ISSUER"):
            zitadel = ZitadelIntrospection.from_env()
        else:
            standin = ZitadelStandIn()
            stack.enter_context(standin.serve())
            project = stack.enter_context(StandInProject(standin))
            zitadel = project.introspection(resource=url)
            token = project.token("alice", roles=["reader"])
            print(f"Embedded ZITADEL stand-in at {standin.issuer}")
            print(f"MCP server on {url}; a token for alice:\n  {token}", flush=True)
        uvicorn.Server(uvicorn.Config(create_mcp_app(zitadel))).run(sockets=[sock])


if __name__ == "__main__":
    main()
