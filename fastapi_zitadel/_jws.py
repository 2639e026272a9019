"""A compact JWS verified against the issuer's keys: one set of header rules and one signature
check, shared by the JWT verifier (``_pipeline.jwt_validator``) and the events receiver's
``PAYLOAD_TYPE_JWT`` bodies (``_events.receiver``). Both take attacker input that reaches the
JWKS cache, so both are held to the same rules before any key is looked up:

* ``alg`` one of ``SUPPORTED_ALGORITHMS`` (never ``none``, never HMAC: the key decides the
  algorithm, so an RSA public key can never be used as an HMAC secret);
* no ``crit`` (we understand no JWS extension: RFC 7515 §4.1.11 says refuse);
* ``b64`` absent or true (an unencoded payload, RFC 7797, is not what either caller signs);
* ``kid`` a string of 1 to ``MAX_KID_LENGTH`` characters (ZITADEL always sets it; the bound
  keeps a made-up id from costing more than a short key in the caches);
* the key is found by ``kid`` in the issuer's JWKS only (``jku``, ``x5u``, ``jwk`` and ``x5c``
  are ignored) and must allow ``alg``.

What only one caller checks stays there: ``typ`` (an access token's, RFC 9068) and the claims
in the JWT verifier; the event fields in the receiver. Base64url and JSON are ``_jose``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi_zitadel._exceptions import InvalidTokenError
from fastapi_zitadel._idp.jwks import MAX_KID_LENGTH, SUPPORTED_ALGORITHMS, JwksCache
from fastapi_zitadel._jose import b64url_decode, json_segment

__all__ = ["UnknownSigningKey", "check_header", "verified_payload"]


class UnknownSigningKey(InvalidTokenError):
    """No published key has the token's ``kid``, and the key set may not be fetched again yet:
    a 401 in local mode (a flood of made-up ``kid`` values must cost no more fetches), never
    remembered in the negative cache (a key the issuer has just started using is known after
    the next fetch). In hybrid mode the token is introspected instead."""


def check_header(header: Mapping[str, Any]) -> str:
    """The ``kid`` of a JOSE header both callers accept; ``InvalidTokenError`` otherwise.
    ``header`` is ``_jose.jwt_header``'s: a JSON object whose ``alg`` is a string."""
    alg = header["alg"]
    if alg not in SUPPORTED_ALGORITHMS:
        if alg.lower() == "none":
            raise InvalidTokenError("unsigned tokens (alg none) are never accepted")
        if alg.upper().startswith("HS"):
            raise InvalidTokenError("HMAC-signed tokens are never accepted")
        raise InvalidTokenError("the token's signing algorithm is not supported")
    if "crit" in header:
        raise InvalidTokenError("the token has critical header parameters this API does not know")
    if header.get("b64", True) is not True:
        raise InvalidTokenError("tokens with an unencoded payload (b64) are not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise InvalidTokenError("the token names no usable key id (kid)")
    return kid


async def verified_payload(
    keys: JwksCache, token: str, header: Mapping[str, Any], deadline: float
) -> Any:
    """The parsed payload of the compact JWS ``token`` (whose parsed header is ``header``):
    the header held to ``check_header`` first, then the signature verified with the issuer's
    key named by ``kid``. ``UnknownSigningKey`` when the issuer does not publish ``kid``,
    ``InvalidTokenError`` for anything else that fails."""
    kid = check_header(header)
    found = keys.cached(kid)
    if found is None:
        found = await keys.lookup(kid, deadline)
        if found is None:
            raise UnknownSigningKey("the token is signed by a key the issuer does not publish")
    alg = header["alg"]
    key = next((key for key in found if key.algorithm == alg), None)
    if key is None:
        raise InvalidTokenError("the token's algorithm is not one its key allows")
    signing_input, _, signature = token.rpartition(".")
    if not key.verify(signing_input.encode("ascii"), b64url_decode(signature)):
        raise InvalidTokenError("the token's signature does not verify")
    return json_segment(signing_input.partition(".")[2])
