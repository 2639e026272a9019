"""How a protected API describes itself: the security scheme, Swagger UI's Authorize button,
and the 401/403/503 responses of each protected operation.

With a web application's client id (``swagger_client_id``), the scheme is OAuth 2.0
authorization code with PKCE against ZITADEL, so "Authorize" in ``/docs`` logs a developer in
for real. Without one it is a plain bearer field to paste a token into.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi.openapi.models import (
    HTTPBearer,
    OAuth2,
    OAuthFlowAuthorizationCode,
    OAuthFlows,
    SecurityBase,
)

from fastapi_zitadel._config import ZitadelConfig
from fastapi_zitadel._idp.discovery import ProviderMetadata

__all__ = [
    "ROLES_SCOPE",
    "add_error_responses",
    "audience_scope",
    "list_scopes",
    "security_scheme",
    "swagger_ui_init_oauth",
    "use_discovered_endpoints",
]

ROLES_SCOPE = "urn:zitadel:iam:org:projects:roles"


def audience_scope(project_id: str) -> str:
    """The scope that puts a project into a ZITADEL token's audience."""
    return f"urn:zitadel:iam:org:project:id:{project_id}:aud"


def login_scopes(config: ZitadelConfig) -> dict[str, str]:
    """Scopes Swagger UI asks for when a developer logs in through ZITADEL."""
    scopes = {
        "openid": "Sign in with ZITADEL",
        "profile": "Name and username",
        "email": "E-mail address",
        ROLES_SCOPE: "Project roles of the user",
    }
    if config.project_id:
        scopes[audience_scope(config.project_id)] = "Tokens meant for this API's project"
    return scopes


# ZITADEL's own paths, used for Swagger UI's login only until discovery has answered (the
# lifespan fetches it at start-up when ``swagger_client_id`` is set).
_DEFAULT_AUTHORIZATION_PATH = "/oauth/v2/authorize"
_DEFAULT_TOKEN_PATH = "/oauth/v2/token"  # noqa: S105 - a path, not a password


def security_scheme(config: ZitadelConfig) -> SecurityBase:
    description = config.scheme_description or (
        f"Access token issued by ZITADEL ({config.issuer}), verified by introspection."
    )
    if config.swagger_client_id is None:
        return HTTPBearer(bearerFormat="opaque or JWT", description=description)
    flow = OAuthFlowAuthorizationCode(
        authorizationUrl=config.issuer + _DEFAULT_AUTHORIZATION_PATH,
        tokenUrl=config.issuer + _DEFAULT_TOKEN_PATH,
        scopes=login_scopes(config),
    )
    return OAuth2(flows=OAuthFlows(authorizationCode=flow), description=description)


def use_discovered_endpoints(scheme: SecurityBase, metadata: ProviderMetadata) -> None:
    """Point Swagger UI's login at the endpoints the discovery document names."""
    if isinstance(scheme, OAuth2) and scheme.flows.authorizationCode is not None:
        flow = scheme.flows.authorizationCode
        if metadata.authorization_endpoint is not None:
            flow.authorizationUrl = metadata.authorization_endpoint
        if metadata.token_endpoint is not None:
            flow.tokenUrl = metadata.token_endpoint


def swagger_ui_init_oauth(config: ZitadelConfig) -> dict[str, Any] | None:
    """FastAPI's ``swagger_ui_init_oauth`` for the PKCE login, or ``None`` without a client."""
    if config.swagger_client_id is None:
        return None
    return {
        "clientId": config.swagger_client_id,
        "usePkceWithAuthorizationCodeGrant": True,
        "scopes": " ".join(login_scopes(config)),
    }


def list_scopes(scheme: SecurityBase, scopes: Iterable[str]) -> None:
    """List an operation's scopes in the OAuth2 flow too, so Swagger UI can request them."""
    if isinstance(scheme, OAuth2) and scheme.flows.authorizationCode is not None:
        known = scheme.flows.authorizationCode.scopes
        for scope in scopes:
            known.setdefault(scope, "Required by some operations of this API")


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {
            "type": "object",
            "properties": {
                "error": {"type": "string"},
                "error_description": {"type": "string"},
            },
            "required": ["error", "error_description"],
        }
    },
}
_CHALLENGE = {
    "description": "RFC 6750 challenge with the error code",
    "schema": {"type": "string"},
}
_ERROR_RESPONSES: dict[str, dict[str, Any]] = {
    "401": {
        "description": "Missing, invalid, expired or revoked bearer token",
        "headers": {"WWW-Authenticate": _CHALLENGE},
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    },
    "403": {
        "description": "The token lacks a required scope or role",
        "headers": {"WWW-Authenticate": _CHALLENGE},
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    },
    "503": {
        "description": "Authentication is temporarily unavailable (identity provider outage)",
        "headers": {
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
        },
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    },
}


def add_error_responses(schema: dict[str, Any], scheme_name: str) -> dict[str, Any]:
    """Document 401, 403 and 503 on every operation secured by ``scheme_name``."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict):
                continue
            secured = any(scheme_name in req for req in operation.get("security", []))
            if secured:
                responses = operation.setdefault("responses", {})
                for code, response in _ERROR_RESPONSES.items():
                    responses.setdefault(code, response)
    return schema
