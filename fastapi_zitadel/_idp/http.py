"""The HTTP plumbing shared by discovery and introspection.

One pooled ``httpx.AsyncClient`` serves the whole app, because a new TLS connection per call
costs more than the introspection itself. A caller-supplied client is used as it is (custom
TLS, proxies, tests); our own is created lazily, and again if the event loop changed (test
suites start a new loop per test, and pooled connections cannot cross loops).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx

from fastapi_zitadel._exceptions import TransportFailure
from fastapi_zitadel._resilience.per_loop import PerLoop

__all__ = ["MAX_RESPONSE_BYTES", "HttpClientProvider", "JsonResponse", "send_for_json"]

# An introspection answer is a few KiB; anything far larger is not one, and reading it whole
# would let a broken or hostile endpoint exhaust our memory.
MAX_RESPONSE_BYTES = 1024 * 1024

_USER_AGENT = "fastapi-zitadel"


class HttpClientProvider:
    def __init__(self, client: httpx.AsyncClient | None, *, timeout: float) -> None:
        self._external = client
        self._timeout = timeout
        self._owned: PerLoop[httpx.AsyncClient] = PerLoop(self._new_client)

    def get(self) -> httpx.AsyncClient:
        if self._external is not None:
            return self._external
        client = self._owned.get()
        if client.is_closed:  # closed by a lifespan that ended; a new one starts here
            self._owned.pop_current()
            client = self._owned.get()
        return client

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 5.0)),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            headers={"User-Agent": _USER_AGENT},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        """Close our own client; a caller-supplied client stays the caller's to close."""
        owned = self._owned.pop_current()
        if owned is not None:
            await owned.aclose()


@dataclass(frozen=True)
class JsonResponse:
    """A response whose body was read within the size cap.

    ``data`` is the parsed JSON, or ``None`` with ``problem`` saying why it is not usable JSON
    (wrong content type, too large, not parseable).
    """

    status: int
    headers: httpx.Headers
    data: Any
    problem: str | None


async def send_for_json(
    client: httpx.AsyncClient, request: httpx.Request, *, timeout: float
) -> JsonResponse:
    """Send ``request`` and read a JSON body, all within ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(_send(client, request), timeout=timeout)
    except (asyncio.TimeoutError, httpx.TimeoutException):
        raise TransportFailure(f"identity provider timed out after {timeout:.1f} s") from None
    except httpx.HTTPError as exc:
        raise TransportFailure(f"identity provider unreachable ({type(exc).__name__})") from None
    except RuntimeError as exc:  # e.g. a caller-supplied client that was already closed
        raise TransportFailure(f"HTTP client unusable ({exc})") from None


async def _send(client: httpx.AsyncClient, request: httpx.Request) -> JsonResponse:
    response = await client.send(request, stream=True)
    try:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            return _unusable(response, f"body of {declared} bytes exceeds the limit")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                return _unusable(response, f"body exceeds {MAX_RESPONSE_BYTES} bytes")
    finally:
        await response.aclose()
    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        return _unusable(response, f"content type {content_type or 'missing'!r}, not JSON")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return _unusable(response, "body is not valid JSON")
    return JsonResponse(response.status_code, response.headers, data, None)


def _unusable(response: httpx.Response, problem: str) -> JsonResponse:
    return JsonResponse(response.status_code, response.headers, None, problem)
