"""The instance's web keys: the current one signs ID tokens, JWT access tokens and JWT event
payloads; a rotated-out key stays in the JWKS for its grace period."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from fastapi_zitadel.testing._directory import generate_rsa_key, new_id

WebKeyAlgorithm = Literal["RS256", "ES256", "EdDSA"]
DEFAULT_GRACE_PERIOD = 300.0  # seconds a rotated-out web key stays in the JWKS


# Each algorithm's key generator, and PyJWT's algorithm that writes its public JWK.
_ALGORITHMS: dict[str, tuple[Callable[[], Any], type[Any]]] = {
    "RS256": (generate_rsa_key, RSAAlgorithm),
    "ES256": (lambda: ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
    "EdDSA": (ed25519.Ed25519PrivateKey.generate, OKPAlgorithm),
}


@dataclass
class WebKey:
    """Once rotated out, published in the JWKS until ``retires_at`` (stand-in clock)."""

    kid: str
    algorithm: WebKeyAlgorithm
    private_key: Any = field(repr=False)
    retires_at: float | None = None

    @classmethod
    def generate(cls, algorithm: WebKeyAlgorithm) -> WebKey:
        return cls(new_id(), algorithm, _ALGORITHMS[algorithm][0]())

    def jwk(self) -> dict[str, Any]:
        writer = _ALGORITHMS[self.algorithm][1]
        jwk: dict[str, Any] = writer.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk.update(kid=self.kid, use="sig", alg=self.algorithm)
        return jwk


class WebKeys:
    """The instance's web keys in the order they were made: the last one signs. Read from
    several threads at once (the test signing tokens, the served JWKS endpoint, the event
    delivery worker), so making a key holds a lock: two first uses racing each made a key, and
    a JWKS read between the two appends left out the key a token was signed with."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._keys: list[WebKey] = []
        self._lock = threading.Lock()

    def current(self) -> WebKey:
        """The key that signs now (made on first use)."""
        with self._lock:
            if not self._keys:
                self._keys.append(WebKey.generate("RS256"))
            return self._keys[-1]

    def published(self) -> list[WebKey]:
        self.current()  # the first key exists before the JWKS is read
        now = self._clock()
        return [key for key in self._keys if key.retires_at is None or now < key.retires_at]

    def rotate(self, algorithm: WebKeyAlgorithm, grace_period: float) -> str:
        self.current()  # the first key exists before it is rotated out
        key = WebKey.generate(algorithm)
        with self._lock:
            now = self._clock()
            for old in self._keys:
                if old.retires_at is None:
                    old.retires_at = now + grace_period
            self._keys.append(key)
        return key.kid

    def sign(self, claims: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
        """Signed with the current web key, as ZITADEL signs: ``typ: JWT`` for ID tokens and
        access tokens alike (zitadel/zitadel internal/api/oidc/sign/signer.go)."""
        key = self.current()
        headers = {"kid": key.kid, "typ": "JWT", **(extra or {})}
        return jwt.encode(dict(claims), key.private_key, algorithm=key.algorithm, headers=headers)

    def claims_of(self, value: str) -> dict[str, Any] | None:
        """The claims of a JWT one of our keys signed, whatever its times (an expired JWT can
        be revoked too); ``None`` for anything else."""
        try:
            kid = jwt.get_unverified_header(value).get("kid")
            key = next(key for key in self._keys if key.kid == kid)
            return jwt.decode(
                value,
                key.private_key.public_key(),
                algorithms=[key.algorithm],
                options={
                    "verify_aud": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except (jwt.PyJWTError, StopIteration):
            return None
