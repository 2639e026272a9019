"""Run the example: ``python3 scripts/dev.py example`` (or ``python -m example_app``).

With ``ZITADEL_ISSUER`` (and a key) in the environment it protects the API with your ZITADEL
instance. Without, it starts the embedded ZITADEL stand-in on a loopback port, creates a
project, an API application, two users, and prints tokens to try.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import uvicorn

from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.testing import LoopbackServer, ZitadelStandIn

from .app import create_app


def embedded_zitadel() -> tuple[ZitadelIntrospection, LoopbackServer]:
    standin = ZitadelStandIn()
    server = standin.serve()
    server.start()
    org = standin.add_org("Acme", "acme.localhost")
    project = standin.add_project("shop")
    api = standin.add_api_app(project, "shop-api")
    alice = standin.add_user(
        org, "alice", roles={project: ["admin"]}, name="Alice Admin", email="alice@acme.localhost"
    )
    bob = standin.add_user(org, "bob", roles={project: ["reader"]}, name="Bob Reader")
    key_path = Path(tempfile.mkdtemp(prefix="fastapi-zitadel-")) / "api-key.json"
    key_path.write_text(json.dumps(api.key_file))
    scopes = ["openid", "profile", "email"]
    tokens = {
        "alice (admin)": standin.issue_token(alice, project, scopes=scopes),
        "bob (reader)": standin.issue_token(bob, project, scopes=scopes),
    }
    print(f"Embedded ZITADEL stand-in at {standin.issuer}; API key file: {key_path}")
    for who, token in tokens.items():
        print(f"  token for {who}: {token}")
    zitadel = ZitadelIntrospection(
        standin.issuer, key_file=key_path, project_id=project.id, audience=project.id
    )
    return zitadel, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    server = None
    if os.environ.get("ZITADEL_ISSUER"):
        zitadel = ZitadelIntrospection.from_env()
    else:
        zitadel, server = embedded_zitadel()
    base = f"http://{args.host}:{args.port}"
    print(f"API on {base} (docs: {base}/docs). Try:")
    print(f'  curl -H "Authorization: Bearer <token>" {base}/me')
    try:
        uvicorn.run(create_app(zitadel), host=args.host, port=args.port, log_level="info")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
