"""Run the example: ``python3 scripts/dev.py example`` (or ``python -m example_app``).

With ``ZITADEL_ISSUER`` (and a key) in the environment it protects the API with your ZITADEL
instance, and prints how to get a token from it; ``EXAMPLE_ORG_ID`` (an organization's
resource id) adds ``/org/report`` for admins of that organization. Without, it starts the
embedded ZITADEL stand-in on a loopback port with a project, an API application, a web
application for the Swagger UI login (PKCE), an admin and a reader, and prints ``curl``
commands to try.

``--validation local`` (or ``hybrid``) verifies JWT access tokens locally (the embedded
stand-in then issues JWTs; local mode needs no key file); ``introspection`` is the default, and
without the flag ``ZITADEL_VALIDATION`` decides for your own ZITADEL.

``--events`` (embedded stand-in only) makes the stand-in send ZITADEL's events (Actions v2)
to the API's receiver at ``/zitadel/events``: deactivate a user, revoke a token or remove a
grant there and every replica refuses it within moments, not after ``cache_ttl``. With your
own ZITADEL, set ``ZITADEL_EVENTS_SIGNING_KEY`` instead (``fastapi-zitadel events setup``).

``--smoke`` serves on a free port, makes one authorized and one anonymous request and one
WebSocket call, and exits (0 when all answered as expected, 1 otherwise); with ``--events``
it then deactivates the admin at the stand-in and checks that the API refuses the admin's
token. A port already in use exits with 4 and says so.
"""

import argparse
import contextlib
import json
import os
import socket
import sys
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import httpx
import uvicorn

from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.testing import (
    LoopbackServer,
    PortInUse,
    StandInEvents,
    StandInProject,
    ZitadelStandIn,
    base_url,
    bind_socket,
)

from .app import create_app

EXIT_PORT_IN_USE = 4  # the command line's "network" exit code

