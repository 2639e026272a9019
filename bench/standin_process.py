"""The ZITADEL stand-in served on a loopback port, as a process of its own.

    python -m bench.standin_process --tokens 100

prints one JSON line (issuer, key file, project, tokens, a service user's key file), then
answers ``calls`` on standard input with the number of introspection requests served so far,
``token_calls`` with the number of token requests, and exits at end of input.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile

from fastapi_zitadel.testing import LoopbackServer, StandInProject, ZitadelStandIn

# What a ZITADEL access token for a human user of an API typically asks for.
SCOPES = (
    "openid",
    "profile",
    "email",
    "urn:zitadel:iam:user:resourceowner",
    "items:read",
)
USERS = 10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=100)
    args = parser.parse_args()
    key_dir = tempfile.mkdtemp(prefix="bench-standin-")
    standin = ZitadelStandIn()
    server = LoopbackServer(standin.app)
    standin.issuer = server.url
    project = StandInProject(standin, key_dir=key_dir)
    tokens = [
        project.token(f"user{index % USERS}", roles=["reader", "editor"], scopes=SCOPES)
        for index in range(args.tokens)
    ]
    key_file = project.app.key_file
    robot = project.service_user("bench-robot", roles=["reader"])
    try:
        with server:
            info = {
                "issuer": standin.issuer,
                "introspection_endpoint": standin.issuer + "/oauth/v2/introspect",
                "key_path": str(project.key_path),
                "key_id": key_file["keyId"],
                "client_id": key_file["clientId"],
                "private_key_pem": key_file["key"],
                "project_id": project.project.id,
                "tokens": tokens,
                "service_key_path": str(project.service_key_path("bench-robot")),
                "service_user_id": robot.id,
            }
            print(json.dumps(info), flush=True)
            for line in sys.stdin:
                if line.strip() == "calls":
                    print(standin.introspection_calls, flush=True)
                elif line.strip() == "token_calls":
                    print(standin.token_calls, flush=True)
    finally:
        shutil.rmtree(key_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
