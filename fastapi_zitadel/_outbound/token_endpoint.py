"""One request to ZITADEL's token endpoint, classified, retried within one deadline.

Shared by ``ServiceAccountAuth`` (a service user's own token: the JWT bearer grant or client
credentials) and ``TokenExchange`` (RFC 8693). Every answer becomes exactly one of: the issued
token, ``TokenRequestRejected`` (our credential refused: a misconfiguration),
``TokenExchangeRejected`` or ``TokenEndpointUnavailable``. Transport errors, 429 and 5xx are
retried within the deadline (``_http/retry.py``), each attempt with fresh credentials.

What ZITADEL answers (zitadel/zitadel ``internal/api/oidc``, zitadel/oidc ``pkg/op``): client
credentials with an unknown client id get 400 ``invalid_client``, with a wrong secret 400
``invalid_request`` (``Errors.User.Machine.Secret.Invalid``); a JWT bearer assertion it cannot
verify gets **500** ``server_error`` (``Errors.Internal``, zitadel/zitadel#12692, #9745) rather
than RFC 7523's 400 ``invalid_grant``, so a 500 that persists through the retries is reported as
a probable rejection of our key, with both readings in the message.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from fastapi_zitadel._credentials.client_auth import ClientCredentials, ClientSecretBasic
from fastapi_zitadel._exceptions import (
    IdentityProviderError,
    IdentityProviderUnavailable,
    TokenEndpointUnavailable,
    TokenExchangeRejected,
    TokenRequestRejected,
    TransportFailure,
)
from fastapi_zitadel._http.client import HttpClientProvider, JsonResponse
from fastapi_zitadel._http.retry import (
    Flow,
    Retries,
    Retryable,
    Send,
    retry_if_overloaded,
    run,
    run_sync,
)
from fastapi_zitadel._idp.discovery import Discovery, ProviderMetadata
from fastapi_zitadel._log import RateLimitedLog, logger
from fastapi_zitadel._outbound.settings import OutboundSettings

__all__ = [
    "ASSERTION_LIFETIME",
    "CLIENT_CREDENTIALS_GRANT",
    "JWT_BEARER_GRANT",
    "TOKEN_EXCHANGE_GRANT",
    "Caller",
    "EndpointClient",
    "ExchangedToken",
    "Request",
    "secret_caller",
]

ASSERTION_LIFETIME = 60.0  # seconds: an assertion is used once, at once
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"  # RFC 7523 §2.1
CLIENT_CREDENTIALS_GRANT = "client_credentials"  # RFC 6749 §4.4
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 RFC 8693

T = TypeVar("T")

_CREDENTIAL_ERRORS = frozenset({"invalid_client", "unauthorized_client", "invalid_grant"})
_REFUSAL_STATUSES = frozenset({400, 401, 403, 404})
# What may be shown of ZITADEL's error_description: short printable ASCII (its texts are i18n
# keys such as Errors.User.Machine.Secret.Invalid); anything else is left out of messages.
_SAFE_DESCRIPTION = re.compile(r"[\x20-\x7e]{1,120}")


@dataclass(frozen=True)
class Caller:
    """Who asks for tokens, as messages name it (never a secret). ``kind``: ``"service user"``
    or ``"application"``; ``method``: ``jwt-bearer``, ``client_credentials``,
    ``private_key_jwt`` or ``client_secret_basic``."""

    kind: str
    client_id: str
    key_id: str | None
    method: str

    def named(self) -> str:
        key = f", key id {self.key_id}" if self.key_id else ""
        return f"{self.kind} {self.client_id}{key}"


@dataclass(frozen=True)
class ExchangedToken(httpx.Auth):
    """A token from ``TokenExchange``; use it as ``auth=`` of an httpx request or client, or
    send ``access_token`` yourself. The token itself never appears in ``repr``. (Every
    successful answer of the token endpoint is read into one: RFC 6749 §5.1, RFC 8693
    §2.2.1.)"""

    access_token: str = field(repr=False)
    token_type: str
    issued_token_type: str | None
    expires_in: float | None
    scopes: frozenset[str]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {self.access_token}"
        yield request


Credentials = Callable[[], ClientCredentials]
"""Fresh form fields and headers that authenticate one attempt."""

Request = Callable[[str, float], Flow[T]]
"""A flow given the token endpoint and its deadline: what ``_run`` and ``_run_sync`` drive."""


_Client = TypeVar("_Client", bound="EndpointClient")


class EndpointClient:
    """A client of ZITADEL's token endpoint: who it is (``_connect``), its requests through
    pools of its own (async and sync), and their lifecycle: ``aclose()``/``close()`` or a
    ``with``."""

    issuer: str
    client_id: str
    key_id: str | None
    token_requests: int  # requests sent to the token endpoint, retries included

    def _connect(
        self,
        settings: OutboundSettings,
        caller: Caller,
        credentials: Credentials,
        http_client: httpx.AsyncClient | None,
        sync_http_client: httpx.Client | None,
        monotonic: Callable[[], float],
    ) -> None:
        """Be ``caller``, authenticated by ``credentials``, with pools and a discovery of its
        own for ``settings``."""
        self.issuer = settings.issuer
        self._timeout = settings.timeout
        self.client_id = caller.client_id
        self.key_id = caller.key_id
        self._caller = caller
        self._credentials = credentials
        self._monotonic = monotonic
        self._http = HttpClientProvider(
            http_client, timeout=settings.timeout, sync_client=sync_http_client
        )
        self._discovery = Discovery(
            settings.issuer,
            http=self._http,
            introspection_endpoint=None,
            timeout=settings.timeout,
            allow_insecure_http=settings.allow_insecure_http,
            monotonic=monotonic,
            required_endpoint="token_endpoint",
        )
        self._retries = Retries(
            max_retries=settings.max_retries,
            monotonic=monotonic,
            out_of_time=lambda: TokenEndpointUnavailable(
                f"token endpoint did not answer within {settings.timeout:.1f} s", retry_after=1.0
            ),
            name="token request",
            on_give_up=_log_unavailable,
        )
        self._rejection_log = RateLimitedLog(logging.ERROR, monotonic=monotonic)
        self.token_requests = 0

    def __repr__(self) -> str:
        key = f", key_id={self.key_id!r}" if self.key_id else ""
        return f"{type(self).__name__}({self.issuer!r}, client_id={self.client_id!r}{key})"

    async def aclose(self) -> None:
        """Cancel this event loop's discovery fetch still running, and close the connection
        pools to ZITADEL: this event loop's async one and the sync one."""
        await self._discovery.aclose()
        await self._http.aclose()

    def close(self) -> None:
        """Close the synchronous connection pool to ZITADEL."""
        self._http.close()

    async def __aenter__(self: _Client) -> _Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __enter__(self: _Client) -> _Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def _run(self, request: Request[T]) -> T:
        """Drive ``request`` with the async pool once discovery found the endpoint (one fetch
        for concurrent callers), within what is left of the deadline."""
        deadline = self._monotonic() + self._timeout
        try:
            metadata = await self._discovery.fetch(deadline)
        except IdentityProviderUnavailable as exc:
            raise _not_found(exc) from None
        return await run(request(_token_endpoint(metadata), deadline), self._http)

    def _run_sync(self, request: Request[T]) -> T:
        """``_run`` for synchronous code (the calling thread waits; one thread discovers)."""
        deadline = self._monotonic() + self._timeout
        try:
            metadata = self._discovery.fetch_sync(deadline)
        except IdentityProviderUnavailable as exc:
            raise _not_found(exc) from None
        endpoint = _token_endpoint(metadata)
        return run_sync(request(endpoint, deadline), self._http, self._monotonic)

    def _request(
        self, endpoint: str, deadline: float, form: Mapping[str, str | list[str]]
    ) -> Flow[ExchangedToken]:
        """The token for ``form`` (the grant's fields) from ``endpoint`` by ``deadline``, or
        one of the module's errors. A rejection is final at once, anything else once the
        retries run out."""

        def attempt(_number: int, remaining: float) -> Flow[ExchangedToken]:
            signed = self._credentials()
            request = self._http.request(
                "POST", endpoint, form={**form, **signed.form}, headers=signed.headers
            )
            self.token_requests += 1
            try:
                response = yield Send(request, remaining)
            except TransportFailure as failure:
                final = TokenEndpointUnavailable(failure.description, retry_after=1)
                raise Retryable(final) from None
            return _classify(response, str(form.get("grant_type", "")), self._caller)

        try:
            return (yield from self._retries.flow(deadline, attempt))
        except TokenRequestRejected as rejected:  # at once, or after the retries (a 500)
            key = f" (key id {rejected.key_id})" if rejected.key_id else ""
            self._rejection_log(
                "the token endpoint rejected %s (HTTP %d, error %r); every call that needs its "
                "token fails until this is fixed: %s",
                rejected.client_id + key,
                rejected.status,
                rejected.error_code,
                rejected.hint,
            )
            raise


