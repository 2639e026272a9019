"""The verified caller, built from an active introspection answer.

One ``Principal`` is cached and handed to every request that presents the same token, so it is
deeply immutable: a handler that tried to add a role would otherwise grant it to the next
request too. Parsing accepts every shape ZITADEL and other RFC 7662 servers produce, and drops
descriptive claims of the wrong type; claims that decide validity (``exp``, ``aud``...) are
checked strictly, because guessing there could let a bad token through.
"""

from __future__ import annotations

import base64
import binascii
import functools
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

ROLES_CLAIM = "urn:zitadel:iam:org:project:roles"
METADATA_CLAIM = "urn:zitadel:iam:user:metadata"
ORG_ID_CLAIM = "urn:zitadel:iam:user:resourceowner:id"
ORG_NAME_CLAIM = "urn:zitadel:iam:user:resourceowner:name"
ORG_DOMAIN_CLAIM = "urn:zitadel:iam:user:resourceowner:primary_domain"


def project_roles_claim(project_id: str) -> str:
    """The claim that holds the roles of one project: ``urn:zitadel:iam:org:project:{id}:roles``."""
    return f"urn:zitadel:iam:org:project:{project_id}:roles"


class MalformedClaimError(ValueError):
    """A claim that decides validity has a shape no server should send."""

    def __init__(self, claim: str, expected: str) -> None:
        self.claim = claim
        super().__init__(f"claim {claim!r} must be {expected}")


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


_INTERN_LIMIT = 100  # longer strings (tokens' own ids, pictures) are rarely shared


def _freeze(value: Any) -> Any:
    """A read-only deep copy, with mapping keys and short strings interned."""
    if isinstance(value, Mapping):
        if value and all(_is_org_map(item) for item in value.values()):
            return _shared_roles(value)  # ZITADEL's role claims: shared between users
        return MappingProxyType(
            {
                sys.intern(key) if isinstance(key, str) else key: _freeze(item)
                for key, item in value.items()
            }
        )
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, str) and len(value) <= _INTERN_LIMIT:
        return sys.intern(value)
    return value


_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return _EMPTY


# Pydantic would copy a mapping into a plain dict; freezing after validation keeps it read-only.
FrozenMapping = Annotated[Mapping[str, Any], AfterValidator(_freeze), PlainSerializer(_thaw)]


