"""``ZitadelIntrospection``: the object a user creates once per app.

It turns configuration into the working pieces (client authentication, discovery, the HTTP
client, the token verifier with its caches) and is the FastAPI security dependency that
takes the token from a request and answers with a ``Principal`` or the right error.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase
from pydantic import ValidationError
from starlette.requests import HTTPConnection

from ._bearer import extract_bearer
from ._cache import IntrospectionCache
from ._client_auth import ClientAuthentication, ClientSecretBasic, PrivateKeyJwt
from ._config import ZitadelConfig, ZitadelSettings
from ._dependencies import (
    PrincipalDependency,
    all_scopes_dependency,
    any_scope_dependency,
    role_dependency,
)
from ._discovery import Discovery
from ._exceptions import (
    ConfigurationError,
    InsufficientScopeError,
    MissingTokenError,
    ZitadelError,
)
from ._http import HttpClientProvider
from ._http_errors import http_exception, websocket_exception
from ._introspection_client import IntrospectionClient
from ._key_file import KeyFileSource, load_key_file
from ._metrics import MetricsSnapshot
from ._openapi import add_error_responses, remember_scopes, security_scheme, swagger_ui_init_oauth
from ._principal import Principal
from ._verifier import TokenVerifier, cache_namespace


class ZitadelIntrospection(SecurityBase):
    """Verifies bearer tokens by asking ZITADEL's introspection endpoint (RFC 7662).

    Create one per app (per issuer) and reuse it: it holds the connection pool, the signed
    client assertion and the result cache. It is a FastAPI security dependency
    (``Depends(zitadel)``, ``Security(zitadel, scopes=[...])``), and usable without FastAPI
    through ``verify``.
    """

    def __init__(
        self,
        issuer: str | None = None,
        *,
        key_file: KeyFileSource | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        audience: str | list[str] | tuple[str, ...] | None = None,
        project_id: str | None = None,
        introspection_endpoint: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        cache: IntrospectionCache | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        config: ZitadelConfig | None = None,
        **options: Any,
    ) -> None:
        explicit = {
            "issuer": issuer,
            "client_id": client_id,
            "client_secret": client_secret,
            "audience": audience,
            "project_id": project_id,
            "introspection_endpoint": introspection_endpoint,
            **options,
        }
        explicit = {name: value for name, value in explicit.items() if value is not None}
        if isinstance(key_file, os.PathLike) or (
            isinstance(key_file, str) and not key_file.lstrip().startswith("{")
        ):
            explicit["key_file"] = key_file  # a path: validated and reported like the others
            key_file = None
        self.config = _build_config(config, explicit)
        self._auth = _client_authentication(self.config, key_file, clock, monotonic)
        self._http = HttpClientProvider(http_client, timeout=self.config.timeout)
        self._discovery = Discovery(
            self.config.issuer,
            http=self._http,
            endpoint=self.config.introspection_endpoint,
            timeout=self.config.timeout,
            allow_insecure_http=self.config.allow_insecure_http,
            monotonic=monotonic,
        )
        self._client = IntrospectionClient(
            http=self._http,
            discovery=self._discovery,
            auth=self._auth,
            timeout=self.config.timeout,
            max_retries=self.config.max_retries,
            monotonic=monotonic,
        )
        self._verifier = TokenVerifier(
            config=self.config,
            client=self._client,
            shared=cache if cache is not None else _shared_cache(self.config, self._auth, clock),
            clock=clock,
            monotonic=monotonic,
        )
        # FastAPI's security scheme: shown in OpenAPI under ``scheme_name``.
        self.model = security_scheme(self.config)
        self.scheme_name = self.config.scheme_name
        self._memo_key = f"fastapi_zitadel.principal.{id(self)}"
        self._query_tokens = self.config.websocket_query_token
        self._optional = _OptionalPrincipal(self)

    @classmethod
    def from_env(cls, **overrides: Any) -> ZitadelIntrospection:
        """Configure from ``ZITADEL_*`` environment variables; keyword arguments win."""
        try:
            settings = ZitadelSettings()
        except ValidationError as exc:
            raise ConfigurationError(_describe(exc, env=True)) from None
        return cls(config=settings, **overrides)

    @property
    def issuer(self) -> str:
        return self.config.issuer

    @property
    def introspection_calls(self) -> int:
        """How many introspection requests were sent (retries included)."""
        return self._client.calls

    # Verification ---------------------------------------------------------------------
    async def verify(self, token: str) -> Principal:
        """The ``Principal`` for a live token.

        Raises ``InvalidTokenError`` when the token is not valid, and an
        ``IdentityProviderError`` when that cannot be decided right now (never a 401 then).
        """
        return await self._verifier.verify(token)

    async def invalidate(self, token: str) -> None:
        """Forget what is cached for ``token``, e.g. right after revoking it."""
        await self._verifier.invalidate(token)

    async def clear(self) -> None:
        """Forget every cached result."""
        await self._verifier.clear()

    def metrics(self) -> MetricsSnapshot:
        """Counters since start: cache hits, misses, IdP calls by outcome and latency..."""
        return self._verifier.snapshot()

    @property
    def circuit_state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        return self._verifier.breaker.state

    async def discover(self) -> str:
        """Fetch the discovery document now, rather than on the first request."""
        return await self._discovery.introspection_endpoint()

    # FastAPI ------------------------------------------------------------------------------
    async def __call__(self, conn: HTTPConnection, security_scopes: SecurityScopes) -> Principal:
        """The dependency: the verified ``Principal``, holding every scope in ``Security``."""
        # Hot path: runs on every request, often several times (router and route scopes).
        # A cache hit completes without awaiting anything.
        principal: Principal | None = conn.scope.get(self._memo_key)
        if principal is None:
            token, principal = self._from_cache(conn)
            if principal is None:
                if token is None:
                    raise self.reject(conn, MissingTokenError("a bearer token is required"))
                principal = await self._from_idp(conn, token)
        if security_scopes.scopes:
            self.check_scopes(conn, principal, security_scopes.scopes)
        return principal

    def check_scopes(self, conn: HTTPConnection, principal: Principal, scopes: list[str]) -> None:
        """403 unless ``principal`` holds every one of ``scopes``."""
        if not principal.has_all_scopes(scopes):
            needed = " ".join(scopes)
            error = InsufficientScopeError(f"requires the scopes: {needed}", tuple(scopes))
            raise self.reject(conn, error)

    async def authenticate(self, conn: HTTPConnection) -> Principal:
        """The request's ``Principal``; raises the HTTP (or WebSocket) error otherwise."""
        principal = await self.authenticate_optional(conn)
        if principal is None:
            raise self.reject(conn, MissingTokenError("a bearer token is required"))
        return principal

    async def authenticate_optional(self, conn: HTTPConnection) -> Principal | None:
        """``None`` when the request carries no token; an invalid token still fails (401)."""
        principal: Principal | None = conn.scope.get(self._memo_key)
        if principal is None:
            token, principal = self._from_cache(conn)
            if principal is None and token is not None:
                principal = await self._from_idp(conn, token)
        return principal

    def _from_cache(self, conn: HTTPConnection) -> tuple[str | None, Principal | None]:
        """The request's token and, on a cache hit, its ``Principal`` (kept for the request:
        FastAPI may call us again for the same request with other scopes)."""
        scope = conn.scope
        try:
            token = extract_bearer(
                conn,
                max_length=self.config.max_token_length,
                allow_query=self._query_tokens and scope["type"] == "websocket",
            )
            principal = None if token is None else self._verifier.cached(token)
        except ZitadelError as error:
            raise self.reject(conn, error) from None
        if principal is not None:
            scope[self._memo_key] = principal
        return token, principal

    async def _from_idp(self, conn: HTTPConnection, token: str) -> Principal:
        try:
            principal = await self._verifier.resolve(token)
        except ZitadelError as error:
            raise self.reject(conn, error) from None
        conn.scope[self._memo_key] = principal
        return principal

    @property
    def optional(self) -> _OptionalPrincipal:
        """A dependency giving ``None`` for anonymous requests, for routes that serve both.

        A token, when present, must be valid (else 401) and hold the scopes of
        ``Security(zitadel.optional, scopes=[...])`` (else 403).
        """
        return self._optional

    def reject(self, conn: HTTPConnection, error: ZitadelError) -> Exception:
        """The exception FastAPI turns into the right 400/401/403/503 or WebSocket close."""
        if conn.scope["type"] == "websocket":
            return websocket_exception(error)
        return http_exception(error, self.config.realm)

    def require_scope(self, *scopes: str) -> PrincipalDependency:
        """Dependency: a ``Principal`` holding **all** of ``scopes`` (else 403)."""
        return all_scopes_dependency(self, *scopes)

    def require_any_scope(self, *scopes: str) -> PrincipalDependency:
        """Dependency: a ``Principal`` holding **at least one** of ``scopes`` (else 403)."""
        return any_scope_dependency(self, *scopes)

    def require_role(self, *roles: str, org_id: str | None = None) -> PrincipalDependency:
        """Dependency: a ``Principal`` with **at least one** of the project ``roles``,
        granted by organization ``org_id`` when given (else 403)."""
        return role_dependency(self, *roles, org_id=org_id)

    def require_all_roles(self, *roles: str, org_id: str | None = None) -> PrincipalDependency:
        """Dependency: a ``Principal`` holding **every one** of the project ``roles``."""
        return role_dependency(self, *roles, org_id=org_id, require_all=True)

    def document_scopes(self, scopes: tuple[str, ...]) -> None:
        remember_scopes(self.model, scopes)

    @property
    def swagger_ui_init_oauth(self) -> dict[str, Any] | None:
        """``FastAPI(swagger_ui_init_oauth=...)`` for the PKCE login in ``/docs``."""
        return swagger_ui_init_oauth(self.config)

    def install(self, app: FastAPI) -> None:
        """Wire this instance into ``app``: open and close it with the app's lifespan, add
        the 401/403/503 responses to protected operations in OpenAPI, and configure Swagger
        UI's login when ``swagger_client_id`` is set."""
        inner_lifespan = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
            async with self.lifespan(asgi_app), inner_lifespan(asgi_app) as state:
                yield state

        app.router.lifespan_context = lifespan
        if self.swagger_ui_init_oauth is not None:
            app.swagger_ui_init_oauth = self.swagger_ui_init_oauth
        build_openapi = app.openapi

        def openapi() -> dict[str, Any]:
            if app.openapi_schema is None:
                app.openapi_schema = add_error_responses(
                    build_openapi(), self.scheme_name, app.routes
                )
            return app.openapi_schema

        app.openapi = openapi  # type: ignore[method-assign]

    # Lifecycle ----------------------------------------------------------------------------
    async def aclose(self) -> None:
        await self._verifier.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> ZitadelIntrospection:
        if self.config.discover_on_startup:
            await self.discover()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    @asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        """An ASGI lifespan: ``FastAPI(lifespan=zitadel.lifespan)``, or call it from yours."""
        async with self:
            yield


