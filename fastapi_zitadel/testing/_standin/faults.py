"""Fault injection (``ZitadelStandIn.inject``): the next requests to introspection or the
JWKS misbehave as a real server or the network between can."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from starlette.responses import JSONResponse, Response

FaultKind = Literal["latency", "status", "rate_limit", "garbage", "drop", "inactive"]
FaultEndpoint = Literal["introspect", "keys"]


@dataclass
class Fault:
    """A fault applied to the next ``remaining`` requests to ``endpoint`` (``None``: all)."""

    kind: FaultKind
    remaining: int | None = 1
    seconds: float = 0.0
    status: int = 503
    endpoint: FaultEndpoint = "introspect"


class ConnectionDropped(httpx.RemoteProtocolError):
    """Raised in-process where a real server would drop the connection mid-answer."""


async def apply(
    waiting: list[Fault], endpoint: FaultEndpoint
) -> tuple[Fault | None, Response | None]:
    """Take the first injected fault ``waiting`` for ``endpoint``: the fault, and the answer
    that replaces the endpoint's own (``None``: answer as usual, after ``latency``;
    ``inactive`` is the endpoint's to apply, after client authentication)."""
    fault = next((f for f in waiting if f.endpoint == endpoint), None)
    if fault is None:
        return None, None
    if fault.remaining is not None:
        fault.remaining -= 1
        if fault.remaining <= 0:
            waiting.remove(fault)
    if fault.kind == "latency":
        await asyncio.sleep(fault.seconds)
    elif fault.kind == "status":
        return fault, JSONResponse({"error": "server_error"}, status_code=fault.status)
    elif fault.kind == "rate_limit":
        headers = {"Retry-After": str(int(fault.seconds))}
        return fault, JSONResponse({"error": "rate limited"}, status_code=429, headers=headers)
    elif fault.kind == "garbage":
        return fault, Response("<html>502 Bad Gateway</html>", media_type="text/html")
    elif fault.kind == "drop":
        return fault, _DroppedMidAnswer()
    return fault, None


class _DroppedMidAnswer(Response):
    """Starts a JSON answer, sends half of it, and fails: on a real port the server closes the
    connection mid-body; in-process the transport raises ``ConnectionDropped``."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"active": tr', "more_body": True})
        raise ConnectionDropped("connection dropped by the stand-in")
