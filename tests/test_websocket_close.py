"""What a real WebSocket client sees when authentication fails: the documented close codes.

Starlette's TestClient reports the close code of a socket closed before ``accept()``; a real
server does not: uvicorn answers such a handshake with a bare ``HTTP 403``, the same for a
missing token, a bad token and an IdP outage. So the library accepts the socket and closes it
at once, with 1008 (policy violation) and the reason, or 1013 (try again later) during an
outage. Checked here with the ``websockets`` library against uvicorn, for the dependency and
for ``ZitadelMiddleware``; the route's own code never runs for a refused socket.
"""

from collections.abc import Iterator
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI, WebSocket
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from fastapi_zitadel import Principal, ZitadelIntrospection, ZitadelMiddleware
from fastapi_zitadel.testing import LoopbackServer, StandInProject

pytestmark = pytest.mark.loopback

Closed = tuple[int, str]


def dependency_app(zitadel: ZitadelIntrospection, handled: list[str]) -> FastAPI:
    app = FastAPI()
    zitadel.install(app)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, user: Annotated[Principal, Depends(zitadel)]) -> None:
        handled.append("ws")
        await websocket.accept()
        await websocket.send_text(f"hello {user.subject}")
        await websocket.close()

    @app.websocket("/admin")
    async def admin(
        websocket: WebSocket,
        user: Annotated[Principal, Depends(zitadel.require_scope("admin:write"))],
    ) -> None:
        handled.append("admin")
        await websocket.accept()
        await websocket.close()

    return app


def middleware_app(zitadel: ZitadelIntrospection, handled: list[str]) -> ZitadelMiddleware:
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        handled.append("ws")
        await websocket.accept()
        await websocket.send_text(f"hello {websocket.user.identity}")
        await websocket.close()

    return ZitadelMiddleware(app, zitadel=zitadel)


def opened(url: str, token: str | None = None) -> str | Closed:
    """The first message, or the close code and reason the client received."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    with connect(url, additional_headers=headers, open_timeout=10) as websocket:
        try:
            return str(websocket.recv(timeout=10))
        except ConnectionClosed as closed:
            received = closed.rcvd
    if received is None:
        return -1, "closed without a close frame"
    return received.code, received.reason


@pytest.fixture(params=["dependency", "middleware"])
def served(
    request: pytest.FixtureRequest, zitadel_project: StandInProject
) -> Iterator[tuple[str, list[str]]]:
    zitadel = zitadel_project.introspection(max_retries=0, cache_ttl=0, negative_cache_ttl=0)
    handled: list[str] = []
    build = dependency_app if request.param == "dependency" else middleware_app
    with LoopbackServer(build(zitadel, handled)) as url:
        yield url.replace("http://", "ws://"), handled


def test_a_real_client_receives_the_documented_close_codes(
    served: tuple[str, list[str]], zitadel_project: StandInProject
) -> None:
    url, handled = served
    token = zitadel_project.token("alice")
    assert opened(f"{url}/ws", token) == f"hello {zitadel_project.user('alice').id}"
    assert handled == ["ws"]

    missing = opened(f"{url}/ws")
    assert missing == (1008, "a bearer token is required")
    assert opened(f"{url}/ws", "not-a-real-token") == (1008, "the token is not active")

    zitadel_project.standin.inject("status", status=503, times=None)
    outage = opened(f"{url}/ws", zitadel_project.token("alice"))
    assert outage == (1013, "authentication is temporarily unavailable")  # retry later
    assert handled == ["ws"]  # no refused socket reached the route


def test_a_missing_scope_closes_with_1008_and_says_so(
    zitadel_project: StandInProject,
) -> None:
    handled: list[str] = []
    zitadel = zitadel_project.introspection(max_retries=0)
    with LoopbackServer(dependency_app(zitadel, handled)) as url:
        closed = opened(url.replace("http://", "ws://") + "/admin", zitadel_project.token("alice"))
    assert isinstance(closed, tuple)
    assert closed[0] == 1008
    assert "admin:write" in closed[1] or "scope" in closed[1]
    assert handled == []
