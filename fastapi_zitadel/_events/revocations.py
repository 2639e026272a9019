"""Revocation markers: what ZITADEL's events say about tokens, checked against verdicts.

A marker never names a token digest (an event does not know our cache keys); it names what a
``Principal`` carries: its user (``sub``), its OIDC session (read off ``jti``), its token id.

* *refused*: a user deactivated, locked, removed or signed out, an OIDC session's tokens
  revoked, a token removed. Every token of that user (session) issued at or before the event
  is refused until its own ``exp``, as ZITADEL's introspection does; a later reactivation
  revives none of them. A token without ``iat`` verified before the event is dropped and
  verified again; one verified locally without ``iat`` is refused.
* *stale*: a user's grants changed. Verdicts of that user verified before the event are dropped
  and verified again (roles re-read); the token stays good. A grant we cannot map to a user
  makes every verdict verified before the event stale (one number: O(1), as ``clear()``).
* *roles changed*: a grant of the user changed, was removed or deactivated. A JWT issued
  before carries roles that may be gone and cannot be re-read from it: ``ROLES_CHANGED`` tells
  the pipeline to ask ZITADEL instead (hybrid), or to refuse it (local: a new token carries
  the roles of now).

``epoch`` moves with every marker applied. The cache stamps each entry with the epoch it was
checked at, and the hot path re-checks an entry only when the two differ: with markers in
place and no new event, a cache hit costs one integer comparison more.

Markers live ``MARKER_TTL`` seconds (longer than ZITADEL's 12 h default token lifetime, by a
wide margin), at most a million per kind (then the oldest go); mappings (grant to user, login
session to OIDC sessions) are kept up to a million each.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from fastapi_zitadel._principal import Principal

from .payload import ZitadelEvent

__all__ = [
    "MARKER_TTL",
    "OK",
    "REFUSED",
    "REVOCATION_EVENTS",
    "ROLES_CHANGED",
    "STALE",
    "Marker",
    "RevocationFeed",
    "Revocations",
    "oidc_session_of",
]

MARKER_TTL = 7 * 86_400.0
OK, STALE, REFUSED, ROLES_CHANGED = 0, 1, 2, 3
_PRUNE_EVERY = 60.0
# Entries kept per table, at most (then the oldest go): markers of a week of logouts on a big
# instance fit, and a marker that old has outlived the tokens it was about (12 h by default).
_MAX_ENTRIES = 1_000_000

Kind = Literal["user", "roles", "session", "token", "all", "grant", "login"]

USER_EVENTS = frozenset(
    {"user.deactivated", "user.locked", "user.removed", "user.human.signed.out"}
)
SESSION_EVENTS = frozenset(
    {"oidc_session.access_token.revoked", "oidc_session.refresh_token.revoked"}
)
TOKEN_EVENTS = frozenset({"user.token.removed", "user.pat.removed"})
GRANT_EVENTS = frozenset(
    {
        "user.grant.added",
        "user.grant.changed",
        "user.grant.cascade.changed",
        "user.grant.removed",
        "user.grant.cascade.removed",
        "user.grant.deactivated",
    }
)
REVOCATION_EVENTS: tuple[str, ...] = (
    *sorted(USER_EVENTS),
    *sorted(SESSION_EVENTS),
    "oidc_session.added",
    "session.terminated",
    *sorted(TOKEN_EVENTS),
    *sorted(GRANT_EVENTS),
)
"""The event types the receiver acts on: ZitadelIntrospection's executions should send these."""


def oidc_session_of(token_id: str) -> str | None:
    """The OIDC session id in a V2 token id (``V2_<session>.at_<id>``, or ``-at_``), without
    its ``V2_`` prefix; ``None`` for other tokens."""
    if not token_id.startswith("V2_"):
        return None
    rest = token_id[3:]
    cut = rest.find("-at_")
    if cut < 0:
        cut = rest.find(".at_")
    return rest[:cut] if cut > 0 else None


def _session_key(aggregate_id: str) -> str:
    return aggregate_id.removeprefix("V2_")


