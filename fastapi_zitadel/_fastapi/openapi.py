"""How a protected API describes itself: the security scheme, Swagger UI's Authorize button,
and the 401/403/503 responses of each protected operation (403 only where a scope or role is
checked; ``{}`` as an alternative requirement where authentication is optional). With a web
application's client id (``swagger_client_id``), the scheme is OAuth 2.0 authorization code
with PKCE against ZITADEL, so "Authorize" in ``/docs`` logs a developer in for real. Without
one it is a plain bearer field to paste a token into."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi.openapi.models import (
    HTTPBearer,
    OAuth2,
    OAuthFlowAuthorizationCode,
    OAuthFlows,
    SecurityBase,
)
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.security import OAuth2 as OAuth2Dependency
from fastapi.security.base import SecurityBase as SecurityDependency
from starlette.routing import BaseRoute

from fastapi_zitadel._config import ZitadelConfig
from fastapi_zitadel._exceptions import IdentityProviderError
from fastapi_zitadel._idp.discovery import Discovery
from fastapi_zitadel._log import logger

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.dependencies.models import Dependant

__all__ = [
    "ROLES_SCOPE",
    "RequiredScopes",
    "ScopedSecurity",
    "audience_scope",
    "check_at_startup",
    "dependants",
    "document_errors",
    "security_scheme",
    "swagger_ui_init_oauth",
    "use_discovered_endpoints",
]


if TYPE_CHECKING:  # to a type checker, what it is: a security dependency with its own call
    _Dependency = SecurityDependency
else:  # to FastAPI before 0.124, an OAuth2 one, so that it lists the scopes
    _Dependency = OAuth2Dependency


class ScopedSecurity(_Dependency):
    """The base of every dependency of ours that FastAPI documents as a security requirement.

    FastAPI before 0.124 copies ``Security(dep, scopes=[...])`` into an operation's
    ``security`` list only when ``dep`` is an ``OAuth2`` or ``OpenIdConnect`` instance (newer
    versions do it for any ``SecurityBase``). Subclassing ``OAuth2`` is for that check alone:
    subclasses set their own attributes and define ``model`` and ``__call__``; ``OAuth2``'s
    constructor and its header parsing are never used. ``forbids``: the dependency itself can
    answer 403 (a role check), so its operations document one. ``allows_anonymous``: callers
    without a token are served (``optional``)."""

    forbids = False
    allows_anonymous = False

    def __init__(self) -> None:  # OAuth2's would build a model and parse headers: not ours
        pass

    def check_at_startup(self, app: FastAPI) -> None:
        """Called by ``install()`` when ``app`` starts, for each use in its routes, so that a
        mistake fails the start rather than every request (the default instance's guard
        resolves the default). The dependency holds what it checks: no registry."""


def check_at_startup(app: FastAPI) -> None:
    """Ask every dependency of ours in ``app``'s routes to ``check_at_startup``."""
    for route in app.router.routes:
        for dependant in dependants(route):
            if isinstance(dependant.call, ScopedSecurity):
                dependant.call.check_at_startup(app)


def dependants(route: BaseRoute) -> Iterator[Dependant]:
    """Every dependency in the tree of a FastAPI route (HTTP or WebSocket), the route first."""
    if not isinstance(route, (APIRoute, APIWebSocketRoute)):
        return
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        pending.extend(dependant.dependencies)
        yield dependant


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


async def use_discovered_endpoints(scheme: SecurityBase, discovery: Discovery) -> None:
    """Point Swagger UI's login at the endpoints the discovery document names (read, not
    assumed); if discovery fails at start-up, ZITADEL's default paths stay."""
    try:
        metadata = await discovery.fetch()
    except IdentityProviderError as exc:
        logger.warning(
            "discovery failed at start-up (%s): Swagger UI's login uses ZITADEL's default "
            "paths under the issuer",
            exc.description,
        )
        return
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


