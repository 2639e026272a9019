"""The issuer's signing keys (JWKS), for verifying JWT access tokens locally.

Keys come only from the discovery document's ``jwks_uri``, fetched with our own HTTP client
(bodies capped at 1 MiB, decompressed under the cap); nothing in a token (``jku``, ``x5u``, an
embedded ``jwk`` or ``x5c``) ever adds a key or a URL to fetch. Each key gets the algorithms
its JWK allows by its type, curve and ``alg`` (never by a token): RSA RS256/384/512, and
PS256/384/512 only when its ``alg`` says so; EC the ES algorithm of its curve; OKP (Ed25519,
Ed448) EdDSA. HMAC keys (``oct``), encryption keys, keys with private material, RSA keys under
2048 bits and JWKs that do not parse are skipped.

When the keys are fetched:
* on first use, and when a token names a ``kid`` we do not know, throttled: after a successful
  fetch the next one for an unknown ``kid`` waits 30 seconds (a flood of made-up ``kid``
  values costs one fetch per interval; its tokens are refused, 401); after a failed one 1, 2,
  4... seconds up to that;
* in the background once the set is older than the answer's ``Cache-Control: max-age``
  (clamped to 1 minute .. 1 hour; 5 minutes without one), while our keys keep working. A
  refresh that no longer lists a key drops it: tokens it signed stop verifying.

A fetch runs on the one retry loop (``retry.Retries``) with no retry: the pacing above is the
retry. A failed fetch (unreachable, an error status, not JSON, too large, no usable key, more
than ``MAX_KEYS`` keys) never throws away our keys: a token whose ``kid`` we know keeps
verifying while ZITADEL is down; only one with an unknown ``kid`` cannot be decided (503 with
``Retry-After``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, RSAPSSAlgorithm

from fastapi_zitadel._concurrency.tasks import KeyedTasks, joined
from fastapi_zitadel._exceptions import IdentityProviderUnavailable
from fastapi_zitadel._http.client import HttpClientProvider
from fastapi_zitadel._http.retry import Retries, get_json, run
from fastapi_zitadel._idp.discovery import Discovery
from fastapi_zitadel._log import RateLimitedLog, logger

__all__ = ["MAX_KEYS", "MAX_KID_LENGTH", "SUPPORTED_ALGORITHMS", "JwksCache", "parse_jwks"]

MAX_KEYS = 100  # ZITADEL publishes a handful; a set this large is not a key set we use
MAX_KID_LENGTH = 256
_REFRESH_INTERVAL = 30.0
_MIN_MAX_AGE, _DEFAULT_MAX_AGE, _MAX_MAX_AGE = 60.0, 300.0, 3600.0
_FIRST_BACKOFF = 1.0
_MIN_RSA_BITS = 2048
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})")
_NO_CACHE = re.compile(r"(?:^|[,\s])(?:no-cache|no-store)(?:$|[,\s=])")
# JWK members that hold private key material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_SIGNERS: dict[str, Any] = {
    "RS256": RSAAlgorithm(RSAAlgorithm.SHA256),
    "RS384": RSAAlgorithm(RSAAlgorithm.SHA384),
    "RS512": RSAAlgorithm(RSAAlgorithm.SHA512),
    "PS256": RSAPSSAlgorithm(RSAPSSAlgorithm.SHA256),
    "PS384": RSAPSSAlgorithm(RSAPSSAlgorithm.SHA384),
    "PS512": RSAPSSAlgorithm(RSAPSSAlgorithm.SHA512),
    "ES256": ECAlgorithm(ECAlgorithm.SHA256),
    "ES384": ECAlgorithm(ECAlgorithm.SHA384),
    "ES512": ECAlgorithm(ECAlgorithm.SHA512),
    "EdDSA": OKPAlgorithm(),
}
SUPPORTED_ALGORITHMS = frozenset(_SIGNERS)
"""The algorithms of ZITADEL's web keys (and PS*); never ``none``, never HMAC."""

