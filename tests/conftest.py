"""Shared fixtures: throwaway RSA keys made at test time, ZITADEL-shaped key files, a clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fastapi_zitadel.config import ZitadelKeyFile, load_key_file

from .helpers import CLIENT_ID, FakeClock, World, alice_world, pem_pkcs1
from .jwt_support import JwtWorld, served_jwt_world

if TYPE_CHECKING:  # redis is an extra: imported when a test asks for redis-server
    from .redis_support import RedisServer


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def app_key(rsa_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """An API application's key file, as ZITADEL's console downloads it."""
    return {
        "type": "application",
        "keyId": "301122334455667788",
        "key": pem_pkcs1(rsa_key),
        "appId": "298374650",
        "clientId": CLIENT_ID,
    }


@pytest.fixture(scope="session")
def loaded_app_key(app_key: dict[str, Any]) -> ZitadelKeyFile:
    """``app_key`` loaded once (a PEM key's load costs about 0.1 s, its checks included): for
    tests about something else that build many instances."""
    return load_key_file(app_key)


@pytest.fixture
def app_key_path(tmp_path: Path, app_key: dict[str, Any]) -> Path:
    path = tmp_path / "api-key.json"
    path.write_text(json.dumps(app_key))
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def world(clock: FakeClock) -> World:
    return alice_world(
        clock,
        metadata={"tier": b"gold"},
        name="Alice A.",
        email="alice@acme.localhost",
        email_verified=True,
        locale=None,
    )


@pytest.fixture
def jwt_world() -> Iterator[JwtWorld]:
    """The stand-in on a loopback port, issuing JWT access tokens, with hand-moved clocks."""
    yield from served_jwt_world()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own on a free loopback port (tests/redis_support.py)."""
    from .redis_support import RedisServer

    server = RedisServer()
    server.start()
    yield server
    server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what makes a test slow where the test itself says it, so `dev.py test --fast`
    leaves it out without a decorator to forget: a real redis-server (the ``redis_server``
    fixture) and hypothesis's generated examples."""
    for item in items:
        if "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.hypothesis)
