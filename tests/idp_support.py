"""An identity provider that answers slowly, or fails, on a virtual clock; and a stand-in
project behind it with an introspection instance on the loop's (virtual) time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.testing import User, ZitadelStandIn

from .helpers import FakeClock, alice_world


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


@dataclass
class SlowWorld:
    zitadel: ZitadelIntrospection
    standin: ZitadelStandIn
    idp: SlowIdP
    clock: FakeClock
    user: User
    token: Callable[[], str]  # a new valid token of the user


@asynccontextmanager
async def slow_world(latency: float, **options: Any) -> AsyncIterator[SlowWorld]:
    """Alice's project on the stand-in behind a ``SlowIdP`` of ``latency``, and an instance
    whose monotonic clock is the running loop's (virtual time, under ``run_on_virtual_time``);
    one token verified first, so discovery is done and the IdP known healthy."""
    world = alice_world(roles=["reader"])
    idp = SlowIdP(world.standin.transport(), latency)
    loop_time = asyncio.get_running_loop().time
    async with world.client(transport=idp, monotonic=loop_time, **options) as zitadel:
        slow = SlowWorld(zitadel, world.standin, idp, world.clock, world.user, world.token)
        await zitadel.verify(slow.token())
        yield slow
