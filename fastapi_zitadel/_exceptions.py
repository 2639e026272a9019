"""Every way authentication can fail, as a named exception, and what the caller sees for it.

The class a failure is raised as *is* the decision about the response: each class carries its
status code, its RFC 6750 error code and challenge, and one method (``to_http``) turns any of
them into the HTTP response or WebSocket close FastAPI sends. The whole table:

    MissingTokenError        401  Bearer realm="..."                 (no error code, §3.1)
    InvalidTokenError        401  Bearer ..., error="invalid_token"
    InvalidRequestError      400  Bearer ..., error="invalid_request"
    InsufficientScopeError   403  Bearer ..., error="insufficient_scope", scope="..."
    IdentityProviderError    503  Retry-After: seconds
    SharedCacheUnavailable   503  Retry-After: seconds            (from invalidate() / clear())

The errors of calling other APIs (``ServiceAccountAuth``, ``TokenExchange``) are
``IdentityProviderError`` subclasses too: a route that cannot get a token for the API it calls
answers 503, never 401.

Messages never contain a token, an assertion or key material: they are safe to log."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from fastapi import HTTPException, WebSocketException, status
from starlette.requests import HTTPConnection

__all__ = [
    "AuthenticationError",
    "ClientCredentialsRejected",
    "ConfigurationError",
    "IdentityProviderError",
    "IdentityProviderUnavailable",
    "InsufficientScopeError",
    "InvalidRequestError",
    "InvalidTokenError",
    "IssuerMismatch",
    "KeyFileError",
    "MalformedClaimError",
    "MissingTokenError",
    "QueueTimeout",
    "SharedCacheUnavailable",
    "TokenEndpointUnavailable",
    "TokenExchangeRejected",
    "TokenRequestRejected",
    "TokenTypeUnsupported",
    "TransportFailure",
    "WrongKeyTypeError",
    "ZitadelError",
]

# RFC 6750 §3: error_description and scope allow %x20-21 / %x23-5B / %x5D-7E only.
_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_WS_REASON_LIMIT = 123  # bytes a WebSocket close reason may take


def _quoted(value: str) -> str:
    return '"' + _UNSAFE.sub("?", value) + '"'


class ZitadelError(Exception):
    """Base class of everything this library raises on purpose. At request time, ``to_http``
    gives the response for it, from the class's attributes: a 4xx carries a ``Bearer``
    challenge, a 503 ``Retry-After``. The base answers 500: every error raised while serving a
    request is one of the subclasses below."""

    status_code: int = status.HTTP_500_INTERNAL_SERVER_ERROR
    error: str | None = "server_error"
    # What the caller may read (``None``: the description). A 5xx says it is unavailable, not
    # why: the details (our client id, the IdP's error) are in our logs, for the operator.
    public_message: str | None = "authentication failed"
    scopes: tuple[str, ...] = ()  # named in the challenge (RFC 6750 §3)
    retry_after: float | None = None  # seconds; ``Retry-After`` says at least 1
    # Whether the challenge names the resource metadata (RFC 9728 §5.1) on other statuses
    # than 401 too: the MCP specification's 403 scope challenge does.
    challenge_names_metadata: bool = False

    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(description)

    def challenge(self, realm: str) -> str | None:
        """The ``WWW-Authenticate`` value (RFC 6750 §3), or ``None`` when the response carries
        none (5xx); no error code when no credentials were sent (§3.1)."""
        if self.status_code >= status.HTTP_500_INTERNAL_SERVER_ERROR:
            return None
        parts = [f"realm={_quoted(realm)}"]
        if self.error is not None:
            parts.append(f"error={_quoted(self.error)}")
            parts.append(f"error_description={_quoted(self.description)}")
        if self.scopes:
            parts.append(f"scope={_quoted(' '.join(self.scopes))}")
        return "Bearer " + ", ".join(parts)

    def public_description(self) -> str:
        """What the caller may read about the failure."""
        return self.description if self.public_message is None else self.public_message

    def headers(self, realm: str, resource_metadata: str | None = None) -> dict[str, str]:
        """The response's headers; ``resource_metadata`` (the URL of this API's RFC 9728
        metadata) is added to a 401's challenge (RFC 9728 §5.1)."""
        if self.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
            return {"Retry-After": str(max(1, math.ceil(self.retry_after or 1)))}
        challenge = self.challenge(realm)
        if challenge is None:
            return {}
        if resource_metadata is not None and (
            self.status_code == status.HTTP_401_UNAUTHORIZED or self.challenge_names_metadata
        ):
            challenge += f", resource_metadata={_quoted(resource_metadata)}"
        return {"WWW-Authenticate": challenge}

    def to_http(
        self, conn: HTTPConnection, realm: str, *, resource_metadata: str | None = None
    ) -> HTTPException | WebSocketException:
        """The exception FastAPI turns into this error's response (HTTP) or close (WebSocket)."""
        if conn.scope["type"] == "websocket":
            # 1008 (policy violation) for auth failures; 1013 (try again later) for outages,
            # so a client knows whether to retry.
            retry = self.status_code == status.HTTP_503_SERVICE_UNAVAILABLE
            code = status.WS_1013_TRY_AGAIN_LATER if retry else status.WS_1008_POLICY_VIOLATION
            reason = self.public_description().encode("utf-8")[:_WS_REASON_LIMIT]
            return WebSocketException(code=code, reason=reason.decode("utf-8", errors="ignore"))
        detail = {
            "error": self.error or "missing_token",
            "error_description": self.public_description(),
        }
        # Without metadata, called as before (subclasses may override headers(realm)).
        if resource_metadata is None:
            headers = self.headers(realm)
        else:
            headers = self.headers(realm, resource_metadata)
        return HTTPException(status_code=self.status_code, detail=detail, headers=headers or None)


