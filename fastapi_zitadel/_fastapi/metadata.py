"""RFC 9728 protected resource metadata: where this API publishes which authorization server issues
its tokens, and the URL every 401 challenge points to (§5.1). MCP clients (and any RFC 9728 client)
start from a 401, read ``resource_metadata`` from its ``WWW-Authenticate``, fetch the document, and
go to the authorization server it names."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from fastapi_zitadel._config import ZitadelConfig

__all__ = ["document", "metadata_path", "metadata_url", "schema_scopes", "serve"]

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_path(resource: str) -> str:
    """The path RFC 9728 §3.1 forms: the well-known segment, then the resource's own path
    (``https://api.example.com/mcp`` -> ``/.well-known/oauth-protected-resource/mcp``)."""
    return WELL_KNOWN + urlsplit(resource).path.rstrip("/")


def metadata_url(resource: str) -> str:
    """The metadata document's URL, as named in ``resource_metadata="..."``."""
    parts = urlsplit(resource)
    return urlunsplit((parts.scheme, parts.netloc, metadata_path(resource), "", ""))


def schema_scopes(schema: dict[str, Any], scheme_name: str) -> set[str]:
    """Every scope an operation of the OpenAPI ``schema`` requires under ``scheme_name``."""
    found: set[str] = set()
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                for requirement in operation.get("security", []):
                    found.update(requirement.get(scheme_name, ()))
    return found


def document(config: ZitadelConfig, scopes: Iterable[str]) -> dict[str, Any]:
    """The metadata (RFC 9728 §2): ZITADEL as the one authorization server."""
    assert config.resource is not None
    metadata: dict[str, Any] = {
        "resource": config.resource,
        "authorization_servers": [config.issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": sorted(scopes),
    }
    if config.resource_name is not None:
        metadata["resource_name"] = config.resource_name
    if config.resource_documentation is not None:
        metadata["resource_documentation"] = config.resource_documentation
    return metadata


def serve(app: FastAPI, path: str, document: Callable[[], dict[str, Any]]) -> None:
    """Serve the metadata at ``path`` (not in the schema), built on the first request: the
    routes it lists the scopes of are declared by then."""
    served = functools.cache(document)

    async def protected_resource_metadata() -> JSONResponse:
        return JSONResponse(served(), headers={"Cache-Control": "max-age=3600"})

    app.add_api_route(path, protected_resource_metadata, methods=["GET"], include_in_schema=False)
