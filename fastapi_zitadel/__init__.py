"""Protect FastAPI apps with ZITADEL tokens, verified by introspection (RFC 7662), locally
(JWT access tokens against the issuer's keys), or both; and call other protected APIs with
ZITADEL tokens (``ServiceAccountAuth``, ``TokenExchange``).

The public API is what this module exports; everything else is private (``_*``) and may
change without notice. ``tests/test_exported_members.py`` pins the list below.
"""

from ._cache.base import CacheBinding, CacheEntry, CacheKey, IntrospectionCache, SuspectToken
from ._cache.memory import MemoryCache
from ._cache.redis_cache import RedisCache
from ._client.service_account import ServiceAccountAuth
from ._client.token_exchange import ExchangedToken, TokenExchange
from ._config import KeyFileSource, ZitadelConfig, ZitadelSettings
from ._events.revocations import REVOCATION_EVENTS
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
    SharedCacheUnavailable,
    TokenEndpointUnavailable,
    TokenExchangeRejected,
    TokenRequestRejected,
    WrongKeyTypeError,
    ZitadelError,
)
from ._fastapi.defaults import (
    DefaultZitadel,
    default_zitadel,
    get_default_zitadel,
    require_any_role,
    require_any_scope,
    require_role,
    require_scope,
    set_default_zitadel,
)
from ._fastapi.middleware import ZitadelCredentials, ZitadelMiddleware, ZitadelUser
from ._fastapi.requirements import PrincipalDependency
from ._fastapi.security import (
    ClientIdentity,
    ZitadelIntrospected,
    ZitadelIntrospection,
    ZitadelOptional,
)
from ._fastapi.user import PrincipalLoader
from ._idp.key_file import ZitadelKeyFile, load_key_file
from ._metrics import MetricsSnapshot
from ._principal import Actor, Organization, Principal
from ._resilience.circuit_breaker import CircuitState

__all__ = [
    "REVOCATION_EVENTS",
    "Actor",
    "AuthenticationError",
    "CacheBinding",
    "CacheEntry",
    "CacheKey",
    "CircuitState",
    "ClientCredentialsRejected",
    "ClientIdentity",
    "ConfigurationError",
    "DefaultZitadel",
    "ExchangedToken",
    "IdentityProviderError",
    "IdentityProviderUnavailable",
    "InsufficientScopeError",
    "IntrospectionCache",
    "InvalidRequestError",
    "InvalidTokenError",
    "IssuerMismatch",
    "KeyFileError",
    "KeyFileSource",
    "MemoryCache",
    "MetricsSnapshot",
    "MissingTokenError",
    "Organization",
    "Principal",
    "PrincipalDependency",
    "PrincipalLoader",
    "RedisCache",
    "ServiceAccountAuth",
    "SharedCacheUnavailable",
    "SuspectToken",
    "TokenEndpointUnavailable",
    "TokenExchange",
    "TokenExchangeRejected",
    "TokenRequestRejected",
    "WrongKeyTypeError",
    "ZitadelConfig",
    "ZitadelCredentials",
    "ZitadelError",
    "ZitadelIntrospected",
    "ZitadelIntrospection",
    "ZitadelKeyFile",
    "ZitadelMiddleware",
    "ZitadelOptional",
    "ZitadelSettings",
    "ZitadelUser",
    "default_zitadel",
    "get_default_zitadel",
    "load_key_file",
    "require_any_role",
    "require_any_scope",
    "require_role",
    "require_scope",
    "set_default_zitadel",
]
