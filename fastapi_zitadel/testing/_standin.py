"""A local stand-in for the ZITADEL endpoints an API needs, as an ASGI app.

It enforces what the real server enforces (client authentication rules, audience checks,
answer shapes), so code that passes against it works against ZITADEL. Run it in-process with
``standin.transport()`` or on a loopback port with ``StandInServer``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import html
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ._actions import Actions, ApiError, Delivery, Target, TargetType
from ._client_check import (
    ClientAuthFailed,
    InvalidRequest,
    TokenRefused,
    authenticate_client,
    check_service_user_secret,
)
from ._directory import (
    AccessToken,
    ApiApplication,
    Directory,
    LoginSession,
    OidcSession,
    Project,
    StandInOrganization,
    User,
    UserGrant,
    WebApplication,
    generate_rsa_key,
    new_id,
)
from ._events import Event, PayloadFormat, rfc3339_nano
from ._management import ManagementApi
from ._server import LoopbackServer

CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# ZITADEL's claim names, written out here rather than shared with the library: the stand-in
# plays the server, and a mistake in the library's names must not hide behind the same one.
ROLES_CLAIM = "urn:zitadel:iam:org:project:roles"
METADATA_CLAIM = "urn:zitadel:iam:user:metadata"
ORG_ID_CLAIM = "urn:zitadel:iam:user:resourceowner:id"
ORG_NAME_CLAIM = "urn:zitadel:iam:user:resourceowner:name"
ORG_DOMAIN_CLAIM = "urn:zitadel:iam:user:resourceowner:primary_domain"


def project_roles_claim(project_id: str) -> str:
    return f"urn:zitadel:iam:org:project:{project_id}:roles"


FaultKind = Literal["latency", "status", "rate_limit", "garbage", "drop", "inactive"]
FaultEndpoint = Literal["introspect", "keys"]
WebKeyAlgorithm = Literal["RS256", "ES256", "EdDSA"]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 RFC 8693
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
USER_ID_TOKEN_TYPE = "urn:zitadel:params:oauth:token-type:user_id"  # noqa: S105 ZITADEL's own
# Every token type ZITADEL's exchange knows (zitadel/oidc AllTokenTypes and its user id type).
_TOKEN_TYPES = {
    ACCESS_TOKEN_TYPE,
    "urn:ietf:params:oauth:token-type:refresh_token",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:jwt",
    USER_ID_TOKEN_TYPE,
}
AUTHORIZATION_CODE_GRANT = "authorization_code"
LOGIN_PATH = "/ui/login/select"
CODE_LIFETIME = 300  # seconds an authorization code can be exchanged
# What ZITADEL puts into a token's scope: it knows no custom scopes (zitadel/zitadel#8967) and
# drops the ones it does not know.
_STANDARD_SCOPES = {"openid", "profile", "email", "phone", "address", "offline_access"}
_ZITADEL_SCOPE_PREFIX = "urn:zitadel:iam:"
# RFC 7636 section 4.1: 43 to 128 characters of the unreserved set.
_CODE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
AUDIENCE_SCOPE_PREFIX = "urn:zitadel:iam:org:project:id:"
AUDIENCE_SCOPE_SUFFIX = ":aud"
# ZITADEL's JWKS answer by default (OIDC.JWKSCacheControlMaxAge: 5m).
JWKS_CACHE_CONTROL = "max-age=300, must-revalidate"
DEFAULT_GRACE_PERIOD = 300.0  # seconds a rotated-out web key stays in the JWKS
ZITADEL_PROJECT_ID = "zitadel"  # stands for the instance's own project in a PAT's audience
# The user grant events that change a user's roles (ZITADEL's usergrant aggregate).
GRANT_EVENTS = {
    "added": "user.grant.added",
    "changed": "user.grant.changed",
    "removed": "user.grant.removed",
    "deactivated": "user.grant.deactivated",
    "reactivated": "user.grant.reactivated",
}


@dataclass
class Fault:
    """A fault applied to the next ``remaining`` requests to ``endpoint`` (``None``: all)."""

    kind: FaultKind
    remaining: int | None = 1
    seconds: float = 0.0
    status: int = 503
    endpoint: FaultEndpoint = "introspect"


@dataclass
class _WebKey:
    """One of the instance's web keys: it signs while current, and is published in the JWKS
    until ``retires_at`` (stand-in clock) once rotated out."""

    kid: str
    algorithm: WebKeyAlgorithm
    private_key: Any = field(repr=False)
    retires_at: float | None = None

    def jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if self.algorithm == "RS256":
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif self.algorithm == "ES256":
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        jwk.update(kid=self.kid, use="sig", alg=self.algorithm)
        return jwk


def _new_web_key(algorithm: WebKeyAlgorithm) -> _WebKey:
    key: Any
    if algorithm == "RS256":
        key = generate_rsa_key()
    elif algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return _WebKey(new_id(), algorithm, key)


@dataclass
class _AuthorizationRequest:
    """An authorization request waiting for the login page's answer."""

    app: WebApplication
    redirect_uri: str
    scopes: list[str]
    state: str | None
    nonce: str | None
    code_challenge: str