_RS = ("RS256", "RS384", "RS512")
_EC_CURVES = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_EC_TYPES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
_OKP_CURVES = frozenset({"Ed25519", "Ed448"})


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key with one algorithm it may verify."""

    kid: str
    algorithm: str
    key: Any
    description: str  # e.g. "RSA 2048 bits", "EC P-256": for the command line

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        return bool(_SIGNERS[self.algorithm].verify(signing_input, self.key, signature))


Keys = Mapping[str, tuple[VerificationKey, ...]]


def _algorithms(jwk: Mapping[str, Any]) -> tuple[str, ...]:
    """What the JWK allows, from its own ``kty``, ``crv`` and ``alg``."""
    kty, alg, crv = jwk.get("kty"), jwk.get("alg"), jwk.get("crv")
    if kty == "RSA":
        if alg is None:
            return _RS
        usable = isinstance(alg, str) and alg in _SIGNERS and alg[:2] in ("RS", "PS")
        return (alg,) if usable else ()
    if kty == "EC":
        expected = _EC_CURVES.get(crv) if isinstance(crv, str) else None
        return (expected,) if expected is not None and alg in (None, expected) else ()
    if kty == "OKP":
        return ("EdDSA",) if crv in _OKP_CURVES and alg in (None, "EdDSA") else ()
    return ()  # "oct" (HMAC secrets) and anything else: never


class _UnusableKey(Exception):
    """A JWK that parses but is not a public key for its algorithm (skipped, never raised)."""


def _public_key(jwk: Mapping[str, Any], algorithm: str) -> tuple[Any, str]:
    """The parsed public key and its description; ``_UnusableKey`` (or whatever the JWK
    parser raises) if unusable."""
    data = dict(jwk)
    key: Any
    if algorithm.startswith(("RS", "PS")):
        key = RSAAlgorithm.from_jwk(data)
        if not isinstance(key, rsa.RSAPublicKey):
            raise _UnusableKey("not an RSA public key")
        if key.key_size < _MIN_RSA_BITS:
            raise _UnusableKey(f"RSA key of {key.key_size} bits is too weak")
        return key, f"RSA {key.key_size} bits"
    if algorithm.startswith("ES"):
        key = ECAlgorithm.from_jwk(data)
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, _EC_TYPES[algorithm]
        ):
            raise _UnusableKey("not an EC public key on the curve of its algorithm")
        return key, f"EC {jwk.get('crv')}"
    key = OKPAlgorithm.from_jwk(data)
    if not isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise _UnusableKey("not an Ed25519 or Ed448 public key")
    return key, f"OKP {jwk.get('crv')}"


def parse_jwks(data: Any) -> tuple[dict[str, tuple[VerificationKey, ...]], int]:
    """The usable keys by ``kid``, and how many JWKs were skipped; raises
    ``IdentityProviderUnavailable`` for a document that is not a key set we use."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise IdentityProviderUnavailable("the JWKS is not a JSON object with a 'keys' array")
    entries = data["keys"]
    if len(entries) > MAX_KEYS:
        raise IdentityProviderUnavailable(
            f"the JWKS lists {len(entries)} keys, more than the {MAX_KEYS} we accept"
        )
    keys: dict[str, list[VerificationKey]] = {}
    skipped = 0
    for jwk in entries:
        found = _usable(jwk)
        if not found:
            skipped += 1
        for key in found:
            keys.setdefault(key.kid, []).append(key)
    if not keys:
        raise IdentityProviderUnavailable("the JWKS has no key we can verify signatures with")
    return {kid: tuple(found) for kid, found in keys.items()}, skipped


def _usable(jwk: Any) -> list[VerificationKey]:
    if not isinstance(jwk, dict):
        return []
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        return []
    if jwk.get("use", "sig") != "sig":
        return []
    operations = jwk.get("key_ops")
    if operations is not None and (not isinstance(operations, list) or "verify" not in operations):
        return []
    if jwk.get("kty") != "oct" and _PRIVATE_MEMBERS & jwk.keys():
        logger.error(
            "the JWKS publishes private key material for key %r: that key is not used; "
            "the identity provider's key set is misconfigured",
            kid,
        )
        return []
    found = []
    for algorithm in _algorithms(jwk):
        try:
            key, description = _public_key(jwk, algorithm)
        except Exception as exc:  # a malformed JWK, whatever the library makes of it
            logger.debug("JWKS key %r skipped for %s: %s", kid, algorithm, type(exc).__name__)
            continue
        found.append(VerificationKey(kid, algorithm, key, description))
    return found


def _max_age(cache_control: str | None) -> float:
    if not cache_control:
        return _DEFAULT_MAX_AGE
    text = cache_control.lower()
    if _NO_CACHE.search(text):
        return _MIN_MAX_AGE
    match = _MAX_AGE.search(text)
    if match is None:
        return _DEFAULT_MAX_AGE
    return min(max(float(match[1]), _MIN_MAX_AGE), _MAX_MAX_AGE)