def _classify(response: JsonResponse, grant: str, caller: Caller) -> ExchangedToken:
    status, data = response.status, response.data
    if status == 200:
        if response.problem is not None:
            raise Retryable(
                TokenEndpointUnavailable(f"token endpoint answer unusable: {response.problem}")
            )
        return _issued(data)
    error = data.get("error") if isinstance(data, dict) else None
    code = error if isinstance(error, str) and len(error) <= 64 else None
    given = data.get("error_description") if isinstance(data, dict) else None
    safe = isinstance(given, str) and _SAFE_DESCRIPTION.fullmatch(given) and "eyJ" not in given
    description = given if safe else None  # eyJ: a JWT's start
    shown = f" {code}" if code else ""

    def final(asked: float | None) -> IdentityProviderError:
        if status == 500 and code == "server_error" and grant == JWT_BEARER_GRANT:
            return _refusal(status, code, description, grant, caller)
        described = f"token endpoint answered HTTP {status}{shown}"
        return TokenEndpointUnavailable(described, retry_after=asked or 1.0)

    retry_if_overloaded(response, final)
    if status in _REFUSAL_STATUSES and code is not None:
        raise _refusal(status, code, description, grant, caller)
    raise TokenEndpointUnavailable(f"token request refused: HTTP {status}{shown}", retry_after=30.0)


