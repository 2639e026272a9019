"""Section 1: the hot path. One request on a warm cache, driven straight into the ASGI app.

No sockets and no test client: each request is a fresh minimal ``scope`` handed to the app
with a ``receive`` and ``send`` that do nothing, so what is timed is FastAPI's dependency
machinery plus the dependency itself. Each alternative is its own one-route app, so route
matching costs the same everywhere.

No ``from __future__ import annotations``: FastAPI reads the annotations of the routes and
dependencies declared inside functions here at runtime.
"""

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import ExitStack
from typing import Annotated, Any
from unittest import mock

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import SecurityScopes
from fastapi.security.base import SecurityBase
from fastapi_zitadel_auth import ZitadelAuth
from fastapi_zitadel_auth import openid_config as peer_openid_config
from jwt.algorithms import RSAAlgorithm
from starlette.requests import HTTPConnection

from bench.common import (
    AsyncBatch,
    Profile,
    SectionResult,
    extra_cost_ratio,
    interleave_async,
    log,
    median,
    per_round,
    profile_top,
    quotient,
    ratio,
    ratio_range,
    section_main,
    spread,
    us,
)
from fastapi_zitadel import Principal, ZitadelIntrospection
from fastapi_zitadel.testing import StandInProject, ZitadelStandIn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Asgi = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Any
]

SCOPE = "items:read"
TOKEN_SCOPES = ("openid", "profile", "email", "urn:zitadel:iam:user:resourceowner", SCOPE)
LABELS = {
    "a": "(a) no auth",
    "b": "(b) do-nothing SecurityBase floor, Depends(floor)",
    "c": "(c) floor wrapped like require_scope: Security(floor, scopes=[...])",
    "d": "(d) Depends(zitadel), warm cache",
    "e": "(e) Depends(zitadel.require_scope(...)), warm cache",
    "f": "(f) local RS256 JWT check with PyJWT per request",
    "g": "(g) fastapi-zitadel-auth 0.5.0, Security(auth, scopes=[...])",
    "h": "(h) Depends(zitadel.require_role(...)), warm cache",
    "i": "(i) Depends(zitadel) and the same role check in the route, warm cache",
}
ROLE = "reader"


# The ASGI harness ------------------------------------------------------------------------


class AsgiDriver:
    """Calls an ASGI app with a fresh copy of one minimal GET scope per request."""

    def __init__(self, app: Asgi, token: str, *, path: str = "/items") -> None:
        self.app = app
        self._scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode("ascii"),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"api.example.test"),
                (b"user-agent", b"bench"),
                (b"accept", b"*/*"),
                (b"authorization", f"Bearer {token}".encode("ascii")),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self._request: Message = {"type": "http.request", "body": b"", "more_body": False}

    async def _receive(self) -> Message:
        return self._request

    async def _discard(self, _message: Message) -> None:
        return None

    async def check(self) -> tuple[int, bytes]:
        """One request, answering the status and body (outside the timed loop)."""
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        await self.app(dict(self._scope), self._receive, send)
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return status, body

    @property
    def scope(self) -> Scope:
        return dict(self._scope)

    async def batch(self, n: int) -> float:
        app, scope, receive, send = self.app, self._scope, self._receive, self._discard
        start = time.perf_counter()
        for _ in range(n):
            # A new scope per request: the library keeps its per-request memo in the scope.
            await app(dict(scope), receive, send)
        return (time.perf_counter() - start) / n


# The alternatives ------------------------------------------------------------------------


class Floor(SecurityBase):
    """The cheapest possible security dependency: FastAPI's own cost of one."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel()
        self.scheme_name = "floor"

    async def __call__(self, conn: HTTPConnection, security_scopes: SecurityScopes) -> str:
        return "caller"


def one_route_app(dependency: Any | None) -> FastAPI:
    app = FastAPI()
    if dependency is None:

        @app.get("/items")
        async def open_items() -> dict[str, bool]:
            return {"ok": True}

    else:

        @app.get("/items")
        async def items(_caller: Annotated[Any, dependency]) -> dict[str, bool]:
            return {"ok": True}

    return app


def role_checked_app(zitadel: ZitadelIntrospection) -> FastAPI:
    """(i): ``Depends(zitadel)``, the role checked by the route itself, as
    ``require_role`` checks it (403 otherwise)."""
    app = FastAPI()

    @app.get("/items")
    async def items(principal: Annotated[Principal, Depends(zitadel)]) -> dict[str, bool]:
        if not principal.has_all_roles((ROLE,), None):
            raise HTTPException(403)
        return {"ok": True}

    return app


def floor_wrapped(floor: Floor) -> Callable[..., Awaitable[str]]:
    async def caller_with_scope(
        caller: Annotated[str, Security(floor, scopes=[SCOPE])],
    ) -> str:
        return caller

    return caller_with_scope


class SigningKey:
    """An RS256 key with its JWKS, standing in for ZITADEL's token signing key."""

    def __init__(self, issuer: str, audience: list[str], client_id: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self.client_id = client_id
        self.kid = "bench-key-1"
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = self.private_key.public_key()
        jwk = RSAAlgorithm.to_jwk(self.public_key, as_dict=True)
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        self.jwks = {"keys": [jwk]}

    def access_token(self, org_id: str, project_id: str) -> str:
        """A JWT access token as ZITADEL issues it, with a role claim."""
        now = int(time.time())
        roles = {"reader": {org_id: "acme.localhost"}, "editor": {org_id: "acme.localhost"}}
        claims = {
            "iss": self.issuer,
            "sub": "310000000000000042",
            "aud": self.audience,
            "client_id": self.client_id,
            "exp": now + 3600,
            "iat": now,
            "nbf": now,
            "jti": str(uuid.uuid4()),
            "scope": " ".join(TOKEN_SCOPES),
            "urn:zitadel:iam:org:project:roles": roles,
            f"urn:zitadel:iam:org:project:{project_id}:roles": roles,
        }
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})


