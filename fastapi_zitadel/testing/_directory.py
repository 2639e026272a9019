"""The stand-in's world: organizations, projects, API applications, users and their tokens.

Ids are numeric strings like ZITADEL's; keys are RSA keys generated on the spot and handed out
as ZITADEL key files, so the code under test loads them through its normal path.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

_ids = itertools.count(310_000_000_000_000_000)


def new_id() -> str:
    return str(next(_ids))


def reserve_ids(up_to: int) -> None:
    """Make ``new_id`` hand out only ids above ``up_to`` (ids restored from a saved state)."""
    global _ids
    _ids = itertools.count(max(next(_ids), up_to + 1))


def generate_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pkcs1_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")


def _key_file(owner: Application | User, kind: str, no_key: str, **ids: str) -> dict[str, str]:
    """The JSON key file ZITADEL's console would offer for download."""
    if owner.private_key is None or owner.key_id is None:
        raise ValueError(no_key)
    return {"type": kind, "keyId": owner.key_id, "key": pkcs1_pem(owner.private_key), **ids}


@dataclass(frozen=True)
class StandInOrganization:
    id: str
    name: str
    primary_domain: str


@dataclass(frozen=True)
class Project:
    id: str
    name: str


@dataclass
class Application:
    """A client of the instance, with a key file or a secret (or, for PKCE, neither)."""

    id: str
    client_id: str
    project: Project
    key_id: str | None = None
    private_key: rsa.RSAPrivateKey | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)

    @property
    def key_file(self) -> dict[str, str]:
        no_key = "this application has no key: it authenticates otherwise"
        return _key_file(self, "application", no_key, appId=self.id, clientId=self.client_id)


@dataclass
class ApiApplication(Application):
    """An API application of a project: the introspecting client."""


@dataclass
class WebApplication(Application):
    """An OIDC application of a project. By default a web (user agent) application with PKCE
    and no secret, as Swagger UI logs in with: authorization code flow, S256 code challenge,
    exact redirect URIs. With ``auth`` ``"basic"`` or ``"private_key_jwt"`` it is a confidential
    client with a secret or a key; ``grant_types`` lists what it may use (ZITADEL lets only such
    applications, not API applications, exchange tokens)."""

    redirect_uris: list[str] = field(default_factory=list)
    auth: Literal["none", "basic", "private_key_jwt"] = "none"
    grant_types: set[str] = field(default_factory=lambda: {"authorization_code"})
    jwt_access_tokens: bool = False  # ZITADEL's "access token type": JWT instead of opaque


@dataclass
class User:
    """A human or service user, with its project role grants and metadata."""

    id: str
    org: StandInOrganization
    username: str
    kind: Literal["human", "machine"] = "human"
    name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    email: str | None = None
    email_verified: bool = False
    locale: str | None = None
    roles: dict[str, set[str]] = field(default_factory=dict)  # project id -> role keys
    metadata: dict[str, bytes] = field(default_factory=dict)
    key_id: str | None = None
    private_key: rsa.RSAPrivateKey | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)
    active: bool = True  # False: deactivated (``user.deactivated``)
    locked: bool = False  # too many failed logins, or locked by an administrator
    removed: bool = False
    can_impersonate: bool = False  # holds an impersonator role (ORG_END_USER_IMPERSONATOR)
    jwt_access_tokens: bool = False  # service users: the token endpoint issues JWTs

    # ZITADEL v4 refuses a token when one of these came after it was issued: the position
    # (see ``Directory.next_position``) of the last ``user.deactivated``, ``user.locked`` or
    # ``user.removed``, and per user agent of the last ``user.human.signed.out``.
    refused_before: int = field(default=0, repr=False)
    signed_out: dict[str, int] = field(default_factory=dict, repr=False)
    iam_owner: bool = False  # may call the instance's admin APIs (Actions v2)

    @property
    def usable(self) -> bool:
        """Neither deactivated, locked nor removed: may log in, and its tokens may be active."""
        return self.active and not self.locked and not self.removed

    @property
    def login_names(self) -> tuple[str, str]:
        """What ZITADEL finds the user by: the user name, and with the org's domain."""
        return self.username, f"{self.username}@{self.org.primary_domain}"

    @property
    def key_file(self) -> dict[str, str]:
        """The service-account key file, for the JWT-profile grant."""
        return _key_file(self, "serviceaccount", "this user has no key", userId=self.id)


@dataclass
class LoginSession:
    """A session of ZITADEL's login (the ``session`` aggregate): what a person signed in with,
    in one user agent (browser). Terminating it ends the tokens issued from it."""

    id: str
    user: User
    user_agent_id: str
    terminated: bool = False


