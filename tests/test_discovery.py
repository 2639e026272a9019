"""Discovery: the endpoint is read from the issuer's document, which must name our issuer."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from fastapi_zitadel import (
    IdentityProviderUnavailable,
    InvalidTokenError,
    IssuerMismatch,
    ZitadelIntrospection,
)
from fastapi_zitadel._http.client import HttpClientProvider
from fastapi_zitadel._idp.discovery import Discovery

from .helpers import FakeClock

ISSUER = "https://zitadel.example.test"


class Idp:
    """A hand-made discovery document plus an introspection answer."""

    def __init__(self, document: Any, status: int = 200) -> None:
        self.document = document
        self.status = status
        self.discovery_calls = 0
        self.introspected: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            self.discovery_calls += 1
            return httpx.Response(self.status, json=self.document)
        self.introspected.append(str(request.url))
        return httpx.Response(200, json={"active": False})

    def zitadel(self, app_key: dict[str, Any], clock: FakeClock, **options: Any) -> Any:
        client = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return ZitadelIntrospection(
            ISSUER, key_file=app_key, http_client=client, clock=clock, monotonic=clock, **options
        )


def _document(**overrides: Any) -> dict[str, Any]:
    document = {"issuer": ISSUER, "introspection_endpoint": ISSUER + "/custom/introspect"}
    document.update(overrides)
    return document


async def test_endpoint_comes_from_discovery_once(
    app_key: dict[str, Any], clock: FakeClock
) -> None:
    idp = Idp(_document())
    zitadel = idp.zitadel(app_key, clock)
    for token in ("a", "b", "c"):
        with pytest.raises(InvalidTokenError):
            await zitadel.verify(token)
    assert idp.discovery_calls == 1
    assert idp.introspected == [ISSUER + "/custom/introspect"] * 3


async def test_explicit_endpoint_skips_discovery(app_key: dict[str, Any], clock: FakeClock) -> None:
    idp = Idp(_document())
    zitadel = idp.zitadel(app_key, clock, introspection_endpoint=ISSUER + "/oauth/v2/introspect")
    with pytest.raises(InvalidTokenError):
        await zitadel.verify("a")
    assert idp.discovery_calls == 0


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_document(issuer=ISSUER + "/"), "expected exactly"),
        (_document(issuer="https://evil.example"), "expected exactly"),
        (_document(introspection_endpoint=None), "no introspection_endpoint"),
        (_document(introspection_endpoint="http://zitadel.example.test/i"), "http"),
        ([1, 2], "not a JSON object"),
    ],
)
async def test_bad_documents_are_refused(
    app_key: dict[str, Any], clock: FakeClock, document: Any, message: str
) -> None:
    idp = Idp(document)
    with pytest.raises(IdentityProviderUnavailable, match=message):
        await idp.zitadel(app_key, clock).verify("a")
    assert idp.introspected == []


async def test_failed_discovery_backs_off(app_key: dict[str, Any], clock: FakeClock) -> None:
    idp = Idp({"error": "down"}, status=503)
    zitadel = idp.zitadel(app_key, clock, circuit_breaker_threshold=0)
    for _ in range(20):
        with pytest.raises(IdentityProviderUnavailable) as info:
            await zitadel.verify("a")
        assert info.value.retry_after is not None
    assert idp.discovery_calls == 1  # not once per request in a storm
    clock.advance(2)
    idp.status, idp.document = 200, _document()
    with pytest.raises(InvalidTokenError):
        await zitadel.verify("a")
    assert idp.discovery_calls == 2


async def test_eager_discovery_at_startup(app_key: dict[str, Any], clock: FakeClock) -> None:
    idp = Idp(_document(issuer="https://other.example"))
    zitadel = idp.zitadel(app_key, clock, discover_on_startup=True)
    with pytest.raises(IdentityProviderUnavailable, match="expected exactly"):
        async with zitadel.lifespan(None):
            pass
    good = Idp(_document()).zitadel(app_key, clock, discover_on_startup=True)
    async with good.lifespan(None):
        assert await good.discover() == ISSUER + "/custom/introspect"


async def test_a_pause_repeats_the_failure_that_started_it(
    app_key: dict[str, Any], clock: FakeClock
) -> None:
    """Whoever fetched first (Swagger UI's login at start-up, a request, the CLI), every caller
    during the pause learns the same cause, as the same class: an issuer mismatch stays one."""
    idp = Idp(_document(issuer="https://other.example.test"))
    zitadel = idp.zitadel(app_key, clock, circuit_breaker_threshold=0)
    with pytest.raises(IssuerMismatch) as first:
        await zitadel.discover()
    with pytest.raises(IssuerMismatch) as again:
        await zitadel.verify("a")
    assert again.value.description == first.value.description
    assert "names issuer 'https://other.example.test'" in again.value.description
    assert again.value.retry_after is not None
    assert again.value.retry_after > 0
    assert idp.discovery_calls == 1


async def test_aclose_cancels_a_fetch_still_running(clock: FakeClock) -> None:
    """The fetch runs in the discovery's task registry: closing cancels it, and its caller
    gets the cancellation rather than a task left pending when the loop closes."""
    asked = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        asked.set()
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    client = httpx.AsyncClient(transport=httpx.MockTransport(hang))
    discovery = Discovery(
        ISSUER,
        http=HttpClientProvider(client, timeout=5.0),
        introspection_endpoint=None,
        timeout=5.0,
        allow_insecure_http=False,
        monotonic=clock,
    )
    fetch = asyncio.ensure_future(discovery.fetch())
    await asyncio.wait_for(asked.wait(), 5.0)
    await discovery.aclose()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(fetch, 5.0)
    assert discovery.metadata is None
    await client.aclose()


async def test_a_fetch_failing_during_a_pause_counts_once(clock: FakeClock) -> None:
    """A thread's fetch that started before an async one failed, and fails in the pause that
    one started, is the same outage: it gets the pause left, and the next failure after the
    pause is the second (a pause of about 2 s), not the third (about 4 s)."""
    asked, answer = threading.Event(), threading.Event()
    calls = 0

    def down(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503)

    def held_down(request: httpx.Request) -> httpx.Response:
        asked.set()
        answer.wait(5.0)
        return down(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(down))
    sync_client = httpx.Client(transport=httpx.MockTransport(held_down))
    discovery = Discovery(
        ISSUER,
        http=HttpClientProvider(client, timeout=5.0, sync_client=sync_client),
        introspection_endpoint=None,
        timeout=5.0,
        allow_insecure_http=False,
        monotonic=clock,
    )
    with ThreadPoolExecutor(1) as thread:
        in_thread = thread.submit(discovery.fetch_sync)
        assert asked.wait(5.0)
        with pytest.raises(IdentityProviderUnavailable) as first:
            await discovery.fetch()
        answer.set()
        with pytest.raises(IdentityProviderUnavailable) as during:
            in_thread.result(5.0)
    assert first.value.retry_after is not None
    assert 0.8 <= first.value.retry_after <= 1.2
    assert during.value.retry_after == first.value.retry_after  # the pause left, not lengthened
    clock.advance(1.3)
    with pytest.raises(IdentityProviderUnavailable) as after:
        await discovery.fetch()
    assert after.value.retry_after is not None
    assert 1.6 <= after.value.retry_after <= 2.4
    assert calls == 3
    await client.aclose()
    await asyncio.to_thread(sync_client.close)
