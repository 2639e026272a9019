"""``ZitadelIntrospection``: the object a user creates once per app, and the FastAPI security
dependency that answers a request with a ``Principal`` or the right error. It only takes the
token from the request and hands it to the verification pipeline; what the pipeline is made of
is decided once, in ``_build``, from the validated configuration."""

import inspect
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from os import PathLike
from typing import Any, Literal, overload

import httpx
from fastapi import FastAPI
from fastapi.security import SecurityScopes
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.routing import Route
from starlette.types import ASGIApp

from fastapi_zitadel._build import build
from fastapi_zitadel._cache.base import IntrospectionCache
from fastapi_zitadel._config import (
    Validation,
    ZitadelConfig,
    ZitadelSettings,
    configuration_error,
    merged_config,
)
from fastapi_zitadel._credentials.client_auth import PrivateKeyJwt
from fastapi_zitadel._credentials.key_file import ZitadelKeyFile
from fastapi_zitadel._exceptions import (
    ConfigurationError,
    IdentityProviderUnavailable,
    InsufficientScopeError,
    MissingTokenError,
    ZitadelError,
)
from fastapi_zitadel._metrics import MetricsSnapshot
from fastapi_zitadel._principal import Principal
from fastapi_zitadel._resilience.circuit_breaker import CircuitState

from . import metadata, openapi
from .bearer import extract_bearer
from .openapi import ScopedSecurity
from .refusal import Refusal
from .requirements import GuardBase
from .user import PrincipalLoader, UserLoader, user_dependency

__all__ = [
    "ClientIdentity",
    "IntrospectedDependency",
    "OptionalDependency",
    "ZitadelIntrospection",
    "open_with",
]


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """How this API authenticates to ZITADEL: the method, client id and key id (no secret)."""

    method: str
    client_id: str
    key_id: str | None


