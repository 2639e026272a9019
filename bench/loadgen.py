"""A small HTTP/1.1 load generator, for machines without ``wrk``.

    python -m bench.loadgen URL --connections 16 --seconds 2 --header "Authorization: ..."

Keeps ``connections`` keep-alive connections busy with GETs for ``seconds`` and prints one
JSON line: requests completed, seconds, requests per second, non-2xx answers. It only talks to
loopback addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import time
from urllib.parse import urlsplit


async def _worker(host: str, port: int, request: bytes, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            counts[0] += 1
            if not 200 <= status < 300:
                counts[1] += 1
    finally:
        writer.close()


async def load(
    url: str, *, connections: int, seconds: float, headers: list[str]
) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit("the load generator only targets loopback addresses")
    lines = [f"GET {parts.path or '/'} HTTP/1.1", f"Host: {host}:{port}", *headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    counts = [0, 0]
    start = time.monotonic()
    stop_at = start + seconds
    await asyncio.gather(
        *(_worker(host, port, request, stop_at, counts) for _ in range(connections))
    )
    elapsed = time.monotonic() - start
    return {
        "requests": counts[0],
        "seconds": elapsed,
        "requests_per_second": counts[0] / elapsed,
        "non_2xx": counts[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    result = runner(
        load(args.url, connections=args.connections, seconds=args.seconds, headers=args.header)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
