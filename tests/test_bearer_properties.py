"""Hostile Authorization headers, generated: never a crash, never a 200 without a valid token."""

import re
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import HTTPConnection
from starlette.testclient import TestClient

from fastapi_zitadel import InvalidRequestError, InvalidTokenError, Principal
from fastapi_zitadel._fastapi.bearer import extract_bearer

from .helpers import World

B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

header_bytes = st.binary(max_size=300) | st.builds(
    lambda scheme, sep, rest: scheme + sep + rest,
    st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"Basic", b"Bearer\t", b""]),
    st.sampled_from([b" ", b"  ", b"\t", b""]),
    st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8")),
)


def connection(headers: list[bytes], query: bytes = b"") -> HTTPConnection:
    return HTTPConnection(
        {
            "type": "http",
            "headers": [(b"authorization", value) for value in headers],
            "query_string": query,
        }
    )


@given(values=st.lists(header_bytes, max_size=3), query=st.binary(max_size=80))
def test_extraction_returns_a_b64token_or_a_named_error(values: list[bytes], query: bytes) -> None:
    try:
        token = extract_bearer(connection(values, query), max_length=64)
    except (InvalidRequestError, InvalidTokenError):
        return
    if token is not None:
        assert len(token) <= 64
        assert B64TOKEN.fullmatch(token)
        assert len(values) == 1


@given(token=st.from_regex(B64TOKEN, fullmatch=True).filter(lambda t: len(t) <= 100))
def test_any_b64token_is_extracted_unchanged(token: str) -> None:
    value = f"Bearer {token}".encode()
    assert extract_bearer(connection([value]), max_length=100) == token


@pytest.fixture
def app(world: World) -> FastAPI:
    zitadel = world.client()
    app = FastAPI()

    @app.get("/me")
    async def me(principal: Annotated[Principal, Depends(zitadel)]) -> str | None:
        return principal.subject

    return app


def test_hostile_headers_through_the_app(world: World, app: FastAPI) -> None:
    valid = world.token()
    with TestClient(app) as client:
        assert client.get("/me", headers={"Authorization": f"Bearer {valid}"}).status_code == 200

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(values=st.lists(header_bytes, max_size=3))
        def check(values: list[bytes]) -> None:
            headers = [(b"authorization", value) for value in values]
            try:
                response = client.get("/me", headers=headers)
            except (httpx.LocalProtocolError, ValueError):
                return  # the client refused to send it: nothing reached the app
            assert response.status_code in (400, 401), response.text
            assert response.headers["www-authenticate"].startswith('Bearer realm="api"')

        check()
