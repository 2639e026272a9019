"""Protect FastAPI apps with ZITADEL tokens, verified by introspection (RFC 7662), locally (JWT
access tokens against the issuer's keys), or both; and call other protected APIs with ZITADEL tokens
(``ServiceAccountAuth``, ``TokenExchange``). The public API is what this module exports, what an app
needs; the rest of it lives in four submodules: ``fastapi_zitadel.cache`` (the shared-tier extension
kit), ``.defaults`` (the default instance and the module-level ``require_*``), ``.config``
(configuration objects and key files) and ``.types`` (types for annotations). Everything else is
private (``_*``) and may change without notice. ``tests/test_exported_members.py`` pins the lists.
"""

from ._exceptions import (
    AuthenticationError,
    ClientCredentialsRejected,
    ConfigurationError,
    IdentityProviderError,
    IdentityProviderUnavailable,
    InsufficientScopeError,
    InvalidRequestError,
    InvalidTokenError,
    IssuerMismatch,
    KeyFileError,
    MissingTokenError,
    TokenEndpointUnavailable,
    TokenExchangeRejected,
    TokenRequestRejected,
    WrongKeyTypeError,
    ZitadelError,
)
from ._fastapi.middleware import ZitadelCredentials, ZitadelMiddleware, ZitadelUser
from ._fastapi.security import ZitadelIntrospection
from ._outbound.service_account import ServiceAccountAuth
from ._outbound.token_exchange import ExchangedToken, TokenExchange
from ._principal import Actor, Organization, Principal

__all__ = [
    "Actor",
    "AuthenticationError",
    "ClientCredentialsRejected",
    "ConfigurationError",
    "ExchangedToken",
    "IdentityProviderError",
    "IdentityProviderUnavailable",
    "InsufficientScopeError",
    "InvalidRequestError",
    "InvalidTokenError",
    "IssuerMismatch",
    "KeyFileError",
    "MissingTokenError",
    "Organization",
    "Principal",
    "ServiceAccountAuth",
    "TokenEndpointUnavailable",
    "TokenExchange",
    "TokenExchangeRejected",
    "TokenRequestRejected",
    "WrongKeyTypeError",
    "ZitadelCredentials",
    "ZitadelError",
    "ZitadelIntrospection",
    "ZitadelMiddleware",
    "ZitadelUser",
]


def __getattr__(name: str) -> object:
    import importlib

    # The public submodules, where the names that left the root in 0.2 live now: an attribute
    # lookup of one of those here says where it went.
    for home in ("cache", "defaults", "config", "types"):
        if name in importlib.import_module(f"fastapi_zitadel.{home}").__all__:
            where = f"from fastapi_zitadel.{home} import {name}"
            raise AttributeError(f"{name} moved out of the package root: {where}")
    raise AttributeError(f"module 'fastapi_zitadel' has no attribute {name!r}")
