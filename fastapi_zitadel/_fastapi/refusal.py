"""What a refused request is answered with, as the client will really see it.

``ZitadelError.to_http()`` decides the answer: an ``HTTPException`` (status, RFC 6750 header,
body) or, on a WebSocket, a ``WebSocketException`` (1008, or 1013 to retry later, with the
reason). On a WebSocket still in its handshake, a close is not what reaches the client: ASGI
servers (uvicorn among them) turn a close before ``accept()`` into a bare ``HTTP 403``, so a
real client could tell neither "refused" from "retry later" nor read the reason. So the socket
is accepted first, and the close that follows carries the code and the reason to every client,
browsers included (they cannot read a refused handshake's status at all). The route's handler
never runs: the dependency raised before it.
"""

from __future__ import annotations

import contextlib

from fastapi import HTTPException, WebSocketException
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from fastapi_zitadel._exceptions import ZitadelError

__all__ = ["refusal"]


async def refusal(
    error: ZitadelError, conn: HTTPConnection, realm: str, *, resource_metadata: str | None = None
) -> HTTPException | WebSocketException:
    """The exception to raise for ``error``; a WebSocket in its handshake is accepted first."""
    exc = error.to_http(conn, realm, resource_metadata=resource_metadata)
    if (
        isinstance(exc, WebSocketException)
        and isinstance(conn, WebSocket)
        and conn.application_state == WebSocketState.CONNECTING
    ):
        # A client already gone: the close that follows has nobody to reach.
        with contextlib.suppress(OSError, RuntimeError, WebSocketDisconnect):
            await conn.accept()
    return exc
