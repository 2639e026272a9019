"""Finding the introspection endpoint from the issuer's discovery document.

Paths are configurable in ZITADEL, so they are read, not assumed. The document's ``issuer``
must equal ours exactly (RFC 8414 §3.3): a mismatch means we are talking to another instance
or a proxy rewrote the host, and tokens from it must not be trusted. A failed fetch is retried
after a growing pause, shared by all requests, so an IdP outage does not become a discovery
storm.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ._config import check_url
from ._exceptions import IdentityProviderUnavailable
from ._http import HttpClientProvider, send_for_json
from ._log import logger
from ._single_flight import SingleFlight

DISCOVERY_PATH = "/.well-known/openid-configuration"
_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 60.0


class IssuerMismatch(IdentityProviderUnavailable):
    """The discovery document names another issuer: our configuration is wrong."""


class Discovery:
    def __init__(
        self,
        issuer: str,
        *,
        http: HttpClientProvider,
        endpoint: str | None,
        timeout: float,
        allow_insecure_http: bool,
        monotonic: Callable[[], float],
    ) -> None:
        self._issuer = issuer
        self._http = http
        self._timeout = timeout
        self._allow_insecure_http = allow_insecure_http
        self._monotonic = monotonic
        self.endpoint = endpoint
        self._failures = 0
        self._retry_at = float("-inf")
        self._flight: SingleFlight[str] = SingleFlight()

    async def introspection_endpoint(self, deadline: float | None = None) -> str:
        """The endpoint; fetching it (once) ends by ``deadline`` (monotonic) at the latest."""
        if self.endpoint is not None:
            return self.endpoint
        wait = self._retry_at - self._monotonic()
        if wait > 0:
            raise IdentityProviderUnavailable(
                "discovery failed recently; retrying later", retry_after=wait
            )
        timeout = self._timeout if deadline is None else deadline - self._monotonic()
        if timeout <= 0:
            raise IdentityProviderUnavailable("no time left for discovery", retry_after=1.0)
        return await self._flight.run("discovery", lambda: self._discover(timeout))

    async def _discover(self, timeout: float) -> str:
        url = self._issuer + DISCOVERY_PATH
        try:
            request = self._http.get().build_request("GET", url)
            response = await send_for_json(self._http.get(), request, timeout=timeout)
            endpoint = self._endpoint_from(response.status, response.data, response.problem)
        except IdentityProviderUnavailable as exc:
            self._failures += 1
            backoff = min(_FIRST_BACKOFF * 2 ** (self._failures - 1), _MAX_BACKOFF)
            backoff *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
            self._retry_at = self._monotonic() + backoff
            logger.error("OpenID discovery at %s failed: %s", url, exc.description)
            raise type(exc)(f"discovery failed: {exc.description}", retry_after=backoff) from None
        self._failures = 0
        self.endpoint = endpoint
        logger.debug("discovered introspection endpoint %s", endpoint)
        return endpoint

    def _endpoint_from(self, status: int, data: Any, problem: str | None) -> str:
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
        endpoint = data.get("introspection_endpoint")
        if not isinstance(endpoint, str):
            raise IdentityProviderUnavailable("discovery document has no introspection_endpoint")
        try:
            check_url(endpoint, allow_insecure_http=self._allow_insecure_http)
            if self._issuer.startswith("https:") and not endpoint.startswith("https:"):
                raise ValueError("is not https although the issuer is")
        except ValueError as exc:
            raise IdentityProviderUnavailable(f"introspection_endpoint {exc}") from None
        return endpoint