@dataclass(frozen=True, slots=True)
class Marker:
    """One fact from an event, as it travels between replicas. ``issued_before`` is on
    ZITADEL's clock (the event's ``created_at``, compared with a token's ``iat``);
    ``verified_before`` on ours (when received, compared with when a verdict was made).
    ``value`` is the mapped id of ``grant`` and ``login`` markers."""

    kind: Kind
    key: str
    issued_before: float = 0.0
    verified_before: float = 0.0
    value: str = ""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes | str) -> Marker:
        """A marker read back; ``ValueError`` if it is not one."""
        raw: Any = json.loads(data)
        if not isinstance(raw, dict) or raw.get("kind") not in _KINDS:
            raise ValueError("not a revocation marker")
        return cls(
            kind=raw["kind"],
            key=str(raw.get("key", "")),
            issued_before=float(raw.get("issued_before", 0.0)),
            verified_before=float(raw.get("verified_before", 0.0)),
            value=str(raw.get("value", "")),
        )


_KINDS = frozenset(get_args(Kind))


class RevocationFeed(abc.ABC):
    """How markers reach the other replicas, and replicas that start later (the shared tier).
    ``publish`` stores an event's markers once per event ``identity`` across replicas and tells
    the others; ``False`` when stored before (a replay through another replica); it raises when
    it cannot (the receiver then answers 503). ``start`` replays what is stored into
    ``revocations`` (within ``timeout``) and keeps listening until ``aclose``."""

    @abc.abstractmethod
    async def publish(self, identity: str, markers: Sequence[Marker]) -> bool: ...

    @abc.abstractmethod
    async def start(self, revocations: Revocations, *, timeout: float) -> None: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...


