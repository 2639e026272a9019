"""``require_scope``, ``require_any_scope``, ``require_role``, ``require_any_role``.

The rule everywhere: the plain name means **all of** them, ``_any_`` means **at least one**.
Each factory returns a small function that FastAPI resolves through ``Security(...)``, so the
scopes show up in the operation's OpenAPI security requirement, and so that authentication
always runs before the check (a forged token gets 401, never 403). Calling one with nothing to
check is a mistake caught when the route is declared.

No ``from __future__ import annotations`` here: FastAPI reads the dependency functions'
annotations at runtime, and as strings they would be resolved against module globals rather
than the closures' ``guard``.
"""

import weakref
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

from fastapi import Security
from fastapi.openapi.models import SecurityBase as SecuritySchemeModel
from fastapi.security import SecurityScopes
from starlette.requests import HTTPConnection

from fastapi_zitadel._exceptions import ConfigurationError, InsufficientScopeError
from fastapi_zitadel._principal import Principal

from .openapi import ScopedSecurity, may_forbid
from .refusal import refusal

__all__ = [
    "Guard",
    "PrincipalDependency",
    "all_roles",
    "all_scopes",
    "any_role",
    "any_scope",
    "documented_scopes",
]

PrincipalDependency = Callable[..., Awaitable[Principal]]
"""What ``require_*`` return: a dependency giving the checked ``Principal``."""


class Guard(Protocol):
    """The security dependency the requirements build on (an instance, or the default)."""

    @property
    def model(self) -> SecuritySchemeModel: ...

    @property
    def scheme_name(self) -> str: ...

    @property
    def realm(self) -> str: ...

    async def __call__(self, conn: HTTPConnection, security_scopes: SecurityScopes) -> Any: ...


class _ScopeDocumentation(ScopedSecurity):
    """Lists scopes under the guard's scheme in OpenAPI; checks nothing, returns nothing.

    ``Security(guard, scopes=...)`` would demand *all* of them, which is wrong for any-of.
    """

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    @property
    def model(self) -> SecuritySchemeModel:  # type: ignore[override]
        return self._guard.model

    @property
    def scheme_name(self) -> str:  # type: ignore[override]
        return self._guard.scheme_name

    async def __call__(self) -> None:
        return None


# The scopes routes require of each guard, so its OAuth2 flow can list them for Swagger UI
# (the guard may not exist yet when a route is declared: the default instance).
_DOCUMENTED: "weakref.WeakKeyDictionary[Guard, set[str]]" = weakref.WeakKeyDictionary()


def documented_scopes(guard: Guard) -> frozenset[str]:
    """Every scope a route declared with ``require_scope``/``require_any_scope`` on ``guard``."""
    return frozenset(_DOCUMENTED.get(guard, ()))


def _document(guard: Guard, scopes: list[str]) -> None:
    _DOCUMENTED.setdefault(guard, set()).update(scopes)


def _needs(values: tuple[str, ...], function: str, what: str) -> list[str]:
    if not values:
        raise ConfigurationError(f"{function} needs at least one {what}")
    if not all(isinstance(value, str) and value for value in values):
        raise ConfigurationError(f"{function} takes {what}s as non-empty strings")
    return list(values)


def all_scopes(guard: Guard, scopes: tuple[str, ...]) -> PrincipalDependency:
    needed = _needs(scopes, "require_scope", "scope")
    _document(guard, needed)

    async def principal_with_all_scopes(
        principal: Annotated[Principal, Security(guard, scopes=needed)],
    ) -> Principal:
        return principal

    return principal_with_all_scopes


def any_scope(guard: Guard, scopes: tuple[str, ...]) -> PrincipalDependency:
    listed = _needs(scopes, "require_any_scope", "scope")
    _document(guard, listed)
    documentation = _ScopeDocumentation(guard)

    async def principal_with_any_scope(
        conn: HTTPConnection,
        principal: Annotated[Principal, Security(guard)],
        _: Annotated[None, Security(documentation, scopes=listed)],
    ) -> Principal:
        if not principal.has_any_scope(scopes):
            error = InsufficientScopeError.for_scopes(scopes, any_of=True)
            raise await refusal(error, conn, guard.realm)
        return principal

    return principal_with_any_scope


def _roles(
    guard: Guard, roles: tuple[str, ...], org_id: str | None, *, any_of: bool
) -> PrincipalDependency:
    _needs(roles, "require_any_role" if any_of else "require_role", "role")

    async def principal_with_roles(
        conn: HTTPConnection, principal: Annotated[Principal, Security(guard)]
    ) -> Principal:
        holds = principal.has_any_role if any_of else principal.has_all_roles
        if not holds(roles, org_id):
            error = InsufficientScopeError.for_roles(roles, org_id=org_id, any_of=any_of)
            raise await refusal(error, conn, guard.realm)
        return principal

    return may_forbid(principal_with_roles)  # OpenAPI: the check can answer 403


def all_roles(guard: Guard, roles: tuple[str, ...], org_id: str | None) -> PrincipalDependency:
    return _roles(guard, roles, org_id, any_of=False)


def any_role(guard: Guard, roles: tuple[str, ...], org_id: str | None) -> PrincipalDependency:
    return _roles(guard, roles, org_id, any_of=True)
