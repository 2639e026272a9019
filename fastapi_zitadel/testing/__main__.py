"""Run the ZITADEL stand-in from the command line, for trying an API by hand:

    python -m fastapi_zitadel.testing --port 8080

prints the issuer, the key file path, the ``ZITADEL_*`` variables and tokens for an admin and
a reader, then serves until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import threading

from ._project import StandInProject
from ._server import LoopbackServer
from ._standin import ZitadelStandIn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fastapi-zitadel-standin", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    args = parser.parse_args(argv)
    standin = ZitadelStandIn()
    server = LoopbackServer(standin.app, port=args.port)
    standin.issuer = server.url
    project = StandInProject(standin)
    with server:
        print(f"ZITADEL stand-in: {standin.issuer}")
        print(f"API application key file: {project.key_path}")
        for name, value in project.env.items():
            print(f"export {name}={value}")
        print(f"admin token:  {project.token('alice', roles=['admin'])}")
        print(f"reader token: {project.token('bob', roles=['reader'])}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
