"""Every way authentication can fail, as a named exception.

The FastAPI layer maps each class to one status code and one ``WWW-Authenticate`` header, so
the class a failure is raised as *is* the decision about what the caller sees. Messages never
contain a token, an assertion or key material: they are safe to log.
"""

from __future__ import annotations


class ZitadelError(Exception):
    """Base class of everything this library raises on purpose."""


class ConfigurationError(ZitadelError, ValueError):
    """The library was configured wrongly; raised at construction, never at request time."""


class KeyFileError(ConfigurationError):
    """A ZITADEL key file could not be used.

    Carries the source (a path, or a description such as ``JSON string``) and the field, so the
    operator knows which file and which entry to fix without the key itself being printed.
    """

    def __init__(self, source: str, problem: str, *, field: str | None = None) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f"key file {source}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


class AuthenticationError(ZitadelError):
    """The caller did not prove who they are (HTTP 401 or 400).

    ``error`` is the RFC 6750 error code, or ``None`` when no credentials were sent at all
    (RFC 6750 §3.1 says to send no error code then).
    """

    error: str | None = "invalid_token"
    status_code: int = 401

    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(description)


class MissingTokenError(AuthenticationError):
    """The request carried no bearer token."""

    error = None


class InvalidRequestError(AuthenticationError):
    """The request was malformed, for example two ``Authorization`` headers (HTTP 400)."""

    error = "invalid_request"
    status_code = 400


class InvalidTokenError(AuthenticationError):
    """The token is not valid: unknown, expired, revoked, for another audience, or malformed."""


class InsufficientScopeError(ZitadelError):
    """The token is valid but lacks a required scope or role (HTTP 403).

    ``scopes`` are the ones the operation needs, reported back in ``WWW-Authenticate`` so a
    client knows what to ask for.
    """

    error = "insufficient_scope"
    status_code = 403

    def __init__(self, description: str, scopes: tuple[str, ...] = ()) -> None:
        self.description = description
        self.scopes = scopes
        super().__init__(description)


class IdentityProviderError(ZitadelError):
    """Authentication could not be decided because of the identity provider (HTTP 503).

    Never a 401: telling a caller its token is bad when the fault is ours or the IdP's makes
    well-behaved clients throw away good tokens. ``retry_after`` is in seconds.
    """

    status_code = 503

    def __init__(self, description: str, *, retry_after: float | None = None) -> None:
        self.description = description
        self.retry_after = retry_after
        super().__init__(description)


class IdentityProviderUnavailable(IdentityProviderError):
    """The IdP could not be reached, timed out, was overloaded, or answered nonsense."""


class ClientCredentialsRejected(IdentityProviderError):
    """The IdP rejected *our* client authentication: a server-side misconfiguration.

    ZITADEL answers 400 ``unauthorized_client`` (its docs promise 401 ``invalid_client``).
    Typical causes: the key was deleted or expired in ZITADEL, it belongs to another instance
    or application, or the machine clock is off by more than a second.
    """

    def __init__(
        self,
        description: str,
        *,
        error_code: str,
        status: int,
        client_id: str,
        key_id: str | None,
    ) -> None:
        self.error_code = error_code
        self.status = status
        self.client_id = client_id
        self.key_id = key_id
        super().__init__(description, retry_after=30.0)
