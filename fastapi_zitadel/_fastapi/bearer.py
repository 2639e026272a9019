"""Finding the bearer token in a request, per RFC 6750 §2.1. Strict on purpose: a request that
carries two tokens, or a token that is not a ``b64token``, is ambiguous, and an auth layer that
guesses which one counts invites confusion attacks. All of this runs before any network call, so
junk never reaches the identity provider."""

from __future__ import annotations

import re

from starlette.requests import HTTPConnection

from fastapi_zitadel._exceptions import InvalidRequestError, InvalidTokenError

__all__ = ["extract_bearer"]

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def extract_bearer(
    conn: HTTPConnection, *, max_length: int, allow_query: bool = False
) -> str | None:
    """The request's bearer token, or ``None`` when it carries none. ``allow_query`` accepts
    ``?access_token=`` (RFC 6750 §2.3); it is meant for WebSockets, whose browser API cannot set
    headers. Elsewhere a token in the URL ends up in access logs, so it is refused rather than
    ignored."""
    # This runs on every request: read the raw ASGI headers (names are lower-case bytes) rather
    # than building Starlette's Headers and QueryParams objects.
    headers = [value for name, value in conn.scope["headers"] if name == b"authorization"]
    if len(headers) > 1:
        raise InvalidRequestError("the request has more than one Authorization header")
    header_token = None
    if headers:
        scheme, _, credentials = headers[0].decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer":  # another scheme (Basic, say) carries no bearer token
            header_token = _checked(credentials.strip(" "), max_length)
    query = conn.scope.get("query_string", b"")
    if b"access_token" not in query and b"%" not in query:  # "%": an encoded name
        return header_token
    query_tokens = conn.query_params.getlist("access_token")
    if not query_tokens:
        return header_token
    if not allow_query:
        raise InvalidRequestError("send the token in the Authorization header, not in the URL")
    if header_token is not None or len(query_tokens) > 1:
        raise InvalidRequestError("the request carries more than one access token")
    return _checked(query_tokens[0], max_length)


def _checked(token: str, max_length: int) -> str:
    if len(token) > max_length:
        raise InvalidTokenError(f"the token is longer than {max_length} characters")
    if not _B64TOKEN.fullmatch(token):
        raise InvalidTokenError("the bearer token is malformed")
    return token