class ConfigurationError(ZitadelError, ValueError):
    """The library was configured wrongly; raised at construction, never at request time."""


class KeyFileError(ConfigurationError):
    """A ZITADEL key file could not be used. Carries the source (a path, or a description such
    as ``JSON string``) and the field, so the operator knows which file and which entry to fix
    without the key itself being printed."""

    def __init__(self, source: str, problem: str, *, field: str | None = None) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = "" if field is None else f", field {field!r}"
        super().__init__(f"key file {source}{where}: {problem}")


class WrongKeyTypeError(KeyFileError):
    """A ZITADEL key file of the other kind: ZITADEL has two, and each works in one place only. An
    API application's key (``"type": "application"``) authenticates the API to the introspection
    endpoint (``ZitadelIntrospection``) and an application to the token exchange
    (``TokenExchange``); a service user's key (``"type": "serviceaccount"``) gets tokens for calling
    APIs (``ServiceAccountAuth``). ``key_type`` is the kind found, ``needed`` the kind this place
    takes."""

    def __init__(self, source: str, problem: str, *, key_type: str, needed: str) -> None:
        self.key_type = key_type
        self.needed = needed
        super().__init__(source, problem, field="type")


class AuthenticationError(ZitadelError):
    """The caller did not prove who they are (HTTP 401 or 400). ``error`` is the RFC 6750 error
    code, or ``None`` when no credentials were sent at all (RFC 6750 §3.1: no error code then)."""

    error: str | None = "invalid_token"
    status_code = status.HTTP_401_UNAUTHORIZED
    public_message = None


class MissingTokenError(AuthenticationError):
    """The request carried no bearer token."""

    error = None

    def __init__(self, description: str = "a bearer token is required") -> None:
        super().__init__(description)


class InvalidRequestError(AuthenticationError):
    """The request was malformed, for example two ``Authorization`` headers (HTTP 400)."""

    error = "invalid_request"
    status_code = status.HTTP_400_BAD_REQUEST


class InvalidTokenError(AuthenticationError):
    """The token is not valid: unknown, expired, revoked, for another audience, or malformed.
    ``detail`` is for the operator (logs at DEBUG, ``fastapi-zitadel introspect``), never for
    the caller: e.g. the token's audiences next to the accepted ones."""

    def __init__(self, description: str, *, detail: str | None = None) -> None:
        self.detail = detail
        super().__init__(description)


class InsufficientScopeError(ZitadelError):
    """The token is valid but lacks a required scope or role (HTTP 403). ``scopes`` are the ones
    the operation needs, reported back in ``WWW-Authenticate`` so a client knows what to ask for."""

    error = "insufficient_scope"
    status_code = status.HTTP_403_FORBIDDEN
    public_message = None

    def __init__(self, description: str, scopes: tuple[str, ...] = ()) -> None:
        self.scopes = scopes
        super().__init__(description)

    @classmethod
    def for_scopes(cls, scopes: Iterable[str], *, any_of: bool = False) -> InsufficientScopeError:
        """The error for a principal lacking all (or, with ``any_of``, every one) of ``scopes``."""
        needed = tuple(scopes)
        wanted = "one of the scopes" if any_of else "the scopes"
        return cls(f"requires {wanted}: {' '.join(needed)}", needed)

    @classmethod
    def for_roles(
        cls, roles: Iterable[str], *, org_id: str | None = None, any_of: bool = False
    ) -> InsufficientScopeError:
        """The error for a principal lacking project roles (in organization ``org_id``)."""
        where = f" in organization {org_id}" if org_id is not None else ""
        needed = tuple(roles)
        if len(needed) == 1:  # "all of the roles admin" reads like a mistake
            return cls(f"requires the role {needed[0]}{where}")
        wanted = "one of" if any_of else "all of"
        return cls(f"requires {wanted} the roles {', '.join(needed)}{where}")


