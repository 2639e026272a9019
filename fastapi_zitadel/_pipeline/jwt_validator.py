"""Verifying a JWT access token locally: the signature against the issuer's keys, then the
claims that make it valid for this API.

What is refused, and why (all 401 ``invalid_token``, decided without a network call unless a
new ``kid`` makes us fetch the JWKS):

* anything that is not three base64url segments whose header is a JSON object with an ``alg``
  (an opaque token: in local mode it needs introspection, in hybrid mode it gets one);
* a ``typ`` that is not ``JWT`` or ``at+jwt`` (RFC 9068; ``application/`` prefix optional,
  any case): checked here, before the rest of the header;
* whatever breaks ``_jws``'s header rules (``alg`` ``none``, HMAC or unsupported, not allowed
  by the key named by ``kid``; ``crit``; ``b64: false``; ``kid`` missing or over 256
  characters) or its signature check with the key found by ``kid`` in the issuer's JWKS only;
* a payload that is not a JSON object (parsed strictly by ``_jose``, under ``max_token_length``).

The claims (issuer, expiry, audience, the ID-token tells...) are ``checks.ClaimChecks``' for
both kinds of token; this module hands it the verified claims and whether the header declared
an access token (``typ: at+jwt``).

Why not ``jwt.decode`` (PyJWT parsing and verifying, with ``PyJWK`` keys)? Measured side by
side on the same 2048-bit RS256 tokens (2 cores, interleaved rounds, two runs): our header
check, signature check and payload parse, plus the ``Principal``, took 0.64x to 0.80x of a
bare ``jwt.decode``; the same steps with ``jwt.decode`` doing parse, signature and registered
claims 1.47x to 1.85x, past the cold-verification goal of 1.15x. PyJWT parses header and
payload again (we need the ``kid`` before there is a key), and its ``json.loads`` takes
``NaN`` and lets a ``RecursionError`` escape, to be guarded anyway. PyJWT still does the
cryptography: the keys (``jwt.algorithms``, in ``_idp.jwks``) and the signature check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi_zitadel._exceptions import InvalidTokenError
from fastapi_zitadel._idp.jwks import JwksCache
from fastapi_zitadel._jws import UnknownSigningKey, verified_payload

__all__ = ["OPAQUE_IN_LOCAL_MODE", "JwtValidator", "UnknownSigningKey"]

OPAQUE_IN_LOCAL_MODE = (
    "opaque tokens need introspection: validation='local' verifies JWT access tokens only"
)
_ACCESS_TOKEN_TYPES = frozenset({"jwt", "at+jwt"})


class JwtValidator:
    """Checks a JWT's header and signature against the issuer's JWKS, and parses its claims."""

    def __init__(self, *, keys: JwksCache) -> None:
        self._keys = keys

    async def verify(
        self, token: str, header: Mapping[str, Any], deadline: float
    ) -> tuple[dict[str, Any], bool]:
        """The verified claims of ``token`` (whose parsed header is ``header``; a ``typ`` not
        an access token's is refused first, the rest of the header is ``_jws.check_header``'s)
        and whether it declares an access token (``at+jwt``, RFC 9068 §2.1)."""
        typ = header.get("typ")
        if typ is not None:
            typ = typ.lower().removeprefix("application/") if isinstance(typ, str) else None
            if typ not in _ACCESS_TOKEN_TYPES:
                raise InvalidTokenError("the token's typ says it is not an access token")
        claims = await verified_payload(self._keys, token, header, deadline)
        if not isinstance(claims, dict):
            raise InvalidTokenError("the token's claims are not a JSON object")
        return claims, typ == "at+jwt"