class Organization(BaseModel):
    """The organization a user belongs to (ZITADEL's resource owner)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str | None = None
    primary_domain: str | None = None


class Principal(BaseModel):
    """Who called, as the identity provider vouched for it at introspection time.

    ``roles`` maps a project role to the organizations that granted it:
    ``{"admin": {"<org id>": "<org primary domain>"}}``. ``claims`` holds every claim of the
    introspection answer, for anything not modelled here.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    subject: str | None = None
    client_id: str | None = None
    username: str | None = None
    scopes: frozenset[str] = frozenset()
    audience: tuple[str, ...] = ()
    issuer: str | None = None
    expires_at: datetime | None = None
    issued_at: datetime | None = None
    not_before: datetime | None = None
    token_id: str | None = None
    token_type: str | None = None
    name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    preferred_username: str | None = None
    email: str | None = None
    email_verified: bool | None = None
    locale: str | None = None
    organization: Organization | None = None
    roles: FrozenMapping = Field(default_factory=_empty)
    metadata: FrozenMapping = Field(default_factory=_empty)
    claims: FrozenMapping = Field(default_factory=_empty)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], *, project_id: str | None = None) -> Principal:
        """Build a principal from an active introspection answer.

        Raises ``MalformedClaimError`` when a validity-deciding claim has the wrong type.

        Every cached token holds one of these, so they are built lean (see the memory figures
        in BENCHMARKS.md): claim names and short values are interned, so thousands of entries
        share one copy of ``"urn:zitadel:iam:user:resourceowner:primary_domain"``; identical
        scope sets, audiences, organizations and role maps are shared objects; and the fields
        are checked here, so pydantic's validation is skipped (``model_construct``).
        """
        claims = _freeze(claims)
        username = _text(claims, "username")
        preferred_username = _text(claims, "preferred_username")
        return cls.model_construct(
            _fields_set=_FROM_CLAIMS_FIELDS,
            subject=_strict_text(claims, "sub"),
            client_id=_strict_text(claims, "client_id"),
            username=username or preferred_username,
            scopes=_scopes(claims.get("scope")),
            audience=_audience(claims.get("aud")),
            issuer=_strict_text(claims, "iss"),
            expires_at=_time(claims, "exp"),
            issued_at=_time(claims, "iat"),
            not_before=_time(claims, "nbf"),
            token_id=_text(claims, "jti"),
            token_type=_text(claims, "token_type"),
            name=_text(claims, "name"),
            given_name=_text(claims, "given_name"),
            family_name=_text(claims, "family_name"),
            preferred_username=preferred_username,
            email=_text(claims, "email"),
            email_verified=_flag(claims, "email_verified"),
            locale=_text(claims, "locale"),
            organization=_organization(claims),
            roles=_shared_roles(_roles(claims, project_id)),
            metadata=MappingProxyType(_metadata(claims.get(METADATA_CLAIM))),
            claims=claims,
        )

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Principal:
        return self  # deeply immutable: a copy could never differ

    # Scope checks -----------------------------------------------------------------------
    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def has_all_scopes(self, scopes: Iterable[str]) -> bool:
        return self.scopes.issuperset(scopes)

    def has_any_scope(self, scopes: Iterable[str]) -> bool:
        return not self.scopes.isdisjoint(scopes)

    # Role checks ------------------------------------------------------------------------
    def has_role(self, role: str, org_id: str | None = None) -> bool:
        """Whether the user holds ``role``; within organization ``org_id`` when given."""
        orgs = self.roles.get(role)
        if orgs is None:
            return False
        return org_id is None or org_id in orgs

    def has_any_role(self, roles: Iterable[str], org_id: str | None = None) -> bool:
        return any(self.has_role(role, org_id) for role in roles)

    def has_all_roles(self, roles: Iterable[str], org_id: str | None = None) -> bool:
        return all(self.has_role(role, org_id) for role in roles)

    def roles_in_org(self, org_id: str) -> frozenset[str]:
        """The roles granted to the user by one organization."""
        return frozenset(role for role, orgs in self.roles.items() if org_id in orgs)

    def metadata_text(self, key: str) -> str | None:
        """A metadata value decoded as UTF-8, or ``None`` when absent or not text."""
        raw = self.metadata.get(key)
        if raw is None:
            return None
        try:
            return str(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return None


class _SharedFieldSet(set[str]):
    """The fields-set shared by every principal built from claims (one set, not one per
    cached token); read-only, so no principal can change what another reports."""

    def _read_only(self, *args: object) -> None:
        raise TypeError("the fields set of a Principal is read-only")

    def __copy__(self) -> set[str]:  # model_copy() gets a plain set it may change
        return set(self)

    def __deepcopy__(self, memo: object) -> set[str]:
        return set(self)

    add = discard = remove = pop = clear = update = _read_only  # type: ignore[assignment]
    difference_update = intersection_update = symmetric_difference_update = _read_only
    __ior__ = __iand__ = __isub__ = __ixor__ = _read_only  # type: ignore[assignment]


_FROM_CLAIMS_FIELDS: set[str] = _SharedFieldSet(Principal.model_fields)

# Claim readers ---------------------------------------------------------------------------


def _text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) else None


def _strict_text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None or isinstance(value, str):
        return value
    raise MalformedClaimError(name, "a string")


def _flag(claims: Mapping[str, Any], name: str) -> bool | None:
    value = claims.get(name)
    return value if isinstance(value, bool) else None


