"""Types for annotations: the dependencies ``ZitadelIntrospection`` hands out, what
``principal_loader=`` is, and what ``metrics()``, ``client`` and ``circuit_state`` return."""

from typing import TYPE_CHECKING

from ._events.revocations import REVOCATION_EVENTS
from ._fastapi.requirements import PrincipalDependency
from ._fastapi.security import ClientIdentity, IntrospectedDependency, OptionalDependency
from ._fastapi.user import PrincipalLoader
from ._metrics import MetricsSnapshot
from ._resilience.circuit_breaker import CircuitState

__all__ = [
    "REVOCATION_EVENTS",
    "CircuitState",
    "ClientIdentity",
    "IntrospectedDependency",
    "MetricsSnapshot",
    "OptionalDependency",
    "PrincipalDependency",
    "PrincipalLoader",
]

# Renamed (issue 24): looking an old name up here names the new one. Hidden from type checkers,
# so that a misspelt import stays an error to them.
_RENAMED = {
    "ZitadelIntrospected": "IntrospectedDependency",
    "ZitadelOptional": "OptionalDependency",
}

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        if name in _RENAMED:
            raise AttributeError(f"{name} was renamed: use fastapi_zitadel.types.{_RENAMED[name]}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
