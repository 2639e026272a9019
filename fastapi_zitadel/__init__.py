"""Protect FastAPI apps with ZITADEL tokens, verified by introspection (RFC 7662)."""

from ._cache import CacheEntry, CacheKey, IntrospectionCache, MemoryCache
from ._config import ZitadelConfig, ZitadelSettings
from ._dependencies import (
    get_default_zitadel,
    require_all_roles,
    require_any_scope,
    require_role,
    require_scope,
    set_default_zitadel,
)
from ._exceptions import (
    AuthenticationError,
    ClientCredentialsRejected,
    ConfigurationError,
    IdentityProviderError,
    IdentityProviderUnavailable,
    InsufficientScopeError,
    InvalidRequestError,
    InvalidTokenError,
    KeyFileError,
    MissingTokenError,
    ZitadelError,
)
from ._introspection import ZitadelIntrospection
from ._key_file import ZitadelKeyFile, load_key_file
from ._principal import Organization, Principal
from ._redis_cache import RedisCache

__all__ = [
    "AuthenticationError",
    "CacheEntry",
    "CacheKey",
    "ClientCredentialsRejected",
    "ConfigurationError",
    "IdentityProviderError",
    "IdentityProviderUnavailable",
    "InsufficientScopeError",
    "IntrospectionCache",
    "InvalidRequestError",
    "InvalidTokenError",
    "KeyFileError",
    "MemoryCache",
    "MissingTokenError",
    "Organization",
    "Principal",
    "RedisCache",
    "ZitadelConfig",
    "ZitadelError",
    "ZitadelIntrospection",
    "ZitadelKeyFile",
    "ZitadelSettings",
    "get_default_zitadel",
    "load_key_file",
    "require_all_roles",
    "require_any_scope",
    "require_role",
    "require_scope",
    "set_default_zitadel",
]
