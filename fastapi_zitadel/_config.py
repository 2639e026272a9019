"""Configuration: one validated model, filled from keyword arguments or from ``ZITADEL_*``.

Everything is checked when the ``ZitadelIntrospection`` is built, so a typo fails the app at
start-up with the setting's name rather than every request with a 503.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_insecure_http: bool) -> str:
    """An absolute http(s) URL; plain http only for loopback hosts unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"must be an absolute https:// URL, got {url!r}")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback_host(parts.hostname):
        raise ValueError(
            f"{url!r} uses plain http for a non-loopback host: tokens would cross the network "
            "in clear text; use https, or set allow_insecure_http=True for a trusted network"
        )
    return url


class ZitadelConfig(BaseModel):
    """Every setting of ``ZitadelIntrospection``; see the README's configuration table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(description="ZITADEL's issuer URL, e.g. https://acme.zitadel.cloud")
    key_file: Path | None = Field(default=None, description="Path of the JSON key file")
    key: SecretStr | None = Field(default=None, description="The JSON key file's content")
    client_id: str | None = None
    client_secret: SecretStr | None = None
    audience: Annotated[tuple[str, ...], NoDecode] = ()
    project_id: str | None = None
    introspection_endpoint: str | None = None
    cache_ttl: float = Field(default=60.0, ge=0, le=86_400)
    cache_max_size: int = Field(default=10_000, ge=1)
    negative_cache_ttl: float = Field(default=5.0, ge=0, le=3_600)
    negative_cache_max_size: int = Field(default=2_000, ge=1)
    stale_if_error: float = Field(default=0.0, ge=0, le=86_400)
    leeway: float = Field(default=5.0, ge=0, le=300)
    timeout: float = Field(default=10.0, gt=0, le=300)
    max_retries: int = Field(default=2, ge=0, le=10)
    max_concurrent_introspections: int = Field(default=50, ge=1, le=10_000)
    circuit_breaker_threshold: int = Field(default=5, ge=0, le=1_000)
    circuit_breaker_cooldown: float = Field(default=5.0, gt=0, le=300)
    assertion_lifetime: float = Field(default=600.0, ge=30, le=3_300)
    single_use_assertion: bool = False
    max_token_length: int = Field(default=4096, ge=16, le=1_048_576)
    redis_url: SecretStr | None = None
    discover_on_startup: bool = False
    allow_insecure_http: bool = False
    realm: str = Field(default="api", min_length=1, pattern=r"^[\x20\x21\x23-\x5b\x5d-\x7e]+$")
    scheme_name: str = Field(default="ZITADEL", min_length=1)
    scheme_description: str | None = None
    swagger_client_id: str | None = None
    websocket_query_token: bool = False

    @field_validator("issuer")
    @classmethod
    def _issuer_has_no_trailing_slash(cls, value: str) -> str:
        if value.endswith("/"):
            raise ValueError(
                f"must not end with '/': ZITADEL compares the issuer exactly; "
                f"use {value.rstrip('/')!r}"
            )
        return value

    @field_validator("audience", mode="before")
    @classmethod
    def _split_audience(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> ZitadelConfig:
        # Here rather than in field validators: both depend on allow_insecure_http.
        urls = {"issuer": self.issuer, "introspection_endpoint": self.introspection_endpoint}
        for name, url in urls.items():
            if url is not None:
                try:
                    check_url(url, allow_insecure_http=self.allow_insecure_http)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return self


class ZitadelSettings(ZitadelConfig, BaseSettings):
    """``ZitadelConfig`` read from ``ZITADEL_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="ZITADEL_", extra="ignore", frozen=True)
