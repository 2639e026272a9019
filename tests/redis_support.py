"""A real redis-server on a free loopback port for the tests that need one, and waiting (with
a safety bound only) for what happens in Redis or another process."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")
if REDIS_SERVER is None and os.environ.get("FASTAPI_ZITADEL_REQUIRE_REDIS") == "1":
    raise RuntimeError("redis-server is required here but not installed")
# The marks of a module whose every test needs redis-server.
NEEDS_REDIS = [
    pytest.mark.redis,
    pytest.mark.skipif(REDIS_SERVER is None, reason="needs Debian's redis-server"),
]


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


# Waiting for something that happens in another task or process (a pub/sub subscription, an
# invalidation on its way) polls for it. This bound only stops a broken test from hanging;
# nothing is timed against it, and it is well below the 60 s cache_ttl, so an entry lapsing
# on its own can never pass for an invalidation that arrived.
SAFETY = 20.0


async def becomes(check: Callable[[], Awaitable[bool]]) -> bool:
    """Whether ``check`` comes true (polled) before the safety bound."""

    async def poll() -> None:
        while True:  # no Event to wait for: the change happens in Redis or another process
            if await check():
                return
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), SAFETY)
    except asyncio.TimeoutError:
        return False
    return True


async def eventually(check: Callable[[], Awaitable[bool]], failure: str) -> None:
    if not await becomes(check):
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
