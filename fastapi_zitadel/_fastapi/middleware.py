"""``ZitadelMiddleware``: the whole app behind ZITADEL, as pure ASGI (HTTP and WebSocket).

It runs the same verification as the dependency (``zitadel.principal_or_zitadel_error``: the same
bearer rules, caches, errors and headers) before the app sees the request, and sets
``scope["user"]`` / ``scope["auth"]`` as Starlette's ``AuthenticationMiddleware`` does, so
``request.user``, ``request.auth.scopes`` and ``starlette.authentication.requires`` work. The
verdict is memoised in the request's scope: a ``Depends(zitadel)`` behind it does no second lookup.
The hot path (a protected request with a cached token) is one path check, the bearer parse, one
digest and one dict lookup, and two small objects; no Starlette ``Request``, no response wrapper, no
extra task."""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.authentication import AuthCredentials, BaseUser, UnauthenticatedUser
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from fastapi_zitadel._exceptions import ConfigurationError, MissingTokenError, ZitadelError
from fastapi_zitadel._principal import Principal

from .security import ZitadelIntrospection

__all__ = ["ZitadelCredentials", "ZitadelMiddleware", "ZitadelUser"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
_DOT_SEGMENT = re.compile(r"(^|/)\.\.?(/|$)")


class ZitadelUser(BaseUser):
    """``request.user`` for a verified caller; ``principal`` is the verified ``Principal``."""

    __slots__ = ("principal",)

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        p = self.principal
        return p.preferred_username or p.username or p.name or p.subject or p.client_id or ""

    @property
    def identity(self) -> str:
        return self.principal.subject or ""

    def __repr__(self) -> str:
        return f"ZitadelUser(subject={self.principal.subject!r})"


class ZitadelCredentials(AuthCredentials):
    """``request.auth``: ``scopes`` holds the token's scopes and, as ``<role_prefix><role>``
    (``role:admin``), its project roles; built on first read. A scope that itself starts with
    ``role_prefix`` is left out: only a project role may read as one. An authorization server
    that grants any scope a client asks for (ZITADEL does not; others may) would otherwise hand
    out ``role:admin`` to whoever requests it."""

    def __init__(self, principal: Principal, role_prefix: str = "role:") -> None:
        # AuthCredentials.__init__ is not called: ``scopes`` is computed on first read.
        self.principal = principal
        self._role_prefix = role_prefix
        self._scopes: list[str] | None = None

    @property
    def scopes(self) -> list[str]:
        if self._scopes is None:
            prefix = self._role_prefix
            scopes = sorted(self.principal.scopes)
            if prefix:
                scopes = [scope for scope in scopes if not scope.startswith(prefix)]
            self._scopes = scopes + [prefix + role for role in sorted(self.principal.roles)]
        return self._scopes

    @scopes.setter
    def scopes(self, value: list[str]) -> None:
        self._scopes = list(value)


class _PublicPaths:
    """Which requests pass without a token: ``"/health"`` (exact), ``"/static/*"`` (``*``
    matches any run of characters, ``/`` included), ``re.compile(...)`` (full match), each
    optionally preceded by methods: ``"OPTIONS *"``, ``"GET,HEAD /docs*"``."""

    def __init__(self, entries: Iterable[str | re.Pattern[str]]) -> None:
        self._exact: dict[str, frozenset[str] | None] = {}
        self._patterns: list[tuple[re.Pattern[str], frozenset[str] | None]] = []
        for entry in entries:
            if not isinstance(entry, str):  # a compiled pattern
                self._patterns.append((entry, None))
                continue
            head, _, rest = entry.partition(" ")
            pattern = rest.strip() if rest else head
            methods = frozenset(m.strip().upper() for m in head.split(",")) if rest else None
            if methods is not None and not methods <= _METHODS:
                raise ConfigurationError(
                    f"public_paths: unknown HTTP method {sorted(methods - _METHODS)[0]!r} in "
                    f"{entry!r} (write 'METHOD /path')"
                )
            if not pattern.startswith(("/", "*")):
                raise ConfigurationError(
                    f"public_paths: {entry!r} must be a path starting with '/' (or '*')"
                )
            if "*" in pattern:
                compiled = re.compile(".*".join(re.escape(p) for p in pattern.split("*")))
                self._patterns.append((compiled, methods))
                continue
            previous = self._exact.get(pattern, frozenset())
            self._exact[pattern] = (
                None if methods is None or previous is None else previous | methods
            )

    def __bool__(self) -> bool:
        return bool(self._exact or self._patterns)

    def match(self, path: str, method: str | None) -> bool:
        if path in self._exact:
            methods = self._exact[path]
            if methods is None or method in methods:
                return True
        for pattern, methods in self._patterns:
            if (methods is None or method in methods) and pattern.fullmatch(path):
                # Never let "/public/../admin" pass as public (servers do not normalise it).
                return _DOT_SEGMENT.search(path) is None
        return False


class ZitadelMiddleware:
    """Every HTTP request and WebSocket needs a valid ZITADEL token, except ``public_paths``:
    ``app.add_middleware(ZitadelMiddleware, zitadel=zitadel, public_paths=["/health",
    "OPTIONS *"])``. With ``require=False``, requests without a token pass as
    ``UnauthenticatedUser`` (an invalid token is still a 401). Errors are the dependency's: 401/400
    with the RFC 6750 challenge (and ``resource_metadata`` with ``resource`` set), 503 with
    ``Retry-After`` during an IdP outage; a WebSocket is closed (1008, or 1013 to retry). The RFC
    9728 metadata path is always public, and so is the event receiver's (``POST events_path``,
    with ``events_signing_key``)."""

    def __init__(
        self,
        app: ASGIApp,
        zitadel: ZitadelIntrospection,
        *,
        public_paths: Iterable[str | re.Pattern[str]] = (),
        require: bool = True,
        role_prefix: str = "role:",
    ) -> None:
        if not isinstance(zitadel, ZitadelIntrospection):
            raise ConfigurationError("ZitadelMiddleware needs zitadel=ZitadelIntrospection(...)")
        self.app = app
        self.zitadel = zitadel
        self.require = require
        self.role_prefix = role_prefix
        entries = list(public_paths)
        if isinstance(public_paths, str):
            raise ConfigurationError("public_paths takes a list of paths, not one string")
        if zitadel.resource_metadata_path is not None:
            entries.append("GET,HEAD,OPTIONS " + zitadel.resource_metadata_path)
        if zitadel.events_path is not None:  # ZITADEL signs its calls: it has no token
            entries.append("POST " + zitadel.events_path)
        self._public = _PublicPaths(entries) or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":  # lifespan
            await self.app(scope, receive, send)
            return
        public = self._public
        if public is not None and public.match(scope["path"], scope.get("method")):
            scope["auth"], scope["user"] = AuthCredentials(), UnauthenticatedUser()
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope) if kind == "http" else WebSocket(scope, receive, send)
        zitadel = self.zitadel
        try:
            principal = await zitadel.principal_or_zitadel_error(conn)
            if principal is None and self.require:
                raise MissingTokenError()
        except ZitadelError as error:
            await zitadel.refusal.respond(error, conn, send)
            return
        if principal is None:
            scope["auth"], scope["user"] = AuthCredentials(), UnauthenticatedUser()
        else:
            scope["auth"] = ZitadelCredentials(principal, self.role_prefix)
            scope["user"] = ZitadelUser(principal)
        await self.app(scope, receive, send)