def local_jwt_dependency(key: SigningKey) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def verified_claims(conn: HTTPConnection) -> dict[str, Any]:
        scheme, _, token = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key,
                algorithms=["RS256"],
                audience=key.audience[-1],
                issuer=key.issuer,
                leeway=5,
            )
        except jwt.PyJWTError:
            raise HTTPException(401) from None
        if SCOPE not in str(claims.get("scope", "")).split():
            raise HTTPException(403)
        return claims

    return verified_claims


class _MockedHttpx:
    """What fastapi-zitadel-auth's ``openid_config`` module sees as ``httpx``: its
    ``AsyncClient(...)`` answers discovery and JWKS from memory (no network)."""

    def __init__(self, key: SigningKey) -> None:
        self._key = key

    def _answer(self, request: httpx.Request) -> httpx.Response:
        base = self._key.issuer
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": base, "jwks_uri": base + "/oauth/v2/keys"})
        if request.url.path == "/oauth/v2/keys":
            return httpx.Response(200, json=self._key.jwks)
        return httpx.Response(404)

    def AsyncClient(self, **options: Any) -> httpx.AsyncClient:  # noqa: N802 - httpx's name
        options.pop("http2", None)
        return httpx.AsyncClient(transport=httpx.MockTransport(self._answer), **options)


class DirectCalls:
    """The dependencies called the way FastAPI calls them, without FastAPI around them: what
    each costs by itself. A fresh ``HTTPConnection`` on a fresh scope per call."""

    def __init__(self, scope: Scope, floor: Floor, zitadel: ZitadelIntrospection) -> None:
        self._scope = scope
        self._floor = floor
        self._zitadel = zitadel
        self._scopes = SecurityScopes([SCOPE])
        headers = dict(scope["headers"])
        self._token = headers[b"authorization"].decode().removeprefix("Bearer ")

    async def floor(self, n: int) -> float:
        call, scope, scopes = self._floor, self._scope, self._scopes
        start = time.perf_counter()
        for _ in range(n):
            await call(HTTPConnection(dict(scope)), scopes)
        return (time.perf_counter() - start) / n

    async def zitadel(self, n: int) -> float:
        call, scope, scopes = self._zitadel, self._scope, self._scopes
        start = time.perf_counter()
        for _ in range(n):
            await call(HTTPConnection(dict(scope)), scopes)
        return (time.perf_counter() - start) / n

    async def verify(self, n: int) -> float:
        verify, token = self._zitadel.verify, self._token
        start = time.perf_counter()
        for _ in range(n):
            await verify(token)
        return (time.perf_counter() - start) / n


