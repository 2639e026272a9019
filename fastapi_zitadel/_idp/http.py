"""The HTTP plumbing shared by every call to the identity provider.

One pooled connection pool serves the whole app, because a new TLS connection per call costs
more than the introspection itself. Our own pool is an ``httpx.AsyncHTTPTransport`` used
directly: an ``AsyncClient`` would merge URLs, headers and cookies into every request and
extract cookies from every response, work an introspection has no use for (about a third of
the client's cost per call). A caller-supplied ``httpx.AsyncClient`` (custom TLS, proxies,
tests) is used as it is. Ours is created lazily, and again if the event loop changed (test
suites start a new loop per test, and pooled connections cannot cross loops).

Bodies are read raw and decompressed here, as they arrive, within ``MAX_RESPONSE_BYTES`` of
*decompressed* output: a small gzip bomb cannot expand in memory before the cap applies.
"""

from __future__ import annotations

import asyncio
import json
import sys
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from fastapi_zitadel._exceptions import TransportFailure
from fastapi_zitadel._resilience.per_loop import PerLoop

__all__ = ["MAX_RESPONSE_BYTES", "HttpClientProvider", "JsonResponse", "send_for_json"]

# An introspection answer is a few KiB; anything far larger is not one, and reading it whole
# would let a broken or hostile endpoint exhaust our memory.
MAX_RESPONSE_BYTES = 1024 * 1024

_USER_AGENT = "fastapi-zitadel"
# gzip and deflate are decompressed here under the cap; anything else is refused unread.
_ACCEPT_ENCODING = "gzip, deflate"
_DECOMPRESSORS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 0}


class _TooLarge(Exception):
    pass


class HttpClientProvider:
    def __init__(self, client: httpx.AsyncClient | None, *, timeout: float) -> None:
        self._external = client
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0)).as_dict()
        self._owned: PerLoop[httpx.AsyncHTTPTransport] = PerLoop(self._new_transport)
        self._urls: dict[str, httpx.URL] = {}

    def request(
        self,
        method: str,
        url: str,
        *,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        """A request for our own pool (or the caller's client), with our fixed headers."""
        parsed = self._urls.get(url)
        if parsed is None:
            parsed = self._urls[url] = httpx.URL(url)
        all_headers = {
            "User-Agent": _USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": _ACCEPT_ENCODING,
            **(headers or {}),
        }
        content = None
        if form is not None:
            content = urlencode(form).encode("ascii")
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        return httpx.Request(
            method,
            parsed,
            headers=all_headers,
            content=content,
            extensions={"timeout": self._timeout},
        )

    async def send(self, request: httpx.Request) -> httpx.Response:
        """The response, streaming: its body is read by the caller (``send_for_json``)."""
        if self._external is not None:
            return await self._external.send(request, stream=True)
        return await self._owned.get().handle_async_request(request)

    def _new_transport(self) -> httpx.AsyncHTTPTransport:
        return httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
        )

    async def aclose(self) -> None:
        """Close our own pool; a caller-supplied client stays the caller's to close."""
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
    http: HttpClientProvider, request: httpx.Request, *, timeout: float
) -> JsonResponse:
    """Send ``request`` and read a JSON body, all within ``timeout`` seconds."""
    try:
        if _timeout_context is not None:  # Python 3.11+: no task per call
            async with _timeout_context(timeout):
                return await _send(http, request)
        return await asyncio.wait_for(_send(http, request), timeout=timeout)
    except (asyncio.TimeoutError, httpx.TimeoutException):
        raise TransportFailure(f"identity provider timed out after {timeout:.1f} s") from None
    except httpx.HTTPError as exc:
        raise TransportFailure(f"identity provider unreachable ({type(exc).__name__})") from None
    except zlib.error:
        raise TransportFailure("identity provider sent a corrupt compressed body") from None
    except RuntimeError as exc:  # e.g. a caller-supplied client that was already closed
        raise TransportFailure(f"HTTP client unusable ({exc})") from None


_timeout_context = getattr(asyncio, "timeout", None) if sys.version_info >= (3, 11) else None


async def _send(http: HttpClientProvider, request: httpx.Request) -> JsonResponse:
    response = await http.send(request)
    try:
        declared = response.headers.get("content-length", "")
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "", *_DECOMPRESSORS):
            return _unusable(response, f"content encoding {encoding[:20]!r} not supported")
        plain = encoding in ("identity", "")
        if plain and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
            return _unusable(response, f"body of {declared} bytes exceeds the limit")
        try:
            if response.is_stream_consumed:  # a caller's transport answered from memory
                body = response.content
                if len(body) > MAX_RESPONSE_BYTES:
                    raise _TooLarge
            else:
                body = await _read_capped(response.aiter_raw(), _DECOMPRESSORS.get(encoding))
        except _TooLarge:
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


async def _read_capped(chunks: AsyncIterator[bytes], wbits: int | None) -> bytes:
    """The body, decompressed with ``wbits`` (``None``: as sent), never past the cap."""
    body = bytearray()
    inflate = None if wbits is None else zlib.decompressobj(wbits)
    async for chunk in chunks:
        if inflate is None:
            body += chunk
        else:
            # max_length bounds each step's output: a bomb stops at the cap, not after it.
            data = chunk
            while data:
                body += inflate.decompress(data, MAX_RESPONSE_BYTES + 1 - len(body))
                if len(body) > MAX_RESPONSE_BYTES:
                    raise _TooLarge
                data = inflate.unconsumed_tail
        if len(body) > MAX_RESPONSE_BYTES:
            raise _TooLarge
    if inflate is not None:
        body += inflate.flush(MAX_RESPONSE_BYTES + 1 - len(body))
        if len(body) > MAX_RESPONSE_BYTES:
            raise _TooLarge
    return bytes(body)


def _unusable(response: httpx.Response, problem: str) -> JsonResponse:
    return JsonResponse(response.status_code, response.headers, None, problem)
