"""One RFC 7662 introspection call, classified.

Every answer becomes exactly one of: the active claims, ``None`` for inactive,
``ClientCredentialsRejected`` (our own client authentication failed: our misconfiguration,
never the caller's fault) or ``IdentityProviderUnavailable``. Transport errors, 5xx and 429
are retried with jittered backoff, all inside one deadline (``retry.py``), so a slow IdP
costs a request at most ``timeout`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi_zitadel._credentials.client_auth import ClientAuthentication, ClientCredentials
from fastapi_zitadel._exceptions import (
    ClientCredentialsRejected,
    IdentityProviderUnavailable,
    TokenTypeUnsupported,
    TransportFailure,
)
from fastapi_zitadel._http.client import HttpClientProvider, JsonResponse, TimeoutFailure
from fastapi_zitadel._http.retry import Flow, Retries, Retryable, Send, retry_if_overloaded, run
from fastapi_zitadel._idp.discovery import Discovery
from fastapi_zitadel._log import RateLimitedLog

__all__ = ["IntrospectionClient", "OutOfTimeFailure"]

_CREDENTIAL_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
# How servers that refuse a reused client assertion say so: ZITADEL and most answer 400/401
# invalid_client or unauthorized_client, IdentityPython's example provider 400 invalid_request,
# SATOSA 403 unauthorized_client. Only for a *reused* assertion is any of these worth one more
# try with a fresh one.
_REUSE_STATUSES = frozenset({400, 401, 403})
_REUSE_ERRORS = _CREDENTIAL_ERRORS | {"invalid_request"}


class OutOfTimeFailure(IdentityProviderUnavailable):
    """The deadline ended the call before the IdP answered (no error answer, no refusal).
    Whether that is the IdP's failure depends on how much of the deadline the call had: one
    that waited in our own queue may have had too little (``IntrospectionValidator`` decides)."""


class _ReusedAssertionRejected(Exception):
    """A *reused* assertion was rejected: a fresh one may tell reuse from a bad key."""

    def __init__(self, rejected: ClientCredentialsRejected) -> None:
        self.rejected = rejected


class IntrospectionClient:
    def __init__(
        self,
        *,
        http: HttpClientProvider,
        discovery: Discovery,
        auth: ClientAuthentication,
        timeout: float,
        max_retries: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._discovery = discovery
        self._auth = auth
        self._timeout = timeout
        self._monotonic = monotonic
        self._retries = Retries(
            max_retries=max_retries,
            monotonic=monotonic,
            out_of_time=lambda: OutOfTimeFailure(
                f"identity provider did not answer within {timeout:.1f} s", retry_after=1.0
            ),
            name="introspection",
        )
        self._rejection_log = RateLimitedLog(logging.ERROR, monotonic=monotonic)
        self.calls = 0

    async def introspect(self, token: str, deadline: float | None = None) -> dict[str, Any] | None:
        """The active claims, or ``None`` when the token is inactive; ``deadline`` (on the
        monotonic clock) bounds everything, discovery included."""
        if deadline is None:
            deadline = self._monotonic() + self._timeout
        endpoint = await self._discovery.introspection_endpoint(deadline)
        try:
            try:
                return await self._with_retries(endpoint, token, deadline, fresh=False)
            except _ReusedAssertionRejected:
                # A server that forbids reusing a ``jti`` rejects a cached assertion as if it
                # were a bad one; a fresh assertion tells the two apart.
                claims = await self._with_retries(endpoint, token, deadline, fresh=True)
        except ClientCredentialsRejected as rejected:
            self._auth.rejected()
            self._rejection_log(
                "the identity provider rejected our client authentication (HTTP %d, error %r) "
                "for client %s, %s. Every request answers 503 until this is fixed: %s.",
                rejected.status,
                rejected.error_code,
                rejected.client_id,
                "a client secret" if rejected.key_id is None else f"key id {rejected.key_id}",
                rejected.hint,
            )
            raise
        self._auth.fresh_credentials_helped()
        return claims

    async def _with_retries(
        self, endpoint: str, token: str, deadline: float, *, fresh: bool
    ) -> dict[str, Any] | None:
        def attempt(number: int, remaining: float) -> Flow[dict[str, Any] | None]:
            # A retry signs afresh: a server that recorded the first attempt's ``jti`` before
            # failing would reject the same assertion as a replay.
            credentials = self._auth.credentials(fresh=fresh or number > 0)
            request = self._http.request(
                "POST",
                endpoint,
                form={"token": token, "token_type_hint": "access_token", **credentials.form},
                headers=credentials.headers,
            )
            self.calls += 1
            try:
                response = yield Send(request, remaining)
            except TransportFailure as failure:
                if isinstance(failure, TimeoutFailure):  # no answer in time: whose fault?
                    out_of_time = OutOfTimeFailure(failure.description, retry_after=1.0)
                    raise Retryable(out_of_time) from None
                raise Retryable(_unavailable(failure.description)) from None
            return self._classify(response, credentials)

        return await run(self._retries.flow(deadline, attempt), self._http)

    def _classify(
        self, response: JsonResponse, credentials: ClientCredentials
    ) -> dict[str, Any] | None:
        status = response.status
        if status == 200:
            data = response.data
            if response.problem is not None:
                raise IdentityProviderUnavailable(
                    f"introspection answer unusable: {response.problem}"
                )
            if not isinstance(data, dict) or not isinstance(data.get("active"), bool):
                raise IdentityProviderUnavailable(
                    "introspection answer is not a JSON object with a boolean 'active'"
                )
            return data if data["active"] else None
        described = f"identity provider answered HTTP {status}"
        retry_if_overloaded(response, lambda asked: _unavailable(described, asked))
        error = response.data.get("error") if isinstance(response.data, dict) else None
        if status == 400 and error == "unsupported_token_type":
            raise TokenTypeUnsupported(
                "the identity provider does not introspect this kind of token "
                "(HTTP 400 unsupported_token_type)",
                retry_after=30.0,
            )
        shown = f" {error}" if isinstance(error, str) and len(error) <= 64 else ""
        refused = IdentityProviderUnavailable(
            f"introspection request refused: HTTP {status}{shown}", retry_after=30.0
        )
        if status not in _REUSE_STATUSES or error not in _REUSE_ERRORS:
            raise refused
        rejected = ClientCredentialsRejected(
            f"the identity provider rejected our client credentials ({status} {error})",
            error_code=str(error),
            status=status,
            client_id=self._auth.client_id,
            key_id=self._auth.key_id,
            hint=self._auth.rejection_hint.format(key_id=self._auth.key_id),
        )
        if self._auth.possibly_reused(credentials):  # a 4xx that may be the server refusing reuse
            raise _ReusedAssertionRejected(rejected)
        raise rejected if error in _CREDENTIAL_ERRORS else refused


def _unavailable(description: str, retry_after: float | None = None) -> IdentityProviderUnavailable:
    """What a failed attempt means once no retry is left (1 s to wait when the server named
    no time)."""
    return IdentityProviderUnavailable(description, retry_after=retry_after or 1.0)
