"""The shared tier against a real redis-server on loopback (no fakes): two-level hits, nothing
readable at rest, expiry bound by exp, revocation across processes, Redis killed and
restarted, and several uvicorn workers introspecting a shared token once."""

import asyncio
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from fastapi_zitadel import InvalidTokenError, RedisCache, ZitadelIntrospection
from fastapi_zitadel._build import cache_namespace
from fastapi_zitadel.testing import StandInProject

from .helpers import FakeClock

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")
if REDIS_SERVER is None and os.environ.get("FASTAPI_ZITADEL_REQUIRE_REDIS") == "1":
    raise RuntimeError("redis-server is required here but not installed")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs Debian's redis-server")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(  # noqa: S603
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.2).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


# Waiting for something that happens in another task or process (a pub/sub subscription, an
# invalidation on its way) polls for it. This bound only stops a broken test from hanging;
# nothing is timed against it, and it is well below the 60 s cache_ttl, so an entry lapsing
# on its own can never pass for an invalidation that arrived.
SAFETY = 20.0


async def eventually(check: Callable[[], Awaitable[bool]], failure: str) -> None:
    async def poll() -> None:
        while True:  # no Event to wait for: the change happens in Redis or another process
            if await check():
                return
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), SAFETY)
    except asyncio.TimeoutError:
        pytest.fail(failure)


def eventually_sync(check: Callable[[], bool], failure: str) -> None:
    give_up = time.monotonic() + SAFETY
    while not check():
        if time.monotonic() > give_up:
            pytest.fail(failure)
        time.sleep(0.02)


def subscribers(server: RedisServer) -> int:
    """How many connections listen to invalidations: one per replica (or worker) listening."""
    store = server.client()
    channels = store.pubsub_channels()
    return sum(count for _, count in store.pubsub_numsub(*channels)) if channels else 0


def replica(project: StandInProject, server: RedisServer, **options: Any) -> ZitadelIntrospection:
    """One API replica: its own local tier, the shared Redis tier."""
    return project.introspection(redis_url=server.url, **options)


async def test_two_levels(zitadel_project: StandInProject, redis_server: RedisServer) -> None:
    token = zitadel_project.token("alice", roles=["admin"])
    first, second = replica(zitadel_project, redis_server), replica(zitadel_project, redis_server)
    async with first, second:
        assert (await first.verify(token)).has_role("admin")
        assert zitadel_project.standin.introspection_calls == 1
        shared_hit = await second.verify(token)  # another replica: served from Redis
        assert shared_hit.has_role("admin")
        assert shared_hit.username == "alice"
        assert zitadel_project.standin.introspection_calls == 1
        redis_server.stop()  # the second replica's local tier keeps serving it
        assert (await second.verify(token)).subject == shared_hit.subject


async def test_nothing_readable_at_rest(
    zitadel_project: StandInProject, redis_server: RedisServer
) -> None:
    user = zitadel_project.user("alice", roles=["admin"], email="alice@acme.localhost")
    token = zitadel_project.token("alice")
    async with replica(zitadel_project, redis_server) as zitadel:
        principal = await zitadel.verify(token)
    store = redis_server.client()
    keys = list(store.scan_iter())
    assert len(keys) == 1
    dump = b"".join(keys + [store.get(key) or b"" for key in keys])
    secrets = [token, *token.split("."), user.id, "alice", "acme.localhost", "admin"]
    secrets += [zitadel_project.org.id, zitadel_project.project.id, principal.client_id or ""]
    for secret in filter(None, secrets):
        assert secret.encode() not in dump, secret


async def test_expiry_is_bound_by_token_exp(
    zitadel_project: StandInProject, redis_server: RedisServer
) -> None:
    token = zitadel_project.token(lifetime=5)
    async with replica(zitadel_project, redis_server, cache_ttl=3600) as zitadel:
        await zitadel.verify(token)
    store = redis_server.client()
    (key,) = list(store.scan_iter())
    assert 0 < store.pttl(key) <= 5000


async def test_tampered_or_foreign_values_are_misses(
    zitadel_project: StandInProject, redis_server: RedisServer
) -> None:
    token = zitadel_project.token()
    async with replica(zitadel_project, redis_server) as zitadel:
        await zitadel.verify(token)
    store = redis_server.client()
    (key,) = list(store.scan_iter())
    value = store.get(key)
    assert isinstance(value, bytes)  # without decode_responses, redis-py answers bytes
    store.set(key, value[:-1] + bytes([value[-1] ^ 1]))
    async with replica(zitadel_project, redis_server) as other:
        await other.verify(token)
    assert zitadel_project.standin.introspection_calls == 2