# The section -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> SectionResult:
    result = SectionResult("1. Hot path: one request on a warm cache, in-process ASGI")
    loop = asyncio.new_event_loop()
    with ExitStack() as stack:
        stack.callback(loop.close)
        standin = ZitadelStandIn()
        project = StandInProject(standin)
        opaque = project.token("alice", roles=["reader", "editor"], scopes=TOKEN_SCOPES)
        zitadel = project.introspection(
            http_client=httpx.AsyncClient(transport=standin.transport()), cache_ttl=3600
        )
        key = SigningKey(
            standin.issuer,
            [project.app.client_id, project.project.id],
            project.app.client_id,
        )
        token = key.access_token(project.org.id, project.project.id)
        stack.enter_context(mock.patch.object(peer_openid_config, "httpx", _MockedHttpx(key)))
        peer = ZitadelAuth(
            issuer_url=standin.issuer,
            project_id=project.project.id,
            app_client_id=project.app.client_id,
            allowed_scopes={SCOPE: "Read items"},
        )
        floor = Floor()
        apps: dict[str, tuple[Any, str]] = {
            "a": (None, opaque),
            "b": (Depends(floor), opaque),
            "c": (Depends(floor_wrapped(floor)), opaque),
            "d": (Depends(zitadel), opaque),
            "e": (Depends(zitadel.require_scope(SCOPE)), opaque),
            "f": (Depends(local_jwt_dependency(key)), token),
            "g": (Security(peer, scopes=[SCOPE]), token),
        }
        apps["h"] = (Depends(zitadel.require_role(ROLE)), opaque)
        drivers = {
            name: AsgiDriver(one_route_app(dependency), credential)
            for name, (dependency, credential) in apps.items()
        }
        drivers["i"] = AsgiDriver(role_checked_app(zitadel), opaque)
        for name, driver in drivers.items():
            status, body = loop.run_until_complete(driver.check())
            if status != 200:
                raise RuntimeError(f"{LABELS[name]} answered {status}: {body!r}")
        warm_calls = zitadel.introspection_calls
        direct = DirectCalls(drivers["d"].scope, floor, zitadel)
        batches: dict[str, AsyncBatch] = {name: driver.batch for name, driver in drivers.items()}
        batches.update(floor_direct=direct.floor, zitadel_direct=direct.zitadel)
        batches["verify_direct"] = direct.verify
        rounds = 5 if args.quick else 21
        log(f"hot path: {len(batches)} alternatives x {rounds} rounds")
        samples = loop.run_until_complete(
            interleave_async(batches, rounds=rounds, target_seconds=0.03 if args.quick else 0.1)
        )
        if zitadel.introspection_calls != warm_calls:
            raise RuntimeError("the cache was not warm throughout: introspections happened")
        _report(result, samples, warm_calls)
        if any(row.met is False for row in result.rows):
            text = profile_top(lambda: loop.run_until_complete(direct.zitadel(50_000)))
            title = "`zitadel(conn, security_scopes)` called directly (no FastAPI), 50,000 calls"
            result.profiles.append(Profile(title, text))
    return result


def _report(result: SectionResult, samples: dict[str, list[float]], warm_calls: int) -> None:
    t = {name: median(values) for name, values in samples.items()}
    a = t["a"]
    for name, label in LABELS.items():  # the in-FastAPI alternatives
        extra = "" if name == "a" else f"; +{us(t[name] - a)} over (a)"
        of_a = median(per_round(samples, quotient(name, "a")))
        result.add(
            label,
            ratio(of_a) + " of (a)",
            spread(samples[name], us) + " per request" + extra,
        )
    goals = (
        ("extra cost over (a): (d) / (b)", "d", "b", 1.2),
        ("extra cost over (a): (e) / (c)", "e", "c", 1.2),
    )
    rounds = per_round(samples, quotient("h", "i"))
    figure = median(rounds)
    result.add(
        "require_role / Depends(zitadel) and its check: (h) / (i)",
        ratio(figure),
        f"{us(t['h'])} vs {us(t['i'])}; {ratio_range(rounds)}",
        "<= 1.05x",
        figure <= 1.05,
    )
    for label, ours, floor, limit in goals:
        rounds = per_round(samples, extra_cost_ratio(ours, floor, "a"))
        figure = median(rounds)
        result.add(
            label,
            ratio(figure),
            f"{us(t[ours] - a)} vs {us(t[floor] - a)}; {ratio_range(rounds)}",
            f"<= {limit}x",
            figure <= limit,
        )
    rounds = per_round(samples, quotient("e", "g"))
    figure = median(rounds)
    result.add(
        "request cost: (e) / (g) fastapi-zitadel-auth",
        ratio(figure),
        f"{us(t['e'])} vs {us(t['g'])}; {ratio_range(rounds)}; extra cost over (a): "
        f"{ratio((t['e'] - a) / (t['g'] - a))}",
        "<= 0.3x",
        figure <= 0.3,
    )
    own = t["zitadel_direct"] - t["floor_direct"]
    result.add(
        "without FastAPI: `zitadel(conn, scopes)` / the floor's `floor(conn, scopes)`",
        ratio(median(per_round(samples, quotient("zitadel_direct", "floor_direct")))),
        f"{spread(samples['zitadel_direct'], us)} vs {spread(samples['floor_direct'], us)}: "
        f"our own work is {us(own)} of (d)'s {us(t['d'] - a)} extra; FastAPI's for any "
        f"security dependency, (b) - (a), is {us(t['b'] - a)}",
    )
    result.add(
        "without FastAPI: `zitadel.verify(token)`, a cache hit",
        us(t["verify_direct"]),
        spread(samples["verify_direct"], us) + "; the rest of our work is reading the token "
        "from the request (bearer parsing) and the scope check",
    )
    result.notes.append(
        f"Warm cache: the stand-in answered in-process ({warm_calls} introspection, before "
        "timing; none during it). Every request is a fresh ASGI scope with an Authorization "
        "header; (d), (e), (h), (i) send an opaque stand-in token, (f), (g) a locally signed "
        "RS256 JWT with the same audience, scope and role claims, whose JWKS "
        "fastapi-zitadel-auth fetched once through a mocked `httpx.AsyncClient` (its "
        "`openid_config` module's)."
    )


def main() -> None:
    section_main(run)


if __name__ == "__main__":
    main()
