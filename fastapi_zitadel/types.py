"""Types for annotations: the dependencies ``ZitadelIntrospection`` hands out, what
``principal_loader=`` is, and what ``metrics()``, ``client`` and ``circuit_state`` return."""

from ._events.revocations import REVOCATION_EVENTS
from ._fastapi.requirements import PrincipalDependency
from ._fastapi.security import ClientIdentity, ZitadelIntrospected, ZitadelOptional
from ._fastapi.user import PrincipalLoader
from ._metrics import MetricsSnapshot
from ._resilience.circuit_breaker import CircuitState

__all__ = [
    "REVOCATION_EVENTS",
    "CircuitState",
    "ClientIdentity",
    "MetricsSnapshot",
    "PrincipalDependency",
    "PrincipalLoader",
    "ZitadelIntrospected",
    "ZitadelOptional",
]
