"""The per-token flow, from a bearer token to a verified ``Principal``.

    local hit  -> the cached Principal (the hot path: one digest, one dict lookup, no lock)
    negative   -> InvalidTokenError
    shared hit -> the Principal another replica verified (when a shared tier is configured)
    miss       -> one shared call per token (single flight) -> the validator -> claim checks
                  -> cached -> Principal

Every step is passed in; the pipeline only runs them. A miss ends as a ``Principal``,
``InvalidTokenError`` (the token is bad) or an ``IdentityProviderError`` (we cannot tell now).

An ``invalidate()`` (here or on another replica) voids that token's lookups in flight, so a result
fetched before the revocation is never cached after it. ``invalidate()`` and ``clear()`` return once
the shared tier confirmed the change, retried within ``timeout``, else raise
``SharedCacheUnavailable``.

An entry read from the shared tier is held no longer than this instance's own lifetimes from when
the IdP vouched for it, whoever wrote it; with ``cache_ttl=0`` nothing shared is used (the tier is
asked only after an inactive answer, to know whether to tell the other replicas). A miss is decided
by introspection, by the local JWT verifier (``local``), or by both (``hybrid``: a JWT is served
from its local verification while its confirming introspection runs, within ``unconfirmed_limit``;
see ``unconfirmed.Confirmations``). A hybrid pipeline caches introspection answers only, so a cache
hit never serves an unconfirmed JWT; a suspect token (the shared tier's tombstone reads as a
``SuspectToken``) is introspected before it is served.

ZITADEL's events (Actions v2) leave markers in ``revocations``: a verdict they refuse or make stale
is dropped when next met (in any tier), and a token they refuse is refused after its verification
too. The hot path looks at the markers only when their epoch moved since the entry was last checked:
one integer comparison per hit otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

from fastapi_zitadel._cache.base import CacheEntry, CacheKey, IntrospectionCache, SuspectToken
from fastapi_zitadel._cache.memory import MemoryCache, NegativeCache
from fastapi_zitadel._concurrency.tasks import KeyedTasks
from fastapi_zitadel._events.revocations import OK, REFUSED, ROLES_CHANGED, Revocations
from fastapi_zitadel._exceptions import (
    IdentityProviderError,
    IdentityProviderUnavailable,
    InvalidTokenError,
    QueueTimeout,
    SharedCacheUnavailable,
    ZitadelError,
)
from fastapi_zitadel._jose import jwt_header
from fastapi_zitadel._log import RateLimitedLog, logger
from fastapi_zitadel._metrics import Metrics
from fastapi_zitadel._principal import Principal

from .checks import ClaimChecks
from .jwt_validator import OPAQUE_IN_LOCAL_MODE, JwtValidator, UnknownSigningKey
from .unconfirmed import Confirmations, Unconfirmed
from .validator import Validator

__all__ = ["CachePolicy", "VerificationPipeline"]

T = TypeVar("T")

# Hybrid mode: tokens that may be pending their confirmation at once, at least (a small
# cache_max_size must not make a cold start wait: a record is a few dozen bytes).
_UNCONFIRMED_ROOM = 10_000
# Pauses between attempts of invalidate() and clear() on the shared tier: doubling, capped.
_FIRST_RETRY = 0.05
_LAST_RETRY = 1.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CachePolicy:
    """How long results live: ``ttl`` seconds, plus ``stale_if_error`` while the IdP is down;
    never past the token's own ``exp``."""

    ttl: float
    stale_if_error: float

    def entry(self, principal: Principal, now: float, epoch: int = 0) -> CacheEntry | None:
        expires_at = now + self.ttl
        stale_until = expires_at + self.stale_if_error
        if principal.expires_at is not None:
            token_exp = principal.expires_at.timestamp()
            expires_at, stale_until = min(expires_at, token_exp), min(stale_until, token_exp)
        if expires_at <= now:
            return None
        return CacheEntry(principal, expires_at, stale_until, verified_at=now, epoch=epoch)

    def bound(self, entry: CacheEntry, now: float) -> CacheEntry | None:
        """A shared entry held to our own lifetimes from when it was verified (never from the
        future: a writer whose clock runs ahead gains nothing); ``None`` if nothing is left."""
        verified_at = now if entry.verified_at is None else min(entry.verified_at, now)
        expires_at = min(entry.expires_at, verified_at + self.ttl)
        stale_until = min(entry.stale_until, verified_at + self.ttl + self.stale_if_error)
        if stale_until <= now:
            return None
        return CacheEntry(entry.principal, min(expires_at, stale_until), stale_until, verified_at)