ROLES_SCOPE = "urn:zitadel:iam:org:projects:roles"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--app-wide", action="store_true", help="require a token on every route")
    parser.add_argument("--smoke", action="store_true", help="one request each way, then exit")
    parser.add_argument(
        "--validation",
        choices=("introspection", "local", "hybrid"),
        help="how tokens are verified (default: ZITADEL_VALIDATION, else introspection)",
    )
    parser.add_argument(
        "--events",
        action="store_true",
        help="the embedded stand-in sends ZITADEL's events to the API (revocation at once)",
    )
    args = parser.parse_args()

    host, port = ("127.0.0.1", 0) if args.smoke else (args.host, args.port)
    try:
        sock = bind_socket(host, port)  # before anything else: a taken port fails at once
    except PortInUse as exc:
        print(f"example: {exc}", file=sys.stderr)
        sys.exit(EXIT_PORT_IN_USE)
    base = base_url(host, sock.getsockname()[1])

    with ExitStack() as stack:
        stack.callback(sock.close)
        tokens: dict[str, str] = {}
        org_id = os.environ.get("EXAMPLE_ORG_ID")
        expected_name = "alice"
        events: StandInEvents | None = None
        deactivate_admin: Callable[[], bool] | None = None
        try_events = ""
        if os.environ.get("ZITADEL_ISSUER"):
            chosen = {"validation": args.validation} if args.validation else {}
            zitadel = ZitadelIntrospection.from_env(**chosen)
        else:
            validation = args.validation or "introspection"
            jwt = validation != "introspection"
            standin = ZitadelStandIn()
            stack.enter_context(standin.serve())
            project = stack.enter_context(StandInProject(standin))  # its key file goes too
            stack.callback(standin.close)
            web = project.web_app(_redirect_uris(base), jwt_access_tokens=jwt)
            events = StandInEvents(standin) if args.events else None
            zitadel = _embedded(project, validation, web.client_id, events)
            if events is not None and zitadel.events_path is not None:
                # Before the first token, so its session's events reach the API too.
                events.send_to(base + zitadel.events_path)
                deactivate_admin = _deactivate(project, events)
            org_id = project.org.id
            tokens = {
                "admin": project.token("alice", roles=["admin"], jwt=jwt),
                "reader": project.token("bob", roles=["reader"], jwt=jwt),
            }
            if validation == "local":  # a JWT verified locally names its user by id only
                # (hybrid: the WebSocket, the token's second request, is served from
                # ZITADEL's answer, which names her)
                expected_name = project.user("alice").id
            print(f"Embedded ZITADEL stand-in at {standin.issuer}")
            print(f"Validation: {validation}")
            if validation != "local":
                print(f"API application key file: {project.key_path}")
            if events is not None:
                print(f"Events: the stand-in sends ZITADEL's events to {events.target.endpoint}")
                try_events = _try_events(project)
        app = create_app(zitadel, org_id=org_id, app_wide=args.app_wide)
        if args.smoke:
            sys.exit(smoke(app, sock, tokens.get("admin"), expected_name, deactivate_admin))
        print(f"\nAPI on {base}; Swagger UI on {base}/docs. Try:")
        for who, token in tokens.items():
            print(f'  curl -H "Authorization: Bearer {token}" {base}/items   # {who}')
        print(f"  curl -i {base}/items   # no token: 401")
        if try_events:
            print(try_events)
        if tokens:
            print(f"Or open {base}/docs, click Authorize, then Authorize again and pick a user.")
        else:
            print(_how_to_get_a_token(zitadel, base))
        print(flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn's lines, no traceback
            uvicorn.Server(uvicorn.Config(app)).run(sockets=[sock])


def _embedded(
    project: StandInProject, validation: str, swagger: str, events: StandInEvents | None = None
) -> ZitadelIntrospection:
    """The instance for the embedded stand-in; local mode with no credential at all. With
    ``events``, its receiver takes the stand-in's events."""
    options: dict[str, Any] = {"swagger_client_id": swagger}
    if events is not None:
        options["events_signing_key"] = events.signing_key
    if validation == "local":
        return ZitadelIntrospection(
            project.standin.issuer,
            validation="local",
            audience=project.project.id,
            project_id=project.project.id,
            **options,
        )
    if validation == "hybrid":
        return project.introspection(validation="hybrid", **options)
    return project.introspection(**options)


def _try_events(project: StandInProject) -> str:
    """How to deactivate the reader at the stand-in by hand (ZITADEL's user API v2, with an
    IAM owner's personal access token): the API refuses the reader's token at once."""
    standin = project.standin
    admin = standin.admin_token()
    users = f"{standin.issuer}/v2/users/{project.user('bob').id}"
    return (
        "Deactivate the reader at the stand-in, and the API refuses the reader's token at once"
        f' (then reactivate):\n  curl -X POST -H "Authorization: Bearer {admin}" {users}/deactivate'
    )


def _deactivate(project: StandInProject, events: StandInEvents) -> Callable[[], bool]:
    """For the smoke test: deactivate the admin at the stand-in; ``True`` once the event was
    delivered."""

    def deactivate() -> bool:
        project.standin.deactivate_user(project.user("alice"))
        return events.wait(timeout=10)

    return deactivate


def _redirect_uris(base: str) -> list[str]:
    """Where Swagger UI sends the browser back to, under each name of this machine."""
    uris = [base + "/docs/oauth2-redirect"]
    if base.startswith("http://127.0.0.1:"):
        uris.append(base.replace("127.0.0.1", "localhost", 1) + "/docs/oauth2-redirect")
    return uris


def _how_to_get_a_token(zitadel: ZitadelIntrospection, base: str) -> str:
    """ZITADEL's own ways to a token for this API, with this instance's URLs filled in."""
    project = zitadel.config.project_id or "<project resource id>"
    scope = f"openid profile {ROLES_SCOPE} urn:zitadel:iam:org:project:id:{project}:aud"
    lines = [
        f"\nTokens come from your ZITADEL ({zitadel.issuer}):",
        "  - a service user with a client secret (console: Users > Service Users > your user >",
        "    Actions > Generate Client Secret), roles granted under the project's Authorizations:",
        f'    curl -s -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials '
        f"-d 'scope={scope}' {zitadel.issuer}/oauth/v2/token",
    ]
    if zitadel.config.swagger_client_id is None:
        lines.append(
            "  - or the Swagger UI login: set ZITADEL_SWAGGER_CLIENT_ID to the client id of a "
            f"web application (PKCE) with the redirect URI {base}/docs/oauth2-redirect"
        )
    else:
        lines.append(f"  - or log in from Swagger UI: {base}/docs, Authorize")
    return "\n".join(lines)


def smoke(
    app: object,
    sock: socket.socket,
    token: str | None,
    name: str = "alice",
    deactivate: Callable[[], bool] | None = None,
) -> int:
    """Serve on ``sock``, check an anonymous and an authorized request and the WebSocket
    route (welcoming ``name``): 0 when all answered as expected. With ``deactivate``, it then
    deactivates the admin at the stand-in, and the token must be refused (401)."""
    with LoopbackServer(app, sock=sock) as url:
        anonymous = httpx.get(url + "/me")
        print(f"GET /me without a token: {anonymous.status_code}")
        if token is None:
            return 0 if anonymous.status_code == 401 else 1
        authorized = httpx.get(url + "/me", headers={"Authorization": f"Bearer {token}"})
        print(f"GET /me as admin: {authorized.status_code} {authorized.json()}")
        welcome = _websocket_welcome(url, token)
        print(f"WebSocket /ws as admin: {welcome}")
        refused = 401
        if deactivate is not None:
            delivered = deactivate()
            refused = httpx.get(
                url + "/me", headers={"Authorization": f"Bearer {token}"}
            ).status_code
            print(f"admin deactivated (event delivered: {delivered}); GET /me: {refused}")
    expected = (401, 200, True, 401)
    got = (anonymous.status_code, authorized.status_code, welcome.get("welcome") == name, refused)
    return 0 if got == expected else 1


def _websocket_welcome(url: str, token: str) -> dict[str, Any]:
    """The first message of ``/ws``, or what went wrong (uvicorn needs a WebSocket library,
    which the ``testing`` extra brings)."""
    try:
        from websockets.sync.client import connect
    except ImportError:
        return {"error": "no WebSocket library: the 'testing' extra, pip install '.[testing]'"}
    try:
        with connect(
            url.replace("http://", "ws://", 1) + "/ws",
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=10,
        ) as websocket:
            message = json.loads(websocket.recv(timeout=10))
    except Exception as exc:  # reported, and the smoke test fails
        return {"error": type(exc).__name__}
    return message if isinstance(message, dict) else {"error": "not a JSON object"}


if __name__ == "__main__":
    main()
