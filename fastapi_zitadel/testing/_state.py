"""The command-line stand-in's world, kept in a state directory across restarts.

``state.json`` holds the ids, the keys and the secrets of the organization, the project, its
API application, the web application, the service user and the human users, so that the
``ZITADEL_*`` variables, the key file and the service user's credentials printed by one run
stay valid for the next. The directory is made ``0700`` and every file in it ``0600``: it
holds private keys. Access tokens are not kept: each run mints fresh ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ._directory import (
    ApiApplication,
    Project,
    StandInOrganization,
    User,
    WebApplication,
    pkcs1_pem,
    reserve_ids,
)
from ._project import StandInProject, private_file
from ._standin import ZitadelStandIn

STATE_FILE = "state.json"
VERSION = 1


@dataclass
class World:
    """What the command line prints: a project, its web application, one service user."""

    project: StandInProject
    web: WebApplication
    service_user: User
    port: int | None = None  # the port of the run that saved the state


def create(
    standin: ZitadelStandIn,
    *,
    key_dir: Path | None,
    service_user: str,
    redirect_uris: Iterable[str],
) -> World:
    """A new world; its users' roles are the caller's to set (on a loaded one too)."""
    project = StandInProject(standin, key_dir=key_dir)
    web = project.web_app(redirect_uris)
    return World(project, web, create_service_user(project, service_user))


def create_service_user(project: StandInProject, username: str) -> User:
    """A service user of the project's organization with a random client secret."""
    return project.standin.add_service_user(project.org, username, with_secret=True)


def load(standin: ZitadelStandIn, state_dir: Path, *, redirect_uris: Iterable[str]) -> World | None:
    """The world saved in ``state_dir`` (made ``0700``), registered with ``standin``; ``None``
    if none."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("version") != VERSION:
        raise ValueError(f"{path} was written by another version; remove the directory")
    directory = standin.directory
    org = StandInOrganization(**state["org"])
    directory.orgs[org.id] = org
    project = Project(**state["project"])
    directory.projects[project.id] = project
    saved_app = dict(state["api_app"])
    app = ApiApplication(
        project=project, private_key=_private_key(saved_app.pop("key")), **saved_app
    )
    directory.apps[app.client_id] = app
    assert app.key_id is not None
    directory.keys[app.key_id] = app
    web = WebApplication(project=project, redirect_uris=list(redirect_uris), **state["web_app"])
    directory.web_apps[web.client_id] = web
    users: dict[str, User] = {}
    for saved in map(dict, state["users"]):  # ``_user``'s fields: the ``User`` field names
        key = saved.pop("key", None)
        user = User(
            org=org,
            roles={project.id: set(saved.pop("roles"))},
            private_key=_private_key(key) if key else None,
            **saved,
        )
        directory.users[user.id] = user
        if user.key_id is not None:
            directory.keys[user.key_id] = user
        users[user.username] = user
    # New ids go above every restored one (a client id is ``<id>@<name>``).
    ids = [org.id, project.id, *directory.keys, *directory.users]
    ids += [client.id for client in (app, web)]
    ids += [client.client_id.split("@", 1)[0] for client in (app, web)]
    reserve_ids(max(int(value) for value in ids))
    restored = StandInProject(standin, key_dir=state_dir, org=org, project=project, app=app)
    for user in users.values():
        if user.kind == "human":
            restored.adopt(user)
    robot = users[state["service_user"]]
    return World(restored, web, robot, port=state.get("port"))


def save(world: World, state_dir: Path, port: int) -> None:
    """Write the world to ``state_dir/state.json`` (``0600``, in a ``0700`` directory)."""
    project = world.project
    app = project.app
    assert app.private_key is not None
    humans = [user for user in project.standin.directory.users.values() if user.kind == "human"]
    state: dict[str, Any] = {
        "version": VERSION,
        "port": port,
        "org": vars(project.org),
        "project": vars(project.project),
        "api_app": {
            "id": app.id,
            "client_id": app.client_id,
            "key_id": app.key_id,
            "key": pkcs1_pem(app.private_key),
        },
        "web_app": {"id": world.web.id, "client_id": world.web.client_id},
        "service_user": world.service_user.username,
        "users": [_user(user, project.project.id) for user in [world.service_user, *humans]],
    }
    private_file(state_dir / STATE_FILE, json.dumps(state, indent=2))


def _user(user: User, project_id: str) -> dict[str, Any]:
    saved: dict[str, Any] = {
        "id": user.id,
        "username": user.username,
        "kind": user.kind,
        "name": user.name,
        "email": user.email,
        "roles": sorted(user.roles.get(project_id, set())),
    }
    if user.private_key is not None:
        saved.update(key_id=user.key_id, key=pkcs1_pem(user.private_key))
    if user.client_secret is not None:
        saved["client_secret"] = user.client_secret
    return saved


def _private_key(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the saved key is not an RSA key")
    return key
