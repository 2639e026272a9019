"""The app's own user: ``principal_loader=`` maps a verified ``Principal`` to it, and
``Depends(zitadel.user)`` injects the result.

The loader runs once per verified token and its result lives exactly as long as the verdict: it is
kept against the cached ``Principal`` object itself (weakly), so when the pipeline drops that
principal (expiry, ``invalidate()``, a revocation, another replica's invalidation) the next request
verifies again, gets a new principal and loads again. A loader that raises fails that request only
(nothing is kept); one that returns ``None`` means "unknown user" and is not kept either, so a user
who signs up is known on the next request. No ``from __future__ import annotations`` here: FastAPI
reads the dependency's annotations at runtime."""

import weakref
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Security
from starlette.requests import HTTPConnection

from fastapi_zitadel._concurrency.tasks import KeyedTasks
from fastapi_zitadel._exceptions import InsufficientScopeError, InvalidTokenError, ZitadelError
from fastapi_zitadel._principal import Principal

from .requirements import GuardBase

__all__ = ["PrincipalLoader", "UserLoader", "user_dependency"]

PrincipalLoader = Callable[[Any], Awaitable[Any]]
"""``principal_loader=``: an async callable from the ``Principal`` to the app's own user."""

_UNKNOWN = "the user is not known to this API"


class UserLoader:
    def __init__(self, loader: PrincipalLoader) -> None:
        self._loader = loader
        # id(principal) -> (a weak reference to it, the loaded user)
        self._results: dict[int, tuple[weakref.ref[Principal], Any]] = {}
        self._flight: KeyedTasks[Any] = KeyedTasks()

    async def load(self, principal: Principal) -> Any:
        key = id(principal)
        held = self._results.get(key)
        if held is not None and held[0]() is principal:  # the hot path: one dict lookup
            return held[1]
        user = await self._flight.run(key, lambda: self._loader(principal))
        if user is not None:
            self._results[key] = (weakref.ref(principal, self._dropper(key)), user)
        return user

    def _dropper(self, key: int) -> Callable[[weakref.ref[Principal]], None]:
        results = self._results

        def drop(ref: weakref.ref[Principal]) -> None:
            held = results.get(key)
            if held is not None and held[0] is ref:
                del results[key]

        return drop

    def clear(self) -> None:
        self._results.clear()
        self._flight.forget_all()


def user_dependency(
    guard: GuardBase, loader: UserLoader, *, unknown_status: int
) -> Callable[..., Awaitable[Any]]:
    """``zitadel.user``: the loaded user, or 401/403 for an unknown one."""
    unknown: ZitadelError = (
        InvalidTokenError(_UNKNOWN) if unknown_status == 401 else InsufficientScopeError(_UNKNOWN)
    )

    async def user(conn: HTTPConnection, principal: Annotated[Principal, Security(guard)]) -> Any:
        loaded = await loader.load(principal)
        if loaded is None:
            raise await guard.refusal.exception(unknown, conn)
        return loaded

    return user
