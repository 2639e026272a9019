"""An identity provider that answers slowly, or fails, on a virtual clock."""

from __future__ import annotations

import asyncio

import httpx


class SlowIdP(httpx.AsyncBaseTransport):
    """The stand-in, answering each introspection after ``latency`` (virtual) seconds, or
    with HTTP 500 once ``failing``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, latency: float) -> None:
        self.inner = inner
        self.latency = latency
        self.failing = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/introspect"):
            await asyncio.sleep(self.latency)
            if self.failing:
                return httpx.Response(500, json={"error": "server_error"})
        return await self.inner.handle_async_request(request)
