"""The Actions v2 target: an ASGI app that takes ZITADEL's events in and applies them.

    POST body ─► size cap (413) ─► signature (401) ─► parse (400) ─► instance (403)
              ─► replayed? (401) ─► markers applied here ─► the shared feed (503 if down)

The signature is checked on the raw bytes before anything is parsed, and nothing about a
refused call is logged beyond its reason: never the body, a header or a key. A ``JWT`` payload
type (a compact JWS signed with the instance's web key) is verified against the issuer's JWKS,
under a JWT access token's header rules (``_jws``), after its ``ZITADEL-Signature`` header,
required for a JWS body as for a JSON one.

Why required: ZITADEL sends it on every call of a target with a signing key, computed over the
body sent (for ``PAYLOAD_TYPE_JWT``, the JWS), and every target gets a signing key when created.
In zitadel/zitadel, ``internal/execution/execution.go``: ``CallTarget`` turns the body into the
JWS (``payload`` -> ``payloadJWT``) and hands it to ``Call``, which sets
``actions.SigningHeader`` to ``actions.ComputeSignatureHeader(time.Now(), body, signingKey)``
whenever ``signingKey != ""``; ``internal/command/action_v2_target.go``: ``AddTarget`` always
sets ``add.SigningKey`` from ``c.newSigningKey``. So a JWS body without the header is not
ZITADEL's, and refusing it (401 ``missing``) keeps unauthenticated senders off the JWKS cache.

Delivery is at most once (ZITADEL does not retry): a failure is answered with a status ZITADEL
logs, and the markers are applied in this process whatever the shared tier does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi_zitadel._exceptions import IdentityProviderError, InvalidTokenError
from fastapi_zitadel._idp.jwks import JwksCache
from fastapi_zitadel._jose import jwt_header
from fastapi_zitadel._jws import verified_payload
from fastapi_zitadel._log import RateLimitedLog, logger
from fastapi_zitadel._metrics import Metrics

from .payload import EventMalformed, ZitadelEvent, parse_event, parse_event_json
from .revocations import RevocationFeed, Revocations
from .signature import HEADER, SignatureRefused, verify_signature

__all__ = ["EventReceiver", "JwsVerifier", "jwks_verifier"]

_SEEN = 100_000  # event identities remembered against a second delivery
_JSON = (b"content-type", b"application/json")

JwsVerifier = Callable[[str, float], Awaitable[Mapping[str, Any]]]
"""Verifies a compact JWS (the body of a JWT payload type target) and returns its claims;
raises ``InvalidTokenError`` when it does not verify."""


def jwks_verifier(jwks: JwksCache) -> JwsVerifier:
    """A ``JwsVerifier`` against the issuer's web keys (the JWKS the library caches)."""

    async def verify(token: str, deadline: float) -> Mapping[str, Any]:
        header = jwt_header(token)
        if header is None:
            raise InvalidTokenError("the body is not a JWS signed with a supported algorithm")
        claims = await verified_payload(jwks, token, header, deadline)  # the token's rules
        if not isinstance(claims, Mapping):
            raise InvalidTokenError("the JWS claims are not a JSON object")
        return claims

    return verify


