"""The issuer's OpenID discovery document: where every endpoint is.

Paths are configurable in ZITADEL, so they are read, not assumed. The document's ``issuer``
must equal ours exactly (RFC 8414 §3.3): else we talk to another instance or a proxy rewrote
the host, and its tokens must not be trusted. A fetch runs on the one retry loop
(``retry.Retries``: ``max_retries`` more attempts within the deadline, none by default); one
that fails all the same is tried again only after a growing pause shared by all requests, so
an IdP outage is no discovery storm: a burst of callers sends one fetch (``fetch``: one per
event loop; ``fetch_sync``: one thread at a time), and failures during a pause count once.
One flow (``_document``) serves both.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from fastapi_zitadel._concurrency.tasks import KeyedTasks
from fastapi_zitadel._exceptions import IdentityProviderUnavailable, IssuerMismatch
from fastapi_zitadel._http.client import HttpClientProvider, JsonResponse
from fastapi_zitadel._http.retry import Flow, Retries, get_json, run, run_sync
from fastapi_zitadel._http.urls import check_url
from fastapi_zitadel._log import logger

__all__ = ["DISCOVERY_PATH", "Discovery", "ProviderMetadata"]

DISCOVERY_PATH = "/.well-known/openid-configuration"
_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 60.0


@dataclass(frozen=True)
class ProviderMetadata:
    """The endpoints of the discovery document we may use; ``None`` where it names none."""

    issuer: str
    introspection_endpoint: str | None = None
    token_endpoint: str | None = None
    authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    jwks_uri: str | None = None


_ENDPOINTS = tuple(field.name for field in fields(ProviderMetadata) if field.name != "issuer")


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
        required_endpoint: str | None = "introspection_endpoint",
        max_retries: int = 0,
    ) -> None:
        """``required_endpoint``: the endpoint a document must name (an API introspects, a
        client of other APIs needs the ``token_endpoint``; ``None`` for local JWT verification,
        which needs only ``jwks_uri``)."""
        self._issuer = issuer
        self._required = required_endpoint
        self._http = http
        self._timeout = timeout
        self._allow_insecure_http = allow_insecure_http
        self._monotonic = monotonic
        self._configured_endpoint = introspection_endpoint
        self.metadata: ProviderMetadata | None = None
        self._failures = 0
        self._retry_at = float("-inf")
        self._last_failure: IdentityProviderUnavailable | None = None
        self._flight: KeyedTasks[ProviderMetadata] = KeyedTasks()
        self._sync_lock = threading.Lock()
        self._retries = Retries(
            max_retries=max_retries,
            monotonic=monotonic,
            out_of_time=lambda: IdentityProviderUnavailable(
                "no time left for discovery", retry_after=1.0
            ),
        )

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
        deadline = self._deadline(deadline)
        return await self._flight.run(
            "discovery", lambda: run(self._document(deadline), self._http)
        )

    async def aclose(self) -> None:
        """Cancel the fetch of this event loop still running."""
        await self._flight.aclose()

    def fetch_sync(self, deadline: float | None = None) -> ProviderMetadata:
        """``fetch`` for synchronous code; one thread fetches at a time, the others then
        answer from memory (or from the pause its failure started)."""
        if self.metadata is not None:
            return self.metadata
        with self._sync_lock:
            if self.metadata is not None:  # fetched while this thread waited
                return self.metadata
            return run_sync(self._document(self._deadline(deadline)), self._http, self._monotonic)

    def _deadline(self, deadline: float | None) -> float:
        """When this fetch must be done by; raises while failed fetches are paused, or when
        no time is left (neither counts as a failed fetch)."""
        wait = self._retry_at - self._monotonic()
        if wait > 0:
            # The same class and cause as the failure that started the pause: what a caller
            # (or ``fastapi-zitadel check``) reports must not depend on who fetched first.
            last = self._last_failure
            assert last is not None, "a pause always follows a failure"
            raise type(last)(last.description, retry_after=wait)
        if deadline is None:
            return self._monotonic() + self._timeout
        if deadline <= self._monotonic():
            raise self._retries.out_of_time()
        return deadline

    def _document(self, deadline: float) -> Flow[ProviderMetadata]:
        """One fetch, async or sync alike (``retry.run``, ``retry.run_sync``)."""
        url = self._issuer + DISCOVERY_PATH

        def attempt(_number: int, remaining: float) -> Flow[ProviderMetadata]:
            response = yield from get_json(self._http, url, remaining, "discovery document")
            return self._metadata_from(response)

        try:
            metadata = yield from self._retries.flow(deadline, attempt)
        except IdentityProviderUnavailable as exc:
            raise self._failed(url, exc) from None
        self._failures = 0
        self.metadata = metadata
        logger.debug("discovered introspection endpoint %s", metadata.introspection_endpoint)
        return metadata

    def _failed(self, url: str, exc: IdentityProviderUnavailable) -> IdentityProviderUnavailable:
        """Record a failed fetch (the next one waits a growing pause) and say what failed. A
        fetch that fails while a pause runs (one started before the pause, by another event
        loop or thread) is the same outage: it neither counts again nor lengthens the pause."""
        now = self._monotonic()
        paused = self._retry_at > now
        if not paused:
            self._failures += 1
            backoff = min(_FIRST_BACKOFF * 2 ** (self._failures - 1), _MAX_BACKOFF)
            backoff *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
            self._retry_at = now + backoff
        logger.error("OpenID discovery at %s failed: %s", url, exc.description)
        wait = self._retry_at - now
        failure = type(exc)(f"discovery failed: {exc.description}", retry_after=wait)
        if not paused:  # the pause repeats the failure that started it
            self._last_failure = failure
        return failure

    def _metadata_from(self, response: JsonResponse) -> ProviderMetadata:
        data, problem = response.data, response.problem
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
        required = self._required
        configured = required == "introspection_endpoint" and self._configured_endpoint
        if required is not None and endpoints[required] is None and not configured:
            raise IdentityProviderUnavailable(f"discovery document has no {required}")
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
