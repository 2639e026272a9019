"""Compact JWS parsing shared by the JWT verifier and the events receiver: base64url segments
checked before they are decoded, and JSON parsed strictly (``NaN``/``Infinity`` refused,
nesting bounded by the recursion limit: a refusal, never a crash). No keys, no claims: the
header rules and the signature are ``_jws``'s, the claims the callers'
(``_pipeline.jwt_validator``, ``_events.receiver``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from fastapi_zitadel._exceptions import InvalidTokenError

__all__ = ["b64url_decode", "json_segment", "jwt_header"]

_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")  # empty: an unsigned token's signature


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every token: json.loads with an option builds a new one per call.
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def b64url_decode(segment: str) -> bytes:
    """One base64url segment's bytes; ``InvalidTokenError`` for anything but the alphabet."""
    # Checked first: the decoder would skip characters outside the alphabet, so that
    # ``sig!`` and ``sig`` would decode alike.
    if len(segment) % 4 == 1 or not _SEGMENT.fullmatch(segment):
        raise InvalidTokenError("the token is not valid base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):  # non-ASCII text is a ValueError too
        raise InvalidTokenError("the token is not valid base64url") from None


def json_segment(segment: str) -> Any:
    """One base64url segment parsed as JSON; ``InvalidTokenError`` if it is not."""
    try:
        return _JSON.decode(b64url_decode(segment).decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidTokenError("a part of the token is not valid JSON") from None


def jwt_header(token: str) -> dict[str, Any] | None:
    """The JOSE header of a JWT candidate, or ``None`` for anything else (opaque tokens): three
    base64url segments (the last may be empty: ``alg: none``, refused later), the first a JSON
    object with a string ``alg``. ZITADEL's opaque tokens may have dots; they never decode so."""
    if token.count(".") != 2 or not token.isascii():  # base64url is ASCII
        return None
    try:
        header = json_segment(token[: token.index(".")])
    except InvalidTokenError:
        return None
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        return None
    return header