class ZitadelIntrospection(GuardBase):
    """Verifies bearer tokens by asking ZITADEL's introspection endpoint (RFC 7662), by verifying
    JWT access tokens locally (``validation="local"``), or both (``validation="hybrid"``). Create
    one per app (per issuer) and reuse it: it holds the connection pool, the signed client
    assertion, the issuer's keys and the result cache. It is a FastAPI security dependency
    (``Depends(zitadel)``, ``Security(zitadel, scopes=[...])``), and usable without FastAPI through
    ``verify``. Every setting is a keyword (see the configuration reference); ``config=`` takes a
    ready ``ZitadelConfig`` whose values the keywords override."""

    def __init__(
        self,
        issuer: str | None = None,
        *,
        validation: Validation | None = None,
        hybrid_unconfirmed_limit: int | None = None,
        key_file: str | PathLike[str] | Mapping[str, Any] | ZitadelKeyFile | None = None,
        key: str | Mapping[str, Any] | ZitadelKeyFile | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        audience: str | Sequence[str] | None = None,
        allowed_client_ids: str | Sequence[str] | None = None,
        project_id: str | None = None,
        introspection_endpoint: str | None = None,
        cache_ttl: float | None = None,
        cache_max_size: int | None = None,
        negative_cache_ttl: float | None = None,
        negative_cache_max_size: int | None = None,
        stale_if_error: float | None = None,
        leeway: float | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        max_concurrent_introspections: int | None = None,
        circuit_breaker_threshold: int | None = None,
        circuit_breaker_cooldown: float | None = None,
        assertion_lifetime: float | None = None,
        assertion_audience: str | Sequence[str] | None = None,
        single_use_assertion: bool | None = None,
        max_token_length: int | None = None,
        redis_url: str | None = None,
        discover_on_startup: bool | None = None,
        allow_insecure_http: bool | None = None,
        realm: str | None = None,
        scheme_name: str | None = None,
        scheme_description: str | None = None,
        swagger_client_id: str | None = None,
        websocket_query_token: bool | None = None,
        resource: str | None = None,
        resource_name: str | None = None,
        resource_documentation: str | None = None,
        unknown_user_status: Literal[401, 403] | None = None,
        events_signing_key: str | None = None,
        events_path: str | None = None,
        events_max_age: float | None = None,
        events_max_body: int | None = None,
        config: ZitadelConfig | None = None,
        http_client: httpx.AsyncClient | None = None,
        cache: IntrospectionCache | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        principal_loader: PrincipalLoader | None = None,
        principal_class: type[Principal] = Principal,
    ) -> None:
        # Every parameter from ``config`` on is a component, the others are ZitadelConfig's
        # settings (a test keeps the two lists equal); only those given override ``config``.
        given = locals()
        explicit = {
            name: given[name]
            for name in ZitadelConfig.model_fields
            if name in given and given[name] is not None
        }
        self.config = merged_config(config, explicit)
        self._parts = build(
            self.config,
            http_client=http_client,
            cache=cache,
            clock=clock,
            monotonic=monotonic,
            principal_class=principal_class,
        )
        resource = self.config.resource
        self.resource_metadata_url = None if resource is None else metadata.metadata_url(resource)
        """Where this API's RFC 9728 metadata is served (``resource`` set), else ``None``."""
        self.resource_metadata_path = None if resource is None else metadata.metadata_path(resource)
        """The path ``install()`` serves the RFC 9728 metadata at, else ``None``."""
        self.events_path = None if self._parts.receiver is None else self.config.events_path
        """The path ``install()`` serves the event receiver at, else ``None``."""
        self.refusal = Refusal(self.config.realm, self.resource_metadata_url)
        """How this API answers an error: bound to ``realm`` and the RFC 9728 metadata URL."""
        self._loader = None if principal_loader is None else UserLoader(principal_loader)
        self._user = None
        if self._loader is not None:
            unknown = self.config.unknown_user_status
            self._user = user_dependency(self, self._loader, unknown_status=unknown)
        self._pipeline = self._parts.pipeline
        self.model = openapi.security_scheme(self.config)
        """The OpenAPI security scheme (FastAPI reads it when it builds the schema)."""
        self.required_scopes = openapi.RequiredScopes(self.model)
        """The scopes routes require of this instance (``require_scope``...)."""
        self.scheme_name = self.config.scheme_name
        self._memo_key = f"fastapi_zitadel.principal.{id(self)}"
        self._query_tokens = self.config.websocket_query_token
        self._max_token_length = self.config.max_token_length
        self._confirms = self.config.validation == "hybrid"  # what ``introspected`` waits for
        self.optional = OptionalDependency(self, partial(self._answer, required=False))
        """A dependency giving ``None`` for anonymous requests, for routes that serve both.
        A token, when present, must be valid (else 401) and hold the scopes of
        ``Security(zitadel.optional, scopes=[...])`` (else 403)."""
        answer = partial(self._answer, required=True, confirmed=True)
        self.introspected = IntrospectedDependency(self, answer)
        """A dependency like this one that, with ``validation="hybrid"``, answers only once
        ZITADEL's introspection has confirmed the token (joining the check in flight, or
        making one): for routes where a revoked token must never pass, not even once. With
        the other modes it is the same as ``Depends(zitadel)``."""
        self._installed: weakref.WeakSet[FastAPI] = weakref.WeakSet()

    @classmethod
    def from_env(cls, **overrides: Any) -> "ZitadelIntrospection":
        """Configure from ``ZITADEL_*`` environment variables; keyword arguments win. Keywords
        are the constructor's: settings and the components (``http_client``, ``cache``,
        ``clock``, ``monotonic``); anything else is a ``TypeError``."""
        fields = ZitadelConfig.model_fields
        # the components: the constructor's keywords that are not settings
        components = set(inspect.signature(cls).parameters) - set(fields) - {"config"}
        unknown = set(overrides) - set(fields) - components
        if unknown:
            raise TypeError(f"from_env() got unexpected keyword arguments: {sorted(unknown)}")
        settings = {k: v for k, v in overrides.items() if k in fields}
        try:
            config = ZitadelSettings(**settings)
        except ValidationError as exc:
            raise configuration_error(exc, env=True, keywords=settings.keys()) from None
        return cls(config=config, **{k: v for k, v in overrides.items() if k in components})

    # Properties --------------------------------------------------------------------------
    @property
    def issuer(self) -> str:
        return self.config.issuer

    @property
    def realm(self) -> str:
        """The ``realm`` of this API's RFC 6750 challenges."""
        return self.config.realm

    @property
    def validation(self) -> Validation:
        """``"introspection"``, ``"local"`` or ``"hybrid"``."""
        return self.config.validation

    @property
    def client(self) -> ClientIdentity | None:
        """How this API authenticates to ZITADEL (no secret in it); ``None`` with
        ``validation="local"`` and no credential configured."""
        auth = self._parts.auth
        if auth is None:
            return None
        method = "private_key_jwt" if isinstance(auth, PrivateKeyJwt) else "client_secret_basic"
        return ClientIdentity(method, auth.client_id, auth.key_id)

    @property
    def introspection_calls(self) -> int:
        """How many introspection requests were sent (retries included)."""
        client = self._parts.client
        return 0 if client is None else client.calls

    @property
    def circuit_state(self) -> CircuitState:
        """``closed``, ``open`` or ``half-open``."""
        return self._parts.breaker.state

    def metrics(self) -> MetricsSnapshot:
        """Counters since start: cache hits, misses, IdP calls by outcome and latency..."""
        return self._parts.snapshot()

    # Verification ------------------------------------------------------------------------
    async def verify(self, token: str) -> Principal:
        """The ``Principal`` for a live token. Raises ``InvalidTokenError`` when the token is not
        valid, an ``IdentityProviderError`` when that cannot be decided now (never a 401 then)."""
        return await self._pipeline.verify(token)

    async def invalidate(self, token: str) -> None:
        """Forget what is cached for ``token``, e.g. right after revoking it (its loaded user
        goes with its cached principal)."""
        await self._pipeline.invalidate(token)

    async def clear(self) -> None:
        """Forget every cached result (and every loaded user)."""
        if self._loader is not None:
            self._loader.clear()
        await self._pipeline.clear()

    async def discover(self) -> str:
        """Fetch the discovery document now (rather than on the first request); returns the
        introspection endpoint (with ``validation="local"``, the ``jwks_uri``). With
        ``discover_on_startup``, the lifespan calls it, and fetches the issuer's keys too."""
        discovery = self._parts.discovery
        if self.config.validation != "local":
            return await discovery.introspection_endpoint()
        jwks_uri = (await discovery.fetch()).jwks_uri
        if jwks_uri is None:
            raise IdentityProviderUnavailable("the discovery document has no jwks_uri")
        return jwks_uri

    async def signing_keys(self) -> list[dict[str, str]]:
        """The issuer's keys this instance verifies JWTs with, fetched now: one entry per key
        and algorithm, ``{"kid": ..., "algorithm": ..., "key": "RSA 2048 bits"}``. Raises
        ``ConfigurationError`` with ``validation="introspection"`` (no keys are used), an
        ``IdentityProviderError`` when the JWKS cannot be fetched or used."""
        jwks = self._parts.jwks
        if jwks is None:
            raise ConfigurationError("validation='introspection' verifies no JWT: no keys")
        keys = await jwks.refresh()
        return [
            {"kid": key.kid, "algorithm": key.algorithm, "key": key.description}
            for found in keys.values()
            for key in found
        ]

    def client_assertion(self) -> str:
        """A freshly signed client assertion (for ``curl``); needs a key, not a secret."""
        auth = self._parts.auth
        if not isinstance(auth, PrivateKeyJwt):
            raise ConfigurationError(
                "assertions need a key file (key_file / ZITADEL_KEY_FILE), not a client secret"
            )
        return auth.credentials(fresh=True).form["client_assertion"]

    # FastAPI -----------------------------------------------------------------------------
    async def __call__(self, conn: HTTPConnection, security_scopes: SecurityScopes) -> Principal:
        """The dependency: the verified ``Principal``, holding every scope in ``Security``."""
        principal = await self._answer(conn, security_scopes.scopes, required=True)
        assert principal is not None  # required
        return principal

    @overload
    async def principal_or_http_error(self, conn: HTTPConnection) -> Principal: ...

    @overload
    async def principal_or_http_error(
        self, conn: HTTPConnection, *, optional: bool
    ) -> Principal | None: ...

    async def principal_or_http_error(
        self, conn: HTTPConnection, *, optional: bool = False
    ) -> Principal | None:
        """The request's ``Principal``, or the HTTP error FastAPI sends (``HTTPException``;
        on a WebSocket, the ``WebSocketException`` that closes it), as the dependency does.
        ``optional``: ``None`` when the request carries no token (an invalid one still fails).
        Named for what it raises, beside ``principal_or_zitadel_error``: the two are one
        lookup, and differ only in the form of the error."""
        return await self._answer(conn, (), required=not optional)

    async def principal_or_zitadel_error(self, conn: HTTPConnection) -> Principal | None:
        """The request's ``Principal`` for ASGI code: ``None`` without a token, the
        ``ZitadelError`` itself (not its HTTP form) for a bad one or an outage, for the caller
        to answer (``zitadel.refusal.respond``) or handle. Memoised per HTTP request like the
        dependency, so a dependency behind ``ZitadelMiddleware`` reuses the middleware's
        verdict: one lookup per request."""
        return await self._lookup(conn)

    async def _answer(
        self,
        conn: HTTPConnection,
        scopes: Sequence[str],
        *,
        required: bool,
        confirmed: bool = False,
    ) -> Principal | None:
        """What every dependency of this instance answers: the principal holding ``scopes``
        (``None`` for an anonymous request unless ``required``), or the refusal.
        ``confirmed`` (``introspected``): in hybrid mode, wait for ZITADEL's confirmation."""
        try:
            principal = await self._lookup(conn, confirmed=confirmed and self._confirms)
            if principal is None:
                if required:
                    raise MissingTokenError()
                return None
            if scopes and not principal.has_all_scopes(scopes):
                raise InsufficientScopeError.for_scopes(scopes)
        except ZitadelError as error:
            raise await self.refusal.exception(error, conn) from None
        return principal

    async def _lookup(self, conn: HTTPConnection, *, confirmed: bool = False) -> Principal | None:
        """The one path from a connection to its principal: ``None`` without a token, a
        ``ZitadelError`` for a bad one or an outage. ``confirmed``: a JWT served before
        ZITADEL's confirmation (hybrid mode) waits for it. The hot path, run on every request,
        often several times (router and route scopes): the principal is kept in the request's
        scope, and a cache hit completes without awaiting."""
        scope = conn.scope
        # Kept for one HTTP request only: on a WebSocket, the scope lives as long as the socket,
        # and a later check must see a revocation or an expiry (a cache hit is cheap).
        http = scope["type"] == "http"
        principal: Principal | None = scope.get(self._memo_key) if http else None
        if principal is not None and (not confirmed or principal.verified_by != "jwt"):
            return principal
        token = extract_bearer(
            conn, max_length=self._max_token_length, allow_query=self._query_tokens and not http
        )
        if token is None:
            return None
        pipeline = self._pipeline
        digest = pipeline.key(token)
        if principal is None:
            principal = pipeline.cached(digest) or await pipeline.resolve(token, digest)
        if confirmed and principal.verified_by == "jwt":
            principal = await pipeline.confirmed(token, digest)
        if http:
            scope[self._memo_key] = principal
        return principal

    @property
    def events_app(self) -> ASGIApp:
        """The receiver of ZITADEL's events (Actions v2), as a plain ASGI app: ``install()``
        routes it at ``events_path``; mount it yourself elsewhere (another Starlette app, a
        port of its own). Needs ``events_signing_key``."""
        receiver = self._parts.receiver
        if receiver is None:
            raise ConfigurationError(
                "the event receiver needs events_signing_key (ZITADEL_EVENTS_SIGNING_KEY): the "
                "signing key of the Actions v2 target that calls it"
            )
        return receiver

    def resource_metadata(self, app: FastAPI | None = None) -> dict[str, Any]:
        """The RFC 9728 document; ``scopes_supported`` lists the scopes ``app``'s routes
        require (from its OpenAPI schema) and those of ``require_scope``."""
        if self.config.resource is None:
            raise ConfigurationError("RFC 9728 metadata needs resource (ZITADEL_RESOURCE)")
        scopes = set(self.required_scopes)
        if app is not None:
            scopes |= metadata.schema_scopes(app.openapi(), self.scheme_name)
        return metadata.document(self.config, scopes)

    @property
    def user(self) -> Callable[..., Any]:
        """A dependency giving ``principal_loader``'s user for the caller (401 without a
        valid token; 403, or 401 with ``unknown_user_status=401``, when it returns ``None``).
        Keep the type with an alias: ``CurrentUser = Annotated[User, Depends(zitadel.user)]``.
        Built with the instance: reading it changes nothing, from any thread."""
        if self._user is None:
            raise ConfigurationError(
                "zitadel.user needs principal_loader= (an async function from the Principal "
                "to your user)"
            )
        return self._user

    @property
    def swagger_ui_init_oauth(self) -> dict[str, Any] | None:
        """``FastAPI(swagger_ui_init_oauth=...)`` for the PKCE login in ``/docs``."""
        return openapi.swagger_ui_init_oauth(self.config)

    def install(self, app: FastAPI) -> None:
        """Wire this instance into ``app``: open and close it with the app's lifespan, add
        the 401/403/503 responses to protected operations in OpenAPI, and configure Swagger
        UI's login when ``swagger_client_id`` is set. Installing twice changes nothing."""
        if app in self._installed:
            return
        self._installed.add(app)
        open_with(app, self, before=lambda: openapi.check_at_startup(app))
        if self.resource_metadata_path is not None:
            metadata.serve(app, self.resource_metadata_path, lambda: self.resource_metadata(app))
        if self.events_path is not None:  # a plain route: no bearer check, no schema
            app.router.routes.append(
                Route(self.events_path, self.events_app, methods=["POST"], include_in_schema=False)
            )
        if self.swagger_ui_init_oauth is not None:
            app.swagger_ui_init_oauth = self.swagger_ui_init_oauth
        openapi.document_errors(app, self.scheme_name)

    # Lifecycle ---------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Cancel background work (hybrid introspections, a JWKS refresh), close the pool."""
        await self._parts.aclose()

    async def __aenter__(self) -> "ZitadelIntrospection":
        parts = self._parts
        if parts.feed is not None:
            # markers stored while this replica was away are in before it serves
            await parts.feed.start(parts.revocations, timeout=self.config.timeout)
        if self.config.discover_on_startup:
            await self.discover()
            if parts.jwks is not None:  # local, hybrid: the keys too
                await self.signing_keys()
        if self.config.swagger_client_id is not None:
            await openapi.use_discovered_endpoints(self.model, self._parts.discovery)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        """An ASGI lifespan: ``FastAPI(lifespan=zitadel.lifespan)``, or call it from yours."""
        async with self:
            yield


