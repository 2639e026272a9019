"""Revocation markers shared between replicas through a Redis stream.

Pub/sub reaches only the replicas listening at that moment; a stream also reaches a replica
that was down, deaf (a dropped connection) or started later: each replays the stream from
where it left off (from the start, when it starts) and then blocks on it for new entries.

* ``publish`` is one script: ``SET NX`` on the event's identity (a second delivery of the same
  event, to any replica, adds nothing) and ``XADD`` of its markers, trimming entries older
  than the markers' lifetime (``MINID``) and beyond ``max_entries``.
* the listener reads with ``XREAD BLOCK``; when Redis goes away it reconnects and continues
  from the last entry it applied, so nothing published meanwhile is missed.

Markers can only refuse tokens or drop verdicts: whoever can write to this Redis can deny
service, never grant access (as with the cache tier, which is sealed).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from typing import Any

from fastapi_zitadel._concurrency.per_loop import PerLoop
from fastapi_zitadel._events.revocations import MARKER_TTL, Marker, RevocationFeed, Revocations
from fastapi_zitadel._extras import redis_asyncio
from fastapi_zitadel._log import logger

__all__ = ["RedisRevocationFeed"]

# KEYS: the event's identity, the stream. ARGV: the markers' lifetime (ms), max entries, the
# markers. Returns 1 when added, 0 for an event already published. Entry ids are Redis's own
# clock: what is older than the lifetime by that clock goes.
_PUBLISH = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return 0
end
local now = redis.call('TIME')
local oldest = math.max(tonumber(now[1]) * 1000 - tonumber(ARGV[1]), 0)
redis.call('XADD', KEYS[2], 'MINID', '~', oldest, '*', 'm', ARGV[3])
redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[2])
return 1
"""

_SEPARATOR = b"\n"
_BLOCK_MS = 1000


class RedisRevocationFeed(RevocationFeed):
    """A ``RevocationFeed`` on Redis; made by ``RedisCache`` (or from ``redis_url``)."""

    def __init__(
        self,
        url: str,
        *,
        issuer: str,
        timeout: float = 0.25,
        retry_interval: float = 1.0,
        marker_ttl: float = MARKER_TTL,
        max_entries: int = 1_000_000,
    ) -> None:
        redis_asyncio()  # the extra is there, or a ConfigurationError naming it
        tag = hashlib.sha256(issuer.encode("utf-8")).hexdigest()[:16]
        self._stream = f"fastapi-zitadel:events:{tag}"
        self._seen_prefix = f"fastapi-zitadel:events:{tag}:seen:"
        self._url = url
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._marker_ttl = marker_ttl
        self._max_entries = max_entries
        self._clients: PerLoop[Any] = PerLoop(lambda: self._client(timeout))
        self._listener: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.last_id = b"0-0"  # the last entry applied here

    def _client(self, socket_timeout: float) -> Any:
        return redis_asyncio().Redis.from_url(
            self._url, socket_timeout=socket_timeout, socket_connect_timeout=self._timeout
        )

    async def publish(self, identity: str, markers: Sequence[Marker]) -> bool:
        stored = await self._clients.get().eval(
            _PUBLISH,
            2,
            self._seen_prefix + hashlib.sha256(identity.encode("utf-8")).hexdigest(),
            self._stream,
            int(self._marker_ttl * 1000),
            self._max_entries,
            _SEPARATOR.join(marker.encode() for marker in markers),
        )
        return bool(stored)

    async def start(self, revocations: Revocations, *, timeout: float) -> None:
        """Replay the stream into ``revocations`` (waiting up to ``timeout``, or until a first
        attempt failed: Redis down never holds up a start), then listen."""
        if self._listener is not None:
            return
        replayed, tried = asyncio.Event(), asyncio.Event()
        self._stopping = asyncio.Event()
        self._listener = asyncio.ensure_future(self._listen(revocations, replayed, tried))
        try:
            await asyncio.wait_for(tried.wait(), timeout)
        except asyncio.TimeoutError:
            logger.warning(
                "revocation markers not replayed from Redis within %g s: listening on in the "
                "background",
                timeout,
            )

    async def aclose(self) -> None:
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(BaseException):
                await listener
        client = self._clients.pop_current()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen(
        self, revocations: Revocations, replayed: asyncio.Event, tried: asyncio.Event
    ) -> None:
        lost = False
        while not self._stopping.is_set():
            # XREAD BLOCK answers within _BLOCK_MS: a read that takes much longer is a
            # connection gone silent, given up and opened again
            client = self._client(_BLOCK_MS / 1000 + max(self._timeout * 4, 1.0))
            try:
                while not self._stopping.is_set():
                    block = _BLOCK_MS if replayed.is_set() else None  # replay at once
                    answer: Any = await client.xread(
                        {self._stream: self.last_id}, count=1000, block=block
                    )
                    if lost:
                        lost = False
                        logger.warning("revocation feed (Redis) reading again")
                    for _stream, entries in answer or []:
                        self._apply(revocations, entries)
                    if not answer:
                        replayed.set()  # everything stored so far is in
                        tried.set()
            except Exception as exc:  # Redis went away: continue from last_id when back
                tried.set()
                if not lost:
                    lost = True
                    logger.warning(
                        "revocation feed (Redis) unavailable (%s): reconnecting",
                        type(exc).__name__,
                    )
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._retry_interval)

    def _apply(self, revocations: Revocations, entries: Any) -> None:
        markers: list[Marker] = []
        for entry_id, fields in entries:
            self.last_id = entry_id
            for line in (fields.get(b"m") or b"").split(_SEPARATOR):
                try:
                    markers.append(Marker.decode(line))
                except (ValueError, TypeError, KeyError):
                    logger.warning("discarding an unreadable revocation marker from Redis")
        if markers:
            revocations.apply(markers)