class EventReceiver:
    """``ZitadelIntrospection.events_app``: mount it, or let ``install()`` route it."""

    def __init__(
        self,
        *,
        keys: Sequence[bytes],
        revocations: Revocations,
        metrics: Metrics,
        feed: RevocationFeed | None,
        max_age: float,
        max_body: int,
        timeout: float,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        jws: JwsVerifier | None = None,
    ) -> None:
        self._keys = tuple(keys)
        self._revocations = revocations
        self._metrics = metrics
        self._feed = feed
        self._max_age = max_age
        self._max_body = max_body
        self._timeout = timeout
        self._clock = clock
        self._monotonic = monotonic
        self._jws = jws
        self._seen: OrderedDict[tuple[str, str, str, int], None] = OrderedDict()
        self._instance: str | None = None
        self._refusal_log = RateLimitedLog(logging.WARNING, monotonic=monotonic)

    def __repr__(self) -> str:
        return f"EventReceiver(keys={len(self._keys)}, max_age={self._max_age:g})"

    # ASGI -------------------------------------------------------------------------------
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # mounted as an app of its own
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope.get("method") != "POST":
            await _answer(send, 405, {"error": "method not allowed"}, allow=True)
            return
        headers = _headers(scope)
        body = await self._read(receive, headers.get("content-length"))
        if body is None:
            self._metrics.events_received += 1
            self._refused("oversized", "the body is larger than events_max_body")
            await _answer(send, 413, {"error": "body too large"})
            return
        status, answer = await self.handle(headers, body)
        await _answer(send, status, answer)

    async def _read(self, receive: Any, length: str | None) -> bytes | None:
        """The body, or ``None`` past the cap (read no further than the cap)."""
        if length is not None and (not length.isdigit() or int(length) > self._max_body):
            return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            body += message.get("body", b"")
            if len(body) > self._max_body:
                return None
            if not message.get("more_body", False):
                break
        return bytes(body)

    # The steps --------------------------------------------------------------------------
    async def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Status and JSON answer for one call; ``headers`` by lower-case name."""
        self._metrics.events_received += 1
        now = self._clock()
        jws = self._jws
        if jws is not None and not _is_jws(body, headers.get("content-type", "")):
            jws = None
        try:  # a JWS body too: ZITADEL signs every call, whatever the payload type
            verify_signature(headers.get(HEADER), body, self._keys, now=now, max_age=self._max_age)
        except SignatureRefused as refused:
            self._refused(refused.reason, refused.description)
            return 401, {"error": "invalid signature"}
        try:
            if jws is not None:
                deadline = self._monotonic() + self._timeout
                try:
                    if not body.isascii():
                        raise InvalidTokenError(
                            "the body is not a JWS signed with a supported algorithm"
                        )
                    claims = await jws(body.decode("ascii").strip(), deadline)
                except InvalidTokenError as exc:
                    self._refused("jws", exc.description)
                    return 401, {"error": "invalid signature"}
                except IdentityProviderError as exc:  # keys unreachable: cannot tell
                    self._refused("jws_unavailable", exc.description)
                    return 503, {"error": "signing keys unavailable"}
                event = parse_event(claims)
            else:
                event = parse_event_json(body)
        except EventMalformed as exc:
            self._refused("malformed", str(exc))
            return 400, {"error": "not an event"}
        if event.instance_id:  # the first signed event names the instance; any other refused
            self._instance = self._instance or event.instance_id
            if event.instance_id != self._instance:
                self._refused("instance", "the event is from another ZITADEL instance")
                return 403, {"error": "another instance"}
        return await self.apply(event, now)

    async def apply(self, event: ZitadelEvent, now: float) -> tuple[int, dict[str, Any]]:
        """Apply a verified event here, then hand it to the shared feed."""
        metrics = self._metrics
        identity = event.identity
        if identity in self._seen:  # ZITADEL sends each event once: this is a replay
            self._refused("replayed", "the event was received before")
            return 401, {"error": "replayed"}
        self._seen[identity] = None
        if len(self._seen) > _SEEN:
            self._seen.popitem(last=False)
        if event.created_at is not None:
            metrics.observe_event_lag(max(now - event.created_at, 0.0))
        markers = self._revocations.markers(event, now)
        if not markers:  # a type we do not act on, or nothing we can act on (a session
            metrics.events_ignored += 1  # terminated whose OIDC sessions we never heard of)
            return 200, {"status": "ignored"}
        self._revocations.apply(markers)  # here first, whatever the shared tier does
        if self._feed is not None:
            try:
                shared_identity = json.dumps(list(identity), separators=(",", ":"))
                stored = await asyncio.wait_for(
                    self._feed.publish(shared_identity, markers), self._timeout
                )
            except Exception as exc:  # the shared tier is down: here only, and say so
                metrics.events_applied += 1
                metrics.events_unshared += 1
                logger.warning(
                    "ZITADEL event %s applied in this process only: the shared tier did not "
                    "take it (%s); other replicas keep their verdicts up to cache_ttl",
                    event.event_type,
                    type(exc).__name__,
                )
                return 503, {"error": "applied locally only: the shared tier is unavailable"}
            if not stored:  # another replica had it: a replay (applying it changed nothing)
                self._refused("replayed", "the event was received before, by another replica")
                return 401, {"error": "replayed"}
        metrics.events_applied += 1
        logger.info("ZITADEL event %s applied (%d markers)", event.event_type, len(markers))
        return 200, {"status": "applied"}

    def _refused(self, reason: str, description: str) -> None:
        refused = self._metrics.events_refused
        refused[reason] = refused.get(reason, 0) + 1
        self._refusal_log("ZITADEL event refused (%s): %s", reason, description)


def _is_jws(body: bytes, content_type: str) -> bool:
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/jwt" or (body[:2] == b"ey" and body.count(b".") == 2)


def _headers(scope: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1").lower()
        if key == HEADER and key in found:
            found[key] = "repeated"  # two signature headers: malformed, never merged
        elif key not in found:
            found[key] = value.decode("latin-1")
    return found


_ENCODED: dict[tuple[tuple[str, Any], ...], bytes] = {}  # the few answers there are, encoded once


async def _answer(send: Any, status: int, body: dict[str, Any], *, allow: bool = False) -> None:
    key = tuple(body.items())
    data = _ENCODED.get(key)
    if data is None:
        data = _ENCODED[key] = json.dumps(body).encode("utf-8")
    headers = [_JSON, (b"content-length", str(len(data)).encode("ascii"))]
    if allow:
        headers.append((b"allow", b"POST"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
