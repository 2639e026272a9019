"""How we prove to ZITADEL who *we* are when we introspect a token.

Two methods, both accepted by ZITADEL's introspection endpoint:

* ``private_key_jwt`` (RFC 7523): a short RS256 JWT signed with the API application's key.
  Signing costs about a millisecond of CPU, so the signed assertion is cached and reused until
  it is half-way through its lifetime. ZITADEL does not track ``jti``; servers that do reject a
  reused assertion, and for them we switch, once and for good, to a fresh assertion per call.
* ``client_secret_basic`` (RFC 6749 §2.3.1): HTTP Basic with the id and secret form-url-encoded
  first, so a client id such as ``api@project`` is sent as ``api%40project``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote_plus

import jwt
from cryptography.hazmat.primitives import serialization

from fastapi_zitadel._credentials.key_file import ZitadelKeyFile
from fastapi_zitadel._log import logger

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "IAT_BACKDATE_SECONDS",
    "ClientAuthentication",
    "ClientCredentials",
    "ClientSecretBasic",
    "PrivateKeyJwt",
    "sign_assertion",
]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# ZITADEL allows only 1 s of clock skew on ``iat``; a back-dated ``iat`` survives a machine
# clock that runs a little ahead of the server's.
IAT_BACKDATE_SECONDS = 5


def sign_assertion(
    key: ZitadelKeyFile, *, audience: str | list[str], now: float, lifetime: float
) -> str:
    """An RS256 JWT as ZITADEL checks it: ``kid`` = the key id, ``iss`` = ``sub`` = the key's
    owner (client id or user id), ``aud`` = the issuer, ``iat`` back-dated, a fresh ``jti``:
    client assertions (RFC 7523 §2.2) and the JWT bearer grant's assertion (§2.1) alike."""
    claims = {
        "iss": key.subject,
        "sub": key.subject,
        "aud": audience,
        "iat": int(now) - IAT_BACKDATE_SECONDS,
        "exp": int(now + lifetime),
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.key_id})


@dataclass(frozen=True)
class ClientCredentials:
    """What one request carries to authenticate us. ``reused``: handed out before.
    ``generation`` identifies the cached assertion it carries (0: none), so a rejection can
    later be judged against how often it was really shared."""

    form: dict[str, str] = field(default_factory=dict, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    reused: bool = False
    generation: int = 0


class ClientAuthentication:
    """One way of authenticating to the introspection endpoint; the hooks after
    ``credentials`` do nothing unless a method learns from rejections (a secret does not)."""

    client_id: str
    key_id: str | None = None
    rejection_hint: str
    secret_digest: bytes  # a digest of our credential: keys what only our replicas can seal

    def credentials(self, *, fresh: bool = False) -> ClientCredentials:
        """Credentials for the next request; ``fresh`` forbids reusing a cached assertion."""
        raise NotImplementedError

    def possibly_reused(self, credentials: ClientCredentials) -> bool:
        """Whether a rejection of ``credentials`` could be a server refusing reuse."""
        return False

    def fresh_credentials_helped(self) -> None:
        """Called when a fresh credential succeeded where a reused one was rejected."""

    def rejected(self) -> None:
        """Called when even fresh credentials were rejected."""


class PrivateKeyJwt(ClientAuthentication):
    """``private_key_jwt`` client authentication with a cached, self-refreshing assertion."""

    rejection_hint = (
        "check that key id {key_id} belongs to an API application of this ZITADEL instance, "
        "that the key was not deleted or expired, and that this machine's clock is accurate "
        "(ZITADEL allows 1 s of skew)"
    )

    def __init__(
        self,
        key: ZitadelKeyFile,
        *,
        audience: str | list[str],
        lifetime: float,
        single_use: bool,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = key.subject
        self.key_id: str | None = key.key_id
        self.secret_digest = hashlib.sha256(
            key.private_key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        ).digest()
        self._key = key
        self._audience = audience
        self._lifetime = lifetime
        self._clock = clock  # for the claims
        self._monotonic = monotonic  # for scheduling the refresh: immune to clock steps
        self.single_use = single_use
        self._refresh_lock = threading.Lock()
        self._assertion = ""
        self._refresh_at = float("-inf")
        self._uses = 0
        self._generation = 0

    def credentials(self, *, fresh: bool = False) -> ClientCredentials:
        if fresh or self.single_use:
            return self._as_credentials(self._sign(self._clock()), reused=False)
        # Fast path, no lock: a plain read of two attributes that are only replaced together
        # under the lock below.
        assertion, refresh_at = self._assertion, self._refresh_at
        if self._monotonic() >= refresh_at:
            with self._refresh_lock:
                now = self._monotonic()
                if now >= self._refresh_at:
                    self._assertion = self._sign(self._clock())
                    self._refresh_at = now + self._lifetime / 2
                    self._uses = 0
                    self._generation += 1
                assertion = self._assertion
        reused = self._uses > 0
        self._uses += 1
        return self._as_credentials(assertion, reused=reused, generation=self._generation)

    def possibly_reused(self, credentials: ClientCredentials) -> bool:
        # Decided now, not when the assertion was handed out: concurrent requests reach the
        # server in any order, so the first one issued may well be the second one seen.
        if credentials.generation == 0:
            return False
        return credentials.reused or credentials.generation != self._generation or self._uses > 1

    def rejected(self) -> None:
        # Sign afresh next time: a rejected assertion must not be replayed (and retried).
        with self._refresh_lock:
            self._refresh_at = float("-inf")

    def fresh_credentials_helped(self) -> None:
        if not self.single_use:
            self.single_use = True
            logger.warning(
                "the identity provider rejected a reused client assertion and accepted a fresh "
                "one: switching to a new assertion per introspection for client %s (key %s)",
                self.client_id,
                self.key_id,
            )

    def _sign(self, now: float) -> str:
        return sign_assertion(self._key, audience=self._audience, now=now, lifetime=self._lifetime)

    @staticmethod
    def _as_credentials(assertion: str, *, reused: bool, generation: int = 0) -> ClientCredentials:
        form = {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}
        return ClientCredentials(form=form, reused=reused, generation=generation)


class ClientSecretBasic(ClientAuthentication):
    """``client_secret_basic`` client authentication; the header is computed once."""

    rejection_hint = (
        "check the client id and secret (ZITADEL_CLIENT_ID, ZITADEL_CLIENT_SECRET): they must be "
        "the API application's (a service user's id and secret cannot introspect: ZITADEL lets "
        "only applications do that)"
    )

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.secret_digest = hashlib.sha256(client_secret.encode("utf-8")).digest()
        pair = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}"
        token = base64.b64encode(pair.encode("utf-8")).decode("ascii")
        self._credentials = ClientCredentials(headers={"Authorization": f"Basic {token}"})

    def credentials(self, *, fresh: bool = False) -> ClientCredentials:
        return self._credentials
