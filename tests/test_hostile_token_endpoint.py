"""Hostile or broken token-endpoint answers, for ``ServiceAccountAuth`` and ``TokenExchange``
alike: huge, compressed into a bomb, slow, of the wrong types, with an ``expires_in`` that is
absurd or missing. Each is a typed ``TokenEndpointUnavailable`` (never another exception, never
a hang), or a token on a sane schedule: a lifetime that is not a finite number never reaches
the schedule, ``0`` is not taken for "missing", and no answer keeps a token for more than a
day. The bomb and the slow endpoint are served by uvicorn: what is read is what the network
delivers.
"""

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from fastapi_zitadel import (
    IdentityProviderError,
    ServiceAccountAuth,
    TokenEndpointUnavailable,
    TokenExchange,
)
from fastapi_zitadel._outbound.service_account import MAX_LIFETIME
from fastapi_zitadel.testing import LoopbackServer

from .helpers import STANDIN_ISSUER, World

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
GOOD = {"access_token": "issued-token", "token_type": "Bearer", "expires_in": 3600}
Answer = Callable[[], httpx.Response]


def json_body(text: str) -> Answer:
    return lambda: httpx.Response(
        200, content=text.encode(), headers={"content-type": "application/json"}
    )


def with_field(name: str, value: Any) -> Answer:
    body = {**GOOD, name: value}
    return lambda: httpx.Response(200, json=body)


REFUSED: dict[str, tuple[Answer, str]] = {
    "huge, declared": (
        lambda: httpx.Response(
            200, content=b" " * (2 << 20), headers={"content-type": "application/json"}
        ),
        "exceeds the limit",
    ),
    "huge token": (with_field("access_token", "x" * (2 << 20)), "exceeds the limit"),
    "brotli": (
        lambda: httpx.Response(
            200,
            content=b"??",
            headers={"content-type": "application/json", "content-encoding": "br"},
        ),
        "not supported",
    ),
    "deeply nested": (json_body("[" * 100_000 + "]" * 100_000), "not valid JSON"),
    "an array": (lambda: httpx.Response(200, json=[GOOD]), "not a JSON object"),
    "access_token a number": (with_field("access_token", 7), "no access_token"),
    "access_token empty": (with_field("access_token", ""), "no access_token"),
    "access_token an object": (with_field("access_token", {"a": 1}), "no access_token"),
    "token_type missing": (with_field("token_type", None), "no access_token"),
    "token_type mac": (with_field("token_type", "mac"), "not a bearer token"),
    "expires_in a string": (with_field("expires_in", "3600"), "not a number"),
    "expires_in true": (with_field("expires_in", True), "not a number"),
    "expires_in a list": (with_field("expires_in", []), "not a number"),
    "expires_in negative": (with_field("expires_in", -1), "negative"),
    "expires_in NaN": (
        json_body('{"access_token": "t", "token_type": "Bearer", "expires_in": NaN}'),
        "not valid JSON",
    ),
    "expires_in Infinity": (
        json_body('{"access_token": "t", "token_type": "Bearer", "expires_in": Infinity}'),
        "not valid JSON",
    ),
    "expires_in 1e400": (
        json_body('{"access_token": "t", "token_type": "Bearer", "expires_in": 1e400}'),
        "not finite",
    ),
    "no content": (lambda: httpx.Response(204), "refused: HTTP 204"),
    "a redirect": (
        lambda: httpx.Response(302, headers={"location": "https://elsewhere.example/token"}),
        "refused: HTTP 302",
    ),
    "401 without a body": (lambda: httpx.Response(401), "refused: HTTP 401"),
    "an error that is no string": (
        lambda: httpx.Response(400, json={"error": 5}),
        "refused: HTTP 400",
    ),
}


class HostileEndpoint(httpx.AsyncBaseTransport):
    """The stand-in, whose token endpoint answers ``answer()``."""

    def __init__(self, world: World, answer: Answer) -> None:
        self._inner = world.standin.transport()
        self._answer = answer
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            self.calls += 1
            return self._answer()
        return await self._inner.handle_async_request(request)


