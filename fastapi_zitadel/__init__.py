"""Protect FastAPI apps with ZITADEL tokens, verified by introspection (RFC 7662)."""

from ._cache import CacheEntry, IntrospectionCache, MemoryCache
from ._config import ZitadelConfig, ZitadelSettings
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

__all__ = [
    "AuthenticationError",
    "CacheEntry",
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
    "ZitadelConfig",
    "ZitadelError",
    "ZitadelIntrospection",
    "ZitadelKeyFile",
    "ZitadelSettings",
    "load_key_file",
]
