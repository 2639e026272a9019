"""Whatever the IdP answers, the outcome is a Principal, an invalid token, or an IdP error:
never another exception, never a Principal from an answer that is not a proper active one."""

import asyncio
import json
import tracemalloc
import zlib
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastapi_zitadel import (
    IdentityProviderError,
    InvalidTokenError,
    Principal,
    ZitadelError,
    ZitadelIntrospection,
)
from fastapi_zitadel.config import ZitadelKeyFile
from fastapi_zitadel.testing import LoopbackServer

from .claim_strategies import json_value

ISSUER = "https://zitadel.example.test"
FIELDS = ["active", "scope", "client_id", "exp", "iat", "nbf", "sub", "aud", "iss", "jti"]
FIELDS += ["username", "email", "email_verified", "locale", "urn:zitadel:iam:org:project:roles"]
FIELDS += ["urn:zitadel:iam:user:metadata", "urn:zitadel:iam:user:resourceowner:id"]

answers = st.fixed_dictionaries(
    {"active": st.just(True)}, optional={field: json_value for field in FIELDS[1:]}
) | st.dictionaries(st.sampled_from(FIELDS), json_value)
statuses = st.sampled_from([200, 200, 200, 201, 204, 400, 401, 403, 404, 429, 500, 502])
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/html", ""]
)


def outcome(status: int, body: bytes, content_type: str, app_key: ZitadelKeyFile) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        return httpx.Response(status, content=body, headers=headers)

    zitadel = ZitadelIntrospection(
        ISSUER,
        key_file=app_key,
        introspection_endpoint=ISSUER + "/oauth/v2/introspect",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        max_retries=0,
    )

    async def run() -> Any:
        try:
            return await zitadel.verify("token")
        except ZitadelError as error:
            return error

    return asyncio.run(run())


@settings(max_examples=150, deadline=None)
@given(answer=answers, status=statuses, content_type=content_types, truncate=st.booleans())
def test_any_answer_has_a_named_outcome(
    loaded_app_key: ZitadelKeyFile,
    answer: dict[str, Any],
    status: int,
    content_type: str,
    truncate: bool,
) -> None:
    body = json.dumps(answer).encode()
    if truncate:
        body = body[: len(body) // 2]
    result = outcome(status, body, content_type, loaded_app_key)
    assert isinstance(result, (Principal, InvalidTokenError, IdentityProviderError))
    if isinstance(result, Principal):
        assert status == 200
        assert content_type.startswith("application/json")
        assert answer.get("active") is True
        assert not truncate


def _gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * (1024 * 1024)
    parts = [compressor.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + compressor.flush()


BOMB = _gzip_bomb(300 * 1024 * 1024)  # 300 MiB of spaces, about 300 KB on the wire


def _bomb_server(path: str) -> Starlette:
    async def bomb(request: Request) -> Response:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return Response(BOMB, headers=headers)

    return Starlette(routes=[Route(path, bomb, methods=["GET", "POST"])])


def test_a_gzip_bomb_is_capped_as_it_is_decompressed(app_key: dict[str, Any]) -> None:
    """The 1 MiB cap applies to decompressed bytes as they are produced: a 300 MiB bomb is a
    503, and memory grows by a few MiB at most (not by the whole network chunk inflated)."""
    with LoopbackServer(_bomb_server("/oauth/v2/introspect")) as url:
        for http_client in (None, httpx.AsyncClient()):  # our own pool, and a caller's client
            zitadel = ZitadelIntrospection(
                url,
                key_file=app_key,
                introspection_endpoint=url + "/oauth/v2/introspect",
                http_client=http_client,
                max_retries=0,
            )

            async def run(zitadel: ZitadelIntrospection = zitadel) -> tuple[Any, int]:
                tracemalloc.start()
                try:
                    await zitadel.verify("token")
                except ZitadelError as failure:
                    return failure, tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
                    await zitadel.aclose()
                raise AssertionError("a bomb was accepted")

            error, peak = asyncio.run(run())
            assert isinstance(error, IdentityProviderError)
            assert "exceeds" in error.description
            assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while reading a bomb"


def test_discovery_answering_a_gzip_bomb_is_an_idp_fault(app_key: dict[str, Any]) -> None:
    with LoopbackServer(_bomb_server("/.well-known/openid-configuration")) as url:
        zitadel = ZitadelIntrospection(url, key_file=app_key, max_retries=0)

        async def run() -> Any:
            try:
                return await zitadel.verify("token")
            except ZitadelError as error:
                return error
            finally:
                await zitadel.aclose()

        error = asyncio.run(run())
        assert isinstance(error, IdentityProviderError)
        assert "exceeds" in error.description
