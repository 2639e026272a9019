"""``require_scope``, ``require_any_scope``, ``require_role``, ``require_any_role``: the plain
name means **all of** them, ``_any_`` **at least one**. Authentication always runs before the
check (a forged token gets 401, never 403); calling one with nothing to check is a mistake
caught when the route is declared.

Dependency levels: FastAPI spends about 13 µs per request on every level of a route's
dependency tree, even one that does nothing (BENCHMARKS.md, section 1, (b) against (c)). A
``Requirement`` is itself the security dependency: it authenticates through its guard and
checks in one call, one level (the role requirements). FastAPI takes an operation's OpenAPI
scopes only from ``Security(..., scopes=[...])``, so the scope requirements declare theirs
through one more: ``require_scope`` is ``Security(guard, scopes=...)`` in a wrapper (the guard
checks them; by hand, ``Security(zitadel, scopes=[...])`` is one level), ``require_any_scope``
a ``Requirement`` with a do-nothing documentation parameter (``Security(guard, scopes=...)``
would demand *all* of them). OpenAPI documents a 403 for every ``Requirement`` (``forbids``).

``app.dependency_overrides[guard]`` keeps working for a one-level requirement: it looks for an
override of its guard in the app (an empty dict costs one truth test) and calls it as FastAPI
would, with the connection and ``SecurityScopes`` its parameters ask for.

No ``from __future__ import annotations``: FastAPI reads the dependency functions' annotations
at runtime, and as strings they would be resolved against module globals rather than the
closure's guard (``self``)."""

import inspect
from collections.abc import Awaitable, Callable
from inspect import Parameter
from typing import Annotated, Any

from fastapi import FastAPI, Security
from fastapi.openapi.models import SecurityBase as SecuritySchemeModel
from fastapi.security import SecurityScopes
from starlette.requests import HTTPConnection

from fastapi_zitadel._exceptions import ConfigurationError, InsufficientScopeError
from fastapi_zitadel._principal import Principal

from .openapi import RequiredScopes, ScopedSecurity
from .refusal import Refusal

__all__ = ["GuardBase", "PrincipalDependency", "Requirement"]

PrincipalDependency = Callable[..., Awaitable[Principal]]
"""What ``require_*`` return: a dependency giving the checked ``Principal``."""


def _needs(values: tuple[str, ...], function: str, what: str) -> list[str]:
    if not values:
        raise ConfigurationError(f"{function} needs at least one {what}")
    if not all(isinstance(value, str) and value for value in values):
        raise ConfigurationError(f"{function} takes {what}s as non-empty strings")
    return list(values)


class GuardBase(ScopedSecurity):
    """The base of the guards (``ZitadelIntrospection``, the default instance's
    ``DefaultZitadel``), the security dependencies the requirements build on: the
    ``require_*`` dependencies, built on the guard."""

    refusal: Refusal
    required_scopes: RequiredScopes

    async def __call__(self, conn: HTTPConnection, security_scopes: SecurityScopes) -> Principal:
        raise NotImplementedError  # each guard answers in its own way

    def require_scope(self, *scopes: str) -> PrincipalDependency:
        """Dependency: a ``Principal`` holding **all** of ``scopes`` (else 403)."""
        needed = _needs(scopes, "require_scope", "scope")
        self.required_scopes.add(needed)

        async def principal_with_all_scopes(
            principal: Annotated[Principal, Security(self, scopes=needed)],
        ) -> Principal:
            return principal

        return principal_with_all_scopes

    def require_any_scope(self, *scopes: str) -> PrincipalDependency:
        """Dependency: a ``Principal`` holding **at least one** of ``scopes`` (else 403)."""
        listed = _needs(scopes, "require_any_scope", "scope")
        self.required_scopes.add(listed)
        return Requirement(
            self,
            lambda principal: principal.has_any_scope(scopes),
            InsufficientScopeError.for_scopes(scopes, any_of=True),
            listed=listed,
        )

    def require_role(self, *roles: str, org_id: str | None = None) -> PrincipalDependency:
        """Dependency: a ``Principal`` holding **all** of the project ``roles``, granted by
        organization ``org_id`` when given (else 403)."""
        _needs(roles, "require_role", "role")
        refusal = InsufficientScopeError.for_roles(roles, org_id=org_id, any_of=False)
        return Requirement(self, lambda principal: principal.has_all_roles(roles, org_id), refusal)

    def require_any_role(self, *roles: str, org_id: str | None = None) -> PrincipalDependency:
        """Dependency: a ``Principal`` holding **at least one** of the project ``roles``,
        granted by organization ``org_id`` when given (else 403)."""
        _needs(roles, "require_any_role", "role")
        refusal = InsufficientScopeError.for_roles(roles, org_id=org_id, any_of=True)
        return Requirement(self, lambda principal: principal.has_any_role(roles, org_id), refusal)


