"""ZITADEL tokens for MCP servers built with the official MCP Python SDK (the ``mcp`` extra).

``ZitadelTokenVerifier(zitadel)`` implements the SDK's ``TokenVerifier`` protocol
(``mcp.server.auth.provider``), so ``MCPServer(token_verifier=..., auth=...)`` verifies
ZITADEL tokens with this library's caches, single flight and circuit breaker::

    zitadel = ZitadelIntrospection.from_env()          # ZITADEL_RESOURCE=https://host/mcp
    verifier = ZitadelTokenVerifier(zitadel)
    server = MCPServer("shop", token_verifier=verifier, auth=verifier.auth_settings())
    app = verifier.protect(server.streamable_http_app())

What an IdP outage looks like: the protocol has only ``None`` ("a bad token", which the SDK
answers with a 401), so the verifier never returns ``None`` for an outage: it raises the
``IdentityProviderError``. Inside the SDK alone that exception is a 500 (fail closed, never a
401 that would make a client throw a good token away). ``protect(app)`` puts
``ZitadelMiddleware`` (``require=False``) in front of the SDK's app: an outage is then a 503
with ``Retry-After`` before the SDK sees the request, an invalid token the library's 401 (with
``resource_metadata``), and a request without a token goes on to the SDK's own 401.

A valid token without the scopes of ``auth_settings(required_scopes=...)`` gets the MCP
specification's scope challenge from ``protect(app)``: 403 with ``error="insufficient_scope"``,
the ``scope`` the server needs and ``resource_metadata`` (the SDK's own answer leaves ``scope``
out, so a client cannot step up)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from ._exceptions import ConfigurationError, InsufficientScopeError, InvalidTokenError
from ._extras import install_hint

try:
    from mcp.server.auth.provider import AccessToken
    from mcp.server.auth.settings import AuthSettings
except ModuleNotFoundError as missing:
    if missing.name is None or missing.name.split(".")[0] != "mcp":
        raise  # the SDK is there but broken: its own error says more
    # One line naming the extra, not a bare "No module named 'mcp'".
    raise ImportError(f"fastapi_zitadel.mcp needs the MCP SDK, {install_hint('mcp')}") from None
from ._fastapi.middleware import ZitadelCredentials, ZitadelMiddleware
from ._fastapi.security import ZitadelIntrospection, open_with
from ._principal import Principal

__all__ = ["ZitadelTokenVerifier"]


class ZitadelTokenVerifier:
    """The MCP SDK's ``TokenVerifier`` on a ``ZitadelIntrospection``. ``AccessToken.scopes`` holds
    the token's scopes and, as ``<role_prefix><role>`` (``role:admin``), its project roles, so
    ``AuthSettings(required_scopes=["role:mcp"])`` demands a ZITADEL role (ZITADEL has no custom
    scopes)."""

    def __init__(self, zitadel: ZitadelIntrospection, *, role_prefix: str = "role:") -> None:
        if not isinstance(zitadel, ZitadelIntrospection):
            raise ConfigurationError("ZitadelTokenVerifier needs a ZitadelIntrospection")
        self.zitadel = zitadel
        self.role_prefix = role_prefix
        self.required_scopes: tuple[str, ...] = ()

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's ``AccessToken``, or ``None`` when it is not valid. Raises
        ``IdentityProviderError`` when that cannot be decided now (never ``None``)."""
        try:
            principal = await self.zitadel.verify(token)
        except InvalidTokenError:
            return None
        return self.access_token(token, principal)

    def access_token(self, token: str, principal: Principal) -> AccessToken:
        """The SDK's view of a verified ``principal``."""
        audience = principal.audience
        config = self.zitadel.config
        # The audience entry naming this server: ``resource`` when the token carries it, else
        # the project id, else the first audience (ZITADEL's ``aud`` holds client and project
        # ids, not URLs; ``audience=`` checks it).
        candidates = (config.resource, config.project_id, *audience[:1])
        resource = next((c for c in candidates if c is not None and c in audience), None)
        expires = principal.expires_at
        return AccessToken(
            token=token,
            client_id=principal.client_id or principal.subject or "",
            scopes=ZitadelCredentials(principal, self.role_prefix).scopes,
            expires_at=None if expires is None else int(expires.timestamp()),
            resource=resource,
            subject=principal.subject,
            claims=principal.model_dump(include={"claims"})["claims"],
        )

    def auth_settings(self, required_scopes: Iterable[str] | None = None) -> AuthSettings:
        """``AuthSettings`` for ``MCPServer(auth=...)``: ZITADEL as the issuer, ``resource``
        (``ZITADEL_RESOURCE``) as the resource server URL, whose RFC 9728 metadata the SDK
        serves. ``validate_token_resource`` is off: ZITADEL binds tokens to projects, not to
        URLs, and the audience is checked here (``audience=``)."""
        config = self.zitadel.config
        if config.resource is None:
            raise ConfigurationError(
                "an MCP server needs resource (ZITADEL_RESOURCE): the server's URL, e.g. "
                "https://mcp.example.com/mcp"
            )
        # Strings, not AnyHttpUrl(...): AuthSettings keeps a path-less issuer without the
        # trailing slash pydantic would add, and issuers are compared exactly (RFC 8414).
        self.required_scopes = tuple(required_scopes or ())
        return AuthSettings.model_validate(
            {
                "issuer_url": config.issuer,
                "resource_server_url": config.resource,
                "service_documentation_url": config.resource_documentation,
                "validate_token_resource": False,
                "required_scopes": None if required_scopes is None else list(self.required_scopes),
            }
        )

    def protect(self, app: ASGIApp) -> ZitadelMiddleware:
        """``app`` (the SDK's Starlette app) behind ``ZitadelMiddleware(require=False)``, as the
        module docstring says; a Starlette app's lifespan also opens and closes the
        ``ZitadelIntrospection``."""
        if isinstance(app, Starlette):
            open_with(app, self.zitadel)
        if self.required_scopes:
            app = _RequiredScopes(app, self.zitadel, self.required_scopes)
        return ZitadelMiddleware(
            app, zitadel=self.zitadel, require=False, role_prefix=self.role_prefix
        )


class _ScopeChallenge(InsufficientScopeError):
    """403 ``insufficient_scope`` naming the scopes and, as the MCP specification's scope
    challenge does, the resource metadata."""

    challenge_names_metadata = True


class _RequiredScopes:
    """Between ``ZitadelMiddleware`` and the SDK's app: a verified token lacking one of
    ``required`` gets the scope challenge; the SDK never sees it."""

    def __init__(self, app: ASGIApp, zitadel: ZitadelIntrospection, required: Sequence[str]):
        self.app = app
        self._zitadel = zitadel
        self._required = tuple(required)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        credentials = scope.get("auth") if scope["type"] == "http" else None
        if isinstance(credentials, ZitadelCredentials):
            granted = credentials.scopes
            if any(needed not in granted for needed in self._required):
                challenge = _ScopeChallenge.for_scopes(self._required)
                await self._zitadel.refusal.respond(challenge, HTTPConnection(scope), send)
                return
        await self.app(scope, receive, send)