class Revocations:
    """The markers this process knows, from its own receiver and from other replicas."""

    def __init__(self, *, clock: Callable[[], float], ttl: float = MARKER_TTL) -> None:
        self.epoch = 0
        self._clock = clock
        self._ttl = ttl
        self._users: dict[str, tuple[float, float, float]] = {}  # issued, verified, until
        self._roles: dict[str, tuple[float, float, float]] = {}  # issued, verified, until
        self._sessions: dict[str, tuple[float, float, float]] = {}
        self._tokens: dict[str, float] = {}  # until
        self._all = 0.0
        self._grants: dict[str, str] = {}  # grant id -> user id
        self._logins: dict[str, set[str]] = {}  # login session -> OIDC sessions
        self._next_prune = clock() + _PRUNE_EVERY

    def __len__(self) -> int:
        return len(self._users) + len(self._roles) + len(self._sessions) + len(self._tokens)

    # What an event means ----------------------------------------------------------------
    def markers(self, event: ZitadelEvent, received_at: float) -> list[Marker] | None:
        """The markers ``event`` stands for (possibly none), or ``None`` for an event type
        this library does not act on."""
        kind = event.event_type
        issued = received_at if event.created_at is None else event.created_at
        key = event.aggregate_id
        if kind in USER_EVENTS:
            return [Marker("user", key, issued, received_at)]
        if kind in SESSION_EVENTS:
            return [Marker("session", _session_key(key), issued, received_at)]
        if kind in TOKEN_EVENTS:
            token_id = event.payload.get("tokenId")
            if not isinstance(token_id, str) or not token_id:
                # v4.1.0's empty payload names no token: the user's verdicts are dropped, so
                # that ZITADEL's introspection decides again (a JWT in local mode cannot)
                return [Marker("roles", key, verified_before=received_at)]
            return [Marker("token", token_id, issued, received_at)]
        if kind == "oidc_session.added":
            login = event.payload.get("sessionID")
            if not isinstance(login, str) or not login:
                return []
            return [Marker("login", login, value=_session_key(key))]
        if kind == "session.terminated":
            return [
                Marker("session", session, issued, received_at)
                for session in sorted(self._logins.get(key, ()))
            ]
        if kind in GRANT_EVENTS:
            found: list[Marker] = []
            user = self._grants.get(key)
            if kind == "user.grant.added":
                named = event.payload.get("userId")
                if isinstance(named, str) and named:
                    found.append(Marker("grant", key, value=named))
                    user = named
            if user is None:
                found.append(Marker("all", "", verified_before=received_at))
            else:
                # a grant added takes nothing away: a JWT's roles stay true
                cut = 0.0 if kind == "user.grant.added" else issued
                found.append(Marker("roles", user, cut, received_at))
            return found
        return None

    # Applying markers -------------------------------------------------------------------
    def apply(self, markers: Iterable[Marker]) -> None:
        """Take ``markers`` in (idempotent: applying one twice changes nothing)."""
        now = self._clock()
        until = now + self._ttl
        for marker in markers:
            self._apply(marker, until)
        self.epoch += 1
        if now >= self._next_prune:
            self._prune(now)

    def _apply(self, marker: Marker, until: float) -> None:
        key, kind = marker.key, marker.kind
        table = {"user": self._users, "session": self._sessions, "roles": self._roles}.get(kind)
        if table is not None:
            _bounded_put(table, key, _later(table.get(key), marker, until))
        elif kind == "token":
            _bounded_put(self._tokens, key, until)
        elif kind == "all":
            self._all = max(self._all, marker.verified_before)
        elif kind == "grant":
            _bounded_put(self._grants, key, marker.value)
        elif kind == "login":
            sessions = self._logins.get(key)
            if sessions is None:
                _bounded_put(self._logins, key, {marker.value})
            else:
                sessions.add(marker.value)

    def _prune(self, now: float) -> None:
        self._next_prune = now + _PRUNE_EVERY
        for table in (self._users, self._roles, self._sessions):
            for key in [k for k, value in table.items() if value[-1] <= now]:
                del table[key]
        for key in [k for k, until in self._tokens.items() if until <= now]:
            del self._tokens[key]

    # Checking a verdict -----------------------------------------------------------------
    def verdict(self, principal: Principal, verified_at: float) -> int:
        """``OK``, ``STALE`` (verify again), ``ROLES_CHANGED`` (a JWT whose roles may be gone:
        ask ZITADEL, or refuse it) or ``REFUSED`` (revoked) for a verdict about ``principal``
        made at ``verified_at`` (our clock)."""
        result = STALE if verified_at <= self._all else OK
        subject = principal.subject
        if subject is not None:
            refused = self._users.get(subject)
            if refused is not None and _issued_before(principal, verified_at, refused):
                return REFUSED
            roles = self._roles.get(subject)
            if roles is not None:
                cut = roles[0] > 0.0 and _issued_before(principal, 0.0, roles)
                if cut and principal.verified_by == "jwt":
                    result = ROLES_CHANGED  # not returned yet: a session may refuse it
                elif verified_at <= roles[1]:
                    result = STALE
        token_id = principal.token_id
        if token_id is not None:
            if token_id in self._tokens:
                return REFUSED
            session = oidc_session_of(token_id)
            if session is not None:
                refused = self._sessions.get(session)
                if refused is not None and _issued_before(principal, verified_at, refused):
                    return REFUSED
        return result


def _later(
    known: tuple[float, float, float] | None, marker: Marker, until: float
) -> tuple[float, float, float]:
    if known is None:
        return (marker.issued_before, marker.verified_before, until)
    return (
        max(known[0], marker.issued_before),
        max(known[1], marker.verified_before),
        max(known[2], until),
    )


def _issued_before(
    principal: Principal, verified_at: float, marker: tuple[float, float, float]
) -> bool:
    issued_at = principal.issued_at
    if issued_at is not None:
        return issued_at.timestamp() <= marker[0]
    if principal.verified_by == "jwt":
        return True  # a JWT without iat cannot show it is newer: fail closed
    return verified_at <= marker[1]  # introspected again after the event: ZITADEL decided


def _bounded_put(table: dict[str, Any], key: str, value: Any) -> None:
    table.pop(key, None)
    if len(table) >= _MAX_ENTRIES:
        del table[next(iter(table))]  # the oldest
    table[key] = value
