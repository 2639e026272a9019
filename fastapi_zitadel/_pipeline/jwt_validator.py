"""Verifying a JWT access token locally: the signature against the issuer's keys, then the
claims that make it valid for this API.

What is refused, and why (all 401 ``invalid_token``, decided without a network call unless a
new ``kid`` makes us fetch the JWKS):

* anything that is not three base64url segments whose header is a JSON object with an ``alg``
  (an opaque token: in local mode it needs introspection, in hybrid mode it gets one);
* ``alg`` ``none``, HMAC (``HS*``) and anything else not in ``SUPPORTED_ALGORITHMS``; an
  ``alg`` that the key named by ``kid`` does not allow (the key decides, not the token, so an
  RSA public key can never be used as an HMAC secret);
* a ``crit`` header (we understand no extension), ``b64: false``, a ``typ`` that is not
  ``JWT`` or ``at+jwt`` (RFC 9068; ``application/`` prefix optional, any case);
* a signature that does not verify, with the key found by ``kid`` in the issuer's JWKS only
  (``jku``, ``x5u``, ``jwk`` and ``x5c`` headers are ignored);
* a payload that is not a JSON object.

The claims (issuer, expiry, audience, the ID-token tells...) are checked in one place for
both kinds of token, ``checks.ClaimChecks``; this module hands it the verified claims and
whether the header declared an access token (``typ: at+jwt``).

JSON is parsed with the standard library under the token length cap (``max_token_length``),
with ``NaN``/``Infinity`` refused and nesting bounded by the recursion limit (a refusal, never
a crash).

Why not ``jwt.decode`` (PyJWT parsing and verifying, with ``PyJWK`` keys)? Measured side by
side on the same 2048-bit RS256 tokens (2 cores, interleaved rounds, two runs): our header
check, signature check and one parse of the payload, plus the ``Principal``, took 0.64x to
0.80x of a bare ``jwt.decode``; the same steps with ``jwt.decode`` doing the parse, the
signature and the registered claims took 1.47x to 1.85x, past the cold-verification goal of
1.15x. PyJWT parses the header and payload again after we did (we need the header's ``kid``
before there is a key), and its ``json.loads`` takes ``NaN`` and lets a ``RecursionError``
escape, which we would have to guard around it anyway. PyJWT still does the part that is
cryptography: the keys (``jwt.algorithms``, in ``_idp.jwks``) and the signature check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi_zitadel._exceptions import InvalidTokenError
from fastapi_zitadel._idp.jwks import MAX_KID_LENGTH, SUPPORTED_ALGORITHMS, JwksCache
from fastapi_zitadel._jose import b64url_decode, json_segment

__all__ = [
    "OPAQUE_IN_LOCAL_MODE",
    "JwtValidator",
    "UnknownSigningKey",
    "declares_access_token",
    "signed_payload",
]

OPAQUE_IN_LOCAL_MODE = (
    "opaque tokens need introspection: validation='local' verifies JWT access tokens only"
)
_ACCESS_TOKEN_TYPES = frozenset({"jwt", "at+jwt"})
_AT_JWT = "at+jwt"


def _check_header(header: Mapping[str, Any]) -> str:
    """The ``kid`` of a header we accept; raises ``InvalidTokenError`` otherwise."""
    alg = header["alg"]
    if alg not in SUPPORTED_ALGORITHMS:
        if alg.lower() == "none":
            raise InvalidTokenError("unsigned tokens (alg none) are never accepted")
        if alg.upper().startswith("HS"):
            raise InvalidTokenError("HMAC-signed tokens are never accepted")
        raise InvalidTokenError("the token's signing algorithm is not supported")
    typ = header.get("typ")
    if typ is not None and (
        not isinstance(typ, str)
        or typ.lower().removeprefix("application/") not in _ACCESS_TOKEN_TYPES
    ):
        raise InvalidTokenError("the token's typ says it is not an access token")
    if "crit" in header:
        raise InvalidTokenError("the token has critical header parameters this API does not know")
    if header.get("b64", True) is not True:
        raise InvalidTokenError("tokens with an unencoded payload (b64) are not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise InvalidTokenError("the token names no usable key id (kid)")
    return kid


class UnknownSigningKey(InvalidTokenError):
    """No published key has the token's ``kid``, and the key set may not be fetched again yet.

    A 401 in local mode (a flood of made-up ``kid`` values must cost no more fetches), but
    never remembered in the negative cache: a key the issuer has just started using is known
    after the next fetch. In hybrid mode the token is introspected instead.
    """


class JwtValidator:
    """Checks a JWT's header and signature against the issuer's JWKS, and parses its claims."""

    def __init__(self, *, keys: JwksCache) -> None:
        self._keys = keys

    async def verify(
        self, token: str, header: Mapping[str, Any], deadline: float
    ) -> dict[str, Any]:
        """The claims of ``token`` (whose parsed header is ``header``), its signature verified;
        the claims themselves are ``ClaimChecks``' to judge."""
        claims = await signed_payload(
            self._keys, token, _check_header(header), header["alg"], deadline
        )
        if not isinstance(claims, dict):
            raise InvalidTokenError("the token's claims are not a JSON object")
        return claims


async def signed_payload(keys: JwksCache, token: str, kid: str, alg: str, deadline: float) -> Any:
    """The parsed payload of the compact JWS ``token``, its signature verified with the
    issuer's key ``kid`` for ``alg`` (the header already checked by the caller): shared with
    the events receiver's JWT payload type. ``UnknownSigningKey`` when the issuer does not
    publish ``kid``, ``InvalidTokenError`` for anything else that fails."""
    found = keys.cached(kid)
    if found is None:
        found = await keys.lookup(kid, deadline)
        if found is None:
            raise UnknownSigningKey("the token is signed by a key the issuer does not publish")
    key = next((key for key in found if key.algorithm == alg), None)
    if key is None:
        raise InvalidTokenError("the token's algorithm is not one its key allows")
    signing_input, _, signature = token.rpartition(".")
    if not key.verify(signing_input.encode("ascii"), b64url_decode(signature)):
        raise InvalidTokenError("the token's signature does not verify")
    return json_segment(signing_input.partition(".")[2])


def declares_access_token(header: Mapping[str, Any]) -> bool:
    """``typ: at+jwt``: an access token by its own declaration (RFC 9068 §2.1)."""
    typ = header.get("typ")
    return isinstance(typ, str) and typ.lower().removeprefix("application/") == (_AT_JWT)