def open_with(
    app: Starlette, zitadel: ZitadelIntrospection, *, before: Callable[[], None] | None = None
) -> None:
    """Open and close ``zitadel`` around ``app``'s own lifespan; ``before``: run first."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
        if before is not None:
            before()
        async with zitadel.lifespan(asgi_app), inner(asgi_app) as state:
            yield state

    app.router.lifespan_context = lifespan


class _OnInstanceScheme(ScopedSecurity):
    """A dependency documented under its instance's scheme, answering through its
    ``_answer`` (the one lookup and the one refusal), bound to what this dependency needs."""

    def __init__(
        self,
        zitadel: ZitadelIntrospection,
        answer: Callable[[HTTPConnection, Sequence[str]], Awaitable[Principal | None]],
    ) -> None:
        self._answer = answer
        self.model = zitadel.model
        self.scheme_name = zitadel.scheme_name


class OptionalDependency(_OnInstanceScheme):
    """``zitadel.optional``: the same scheme, but anonymous requests get ``None``."""

    allows_anonymous = True

    async def __call__(
        self, conn: HTTPConnection, security_scopes: SecurityScopes
    ) -> Principal | None:
        return await self._answer(conn, security_scopes.scopes)


class IntrospectedDependency(_OnInstanceScheme):
    """``zitadel.introspected``: the same scheme, answering only once ZITADEL's introspection
    confirmed the token (``validation="hybrid"``); with the other modes, ``zitadel`` itself."""

    async def __call__(self, conn: HTTPConnection, security_scopes: SecurityScopes) -> Principal:
        principal = await self._answer(conn, security_scopes.scopes)
        assert principal is not None  # required
        return principal
