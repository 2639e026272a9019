"""Protect FastAPI apps with ZITADEL tokens, verified by introspection (RFC 7662), locally
(JWT access tokens against the issuer's keys), or both.

The public API is what this module exports; everything else is private (``_*``) and may
change without notice. ``tests/test_exported_members.py`` pins the list below.
"""

from ._cache.base import CacheBinding, CacheEntry, CacheKey, IntrospectionCache
from ._cache.memory import MemoryCache
from ._cache.redis_cache import RedisCache
from ._config import KeyFileSource, ZitadelConfig, ZitadelSettings
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
from ._fastapi.requirements import PrincipalDependency
from ._fastapi.security import (
    ClientIdentity,
    ZitadelIntrospected,
    ZitadelIntrospection,
    ZitadelOptional,
)
from ._idp.key_file import ZitadelKeyFile, load_key_file
from ._metrics import MetricsSnapshot
from ._principal import Organization, Principal
from ._resilience.circuit_breaker import CircuitState

__all__ = [
    "AuthenticationError",
    "CacheBinding",
    "CacheEntry",
    "CacheKey",
    "CircuitState",
    "ClientCredentialsRejected",
    "ClientIdentity",
    "ConfigurationError",
    "DefaultZitadel",
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
    "RedisCache",
    "ZitadelConfig",
    "ZitadelError",
    "ZitadelIntrospected",
    "ZitadelIntrospection",
    "ZitadelKeyFile",
    "ZitadelOptional",
    "ZitadelSettings",
    "default_zitadel",
    "get_default_zitadel",
    "load_key_file",
    "require_any_role",
    "require_any_scope",
    "require_role",
    "require_scope",
    "set_default_zitadel",
]
