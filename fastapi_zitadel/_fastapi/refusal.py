"""What a refused request is answered with, as the client will really see it.
``ZitadelError.to_http()`` decides the answer: an ``HTTPException`` (status, RFC 6750 header, body)
or, on a WebSocket, a ``WebSocketException`` (1008, or 1013 to retry later, with the reason). On a
WebSocket still in its handshake, a close is not what reaches the client: ASGI servers (uvicorn
among them) turn a close before ``accept()`` into a bare ``HTTP 403``, so a real client could tell
neither "refused" from "retry later" nor read the reason. So the socket is accepted first, and the
close that follows carries the code and the reason to every client, browsers included (they cannot
read a refused handshake's status at all). The route's handler never runs: the dependency raised
before it."""

from __future__ import annotations

import contextlib

from fastapi import HTTPException, WebSocketException
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from starlette.types import Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from fastapi_zitadel._exceptions import ZitadelError

__all__ = ["Refusal"]


class Refusal:
    """How this API answers a ``ZitadelError``, bound once to its ``realm`` and its RFC 9728
    metadata URL: every answer of the library (the dependencies, ``require_*``, ``zitadel.user``,
    the middleware, the test overrides) goes through one, so none can leave either out (RFC 9728
    §5.1 wants ``resource_metadata`` on every 401 once ``resource`` is set)."""

    __slots__ = ("realm", "resource_metadata")

    def __init__(self, realm: str, resource_metadata: str | None = None) -> None:
        self.realm = realm
        self.resource_metadata = resource_metadata

    async def exception(
        self, error: ZitadelError, conn: HTTPConnection
    ) -> HTTPException | WebSocketException:
        """The exception for a dependency to raise; a WebSocket in its handshake is accepted
        first."""
        exc = error.to_http(conn, self.realm, resource_metadata=self.resource_metadata)
        if (
            isinstance(exc, WebSocketException)
            and isinstance(conn, WebSocket)
            and conn.application_state == WebSocketState.CONNECTING
        ):
            # A client already gone: the close that follows has nobody to reach.
            with contextlib.suppress(OSError, RuntimeError, WebSocketDisconnect):
                await conn.accept()
        return exc

    async def respond(self, error: ZitadelError, conn: HTTPConnection, send: Send) -> None:
        """The same answer sent from ASGI code (a middleware): the same status, body and
        headers, or the same WebSocket close."""
        exc = await self.exception(error, conn)
        if not isinstance(exc, HTTPException):
            await send({"type": "websocket.close", "code": exc.code, "reason": exc.reason})
            return
        # What FastAPI's handler of an HTTPException renders: byte for byte the same answer.
        response = JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
        headers = response.raw_headers
        await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})
