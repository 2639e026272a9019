"""One instance used from several live event loops at once (two ``TestClient``s, or a thread
with a loop of its own): one connection pool per live loop, reused, and nothing leaked."""

from __future__ import annotations

import gc
import warnings
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from fastapi_zitadel import Principal, ZitadelIntrospection
from fastapi_zitadel.testing import StandInProject


def _app(zitadel: ZitadelIntrospection) -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(principal: Principal = Depends(zitadel)) -> str | None:  # noqa: B008
        return principal.subject

    return app


@pytest.mark.soak
def test_two_live_loops_keep_one_pool_each(
    zitadel_project: StandInProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Any] = []
    original = httpx.AsyncHTTPTransport.__init__

    def counting(self: httpx.AsyncHTTPTransport, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "__init__", counting)
    zitadel = zitadel_project.introspection(cache_ttl=0, negative_cache_ttl=0)
    tokens = [zitadel_project.token(f"user{i}") for i in range(10)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with TestClient(_app(zitadel)) as first, TestClient(_app(zitadel)) as second:
            for index in range(300):
                client = first if index % 2 else second
                token = tokens[index % len(tokens)]
                response = client.get("/me", headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == 200
        gc.collect()
    assert zitadel_project.standin.introspection_calls == 300  # cache off: each one asked
    assert len(made) == 2  # one pool per loop, not one per switch (300 before)
    assert not [w for w in caught if "destroyed" in str(w.message)]