def _shared_cache(
    config: ZitadelConfig, auth: ClientAuthentication, clock: Callable[[], float]
) -> IntrospectionCache | None:
    if config.redis_url is None:
        return None
    from ._redis_cache import RedisCache  # the optional 'redis' extra

    return RedisCache(
        config.redis_url.get_secret_value(),
        namespace=cache_namespace(config),
        secret=auth.secret_digest,
        project_id=config.project_id,
        clock=clock,
    )


def _build_config(config: ZitadelConfig | None, explicit: Mapping[str, Any]) -> ZitadelConfig:
    values = {} if config is None else config.model_dump(exclude_unset=True)
    values.update(explicit)
    try:
        return ZitadelConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc, env=False)) from None


def _describe(exc: ValidationError, *, env: bool) -> str:
    """Name each bad setting (as the environment variable, when read from there)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        name = f"ZITADEL_{field.upper()}" if env and field else field
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if name else message)
    return "invalid fastapi-zitadel configuration: " + "; ".join(problems)


class _OptionalPrincipal(SecurityBase):
    """``zitadel.optional``: the same scheme, but anonymous requests get ``None``."""

    def __init__(self, zitadel: ZitadelIntrospection) -> None:
        self._zitadel = zitadel
        self.model = zitadel.model
        self.scheme_name = zitadel.scheme_name

    async def __call__(
        self, conn: HTTPConnection, security_scopes: SecurityScopes
    ) -> Principal | None:
        principal = await self._zitadel.authenticate_optional(conn)
        if principal is not None:
            self._zitadel.check_scopes(conn, principal, security_scopes.scopes)
        return principal


def _client_authentication(
    config: ZitadelConfig,
    key_file: KeyFileSource | None,
    clock: Callable[[], float],
    monotonic: Callable[[], float],
) -> ClientAuthentication:
    sources = [
        name
        for name, value in (
            ("key_file", key_file if key_file is not None else config.key_file),
            ("key", config.key),
        )
        if value is not None
    ]
    has_secret = config.client_id is not None or config.client_secret is not None
    if len(sources) > 1:
        raise ConfigurationError("set only one of key_file and key (ZITADEL_KEY_FILE, ZITADEL_KEY)")
    if sources and has_secret:
        raise ConfigurationError(
            f"set either {sources[0]} or client_id with client_secret, not both"
        )
    if not sources and not has_secret:
        raise ConfigurationError(
            "no client credentials: set key_file (ZITADEL_KEY_FILE) to the API application's "
            "JSON key, or client_id and client_secret (ZITADEL_CLIENT_ID, ZITADEL_CLIENT_SECRET)"
        )
    if has_secret:
        if not config.client_id or config.client_secret is None:
            raise ConfigurationError("client_id and client_secret must be set together")
        return ClientSecretBasic(config.client_id, config.client_secret.get_secret_value())
    if key_file is None:
        key_file = config.key_file if config.key_file is not None else _secret(config)
    return PrivateKeyJwt(
        load_key_file(key_file),
        audience=config.issuer,
        lifetime=config.assertion_lifetime,
        single_use=config.single_use_assertion,
        clock=clock,
        monotonic=monotonic,
    )


def _secret(config: ZitadelConfig) -> str:
    assert config.key is not None
    return config.key.get_secret_value()