@dataclasses.dataclass(slots=True)
class _InFlight:
    """One token's lookups in flight, and its invalidations since the first ``began`` (at
    revocation ``epoch``): a lookup compares the count it started with, O(1) for any herd.
    Each ``with`` is one lookup, registered in ``registry`` while it runs (a class, not a
    ``contextlib`` generator: four calls fewer on every miss)."""

    # Not in repr or ==: a flight's repr must not list every digest in flight.
    registry: dict[bytes, _InFlight] = dataclasses.field(repr=False, compare=False)
    digest: bytes = dataclasses.field(repr=False, compare=False)
    began: float
    epoch: int
    lookups: int = 0
    invalidations: int = 0

    def __enter__(self) -> tuple[_InFlight, int]:
        self.lookups += 1
        return self, self.invalidations

    def __exit__(self, *exc_info: object) -> None:
        self.lookups -= 1
        if self.lookups == 0 and self.registry.get(self.digest) is self:
            del self.registry[self.digest]


class _RolesChanged(InvalidTokenError):
    """A JWT issued before a grant of its user changed: its roles may be gone. Local mode
    refuses it (401); hybrid mode asks ZITADEL instead."""


class VerificationPipeline:
    def __init__(
        self,
        *,
        namespace: bytes,
        local: MemoryCache,
        negative: NegativeCache,
        shared: IntrospectionCache | None,
        flight: KeyedTasks[Principal],
        validator: Validator | None,
        checks: ClaimChecks,
        policy: CachePolicy,
        metrics: Metrics,
        timeout: float,
        max_token_length: int,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        jwt: JwtValidator | None = None,
        suspects: NegativeCache | None = None,
        unconfirmed_limit: int = 1,
        revocations: Revocations,
    ) -> None:
        """``validator`` introspects; ``jwt`` verifies JWTs locally; with both, hybrid mode:
        ``suspects`` are introspected before they are served, and a token serves at most
        ``unconfirmed_limit`` requests before its confirming introspection answered."""
        assert validator is not None or jwt is not None, "a pipeline needs a validator"
        self._namespace = namespace
        self._local = local
        self._negative = negative
        self._shared = shared
        self._flight = flight
        self._validator = validator
        self._checks = checks
        self._policy = policy
        self._metrics = metrics
        self._timeout = timeout
        self._max_token_length = max_token_length
        self._clock = clock
        self._monotonic = monotonic
        self._in_flight: dict[bytes, _InFlight] = {}
        self._shared_log = RateLimitedLog(logging.WARNING, monotonic=monotonic)
        self._jwt = jwt
        self._hybrid = jwt is not None and validator is not None
        self._confirmations: Confirmations | None = None
        if self._hybrid:
            assert suspects is not None, "a hybrid pipeline remembers suspects"
            room = max(local.max_size, _UNCONFIRMED_ROOM)
            self._confirmations = Confirmations(
                confirm=self._confirm,
                suspects=suspects,
                records=Unconfirmed(limit=unconfirmed_limit, max_size=room),
                metrics=metrics,
                clock=clock,
                monotonic=monotonic,
            )
        self._revocations = revocations

    # The hot path ------------------------------------------------------------------------
    def key(self, token: str) -> bytes:
        return hashlib.sha256(self._namespace + token.encode("utf-8")).digest()

    def cached(self, digest: bytes) -> Principal | None:
        """Run on every authenticated request: a fresh local hit, or ``None``. Synchronous
        on purpose: no coroutine, no lock, no I/O; one dict lookup (and the revocation markers
        only when their epoch moved since the entry was checked)."""
        now = self._clock()
        entry = self._local.lookup(digest, now)
        if entry is not None and now < entry.expires_at:
            if entry.epoch != self._revocations.epoch:
                entry = self._recheck(digest, entry)
                if entry is None:
                    return None
            self._metrics.cache_hits += 1
            return entry.principal
        return None

    def _recheck(self, digest: bytes, entry: CacheEntry) -> CacheEntry | None:
        """A local entry re-stamped by ``_checked``, or dropped if it returns ``None``."""
        checked = self._checked(entry)
        if checked is None:
            self._local.discard(digest)
        else:
            self._local.store(digest, checked)
        return checked

    def _checked(self, entry: CacheEntry) -> CacheEntry | None:
        """``entry`` stamped with the markers' epoch; ``None`` if they refuse or stale it."""
        revocations = self._revocations
        if revocations.verdict(entry.principal, entry.verified_at or 0.0) != OK:
            return None
        return dataclasses.replace(entry, epoch=revocations.epoch)

    def _marker_epoch(self, digest: bytes, principal: Principal) -> int:
        """The epoch to stamp a new verdict with; ``InvalidTokenError`` if an event revoked
        the token (remembered as inactive), ``_RolesChanged`` for a JWT whose user's grants
        changed after it was issued."""
        revocations = self._revocations
        verdict = revocations.verdict(principal, self._clock())
        if verdict == REFUSED:
            logger.debug("token %s refused: revoked by a ZITADEL event", digest[:4].hex())
            revoked = InvalidTokenError("the token was revoked (ZITADEL event)")
            self._negative.add(digest, revoked)  # the same reason on its next requests
            raise revoked
        if verdict == ROLES_CHANGED:
            changed = _RolesChanged(
                "the user's roles changed after the token was issued (ZITADEL event): "
                "a new token carries the roles of now"
            )
            if self._validator is None:  # local: nothing can re-read its roles
                self._negative.add(digest, changed)
            raise changed
        flight = self._in_flight.get(digest)
        if (
            flight is not None
            and flight.epoch != revocations.epoch
            and revocations.verdict(principal, flight.began) != OK
        ):
            # An event arrived while this answer was on its way, and would have dropped it
            # (e.g. the user's grants changed): served, but not cached, as after invalidate().
            flight.invalidations += 1
        return revocations.epoch

    # Everything after a local miss ---------------------------------------------------------
    async def verify(self, token: str) -> Principal:
        """The ``Principal`` for ``token``, from any tier or the validator."""
        if not token or len(token) > self._max_token_length:
            raise InvalidTokenError("the token is empty or too long")
        digest = self.key(token)
        return self.cached(digest) or await self.resolve(token, digest)

    async def resolve(self, token: str, digest: bytes) -> Principal:
        """Negative cache, shared tier, then one validation shared by concurrent callers."""
        deadline = self._monotonic() + self._timeout
        with self._lookup(digest) as (flight, started):
            entry = self._local.lookup(digest, self._clock())  # maybe one past its lifetime
            if entry is not None and entry.epoch != self._revocations.epoch:
                entry = self._recheck(digest, entry)  # never served stale once revoked
            refusal = self._negative.refusal(digest)
            if refusal is not None:  # the reason the token was refused for the first time
                self._metrics.negative_hits += 1
                raise refusal
            key = CacheKey(digest, token)
            # Whether some tier holds the token (None: not asked yet). An inactive answer for
            # a token no tier held tells nobody: garbage tokens publish nothing.
            held: bool | None = entry is not None
            try:
                confirmations = self._confirmations
                if confirmations is not None and confirmations.record(digest) is not None:
                    # Hybrid: served from its JWT already, its confirmation pending.
                    return await self._serve_unconfirmed(key, None, deadline)
                shared_reads = self._policy.ttl > 0 or self._hybrid  # hybrid: for suspicion
                if entry is None and self._shared is not None and not shared_reads:
                    held = None  # cache_ttl=0 takes nothing shared; asked only if inactive
                elif entry is None and self._shared is not None:
                    shared = await self._shared_call(partial(self._shared.read, key), deadline)
                    # A tombstone counts as held in hybrid mode only: an inactive answer then
                    # renews it, for the replicas that start later.
                    held = isinstance(shared, CacheEntry) or (self._hybrid and shared is not None)
                    if isinstance(shared, SuspectToken) and confirmations is not None:
                        confirmations.suspect(digest)  # known against it: ZITADEL decides first
                    elif isinstance(shared, CacheEntry) and self._policy.ttl > 0:
                        entry = self._policy.bound(shared, self._clock())  # our own lifetimes
                        if entry is not None:  # checked against the markers, as a local entry
                            entry = self._checked(entry)
                    if entry is not None and flight.invalidations == started:
                        self._local.store(digest, entry)
                        if self._clock() < entry.expires_at:
                            self._metrics.shared_hits += 1
                            return entry.principal
                self._metrics.misses += 1
                header = self._locally_verifiable(key)
                if header is not None:
                    # Run here, not shared: a signature check costs less than a task, and
                    # what may wait (the JWKS fetch, hybrid's introspection) is shared below.
                    try:
                        verified = await self._verify_locally(key, header, deadline)
                    except (UnknownSigningKey, IdentityProviderUnavailable, _RolesChanged):
                        if self._validator is None:
                            raise
                        # Hybrid: the issuer's keys cannot decide now (a key not fetched yet,
                        # or the key set unreachable), or the JWT's roles may be gone;
                        # ZITADEL's introspection can.
                    else:
                        if confirmations is None:  # not hybrid
                            return verified
                        if flight.invalidations != started:  # invalidated meanwhile: suspect
                            return await confirmations.join(key, deadline)
                        return await self._serve_unconfirmed(key, verified, deadline)
                # The deadline lives inside the shared call (every step in it is bounded by
                # it), so the callers waiting for it need no timer of their own.
                return await self._flight.run(
                    digest, lambda: self._introspect(key, deadline, held=held)
                )
            except IdentityProviderUnavailable as failure:
                voided = flight.invalidations != started
                if voided or entry is None or self._clock() >= entry.stale_until:
                    raise
                reason = failure.description
        # Stale-if-error: only when the IdP cannot answer, never when it said "inactive".
        self._metrics.stale_served += 1
        logger.warning(
            "identity provider unavailable (%s): serving a cached result past its "
            "lifetime (stale_if_error)",
            reason,
        )
        return entry.principal

    def _locally_verifiable(self, key: CacheKey) -> dict[str, Any] | None:
        """The JWT header when the token is to be verified here, ``None`` to introspect."""
        if self._jwt is None:
            return None
        header = jwt_header(key.token)
        if header is None and self._validator is None:
            raise InvalidTokenError(OPAQUE_IN_LOCAL_MODE)  # no network call for it
        hybrid = self._confirmations
        if header is not None and hybrid is not None and hybrid.is_suspect(key.digest):
            return None  # hybrid: found inactive or invalidated, ZITADEL decides first
        return header

    async def _introspect(self, key: CacheKey, deadline: float, *, held: bool | None) -> Principal:
        assert self._validator is not None
        digest = key.digest
        with self._lookup(digest) as (flight, started):
            claims = await self._validator.validate(key.token, deadline)
            if claims is None:
                await self._inactive(key, deadline, held=held)
                raise InvalidTokenError("the token is not active")
            try:
                principal = self._checks.principal(claims)
            except InvalidTokenError as exc:
                logger.debug(
                    "token %s rejected: %s%s",
                    digest[:4].hex(),
                    exc.description,
                    f" ({exc.detail})" if exc.detail else "",
                )
                self._negative.add(digest, exc)
                raise
            epoch = self._marker_epoch(digest, principal)
            entry = self._policy.entry(principal, self._clock(), epoch)
            if entry is not None and flight.invalidations == started:
                self._local.store(digest, entry)
                if self._shared is not None:
                    await self._shared_call(partial(self._shared.set, key, entry), deadline, "set")
                logger.debug(
                    "token %s is active, cached until %.0f", digest[:4].hex(), entry.expires_at
                )
            if self._confirmations is not None and flight.invalidations == started:
                # ZITADEL says it is active, and nothing voided that answer since: JWT path
                # again (an answer fetched before an invalidation must not undo it).
                self._confirmations.cleared(digest)
            return principal

    async def _verify_locally(
        self, key: CacheKey, header: Mapping[str, Any], deadline: float
    ) -> Principal:
        assert self._jwt is not None
        digest = key.digest
        with self._lookup(digest) as (flight, started):
            try:
                claims, declared = await self._jwt.verify(key.token, header, deadline)
                principal = self._checks.principal(
                    claims, verified_by="jwt", declared_access_token=declared
                )
                self._metrics.jwt_verified += 1
            except UnknownSigningKey:
                raise  # not remembered: the key may be published by the next fetch
            except InvalidTokenError as exc:
                logger.debug("token %s rejected: %s", digest[:4].hex(), exc.description)
                self._negative.add(digest, exc)
                raise
            epoch = self._marker_epoch(digest, principal)  # refused here if an event says so
            entry = self._policy.entry(principal, self._clock(), epoch)
            if entry is not None and flight.invalidations == started and not self._hybrid:
                # Never shared; in hybrid mode not cached either, but served from the
                # unconfirmed records until ZITADEL answers (see the module docstring).
                self._local.store(digest, entry)
            return principal

    # Hybrid mode: serving before the confirmation, and confirming ---------------------------
    async def _serve_unconfirmed(
        self, key: CacheKey, verified: Principal | None, deadline: float
    ) -> Principal:
        """A request of a JWT verified here (``verified``: just now; ``None``: earlier, its
        confirmation pending): served at once within the limit, else after the confirmation."""
        confirmations = self._confirmations
        assert confirmations is not None
        principal = confirmations.admit(key, verified)
        if principal is None:
            self._metrics.confirmation_waits += 1
        else:
            try:  # an event since it was verified (the first request was checked already)
                self._marker_epoch(key.digest, principal)
                return principal
            except _RolesChanged:  # its roles may be gone: ZITADEL's answer decides
                confirmations.suspect(key.digest)
        return await confirmations.join(key, deadline)

    async def confirmed(self, token: str, digest: bytes) -> Principal:
        """Hybrid mode: ``token``'s principal once introspection has confirmed it (joining
        the confirmation in flight, or starting one); ``InvalidTokenError`` if it is not
        active, an ``IdentityProviderError`` if ZITADEL cannot tell now."""
        assert self._confirmations is not None
        # The introspection has its own deadline: the extra second is never reached.
        deadline = self._monotonic() + self._timeout + 1.0
        return await self._confirmations.join(CacheKey(digest, token), deadline)

    async def _confirm(self, key: CacheKey) -> Principal:
        """One token's confirmation; whatever it ends with, the token is no longer pending:
        confirmed (ZITADEL's answer cached), refused, or suspect (introspected first)."""
        confirmations = self._confirmations
        assert confirmations is not None
        digest = key.digest
        with self._lookup(digest) as (flight, started):
            try:
                claims = await self._confirmation_answer(key)
                deadline = self._monotonic() + self._timeout  # for the writes that follow
                try:
                    if claims is None:
                        raise InvalidTokenError("the token is not active")
                    principal = self._checks.principal(claims)
                    epoch = self._marker_epoch(digest, principal)
                except InvalidTokenError:
                    if flight.invalidations == started:
                        await self._revoked(key, deadline)
                    raise
                entry = self._policy.entry(principal, self._clock(), epoch)
                if entry is not None and flight.invalidations == started:
                    self._local.store(digest, entry)
                    if self._shared is not None:
                        await self._shared_call(
                            partial(self._shared.set, key, entry), deadline, "set"
                        )
                if flight.invalidations == started:  # not if an invalidation came in meanwhile
                    confirmations.cleared(digest)
                logger.debug("token %s confirmed by introspection", digest[:4].hex())
                return principal
            except ZitadelError as exc:
                if isinstance(exc, IdentityProviderError) and flight.invalidations == started:
                    confirmations.suspect(digest)  # still unconfirmed: its next request waits
                logger.debug("token %s not confirmed: %s", digest[:4].hex(), exc.description)
                raise
            finally:
                if flight.invalidations == started:  # voided: forget() has closed it already
                    confirmations.ended(digest)

    async def _confirmation_answer(self, key: CacheKey) -> Mapping[str, Any] | None:
        """The introspection's answer for a confirmation. One that waited ``timeout`` for a
        slot of the concurrency cap (a flood of new tokens) queues again with a new deadline
        while its token is pending and unexpired: never dropped, later requests wait for it."""
        assert self._validator is not None
        assert self._confirmations is not None
        while True:
            deadline = self._monotonic() + self._timeout
            try:
                return await self._validator.validate(key.token, deadline)
            except QueueTimeout as exc:
                if not self._confirmations.still_pending(key.digest):
                    raise
                self._metrics.confirmations_requeued += 1
                if self._monotonic() < deadline:  # refused before its deadline: never spin
                    await asyncio.sleep(exc.retry_after or 1.0)

    async def _revoked(self, key: CacheKey, deadline: float) -> None:
        """A token served from its JWT is inactive: dropped everywhere (the shared tier's
        delete tells the other replicas), introspected first."""
        key = self._with_expiry(key)  # read before forget() drops what knows it
        self.forget(key.digest)  # marks it suspect too
        await self._inactive(key, deadline, held=True, note=": dropped everywhere")

    async def _inactive(
        self, key: CacheKey, deadline: float, *, held: bool | None, note: str = ""
    ) -> None:
        digest = key.digest
        logger.debug("token %s is inactive%s", digest[:4].hex(), note)
        key = self._with_expiry(key)  # read before the stale copy goes
        self._negative.add(digest)
        self._local.discard(digest)  # no stale copy of a revoked token may survive
        if self._shared is None:
            return
        if held is None:  # not read for use (cache_ttl=0): only to know whether to tell others
            held = isinstance(
                await self._shared_call(partial(self._shared.read, key), deadline), CacheEntry
            )
        # Only a token some tier held can be held elsewhere: garbage tokens publish nothing.
        if held:
            await self._shared_call(partial(self._shared.delete, key), deadline, "delete")

    # Invalidation ------------------------------------------------------------------------
    async def invalidate(self, token: str) -> None:
        """Drop ``token`` here, then in the shared tier (which tells the other replicas);
        raises ``SharedCacheUnavailable`` when the shared tier cannot confirm in time."""
        digest = self.key(token)
        key = self._with_expiry(CacheKey(digest, token))  # read before forget() drops it
        self.forget(digest)
        self._negative.discard(digest)
        shared = self._shared
        if shared is not None:
            await self._confirm_shared("the invalidation", lambda: shared.delete(key))

    def forget(self, digest: bytes) -> None:
        """Drop a token's active entry (also when another replica revoked or invalidated it);
        its negative entry stays ("inactive" is what that replica learned too). In hybrid mode
        the token becomes suspect: introspected before it is served, on any replica."""
        flight = self._in_flight.get(digest)
        if flight is not None:
            flight.invalidations += 1
        self._flight.forget(digest)
        self._local.discard(digest)
        if self._confirmations is not None:
            self._confirmations.forget(digest)  # suspect too

    def forget_local_jwts(self) -> None:
        """Drop every locally verified entry (the issuer stopped publishing a key: what it
        signed must be verified again, and fail)."""
        self._local.discard_where(lambda entry: entry.principal.verified_by == "jwt")
        if self._confirmations is not None:
            self._confirmations.forget_served()  # verified again: the key is gone, so introspected

    async def clear(self) -> None:
        """Drop everything here, then in the shared tier; raises ``SharedCacheUnavailable``
        when the shared tier cannot confirm in time."""
        self.forget_all()
        shared = self._shared
        if shared is not None:
            await self._confirm_shared("the clear", shared.clear)

    def forget_all(self) -> None:
        for flight in self._in_flight.values():
            flight.invalidations += 1
        self._flight.forget_all()
        self._negative.clear()
        self._local.discard_all()
        if self._confirmations is not None:  # their confirmations are void: introspect first
            self._confirmations.forget_all()

    async def aclose(self) -> None:
        """Cancel the background introspections still running, close the shared tier."""
        if self._confirmations is not None:
            await self._confirmations.aclose()
        await self._flight.aclose()
        if self._shared is not None:
            await self._shared.aclose()

    # Sizes, for the metrics ---------------------------------------------------------------
    @property
    def sizes(self) -> tuple[int, int, int]:
        """Entries in the local and negative caches, validations in flight (background too)."""
        in_flight = self._flight.in_flight()
        if self._confirmations is not None:
            in_flight += self._confirmations.in_flight()
        return len(self._local), len(self._negative), in_flight

    # Helpers -----------------------------------------------------------------------------
    def _lookup(self, digest: bytes) -> _InFlight:
        """A lookup of ``digest``, voided if ``invalidations`` moves on from the count it
        entered with. Only ever as ``with self._lookup(digest)``: the count is taken on entry,
        so no ``await`` may come between the call and the ``with``."""
        flight = self._in_flight.get(digest)
        if flight is None:
            began, epoch = self._clock(), self._revocations.epoch
            flight = self._in_flight[digest] = _InFlight(self._in_flight, digest, began, epoch)
        return flight

    def _with_expiry(self, key: CacheKey) -> CacheKey:
        """``key`` with the token's ``exp`` when this process knows it (a verdict or a JWT
        served before its confirmation), so that its tombstone can outlive ``tombstone_ttl``
        for as long as the token could be presented: replicas started hours later see it."""
        record = None if self._confirmations is None else self._confirmations.record(key.digest)
        if record is not None:
            principal: Principal | None = record.principal
        else:
            entry = self._local.lookup(key.digest, self._clock())
            principal = None if entry is None else entry.principal
        if principal is None or principal.expires_at is None:
            return key
        return CacheKey(key.digest, key.token, principal.expires_at.timestamp())

    async def _confirm_shared(self, what: str, operation: Callable[[], Awaitable[None]]) -> None:
        """Run a change of the shared tier until it succeeds, retrying within ``timeout``."""
        failure: Exception | None = None

        async def attempts() -> None:
            nonlocal failure
            pause = _FIRST_RETRY
            while True:
                try:
                    await operation()
                    return
                except Exception as exc:  # any failure: try again while the deadline allows
                    failure = exc
                await asyncio.sleep(pause)
                pause = min(pause * 2, _LAST_RETRY)

        try:
            await asyncio.wait_for(attempts(), timeout=self._timeout)
        except asyncio.TimeoutError:
            cause = "timed out" if failure is None else type(failure).__name__
            raise SharedCacheUnavailable(
                f"the shared cache did not confirm {what} within {self._timeout:g} s ({cause}): "
                "this process dropped its copy, other replicas may hold theirs until their "
                "cache_ttl runs out; call it again"
            ) from None

    async def _shared_call(
        self, call: Callable[[], Awaitable[T]], deadline: float, what: str | None = None
    ) -> T | None:
        """A call to the shared tier (a read, or the ``what`` write) within the request's
        deadline; a failure is logged, and a shared tier that is down or slow is a miss, not
        an outage: ``None``. ``call`` is made inside, so a tier that raises before it awaits is
        a miss too."""
        try:
            return await asyncio.wait_for(call(), timeout=max(deadline - self._monotonic(), 0.0))
        except Exception as exc:
            if what is None:
                self._shared_log(
                    "shared introspection cache unavailable (%s): going to the IdP",
                    type(exc).__name__,
                )
            else:
                self._shared_log(
                    "shared introspection cache unavailable (%s failed: %s)",
                    what,
                    type(exc).__name__,
                )
            return None
