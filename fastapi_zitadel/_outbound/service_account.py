"""``ServiceAccountAuth``: an ``httpx.Auth`` that calls APIs as a ZITADEL service user.

A service user (machine user) gets its access tokens from ZITADEL's token endpoint, with its
key (the JWT bearer grant, RFC 7523 §2.1: an RS256 assertion with ``kid`` = the key id,
``iss`` = ``sub`` = the user id, ``aud`` = the issuer) or with a client secret (client
credentials, ``client_secret_basic``). The token is kept and renewed before it lapses:

* **hot path**, every request: one attribute read, one clock read, one comparison, then the
  ready-made ``Authorization`` value is set. No lock, no allocation besides httpx's own.
* **renewal**: once ``renew_before`` of its lifetime is left, the first request starts getting
  the next token, in the background, and every request keeps sending the current one (still
  valid) meanwhile. A failed renewal is retried later; the current token is used until its
  last seconds.
* **cold start / expiry**: every request waits for one shared token request (single flight:
  per event loop, and one thread at a time for synchronous clients).
* **revoked or rejected token**: a 401 whose ``WWW-Authenticate`` says
  ``error="invalid_token"`` drops the token, gets a new one and sends the request again, once,
  when its body can be sent again (bytes, not a stream). Only a 401 from where the token went
  counts (after a redirect to another origin, httpx did not send it there), and a 401 gets a
  new token at most once per ``REFUSAL_HOLD_OFF`` seconds: an API that refuses every token
  (misconfigured, or hostile) gets its 401s back, not a token request per call. The reason
  is logged once per hold-off.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from fastapi_zitadel._concurrency.tasks import KeyedTasks
from fastapi_zitadel._credentials.client_auth import ClientCredentials, sign_assertion
from fastapi_zitadel._credentials.key_file import KeyFileSource
from fastapi_zitadel._exceptions import (
    ConfigurationError,
    IdentityProviderError,
    TokenRequestRejected,
    ZitadelError,
)
from fastapi_zitadel._http.retry import Flow
from fastapi_zitadel._http.urls import shown
from fastapi_zitadel._log import logger
from fastapi_zitadel._outbound.settings import outbound_settings
from fastapi_zitadel._outbound.token_endpoint import (
    ASSERTION_LIFETIME,
    CLIENT_CREDENTIALS_GRANT,
    JWT_BEARER_GRANT,
    Caller,
    EndpointClient,
    secret_caller,
)

__all__ = ["AUDIENCE_SCOPE", "ROLES_SCOPE", "ServiceAccountAuth"]

AUDIENCE_SCOPE = "urn:zitadel:iam:org:project:id:{project_id}:aud"
ROLES_SCOPE = "urn:zitadel:iam:org:projects:roles"
DEFAULT_LIFETIME = 300.0  # a token without expires_in is kept this long
_MIN_LIFETIME = 1.0
# A token is renewed at least this often, whatever expires_in says: an endpoint that claims
# years (or 1e308 seconds) would otherwise leave a token in use long after it lapsed.
MAX_LIFETIME = 86_400.0
_FLIGHT = "token"
_HOLD_UNAVAILABLE = 1.0  # seconds a failed cold fetch is repeated without a new request
_HOLD_REJECTED = 10.0
_INVALID_TOKEN = re.compile(r"""\berror\s*=\s*"?invalid_token\b""", re.IGNORECASE)
_DESCRIPTION = re.compile(r'\berror_description\s*=\s*"([\x20\x21\x23-\x5b\x5d-\x7e]{1,120})"')
REFUSAL_HOLD_OFF = 30.0  # seconds between token requests caused by an API's 401s


@dataclass(frozen=True)
class _Token:
    """A token and its schedule, on the monotonic clock; replaced whole, never changed."""

    value: str = field(repr=False)
    header: str = field(repr=False)  # "Bearer <value>", built once
    renew_at: float
    usable_until: float