async def test_invalidation_reaches_other_replicas(
    zitadel_project: StandInProject, redis_server: RedisServer
) -> None:
    token = zitadel_project.token()
    first, second = replica(zitadel_project, redis_server), replica(zitadel_project, redis_server)
    async with first, second:
        await first.verify(token)
        await second.verify(token)

        async def both_listening() -> bool:
            return subscribers(redis_server) >= 2

        await eventually(both_listening, "the replicas never subscribed to invalidations")
        zitadel_project.standin.revoke(token)
        await first.invalidate(token)

        async def second_refuses() -> bool:
            try:
                await second.verify(token)
            except InvalidTokenError:
                return True
            return False

        await eventually(second_refuses, "the second replica still accepts the revoked token")


async def test_redis_killed_and_restarted(
    zitadel_project: StandInProject, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastapi_zitadel")
    monotonic = FakeClock(0.0)  # when the cache tries Redis again: moved by hand
    cache = RedisCache.from_url(redis_server.url, retry_interval=0.3, monotonic=monotonic)
    standin = zitadel_project.standin
    async with zitadel_project.introspection(cache=cache) as zitadel:
        await zitadel.verify(zitadel_project.token())
        redis_server.stop()
        calls = standin.introspection_calls
        for _ in range(5):  # Redis down: straight to the IdP, never an error
            assert (await zitadel.verify(zitadel_project.token())).subject
        assert standin.introspection_calls == calls + 5
        redis_server.start()
        # Quick because Redis is not even tried again within retry_interval of a failure:
        # back up, but nothing is written to it yet.
        await zitadel.verify(zitadel_project.token())
        assert list(redis_server.client().scan_iter()) == []
        monotonic.advance(0.3)
        await zitadel.verify(zitadel_project.token())
        assert len(list(redis_server.client().scan_iter())) == 1  # used again
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("available again" in m for m in messages) == 1


def test_many_worker_processes_introspect_once(
    zitadel_project: StandInProject, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    env = {
        **os.environ,
        **zitadel_project.env,
        "ZITADEL_REDIS_URL": redis_server.url,
        "PYTHONPATH": str(ROOT),
    }
    workers = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.redis_app:app",
            "--port",
            str(port),
            "--workers",
            "3",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    token = zitadel_project.token()
    try:
        url = f"http://127.0.0.1:{port}/whoami"
        deadline = time.monotonic() + 30
        while True:
            try:
                first = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert first.status_code == 200
        pids = {first.json()["pid"]}
        calls_before_revocation = 0
        for _ in range(60):  # a new connection each time, spread over the workers
            response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200
            pids.add(response.json()["pid"])
        calls_before_revocation = zitadel_project.standin.introspection_calls
        eventually_sync(  # a worker not yet listening would miss the invalidation
            lambda: subscribers(redis_server) >= len(pids),
            "the workers never subscribed to invalidations",
        )
        # Revoked and invalidated from this process: every worker process must drop it.
        zitadel_project.standin.revoke(token)

        async def invalidate() -> None:
            async with replica(zitadel_project, redis_server) as other:
                await other.invalidate(token)

        asyncio.run(invalidate())
        statuses: list[int] = []

        def thirty_refused() -> bool:  # 30 in a row, spread over the workers
            statuses[:] = [
                httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code
                for _ in range(30)
            ]
            return set(statuses) == {401}

        eventually_sync(thirty_refused, "a worker still accepts the revoked token")
        assert set(statuses) == {401}
    finally:
        workers.terminate()
        workers.wait(timeout=30)
    calls = zitadel_project.standin.introspection_calls
    with capsys.disabled():
        print(
            f"\nredis: 3 workers served 61 requests from {len(pids)} processes with "
            f"1 introspection; after invalidate, 30/30 requests got 401 ({calls} calls in all)"
        )
    assert len(pids) >= 2
    assert calls_before_revocation == 1
    assert len(pids) >= 2
    assert calls <= 1 + 3  # then each worker asked once and remembered "inactive"


async def test_entries_cannot_be_forged_without_our_credential(
    zitadel_project: StandInProject, redis_server: RedisServer
) -> None:
    """Someone who can write to Redis and holds a token cannot give it other claims."""
    from fastapi_zitadel import CacheBinding, CacheEntry, CacheKey, Principal

    token = zitadel_project.token("mallory")
    async with replica(zitadel_project, redis_server) as zitadel:
        config = zitadel.config
        namespace = cache_namespace(config)  # what an attacker can work out
        forger = RedisCache.from_url(redis_server.url)
        forger.bind(
            CacheBinding(
                namespace=namespace,
                secret=b"a guess",
                principal=Principal.from_claims,
                on_invalidate=lambda digest: None,
                on_clear=lambda: None,
            )
        )
        key = CacheKey(hashlib.sha256(namespace + token.encode()).digest(), token)
        claims = {"sub": "root", "urn:zitadel:iam:org:project:roles": {"admin": {"o": "d"}}}
        await forger.set(key, CacheEntry(Principal.from_claims(claims), time.time() + 600))
        await forger.aclose()
        principal = await zitadel.verify(token)
    assert principal.username == "mallory"
    assert not principal.has_role("admin")
    assert zitadel_project.standin.introspection_calls == 1
