"""Protect FastAPI apps with ZITADEL tokens, verified by introspection (RFC 7662), locally
(JWT access tokens against the issuer's keys), or both; and call other protected APIs with
ZITADEL tokens (``ServiceAccountAuth``, ``TokenExchange``).

The public API is what this module exports, what an app needs; the rest of it lives in four
submodules: ``fastapi_zitadel.cache`` (the shared-tier extension kit), ``.defaults`` (the
default instance and the module-level ``require_*``), ``.config`` (configuration objects and
key files) and ``.types`` (types for annotations). Everything else is private (``_*``) and
may change without notice. ``tests/test_exported_members.py`` pins the lists.
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

# Where the names that left the root in 0.2 live now: an import of one from here says so.
_MOVED = {
    **dict.fromkeys(
        (
            "CacheBinding",
            "CacheEntry",
            "CacheKey",
            "IntrospectionCache",
            "MemoryCache",
            "RedisCache",
            "SharedCacheUnavailable",
            "SuspectToken",
        ),
        "cache",
    ),
    **dict.fromkeys(
        (
            "DefaultZitadel",
            "default_zitadel",
            "get_default_zitadel",
            "set_default_zitadel",
            "require_scope",
            "require_any_scope",
            "require_role",
            "require_any_role",
        ),
        "defaults",
    ),
    **dict.fromkeys(
        ("KeyFileSource", "ZitadelConfig", "ZitadelKeyFile", "ZitadelSettings", "load_key_file"),
        "config",
    ),
    **dict.fromkeys(
        (
            "REVOCATION_EVENTS",
            "CircuitState",
            "ClientIdentity",
            "MetricsSnapshot",
            "PrincipalDependency",
            "PrincipalLoader",
            "ZitadelIntrospected",
            "ZitadelOptional",
        ),
        "types",
    ),
}


def __getattr__(name: str) -> object:
    home = _MOVED.get(name)
    message = (
        f"module 'fastapi_zitadel' has no attribute {name!r}"
        if home is None
        else f"{name} moved out of the package root: from fastapi_zitadel.{home} import {name}"
    )
    raise AttributeError(message)