def _token_endpoint(metadata: ProviderMetadata) -> str:
    if metadata.token_endpoint is None:  # Discovery refuses a document without one: fail closed
        raise TokenEndpointUnavailable("discovery document has no token_endpoint")
    return metadata.token_endpoint


def _not_found(exc: IdentityProviderUnavailable) -> TokenEndpointUnavailable:
    return TokenEndpointUnavailable(
        f"cannot find the token endpoint: {exc.description}", retry_after=exc.retry_after
    )


def _log_unavailable(final: IdentityProviderError) -> None:
    if not isinstance(final, TokenRequestRejected):  # logged as a rejection
        logger.warning("getting a token failed: %s", final.description)


def _issued(data: Any) -> ExchangedToken:
    if not isinstance(data, dict):
        raise Retryable(TokenEndpointUnavailable("token endpoint answer is not a JSON object"))
    token, token_type = data.get("access_token"), data.get("token_type")
    if not isinstance(token, str) or not token or not isinstance(token_type, str):
        raise Retryable(
            TokenEndpointUnavailable(
                "token endpoint answer has no access_token and token_type strings"
            )
        )
    if token_type.lower() != "bearer":
        shown = token_type if len(token_type) <= 20 else "(long value)"
        raise TokenEndpointUnavailable(
            f"token endpoint issued a token of type {shown!r}, not a bearer token"
        )
    expires_in = data.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float, type(None))):
        raise TokenEndpointUnavailable("token endpoint answer's expires_in is not a number")
    if expires_in is not None and expires_in < 0:
        raise TokenEndpointUnavailable("token endpoint answer's expires_in is negative")
    if expires_in is not None and not math.isfinite(expires_in):  # 1e400 reads as infinity
        raise TokenEndpointUnavailable("token endpoint answer's expires_in is not finite")
    scope, issued_type = data.get("scope"), data.get("issued_token_type")
    return ExchangedToken(
        access_token=token,
        token_type=token_type,
        issued_token_type=issued_type if isinstance(issued_type, str) else None,
        expires_in=None if expires_in is None else float(expires_in),
        scopes=frozenset(scope.split() if isinstance(scope, str) else ()),
    )


