"""The issuer's OpenID discovery document: where every endpoint is.

Paths are configurable in ZITADEL, so they are read, not assumed. The document's ``issuer``
must equal ours exactly (RFC 8414 §3.3): a mismatch means we are talking to another instance
or a proxy rewrote the host, and tokens from it must not be trusted. A failed fetch is retried
after a growing pause, shared by all requests, so an IdP outage does not become a discovery
storm.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi_zitadel._exceptions import IdentityProviderUnavailable, IssuerMismatch
from fastapi_zitadel._log import logger
from fastapi_zitadel._resilience.single_flight import SingleFlight

from .http import HttpClientProvider, send_for_json
from .urls import check_url

__all__ = ["DISCOVERY_PATH", "Discovery", "ProviderMetadata"]

DISCOVERY_PATH = "/.well-known/openid-configuration"
_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 60.0
_ENDPOINTS = (
    "introspection_endpoint",
    "token_endpoint",
    "authorization_endpoint",
    "revocation_endpoint",
    "jwks_uri",
)


@dataclass(frozen=True)
class ProviderMetadata:
    """The endpoints of the discovery document we may use; ``None`` where it names none."""

    issuer: str
    introspection_endpoint: str | None = None
    token_endpoint: str | None = None
    authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    jwks_uri: str | None = None


class Discovery:
    def __init__(
        self,
        issuer: str,
        *,
        http: HttpClientProvider,
        introspection_endpoint: str | None,
        timeout: float,
        allow_insecure_http: bool,
        monotonic: Callable[[], float],
        needs_introspection: bool = True,
    ) -> None:
        """``needs_introspection=False`` (local JWT verification) accepts a document without
        an introspection endpoint."""
        self._issuer = issuer
        self._needs_introspection = needs_introspection
        self._http = http
        self._timeout = timeout
        self._allow_insecure_http = allow_insecure_http
        self._monotonic = monotonic
        self._configured_endpoint = introspection_endpoint
        self.metadata: ProviderMetadata | None = None
        self._failures = 0
        self._retry_at = float("-inf")
        self._flight: SingleFlight[ProviderMetadata] = SingleFlight()

    async def introspection_endpoint(self, deadline: float | None = None) -> str:
        """The endpoint: configured, or discovered (once) by ``deadline`` (monotonic)."""
        if self._configured_endpoint is not None:
            return self._configured_endpoint
        endpoint = (self.metadata or await self.fetch(deadline)).introspection_endpoint
        if endpoint is None:
            raise IdentityProviderUnavailable("discovery document has no introspection_endpoint")
        return endpoint

    async def fetch(self, deadline: float | None = None) -> ProviderMetadata:
        """The discovery document, fetched on first use; later calls answer from memory."""
        if self.metadata is not None:
            return self.metadata
        wait = self._retry_at - self._monotonic()
        if wait > 0:
            raise IdentityProviderUnavailable(
                "discovery failed recently; retrying later", retry_after=wait
            )
        timeout = self._timeout if deadline is None else deadline - self._monotonic()
        if timeout <= 0:
            raise IdentityProviderUnavailable("no time left for discovery", retry_after=1.0)
        return await self._flight.run("discovery", lambda: self._discover(timeout))

    async def _discover(self, timeout: float) -> ProviderMetadata:
        url = self._issuer + DISCOVERY_PATH
        try:
            request = self._http.request("GET", url)
            response = await send_for_json(self._http, request, timeout=timeout)
            metadata = self._metadata_from(response.status, response.data, response.problem)
        except IdentityProviderUnavailable as exc:
            self._failures += 1
            backoff = min(_FIRST_BACKOFF * 2 ** (self._failures - 1), _MAX_BACKOFF)
            backoff *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
            self._retry_at = self._monotonic() + backoff
            logger.error("OpenID discovery at %s failed: %s", url, exc.description)
            raise type(exc)(f"discovery failed: {exc.description}", retry_after=backoff) from None
        self._failures = 0
        self.metadata = metadata
        logger.debug("discovered introspection endpoint %s", metadata.introspection_endpoint)
        return metadata

    def _metadata_from(self, status: int, data: Any, problem: str | None) -> ProviderMetadata:
        if status != 200:
            raise IdentityProviderUnavailable(f"discovery document answered HTTP {status}")
        if problem is not None or not isinstance(data, dict):
            raise IdentityProviderUnavailable(
                f"discovery document is not a JSON object ({problem or type(data).__name__})"
            )
        issuer = data.get("issuer")
        if issuer != self._issuer:
            shown = issuer if isinstance(issuer, str) else type(issuer).__name__
            raise IssuerMismatch(
                f"discovery document names issuer {shown!r}, expected exactly {self._issuer!r}"
            )
        endpoints = {name: self._endpoint(data, name) for name in _ENDPOINTS}
        if (
            endpoints["introspection_endpoint"] is None
            and self._configured_endpoint is None
            and self._needs_introspection
        ):
            raise IdentityProviderUnavailable("discovery document has no introspection_endpoint")
        return ProviderMetadata(issuer=issuer, **endpoints)

    def _endpoint(self, data: dict[str, Any], name: str) -> str | None:
        endpoint = data.get(name)
        if endpoint is None:
            return None
        if not isinstance(endpoint, str):
            raise IdentityProviderUnavailable(f"discovery document's {name} is not a string")
        try:
            check_url(endpoint, allow_insecure_http=self._allow_insecure_http)
            if self._issuer.startswith("https:") and not endpoint.startswith("https:"):
                raise ValueError("is not https although the issuer is")
        except ValueError as exc:
            raise IdentityProviderUnavailable(f"{name} {exc}") from None
        return endpoint
