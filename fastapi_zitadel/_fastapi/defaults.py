"""The default instance, and ``require_*`` at module level bound to it at request time.

So routes can be declared before the app is configured: ``Depends(require_role("admin"))``
in a router module, ``set_default_zitadel(...)`` (or ``ZITADEL_*`` variables) in the app.
"""

from typing import Any

from fastapi.openapi.models import SecurityBase as SecuritySchemeModel
from fastapi.security import SecurityScopes
from starlette.requests import HTTPConnection

from fastapi_zitadel._principal import Principal

from . import requirements
from .openapi import RequiredScopes, ScopedSecurity
from .requirements import PrincipalDependency
from .security import ZitadelIntrospection

__all__ = [
    "DefaultZitadel",
    "default_zitadel",
    "get_default_zitadel",
    "require_any_role",
    "require_any_scope",
    "require_role",
    "require_scope",
    "set_default_zitadel",
]


class DefaultZitadel(ScopedSecurity):
    """A dependency standing for the default instance, which may not exist yet when routes
    are declared: ``Depends(default_zitadel)`` is ``Depends(get_default_zitadel())`` decided
    at request time. The module-level ``require_*`` build on it.

    It holds the default instance (``set``, ``get``) and the scopes the module-level
    ``require_*`` declared, which it hands to each instance that becomes the default.
    """

    def __init__(self) -> None:
        self._current: ZitadelIntrospection | None = None
        self.required_scopes = RequiredScopes(also=self._hand_on)

    def set(self, zitadel: ZitadelIntrospection | None) -> None:
        """Make ``zitadel`` the default (``None``: none, until the next ``get``)."""
        self._current = zitadel
        if zitadel is not None:
            zitadel.required_scopes.add(self.required_scopes)

    def get(self) -> ZitadelIntrospection:
        """The default instance; configured from ``ZITADEL_*`` variables on first use."""
        if self._current is None:
            self.set(ZitadelIntrospection.from_env())
        assert self._current is not None
        return self._current

    @property
    def current(self) -> ZitadelIntrospection | None:
        """The default instance if one was set or made already; never creates one."""
        return self._current

    @property
    def model(self) -> SecuritySchemeModel:  # type: ignore[override]
        return self.get().model

    @property
    def scheme_name(self) -> str:  # type: ignore[override]
        return self.get().scheme_name

    @property
    def realm(self) -> str:
        return self.get().realm

    def _hand_on(self, scopes: tuple[str, ...]) -> None:
        if self._current is not None:
            self._current.required_scopes.add(scopes)

    async def authenticate(self, conn: HTTPConnection) -> Principal:
        return await self.get().authenticate(conn)

    async def __call__(self, conn: HTTPConnection, security_scopes: SecurityScopes) -> Any:
        return await self.get()(conn, security_scopes)


default_zitadel = DefaultZitadel()


def set_default_zitadel(zitadel: ZitadelIntrospection | None) -> None:
    """Bind the module-level ``require_*`` functions to ``zitadel`` (``None`` to reset)."""
    default_zitadel.set(zitadel)


def get_default_zitadel() -> ZitadelIntrospection:
    """The default instance; configured from ``ZITADEL_*`` variables on first use."""
    return default_zitadel.get()


def require_scope(*scopes: str) -> PrincipalDependency:
    """Dependency on the default instance: a ``Principal`` holding **all** of ``scopes``."""
    return requirements.all_scopes(default_zitadel, scopes)


def require_any_scope(*scopes: str) -> PrincipalDependency:
    """Dependency on the default instance: a ``Principal`` holding **one** of ``scopes``."""
    return requirements.any_scope(default_zitadel, scopes)


def require_role(*roles: str, org_id: str | None = None) -> PrincipalDependency:
    """Dependency on the default instance: a ``Principal`` holding **all** of ``roles``."""
    return requirements.all_roles(default_zitadel, roles, org_id)


def require_any_role(*roles: str, org_id: str | None = None) -> PrincipalDependency:
    """Dependency on the default instance: a ``Principal`` holding **one** of ``roles``."""
    return requirements.any_role(default_zitadel, roles, org_id)