def _time(claims: Mapping[str, Any], name: str) -> datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python; a ``true`` expiry is nonsense, not second 1 of 1970.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedClaimError(name, "a number of seconds since the epoch")
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise MalformedClaimError(name, "a representable time") from None


@functools.lru_cache(maxsize=1024)
def _scope_set(value: str) -> frozenset[str]:
    """One frozenset per distinct scope string: most tokens share a handful of them."""
    return frozenset(sys.intern(scope) for scope in value.split())


@functools.lru_cache(maxsize=1024)
def _shared_tuple(value: tuple[str, ...]) -> tuple[str, ...]:
    return value


@functools.lru_cache(maxsize=1024)
def _shared_organization(org_id: str, name: str | None, domain: str | None) -> Organization:
    return Organization(id=org_id, name=name, primary_domain=domain)


_ROLE_MAPS: dict[Any, Mapping[str, Mapping[str, str]]] = {}


def _is_org_map(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _shared_roles(roles: Mapping[str, Mapping[str, str]]) -> Mapping[str, Mapping[str, str]]:
    """The same read-only role map (role -> {org: domain}) for every user who has it."""
    if not roles:
        return _EMPTY
    signature = tuple((role, tuple(orgs.items())) for role, orgs in roles.items())
    shared = _ROLE_MAPS.get(signature)
    if shared is None:
        if len(_ROLE_MAPS) >= 1024:
            _ROLE_MAPS.clear()
        shared = _ROLE_MAPS[signature] = MappingProxyType(
            {
                sys.intern(role): MappingProxyType(
                    {sys.intern(org): sys.intern(domain) for org, domain in orgs.items()}
                )
                for role, orgs in roles.items()
            }
        )
    return shared


def _scopes(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return _scope_set(value)
    # Some servers send a JSON array; accept it only if every item is a string.
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise MalformedClaimError("scope", "a space-delimited string")


def _audience(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return _shared_tuple((value,))
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return _shared_tuple(tuple(value))
    raise MalformedClaimError("aud", "a string or an array of strings")


def _organization(claims: Mapping[str, Any]) -> Organization | None:
    org_id = _text(claims, ORG_ID_CLAIM)
    if org_id is None:
        return None
    return _shared_organization(
        org_id, _text(claims, ORG_NAME_CLAIM), _text(claims, ORG_DOMAIN_CLAIM)
    )


def _roles(claims: Mapping[str, Any], project_id: str | None) -> dict[str, dict[str, str]]:
    """Project roles, from the configured project's claim when known.

    ZITADEL may also send other projects' role claims; taking the first ``...:roles`` claim
    found (as one peer does) can grant roles of the wrong project.
    """
    # With a project id, only that project's claim counts: ZITADEL's generic claim holds the
    # roles of the project that *requested* the token, which may be another one.
    value = claims.get(project_roles_claim(project_id) if project_id else ROLES_CLAIM)
    if isinstance(value, (list, tuple)):  # other servers: a plain list of role names
        return {role: {} for role in value if isinstance(role, str)}
    if not isinstance(value, Mapping):
        return {}
    roles: dict[str, dict[str, str]] = {}
    for role, orgs in value.items():
        if not isinstance(role, str):
            continue
        if isinstance(orgs, Mapping):  # anything else is not ZITADEL's shape: no role
            roles[role] = {
                org: domain
                for org, domain in orgs.items()
                if isinstance(org, str) and isinstance(domain, str)
            }
    return roles


def _metadata(value: Any) -> dict[str, bytes]:
    """ZITADEL metadata: values are base64url without padding; undecodable ones are skipped."""
    if not isinstance(value, Mapping):
        return {}
    decoded: dict[str, bytes] = {}
    for key, encoded in value.items():
        if not isinstance(key, str) or not isinstance(encoded, str):
            continue
        try:
            data = encoded.encode("ascii")
            decoded[key] = base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
        except (UnicodeEncodeError, binascii.Error, ValueError):
            continue
    return decoded