class JwksCache:
    def __init__(
        self,
        *,
        http: HttpClientProvider,
        discovery: Discovery,
        timeout: float,
        on_keys_removed: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._discovery = discovery
        self._timeout = timeout
        self._on_keys_removed = on_keys_removed
        self._monotonic = monotonic
        self._keys: Keys = {}
        self._loaded = False
        self._stale_at = float("-inf")  # refresh in the background from then on
        self._next_fetch_at = float("-inf")  # no fetch before (the throttle)
        self._failure: str | None = None  # why the last fetch failed; None after a success
        self._failures = 0
        self._tasks: KeyedTasks[None] = KeyedTasks()
        self._failure_log = RateLimitedLog(logging.WARNING, monotonic=monotonic)
        self._retries = Retries(
            max_retries=0,
            monotonic=monotonic,
            out_of_time=lambda: IdentityProviderUnavailable("no time left to fetch the JWKS"),
        )
        self.fetches = 0

    @property
    def in_flight(self) -> int:
        """Fetches running now (0 or 1)."""
        return self._tasks.in_flight()

    def cached(self, kid: str) -> tuple[VerificationKey, ...] | None:
        """The keys for ``kid`` we have; starts a background refresh when they are old."""
        found = self._keys.get(kid)
        if found is not None:
            now = self._monotonic()
            if now >= self._stale_at and now >= self._next_fetch_at:
                self._tasks.start("jwks", self._fetch)
        return found

    async def lookup(self, kid: str, deadline: float) -> tuple[VerificationKey, ...] | None:
        """The keys for ``kid``, fetching the JWKS first if ``kid`` is new (and a fetch is
        allowed now); ``None`` when the issuer does not publish it. Raises
        ``IdentityProviderUnavailable`` when the JWKS cannot be fetched: then an unknown key
        cannot be told from a new one."""
        found = self.cached(kid)
        if found is not None:
            return found
        task = self._tasks.running("jwks")
        if task is None:
            wait_for = self._next_fetch_at - self._monotonic()
            if wait_for > 0:
                if self._failure is not None or not self._loaded:
                    raise IdentityProviderUnavailable(
                        f"the JWKS is unavailable ({self._failure or 'not fetched yet'})",
                        retry_after=wait_for,
                    )
                return None  # fetched moments ago, without this kid: a made-up one
            task = self._tasks.start("jwks", self._fetch)
        await joined(task, deadline - self._monotonic(), what="the JWKS fetch")
        found = self._keys.get(kid)
        if found is None and self._failure is not None:
            retry_after = max(self._next_fetch_at - self._monotonic(), 1.0)
            raise IdentityProviderUnavailable(
                f"the JWKS is unavailable ({self._failure})", retry_after=retry_after
            )
        return found

    async def refresh(self) -> Keys:
        """Fetch the JWKS now (or join the fetch running); the keys we then have."""
        task = self._tasks.running("jwks") or self._tasks.start("jwks", self._fetch)
        await joined(task, self._timeout + 1.0, what="the JWKS fetch")
        if self._failure is not None:
            raise IdentityProviderUnavailable(f"the JWKS is unavailable ({self._failure})")
        return self._keys

    async def aclose(self) -> None:
        await self._tasks.aclose()

    async def _fetch(self) -> None:
        """One fetch; never raises: the outcome is in ``_keys`` and ``_failure``."""
        started = self._monotonic()
        self._next_fetch_at = started + _REFRESH_INTERVAL
        self.fetches += 1
        deadline = started + self._timeout
        try:
            metadata = await self._discovery.fetch(deadline)
            url = metadata.jwks_uri
            if url is None:
                raise IdentityProviderUnavailable("the discovery document has no jwks_uri")
            download = self._retries.flow(
                deadline, lambda _, left: get_json(self._http, url, left, "the JWKS")
            )
            response = await run(download, self._http)
            if response.problem is not None:
                raise IdentityProviderUnavailable(f"the JWKS is unusable: {response.problem}")
            keys, skipped = parse_jwks(response.data)
        except IdentityProviderUnavailable as exc:
            self._failure = exc.description
            self._failures += 1
            backoff = min(_FIRST_BACKOFF * 2 ** (self._failures - 1), _REFRESH_INTERVAL)
            self._next_fetch_at = started + backoff
            self._failure_log(
                "fetching the JWKS failed (%s): keys we have keep verifying, tokens signed by "
                "others answer 503 until it works again",
                exc.description,
            )
            return
        removed = self._loaded and not set(self._keys) <= set(keys)
        self._keys, self._loaded, self._failure, self._failures = keys, True, None, 0
        self._stale_at = self._monotonic() + _max_age(response.headers.get("cache-control"))
        logger.debug(
            "fetched the JWKS: %d keys (%d skipped), refreshed after %.0f s",
            len(keys),
            skipped,
            self._stale_at - self._monotonic(),
        )
        if removed:
            self._on_keys_removed()
