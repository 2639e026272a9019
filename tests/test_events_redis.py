"""ZITADEL's events across replicas sharing a real redis-server: an event received by one
replica is honoured by the others, by one that starts afterwards and by one that was cut off
from Redis meanwhile; with Redis down the receiving replica applies it alone and says so."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.testing import LoopbackServer

from .events_support import KEY, PATH, app_for, claims_of, event, instance, sign
from .helpers import refuses
from .jwt_support import JwtWorld
from .redis_support import NEEDS_REDIS, RedisServer, eventually, eventually_sync
from .tcp_proxy import TcpProxy

pytestmark = NEEDS_REDIS


def replica(jwt_world: JwtWorld, mode: str, server: RedisServer) -> ZitadelIntrospection:
    return instance(jwt_world, mode, redis_url=server.url)


async def deliver(zitadel: ZitadelIntrospection, jwt_world: JwtWorld, body: Any) -> httpx.Response:
    data = json.dumps(body).encode()
    transport = httpx.ASGITransport(app=app_for(zitadel))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        headers = sign(data, KEY, int(jwt_world.clock()))
        return await client.post(PATH, content=data, headers=headers)


def token_for(jwt_world: JwtWorld, mode: str) -> str:
    return jwt_world.token() if mode != "introspection" else jwt_world.project.token()


@pytest.mark.parametrize("mode", ["introspection", "local", "hybrid"])
async def test_an_event_reaches_every_replica_and_later_ones(
    jwt_world: JwtWorld, redis_server: RedisServer, mode: str
) -> None:
    token = token_for(jwt_world, mode)
    first, second = replica(jwt_world, mode, redis_server), replica(jwt_world, mode, redis_server)
    async with first, second:
        sub = (await first.verify(token)).subject
        assert sub is not None
        await second.verify(token)
        answer = await deliver(first, jwt_world, event("user.deactivated", sub, jwt_world.clock()))
        assert answer.json() == {"status": "applied"}
        assert await refuses(first, token)

        async def second_refuses() -> bool:
            return await refuses(second, token)

        await eventually(second_refuses, "the other replica still accepts the token")
        # one started afterwards replays the stored markers before it serves
        async with replica(jwt_world, mode, redis_server) as later:
            assert await refuses(later, token)
            jwt_world.clock.advance(2)
            assert (await later.verify(token_for(jwt_world, mode))).subject == sub


async def test_a_replica_cut_off_from_redis_catches_up(
    jwt_world: JwtWorld, redis_server: RedisServer
) -> None:
    token = jwt_world.token()
    first, second = (
        replica(jwt_world, "local", redis_server),
        replica(jwt_world, "local", redis_server),
    )
    async with first:
        sub = (await first.verify(token)).subject
        assert sub is not None
        async with second:
            await second.verify(token)
        # the second is away (closed) while the event arrives; it comes back afterwards
        await deliver(first, jwt_world, event("user.locked", sub, jwt_world.clock()))
        second = replica(jwt_world, "local", redis_server)
        async with second:
            assert await refuses(second, token)


async def test_redis_down_when_an_event_arrives(
    jwt_world: JwtWorld, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_zitadel")
    token = jwt_world.token()
    zitadel = replica(jwt_world, "local", redis_server)
    async with zitadel:
        sub = (await zitadel.verify(token)).subject
        assert sub is not None
        redis_server.stop()
        answer = await deliver(zitadel, jwt_world, event("user.removed", sub, jwt_world.clock()))
        assert answer.status_code == 503  # ZITADEL logs the failed call
        assert await refuses(zitadel, token)  # applied here all the same
        metrics = zitadel.metrics()
        assert metrics.events_unshared == 1
        assert metrics.events_applied == 1
    assert any("applied in this process only" in r.getMessage() for r in caplog.records)
    redis_server.start()  # for the fixture's stop


async def test_a_replay_to_another_replica_is_refused_and_stored_once(
    jwt_world: JwtWorld, redis_server: RedisServer
) -> None:
    first, second = (
        replica(jwt_world, "local", redis_server),
        replica(jwt_world, "local", redis_server),
    )
    body = event("user.locked", "310000000000000042", jwt_world.clock(), sequence=77)
    async with first, second:
        assert (await deliver(first, jwt_world, body)).is_success
        assert (await deliver(second, jwt_world, body)).status_code == 401  # a replay
        assert second.metrics().events_refused == {"replayed": 1}
    entries: Any = redis_server.client().xrange(stream_key(redis_server))
    assert len(entries) == 1


def stream_key(server: RedisServer) -> str:
    found: Any = server.client().scan_iter("fastapi-zitadel:events:*", _type="stream")
    streams = [bytes(key).decode() for key in found]
    assert len(streams) == 1
    return streams[0]


@pytest.mark.parametrize("cut", ["reset", "silent"])
async def test_a_deaf_replica_catches_up_when_it_hears_again(
    jwt_world: JwtWorld, redis_server: RedisServer, cut: str
) -> None:
    """The replica's connection to Redis is reset, or goes silent, while another replica
    receives an event: it refuses the token once it is connected again, missing nothing."""
    token = jwt_world.token()
    with TcpProxy(redis_server.port) as proxy:
        deaf = jwt_world.local(events_signing_key=KEY, redis_url=proxy.redis_url)
        receiving = replica(jwt_world, "local", redis_server)
        async with deaf, receiving:
            sub = (await deaf.verify(token)).subject
            assert sub is not None
            if cut == "reset":
                proxy.set_mode("reset")
            else:
                proxy.blackhole_open()
            body = event("user.locked", sub, jwt_world.clock())
            assert (await deliver(receiving, jwt_world, body)).is_success
            assert await refuses(receiving, token)
            assert not await refuses(deaf, token)  # it has not heard yet
            if cut == "reset":
                proxy.set_mode("forward")
            # silent: nothing cuts the connection; the listener's read timeout gives it up

            async def deaf_refuses() -> bool:
                return await refuses(deaf, token)

            await eventually(deaf_refuses, "the replica never caught up")


async def test_redis_down_at_start_holds_nothing_up_and_the_markers_come_later(
    jwt_world: JwtWorld, redis_server: RedisServer
) -> None:
    """A replica starting while Redis is out of reach starts at once (no wait for its
    ``timeout``) and applies the stored markers when it reaches Redis."""
    token = jwt_world.token()
    receiving = replica(jwt_world, "local", redis_server)
    async with receiving:
        sub = (await receiving.verify(token)).subject
        assert sub is not None
        await deliver(receiving, jwt_world, event("user.removed", sub, jwt_world.clock()))
    with TcpProxy(redis_server.port) as proxy:
        proxy.set_mode("reset")
        late = jwt_world.local(events_signing_key=KEY, redis_url=proxy.redis_url, timeout=300)
        await asyncio.wait_for(late.__aenter__(), 20)  # far below timeout=300: not waited for
        try:
            assert not await refuses(late, token)  # nothing known yet
            proxy.set_mode("forward")

            async def late_refuses() -> bool:
                return await refuses(late, token)

            await eventually(late_refuses, "the markers never arrived once Redis was reachable")
        finally:
            await late.aclose()


@pytest.mark.loopback
def test_two_uvicorn_replicas_over_real_http(
    jwt_world: JwtWorld, redis_server: RedisServer
) -> None:
    """ZITADEL calls one API server; a user's token is refused by the other one, over HTTP,
    and by a third started afterwards."""
    token = jwt_world.token()
    sub = claims_of(token)["sub"]
    me = {"Authorization": f"Bearer {token}"}

    def api() -> LoopbackServer:
        options = {"events_signing_key": KEY, "redis_url": redis_server.url}
        return LoopbackServer(app_for(jwt_world.local(**options)))

    with api() as first, api() as second:
        assert httpx.get(f"{second}/me", headers=me).status_code == 200
        data = json.dumps(event("user.deactivated", sub, jwt_world.clock())).encode()
        called = httpx.post(
            f"{first}{PATH}", content=data, headers=sign(data, KEY, int(jwt_world.clock()))
        )
        assert called.json() == {"status": "applied"}
        eventually_sync(
            lambda: httpx.get(f"{second}/me", headers=me).status_code == 401,
            "the other server still accepts the token",
        )
        with api() as third:
            assert httpx.get(f"{third}/me", headers=me).status_code == 401