class ServiceAccountAuth(EndpointClient, httpx.Auth):
    """Sends ``Authorization: Bearer <access token>`` of a ZITADEL service user.

    ``key_file``: the service user's JSON key (a path, the JSON text, a mapping or a loaded
    key file), for the JWT bearer grant; or ``client_id`` (the user name) with
    ``client_secret``, for client credentials. ``project_id`` (one or several) adds ZITADEL's
    audience scope ``urn:zitadel:iam:org:project:id:{id}:aud``: **without it the called API's
    introspection answers inactive**. ``roles=True`` asks for the user's roles
    (``urn:zitadel:iam:org:projects:roles``), ``scopes`` for others; ``openid`` is always sent.

    Use one per service user for the life of the app, with ``httpx.AsyncClient`` or
    ``httpx.Client``; close it when done (``async with auth:`` / ``with auth:``, or
    ``aclose()`` / ``close()``): it holds its own connection pool to ZITADEL.
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(
        self,
        issuer: str,
        *,
        key_file: KeyFileSource | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        project_id: str | Sequence[str] | None = None,
        roles: bool = False,
        scopes: Iterable[str] = (),
        timeout: float = 10.0,
        max_retries: int = 2,
        renew_before: float = 0.2,
        allow_insecure_http: bool = False,
        http_client: httpx.AsyncClient | None = None,
        sync_http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        settings = outbound_settings(
            "ServiceAccountAuth",
            "serviceaccount",
            issuer=issuer,
            key_file=key_file,
            client_id=client_id,
            client_secret=client_secret,
            timeout=timeout,
            max_retries=max_retries,
            allow_insecure_http=allow_insecure_http,
        )
        if not 0 < renew_before < 1:
            raise ConfigurationError(
                f"renew_before must be a fraction of the token's lifetime between 0 and 1, "
                f"got {renew_before!r}"
            )
        self._renew_before = renew_before
        self.scope = _scope(project_id, roles=roles, extra=scopes)
        key = settings.key
        if key is None:
            caller, credentials = secret_caller(settings, "service user", "client_credentials")
            grant = CLIENT_CREDENTIALS_GRANT
        else:
            caller = Caller("service user", key.subject, key.key_id, "jwt-bearer")
            grant = JWT_BEARER_GRANT
            audience = settings.issuer

            def credentials() -> ClientCredentials:
                assertion = sign_assertion(
                    key, audience=audience, now=clock(), lifetime=ASSERTION_LIFETIME
                )
                return ClientCredentials(form={"assertion": assertion})

        self._grant_form = {"grant_type": grant, "scope": self.scope}
        self._connect(settings, caller, credentials, http_client, sync_http_client, monotonic)
        self._token: _Token | None = None
        # The token requests (a cold fetch, a renewal), per event loop; aclose cancels them.
        self._flight: KeyedTasks[_Token] = KeyedTasks()
        self._lock = threading.Lock()  # synchronous fetches, one thread at a time
        self._renew_retry_at = float("-inf")
        self._failure: IdentityProviderError | None = None
        self._failure_until = float("-inf")
        self._refusal_hold_until = float("-inf")  # no token request for a 401 before then
        self._refusal_logged = False

    async def aclose(self) -> None:
        """Cancel the token request of this event loop still running (a renewal in the
        background), then close the connection pools to ZITADEL."""
        await self._flight.aclose()
        await super().aclose()

    # The raw token ------------------------------------------------------------------------
    async def atoken(self) -> str:
        """The current access token, fetched or renewed as needed (for code that needs it)."""
        return (await self._acurrent()).value

    def token(self) -> str:
        """``atoken`` for synchronous code."""
        return self._current().value

    def invalidate(self, token: str | None = None) -> None:
        """Forget the token (only if it is still ``token``, when given): the next request gets a
        new one. Done by the auth flow when the called API says the token is invalid."""
        current = self._token
        if current is not None and (token is None or current.value == token):
            self._token = None
            self._flight.forget(_FLIGHT)

    # httpx.Auth -------------------------------------------------------------------------
    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        token = self._token
        if token is None or self._monotonic() >= token.renew_at:
            token = self._current()
        request.headers["Authorization"] = token.header
        response = yield request
        if self._send_again(token, request, response):
            request.headers["Authorization"] = self._current().header
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = self._token
        if token is None or self._monotonic() >= token.renew_at:
            token = await self._acurrent()
        request.headers["Authorization"] = token.header
        response = yield request
        if self._send_again(token, request, response):
            request.headers["Authorization"] = (await self._acurrent()).header
            yield request

    def _send_again(self, token: _Token, request: httpx.Request, response: httpx.Response) -> bool:
        """After the API refused ``token``: whether to send ``request`` again, with the token
        that replaces it (dropped here, when that is allowed now)."""
        if not _retry_with_new_token(token, request, response):
            return False
        if self._token is not token:
            return True  # already replaced (another request's 401, a renewal): no new request
        now = self._monotonic()
        if now < self._refusal_hold_until:
            if not self._refusal_logged:
                self._refusal_logged = True
                challenges = " ".join(response.headers.get_list("www-authenticate"))
                described, url = _DESCRIPTION.search(challenges), response.request.url
                logger.warning(
                    "%s refused service user %s's token again (401 invalid_token%s) although it "
                    "was renewed after the last refusal: no new token for its 401s for %.0f s. "
                    "Check that the API accepts this user's tokens (project_id, its roles)",
                    f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}",
                    self.client_id,
                    f": {described.group(1)}" if described else "",
                    self._refusal_hold_until - now,
                )
            return False
        self._refusal_hold_until = now + REFUSAL_HOLD_OFF
        self._refusal_logged = False
        self.invalidate(token.value)
        return True

    # Getting tokens: async ----------------------------------------------------------------
    async def _acurrent(self) -> _Token:
        token, now = self._token, self._monotonic()
        if token is not None and now < token.usable_until:
            # Due for renewal but still good: renewed in the background, once per event loop.
            due = now >= token.renew_at and now >= self._renew_retry_at
            if due and self._flight.running(_FLIGHT) is None:
                self._flight.start(_FLIGHT, self._afetch).add_done_callback(self._renewal_done)
            return token
        self._raise_recent_failure(now)
        return await self._flight.run(_FLIGHT, self._afetch)

    def _renewal_done(self, renewing: asyncio.Future[Any]) -> None:
        failure = None if renewing.cancelled() else renewing.exception()
        if failure is not None:
            self._renewal_failed(failure)

    async def _afetch(self) -> _Token:
        return await self._run(self._fetch)

    # Getting tokens: sync -----------------------------------------------------------------
    def _current(self) -> _Token:
        token, now = self._token, self._monotonic()
        if token is not None and now < token.usable_until:
            # Due for renewal but still good: one thread renews, the others go on with it.
            due = now >= token.renew_at and now >= self._renew_retry_at
            if due and self._lock.acquire(blocking=False):
                try:
                    if self._token is token:
                        self._run_sync(self._fetch)
                except ZitadelError as failure:
                    self._renewal_failed(failure)
                finally:
                    self._lock.release()
            return self._token or token
        with self._lock:
            token, now = self._token, self._monotonic()
            if token is not None and now < token.usable_until:
                return token  # another thread fetched it while this one waited
            self._raise_recent_failure(now)
            return self._run_sync(self._fetch)

    # Bookkeeping ---------------------------------------------------------------------------
    def _fetch(self, endpoint: str, deadline: float) -> Flow[_Token]:
        """One token request, driven async (``_afetch``) or sync (``_current``) alike."""
        started = self._monotonic()  # the lifetime counts from here (conservative)
        try:
            issued = yield from self._request(endpoint, deadline, self._grant_form)
        except IdentityProviderError as failure:
            self._fetch_failed(failure)
            raise
        given = DEFAULT_LIFETIME if issued.expires_in is None else issued.expires_in
        lifetime = min(max(given, _MIN_LIFETIME), MAX_LIFETIME)
        token = _Token(
            value=issued.access_token,
            header="Bearer " + issued.access_token,
            renew_at=started + lifetime * (1 - self._renew_before),
            # Not sent in its last seconds: it could lapse on the way to the API.
            usable_until=started + lifetime - min(10.0, lifetime * 0.05),
        )
        self._token = token
        self._failure = None
        self._renew_retry_at = float("-inf")
        logger.debug(
            "got an access token for service user %s, valid %.0f s", self.client_id, lifetime
        )
        return token

    def _fetch_failed(self, failure: IdentityProviderError) -> None:
        """Remember a failure for a moment: a burst of requests after it does not become a
        burst of token requests (ZITADEL Cloud answers those with 429)."""
        hold = _HOLD_REJECTED if isinstance(failure, TokenRequestRejected) else _HOLD_UNAVAILABLE
        self._failure = failure
        self._failure_until = self._monotonic() + min(hold, failure.retry_after or hold)

    def _raise_recent_failure(self, now: float) -> None:
        failure = self._failure
        if failure is not None and now < self._failure_until:
            raise failure.with_traceback(None)  # the same error, a fresh traceback

    def _renewal_failed(self, failure: BaseException) -> None:
        retry_in = 5.0
        if isinstance(failure, IdentityProviderError) and failure.retry_after:
            retry_in = min(max(failure.retry_after, 1.0), 60.0)
        self._renew_retry_at = self._monotonic() + retry_in
        logger.warning(
            "renewing the access token of service user %s failed (%s); the current one is used "
            "while it lasts",
            self.client_id,
            failure,
        )


def _scope(project_id: str | Sequence[str] | None, *, roles: bool, extra: Iterable[str]) -> str:
    projects = [project_id] if isinstance(project_id, str) else list(project_id or ())
    scopes = ["openid"]
    for project in projects:
        if not isinstance(project, str) or not project.strip() or " " in project:
            raise ConfigurationError(
                f"project_id must be a project's resource id, got {shown(str(project))}"
            )
        scopes.append(AUDIENCE_SCOPE.format(project_id=project))
    if roles:
        scopes.append(ROLES_SCOPE)
    if isinstance(extra, str):
        raise ConfigurationError("scopes takes a list of scopes, not one string")
    for scope in extra:
        if not isinstance(scope, str) or not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", scope):
            raise ConfigurationError(
                f"scopes must be scope tokens (no spaces or quotes), got {shown(str(scope))}"
            )
        scopes.append(scope)
    return " ".join(dict.fromkeys(scopes))


def _retry_with_new_token(token: _Token, request: httpx.Request, response: httpx.Response) -> bool:
    """Whether the API that received ``token`` said it is invalid, and the request can be sent
    again.

    After redirects ``response`` answers the last request of the chain; httpx sends the token
    to another origin only on an upgrade to https, so a 401 from a request that did not carry
    it says nothing about it."""
    if response.status_code != 401 or response.request.headers.get("authorization") != token.header:
        return False
    challenges = response.headers.get_list("www-authenticate")
    if not any("bearer" in value.lower() and _INVALID_TOKEN.search(value) for value in challenges):
        return False
    # Bytes (or nothing) can be sent again; a stream was consumed by the first attempt.
    return isinstance(request.stream, httpx.ByteStream)