@dataclass
class OidcSession:
    """An OIDC session (the ``oidc_session`` aggregate, id ``V2_<id>``): every token ZITADEL
    v4 issues belongs to one, and its access token can be revoked as a whole."""

    id: str
    user: User
    client_id: str
    login_session: LoginSession | None = None
    access_token_revoked: bool = False


@dataclass
class UserGrant:
    """A user grant (the ``usergrant`` aggregate): the user's roles in one project. Its role
    keys live in ``User.roles[project_id]``; a deactivated grant's roles are left out."""

    id: str
    user: User
    project_id: str
    active: bool = True


@dataclass
class AccessToken:
    value: str = field(repr=False)
    id: str  # the token id: ``jti`` and introspection's ``jti`` (``V2_<session>.at_<id>``)
    user: User
    client_id: str
    audience: list[str]
    scopes: list[str]
    issued_at: int
    expires_at: int
    revoked: bool = False
    actor: dict[str, Any] | None = None  # the ``act`` claim of an exchanged token (RFC 8693)
    project_id: str | None = None  # the project whose roles a JWT carries
    jwt: bool = False
    oidc_session: OidcSession | None = None  # None: a personal access token
    position: int = 0  # when it was issued, in the order of the instance's events
    personal: bool = False  # a personal access token (PAT) of a service user


class Directory:
    """Everything the stand-in knows, kept in memory."""

    def __init__(self, jti_delimiter: str = ".") -> None:
        self.orgs: dict[str, StandInOrganization] = {}
        self.projects: dict[str, Project] = {}
        self.apps: dict[str, ApiApplication] = {}  # by client id
        self.web_apps: dict[str, WebApplication] = {}  # by client id
        self.users: dict[str, User] = {}
        self.tokens: dict[str, AccessToken] = {}
        self.keys: dict[str, Application | User] = {}  # by key id
        self.grants: dict[tuple[str, str], UserGrant] = {}  # by (user id, project id)
        self.login_sessions: dict[str, LoginSession] = {}
        self.jti_delimiter = jti_delimiter  # ZITADEL's TokenDelimiter; "-" in some versions
        self._positions = itertools.count(1)

    def next_position(self) -> int:
        """The next position in the instance's history: tokens and events are ordered by it
        (ZITADEL orders its events by position), so "after the token was issued" is exact
        even under a frozen clock."""
        return next(self._positions)

    def active_roles(self, user: User, project_id: str) -> set[str]:
        """The user's roles in the project, without those of a deactivated grant (#8634)."""
        grant = self.grants.get((user.id, project_id))
        if grant is not None and not grant.active:
            return set()
        return user.roles.get(project_id, set())

    def grant_of(self, user: User, project_id: str) -> UserGrant | None:
        """The user's grant in the project; roles set directly on ``User.roles`` get one on
        first use (as if granted before the stand-in was watched)."""
        grant = self.grants.get((user.id, project_id))
        if grant is None and project_id in user.roles:
            grant = UserGrant(new_id(), user, project_id)
            self.grants[(user.id, project_id)] = grant
        return grant

    def give_credentials(
        self, owner: Application | User, auth: Literal["none", "basic", "private_key_jwt"]
    ) -> None:
        """A key (``private_key_jwt``) or a secret (``basic``) for an application or user."""
        if auth == "private_key_jwt":
            owner.key_id = new_id()
            owner.private_key = generate_rsa_key()
            self.keys[owner.key_id] = owner
        elif auth == "basic":
            owner.client_secret = secrets.token_urlsafe(32)

    def mint(
        self,
        user: User,
        *,
        client_id: str,
        audience: Iterable[str],
        scopes: Iterable[str],
        now: int,
        lifetime: int,
        project_id: str | None = None,
        sign: Callable[[AccessToken], str] | None = None,
        oidc_session: OidcSession | None = None,
    ) -> AccessToken:
        """A new token; with ``sign``, a JWT access token whose value ``sign`` makes. A token
        of an OIDC session has ZITADEL v4's id ``V2_<session>.at_<id>``."""
        # Newer ZITADEL opaque tokens have dot-separated segments; a client must never parse
        # them, and using the same shape here catches code that tries.
        value = ".".join(secrets.token_urlsafe(n) for n in (24, 8, 8, 8, 16))
        token_id = new_id()
        if oidc_session is not None:
            token_id = f"{oidc_session.id}{self.jti_delimiter}at_{token_id}"
        token = AccessToken(
            value=value,
            id=token_id,
            user=user,
            client_id=client_id,
            audience=list(dict.fromkeys(audience)),
            scopes=list(dict.fromkeys(scopes)),
            issued_at=now,
            expires_at=now + lifetime,
            project_id=project_id,
            jwt=sign is not None,
            oidc_session=oidc_session,
            position=self.next_position(),
        )
        if sign is not None:
            token.value = sign(token)
        self.tokens[token.value] = token
        return token
