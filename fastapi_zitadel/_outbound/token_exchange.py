"""``TokenExchange``: a caller's token exchanged for one to call a downstream API (RFC 8693).

An API that calls another API on behalf of its caller sends the caller's token to ZITADEL's
token endpoint (``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``,
``subject_token``, ``subject_token_type``) and gets a new token for the same user. As ZITADEL
implements it (``internal/api/oidc/token_exchange.go``; a beta feature to enable first):

* the exchanging party is an **OIDC application** with the Token Exchange grant type,
  authenticated by its key (``private_key_jwt``) or secret (``client_secret_basic``); API
  applications and service users cannot exchange;
* the subject token must be active and issued for that application's project (its
  ``aud``), like a token the application could introspect;
* ``audience`` and ``scope`` can only narrow: each requested audience must already be in the
  subject or actor token (else 400 ``invalid_target``), each scope too (``invalid_scope``);
* with an **actor token** (``actor=``: a ``ServiceAccountAuth`` whose user holds an
  impersonator role, its token with the application's project in its audience) the new token
  carries ``act: {"iss": ..., "sub": <actor>}``, which the downstream API reads as
  ``Principal.actor``. The instance must allow impersonation (its security settings).

Each exchange is one request to ZITADEL: keep the result while you use it (``expires_in``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

import httpx

from fastapi_zitadel._credentials.client_auth import PrivateKeyJwt
from fastapi_zitadel._credentials.key_file import KeyFileSource
from fastapi_zitadel._exceptions import ConfigurationError
from fastapi_zitadel._outbound.service_account import ServiceAccountAuth
from fastapi_zitadel._outbound.settings import outbound_settings
from fastapi_zitadel._outbound.token_endpoint import (
    ASSERTION_LIFETIME,
    TOKEN_EXCHANGE_GRANT,
    Caller,
    EndpointClient,
    ExchangedToken,
    Request,
    secret_caller,
)

__all__ = ["ACCESS_TOKEN_TYPE", "ExchangedToken", "TokenExchange"]

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 RFC 8693 §3


class TokenExchange(EndpointClient):
    """Exchanges tokens at ZITADEL's token endpoint as one OIDC application.

    ``key_file`` is the application's JSON key (``"type": "application"``), or ``client_id``
    with ``client_secret``. ``actor`` makes every exchange a delegation: the actor's own token
    (a service user with an impersonator role) is sent as ``actor_token``, and the new token
    says who acts (``act``). Close it when done (``async with`` / ``with``, or
    ``aclose()`` / ``close()``).
    """

    def __init__(
        self,
        issuer: str,
        *,
        key_file: KeyFileSource | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        actor: ServiceAccountAuth | None = None,
        timeout: float = 10.0,
        max_retries: int = 2,
        allow_insecure_http: bool = False,
        http_client: httpx.AsyncClient | None = None,
        sync_http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        settings = outbound_settings(
            "TokenExchange",
            "application",
            issuer=issuer,
            key_file=key_file,
            client_id=client_id,
            client_secret=client_secret,
            timeout=timeout,
            max_retries=max_retries,
            allow_insecure_http=allow_insecure_http,
        )
        self.actor = actor
        key = settings.key
        if key is None:
            caller, credentials = secret_caller(settings, "application", "client_secret_basic")
        else:
            signer = PrivateKeyJwt(
                key,
                audience=settings.issuer,
                lifetime=ASSERTION_LIFETIME,
                single_use=True,  # a fresh assertion per request: exchanges are rare
                clock=clock,
                monotonic=monotonic,
            )
            caller = Caller("application", signer.client_id, signer.key_id, "private_key_jwt")
            credentials = signer.credentials
        self._connect(settings, caller, credentials, http_client, sync_http_client, monotonic)

    async def aexchange(
        self,
        subject_token: str,
        *,
        audience: str | Sequence[str] = (),
        scopes: Iterable[str] = (),
        subject_token_type: str = ACCESS_TOKEN_TYPE,
    ) -> ExchangedToken:
        """A token for ``subject_token``'s user, narrowed to ``audience`` (project ids) and
        ``scopes`` when given (ZITADEL never widens them)."""
        actor = await self.actor.atoken() if self.actor is not None else None
        request = self._exchange(subject_token, subject_token_type, audience, scopes, actor)
        return await self._run(request)

    def exchange(
        self,
        subject_token: str,
        *,
        audience: str | Sequence[str] = (),
        scopes: Iterable[str] = (),
        subject_token_type: str = ACCESS_TOKEN_TYPE,
    ) -> ExchangedToken:
        """``aexchange`` for synchronous code."""
        actor = self.actor.token() if self.actor is not None else None
        request = self._exchange(subject_token, subject_token_type, audience, scopes, actor)
        return self._run_sync(request)

    def _exchange(
        self,
        subject_token: str,
        subject_token_type: str,
        audience: str | Sequence[str],
        scopes: Iterable[str],
        actor: str | None,
    ) -> Request[ExchangedToken]:
        """The exchange's request (``_run`` or ``_run_sync`` sends it); bad arguments are refused
        before anything is sent."""
        if not isinstance(subject_token, str) or not subject_token:
            raise ConfigurationError("subject_token must be the caller's token, got nothing")
        if isinstance(scopes, str):
            raise ConfigurationError("scopes takes a list of scopes, not one string")
        form: dict[str, str | list[str]] = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": subject_token,
            "subject_token_type": subject_token_type,
            "requested_token_type": ACCESS_TOKEN_TYPE,
        }
        audiences = [audience] if isinstance(audience, str) else list(audience)
        if audiences:
            form["audience"] = audiences  # repeated fields, as RFC 8693 §2.1 sends several
        scope = " ".join(scopes)
        if scope:
            form["scope"] = scope
        if actor is not None:
            form["actor_token"] = actor
            form["actor_token_type"] = ACCESS_TOKEN_TYPE
        return lambda endpoint, deadline: self._request(endpoint, deadline, form)
