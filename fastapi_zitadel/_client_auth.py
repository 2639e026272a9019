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
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote_plus

import jwt

from ._key_file import ZitadelKeyFile

logger = logging.getLogger("fastapi_zitadel")

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# ZITADEL allows only 1 s of clock skew on ``iat``; a back-dated ``iat`` survives a machine
# clock that runs a little ahead of the server's.
IAT_BACKDATE_SECONDS = 5


@dataclass(frozen=True)
class ClientCredentials:
    """What one introspection request carries to authenticate us.

    ``reused`` tells the caller whether a rejection could be about reuse (only a cached
    assertion can be), and so whether a retry with fresh credentials makes sense.
    """

    form: dict[str, str] = field(default_factory=dict, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    reused: bool = False


class ClientAuthentication(Protocol):
    """One way of authenticating to the introspection endpoint."""

    client_id: str
    key_id: str | None

    def credentials(self, *, fresh: bool = False) -> ClientCredentials:
        """Credentials for the next request; ``fresh`` forbids reusing a cached assertion."""
        ...

    def fresh_credentials_helped(self) -> None:
        """Called when a fresh credential succeeded where a reused one was rejected."""
        ...


class PrivateKeyJwt:
    """``private_key_jwt`` client authentication with a cached, self-refreshing assertion."""

    def __init__(
        self,
        key: ZitadelKeyFile,
        *,
        audience: str,
        lifetime: float,
        single_use: bool,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = key.subject
        self.key_id: str | None = key.key_id
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
                assertion = self._assertion
        reused = self._uses > 0
        self._uses += 1
        return self._as_credentials(assertion, reused=reused)

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
        issued_at = int(now) - IAT_BACKDATE_SECONDS
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self._audience,
            "iat": issued_at,
            "exp": int(now + self._lifetime),
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode(
            claims, self._key.private_key, algorithm="RS256", headers={"kid": self._key.key_id}
        )

    @staticmethod
    def _as_credentials(assertion: str, *, reused: bool) -> ClientCredentials:
        form = {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}
        return ClientCredentials(form=form, reused=reused)


class ClientSecretBasic:
    """``client_secret_basic`` client authentication; the header is computed once."""

    key_id: str | None = None

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        pair = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}"
        token = base64.b64encode(pair.encode("utf-8")).decode("ascii")
        self._credentials = ClientCredentials(headers={"Authorization": f"Basic {token}"})

    def credentials(self, *, fresh: bool = False) -> ClientCredentials:
        return self._credentials

    def fresh_credentials_helped(self) -> None:
        """Nothing to learn: a secret is the same on every request."""
