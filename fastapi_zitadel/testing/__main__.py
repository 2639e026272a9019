"""Run the ZITADEL stand-in from the command line, for trying an API by hand:

    python -m fastapi_zitadel.testing --port 8080 --state-dir .standin --user alice:admin

(also ``fastapi-zitadel-standin`` and ``fastapi-zitadel dev-issuer``) prints the issuer, the
API application's key file (an absolute path), the ``ZITADEL_*`` variables, a token for each
``--user`` (JWT access tokens with ``--jwt``, for trying ``validation="local"``), a
service user with its client id and secret and the ``curl`` that gets a token for it from the
token endpoint, as with ZITADEL, then serves until interrupted. ``--state-dir`` keeps the ids,
keys and secrets (files ``0600``) and the port, so the printed variables stay valid across
restarts. A port already in use exits with 4 and one line saying so.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from . import _state
from ._server import NEEDS_UVICORN, LoopbackServer, PortInUse, uvicorn_missing
from ._standin import ZitadelStandIn

PROG = "fastapi-zitadel-standin"
EXIT_USAGE = 2  # the command line's "usage" exit code: the testing extra is missing
EXIT_PORT_IN_USE = 4  # the command line's "network" exit code
ROLES_SCOPE = "urn:zitadel:iam:org:projects:roles"
DEFAULT_USERS = [("alice", ("admin",)), ("bob", ("reader",))]
# The example API's Swagger UI (python3 scripts/dev.py example, port 8000).
DEFAULT_REDIRECT_URIS = [
    "http://127.0.0.1:8000/docs/oauth2-redirect",
    "http://localhost:8000/docs/oauth2-redirect",
]
TOKEN_LIFETIME = 43_200  # ZITADEL's default: 12 h


def user_spec(text: str) -> tuple[str, tuple[str, ...]]:
    """``alice:admin,reader`` -> ``("alice", ("admin", "reader"))``; ``alice`` has no roles."""
    name, _, roles = text.partition(":")
    if not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: use NAME or NAME:ROLE[,ROLE...]")
    return name.strip(), tuple(role.strip() for role in roles.split(",") if role.strip())


def options() -> argparse.ArgumentParser:
    """The stand-in's options, shared with ``fastapi-zitadel dev-issuer``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--port",
        type=int,
        help="port on 127.0.0.1 (default: the one saved in --state-dir, else any free port)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="keep ids, keys, secrets and the port here (files 0600), so the printed "
        "variables stay valid across restarts (default: nothing is kept)",
    )
    parser.add_argument(
        "--user",
        action="append",
        type=user_spec,
        metavar="NAME[:ROLE,...]",
        help="print a token for this user holding these project roles (repeatable; "
        "default: --user alice:admin --user bob:reader)",
    )
    parser.add_argument(
        "--service-user",
        type=user_spec,
        default=("ci", ("reader",)),
        metavar="NAME[:ROLE,...]",
        help="the service user with a client secret (default: ci:reader)",
    )
    parser.add_argument(
        "--jwt",
        action="store_true",
        help="print JWT access tokens (ZITADEL's access token type JWT), to try "
        "ZITADEL_VALIDATION=local or hybrid; introspection accepts them too",
    )
    parser.add_argument(
        "--redirect-uri",
        action="append",
        metavar="URI",
        help="a redirect URI of the web application for Swagger UI's login (repeatable; "
        "default: the example API's http://127.0.0.1:8000/docs/oauth2-redirect)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, parents=[options()])
    serve(parser.parse_args(argv))


def serve(args: argparse.Namespace, prog: str = PROG) -> None:
    """Serve until interrupted; ``prog`` names the command in messages (``dev-issuer``)."""
    if uvicorn_missing():  # one line, not a traceback
        sys.exit(_fail(prog, NEEDS_UVICORN, EXIT_USAGE))
    # Absolute: the printed ZITADEL_KEY_FILE must hold from any folder the API is started in.
    state_dir: Path | None = None if args.state_dir is None else args.state_dir.resolve()
    redirect_uris = args.redirect_uri or DEFAULT_REDIRECT_URIS
    standin = ZitadelStandIn()
    world = None
    if state_dir is not None:
        world = _state.load(standin, state_dir, redirect_uris=redirect_uris)
    port = args.port if args.port is not None else (world.port if world and world.port else 0)
    try:
        server = LoopbackServer(standin.app, port=port)
    except PortInUse as exc:
        sys.exit(_fail(prog, str(exc)))
    except OSError as exc:
        sys.exit(_fail(prog, f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"))
    standin.issuer = server.url

    service_name, service_roles = args.service_user
    if world is None:
        world = _state.create(
            standin, key_dir=state_dir, service_user=service_name, redirect_uris=redirect_uris
        )
    elif world.service_user.username != service_name:
        world.service_user = _state.create_service_user(world.project, service_name)
    project = world.project
    world.service_user.roles[project.project.id] = set(service_roles)
    users = args.user or DEFAULT_USERS
    for name, roles in users:
        project.user(name).roles[project.project.id] = set(roles)
    if state_dir is not None:
        _state.save(world, state_dir, server.port)

    with server:
        env = {**project.env, "ZITADEL_SWAGGER_CLIENT_ID": world.web.client_id}
        print(f"ZITADEL stand-in: {standin.issuer}")
        print(f"API application key file: {project.key_path}")
        for name, value in env.items():
            print(f"export {name}={shlex.quote(value)}")
        for name, roles in users:
            token = project.token(name, lifetime=TOKEN_LIFETIME, jwt=args.jwt)
            print(f"token for {name} ({', '.join(roles) or 'no roles'}): {token}")
        if args.jwt:
            print(
                "the tokens are JWTs: with ZITADEL_VALIDATION=local an API verifies them with "
                "the issuer's keys, no key file needed (hybrid: and introspects them)"
            )
        robot = world.service_user
        assert robot.client_secret is not None
        print(
            f"service user {robot.username} ({', '.join(sorted(service_roles)) or 'no roles'}): "
            f"client id {robot.username}, client secret {robot.client_secret}"
        )
        scope = (
            f"openid profile {ROLES_SCOPE} urn:zitadel:iam:org:project:id:{project.project.id}:aud"
        )
        print("its token, from the token endpoint (client credentials, as with ZITADEL):")
        print(
            f"  curl -s -u {shlex.quote(robot.username + ':' + robot.client_secret)} "
            f"-d grant_type=client_credentials -d {shlex.quote('scope=' + scope)} "
            f"{standin.issuer}/oauth/v2/token"
        )
        print(
            f"Swagger UI login (PKCE): web application {world.web.client_id}, redirect URIs "
            + ", ".join(world.web.redirect_uris)
        )
        if state_dir is None:
            print("nothing is kept: --state-dir DIR keeps ids, keys and secrets for the next run")
        else:
            print(f"state kept in {state_dir} (tokens are new every run)")
        # SIGTERM ends the run like Ctrl-C, so that a key file this run made is removed; set
        # before the line that tells a supervisor we are ready.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        print("serving until Ctrl-C", flush=True)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
        finally:
            if state_dir is None:
                project.close()


def _fail(prog: str, message: str, code: int = EXIT_PORT_IN_USE) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    main()
