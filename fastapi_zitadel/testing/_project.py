"""A ready-made stand-in world: one organization, one project, its API application with a key
file on disk, and a one-call token factory. Shared by the pytest plugin, the example app and
the command line, so all three set things up the same way."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from fastapi_zitadel import ZitadelIntrospection

from ._actions import Target
from ._directory import ApiApplication, Project, StandInOrganization, User, WebApplication, new_id
from ._standin import ZitadelStandIn

EVENTS_SIGNING_KEY_VARIABLE = "ZITADEL_EVENTS_SIGNING_KEY"
TOKEN_SCOPES = ("openid", "profile", "email", "urn:zitadel:iam:user:resourceowner")


class StandInProject(AbstractContextManager["StandInProject"]):
    """``standin`` plus an organization, a project and its API application. ``key_path`` holds
    the application's key file, written as ZITADEL's console would offer it, so the code under
    test loads it through its normal path."""

    def __init__(
        self,
        standin: ZitadelStandIn,
        *,
        org_name: str = "Acme",
        project_name: str = "shop",
        key_dir: str | os.PathLike[str] | None = None,
        org: StandInOrganization | None = None,
        project: Project | None = None,
        app: ApiApplication | None = None,
    ) -> None:
        """``org``, ``project`` and ``app`` reuse objects already registered with ``standin``
        (a world restored from a saved state); by default they are created."""
        self.standin = standin
        self.org: StandInOrganization = org or standin.add_org(org_name)
        self.project: Project = project or standin.add_project(project_name)
        self.app: ApiApplication = app or standin.add_api_app(self.project, f"{project_name}-api")
        # A folder we make is ours to remove (it holds a private key): on close(), at the end
        # of a ``with`` block, and at interpreter exit at the latest.
        self._own_dir: Path | None = None
        if key_dir is None:
            key_dir = self._own_dir = Path(tempfile.mkdtemp(prefix="fastapi-zitadel-standin-"))
            atexit.register(self.close)
        self._key_dir = Path(key_dir)
        self.key_path = self._key_dir / f"{self.app.id}.json"
        private_file(self.key_path, json.dumps(self.app.key_file, indent=2))
        self._users: dict[str, User] = {}

    def adopt(self, user: User) -> None:
        """Make ``user`` (registered with the stand-in already) this project's ``username``."""
        self._users[user.username] = user

    def user(self, username: str = "alice", *, roles: Iterable[str] = (), **profile: Any) -> User:
        """The user called ``username``, created on first use, holding at least ``roles``."""
        user = self._users.get(username)
        if user is None:
            profile.setdefault("name", username.title())
            profile.setdefault("email", f"{username}@{self.org.primary_domain}")
            user = self._users[username] = self.standin.add_user(self.org, username, **profile)
        self.standin.grant_roles(user, self.project, roles)
        return user

    def service_user(
        self, username: str = "robot", *, roles: Iterable[str] = (), with_secret: bool = False
    ) -> User:
        """The service user called ``username`` (created on first use, with a key and, with
        ``with_secret``, a client secret), holding at least ``roles`` in the project. Its key
        file is at ``service_key_path(username)``."""
        user = self._users.get(username)
        if user is None:
            user = self.standin.add_service_user(self.org, username, with_secret=with_secret)
            self._users[username] = user
            private_file(self.service_key_path(username), json.dumps(user.key_file, indent=2))
        elif with_secret and user.client_secret is None:
            raise ValueError(f"service user {username} was created without a client secret")
        self.standin.grant_roles(user, self.project, roles)
        return user

    def service_key_path(self, username: str = "robot") -> Path:
        """Where the key file of the service user ``username`` is written."""
        return self._key_dir / f"service-user-{username}.json"

    def web_app(
        self,
        redirect_uris: Iterable[str],
        name: str | None = None,
        *,
        jwt_access_tokens: bool = False,
    ) -> WebApplication:
        """A web application (PKCE) of the project, e.g. for Swagger UI's login: give its
        ``client_id`` as ``swagger_client_id`` and ``{api}/docs/oauth2-redirect`` here.
        ``jwt_access_tokens=True``: its logins get JWT access tokens."""
        return self.standin.add_web_app(
            self.project,
            name or f"{self.project.name}-web",
            redirect_uris=redirect_uris,
            jwt_access_tokens=jwt_access_tokens,
        )

    def token(
        self,
        username: str = "alice",
        *,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = TOKEN_SCOPES,
        lifetime: int = 3600,
        jwt: bool = False,
    ) -> str:
        """A fresh access token for ``username`` (created with ``roles`` if new): opaque, or
        with ``jwt=True`` a JWT access token signed with the stand-in's web key."""
        user = self.user(username, roles=roles)
        return self.standin.issue_token(
            user, self.project, scopes=scopes, lifetime=lifetime, jwt=jwt
        )

    @property
    def env(self) -> dict[str, str]:
        """The ``ZITADEL_*`` variables that point ``ZitadelIntrospection.from_env`` here."""
        return {
            "ZITADEL_ISSUER": self.standin.issuer,
            "ZITADEL_KEY_FILE": str(self.key_path),
            "ZITADEL_PROJECT_ID": self.project.id,
            "ZITADEL_AUDIENCE": self.project.id,
        }

    def close(self) -> None:
        """Remove the key file's folder, if this project made it (a ``key_dir`` stays)."""
        own, self._own_dir = self._own_dir, None
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)
            atexit.unregister(self.close)

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def introspection(self, **options: Any) -> ZitadelIntrospection:
        """A ``ZitadelIntrospection`` for this project (audience and roles claim set)."""
        project = self.project.id
        options = {"key_file": self.key_path, "project_id": project, "audience": project, **options}
        return ZitadelIntrospection(self.standin.issuer, **options)


def private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only from the first byte on."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    path.chmod(0o600)


class StandInEvents:
    """The stand-in sending ZITADEL's events to your API, as an instance set up for it would:
    an Actions v2 target (``target``, its key ``signing_key``) and, once ``send_to(url)`` names
    the receiver, an execution for all events. Delivery is ZITADEL's: asynchronous and at most
    once; ``wait()`` waits for what is on its way. Events before ``send_to`` go nowhere (as
    with ZITADEL, where only configured executions run): call it before minting the tokens a
    test revokes, so that ``oidc_session.added`` (which maps a login session to its tokens)
    reaches the API too."""

    def __init__(self, standin: ZitadelStandIn, *, payload_type: str = "PAYLOAD_TYPE_JSON") -> None:
        self.standin = standin
        # No endpoint yet: the receiver's URL is known only once the API is served.
        self.target: Target = standin.add_target(
            "http://127.0.0.1:9/set-by-send-to",
            name=f"api-events-{new_id()}",  # target names are unique in an instance
            payload_type=payload_type,
        )

    @property
    def signing_key(self) -> str:
        """The target's key: the API's ``events_signing_key``."""
        return self.target.signing_key

    @property
    def env(self) -> dict[str, str]:
        """``ZITADEL_EVENTS_SIGNING_KEY`` for ``ZitadelIntrospection.from_env()``."""
        return {EVENTS_SIGNING_KEY_VARIABLE: self.signing_key}

    def send_to(self, url: str) -> None:
        """From now on, every event goes to ``url`` (the API's events path)."""
        self.target.endpoint = url
        self.standin.set_execution([self.target])

    def wait(self, timeout: float = 5.0) -> bool:
        """Wait until every event so far was delivered (or failed); ``False`` on timeout."""
        return self.standin.wait_for_deliveries(timeout)