class RequiredScopes:
    """The scopes the routes of one guard require, as they are declared (``require_scope``,
    ``require_any_scope``): listed in its OAuth2 flow at once, so Swagger UI's login asks for
    them and reading the scheme changes nothing; kept for the RFC 9728 document. ``hand_on``:
    another guard's, which gets them too, those noted already included (the default
    instance's guard hands them on to the instance that is the default)."""

    def __init__(self, scheme: SecurityBase | None = None) -> None:
        self._scheme = scheme
        self._next: RequiredScopes | None = None
        self._scopes: set[str] = set()

    def add(self, scopes: Iterable[str]) -> None:
        added = tuple(scopes)
        self._scopes.update(added)
        scheme = self._scheme
        if isinstance(scheme, OAuth2) and scheme.flows.authorizationCode is not None:
            known = scheme.flows.authorizationCode.scopes  # Swagger UI's login requests them
            for scope in added:
                known.setdefault(scope, "Required by some operations of this API")
        if self._next is not None:
            self._next.add(added)

    def hand_on(self, to: RequiredScopes | None) -> None:
        self._next = to
        if to is not None:
            to.add(self._scopes)

    def __iter__(self) -> Iterator[str]:
        return iter(self._scopes)


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {
            "type": "object",
            "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
            "required": ["error", "error_description"],
        }
    },
}
_CHALLENGE = {"description": "RFC 6750 challenge with the error code", "schema": {"type": "string"}}
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


@dataclass
class _Guarded:
    """What an operation's dependencies do with one security scheme."""

    required: bool = False  # a dependency that needs a valid token
    optional: bool = False  # ``zitadel.optional``: anonymous callers pass
    forbids: bool = False  # a role check, which can answer 403


_UNKNOWN_ROUTE = _Guarded(required=True, forbids=True)  # not among the routes: all three errors


def _guarded_operations(routes: Iterable[BaseRoute], scheme_name: str) -> dict[Any, _Guarded]:
    """(path, method) -> how the route's dependency tree uses ``scheme_name``."""
    found: dict[Any, _Guarded] = {}
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        guarded = _Guarded()
        for dependant in dependants(route):
            call = dependant.call
            if isinstance(call, ScopedSecurity) and call.forbids:
                guarded.forbids = True
            if isinstance(call, SecurityDependency) and call.scheme_name == scheme_name:
                if isinstance(call, ScopedSecurity) and call.allows_anonymous:
                    guarded.optional = True
                else:
                    guarded.required = True
        for method in route.methods or ():
            found[(route.path_format, method.lower())] = guarded
    return found


def _add_error_responses(
    schema: dict[str, Any], scheme_name: str, routes: Iterable[BaseRoute]
) -> dict[str, Any]:
    """Document the errors of every operation secured by ``scheme_name``: 401 and 503, and
    403 where a scope or role is checked (``routes``, the app's, tell; an operation not among
    them gets all three). Operations that only ``zitadel.optional`` secures list anonymous
    access (``{}``) as an alternative security requirement."""
    guarded = _guarded_operations(routes, scheme_name)
    for path, path_item in schema.get("paths", {}).items():
        for method, operation in path_item.items():
            if not isinstance(operation, dict):
                continue
            security = operation.get("security", [])
            ours = [req[scheme_name] for req in security if scheme_name in req]
            if not ours:
                continue
            if len(ours) > 1:  # FastAPI before 0.124 lists each Security(...) on its own,
                # as if any one were enough; all of them apply, as newer versions write it
                merged = list(dict.fromkeys(scope for scopes in ours for scope in scopes))
                others = [req for req in security if scheme_name not in req]
                security[:] = [{scheme_name: merged}, *others]
                ours = [merged]
            how = guarded.get((path, method), _UNKNOWN_ROUTE)
            codes = ("401", "403", "503") if how.forbids or any(ours) else ("401", "503")
            if how.optional and not how.required and len(security) == 1:
                security.append({})  # anonymous callers are served too
            responses = operation.setdefault("responses", {})
            for code in codes:
                # a copy: the schema is the app's, to change; the constant stays as it is
                responses.setdefault(code, copy.deepcopy(_ERROR_RESPONSES[code]))
    return schema


def document_errors(app: FastAPI, scheme_name: str) -> None:
    """Make ``app``'s schema document the errors of ``scheme_name``, once, when first built."""
    build_openapi = app.openapi

    def with_error_responses() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _add_error_responses(build_openapi(), scheme_name, app.routes)
        return app.openapi_schema

    app.openapi = with_error_responses  # type: ignore[method-assign]
