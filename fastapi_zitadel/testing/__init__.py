"""Test without a ZITADEL account: a faithful local stand-in for ZITADEL's endpoints."""

from ._directory import AccessToken, ApiApplication, Organization, Project, User
from ._standin import ConnectionDropped, Fault, ZitadelStandIn

__all__ = [
    "AccessToken",
    "ApiApplication",
    "ConnectionDropped",
    "Fault",
    "Organization",
    "Project",
    "User",
    "ZitadelStandIn",
]
