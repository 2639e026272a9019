"""A local stand-in for the ZITADEL endpoints an API needs, as an ASGI app.

It enforces what the real server enforces (client authentication rules, audience checks,
answer shapes), so code that passes against it works against ZITADEL. Run it in-process with
``standin.transport()`` or on a loopback port with ``standin.serve()``.

Split as ZITADEL is: one module per endpoint, the web keys (``keys``) and fault injection
(``faults``), each handed the shared ``Instance``. ``ZitadelStandIn`` is the state tests see
(``InstanceState``) with the API they set it up with; the endpoints' helpers stay off it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property, partial
from typing import Any, Literal

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from fastapi_zitadel.testing._actions import Delivery, Target, TargetType
from fastapi_zitadel.testing._directory import (
    AccessToken,
    ApiApplication,
    LoginSession,
    Project,
    StandInOrganization,
    User,
    UserGrant,
    WebApplication,
    new_id,
)
from fastapi_zitadel.testing._management import ManagementApi
from fastapi_zitadel.testing._server import LoopbackServer

from .discovery import configuration, jwks
from .faults import ConnectionDropped, Fault, FaultEndpoint, FaultKind
from .instance import InstanceState
from .introspection import introspect
from .keys import DEFAULT_GRACE_PERIOD, WebKeyAlgorithm
from .login import LOGIN_PATH, Login, id_token
from .oauth import AUTHORIZATION_CODE_GRANT
from .revocation import revoke, revoke_endpoint
from .token import token_endpoint

__all__ = ["ConnectionDropped", "Fault", "ZitadelStandIn"]

ZITADEL_PROJECT_ID = "zitadel"  # stands for the instance's own project in a PAT's audience
# Each user change: the flag it sets, the event it writes, and whether the tokens issued
# before it stay refused from then on (even after the reverse change).
_USER_CHANGES: dict[str, tuple[str, bool, str, bool]] = {
    "deactivate": ("active", False, "user.deactivated", True),
    "reactivate": ("active", True, "user.reactivated", False),
    "lock": ("locked", True, "user.locked", True),
    "unlock": ("locked", False, "user.unlocked", False),
    "remove": ("removed", True, "user.removed", True),
}


class ZitadelStandIn(InstanceState):
    """A fake ZITADEL instance with a small API to set it up from tests. ``issuer`` is fixed
    at construction for in-process use; ``serve()`` sets it to the address it binds."""

    @cached_property
    def app(self) -> Starlette:
        """The ASGI app, made on first use: each endpoint handled by its own module."""
        instance = self._instance
        login = Login(instance)
        return Starlette(
            routes=[
                # Starlette's default methods: GET (and HEAD).
                Route("/.well-known/openid-configuration", partial(configuration, instance)),
                Route("/oauth/v2/keys", partial(jwks, instance)),
                Route("/oauth/v2/introspect", partial(introspect, instance), methods=["POST"]),
                Route(
                    "/oauth/v2/token", partial(token_endpoint, instance, login), methods=["POST"]
                ),
                Route("/oauth/v2/revoke", partial(revoke_endpoint, instance), methods=["POST"]),
                Route("/oauth/v2/authorize", login.authorize),
                Route(LOGIN_PATH, login.login, methods=["POST"]),
                *self.actions.routes(),
                *ManagementApi(
                    instance.authorize_admin,
                    self.directory.users,
                    {
                        "deactivate": self.deactivate_user,
                        "reactivate": self.reactivate_user,
                        "lock": self.lock_user,
                        "unlock": self.unlock_user,
                        "remove": self.remove_user,
                    },
                    self.terminate_session,
                    self.clock,
                ).routes(),
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
        org = StandInOrganization(new_id(), name, primary_domain or f"{name.lower()}.localhost")
        self.directory.orgs[org.id] = org
        return org

    def add_project(self, name: str) -> Project:
        project = Project(new_id(), name)
        self.directory.projects[project.id] = project
        return project

    def add_api_app(
        self,
        project: Project,
        name: str = "api",
        *,
        auth: Literal["private_key_jwt", "basic"] = "private_key_jwt",
    ) -> ApiApplication:
        app = ApiApplication(new_id(), f"{new_id()}@{name}", project)
        self.directory.give_credentials(app, auth)
        self.directory.apps[app.client_id] = app
        return app

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
        ``auth="private_key_jwt"`` (a key file) or ``"basic"`` (a secret) makes it confidential;
        with ``TOKEN_EXCHANGE_GRANT`` among its ``grant_types`` it may exchange tokens.
        ``jwt_access_tokens=True``: its code flow issues JWT access tokens."""
        app = WebApplication(
            new_id(),
            f"{new_id()}@{name}",
            project,
            redirect_uris=list(redirect_uris),
            auth=auth,
            grant_types=set(grant_types),
            jwt_access_tokens=jwt_access_tokens,
        )
        self.directory.give_credentials(app, auth)
        self.directory.web_apps[app.client_id] = app
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
        user = User(new_id(), org, username, metadata=dict(metadata or {}), **profile)
        return self._register(user, roles)

    def add_service_user(
        self,
        org: StandInOrganization,
        username: str,
        *,
        roles: Mapping[Project, Iterable[str]] | None = None,
        with_secret: bool = False,
        jwt_access_tokens: bool = False,
    ) -> User:
        """A service user with a key (and a secret); ``jwt_access_tokens=True``: the token
        endpoint issues it JWT access tokens (ZITADEL's "access token type" JWT)."""
        user = User(new_id(), org, username, "machine", jwt_access_tokens=jwt_access_tokens)
        self.directory.give_credentials(user, "private_key_jwt")
        if with_secret:
            self.directory.give_credentials(user, "basic")
        return self._register(user, roles)

    def _register(self, user: User, roles: Mapping[Project, Iterable[str]] | None) -> User:
        self.directory.users[user.id] = user
        for project, keys in (roles or {}).items():
            self.add_grant(user, project, keys)
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
        """An access token for ``user`` whose audience is ``project`` and the projects of the
        audience scopes (``urn:zitadel:iam:org:project:id:{id}:aud``) in ``scopes``, as ZITADEL
        adds them: opaque, or with ``jwt=True`` a JWT access token signed with the current web
        key, with ZITADEL's claims (no profile or e-mail). Introspection answers alike for both.
        Each token has its own OIDC session (``oidc_session.added``); a human user's is made
        from a new login session in a new user agent, or from the login session ``session``
        (see ``session_id``), as a second login in the same browser would be."""
        login = self._logins(user, session)[0] if session is not None else None
        if login is None and user.kind == "human":
            login = self._instance.new_login_session(user)
        return self._instance.mint(
            user, [project.id], scopes, lifetime, client_id, jwt=jwt, login=login
        ).value

    def service_token(
        self, user: User, projects: Iterable[Project] = (), *, lifetime: int = 43_200
    ) -> str:
        """A service user's token as the token endpoint issues it, with the audience scopes of
        ``projects`` (without any, no API accepts it)."""
        audience = [project.id for project in projects]
        return self._instance.mint(
            user, audience, ["openid"], lifetime, user.id, jwt=user.jwt_access_tokens
        ).value

    # Web keys -----------------------------------------------------------------------------
    def rotate_signing_key(
        self, *, algorithm: WebKeyAlgorithm = "RS256", grace_period: float = DEFAULT_GRACE_PERIOD
    ) -> str:
        """Make a new web key the one that signs (returns its id); the previous one stays in
        the JWKS for ``grace_period`` seconds (of the stand-in's clock), then leaves it."""
        return self._instance.web_keys.rotate(algorithm, grace_period)

    def sign_jwt(
        self, claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None
    ) -> str:
        """``claims`` signed with the current web key (header ``kid``, ``typ: JWT``, plus
        ``headers``): a JWT ZITADEL would not issue (expired, for another audience...),
        unknown to the stand-in, whose introspection answers inactive for it."""
        return self._instance.web_keys.sign(claims, headers)

    @property
    def signing_key_id(self) -> str:
        """The id (``kid``) of the web key that signs now."""
        return self._instance.web_keys.current().kid

    @property
    def published_key_ids(self) -> list[str]:
        """The ids of the web keys the JWKS lists now."""
        return [key.kid for key in self._instance.web_keys.published()]

    def revoke(self, token: str) -> None:
        """Revoke an access token as ``/oauth/v2/revoke`` does: a token of ZITADEL v4 ends
        with its OIDC session's access token (``oidc_session.access_token.revoked``), a JWT
        found by its ``jti``; a personal access token is removed (``user.pat.removed``);
        unknown or revoked tokens are left alone, as RFC 7009 wants."""
        revoke(self._instance, token)

    def token_info(self, token: str) -> AccessToken | None:
        """What the stand-in knows about ``token`` (opaque, or a JWT by its ``jti``)."""
        return self._instance.find_token(token)

    def session_id(self, token: str) -> str | None:
        """The id of the login session ``token`` was issued from (``None``: none, as for a
        service user's token): for ``terminate_session`` and ``issue_token(session=...)``."""
        found = self._instance.find_token(token)
        login = found.oidc_session.login_session if found and found.oidc_session else None
        return login.id if login is not None else None

    # Users, sessions and grants: what ZITADEL v4's introspection refuses -----------------
    def deactivate_user(self, user: User, *, editor: User | None = None) -> None:
        """``user.deactivated``: every token issued before it is inactive from now on, even
        after ``reactivate_user``; the user cannot log in meanwhile."""
        self._change_user(user, "deactivate", editor=editor)

    def reactivate_user(self, user: User, *, editor: User | None = None) -> None:
        """``user.reactivated``: new tokens work again; those from before stay inactive."""
        self._change_user(user, "reactivate", editor=editor)

    def lock_user(self, user: User, *, editor: User | None = None) -> None:
        """``user.locked`` (as after too many failed password checks): like deactivation."""
        self._change_user(user, "lock", editor=editor)

    def unlock_user(self, user: User, *, editor: User | None = None) -> None:
        self._change_user(user, "unlock", editor=editor)

    def remove_user(self, user: User, *, editor: User | None = None) -> None:
        """``user.removed``: the user and every token of theirs are gone for good."""
        self._change_user(user, "remove", editor=editor)

    def _change_user(self, user: User, change: str, *, editor: User | None) -> None:
        flag, value, event_type, refuses_earlier = _USER_CHANGES[change]
        setattr(user, flag, value)
        payload = {"userName": user.username} if change == "remove" else {}
        event = self._instance.emit(user, event_type, editor=editor, **payload)
        if refuses_earlier:
            user.refused_before = event.position

    def sign_out(self, user: User, *, session: str | None = None) -> None:
        """The user signs out (``user.human.signed.out``, the user the editor): tokens issued
        from the user agent of login session ``session`` before it are inactive; without
        ``session``, from every user agent the user logged in with."""
        for agent in dict.fromkeys(login.user_agent_id for login in self._logins(user, session)):
            event = self._instance.emit(
                user, "user.human.signed.out", editor=user, userAgentID=agent
            )
            user.signed_out[agent] = event.position

    def _logins(self, user: User, session: str | None) -> list[LoginSession]:
        """The user's login sessions: all, or only ``session``, which must be one of them."""
        logins = [
            login
            for login in self.directory.login_sessions.values()
            if login.user is user and (session is None or login.id == session)
        ]
        if session is not None and not logins:
            raise ValueError(f"login session {session} is not one of this user's")
        return logins

    def terminate_session(self, session: str, *, editor: User | None = None) -> None:
        """``session.terminated``: the login session ends, and every token issued from it."""
        login = self.directory.login_sessions.get(session)
        if login is None:
            raise ValueError(f"no login session {session}")
        if login.terminated:
            return
        login.terminated = True
        self._instance.record(
            "session", login.id, login.user.org.id, "session.terminated", editor or login.user
        )

    def add_grant(
        self, user: User, project: Project, roles: Iterable[str] = (), *, editor: User | None = None
    ) -> str:
        """Grant ``user`` ``roles`` in ``project`` (``user.grant.added``); returns the grant id.
        A user has one grant per project: use ``change_grant`` for the next change."""
        if (user.id, project.id) in self.directory.grants:
            raise ValueError(f"{user.username} has a grant in {project.name} already")
        user.roles[project.id] = added = set(roles)
        grant = self._grant(user, project)
        ids = {"userId": user.id, "projectId": project.id}
        self._emit_grant(grant, "added", editor, **ids, roleKeys=sorted(added))
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
            scopes=["openid", f"urn:zitadel:iam:org:project:id:{ZITADEL_PROJECT_ID}:aud"],
            now=int(self.clock()),
            lifetime=lifetime,
        )
        token.personal = True
        return token.value

    def admin_token(self, username: str = "actions-admin") -> str:
        """A personal access token of an IAM owner (a service user of the instance's own
        organization, created on first use): what the Actions v2 API needs."""
        users = self.directory.users.values()
        owner = next((u for u in users if u.iam_owner and u.username == username), None)
        if owner is None:
            org = next((o for o in self.directory.orgs.values() if o.name == "ZITADEL"), None)
            org = org or self.add_org("ZITADEL", "zitadel.localhost")
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
        return self.actions.add_target(
            endpoint, name=name, target_type=target_type, timeout=timeout, payload_type=payload_type
        )

    def set_execution(
        self, targets: Iterable[Target | str], *, event: str | None = None, group: str | None = None
    ) -> None:
        """Send ``event`` (an event type), the events of ``group`` (a prefix such as ``user``)
        or, with neither, all events to ``targets`` (as ``PUT /v2/actions/executions``; an
        empty list removes the execution). Only the best-matching execution runs per event."""
        if event is not None and group is not None:
            raise ValueError("give event or group, not both")
        condition = ("event", event) if event else ("group", group) if group else ("all", "")
        ids = [target.id if isinstance(target, Target) else target for target in targets]
        self.actions.set_execution(condition, ids)

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
        ``endpoint="keys"``: the next JWKS requests instead. ``latency`` waits ``seconds``
        first; ``status`` answers that HTTP status; ``rate_limit`` answers 429 with
        ``Retry-After: seconds``; ``garbage`` answers HTML; ``drop`` cuts the connection
        mid-answer; ``inactive``: ``{"active": false}``, as ZITADEL on an internal error."""
        self._instance.faults.append(Fault(kind, times, seconds, status, endpoint))

    def clear_faults(self) -> None:
        self._instance.faults.clear()

    def serve(self) -> LoopbackServer:
        """Serve on 127.0.0.1 with an ephemeral port; the issuer becomes that address:
        ``with standin.serve() as issuer: ...``"""
        server = LoopbackServer(self.app)
        self.issuer = server.url
        return server

    def transport(self) -> httpx.ASGITransport:
        """An in-process transport for ``httpx.AsyncClient(transport=...)``."""
        return httpx.ASGITransport(app=self.app)

    def id_token(self, user: User, project: Project, *, client_id: str | None = None) -> str:
        """An ID token for ``user`` as ZITADEL issues it with an access token for ``project``
        (for tests that present one where an access token belongs)."""
        app = next((a for a in self.directory.web_apps.values() if a.project == project), None)
        web = app or self.add_web_app(project, "id-token-web", redirect_uris=[])
        token = self._instance.mint(
            user, [project.id], ["openid"], 3600, client_id or web.client_id
        )
        return id_token(self._instance, token, web.client_id)

    # Helpers ------------------------------------------------------------------------------
    def _grant(self, user: User, project: Project) -> UserGrant:
        grant = self.directory.grant_of(user, project.id)
        if grant is None:
            raise ValueError(f"{user.username} has no grant in {project.name}")
        return grant

    def _emit_grant(
        self, grant: UserGrant, change: str, editor: User | None, **payload: Any
    ) -> None:
        """An event of the ``usergrant`` aggregate (``user.grant.{change}``)."""
        event_type = f"user.grant.{change}"
        self._instance.record("usergrant", grant.id, grant.user.org.id, event_type, editor, payload)
