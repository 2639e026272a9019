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
* claims: ``iss`` other than the issuer, exactly; no ``exp``, or ``exp`` past (with
  ``leeway``); ``nbf`` or ``iat`` in the future beyond ``leeway``; no configured audience
  in ``aud`` (a string or an array of strings);
* an ID token presented as an access token. ZITADEL signs both with the same web key and the
  same ``typ: JWT`` (zitadel/zitadel ``internal/api/oidc/sign/signer.go``), so the claims tell
  them apart: ``at_hash``, ``c_hash``, ``s_hash`` and ``nonce`` are ID-token claims (OpenID
  Connect Core §2, §3.3.2.11) that ZITADEL never puts in an access token, and an ``azp``
  that is the token's only audience is a client's ID token for itself. A token typed
  ``at+jwt`` declares itself an access token (RFC 9068 §2.1) and is taken as one. See
  docs/security.md for what ZITADEL's source says about each.

JSON is parsed with the standard library under the token length cap (``max_token_length``),
with ``NaN``/``Infinity`` refused and nesting bounded by the recursion limit (a refusal, never
a crash); times must be finite numbers.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from fastapi_zitadel._exceptions import InvalidTokenError
from fastapi_zitadel._idp.jwks import MAX_KID_LENGTH, SUPPORTED_ALGORITHMS, JwksCache
from fastapi_zitadel._metrics import Metrics

__all__ = [
    "ID_TOKEN_CLAIMS",
    "OPAQUE_IN_LOCAL_MODE",
    "JwtValidator",
    "UnknownSigningKey",
    "jwt_header",
]

OPAQUE_IN_LOCAL_MODE = (
    "opaque tokens need introspection: validation='local' verifies JWT access tokens only"
)
ID_TOKEN_CLAIMS = ("at_hash", "c_hash", "s_hash", "nonce")
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")  # empty: an unsigned token's signature
_ACCESS_TOKEN_TYPES = frozenset({"jwt", "at+jwt"})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every token: json.loads with an option builds a new one per call.
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def _decode(segment: str) -> bytes:
    # Checked first: the decoder would skip characters outside the alphabet, so that
    # ``sig!`` and ``sig`` would decode alike.
    if len(segment) % 4 == 1 or not _SEGMENT.fullmatch(segment):
        raise InvalidTokenError("the token is not valid base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):  # non-ASCII text is a ValueError too
        raise InvalidTokenError("the token is not valid base64url") from None


def _json(segment: str) -> Any:
    try:
        return _JSON.decode(_decode(segment).decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidTokenError("a part of the token is not valid JSON") from None


def jwt_header(token: str) -> dict[str, Any] | None:
    """The JOSE header of a JWT candidate, or ``None`` for anything else (opaque tokens).

    A candidate has three base64url segments (the last may be empty: ``alg: none``, refused
    later), and its first decodes to a JSON object with a string ``alg``. ZITADEL's opaque
    tokens may contain dots too; they never decode so.
    """
    if token.count(".") != 2 or not token.isascii():  # base64url is ASCII
        return None
    try:
        header = _json(token[: token.index(".")])
    except InvalidTokenError:
        return None
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        return None
    return header


def _time(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python, and a JSON true is no time; NaN and Infinity never parse.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTokenError(f"the token's {name} claim is not a number")
    if not -1e11 < value < 1e11:  # beyond year 5138: not a time
        raise InvalidTokenError(f"the token's {name} claim is not a representable time")
    return float(value)


def _audience(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise InvalidTokenError("the token's aud claim is not a string or an array of strings")


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
    """A ``Validator`` for JWT access tokens, verified against the issuer's JWKS."""

    def __init__(
        self,
        *,
        keys: JwksCache,
        issuer: str,
        audiences: Collection[str],
        leeway: float,
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audiences = frozenset(audiences)
        self._leeway = leeway
        self._clock = clock
        self._metrics = metrics

    def header(self, token: str) -> dict[str, Any] | None:
        """``jwt_header(token)``: the header of a JWT candidate, ``None`` for opaque tokens."""
        return jwt_header(token)

    async def validate(self, token: str, deadline: float) -> Mapping[str, Any]:
        """The verified claims; ``InvalidTokenError`` for anything else, opaque tokens too."""
        header = jwt_header(token)
        if header is None:
            raise InvalidTokenError(OPAQUE_IN_LOCAL_MODE)
        return await self.verify(token, header, deadline)

    async def verify(
        self, token: str, header: Mapping[str, Any], deadline: float
    ) -> dict[str, Any]:
        """The claims of ``token`` (whose parsed header is ``header``), once verified."""
        kid = _check_header(header)
        alg = header["alg"]
        keys = self._keys.cached(kid)
        if keys is None:
            keys = await self._keys.lookup(kid, deadline)
            if keys is None:
                raise UnknownSigningKey("the token is signed by a key the issuer does not publish")
        key = next((key for key in keys if key.algorithm == alg), None)
        if key is None:
            raise InvalidTokenError("the token's algorithm is not one its key allows")
        signing_input, _, signature = token.rpartition(".")
        if not key.verify(signing_input.encode("ascii"), _decode(signature)):
            raise InvalidTokenError("the token's signature does not verify")
        claims = _json(signing_input.partition(".")[2])
        if not isinstance(claims, dict):
            raise InvalidTokenError("the token's claims are not a JSON object")
        self._check_claims(claims, header)
        self._metrics.jwt_verified += 1
        return claims

    def _check_claims(self, claims: dict[str, Any], header: Mapping[str, Any]) -> None:
        if claims.get("iss") != self._issuer:
            raise InvalidTokenError("the token was issued by another issuer")
        now, leeway = self._clock(), self._leeway
        expires = _time(claims, "exp")
        if expires is None:
            raise InvalidTokenError("the token has no expiry (exp)")
        if expires + leeway <= now:
            raise InvalidTokenError("the token has expired")
        not_before = _time(claims, "nbf")
        if not_before is not None and not_before - leeway > now:
            raise InvalidTokenError("the token is not valid yet")
        issued = _time(claims, "iat")
        if issued is not None and issued - leeway > now:
            raise InvalidTokenError("the token was issued in the future")
        audience = _audience(claims.get("aud"))
        if self._audiences.isdisjoint(audience):
            raise InvalidTokenError("the token is not meant for this API (audience mismatch)")
        typ = header.get("typ")
        if isinstance(typ, str) and typ.lower().removeprefix("application/") == "at+jwt":
            return  # RFC 9068: an access token by its own declaration
        for claim in ID_TOKEN_CLAIMS:
            if claim in claims:
                raise InvalidTokenError(f"an ID token is not an access token (it has {claim})")
        azp = claims.get("azp")
        if isinstance(azp, str) and audience == (azp,):
            raise InvalidTokenError("an ID token is not an access token (azp is its only aud)")
