"""An MCP server (the official SDK) protected by ZITADEL: the mcp extra, pip install '.[mcp]'.

ZITADEL_RESOURCE is the MCP endpoint's URL as clients reach it (https://mcp.example.com/mcp).
"""

from mcp.server.mcpserver import MCPServer

from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.mcp import ZitadelTokenVerifier

zitadel = ZitadelIntrospection.from_env()
verifier = ZitadelTokenVerifier(zitadel)
server = MCPServer("shop", token_verifier=verifier, auth=verifier.auth_settings())


@server.tool()
def stock(item: str) -> int:
    """How many of ``item`` are in stock."""
    return {"apple": 3, "pear": 5}.get(item, 0)


# The SDK's app, with ZitadelMiddleware in front: an IdP outage is a 503 with Retry-After
# (through the SDK alone it would be a 500; never a 401). Serve it: uvicorn snippet:app
app = verifier.protect(server.streamable_http_app())