class _OnGuardsScheme(ScopedSecurity):
    """A dependency documented under its guard's security scheme."""

    _guard: GuardBase

    @property
    def model(self) -> SecuritySchemeModel:  # type: ignore[override]
        return self._guard.model

    @property
    def scheme_name(self) -> str:  # type: ignore[override]
        return self._guard.scheme_name


class _ScopeDocumentation(_OnGuardsScheme):
    """Lists scopes under the guard's scheme in OpenAPI; checks nothing, returns nothing."""

    def __init__(self, guard: GuardBase) -> None:
        self._guard = guard

    async def __call__(self) -> None:
        return None


class Requirement(_OnGuardsScheme):
    """A ``require_*`` dependency: authenticates through ``guard``, then answers 403 unless
    ``holds`` says the principal has what the route needs. ``listed``: scopes to list in OpenAPI,
    through a do-nothing parameter that FastAPI reads from this instance's ``__signature__`` (one
    more level, only where there are scopes). Scopes given around it
    (``Security(zitadel.require_role("admin"), scopes=[...])``) reach it as ``SecurityScopes`` and
    the guard checks them, as it does for ``Security(zitadel)``."""

    forbids = True  # OpenAPI: its operations document a 403

    def __init__(
        self,
        guard: GuardBase,
        holds: Callable[[Principal], bool],
        refusal: InsufficientScopeError,
        *,
        listed: list[str] | None = None,
    ) -> None:
        self._guard = guard
        self._holds = holds
        self._refusal = refusal
        # What FastAPI reads instead of ``__call__``'s own signature: the connection, the scopes
        # required around this dependency and, when there are some, the scopes to list.
        parameters = [
            Parameter("conn", Parameter.POSITIONAL_OR_KEYWORD, annotation=HTTPConnection),
            Parameter("security_scopes", Parameter.KEYWORD_ONLY, annotation=SecurityScopes),
        ]
        if listed:
            documented = Annotated[None, Security(_ScopeDocumentation(guard), scopes=listed)]
            parameters.append(
                Parameter("documented", Parameter.KEYWORD_ONLY, annotation=documented)
            )
        self.__signature__ = inspect.Signature(parameters)

    def check_at_startup(self, app: FastAPI) -> None:
        self._guard.check_at_startup(app)  # the guard is not in the route's dependency tree

    async def __call__(
        self,
        conn: HTTPConnection,
        *,
        security_scopes: SecurityScopes | None = None,
        documented: None = None,
    ) -> Principal:
        guard = self._guard
        scopes = security_scopes or SecurityScopes()  # called by hand: none around it
        app = conn.scope.get("app")
        overrides = app.dependency_overrides if isinstance(app, FastAPI) else None
        if overrides and guard in overrides:  # a test replaced the guard
            principal = await _call_override(overrides[guard], conn, scopes)
        else:
            principal = await guard(conn, scopes)
        if not self._holds(principal):
            raise await guard.refusal.exception(self._refusal, conn)
        return principal


async def _call_override(
    override: Callable[..., Any], conn: HTTPConnection, scopes: SecurityScopes
) -> Principal:
    """Call ``app.dependency_overrides[guard]`` as FastAPI would call it in the guard's
    place: with the connection and the ``SecurityScopes`` around the route's requirement
    where its parameters ask."""
    arguments: dict[str, Any] = {}
    for name, parameter in inspect.signature(override, eval_str=True).parameters.items():
        kind = parameter.annotation
        if isinstance(kind, type) and issubclass(kind, HTTPConnection):
            arguments[name] = conn
        elif kind is SecurityScopes:
            arguments[name] = scopes
        elif parameter.default is inspect.Parameter.empty:
            raise ConfigurationError(
                f"the override of a guard that require_* routes use takes {name!r}, which "
                "only FastAPI could provide: override the require_* dependency itself, or "
                "use fastapi_zitadel.testing.override_principal"
            )
    result = override(**arguments)
    principal: Principal = await result if inspect.isawaitable(result) else result
    return principal
