"""The verified caller: who it is, what it may do, and the helpers routes use to ask. One
``Principal`` is cached and handed to every request that presents the same token, so it is deeply
immutable: a handler that tried to add a role would otherwise grant it to the next request too. How
claims are read is in ``_claims``; how cached principals stay small, in ``_interning``."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, create_model

from . import _claims as read
from ._interning import EMPTY, SHARED, SharedFieldSet, freeze, thaw

__all__ = ["Actor", "Organization", "Principal", "VerifiedBy"]

VerifiedBy = Literal["introspection", "jwt"]
"""How a principal's claims were obtained: ZITADEL's introspection answer, or a JWT access
token whose signature was checked locally against the issuer's keys."""

# Pydantic would copy a mapping into a plain dict; freezing after validation keeps it read-only.
_freeze, _thaw = AfterValidator(freeze), PlainSerializer(thaw)
RoleMap = Annotated[Mapping[str, Mapping[str, str]], _freeze, _thaw]
Metadata = Annotated[Mapping[str, bytes], _freeze, _thaw]
Claims = Annotated[Mapping[str, Any], _freeze, _thaw]


def _empty() -> Mapping[str, Any]:
    return EMPTY


class Organization(BaseModel):
    """The organization a user belongs to (ZITADEL's resource owner)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str | None = None
    primary_domain: str | None = None


class Actor(BaseModel):
    """Who acts for the token's subject (the ``act`` claim of RFC 8693 §4.1). ZITADEL sets it on
    tokens from a token exchange with an actor token (impersonation or delegation): ``subject`` is
    the actor's user id, ``issuer`` the instance that vouched for it, and ``actor`` whoever acted
    for the actor in turn (a chain of delegations)."""

    model_config = ConfigDict(frozen=True)

    subject: str | None = None
    issuer: str | None = None
    actor: Actor | None = None


class Principal(BaseModel):
    """Who called, as the identity provider vouched for it. ``roles`` maps a project role to the
    organizations that granted it: ``{"admin": {"<org id>": "<org primary domain>"}}``. With an
    ``actor`` (a token exchanged with an actor token), the caller is ``actor.subject`` acting for
    ``subject``. ``claims`` holds every claim of the answer, for anything not modelled here.
    ``verified_by`` says where the claims come from: ``"introspection"`` (ZITADEL's answer) or
    ``"jwt"`` (a JWT access token verified locally, which carries fewer claims: no profile,
    e-mail or phone)."""

    model_config = ConfigDict(frozen=True)

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
    actor: Actor | None = None
    roles: RoleMap = Field(default_factory=_empty)
    metadata: Metadata = Field(default_factory=_empty)
    claims: Claims = Field(default_factory=_empty)
    verified_by: VerifiedBy = "introspection"

    @classmethod
    def from_claims(
        cls,
        claims: Mapping[str, Any],
        *,
        project_id: str | None = None,
        verified_by: VerifiedBy = "introspection",
    ) -> Principal:
        """Build a principal from an active answer's claims (or a verified JWT's). Raises
        ``MalformedClaimError`` when a validity-deciding claim has the wrong type. Fields are
        read and checked here, so pydantic's validation is skipped."""
        claims = freeze(claims)
        preferred_username = read.text(claims, "preferred_username")
        client_id = read.strict_text(claims, "client_id")
        if client_id is None and verified_by == "jwt":  # ZITADEL's docs name azp in its JWTs
            client_id = read.text(claims, "azp")
        organization = None
        org_id = read.text(claims, read.ORG_ID_CLAIM)
        if org_id is not None:
            org_name = read.text(claims, read.ORG_NAME_CLAIM)
            domain = read.text(claims, read.ORG_DOMAIN_CLAIM)
            organization = SHARED.get(
                "organizations",
                (org_id, org_name, domain),
                lambda: Organization(id=org_id, name=org_name, primary_domain=domain),
            )
        actor = None  # nested from the last of the chain, which lists the current actor first
        for subject, issuer in reversed(read.actors(claims.get(read.ACTOR_CLAIM))):
            actor = Actor.model_construct(subject=subject, issuer=issuer, actor=actor)
        fields: dict[str, Any] = dict(
            subject=read.strict_text(claims, "sub"),
            client_id=client_id,
            username=read.text(claims, "username") or preferred_username,
            scopes=read.scopes(claims.get("scope")),
            audience=read.audience(claims.get("aud")),
            issuer=read.strict_text(claims, "iss"),
            expires_at=read.time(claims, "exp"),
            issued_at=read.time(claims, "iat"),
            not_before=read.time(claims, "nbf"),
            token_id=read.text(claims, "jti"),
            token_type=read.text(claims, "token_type"),
            name=read.text(claims, "name"),
            given_name=read.text(claims, "given_name"),
            family_name=read.text(claims, "family_name"),
            preferred_username=preferred_username,
            email=read.text(claims, "email"),
            email_verified=read.flag(claims, "email_verified"),
            locale=read.text(claims, "locale"),
            organization=organization,
            actor=actor,
            roles=SHARED.roles(read.roles(claims, project_id)),
            metadata=MappingProxyType(read.metadata(claims.get(read.METADATA_CLAIM))),
            claims=claims,
            verified_by=verified_by,
        )
        if cls is Principal:
            # What pydantic's ``model_construct(_fields_set=..., **fields)`` does given every
            # field in field order, without its loop over aliases and defaults (a third of a
            # cold JWT verification). ``tests/test_principal_construct.py`` checks that both
            # make the same object.
            principal = cls.__new__(cls)
            object.__setattr__(principal, "__dict__", fields)
            object.__setattr__(principal, "__pydantic_fields_set__", _FROM_CLAIMS)
            object.__setattr__(principal, "__pydantic_extra__", None)
            object.__setattr__(principal, "__pydantic_private__", None)
            return principal
        # A principal_class= subclass: its own typed claims, validated by pydantic (it raises).
        model = _custom_model(cls)
        custom = {} if model is None else dict(model.model_validate(thaw(claims)))
        return cls.model_construct(_fields_set=set(cls.model_fields), **fields, **custom)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Principal:
        return self  # deeply immutable, like a tuple: a copy could never differ

    # Scopes ------------------------------------------------------------------------------
    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def has_all_scopes(self, scopes: Iterable[str]) -> bool:
        return self.scopes.issuperset(scopes)

    def has_any_scope(self, scopes: Iterable[str]) -> bool:
        return not self.scopes.isdisjoint(scopes)

    # Roles -------------------------------------------------------------------------------
    def has_role(self, role: str, org_id: str | None = None) -> bool:
        """Whether the user holds ``role``; granted by organization ``org_id`` when given."""
        orgs = self.roles.get(role)
        return orgs is not None and (org_id is None or org_id in orgs)

    def has_all_roles(self, roles: Iterable[str], org_id: str | None = None) -> bool:
        return all(self.has_role(role, org_id) for role in roles)

    def has_any_role(self, roles: Iterable[str], org_id: str | None = None) -> bool:
        return any(self.has_role(role, org_id) for role in roles)

    def roles_in_org(self, org_id: str) -> frozenset[str]:
        """The roles granted to the user by one organization."""
        return frozenset(role for role, orgs in self.roles.items() if org_id in orgs)

    def metadata_text(self, key: str) -> str | None:
        """A metadata value decoded as UTF-8, or ``None`` when absent or not text."""
        try:
            return self.metadata[key].decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            return None


_FROM_CLAIMS = SharedFieldSet(Principal.model_fields)


@functools.cache
def _custom_model(cls: type[Principal]) -> type[BaseModel] | None:
    """The fields a ``Principal`` subclass adds, as a model of their own (validated from the
    claim named by each field's alias, or its name)."""
    extra = {
        name: (field.annotation, field)
        for name, field in cls.model_fields.items()
        if name not in Principal.model_fields
    }
    if not extra:
        return None
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{cls.__name__}CustomClaims", __config__=ConfigDict(populate_by_name=True), **extra
    )
