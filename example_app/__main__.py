"""Run the example: ``python3 scripts/dev.py example`` (or ``python -m example_app``).

With ``ZITADEL_ISSUER`` (and a key) in the environment it protects the API with your ZITADEL
instance. Without, it starts the embedded ZITADEL stand-in on a loopback port with a project,
an API application, an admin and a reader, and prints ``curl`` commands to try.
``--smoke`` serves on a free port, makes one authorized and one anonymous request, and exits.
"""

import argparse
import os
import sys
from contextlib import ExitStack

import httpx
import uvicorn

from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.testing import LoopbackServer, StandInProject, ZitadelStandIn

from .app import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--app-wide", action="store_true", help="require a token on every route")
    parser.add_argument("--smoke", action="store_true", help="one request each way, then exit")
    args = parser.parse_args()

    with ExitStack() as stack:
        tokens: dict[str, str] = {}
        org_id = os.environ.get("EXAMPLE_ORG_ID")
        if os.environ.get("ZITADEL_ISSUER"):
            zitadel = ZitadelIntrospection.from_env()
        else:
            standin = ZitadelStandIn()
            stack.enter_context(standin.serve())
            project = StandInProject(standin)
            zitadel = project.introspection()
            org_id = project.org.id
            tokens = {
                "admin": project.token("alice", roles=["admin"]),
                "reader": project.token("bob", roles=["reader"]),
            }
            print(f"Embedded ZITADEL stand-in at {standin.issuer}")
            print(f"API application key file: {project.key_path}")
        app = create_app(zitadel, org_id=org_id, app_wide=args.app_wide)
        if args.smoke:
            sys.exit(smoke(app, tokens.get("admin")))
        base = f"http://{args.host}:{args.port}"
        print(f"\nAPI on {base}; Swagger UI on {base}/docs. Try:")
        for who, token in tokens.items():
            print(f'  curl -H "Authorization: Bearer {token}" {base}/items   # {who}')
        print(f"  curl -i {base}/items   # no token: 401\n", flush=True)
        uvicorn.run(app, host=args.host, port=args.port)


def smoke(app: object, token: str | None) -> int:
    """Serve on a free port, check one authorized and one anonymous request: 0 when right."""
    with LoopbackServer(app) as url:
        anonymous = httpx.get(url + "/me")
        print(f"GET /me without a token: {anonymous.status_code}")
        if token is None:
            return 0 if anonymous.status_code == 401 else 1
        authorized = httpx.get(url + "/me", headers={"Authorization": f"Bearer {token}"})
        print(f"GET /me as admin: {authorized.status_code} {authorized.json()}")
    return 0 if (anonymous.status_code, authorized.status_code) == (401, 200) else 1


if __name__ == "__main__":
    main()
