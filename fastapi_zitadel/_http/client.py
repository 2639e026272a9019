"""The HTTP plumbing shared by every call to the identity provider.

One pooled connection pool serves the whole app: a new TLS connection per call costs more than
the introspection itself. Our pool is an ``httpx.AsyncHTTPTransport`` used directly: an
``AsyncClient`` would merge URLs, headers and cookies into every request and extract cookies
from every response, work an introspection has no use for (about a third of the client's cost
per call). A caller's ``httpx.AsyncClient`` (custom TLS, proxies, tests) is used as it is. Ours
is created lazily, and again if the event loop changed (test suites start a new loop per test;
pooled connections cannot cross loops).

Bodies are read raw and decompressed here as they arrive, within ``MAX_RESPONSE_BYTES`` of
*decompressed* output: a small gzip bomb cannot expand in memory before the cap applies.
``send_sync`` and ``send_for_json_sync`` do the same for synchronous code (``ServiceAccountAuth``
with an ``httpx.Client``): a second pool, an ``httpx.HTTPTransport`` (thread-safe, one for every
thread), the same headers, cap and decompression.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from fastapi_zitadel._concurrency.per_loop import PerLoop
from fastapi_zitadel._exceptions import TransportFailure

__all__ = [
    "MAX_RESPONSE_BYTES",
    "HttpClientProvider",
    "JsonResponse",
    "TimeoutFailure",
    "send_for_json",
    "send_for_json_sync",
]

# An introspection answer is a few KiB; anything far larger is not one, and reading it whole
# would let a broken or hostile endpoint exhaust our memory.
MAX_RESPONSE_BYTES = 1024 * 1024

_USER_AGENT = "fastapi-zitadel"
# gzip and deflate are decompressed here under the cap; anything else is refused unread.
_ACCEPT_ENCODING = "gzip, deflate"
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
_DECOMPRESSORS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 0}


class TimeoutFailure(TransportFailure):
    """No answer within the time the call was given (as opposed to an error answer or a
    refused connection): whose fault that is depends on how much time it had."""


def _why(exc: httpx.HTTPError) -> str:
    """What an operator can act on, from the causes under ``exc`` (the class name otherwise):
    a bare ``ConnectError`` hides whether the host is unknown, refuses, or speaks plain http to
    our https, three different fixes. Only the kind is named, never the request."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "its TLS certificate is not trusted"
        if isinstance(cause, ssl.SSLError):
            return "TLS handshake failed: does it serve plain http? then the URL is http://"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused: nothing listens on that host and port"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


