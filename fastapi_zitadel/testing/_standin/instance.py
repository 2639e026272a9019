"""An instance's state in two parts: ``InstanceState``, what tests see (settings, directory,
event history, call counters; ``ZitadelStandIn`` is one), and ``Instance``, what its endpoints
share beyond that (web keys, faults, the event record, client authentication, what a token is:
its claims, whether it is live), kept off ``ZitadelStandIn``'s members a test's editor offers."""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from starlette.requests import Request

from fastapi_zitadel.testing._actions import Actions, ApiError
from fastapi_zitadel.testing._client_check import authenticate_client
from fastapi_zitadel.testing._directory import (
    AccessToken,
    Directory,
    LoginSession,
    OidcSession,
    User,
    new_id,
)
from fastapi_zitadel.testing._events import Event, PayloadFormat, rfc3339_nano

from .faults import Fault
from .keys import WebKeys
from .oauth import audience_scopes

# ZITADEL's claim names, written out here rather than shared with the library: the stand-in
# plays the server, and a mistake in the library's names must not hide behind the same one.
ROLES_CLAIM = "urn:zitadel:iam:org:project:roles"
METADATA_CLAIM = "urn:zitadel:iam:user:metadata"
ORG_ID_CLAIM = "urn:zitadel:iam:user:resourceowner:id"
ORG_NAME_CLAIM = "urn:zitadel:iam:user:resourceowner:name"
ORG_DOMAIN_CLAIM = "urn:zitadel:iam:user:resourceowner:primary_domain"


class InstanceState:
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
        self.track_jti = track_jti
        self.impersonation = impersonation
        self.directory = Directory(jti_delimiter)
        self.instance_id = instance_id or new_id()
        # Who changes things when a test does: the instance's first administrator.
        self.admin_id = new_id()
        self.events: list[Event] = []  # the instance's history, in order
        self.introspection_calls = 0
        self.token_calls = 0
        self.jwks_calls = 0
        self.received_assertions: list[str] = []  # for tests that check nothing leaks them
        self._instance = Instance(self)
        self.actions = Actions(
            clock=clock,
            sign_jwt=self._instance.web_keys.sign,
            authorize=self._instance.authorize_admin,
            payload_format=event_payload,
            max_event_age=max_event_age,
        )