def _refusal(
    status: int, code: str, description: str | None, grant: str, caller: Caller
) -> IdentityProviderError:
    answer = f"{status} {code}" + (f": {description}" if description else "")
    exchange = grant == TOKEN_EXCHANGE_GRANT
    if exchange:
        ours = code in ("invalid_client", "unauthorized_client")
    else:  # ZITADEL says invalid_request for a wrong secret or an unknown service user
        ours = code in _CREDENTIAL_ERRORS or code == "invalid_request"
    if status == 500:  # the JWT bearer grant's server_error that persisted (_classify)
        return TokenRequestRejected(
            f"the token endpoint answered {answer} to the JWT bearer grant of {caller.named()}: "
            "ZITADEL answers so when it cannot verify the assertion (zitadel/zitadel#12692)",
            error_code=code,
            status=status,
            client_id=caller.client_id,
            key_id=caller.key_id,
            hint=_rejection_hint(caller, code, description)
            + "; if the key is right, ZITADEL itself is failing: check its status",
        )
    if ours:
        return TokenRequestRejected(
            f"the token endpoint rejected {caller.named()} ({answer})",
            error_code=code,
            status=status,
            client_id=caller.client_id,
            key_id=caller.key_id,
            hint=_rejection_hint(caller, code, description),
        )
    if exchange:
        return TokenExchangeRejected(
            f"the token exchange was refused ({answer})",
            error_code=code,
            status=status,
            hint=_exchange_hint(status, code, description),
        )
    if code == "invalid_scope":
        return TokenRequestRejected(
            f"the token endpoint refused the requested scope ({answer})",
            error_code=code,
            status=status,
            client_id=caller.client_id,
            key_id=caller.key_id,
            hint="request only scopes ZITADEL knows: openid, profile, email, "
            "urn:zitadel:iam:org:project:id:{projectId}:aud, urn:zitadel:iam:org:projects:roles",
        )
    return TokenEndpointUnavailable(f"token request refused ({answer})", retry_after=30.0)


def _rejection_hint(caller: Caller, code: str, description: str | None) -> str:
    if caller.method == "client_credentials":
        return (
            f"check the client id {caller.client_id!r} and its secret: with ZITADEL the client "
            "id of a service user's secret is its user name (console: Users > Service Users > "
            "the user > Actions > Generate Client Secret shows both once), the secret was not "
            "regenerated or removed, and the user is active"
        )
    if caller.method == "jwt-bearer":
        return (
            f"check that key id {caller.key_id} belongs to service user {caller.client_id} of "
            "this ZITADEL instance (console: Users > Service Users > the user > Keys), that the "
            "key was not deleted or expired, that the user is active, and that this machine's "
            "clock is accurate (ZITADEL allows 1 s of skew)"
        )
    if code == "unauthorized_client" and description and "grant_type" in description:
        return (
            f"enable the Token Exchange grant type on application {caller.client_id} (console: "
            "Projects > the project > the application > Grant types), and the instance's "
            "oidcTokenExchange feature"
        )
    return (
        f"check application {caller.client_id}'s credential (key id {caller.key_id}): it must "
        "be an OIDC application of this ZITADEL instance (API applications cannot exchange "
        "tokens) whose key or secret was not deleted, and this machine's clock must be accurate"
    )


def _exchange_hint(status: int, code: str, description: str | None) -> str:
    text = description or ""
    if "Impersonation" in text or "PolicyDisabled" in text:
        return (
            "impersonation is off: enable 'Allow Impersonation' in the instance's security "
            "settings, and give the actor an impersonator role (ORG_END_USER_IMPERSONATOR)"
        )
    if status == 403 or "PermissionDenied" in text:
        return (
            "the actor may not impersonate this user: give the actor an impersonator role "
            "(ORG_END_USER_IMPERSONATOR, or IAM_END_USER_IMPERSONATOR for every organization)"
        )
    if code == "invalid_target":
        return (
            "the audience asked for must already be in the subject or the actor token: ZITADEL "
            "never widens the audience in an exchange (request the project's audience scope "
            "when the token is obtained)"
        )
    if code == "invalid_scope":
        return "the scopes asked for must already be in the subject or the actor token"
    if code == "unsupported_grant_type":
        return "enable the instance's oidcTokenExchange feature (ZITADEL's feature API)"
    return (
        "the subject token (and the actor token) must be active and issued for this "
        "application's project (its audience), and of the subject_token_type sent"
    )


def secret_caller(settings: OutboundSettings, kind: str, method: str) -> tuple[Caller, Credentials]:
    """Who asks, and how, for a client without a key: ``client_secret_basic`` (the settings'
    credential rule: then its client id and secret are both set)."""
    assert settings.client_id is not None
    assert settings.client_secret is not None
    basic = ClientSecretBasic(settings.client_id, settings.client_secret)
    return Caller(kind, settings.client_id, None, method), basic.credentials
