"""Replacing authentication with a fixed ``Principal`` in a user's own tests.

The override keeps the scope and role checks: a test that gives its principal too few
scopes gets the same 403 production would, so authorization is tested, not bypassed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from fastapi import FastAPI
from fastapi.security import SecurityScopes
from starlette.requests import HTTPConnection

from fastapi_zitadel import (
    InsufficientScopeError,
    MissingTokenError,
    Principal,
    ZitadelIntrospection,
)
from fastapi_zitadel.defaults import default_zitadel


def fixed_principal(
    zitadel: ZitadelIntrospection, principal: Principal
) -> Callable[[HTTPConnection, SecurityScopes], Awaitable[Principal]]:
    """A stand-in for ``zitadel`` in ``app.dependency_overrides`` that always authenticates
    as ``principal`` and still enforces the scopes of ``Security(zitadel, scopes=...)``."""

    async def authenticated_as_fixed_principal(
        conn: HTTPConnection, security_scopes: SecurityScopes
    ) -> Principal:
        if not principal.has_all_scopes(security_scopes.scopes):
            error = InsufficientScopeError.for_scopes(security_scopes.scopes)
            raise await zitadel.refusal.exception(error, conn)
        return principal

    return authenticated_as_fixed_principal


@contextmanager
def override_principal(
    app: FastAPI, zitadel: ZitadelIntrospection, principal: Principal | None
) -> Iterator[None]:
    """Within the block, every dependency of ``zitadel`` sees ``principal``: ``zitadel``
    itself, ``zitadel.optional``, ``zitadel.introspected``, its ``require_*``, and the
    module-level ``require_*`` when ``zitadel`` is the default instance. ``None`` makes
    requests anonymous (``zitadel.optional`` gives ``None``, the others 401)."""
    saved = dict(app.dependency_overrides)

    async def optional_principal() -> Principal | None:
        return principal

    async def anonymous(conn: HTTPConnection) -> Principal:
        raise await zitadel.refusal.exception(MissingTokenError(), conn)

    overrides = app.dependency_overrides
    overrides[zitadel] = anonymous if principal is None else fixed_principal(zitadel, principal)
    overrides[zitadel.optional] = optional_principal
    overrides[zitadel.introspected] = overrides[zitadel]
    if default_zitadel.current is zitadel:  # the module-level require_* functions too
        overrides[default_zitadel] = overrides[zitadel]
    try:
        yield
    finally:
        app.dependency_overrides.clear()
        app.dependency_overrides.update(saved)
