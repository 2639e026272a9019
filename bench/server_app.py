"""The app section 5 serves with uvicorn: an open route, a cached ``require_scope`` route, a
cached ``Depends(zitadel)`` route, section 1's do-nothing security dependency as floors:
used directly (b) and wrapped like ``require_scope`` (c), and a route protected by
``ZitadelMiddleware`` alone (``/mw/items``).

The middleware's route lives in a second FastAPI app of the same shape, wrapped by the
middleware; one path-prefix check in front dispatches between the two apps for every route
alike, so the open route and the middleware's route pay the same for everything but the
middleware.

    python -m bench.server_app [--cpu N]

binds a loopback port, prints one JSON line (url, token), then serves until terminated. The
stand-in answers introspection in-process, so only the first request to ``/items`` leaves
the route's dependency for the IdP; ``/stats`` tells how many introspections happened.

No ``from __future__ import annotations``: the routes are declared inside a function.
"""

import argparse
import importlib.util
import json
import os
import socket
from typing import Annotated

import httpx
import uvicorn
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.hot_path import Floor, floor_wrapped
from fastapi_zitadel import Principal, ZitadelIntrospection, ZitadelMiddleware
from fastapi_zitadel.testing import StandInProject, ZitadelStandIn

SCOPE = "items:read"
TOKEN_SCOPES = ("openid", "profile", "email", "urn:zitadel:iam:user:resourceowner", SCOPE)


class _Dispatch:
    """``/mw/...`` to the middleware-protected app, everything else to the main app."""

    def __init__(self, main: FastAPI, protected: ASGIApp) -> None:
        self.main = main
        self.protected = protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/mw/"):
            await self.protected(scope, receive, send)
        else:
            await self.main(scope, receive, send)


def create_served_app() -> tuple[ASGIApp, ZitadelIntrospection, str]:
    """What uvicorn serves: the main app and, under ``/mw/``, the middleware's app."""
    app, zitadel, token = create_app()
    protected = FastAPI()

    @protected.get("/mw/items")
    async def middleware_items() -> dict[str, bool]:  # the open route's shape
        return {"ok": True}

    protected.add_middleware(ZitadelMiddleware, zitadel=zitadel)
    return _Dispatch(app, protected), zitadel, token


def create_app() -> tuple[FastAPI, ZitadelIntrospection, str]:
    """The app, its ``ZitadelIntrospection`` and a token that passes ``require_scope``."""
    standin = ZitadelStandIn()
    project = StandInProject(standin)
    token = project.token("alice", roles=["reader", "editor"], scopes=TOKEN_SCOPES)
    zitadel = project.introspection(
        http_client=httpx.AsyncClient(transport=standin.transport()), cache_ttl=3600
    )
    app = FastAPI()
    zitadel.install(app)
    floor = Floor()

    @app.get("/open")
    async def open_items() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/items")
    async def items(
        _principal: Annotated[Principal, Depends(zitadel.require_scope(SCOPE))],
    ) -> dict[str, bool]:
        return {"ok": True}

    @app.get("/authenticated")
    async def authenticated_items(
        _principal: Annotated[Principal, Depends(zitadel)],
    ) -> dict[str, bool]:
        return {"ok": True}

    @app.get("/bare-floor")
    async def bare_floor_items(_caller: Annotated[str, Depends(floor)]) -> dict[str, bool]:
        return {"ok": True}

    @app.get("/floor")
    async def floor_items(
        _caller: Annotated[str, Depends(floor_wrapped(floor))],
    ) -> dict[str, bool]:
        return {"ok": True}

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        return {"introspections": zitadel.introspection_calls}

    return app, zitadel, token


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    app, _zitadel, token = create_served_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # connections queue from now on, until uvicorn accepts them
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    implementations = {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }
    print(json.dumps({"url": url, "token": token, **implementations}), flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