class IdentityProviderError(ZitadelError):
    """Authentication could not be decided because of the identity provider (HTTP 503). Never
    a 401: telling a caller its token is bad when the fault is ours or the IdP's makes
    well-behaved clients throw away good tokens. ``retry_after`` is in seconds."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    error = "temporarily_unavailable"
    public_message = "authentication is temporarily unavailable"

    def __init__(self, description: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(description)


class IdentityProviderUnavailable(IdentityProviderError):
    """The IdP could not be reached, timed out, was overloaded, or answered nonsense."""


class TransportFailure(IdentityProviderUnavailable):
    """Connecting, sending or reading failed; always worth a retry."""


class TokenTypeUnsupported(IdentityProviderUnavailable):
    """The IdP answered that it does not introspect this kind of token (400
    ``unsupported_token_type``; oidc-provider says so for its JWT access tokens). The IdP is
    up, so it never counts towards opening the circuit breaker; the token cannot be confirmed
    by introspection, which is no verdict on it either (503, never 401)."""


class IssuerMismatch(IdentityProviderUnavailable):
    """The discovery document names another issuer: our configuration is wrong."""


class QueueTimeout(IdentityProviderUnavailable):
    """Our own cap on concurrent introspections kept this request waiting past its deadline.
    Not the IdP's fault: it does not count towards opening the circuit breaker."""


class ClientCredentialsRejected(IdentityProviderError):
    """The IdP rejected *our* client authentication: a server-side misconfiguration. ZITADEL
    answers 400 ``unauthorized_client`` (its docs promise 401 ``invalid_client``). Typical
    causes: the key was deleted or expired in ZITADEL, it belongs to another instance or
    application, or the machine clock is off by more than a second."""

    def __init__(
        self,
        description: str,
        *,
        error_code: str,
        status: int,
        client_id: str,
        key_id: str | None,
        hint: str = "",
    ) -> None:
        self.error_code = error_code
        self.status = status
        self.client_id = client_id
        self.key_id = key_id
        self.hint = hint
        """What to check, for the operator (naming the key id or client id, never a secret)."""
        super().__init__(description, retry_after=30.0)


class SharedCacheUnavailable(ZitadelError):
    """``invalidate()`` or ``clear()`` could not get the shared tier to confirm within the
    deadline (retries included). This process has already dropped its own copy; the shared
    tier, and so the other replicas, may still hold theirs until their ``cache_ttl`` runs out.
    Call it again, or make sure the token is revoked at the IdP (every replica then refuses it
    once its cached copy lapses)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    error = "temporarily_unavailable"
    public_message = "service temporarily unavailable"


class TokenEndpointUnavailable(IdentityProviderUnavailable):
    """ZITADEL's token endpoint could not be reached, timed out, or answered nonsense. Raised
    when getting a token to call another API; worth retrying later (``retry_after``)."""


class TokenRequestRejected(ClientCredentialsRejected):
    """The token endpoint refused to issue a token for *our* service user or application.
    ``client_id`` and ``key_id`` name the credential (never the secret), ``error_code`` is what
    ZITADEL answered and ``hint`` says what to check. A misconfiguration: retrying with the same
    credential gets the same answer."""


class TokenExchangeRejected(IdentityProviderError):
    """ZITADEL refused a token exchange (RFC 8693) although our credentials were accepted: the
    subject or actor token, the requested audience or scope, or the instance's settings (the
    token exchange feature, impersonation) did not allow it; ``error_code`` is ZITADEL's answer
    and ``hint`` what to check."""

    def __init__(self, description: str, *, error_code: str, status: int, hint: str = "") -> None:
        self.error_code = error_code
        self.status = status
        self.hint = hint
        super().__init__(description, retry_after=30.0)


class MalformedClaimError(ValueError):
    """A claim that decides validity has a shape no server should send (an IdP fault)."""

    def __init__(self, claim: str, expected: str) -> None:
        self.claim = claim
        self.expected = expected
        super().__init__(f"claim {claim!r} must be {expected}")
