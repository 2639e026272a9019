"""Test without a ZITADEL account: a faithful local stand-in for ZITADEL's endpoints."""

from ._actions import Delivery, Target
from ._directory import (
    AccessToken,
    ApiApplication,
    Project,
    StandInOrganization,
    User,
    WebApplication,
)
from ._events import Event
from ._overrides import fixed_principal, override_principal
from ._project import StandInEvents, StandInProject
from ._server import LoopbackServer, PortInUse, base_url, bind_socket
from ._standin import ConnectionDropped, Fault, ZitadelStandIn

__all__ = [
    "AccessToken",
    "ApiApplication",
    "ConnectionDropped",
    "Delivery",
    "Event",
    "Fault",
    "LoopbackServer",
    "PortInUse",
    "Project",
    "StandInEvents",
    "StandInOrganization",
    "StandInProject",
    "Target",
    "User",
    "WebApplication",
    "ZitadelStandIn",
    "base_url",
    "bind_socket",
    "fixed_principal",
    "override_principal",
]