@dataclass
class _AuthorizationCode:
    request: _AuthorizationRequest
    user: User
    expires_at: float
    session: LoginSession | None = None


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised in-process where a real server would drop the connection mid-answer."""


class ZitadelStandIn:
    """A fake ZITADEL instance with a small API to set it up from tests.

    ``issuer`` is fixed at construction for in-process use; ``StandInServer`` sets it to the
    loopback address it binds before serving.
    """

    def __init__(
        self,
        issuer: str = "http://zitadel.localhost",
        *,
        clock: Callable[[], float] = time.time,
        track_jti: bool = False,
        impersonation: bool = True,
        jti_delimiter: Literal[".", "-"] = ".",
        event_payload: PayloadFormat = "object",
        max_event_age: float | None = None,
        instance_id: str | None = None,
    ) -> None:
        """``impersonation``: the instance's "Allow Impersonation" security setting, which token
        exchange with an actor needs (ZITADEL's default is off; here on, for tests).

        ``jti_delimiter``: the character between a token's OIDC session and its id in
        ``V2_<session>.at_<id>`` (``"-"`` in some ZITADEL versions). ``event_payload``: how
        events carry ``event_payload`` to Actions v2 targets: ``"object"`` (current),
        ``"base64"`` (older versions) or ``"empty"`` (always ``{}``, v4.1.0).
        ``max_event_age``: seconds after which an undelivered event is dropped."""
        self.issuer = issuer
        self.clock = clock
        self.impersonation = impersonation
        self.directory = Directory()
        self.directory.jti_delimiter = jti_delimiter
        self.instance_id = instance_id or new_id()
        # Who changes things when a test does: the instance's first administrator.
        self.admin_id = new_id()
        self.events: list[Event] = []  # the instance's history, in order
        self._sequences: dict[tuple[str, str], int] = {}
        self._history = threading.Lock()  # changes come from tests and from served requests
        self.actions = Actions(
            clock=clock,
            sign_jwt=lambda claims: self._sign(claims),
            authorize=self._authorize_admin,
            payload_format=event_payload,
            max_event_age=max_event_age,
        )
        management = ManagementApi(
            authorize=self._authorize_admin,
            users=self.directory.users,
            changes={
                "deactivate": self.deactivate_user,
                "reactivate": self.reactivate_user,
                "lock": self.lock_user,
                "unlock": self.unlock_user,
                "remove": self.remove_user,
            },
            terminate_session=self.terminate_session,
            clock=clock,
        )
        self.track_jti = track_jti
        self._seen_jtis: set[str] = set()
        self.introspection_calls = 0
        self.token_calls = 0
        self.received_assertions: list[str] = []  # for tests that check nothing leaks them
        self._faults: list[Fault] = []
        self._web_keys: list[_WebKey] = []  # the last one signs
        self.jwks_calls = 0
        self._authorization_requests: dict[str, _AuthorizationRequest] = {}
        self._codes: dict[str, _AuthorizationCode] = {}
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery, methods=["GET"]),
                Route("/oauth/v2/keys", self._jwks, methods=["GET"]),
                Route("/oauth/v2/introspect", self._introspect, methods=["POST"]),
                Route("/oauth/v2/token", self._token, methods=["POST"]),
                Route("/oauth/v2/revoke", self._revoke, methods=["POST"]),
                Route("/oauth/v2/authorize", self._authorize, methods=["GET"]),
                Route(LOGIN_PATH, self._login, methods=["POST"]),
                *self.actions.routes(),
                *management.routes(),
            ],
            # Browser apps (Swagger UI) call the token endpoint from their own origin, as they
            # do with ZITADEL, which allows that.
            middleware=[
                Middleware(
                    CORSMiddleware,
                    allow_origins=["*"],
                    allow_methods=["GET", "POST"],
                    allow_headers=["*"],
                )
            ],
        )

    # Setting up the world ---------------------------------------------------------------
    def add_org(self, name: str, primary_domain: str | None = None) -> StandInOrganization:
        return self.directory.add_org(name, primary_domain)

    def add_project(self, name: str) -> Project:
        return self.directory.add_project(name)

    def add_api_app(
        self,
        project: Project,
        name: str = "api",
        *,
        auth: Literal["private_key_jwt", "basic"] = "private_key_jwt",
    ) -> ApiApplication:
        return self.directory.add_api_app(project, name, auth=auth)

    def add_web_app(
        self,
        project: Project,
        name: str = "web",
        *,
        redirect_uris: Iterable[str] = (),
        auth: Literal["none", "basic", "private_key_jwt"] = "none",
        grant_types: Iterable[str] = (AUTHORIZATION_CODE_GRANT,),
        jwt_access_tokens: bool = False,
    ) -> WebApplication:
        """A web application with PKCE (no secret): the kind Swagger UI logs in with. Its login
        page (``/oauth/v2/authorize``) lets the person pick one of the human users.

        ``auth="private_key_jwt"`` (a key file) or ``"basic"`` (a secret) makes it a
        confidential client; with ``TOKEN_EXCHANGE_GRANT`` among its ``grant_types`` it may
        exchange tokens, as a ZITADEL application with the Token Exchange grant type.
        ``jwt_access_tokens=True`` makes its code flow issue JWT access tokens (ZITADEL's
        "access token type" JWT)."""
        app = self.directory.add_web_app(
            project, name, redirect_uris, auth=auth, grant_types=grant_types
        )
        app.jwt_access_tokens = jwt_access_tokens
        return app

    def add_user(
        self,
        org: StandInOrganization,
        username: str,
        *,
        roles: Mapping[Project, Iterable[str]] | None = None,
        metadata: Mapping[str, bytes] | None = None,
        **profile: Any,
    ) -> User:
        """A human user; each project in ``roles`` gets a grant (``user.grant.added``)."""
        user = self.directory.add_user(org, username, metadata=metadata, **profile)
        for project, keys in (roles or {}).items():
            self.add_grant(user, project, keys)
        return user

    def add_service_user(
        self,
        org: StandInOrganization,
        username: str,
        *,
        roles: Mapping[Project, Iterable[str]] | None = None,
        with_secret: bool = False,
        jwt_access_tokens: bool = False,
    ) -> User:
        """A service user with a key (and a secret); ``jwt_access_tokens=True`` makes the
        token endpoint issue it JWT access tokens (ZITADEL's "access token type" JWT)."""
        user = self.directory.add_user(org, username, kind="machine", with_key=True)
        for project, keys in (roles or {}).items():
            self.add_grant(user, project, keys)
        user.jwt_access_tokens = jwt_access_tokens
        if with_secret:
            user.client_secret = base64.urlsafe_b64encode(user.id.encode()).decode() + "-secret"
        return user

    def issue_token(
        self,
        user: User,
        project: Project,
        *,
        scopes: Iterable[str] = ("openid",),
        lifetime: int = 43_200,
        client_id: str | None = None,
        jwt: bool = False,
        session: str | None = None,
    ) -> str:
        """Mint an access token for ``user`` whose audience is ``project``, and the projects of
        any audience scopes (``urn:zitadel:iam:org:project:id:{id}:aud``) among ``scopes``, as
        ZITADEL adds them: opaque, or with ``jwt=True`` a JWT access token signed with the
        instance's current web key, carrying what ZITADEL's do (no profile or e-mail claims).
        Introspection answers alike for both.

        Each token has its own OIDC session (``oidc_session.added``); a human user's is made
        from a new login session in a new user agent, or from the login session ``session``
        (see ``session_id``), as a second login in the same browser would be."""
        scopes = list(scopes)
        audience = [project.id, *_audience_scopes(scopes)]
        login: LoginSession | None = None
        if session is not None:
            login = self.directory.login_sessions.get(session)
            if login is None or login.user is not user:
                raise ValueError(f"login session {session} is not one of this user's")
        elif user.kind == "human":
            login = self._new_login_session(user)
        return self._mint(user, audience, scopes, lifetime, client_id, jwt=jwt, login=login).value

    def service_token(
        self, user: User, projects: Iterable[Project] = (), *, lifetime: int = 43_200
    ) -> str:
        """A service user's token as the token endpoint issues it, with the audience scopes of
        ``projects`` (without any, no API accepts it)."""
        audience = [project.id for project in projects]
        return self._mint(
            user, audience, ["openid"], lifetime, user.id, jwt=user.jwt_access_tokens
        ).value

    # Web keys -----------------------------------------------------------------------------
    def rotate_signing_key(
        self,
        *,
        algorithm: WebKeyAlgorithm = "RS256",
        grace_period: float = DEFAULT_GRACE_PERIOD,
    ) -> str:
        """Make a new web key the one that signs; the previous one stays in the JWKS for
        ``grace_period`` seconds (of the stand-in's clock), then leaves it. Returns the new
        key's id."""
        self._current_web_key()  # the first key exists before it is rotated out
        now = self.clock()
        for key in self._web_keys:
            if key.retires_at is None:
                key.retires_at = now + grace_period
        key = _new_web_key(algorithm)
        self._web_keys.append(key)
        return key.kid

    def sign_jwt(
        self, claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None
    ) -> str:
        """``claims`` signed with the current web key (header ``kid``, ``typ: JWT``, plus
        ``headers``): for tests that need a JWT ZITADEL would not issue (expired, for another
        audience...). The stand-in does not know the token: its introspection answers
        inactive for it."""
        return self._sign(claims, headers)

    @property
    def signing_key_id(self) -> str:
        """The id (``kid``) of the web key that signs now."""
        return self._current_web_key().kid

    @property
    def published_key_ids(self) -> list[str]:
        """The ids of the web keys the JWKS lists now."""
        return [key.kid for key in self._published_web_keys()]

    def revoke(self, token: str) -> None:
        """Revoke an access token as ``/oauth/v2/revoke`` does: a token of ZITADEL v4 ends
        with its OIDC session's access token (``oidc_session.access_token.revoked``), a JWT
        found by its ``jti``; a personal access token is removed (``user.pat.removed``)."""
        found = self._find_token(token)
        if found is None or found.revoked:
            return
        found.revoked = True
        session = found.oidc_session
        if found.personal:
            self._emit(found.user, "user.pat.removed", editor=self.admin_id, tokenId=found.id)
        elif session is not None and not session.access_token_revoked:
            session.access_token_revoked = True
            self._emit_about_session(session, "oidc_session.access_token.revoked", found.user.id)

    def token_info(self, token: str) -> AccessToken | None:
        """What the stand-in knows about ``token`` (opaque, or a JWT by its ``jti``)."""
        return self._find_token(token)

    def session_id(self, token: str) -> str | None:
        """The id of the login session ``token`` was issued from (``None``: none, as for a
        service user's token): for ``terminate_session`` and ``issue_token(session=...)``."""
        found = self._find_token(token)
        if found is None or found.oidc_session is None:
            return None
        login = found.oidc_session.login_session
        return login.id if login is not None else None

    # Users, sessions and grants: what ZITADEL v4's introspection refuses -----------------
    def deactivate_user(self, user: User, *, editor: User | None = None) -> None:
        """``user.deactivated``: every token issued before it is inactive from now on, even
        after ``reactivate_user``; the user cannot log in meanwhile."""
        user.active = False
        event = self._emit(user, "user.deactivated", editor=editor)
        user.refused_before = event.position

    def reactivate_user(self, user: User, *, editor: User | None = None) -> None:
        """``user.reactivated``: new tokens work again; those from before stay inactive."""
        user.active = True
        self._emit(user, "user.reactivated", editor=editor)

    def lock_user(self, user: User, *, editor: User | None = None) -> None:
        """``user.locked`` (as after too many failed password checks): like deactivation."""
        user.locked = True
        event = self._emit(user, "user.locked", editor=editor)
        user.refused_before = event.position

    def unlock_user(self, user: User, *, editor: User | None = None) -> None:
        user.locked = False
        self._emit(user, "user.unlocked", editor=editor)

    def remove_user(self, user: User, *, editor: User | None = None) -> None:
        """``user.removed``: the user and every token of theirs are gone for good."""
        user.removed = True
        event = self._emit(user, "user.removed", editor=editor, userName=user.username)
        user.refused_before = event.position

    def sign_out(self, user: User, *, session: str | None = None) -> None:
        """The user signs out (``user.human.signed.out``, the user the editor): tokens issued
        from the user agent of login session ``session`` before it are inactive; without
        ``session``, from every user agent the user logged in with."""
        sessions = [
            login
            for login in self.directory.login_sessions.values()
            if login.user is user and (session is None or login.id == session)
        ]
        if session is not None and not sessions:
            raise ValueError(f"login session {session} is not one of this user's")
        for agent in dict.fromkeys(login.user_agent_id for login in sessions):
            event = self._emit(user, "user.human.signed.out", editor=user, userAgentID=agent)
            user.signed_out[agent] = event.position

    def terminate_session(self, session: str, *, editor: User | None = None) -> None:
        """``session.terminated``: the login session ends, and every token issued from it."""
        login = self.directory.login_sessions.get(session)
        if login is None:
            raise ValueError(f"no login session {session}")
        if login.terminated:
            return
        login.terminated = True
        self._record(
            "session",
            login.id,
            login.user.org.id,
            "session.terminated",
            editor.id if editor is not None else login.user.id,
            {},
        )

    def add_grant(
        self, user: User, project: Project, roles: Iterable[str] = (), *, editor: User | None = None
    ) -> str:
        """Grant ``user`` ``roles`` in ``project`` (``user.grant.added``); returns the grant id.
        A user has one grant per project: use ``change_grant`` for the next change."""
        directory = self.directory
        if (user.id, project.id) in directory.grants:
            raise ValueError(f"{user.username} has a grant in {project.name} already")
        user.roles[project.id] = set(roles)
        grant = directory.grant_of(user, project.id)
        assert grant is not None
        self._emit_grant(
            grant,
            "added",
            editor,
            userId=user.id,
            projectId=project.id,
            roleKeys=sorted(user.roles[project.id]),
        )
        return grant.id

    def change_grant(
        self, user: User, project: Project, roles: Iterable[str], *, editor: User | None = None
    ) -> None:
        """Replace the roles of the user's grant in ``project`` (``user.grant.changed``)."""
        grant = self._grant(user, project)
        current = user.roles[project.id]
        current.clear()
        current.update(roles)
        self._emit_grant(grant, "changed", editor, roleKeys=sorted(current))

    def remove_grant(self, user: User, project: Project, *, editor: User | None = None) -> None:
        """``user.grant.removed``: the user's roles in ``project`` are gone, at once."""
        grant = self._grant(user, project)
        del self.directory.grants[(user.id, project.id)]
        user.roles.pop(project.id, None)
        self._emit_grant(grant, "removed", editor)

    def deactivate_grant(self, user: User, project: Project, *, editor: User | None = None) -> None:
        """``user.grant.deactivated``: its roles are left out of introspection (#8634)."""
        grant = self._grant(user, project)
        grant.active = False
        self._emit_grant(grant, "deactivated", editor)

    def reactivate_grant(self, user: User, project: Project, *, editor: User | None = None) -> None:
        grant = self._grant(user, project)
        grant.active = True
        self._emit_grant(grant, "reactivated", editor)

    def grant_roles(self, user: User, project: Project, roles: Iterable[str]) -> None:
        """Make sure ``user`` holds at least ``roles`` in ``project``: a grant is added, or
        changed when roles are missing, or left alone."""
        wanted = set(roles)
        if self.directory.grant_of(user, project.id) is None:
            self.add_grant(user, project, wanted)
        elif not wanted <= user.roles[project.id]:
            self.change_grant(user, project, user.roles[project.id] | wanted)

    # Actions v2 ---------------------------------------------------------------------------
    def personal_access_token(
        self, user: User, *, lifetime: int = 43_200, iam_owner: bool | None = None
    ) -> str:
        """A personal access token of the service user ``user`` (``iam_owner=True`` also
        makes the user an IAM owner, who may call the Actions v2 API)."""
        if user.kind != "machine":
            raise ValueError("ZITADEL gives personal access tokens to service users only")
        if iam_owner is not None:
            user.iam_owner = iam_owner
        token = self.directory.mint(
            user,
            client_id=user.id,
            audience=[ZITADEL_PROJECT_ID],
            scopes=[
                "openid",
                f"{AUDIENCE_SCOPE_PREFIX}{ZITADEL_PROJECT_ID}{AUDIENCE_SCOPE_SUFFIX}",
            ],
            now=int(self.clock()),
            lifetime=lifetime,
        )
        token.personal = True
        return token.value

    def admin_token(self, username: str = "actions-admin") -> str:
        """A personal access token of an IAM owner (a service user of the instance's own
        organization, created on first use): what the Actions v2 API needs."""
        owner = next(
            (
                user
                for user in self.directory.users.values()
                if user.iam_owner and user.username == username
            ),
            None,
        )
        if owner is None:
            org = next(
                (org for org in self.directory.orgs.values() if org.name == "ZITADEL"), None
            ) or self.add_org("ZITADEL", "zitadel.localhost")
            owner = self.add_service_user(org, username)
        return self.personal_access_token(owner, iam_owner=True)

    def add_target(
        self,
        endpoint: str,
        *,
        name: str | None = None,
        target_type: TargetType = "restAsync",
        timeout: float = 10.0,
        payload_type: str = "PAYLOAD_TYPE_JSON",
    ) -> Target:
        """An Actions v2 target (as ``POST /v2/actions/targets``); its ``signing_key`` signs
        what it is sent. ``endpoint`` may change later (``target.endpoint = ...``)."""
        try:
            return self.actions.add_target(
                endpoint,
                name=name,
                target_type=target_type,
                timeout=timeout,
                payload_type=payload_type,
            )
        except ApiError as exc:
            raise ValueError(exc.message) from None

    def set_execution(
        self,
        targets: Iterable[Target | str],
        *,
        event: str | None = None,
        group: str | None = None,
    ) -> None:
        """Send ``event`` (an event type), the events of ``group`` (a prefix such as
        ``user``) or, with neither, all events to ``targets`` (as ``PUT
        /v2/actions/executions``; an empty list removes the execution). Only the
        best-matching execution runs per event."""
        if event is not None and group is not None:
            raise ValueError("give event or group, not both")
        condition = ("event", event) if event else ("group", group) if group else ("all", "")
        ids = [target.id if isinstance(target, Target) else target for target in targets]
        try:
            self.actions.set_execution(condition, ids)
        except ApiError as exc:
            raise ValueError(exc.message) from None

    @property
    def deliveries(self) -> list[Delivery]:
        """Every call made to a target so far: the event, the target and the answer."""
        return list(self.actions.deliveries)

    def wait_for_deliveries(self, timeout: float = 5.0) -> bool:
        """Wait until every event published so far was sent (or failed); ``False`` if some
        are still on their way after ``timeout`` seconds."""
        return self.actions.wait_for_deliveries(timeout)

    def close(self) -> None:
        """Stop sending events (the worker thread); the stand-in answers requests still."""
        self.actions.close()

    # Faults -------------------------------------------------------------------------------
    def inject(
        self,
        kind: FaultKind,
        *,
        times: int | None = 1,
        seconds: float = 0.0,
        status: int = 503,
        endpoint: FaultEndpoint = "introspect",
    ) -> None:
        """Make the next ``times`` introspections misbehave (``None``: until ``clear_faults``);
        ``endpoint="keys"``: the next JWKS requests instead.

        ``latency`` waits ``seconds`` first; ``status`` answers that HTTP status;
        ``rate_limit`` answers 429 with ``Retry-After: seconds``; ``garbage`` answers HTML;
        ``drop`` cuts the connection mid-answer; ``inactive`` answers ``{"active": false}``
        as ZITADEL does on an internal error.
        """
        self._faults.append(Fault(kind, times, seconds, status, endpoint))

    def clear_faults(self) -> None:
        self._faults.clear()

    def serve(self) -> LoopbackServer:
        """Serve on 127.0.0.1 with an ephemeral port; the issuer becomes that address.

        ``with standin.serve() as issuer: ...``
        """
        server = LoopbackServer(self.app)
        self.issuer = server.url
        return server

    def transport(self) -> httpx.ASGITransport:
        """An in-process transport for ``httpx.AsyncClient(transport=...)``."""
        return httpx.ASGITransport(app=self.app)

    # Endpoints ----------------------------------------------------------------------------
    async def _discovery(self, _request: Request) -> Response:
        base = self.issuer + "/oauth/v2"
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": self.issuer + "/oauth/v2/authorize",
                "token_endpoint": base + "/token",
                "introspection_endpoint": base + "/introspect",
                "revocation_endpoint": base + "/revoke",
                "jwks_uri": base + "/keys",
                "introspection_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "private_key_jwt",
                ],
                "introspection_endpoint_auth_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": [
                    "none",
                    "client_secret_basic",
                    "private_key_jwt",
                ],
                "grant_types_supported": [
                    AUTHORIZATION_CODE_GRANT,
                    "client_credentials",
                    JWT_BEARER_GRANT,
                    TOKEN_EXCHANGE_GRANT,
                ],
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": ["openid", "profile", "email", "phone"],
            }
        )

    def _current_web_key(self) -> _WebKey:
        if not self._web_keys:
            self._web_keys.append(_new_web_key("RS256"))
        return self._web_keys[-1]

    def _published_web_keys(self) -> list[_WebKey]:
        self._current_web_key()
        now = self.clock()
        return [key for key in self._web_keys if key.retires_at is None or now < key.retires_at]

    def _sign(self, claims: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
        """Signed with the current web key, as ZITADEL signs: ``typ: JWT`` for ID tokens and
        access tokens alike (zitadel/zitadel internal/api/oidc/sign/signer.go)."""
        key = self._current_web_key()
        headers = {"kid": key.kid, "typ": "JWT", **(extra or {})}
        return jwt.encode(dict(claims), key.private_key, algorithm=key.algorithm, headers=headers)

    async def _jwks(self, _request: Request) -> Response:
        # The instance's web keys, as ZITADEL publishes them: they sign ID tokens and JWT
        # access tokens. A rotated-out key stays until its grace period ends.
        self.jwks_calls += 1
        fault = self._next_fault("keys")
        if fault is not None:
            faulty = await self._apply(fault)
            if faulty is not None:
                return faulty
        keys = [key.jwk() for key in self._published_web_keys()]
        return JSONResponse({"keys": keys}, headers={"Cache-Control": JWKS_CACHE_CONTROL})

    async def _introspect(self, request: Request) -> Response:
        self.introspection_calls += 1
        fault = self._next_fault("introspect")
        if fault is not None:
            faulty = await self._apply(fault)
            if faulty is not None:
                return faulty
        params = await _parameters(request)
        try:
            caller = self._authenticate(request, params)
        except ClientAuthFailed:
            return _oauth_error("unauthorized_client", "client authentication failed")
        except InvalidRequest as exc:
            return _oauth_error("invalid_request", str(exc))
        if caller in self.directory.users:
            # ZITADEL looks the caller up among API and OIDC applications only: a service
            # user's key or secret is refused here as any unknown client is.
            return _oauth_error("unauthorized_client", "client authentication failed")
        token_value = params.get("token")
        if not token_value:
            return _oauth_error("invalid_request", "token missing")
        if fault is not None and fault.kind == "inactive":
            return JSONResponse({"active": False})
        token = self.directory.tokens.get(token_value)
        if token is None or not self._is_live(token) or not self._audience_allows(token, caller):
            return JSONResponse({"active": False})
        return JSONResponse(self._active_body(token, caller))

    async def _token(self, request: Request) -> Response:
        self.token_calls += 1
        params = await _parameters(request)
        grant = params.get("grant_type")
        if grant == AUTHORIZATION_CODE_GRANT:
            return self._exchange_code(params)
        if grant == TOKEN_EXCHANGE_GRANT:
            return await self._exchange_token(request, params)
        try:
            if grant == JWT_BEARER_GRANT:
                user = self._jwt_bearer_user(params)
            elif grant == "client_credentials":
                user = check_service_user_secret(
                    self.directory, request.headers.get("authorization")
                )
            else:
                return _oauth_error(
                    "unsupported_grant_type",
                    "use authorization_code, jwt-bearer, client_credentials or token-exchange",
                )
        except TokenRefused as refused:
            return _oauth_error(refused.error, refused.description, refused.status)
        # ZITADEL keeps the scopes it knows and drops the others (no custom scopes).
        scopes = [scope for scope in params.get("scope", "").split() if _known_scope(scope)]
        # The client id of a client-credentials token is the name it was asked with.
        client_id = user.id if grant == JWT_BEARER_GRANT else user.username
        token = self._mint(
            user, _audience_scopes(scopes), scopes, 43_200, client_id, jwt=user.jwt_access_tokens
        )
        return JSONResponse(
            {
                "access_token": token.value,
                "token_type": "Bearer",
                "expires_in": token.expires_at - token.issued_at,
                "scope": " ".join(token.scopes),
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def _jwt_bearer_user(self, params: Mapping[str, str]) -> User:
        """The JWT bearer grant (RFC 7523 §2.1), checked as ZITADEL checks it: the assertion
        as a client assertion (``kid``, RS256, ``iss`` = ``sub``, ``aud``, ``exp``, ``iat``) of a
        service user's key. What it cannot verify ZITADEL answers with 500 ``server_error``
        (``Errors.Internal``; zitadel/zitadel#12692, #9745), not RFC 7523's ``invalid_grant``."""
        assertion = params.get("assertion", "")
        if not assertion:
            raise TokenRefused(400, "invalid_request", "assertion missing")
        self.received_assertions.append(assertion)
        try:
            subject = authenticate_client(
                self.directory,
                form={"client_assertion": assertion, "client_assertion_type": CLIENT_ASSERTION},
                authorization=None,
                issuer=self.issuer,
                now=self.clock(),
                seen_jtis=None,
            )
        except ClientAuthFailed:
            raise TokenRefused(500, "server_error", "Errors.Internal") from None
        user = self.directory.users.get(subject)
        if user is None or user.kind != "machine":  # an application's key
            raise TokenRefused(500, "server_error", "Errors.Internal")
        return user

    async def _exchange_token(self, request: Request, params: Mapping[str, str]) -> Response:
        """Token exchange (RFC 8693) with ZITADEL's rules (``internal/api/oidc/
        token_exchange.go``): an OIDC application with the grant type, authenticated; the
        subject token active and issued for the application's project; an actor token for
        impersonation, which the instance must allow and the actor's role permit; the audience
        and scopes no wider than the subject's and actor's; ``act`` on the new token."""
        try:
            caller = self._authenticate(request, params)
        except (ClientAuthFailed, InvalidRequest):
            return _oauth_error("invalid_client", "no active client not found")
        app = self.directory.web_apps.get(caller)
        if app is None:  # API applications and service users are not OIDC clients
            return _oauth_error("invalid_client", "no active client not found")
        if TOKEN_EXCHANGE_GRANT not in app.grant_types:
            return _oauth_error(
                "unauthorized_client", f'grant_type "{TOKEN_EXCHANGE_GRANT}" not allowed'
            )
        subject_value, subject_type = params.get("subject_token"), params.get("subject_token_type")
        actor_value, actor_type = params.get("actor_token"), params.get("actor_token_type")
        if not subject_value:
            return _oauth_error("invalid_request", "subject_token missing")
        if not subject_type:
            return _oauth_error("invalid_request", "subject_token_type missing")
        for given in (subject_type, actor_type or ACCESS_TOKEN_TYPE):
            if given not in _TOKEN_TYPES:
                return _oauth_error("invalid_request", "subject_token_type is not supported")
        requested = params.get("requested_token_type") or ACCESS_TOKEN_TYPE
        if requested != ACCESS_TOKEN_TYPE:
            # ZITADEL also issues JWTs and ID tokens here; this stand-in issues opaque tokens.
            return _oauth_error(
                "invalid_request", "the stand-in exchanges for opaque access tokens only"
            )
        if params.get("resource"):
            return _oauth_error("invalid_target", "resource parameter not supported")
        subject = self._exchangeable(app, subject_value, subject_type)
        if subject is None:
            return _oauth_error("invalid_request", "subject_token invalid")
        actor: AccessToken | None = None
        if subject_type == USER_ID_TOKEN_TYPE or actor_value:
            if not self.impersonation:
                return _oauth_error(
                    "invalid_request", "Errors.TokenExchange.Impersonation.PolicyDisabled", 403
                )
            found = self._exchangeable(app, actor_value or "", actor_type or "")
            if not isinstance(found, AccessToken):
                return _oauth_error("invalid_request", "actor_token invalid")
            if not found.user.can_impersonate:
                return _oauth_error("invalid_request", "Errors.PermissionDenied", 403)
            actor = found
        subject_audience = subject.audience if isinstance(subject, AccessToken) else []
        subject_scopes = subject.scopes if isinstance(subject, AccessToken) else []
        actor_audience = actor.audience if actor else []
        actor_scopes = actor.scopes if actor else []
        audience = _multi(request, "audience") or subject_audience or actor_audience
        for entry in audience:
            if entry not in subject_audience and entry not in actor_audience:
                return _oauth_error(
                    "invalid_target", f'audience "{entry}" not found in subject or actor token'
                )
        scopes = params.get("scope", "").split() or subject_scopes or actor_scopes
        for scope in scopes:
            if scope not in subject_scopes and scope not in actor_scopes:
                return _oauth_error(
                    "invalid_scope", f'scope "{scope}" not found in subject or actor token'
                )
        user = subject.user if isinstance(subject, AccessToken) else subject
        token = self.directory.mint(
            user,
            client_id=app.client_id,
            audience=audience,
            scopes=scopes,
            now=int(self.clock()),
            lifetime=43_200,
        )
        if actor is not None:
            # The actor's own actor nests (a chain of delegations), as ZITADEL's nestedActor.
            token.actor = {"iss": self.issuer, "sub": actor.user.id}
            if actor.actor is not None:
                token.actor["act"] = actor.actor
        elif isinstance(subject, AccessToken) and subject.actor is not None:
            token.actor = subject.actor
        return JSONResponse(
            {
                "access_token": token.value,
                "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": token.expires_at - token.issued_at,
                "scope": " ".join(token.scopes),
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def _exchangeable(
        self, app: WebApplication, value: str, token_type: str
    ) -> AccessToken | User | None:
        """A token (or, for ZITADEL's user id type, a user) the application may exchange."""
        if token_type == USER_ID_TOKEN_TYPE:
            return self.directory.users.get(value)
        if token_type != ACCESS_TOKEN_TYPE:
            return None  # id_token and jwt subjects: not modelled by the stand-in
        token = self.directory.tokens.get(value)
        if token is None or not self._is_live(token):
            return None
        if app.client_id not in token.audience and app.project.id not in token.audience:
            return None
        return token

    async def _authorize(self, request: Request) -> Response:
        """The authorization endpoint: checks the request as ZITADEL does (a known client, an
        exactly registered redirect URI, ``response_type=code``, a PKCE S256 challenge) and
        shows a login page where the person picks a user."""
        params = request.query_params
        app = self.directory.web_apps.get(params.get("client_id", ""))
        if app is None:
            return _login_error("unknown client_id")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in app.redirect_uris:
            return _login_error(f"redirect_uri {redirect_uri!r} is not registered for this app")
        state = params.get("state")
        if params.get("response_type") != "code":
            return _redirect_error(redirect_uri, state, "unsupported_response_type", "use code")
        challenge = params.get("code_challenge", "")
        if not challenge or params.get("code_challenge_method") != "S256":
            description = "PKCE is required: code_challenge with code_challenge_method S256"
            return _redirect_error(redirect_uri, state, "invalid_request", description)
        request_id = secrets.token_urlsafe(16)
        self._authorization_requests[request_id] = _AuthorizationRequest(
            app=app,
            redirect_uri=redirect_uri,
            scopes=params.get("scope", "").split(),
            state=state,
            nonce=params.get("nonce"),
            code_challenge=challenge,
        )
        humans = [
            user for user in self.directory.users.values() if user.kind == "human" and user.usable
        ]
        return HTMLResponse(_login_page(request_id, app, humans))

    async def _login(self, request: Request) -> Response:
        """The login page's answer: the picked user gets an authorization code."""
        params = await _parameters(request)
        pending = self._authorization_requests.pop(params.get("auth_request", ""), None)
        user = self.directory.users.get(params.get("user", ""))
        if pending is None:
            return _login_error("this login is unknown or already used: start it again")
        if user is None or user.kind != "human" or not user.usable:
            return _login_error("unknown user")
        code = secrets.token_urlsafe(32)
        self._codes[code] = _AuthorizationCode(
            pending, user, self.clock() + CODE_LIFETIME, self._new_login_session(user)
        )
        answer = {"code": code, **({"state": pending.state} if pending.state else {})}
        return RedirectResponse(_with_query(pending.redirect_uri, answer), status_code=303)

    def _exchange_code(self, params: Mapping[str, str]) -> Response:
        """``grant_type=authorization_code`` for a public client: the code once, from the same
        client and redirect URI, with the PKCE verifier of its challenge."""
        found = self._codes.pop(params.get("code", ""), None)
        if found is None or self.clock() > found.expires_at:
            return _oauth_error("invalid_grant", "the code is unknown, used or expired")
        pending = found.request
        if params.get("client_id") != pending.app.client_id:
            return _oauth_error("invalid_client", "the code was issued to another client")
        if params.get("redirect_uri") != pending.redirect_uri:
            return _oauth_error("invalid_grant", "redirect_uri differs from the authorization")
        verifier = params.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode("ascii", errors="replace")).digest()
        expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        if not _CODE_VERIFIER.fullmatch(verifier) or not hmac.compare_digest(
            expected, pending.code_challenge
        ):
            return _oauth_error("invalid_grant", "code_verifier does not match the challenge")
        scopes = [scope for scope in pending.scopes if _known_scope(scope)]
        audience = [pending.app.project.id, *_audience_scopes(scopes)]
        token = self._mint(
            found.user,
            audience,
            scopes,
            43_200,
            pending.app.client_id,
            jwt=pending.app.jwt_access_tokens,
            requester=pending.app.client_id,
            login=found.session,
        )
        body: dict[str, Any] = {
            "access_token": token.value,
            "token_type": "Bearer",
            "expires_in": token.expires_at - token.issued_at,
            "scope": " ".join(token.scopes),
        }
        if "openid" in scopes:
            body["id_token"] = self._id_token(found.user, pending, token)
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _id_token(self, user: User, pending: _AuthorizationRequest, token: AccessToken) -> str:
        """Shaped as ZITADEL's (zitadel/oidc ``NewIDTokenClaims``): the access token's
        audience with the client id, ``azp`` and ``client_id`` the client, ``at_hash`` of the
        access token issued with it, ``nonce`` when the client sent one."""
        digest = hashlib.sha256(token.value.encode("ascii")).digest()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user.id,
            "aud": list(dict.fromkeys([*token.audience, pending.app.client_id])),
            "azp": pending.app.client_id,
            "client_id": pending.app.client_id,
            "iat": token.issued_at,
            "exp": token.expires_at,
            "auth_time": token.issued_at,
            "at_hash": base64.urlsafe_b64encode(digest[:16]).decode().rstrip("="),
        }
        if pending.nonce:
            claims["nonce"] = pending.nonce
        return self._sign(claims)

    def id_token(self, user: User, project: Project, *, client_id: str | None = None) -> str:
        """An ID token for ``user`` as ZITADEL issues it with an access token for ``project``
        (for tests that present one where an access token belongs)."""
        app = next((a for a in self.directory.web_apps.values() if a.project == project), None)
        web = app or self.add_web_app(project, "id-token-web", redirect_uris=[])
        token = self._mint(user, [project.id], ["openid"], 3600, client_id or web.client_id)
        pending = _AuthorizationRequest(web, "", ["openid"], None, None, "")
        return self._id_token(user, pending, token)

    async def _revoke(self, request: Request) -> Response:
        params = await _parameters(request)
        try:
            self._authenticate(request, params)
        except (ClientAuthFailed, InvalidRequest):
            return _oauth_error("invalid_client", "client authentication failed", 401)
        self.revoke(params.get("token", ""))
        return Response(status_code=200)

    # Helpers ------------------------------------------------------------------------------
    def _mint(
        self,
        user: User,
        audience: list[str],
        scopes: Iterable[str],
        lifetime: int,
        client_id: str | None,
        *,
        jwt: bool = False,
        requester: str | None = None,
        login: LoginSession | None = None,
    ) -> AccessToken:
        apps = [app for app in self.directory.apps.values() if app.project.id in audience]
        full_audience = [app.client_id for app in apps] + audience
        if requester is not None:
            full_audience.insert(0, requester)
        client = client_id or (apps[0].client_id if apps else user.id)
        scopes = list(scopes)
        session = self._new_oidc_session(user, client, full_audience, scopes, login)
        return self.directory.mint(
            user,
            client_id=client,
            audience=full_audience,
            scopes=scopes,
            now=int(self.clock()),
            lifetime=lifetime,
            project_id=next((p for p in audience if p in self.directory.projects), None),
            sign=self._signed_access_token if jwt else None,
            oidc_session=session,
        )

    def _new_login_session(self, user: User) -> LoginSession:
        """A login in a new user agent (ZITADEL's ``session.added`` is of no use to an API and
        is not sent)."""
        login = LoginSession(new_id(), user, user_agent_id=new_id())
        self.directory.login_sessions[login.id] = login
        return login

    def _new_oidc_session(
        self,
        user: User,
        client_id: str,
        audience: list[str],
        scopes: list[str],
        login: LoginSession | None,
    ) -> OidcSession:
        session = OidcSession(f"V2_{new_id()}", user, client_id, login)
        payload: dict[str, Any] = {
            "userID": user.id,
            "userResourceOwner": user.org.id,
            "clientID": client_id,
            "audience": list(dict.fromkeys(audience)),
            "scope": scopes,
            "authTime": rfc3339_nano(self.clock()),
        }
        if login is not None:
            payload["sessionID"] = login.id
        self._emit_about_session(session, "oidc_session.added", user.id, **payload)
        return session

    def _find_token(self, value: str) -> AccessToken | None:
        """A token by its value, or a JWT of ours by its ``jti`` (ZITADEL looks it up so)."""
        found = self.directory.tokens.get(value)
        if found is not None or value.count(".") != 2:
            return found
        try:
            kid = jwt.get_unverified_header(value).get("kid")
            key = next(key for key in self._web_keys if key.kid == kid)
            claims = jwt.decode(
                value,
                key.private_key.public_key(),
                algorithms=[key.algorithm],
                # Found by its id whatever its times: an expired JWT can be revoked too.
                options={
                    "verify_aud": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except (jwt.PyJWTError, StopIteration):
            return None
        jti = claims.get("jti")
        return self.directory.token_by_jti(jti) if isinstance(jti, str) else None

    def _grant(self, user: User, project: Project) -> UserGrant:
        grant = self.directory.grant_of(user, project.id)
        if grant is None:
            raise ValueError(f"{user.username} has no grant in {project.name}")
        return grant

    # Events -------------------------------------------------------------------------------
    def _emit(
        self, user: User, event_type: str, *, editor: User | str | None, **payload: Any
    ) -> Event:
        """An event of the ``user`` aggregate."""
        who = editor.id if isinstance(editor, User) else editor or self.admin_id
        return self._record("user", user.id, user.org.id, event_type, who, payload)

    def _emit_about_session(
        self, session: OidcSession, event_type: str, editor: str, **payload: Any
    ) -> Event:
        return self._record(
            "oidc_session", session.id, session.user.org.id, event_type, editor, payload
        )

    def _emit_grant(
        self, grant: UserGrant, change: str, editor: User | None, **payload: Any
    ) -> Event:
        return self._record(
            "usergrant",
            grant.id,
            grant.user.org.id,
            GRANT_EVENTS[change],
            editor.id if editor is not None else self.admin_id,
            payload,
        )

    def _record(
        self,
        aggregate_type: str,
        aggregate_id: str,
        resource_owner: str,
        event_type: str,
        editor: str,
        payload: Mapping[str, Any],
    ) -> Event:
        """Append an event to the history and hand it to Actions v2 (which sends it later)."""
        with self._history:
            key = (aggregate_type, aggregate_id)
            sequence = self._sequences.get(key, 0) + 1
            self._sequences[key] = sequence
            event = Event(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                resource_owner=resource_owner,
                instance_id=self.instance_id,
                sequence=sequence,
                position=self.directory.next_position(),
                event_type=event_type,
                created_at=self.clock(),
                editor=editor,
                payload=dict(payload),
            )
            self.events.append(event)
        self.actions.publish(event)
        return event

    def _authorize_admin(self, request: Request) -> User:
        """The admin APIs want an IAM owner's token (a personal access token here): its user,
        the editor of what it changes."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = self.directory.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or not self._is_live(token):
            raise ApiError(16, "Errors.Token.Invalid (AUTH-7fs1e)")
        if not token.user.iam_owner:
            raise ApiError(7, "Errors.PermissionDenied (AUTHZ-HdfG2)")
        return token.user

    def _signed_access_token(self, token: AccessToken) -> str:
        """A JWT access token with the claims ZITADEL puts in one (zitadel/zitadel
        ``createJWT`` with zitadel/oidc ``NewAccessTokenClaims``): iss, sub, aud, exp, iat,
        nbf, jti, and the private claims of the token's scopes (resource owner, metadata)
        and its project's roles; no scope, client_id, azp, profile or e-mail claims."""
        user = token.user
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user.id,
            "aud": list(token.audience),
            "exp": token.expires_at,
            "iat": token.issued_at,
            "nbf": token.issued_at,
            "jti": token.id,
        }
        claims.update(self._private_claims(token, token.project_id))
        return self._sign(claims)

    def _authenticate(self, request: Request, params: Mapping[str, str]) -> str:
        if "client_assertion" in params:
            self.received_assertions.append(params["client_assertion"])
        return authenticate_client(
            self.directory,
            form=params,
            authorization=request.headers.get("authorization"),
            issuer=self.issuer,
            now=self.clock(),
            seen_jtis=self._seen_jtis if self.track_jti else None,
        )

    def _is_live(self, token: AccessToken) -> bool:
        """ZITADEL v4's ``ActiveAccessTokenByToken``: not expired or revoked; the user usable
        and not deactivated, locked or removed since the token was issued; its login session
        not terminated, nor signed out of in its user agent since."""
        user = token.user
        if token.revoked or not user.usable or self.clock() >= token.expires_at:
            return False
        if user.refused_before > token.position:
            return False
        session = token.oidc_session
        if session is None:
            return True
        login = session.login_session
        if session.access_token_revoked or (login is not None and login.terminated):
            return False
        return login is None or user.signed_out.get(login.user_agent_id, 0) < token.position

    def _audience_allows(self, token: AccessToken, caller: str) -> bool:
        app = self.directory.apps.get(caller)
        allowed = {caller} if app is None else {caller, app.project.id}
        return not allowed.isdisjoint(token.audience)

    def _active_body(self, token: AccessToken, caller: str) -> dict[str, Any]:
        user = token.user
        scopes = set(token.scopes)
        body: dict[str, Any] = {
            "active": True,
            "scope": " ".join(token.scopes),
            "client_id": token.client_id,
            "token_type": "Bearer",
            "exp": token.expires_at,
            "iat": token.issued_at,
            "nbf": token.issued_at,
            "sub": user.id,
            "aud": list(token.audience),
            "iss": self.issuer,
            "jti": token.id,
        }
        if "profile" in scopes:
            body.update(
                name=user.name,
                given_name=user.given_name,
                family_name=user.family_name,
                locale=user.locale,
                updated_at=token.issued_at,
                preferred_username=user.username,
                username=user.username,
            )
        if "email" in scopes and user.email is not None:
            body["email"] = user.email
            if user.email_verified:
                body["email_verified"] = True
        app = self.directory.apps.get(caller)
        body.update(self._private_claims(token, app.project.id if app is not None else None))
        return body

    def _private_claims(self, token: AccessToken, project_id: str | None) -> dict[str, Any]:
        """The claims of ZITADEL's reserved scopes, and the roles of ``project_id``."""
        user, scopes = token.user, set(token.scopes)
        claims: dict[str, Any] = {}
        if "urn:zitadel:iam:user:resourceowner" in scopes:
            claims[ORG_ID_CLAIM] = user.org.id
            claims[ORG_NAME_CLAIM] = user.org.name
            claims[ORG_DOMAIN_CLAIM] = user.org.primary_domain
        if token.actor is not None:
            claims["act"] = token.actor
        if "urn:zitadel:iam:user:metadata" in scopes and user.metadata:
            claims[METADATA_CLAIM] = {
                key: base64.urlsafe_b64encode(value).decode().rstrip("=")
                for key, value in user.metadata.items()
            }
        roles = self.directory.active_roles(user, project_id) if project_id else set()
        if project_id and roles:
            shaped = {role: {user.org.id: user.org.primary_domain} for role in sorted(roles)}
            claims[ROLES_CLAIM] = shaped
            claims[project_roles_claim(project_id)] = shaped
        return claims

    def _next_fault(self, endpoint: FaultEndpoint) -> Fault | None:
        fault = next((f for f in self._faults if f.endpoint == endpoint), None)
        if fault is None:
            return None
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
        return fault

    async def _apply(self, fault: Fault) -> Response | None:
        if fault.kind == "latency":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "status":
            return JSONResponse({"error": "server_error"}, status_code=fault.status)
        if fault.kind == "rate_limit":
            return JSONResponse(
                {"error": "rate limited"},
                status_code=429,
                headers={"Retry-After": str(int(fault.seconds))},
            )
        if fault.kind == "garbage":
            return Response("<html>502 Bad Gateway</html>", media_type="text/html")
        if fault.kind == "drop":
            return _DroppedMidAnswer()
        return None  # "inactive" is applied after client authentication


class _DroppedMidAnswer(Response):
    """Starts a JSON answer, sends half of it, and fails: on a real port the server closes the
    connection mid-body; in-process the transport raises ``ConnectionDropped``."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"active": tr', "more_body": True})
        raise ConnectionDropped("connection dropped by the stand-in")


async def _parameters(request: Request) -> dict[str, str]:
    """Query and url-encoded form parameters (the only body type OAuth endpoints take)."""
    params = dict(request.query_params)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method == "POST" and content_type == "application/x-www-form-urlencoded":
        body = (await request.body()).decode("utf-8", errors="replace")
        pairs = parse_qsl(body, keep_blank_values=True)
        request.state.form_pairs = pairs  # for repeated fields
        params.update(pairs)
    return params


def _multi(request: Request, name: str) -> list[str]:
    """Every value of a repeated form or query parameter (RFC 8693's ``audience``)."""
    return [value for value in request.query_params.getlist(name) if value] + [
        value for key, value in getattr(request.state, "form_pairs", []) if key == name and value
    ]


def _known_scope(scope: str) -> bool:
    return scope in _STANDARD_SCOPES or scope.startswith(_ZITADEL_SCOPE_PREFIX)


def _audience_scopes(scopes: Iterable[str]) -> list[str]:
    """The project ids of ``urn:zitadel:iam:org:project:id:{id}:aud`` scopes."""
    return [
        scope[len(AUDIENCE_SCOPE_PREFIX) : -len(AUDIENCE_SCOPE_SUFFIX)]
        for scope in scopes
        if scope.startswith(AUDIENCE_SCOPE_PREFIX) and scope.endswith(AUDIENCE_SCOPE_SUFFIX)
    ]


def _with_query(uri: str, params: Mapping[str, str]) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(params)


def _redirect_error(uri: str, state: str | None, error: str, description: str) -> Response:
    """RFC 6749 4.1.2.1: errors go back to a verified redirect URI."""
    answer = {"error": error, "error_description": description}
    if state:
        answer["state"] = state
    return RedirectResponse(_with_query(uri, answer), status_code=303)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in: ZITADEL stand-in</title>
<style>body{{font-family:sans-serif;max-width:32em;margin:3em auto}}
button{{display:block;width:100%;margin:.4em 0;padding:.6em;font-size:1em;text-align:left}}
</style></head><body>
{body}
</body></html>
"""


def _login_page(request_id: str, app: WebApplication, users: list[User]) -> str:
    """The minimal login page: one button per human user, with its roles in the project."""
    buttons = []
    for user in users:
        roles = ", ".join(sorted(user.roles.get(app.project.id, set()))) or "no roles"
        label = f"{user.username} ({roles})"
        buttons.append(
            f'<button type="submit" name="user" value="{html.escape(user.id)}">'
            f"{html.escape(label)}</button>"
        )
    body = (
        f"<h1>Sign in to {html.escape(app.project.name)}</h1>"
        "<p>ZITADEL stand-in, for development: pick the user to sign in as.</p>"
        f'<form method="post" action="{LOGIN_PATH}">'
        f'<input type="hidden" name="auth_request" value="{html.escape(request_id)}">'
        + ("".join(buttons) or "<p>No users yet.</p>")
        + "</form>"
    )
    return _PAGE.format(body=body)


def _login_error(message: str) -> HTMLResponse:
    """Errors that must not be redirected (unknown client or redirect URI)."""
    body = f"<h1>Cannot sign in</h1><p>{html.escape(message)}</p>"
    return HTMLResponse(_PAGE.format(body=body), status_code=400)


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)