class HttpClientProvider:
    """Our pools (async per event loop, and sync), or the caller's clients; requests with our
    fixed headers, URLs parsed once."""

    def __init__(
        self,
        client: httpx.AsyncClient | None,
        *,
        timeout: float,
        sync_client: httpx.Client | None = None,
    ) -> None:
        self._timeout = _timeouts(timeout)
        self._urls: dict[str, httpx.URL] = {}
        self._external = client
        self._owned = PerLoop(lambda: httpx.AsyncHTTPTransport(limits=_LIMITS))
        self._external_sync = sync_client
        self._owned_sync: httpx.HTTPTransport | None = None

    def request(
        self,
        method: str,
        url: str,
        *,
        form: Mapping[str, str | list[str]] | None = None,
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
        # httpx encodes the form (a list as repeated fields) and sets its Content-Type.
        return httpx.Request(
            method, parsed, headers=all_headers, data=form, extensions={"timeout": self._timeout}
        )

    async def send(self, request: httpx.Request) -> httpx.Response:
        """The response, streaming: its body is read by the caller (``send_for_json``)."""
        if self._external is not None:
            return await self._external.send(request, stream=True)
        return await self._owned.get().handle_async_request(request)

    async def aclose(self) -> None:
        """Close our own async pool of this loop (and our sync one); caller-supplied clients
        stay the caller's to close."""
        owned = self._owned.pop_current()
        if owned is not None:
            await owned.aclose()
        self.close()

    def send_sync(self, request: httpx.Request, *, timeout: float) -> httpx.Response:
        """``send`` for synchronous code; each network wait is bounded by ``timeout``."""
        request.extensions["timeout"] = _timeouts(timeout)
        if self._external_sync is not None:
            return self._external_sync.send(request, stream=True)
        if self._owned_sync is None:
            self._owned_sync = httpx.HTTPTransport(limits=_LIMITS)
        return self._owned_sync.handle_request(request)

    def close(self) -> None:
        """Close our own sync pool."""
        owned, self._owned_sync = self._owned_sync, None
        if owned is not None:
            owned.close()


def _timeouts(seconds: float) -> dict[str, float | None]:
    return httpx.Timeout(seconds, connect=min(seconds, 5.0)).as_dict()


@dataclass(frozen=True)
class JsonResponse:
    """A response whose body was read within the size cap: ``data`` is the parsed JSON, or
    ``None`` with ``problem`` saying why it is not usable JSON (wrong content type, too large,
    not parseable)."""

    status: int
    headers: httpx.Headers
    data: Any
    problem: str | None


async def send_for_json(
    http: HttpClientProvider, request: httpx.Request, *, timeout: float
) -> JsonResponse:
    """Send ``request`` and read a JSON body, all within ``timeout`` seconds."""
    with _transport_failures(timeout):
        if _timeout_context is not None:  # Python 3.11+: no task per call
            async with _timeout_context(timeout):
                return await _send(http, request)
        return await asyncio.wait_for(_send(http, request), timeout=timeout)


@contextlib.contextmanager
def _transport_failures(timeout: float) -> Iterator[None]:
    """What sending may raise, as the ``TransportFailure`` callers retry (sync and async)."""
    try:
        yield
    except (asyncio.TimeoutError, TimeoutError, httpx.TimeoutException):
        raise TimeoutFailure(f"identity provider timed out after {timeout:.1f} s") from None
    except httpx.HTTPError as exc:
        raise TransportFailure(f"identity provider unreachable ({_why(exc)})") from None
    except zlib.error:
        raise TransportFailure("identity provider sent a corrupt compressed body") from None
    except RuntimeError as exc:  # e.g. a caller-supplied client that was already closed
        raise TransportFailure(f"HTTP client unusable ({exc})") from None


_timeout_context = getattr(asyncio, "timeout", None) if sys.version_info >= (3, 11) else None


async def _send(http: HttpClientProvider, request: httpx.Request) -> JsonResponse:
    response = await http.send(request)
    try:
        body = _reader(response)
        if isinstance(body, JsonResponse):
            return body
        async for chunk in response.aiter_raw():
            if not body.add(chunk):
                break
        return body.answer(response)
    finally:
        await response.aclose()


def _reader(response: httpx.Response) -> JsonResponse | _CappedBody:
    """The answer when the body is not read from the network (refused, or a caller's
    transport answered from memory), else a reader for its raw chunks (sync and async)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "", *_DECOMPRESSORS):
        return _unusable(response, f"content encoding {encoding[:20]!r} not supported")
    declared = response.headers.get("content-length", "")
    plain = encoding in ("identity", "")
    if plain and declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        return _unusable(response, f"body of {declared} bytes exceeds the limit")
    if response.is_stream_consumed:
        in_memory = _CappedBody(None)
        in_memory.add(response.content)
        return in_memory.answer(response)
    return _CappedBody(_DECOMPRESSORS.get(encoding))


class _CappedBody:
    """A body decompressed with ``wbits`` (``None``: as sent) as it arrives, never past the cap."""

    def __init__(self, wbits: int | None) -> None:
        self._body = bytearray()
        self._inflate = None if wbits is None else zlib.decompressobj(wbits)

    def add(self, chunk: bytes) -> bool:
        """Take ``chunk``; ``False`` once the body is over the cap (read no more of it)."""
        body, inflate = self._body, self._inflate
        if inflate is None:
            body += chunk
        else:
            # max_length bounds each step's output: a bomb stops at the cap, not after it.
            data = chunk
            while data and len(body) <= MAX_RESPONSE_BYTES:
                body += inflate.decompress(data, MAX_RESPONSE_BYTES + 1 - len(body))
                data = inflate.unconsumed_tail
        return len(body) <= MAX_RESPONSE_BYTES

    def answer(self, response: httpx.Response) -> JsonResponse:
        body = self._body
        if self._inflate is not None and len(body) <= MAX_RESPONSE_BYTES:
            body += self._inflate.flush(MAX_RESPONSE_BYTES + 1 - len(body))
        if len(body) > MAX_RESPONSE_BYTES:
            return _unusable(response, f"body exceeds {MAX_RESPONSE_BYTES} bytes")
        return _parsed(response, bytes(body))


def _parsed(response: httpx.Response, body: bytes) -> JsonResponse:
    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        return _unusable(response, f"content type {content_type or 'missing'!r}, not JSON")
    try:
        data = json.loads(body, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return _unusable(response, "body is not valid JSON")
    return JsonResponse(response.status_code, response.headers, data, None)


def _not_json(constant: str) -> Any:
    """``NaN``, ``Infinity``, ``-Infinity``: Python reads them, JSON has none (RFC 8259 §6),
    and a lifetime or a time that is not a finite number breaks every comparison with it."""
    raise ValueError(f"{constant} is not JSON")


def send_for_json_sync(
    http: HttpClientProvider,
    request: httpx.Request,
    *,
    timeout: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> JsonResponse:
    """``send_for_json`` for synchronous code. A thread cannot be interrupted, so the deadline
    is kept by bounding every network wait (connect, send, each read) by the time left, and by
    checking it between reads."""
    deadline = monotonic() + timeout
    with _transport_failures(timeout):
        response = http.send_sync(request, timeout=timeout)
        try:
            body = _reader(response)
            if isinstance(body, JsonResponse):
                return body
            for chunk in response.iter_raw():
                if not body.add(chunk):
                    break
                if monotonic() > deadline:
                    raise TimeoutError
            return body.answer(response)
        finally:
            response.close()


def _unusable(response: httpx.Response, problem: str) -> JsonResponse:
    return JsonResponse(response.status_code, response.headers, None, problem)