class Instance:
    def __init__(self, state: InstanceState) -> None:
        self.state = state
        self.web_keys = WebKeys(state.clock)
        self.faults: list[Fault] = []  # waiting for their endpoint
        self.seen_jtis: set[str] = set()
        self._sequences: Counter[tuple[str, str]] = Counter()  # per aggregate
        self._history = threading.Lock()  # changes come from tests and from served requests

    # Events -------------------------------------------------------------------------------
    def record(
        self,
        aggregate_type: str,
        aggregate_id: str,
        resource_owner: str,
        event_type: str,
        editor: User | str | None,
        payload: Mapping[str, Any] | None = None,
    ) -> Event:
        """Append an event to the history and hand it to Actions v2 (which sends it later);
        ``editor`` ``None`` is the instance's administrator."""
        who = editor.id if isinstance(editor, User) else editor or self.state.admin_id
        with self._history:
            self._sequences[(aggregate_type, aggregate_id)] += 1
            event = Event(
                aggregate_type=aggregate_type,
                aggregate_id=aggregate_id,
                resource_owner=resource_owner,
                instance_id=self.state.instance_id,
                sequence=self._sequences[(aggregate_type, aggregate_id)],
                position=self.state.directory.next_position(),
                event_type=event_type,
                created_at=self.state.clock(),
                editor=who,
                payload=dict(payload or {}),
            )
            self.state.events.append(event)
        self.state.actions.publish(event)
        return event

    def emit(
        self, user: User, event_type: str, *, editor: User | str | None, **payload: Any
    ) -> Event:
        """An event of the ``user`` aggregate."""
        return self.record("user", user.id, user.org.id, event_type, editor, payload)

    def emit_about_session(self, session: OidcSession, event_type: str, **payload: Any) -> Event:
        """An event of the ``oidc_session`` aggregate; its user is the editor."""
        user = session.user
        return self.record("oidc_session", session.id, user.org.id, event_type, user, payload)

    # Callers ------------------------------------------------------------------------------
    def authenticate(self, params: Mapping[str, str], request: Request | None) -> str:
        """The authenticated client id, as ZITADEL checks it (``_client_check``); without a
        ``request``, a JWT bearer grant's assertion (no Authorization header, no replay check)."""
        if "client_assertion" in params:
            self.state.received_assertions.append(params["client_assertion"])
        return authenticate_client(
            self.state.directory,
            form=params,
            authorization=request.headers.get("authorization") if request is not None else None,
            issuer=self.state.issuer,
            now=self.state.clock(),
            seen_jtis=self.seen_jtis if request is not None and self.state.track_jti else None,
        )

    def authorize_admin(self, request: Request) -> User:
        """The admin APIs want an IAM owner's token (a personal access token here): its user,
        the editor of what it changes."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = self.state.directory.tokens.get(value.strip() if scheme.lower() == "bearer" else "")
        if token is None or not self.is_live(token):
            raise ApiError(16, "Errors.Token.Invalid (AUTH-7fs1e)")
        if not token.user.iam_owner:
            raise ApiError(7, "Errors.PermissionDenied (AUTHZ-HdfG2)")
        return token.user

    # Tokens -------------------------------------------------------------------------------
    def find_token(self, value: str) -> AccessToken | None:
        """A token by its value, or a JWT of ours by its ``jti`` (ZITADEL looks it up so)."""
        found = self.state.directory.tokens.get(value)
        if found is not None or value.count(".") != 2:
            return found
        jti = (self.web_keys.claims_of(value) or {}).get("jti")
        tokens = self.state.directory.tokens.values()
        return next((token for token in tokens if token.id == jti), None)

    def is_live(self, token: AccessToken) -> bool:
        """ZITADEL v4's ``ActiveAccessTokenByToken``: not expired or revoked; the user usable
        and not deactivated, locked or removed since the token was issued; its login session
        not terminated, nor signed out of in its user agent since."""
        user = token.user
        if token.revoked or not user.usable or self.state.clock() >= token.expires_at:
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

    def mint(
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
        """A token of a new OIDC session (``oidc_session.added``), its audience the projects,
        those of the audience scopes in ``scopes`` (as ZITADEL adds them), and their apps."""
        scopes = list(scopes)
        audience = [*audience, *audience_scopes(scopes)]
        apps = [app for app in self.state.directory.apps.values() if app.project.id in audience]
        full_audience = [app.client_id for app in apps] + audience
        if requester is not None:
            full_audience.insert(0, requester)
        client = client_id or (apps[0].client_id if apps else user.id)
        session = OidcSession(f"V2_{new_id()}", user, client, login)
        added: dict[str, Any] = {
            "userID": user.id,
            "userResourceOwner": user.org.id,
            "clientID": client,
            "audience": list(dict.fromkeys(full_audience)),
            "scope": scopes,
            "authTime": rfc3339_nano(self.state.clock()),
        }
        if login is not None:
            added["sessionID"] = login.id
        self.emit_about_session(session, "oidc_session.added", **added)
        return self.state.directory.mint(
            user,
            client_id=client,
            audience=full_audience,
            scopes=scopes,
            now=int(self.state.clock()),
            lifetime=lifetime,
            project_id=next((p for p in audience if p in self.state.directory.projects), None),
            sign=self._signed_access_token if jwt else None,
            oidc_session=session,
        )

    def new_login_session(self, user: User) -> LoginSession:
        """A login in a new user agent (ZITADEL's ``session.added`` is of no use to an API and
        is not sent)."""
        login = LoginSession(new_id(), user, user_agent_id=new_id())
        self.state.directory.login_sessions[login.id] = login
        return login

    def _signed_access_token(self, token: AccessToken) -> str:
        return self.web_keys.sign(self.claims(token, token.project_id))

    def claims(self, token: AccessToken, project_id: str | None) -> dict[str, Any]:
        """The claims ZITADEL puts in a JWT access token (zitadel/zitadel ``createJWT`` with
        zitadel/oidc ``NewAccessTokenClaims``) and in introspection: iss, sub, aud, exp, iat,
        nbf, jti, the private claims of the token's scopes (resource owner, metadata, ``act``)
        and the roles of ``project_id``; no scope, client_id, azp, profile or e-mail claims."""
        user, scopes = token.user, set(token.scopes)
        claims: dict[str, Any] = {
            "iss": self.state.issuer,
            "sub": user.id,
            "aud": list(token.audience),
            "exp": token.expires_at,
            "iat": token.issued_at,
            "nbf": token.issued_at,
            "jti": token.id,
        }
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
        roles = self.state.directory.active_roles(user, project_id) if project_id else set()
        if project_id and roles:
            shaped = {role: {user.org.id: user.org.primary_domain} for role in sorted(roles)}
            claims[ROLES_CLAIM] = shaped
            claims[f"urn:zitadel:iam:org:project:{project_id}:roles"] = shaped
        return claims
