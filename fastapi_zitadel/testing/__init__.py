"""Test without a ZITADEL account: a faithful local stand-in for ZITADEL's endpoints."""

from ._directory import AccessToken, ApiApplication, Project, StandInOrganization, User
from ._overrides import fixed_principal, override_principal
from ._project import StandInProject
from ._server import LoopbackServer
from ._standin import ConnectionDropped, Fault, ZitadelStandIn

__all__ = [
    "AccessToken",
    "ApiApplication",
    "ConnectionDropped",
    "Fault",
    "LoopbackServer",
    "Project",
    "StandInOrganization",
    "StandInProject",
    "User",
    "ZitadelStandIn",
    "fixed_principal",
    "override_principal",
]
