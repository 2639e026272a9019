"""``ServiceAccountAuth`` against an API that misbehaves, over real HTTP on loopback.

An API that answers every call ``401 invalid_token`` (misconfigured, or hostile) gets its
401s back, not a token request per call; a 401 from an origin the token was never sent to
(after a redirect) renews nothing. The token endpoint is the in-process stand-in; the API is
served by uvicorn, so redirects and headers are what a real client sees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from fastapi_zitadel import ServiceAccountAuth
from fastapi_zitadel._outbound.service_account import REFUSAL_HOLD_OFF
from fastapi_zitadel.testing import LoopbackServer, User

from .helpers import STANDIN_ISSUER, World

pytestmark = pytest.mark.loopback

CHALLENGE = b'Bearer realm="api", error="invalid_token", error_description="refused"'


@dataclass
class Api:
    """A raw ASGI API: 401 ``invalid_token`` for everything (``/refuse``), or a redirect to
    ``redirect_to`` (``/redirect``); it records the Authorization header of each call."""

    redirect_to: str = ""
    authorizations: list[str | None] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization")
        self.authorizations.append(None if authorization is None else authorization.decode())
        if scope["path"] == "/redirect":
            status, answer = 307, [(b"location", self.redirect_to.encode())]
        else:
            status, answer = 401, [(b"www-authenticate", CHALLENGE)]
        await send({"type": "http.response.start", "status": status, "headers": answer})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def robot(world: World) -> User:
    return world.standin.add_service_user(world.user.org, "robot", roles={world.project: []})


@pytest.fixture
def refusing() -> Iterator[tuple[Api, str]]:
    api = Api()
    with LoopbackServer(api) as url:
        yield api, url


def auth_for(world: World, robot: User) -> ServiceAccountAuth:
    return ServiceAccountAuth(
        STANDIN_ISSUER,
        key_file=robot.key_file,
        project_id=world.project.id,
        http_client=httpx.AsyncClient(transport=world.standin.transport()),
        clock=world.clock,
        monotonic=world.clock,
    )


async def test_an_api_refusing_every_token_gets_its_401s_back(
    world: World, robot: User, refusing: tuple[Api, str], caplog: pytest.LogCaptureFixture
) -> None:
    """The review's 52 token requests for 100 calls: now one to start and one renewal."""
    caplog.set_level(logging.WARNING, logger="fastapi_zitadel")
    api, url = refusing
    async with auth_for(world, robot) as auth, httpx.AsyncClient(auth=auth) as http:
        statuses = [(await http.get(f"{url}/refuse")).status_code for _ in range(100)]
        assert statuses == [401] * 100
        assert auth.token_requests == 2  # the first token, and one renewal after a 401
        # At once, a hundred concurrent calls: no more token requests either.
        answers = await asyncio.gather(*(http.get(f"{url}/refuse") for _ in range(100)))
        assert {answer.status_code for answer in answers} == {401}
        assert auth.token_requests == 2
        # After the hold-off, one more renewal, and again only one.
        world.clock.advance(REFUSAL_HOLD_OFF)
        for _ in range(20):
            await http.get(f"{url}/refuse")
        assert auth.token_requests == 3
    warnings = [r.getMessage() for r in caplog.records if "refused service user" in r.getMessage()]
    assert len(warnings) == 2  # once per hold-off, with the API's reason
    assert "invalid_token: refused" in warnings[0]
    assert url in warnings[0]
    assert len(api.authorizations) == 100 + 1 + 100 + 20 + 1  # each renewal: one call resent


async def test_a_401_from_an_origin_the_token_never_reached_renews_nothing(
    world: World, robot: User, refusing: tuple[Api, str]
) -> None:
    foreign, foreign_url = refusing
    origin = Api(redirect_to=f"{foreign_url}/refuse")
    with LoopbackServer(origin) as url:
        async with (
            auth_for(world, robot) as auth,
            httpx.AsyncClient(auth=auth, follow_redirects=True) as http,
        ):
            for _ in range(5):
                answer = await http.get(f"{url}/redirect")
                assert answer.status_code == 401
                assert answer.history[0].status_code == 307
            assert auth.token_requests == 1  # the 401 was not about our token: kept
    assert all(a is not None and a.startswith("Bearer ") for a in origin.authorizations)
    assert foreign.authorizations == [None] * 5  # httpx never sent it across origins


async def test_a_401_after_a_same_origin_redirect_still_renews(
    world: World, robot: User, refusing: tuple[Api, str]
) -> None:
    """The token went along (same origin): its 401 is about it."""
    api, url = refusing
    api.redirect_to = f"{url}/refuse"
    async with (
        auth_for(world, robot) as auth,
        httpx.AsyncClient(auth=auth, follow_redirects=True) as http,
    ):
        assert (await http.get(f"{url}/redirect")).status_code == 401
        assert auth.token_requests == 2
    assert all(a is not None for a in api.authorizations)


def test_the_sync_flow_holds_off_too(world: World, robot: User, refusing: tuple[Api, str]) -> None:
    _, url = refusing
    auth = ServiceAccountAuth(
        STANDIN_ISSUER,
        key_file=robot.key_file,
        project_id=world.project.id,
        sync_http_client=httpx.Client(transport=_SyncStandIn(world)),
        clock=world.clock,
        monotonic=world.clock,
    )
    with auth, httpx.Client(auth=auth) as http:
        assert {http.get(f"{url}/refuse").status_code for _ in range(50)} == {401}
        assert auth.token_requests == 2


class _SyncStandIn(httpx.BaseTransport):
    """The in-process stand-in behind a synchronous transport (one event loop per call)."""

    def __init__(self, world: World) -> None:
        self._world = world

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = self._world.standin.transport()
            response = await transport.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        request.read()
        return asyncio.run(send())