def clients(
    world: World, transport: httpx.AsyncBaseTransport, **options: Any
) -> Iterator[tuple[str, Callable[[], Awaitable[Any]], Any]]:
    """A service user's ``atoken`` and an exchange, both through ``transport``."""
    standin = world.standin
    robot = standin.add_service_user(world.user.org, "robot", roles={world.project: []})
    gateway = standin.add_web_app(
        world.project, "gateway", auth="private_key_jwt", grant_types=[EXCHANGE]
    )
    settings: dict[str, Any] = {
        "http_client": httpx.AsyncClient(transport=transport),
        "clock": world.clock,
        "monotonic": world.clock,
        "max_retries": 0,
        **options,
    }
    auth = ServiceAccountAuth(STANDIN_ISSUER, key_file=robot.key_file, **settings)
    yield "ServiceAccountAuth", auth.atoken, auth
    exchange = TokenExchange(STANDIN_ISSUER, key_file=gateway.key_file, **settings)
    yield "TokenExchange", lambda: exchange.aexchange("subject-token"), exchange


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_a_hostile_answer_is_a_typed_failure(world: World, case: str) -> None:
    answer, expected = REFUSED[case]
    endpoint = HostileEndpoint(world, answer)
    for kind, call, owner in clients(world, endpoint):
        with pytest.raises(TokenEndpointUnavailable) as failure:
            await call()
        assert expected in failure.value.description, (kind, failure.value.description)
        assert "issued-token" not in str(failure.value)
        await owner.aclose()
    assert endpoint.calls == 2  # one each, no retry of a refusal or an unusable answer


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (None, 300.0),  # missing: five minutes
        (0, 1.0),  # already lapsing: renewed at once, not taken for "missing"
        (0.001, 1.0),
        (3600, 3600.0),
        (1e12, MAX_LIFETIME),  # absurd: renewed daily all the same
        (1e308, MAX_LIFETIME),
    ],
)
async def test_the_lifetime_an_endpoint_claims_is_bounded(
    world: World, expires_in: float | None, lifetime: float
) -> None:
    body = {k: v for k, v in {**GOOD, "expires_in": expires_in}.items() if v is not None}
    endpoint = HostileEndpoint(world, lambda: httpx.Response(200, json=body))
    kind, call, owner = next(clients(world, endpoint))
    assert await call() == "issued-token"
    # Renewed in the background once 80 % of the lifetime has passed (renew_before=0.2).
    world.clock.advance(lifetime * 0.8 - 0.01)
    await call()
    assert endpoint.calls == 1
    world.clock.advance(0.02)
    await call()
    await asyncio.sleep(0)  # the background renewal's task
    await asyncio.sleep(0)
    assert endpoint.calls == 2, kind
    await owner.aclose()


# Over real HTTP ----------------------------------------------------------------------------

BOMB = gzip.compress(b" " * (64 << 20))  # 64 MiB of spaces in about 64 KiB


async def bomb_or_slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A token endpoint on uvicorn: ``/bomb/token`` sends a gzip bomb, ``/slow/token`` never
    answers; discovery documents point at them."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    host = dict(scope["headers"])[b"host"].decode()
    if path.endswith("/.well-known/openid-configuration"):
        base = f"http://{host}{path.removesuffix('/.well-known/openid-configuration')}"
        document = {"issuer": base, "token_endpoint": f"{base}/token", "jwks_uri": f"{base}/k"}
        body = json.dumps(document).encode()
        headers = [(b"content-type", b"application/json")]
    elif path == "/bomb/token":
        body = BOMB
        headers = [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]
    else:
        await asyncio.sleep(3600)
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.loopback
async def test_a_gzip_bomb_and_a_silent_endpoint_over_http(world: World) -> None:
    robot = world.standin.add_service_user(world.user.org, "robot", roles={world.project: []})
    with LoopbackServer(bomb_or_slow) as url:
        for issuer, expected in ((f"{url}/bomb", "exceeds"), (f"{url}/slow", "timed out")):
            auth = ServiceAccountAuth(issuer, key_file=robot.key_file, timeout=1.0, max_retries=0)
            with pytest.raises(IdentityProviderError) as failure:
                await auth.atoken()
            assert expected in failure.value.description
            await auth.aclose()
