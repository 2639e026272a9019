"""Test helpers: ids, PEM encodings, a hand-moved clock, ZITADEL-shaped answers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fastapi_zitadel import InvalidTokenError, ZitadelIntrospection
from fastapi_zitadel.testing import ApiApplication, Project, User, ZitadelStandIn

ISSUER = "https://zitadel.example.test"
INTROSPECT_URL = ISSUER + "/oauth/v2/introspect"
CLIENT_ID = "298374651@fastapi-zitadel"
STANDIN_ISSUER = "http://zitadel.localhost"


def pem_pkcs1(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def pem_pkcs8(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class FakeClock:
    """A wall clock the test moves by hand, so time-based behaviour needs no sleeps."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class HeldIntrospections(httpx.AsyncBaseTransport):
    """Wraps a transport and holds every introspection request until ``release()``.

    The test sees what waits at the IdP (``waiting``, ``peak``, ``arrived``) and decides when
    it answers, so concurrency is checked without sleeping. With ``hold_abandoned``, a held
    request whose caller gives up (its deadline) still keeps that caller until ``release()``,
    like a connection that takes that long to close: the test decides when its slot frees.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, *, hold_abandoned: bool = False) -> None:
        self._inner = inner
        self._hold_abandoned = hold_abandoned
        self._released = asyncio.Event()
        self._arrival = asyncio.Event()
        self.waiting = 0
        self.peak = 0
        self.arrived = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/introspect"):
            return await self._inner.handle_async_request(request)
        self.arrived += 1
        self.waiting += 1
        self.peak = max(self.peak, self.waiting)
        self._arrival.set()
        try:
            try:
                await self._released.wait()
            except asyncio.CancelledError:
                if self._hold_abandoned:
                    await self._released.wait()
                raise
        finally:
            self.waiting -= 1
        return await self._inner.handle_async_request(request)

    async def until_waiting(self, count: int) -> None:
        """Return once ``count`` introspection requests are held at once."""
        while self.waiting < count:
            self._arrival.clear()
            await self._arrival.wait()

    def release(self) -> None:
        """Let every held request, and every later one, through."""
        self._released.set()


def active_claims(now: float, **extra: Any) -> dict[str, Any]:
    """An active answer shaped like ZITADEL's (aud an array, scope a string, integer times)."""
    claims: dict[str, Any] = {
        "active": True,
        "scope": "openid profile items:read",
        "client_id": "298374999@fastapi-zitadel",
        "token_type": "Bearer",
        "exp": int(now) + 3600,
        "iat": int(now) - 60,
        "nbf": int(now) - 60,
        "sub": "user-1",
        "aud": ["298374999@fastapi-zitadel", "298374000"],
        "iss": ISSUER,
        "jti": "token-id-1",
        "username": "alice@acme.test",
    }
    claims.update(extra)
    return claims


@dataclass
class World:
    standin: ZitadelStandIn
    project: Project
    app: ApiApplication
    user: User
    clock: FakeClock

    def token(self, **options: Any) -> str:
        return self.standin.issue_token(self.user, self.project, **options)

    def client(
        self, *, transport: httpx.AsyncBaseTransport | None = None, **options: Any
    ) -> ZitadelIntrospection:
        """The API app's instance, calling the stand-in in-process (or through ``transport``,
        a wrapper of ``standin.transport()``), on the world's clock unless ``options`` say."""
        settings: dict[str, Any] = {
            "key_file": self.app.key_file,
            "project_id": self.project.id,
            "http_client": httpx.AsyncClient(transport=transport or self.standin.transport()),
            "clock": self.clock,
            "monotonic": self.clock,
            **options,
        }
        return ZitadelIntrospection(STANDIN_ISSUER, **settings)

    def forged_key_file(self) -> dict[str, str]:
        """The API app's key file with another key inside: ZITADEL will reject our assertions."""
        other = self.standin.add_api_app(self.project, "other")
        return {**self.app.key_file, "key": other.key_file["key"]}


def alice_world(
    clock: FakeClock | None = None, *, roles: Sequence[str] = ("admin", "reader"), **profile: Any
) -> World:
    """The one test world: Alice of Acme with ``roles`` in the shop project, and the shop's API
    app, on an in-process stand-in whose time is ``clock``. The ``world`` fixture, the slow
    IdP's world (tests/idp_support.py) and the hang-up soak start from it."""
    clock = clock or FakeClock()
    standin = ZitadelStandIn(STANDIN_ISSUER, clock=clock)
    org = standin.add_org("Acme", "acme.localhost")
    project = standin.add_project("shop")
    app = standin.add_api_app(project, "shop-api")
    user = standin.add_user(org, "alice", roles={project: list(roles)}, **profile)
    return World(standin, project, app, user, clock)


async def refuses(zitadel: ZitadelIntrospection, token: str) -> bool:
    """Whether ``zitadel`` refuses ``token`` as invalid (an outage raises instead)."""
    try:
        await zitadel.verify(token)
    except InvalidTokenError:
        return True
    return False
