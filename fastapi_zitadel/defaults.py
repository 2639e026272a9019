"""The default instance, and ``require_*`` bound to it at request time: for routes declared before
the app is configured (``Depends(require_role("admin"))`` in a router module,
``set_default_zitadel(zitadel)`` when the app is built, or ``ZITADEL_*`` variables). Nothing can be
checked when such a route is declared (the default may be set later). When the app starts through
``install()``, routes bound to the default instance resolve it, so a missing one fails the start;
without ``install()``, the first request answers 500 and one ERROR line a minute names the fix,
never a traceback per request."""

import logging

from fastapi import FastAPI
from fastapi.openapi.models import SecurityBase as SecuritySchemeModel
from fastapi.security import SecurityScopes
from starlette.requests import HTTPConnection

from ._exceptions import ConfigurationError, KeyFileError
from ._fastapi.openapi import RequiredScopes
from ._fastapi.refusal import Refusal
from ._fastapi.requirements import GuardBase
from ._fastapi.security import ZitadelIntrospection
from ._log import RateLimitedLog
from ._principal import Principal

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


class DefaultZitadel(GuardBase):
    """A dependency standing for the default instance, which may not exist yet when routes are
    declared: ``Depends(default_zitadel)`` is ``Depends(get_default_zitadel())`` decided at request
    time. The module-level ``require_*`` build on it. It holds the default instance (``set``,
    ``get``) and the scopes the module-level ``require_*`` declared, which it hands to each instance
    that becomes the default."""

    def __init__(self) -> None:
        self._current: ZitadelIntrospection | None = None
        self.required_scopes = RequiredScopes()
        self._unconfigured_log = RateLimitedLog(logging.ERROR)

    def set(self, zitadel: ZitadelIntrospection | None) -> None:
        """Make ``zitadel`` the default, which the module-level ``require_*`` use (``None``:
        none, until the next ``get``)."""
        self._current = zitadel
        self.required_scopes.hand_on(None if zitadel is None else zitadel.required_scopes)

    def get(self) -> ZitadelIntrospection:
        """The default instance; configured from ``ZITADEL_*`` variables on first use."""
        if self._current is None:
            try:
                self.set(ZitadelIntrospection.from_env())
            except KeyFileError:
                raise  # names the key file and the variable already
            except ConfigurationError as exc:
                raise ConfigurationError(
                    "no default instance for the module-level require_* (and default_zitadel): "
                    "call set_default_zitadel(zitadel) when the app is built, or set the "
                    f"ZITADEL_* variables to configure one ({exc})"
                ) from None
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
    def refusal(self) -> Refusal:  # type: ignore[override]
        return self.get().refusal

    def check_at_startup(self, app: FastAPI) -> None:
        """At start-up (``install()``): the routes bound to the default instance get it now,
        so that a missing one fails the start, naming the fix, instead of every request."""
        self.get()

    async def __call__(self, conn: HTTPConnection, security_scopes: SecurityScopes) -> Principal:
        """The default instance's answer; without one, fail closed: 500, anonymous requests
        too, and one ERROR line a minute."""
        try:
            zitadel = self.get()
        except ConfigurationError as exc:
            self._unconfigured_log("%s", exc.description)
            raise exc.to_http(conn, "api") from None
        return await zitadel(conn, security_scopes)


default_zitadel = DefaultZitadel()


# The module-level functions are the default instance's guard's own methods.
set_default_zitadel = default_zitadel.set
get_default_zitadel = default_zitadel.get
require_scope = default_zitadel.require_scope
require_any_scope = default_zitadel.require_any_scope
require_role = default_zitadel.require_role
require_any_role = default_zitadel.require_any_role
