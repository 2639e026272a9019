"""What the local-JWT and hybrid tests share: a stand-in served on a loopback port with a
hand-moved wall clock and monotonic clock, instances in each mode, forged tokens, and an
issuer of our own for answers ZITADEL would never give."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fastapi_zitadel import Principal, ZitadelIntrospection
from fastapi_zitadel.testing import LoopbackServer, StandInProject, ZitadelStandIn

from .helpers import FakeClock

# Polling bound for work that happens in another task over real sockets: only a broken test
# reaches it; nothing is timed against it.
SAFETY = 20.0


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _part(part: Any) -> str:
    return b64(part if isinstance(part, (bytes, str)) else json.dumps(part))


def compact(header: Any, claims: Any, signature: bytes = b"") -> str:
    """A JWS compact serialization from raw parts (for tokens no library would make)."""
    return f"{_part(header)}.{_part(claims)}.{b64(signature)}"


@dataclass
class JwtWorld:
    standin: ZitadelStandIn
    project: StandInProject
    clock: FakeClock
    monotonic: FakeClock

    @property
    def issuer(self) -> str:
        return self.standin.issuer

    @property
    def audience(self) -> str:
        return self.project.project.id

    def local(self, **options: Any) -> ZitadelIntrospection:
        """``validation="local"``: no key file, no secret."""
        settings: dict[str, Any] = {
            "validation": "local",
            "audience": self.audience,
            "project_id": self.project.project.id,
            "clock": self.clock,
            "monotonic": self.monotonic,
            **options,
        }
        return ZitadelIntrospection(self.issuer, **settings)

    def hybrid(self, **options: Any) -> ZitadelIntrospection:
        settings: dict[str, Any] = {
            "validation": "hybrid",
            "clock": self.clock,
            "monotonic": self.monotonic,
            **options,
        }
        return self.project.introspection(**settings)

    def token(self, username: str = "alice", **options: Any) -> str:
        """A JWT access token as the stand-in issues it (ZITADEL's claims)."""
        return self.project.token(username, jwt=True, **options)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "310000000000000042",
            "aud": [self.project.app.client_id, self.audience],
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "jti": "forged-1",
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def forge(self, headers: dict[str, Any] | None = None, **overrides: Any) -> str:
        """Claims of our choosing, signed with the stand-in's own current web key."""
        return self.standin.sign_jwt(self.claims(**overrides), headers=headers)


def served_jwt_world() -> Iterator[JwtWorld]:
    """The ``jwt_world`` fixture (tests/conftest.py): the stand-in on a loopback port."""
    clock = FakeClock()
    standin = ZitadelStandIn(clock=clock)
    with standin.serve():
        project = StandInProject(standin)
        yield JwtWorld(standin, project, clock, FakeClock(1000.0))


async def settled(zitadel: ZitadelIntrospection) -> None:
    """Wait until no validation or background introspection is running."""

    async def poll() -> None:
        while True:  # the background task has no event to wait for
            if not zitadel.metrics().in_flight:
                return
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), SAFETY)


async def until(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (another task's progress, which has no event)."""

    async def poll() -> None:
        while True:  # the other task has no event to wait for
            if condition():
                return
            await asyncio.sleep(0.002)

    await asyncio.wait_for(poll(), SAFETY)


def app_for(zitadel: ZitadelIntrospection) -> FastAPI:
    """``/plain`` behind ``zitadel``, ``/confirmed`` behind ``zitadel.introspected``."""
    app = FastAPI()

    @app.get("/plain")
    async def plain(principal: Principal = Depends(zitadel)) -> dict[str, Any]:  # noqa: B008
        return {"sub": principal.subject, "verified_by": principal.verified_by}

    @app.get("/confirmed")
    async def confirmed(
        principal: Principal = Depends(zitadel.introspected),  # noqa: B008
    ) -> dict[str, Any]:
        return {"sub": principal.subject, "verified_by": principal.verified_by}

    return app


def client_for(zitadel: ZitadelIntrospection) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app_for(zitadel))
    return httpx.AsyncClient(transport=transport, base_url="http://api.test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class HostileIssuer:
    """An issuer of our own on a loopback port: discovery, and a JWKS answer the test sets
    (``keys_answer``), so that answers ZITADEL never gives can be tried. Counts requests."""

    def __init__(self) -> None:
        self.keys_answer: Callable[[], Response] = lambda: JSONResponse({"keys": []})
        self.requests: list[str] = []
        self.issuer = ""
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/keys", self._keys),
                Route("/{rest:path}", self._other),
            ]
        )

    async def _discovery(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        return JSONResponse(
            {
                "issuer": self.issuer,
                "jwks_uri": self.issuer + "/keys",
                "introspection_endpoint": self.issuer + "/introspect",
            }
        )

    async def _keys(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        return self.keys_answer()

    async def _other(self, request: Request) -> Response:
        self.requests.append(request.url.path)
        return JSONResponse({"error": "not here"}, status_code=404)

    def serve(self) -> LoopbackServer:
        server = LoopbackServer(self.app)
        self.issuer = server.url
        return server


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
