"""``require_scope``, ``require_any_scope``, ``require_role``: the dependencies routes use.

Each returns a small function that FastAPI resolves through ``Security(...)``, so the scopes
show up in the operation's OpenAPI security requirement, and so that authentication always
runs before the check (a forged token gets 401, never 403).

The module-level variants are bound to a default ``ZitadelIntrospection`` that is looked up
at request time, so routes can be declared before the app is configured.

No ``from __future__ import annotations`` here: FastAPI reads the dependency functions'
annotations at runtime, and as strings they would be resolved against module globals rather
than the closures' ``guard``.
"""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from fastapi import Security
from fastapi.openapi.models import SecurityBase as SecuritySchemeModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection

from ._exceptions import ConfigurationError, InsufficientScopeError, ZitadelError
from ._openapi import may_forbid
from ._principal import Principal

if TYPE_CHECKING:
    from ._introspection import ZitadelIntrospection

PrincipalDependency = Callable[..., Awaitable[Principal]]


class Guard(Protocol):
    """What the dependency factories need from a ``ZitadelIntrospection``."""

    @property
    def model(self) -> SecuritySchemeModel: ...

    @property
    def scheme_name(self) -> str: ...

    async def __call__(self, conn: HTTPConnection, security_scopes: SecurityScopes) -> Any: ...

    def reject(self, conn: HTTPConnection, error: ZitadelError) -> Exception: ...

    def document_scopes(self, scopes: tuple[str, ...]) -> None: ...


class _ScopeDocumentation(SecurityBase):
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


def all_scopes_dependency(guard: Guard, *scopes: str) -> PrincipalDependency:
    guard.document_scopes(scopes)

    async def principal_with_all_scopes(
        principal: Annotated[Principal, Security(guard, scopes=list(scopes))],
    ) -> Principal:
        return principal

    return principal_with_all_scopes


def any_scope_dependency(guard: Guard, *scopes: str) -> PrincipalDependency:
    if not scopes:
        raise ConfigurationError("require_any_scope needs at least one scope")
    guard.document_scopes(scopes)
    documentation = _ScopeDocumentation(guard)

    async def principal_with_any_scope(
        conn: HTTPConnection,
        principal: Annotated[Principal, Security(guard)],
        _: Annotated[None, Security(documentation, scopes=list(scopes))],
    ) -> Principal:
        if not principal.has_any_scope(scopes):
            error = InsufficientScopeError(
                f"requires one of the scopes: {' '.join(scopes)}", scopes
            )
            raise guard.reject(conn, error)
        return principal

    return principal_with_any_scope


def role_dependency(
    guard: Guard, *roles: str, org_id: str | None = None, require_all: bool = False
) -> PrincipalDependency:
    if not roles:
        raise ConfigurationError("require_role needs at least one role")
    where = f" in organization {org_id}" if org_id is not None else ""
    wanted = "all of" if require_all else "one of"

    async def principal_with_role(
        conn: HTTPConnection, principal: Annotated[Principal, Security(guard)]
    ) -> Principal:
        holds = principal.has_all_roles if require_all else principal.has_any_role
        if not holds(roles, org_id):
            error = InsufficientScopeError(f"requires {wanted} the roles {', '.join(roles)}{where}")
            raise guard.reject(conn, error)
        return principal

    return may_forbid(principal_with_role)  # OpenAPI: the check can answer 403


# The default instance ----------------------------------------------------------------------

_default: "ZitadelIntrospection | None" = None


def set_default_zitadel(zitadel: "ZitadelIntrospection | None") -> None:
    """Bind the module-level ``require_*`` functions to ``zitadel`` (``None`` to reset)."""
    global _default
    _default = zitadel


def get_default_zitadel() -> "ZitadelIntrospection":
    """The default instance; configured from ``ZITADEL_*`` variables on first use."""
    global _default
    if _default is None:
        from ._introspection import ZitadelIntrospection

        _default = ZitadelIntrospection.from_env()
    return _default


class _DefaultGuard(SecurityBase):
    """Stands in for the default instance, which may not exist yet when routes are declared."""

    def __init__(self) -> None:
        self._scopes: list[str] = []

    @property
    def model(self) -> SecuritySchemeModel:  # type: ignore[override]
        zitadel = get_default_zitadel()
        zitadel.document_scopes(tuple(self._scopes))
        return zitadel.model

    @property
    def scheme_name(self) -> str:  # type: ignore[override]
        return get_default_zitadel().scheme_name

    async def __call__(self, conn: HTTPConnection, security_scopes: SecurityScopes) -> Any:
        return await get_default_zitadel()(conn, security_scopes)

    def reject(self, conn: HTTPConnection, error: ZitadelError) -> Exception:
        return get_default_zitadel().reject(conn, error)

    def document_scopes(self, scopes: tuple[str, ...]) -> None:
        """Kept until the default instance exists (routes are often declared before it)."""
        self._scopes.extend(scopes)


default_guard = _DefaultGuard()


def require_scope(*scopes: str) -> PrincipalDependency:
    """Dependency on the default instance: a ``Principal`` holding all of ``scopes``."""
    return all_scopes_dependency(default_guard, *scopes)


def require_any_scope(*scopes: str) -> PrincipalDependency:
    """Dependency on the default instance: a ``Principal`` holding one of ``scopes``."""
    return any_scope_dependency(default_guard, *scopes)


def require_role(*roles: str, org_id: str | None = None) -> PrincipalDependency:
    """Dependency on the default instance: a ``Principal`` with one of ``roles``."""
    return role_dependency(default_guard, *roles, org_id=org_id)


def require_all_roles(*roles: str, org_id: str | None = None) -> PrincipalDependency:
    """Dependency on the default instance: a ``Principal`` with every one of ``roles``."""
    return role_dependency(default_guard, *roles, org_id=org_id, require_all=True)
