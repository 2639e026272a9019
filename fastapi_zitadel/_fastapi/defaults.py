"""The default instance, and ``require_*`` at module level bound to it at request time.

So routes can be declared before the app is configured: ``Depends(require_role("admin"))``
in a router module, ``set_default_zitadel(...)`` (or ``ZITADEL_*`` variables) in the app.
"""

from typing import Any

from fastapi.openapi.models import SecurityBase as SecuritySchemeModel
from fastapi.security import SecurityScopes
from starlette.requests import HTTPConnection

from . import openapi, requirements
from .openapi import ScopedSecurity
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

_default: ZitadelIntrospection | None = None


def set_default_zitadel(zitadel: ZitadelIntrospection | None) -> None:
    """Bind the module-level ``require_*`` functions to ``zitadel`` (``None`` to reset)."""
    global _default
    _default = zitadel


def get_default_zitadel() -> ZitadelIntrospection:
    """The default instance; configured from ``ZITADEL_*`` variables on first use."""
    global _default
    if _default is None:
        _default = ZitadelIntrospection.from_env()
    return _default


class DefaultZitadel(ScopedSecurity):
    """A dependency standing for the default instance, which may not exist yet when routes
    are declared: ``Depends(default_zitadel)`` is ``Depends(get_default_zitadel())`` decided
    at request time. The module-level ``require_*`` build on it."""

    @property
    def model(self) -> SecuritySchemeModel:  # type: ignore[override]
        zitadel = get_default_zitadel()
        scheme = zitadel.model
        openapi.list_scopes(scheme, requirements.documented_scopes(self))
        return scheme

    @property
    def scheme_name(self) -> str:  # type: ignore[override]
        return get_default_zitadel().scheme_name

    @property
    def realm(self) -> str:
        return get_default_zitadel().realm

    @property
    def current(self) -> ZitadelIntrospection | None:
        """The default instance if one was set or made already; never creates one."""
        return _default

    async def __call__(self, conn: HTTPConnection, security_scopes: SecurityScopes) -> Any:
        return await get_default_zitadel()(conn, security_scopes)


default_zitadel = DefaultZitadel()


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
