"""Turning a failure into what the caller sees: status, RFC 6750 header, body, close code.

One table in one place, so the status of every failure can be read off here:

    MissingTokenError        401  Bearer realm="..."                 (no error code, §3.1)
    InvalidTokenError        401  Bearer ..., error="invalid_token"
    InvalidRequestError      400  Bearer ..., error="invalid_request"
    InsufficientScopeError   403  Bearer ..., error="insufficient_scope", scope="..."
    IdentityProviderError    503  Retry-After: seconds
"""

from __future__ import annotations

import math
import re

from fastapi import HTTPException, WebSocketException, status

from ._exceptions import (
    AuthenticationError,
    IdentityProviderError,
    InsufficientScopeError,
    ZitadelError,
)

# RFC 6750 §3: error_description and scope allow %x20-21 / %x23-5B / %x5D-7E only.
_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_WS_REASON_LIMIT = 123  # bytes a WebSocket close reason may take


def _quoted(value: str) -> str:
    return '"' + _UNSAFE.sub("?", value) + '"'


def www_authenticate(error: ZitadelError, realm: str) -> str | None:
    if isinstance(error, AuthenticationError):
        parts = [f"realm={_quoted(realm)}"]
        if error.error is not None:
            parts += [
                f"error={_quoted(error.error)}",
                f"error_description={_quoted(error.description)}",
            ]
        return "Bearer " + ", ".join(parts)
    if isinstance(error, InsufficientScopeError):
        parts = [
            f"realm={_quoted(realm)}",
            f"error={_quoted(error.error)}",
            f"error_description={_quoted(error.description)}",
        ]
        if error.scopes:
            parts.append(f"scope={_quoted(' '.join(error.scopes))}")
        return "Bearer " + ", ".join(parts)
    return None


def http_exception(error: ZitadelError, realm: str) -> HTTPException:
    """The ``HTTPException`` FastAPI turns into the response for ``error``."""
    headers: dict[str, str] = {}
    challenge = www_authenticate(error, realm)
    if challenge is not None:
        headers["WWW-Authenticate"] = challenge
    if isinstance(error, AuthenticationError):
        code, status_code = error.error or "missing_token", error.status_code
        description = error.description
    elif isinstance(error, InsufficientScopeError):
        code, status_code, description = error.error, error.status_code, error.description
    elif isinstance(error, IdentityProviderError):
        code, status_code = "temporarily_unavailable", status.HTTP_503_SERVICE_UNAVAILABLE
        # Callers learn that authentication is unavailable, not why: the details (our client
        # id, the IdP's error) are in our logs, where the operator can act on them.
        description = "authentication is temporarily unavailable"
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after or 1)))
    else:  # pragma: no cover - every ZitadelError raised at request time is handled above
        code, status_code, description = "server_error", 500, "authentication failed"
    detail = {"error": code, "error_description": description}
    return HTTPException(status_code=status_code, detail=detail, headers=headers or None)


def websocket_exception(error: ZitadelError) -> WebSocketException:
    """Close code 1008 (policy violation) for auth failures; 1013 (try again later) for IdP
    outages, so a client knows whether to retry."""
    if isinstance(error, IdentityProviderError):
        code, reason = status.WS_1013_TRY_AGAIN_LATER, "authentication is temporarily unavailable"
    else:
        code = status.WS_1008_POLICY_VIOLATION
        reason = getattr(error, "description", "authentication failed")
    encoded = reason.encode("utf-8")[:_WS_REASON_LIMIT]
    return WebSocketException(code=code, reason=encoded.decode("utf-8", errors="ignore"))
