"""Section 5: under a server. uvicorn on loopback, a load generator in another process.

The server (``bench.server_app``) is pinned to one CPU and the load generator to the other,
at a fixed number of keep-alive connections. Rounds alternate the open route, the cached
``require_scope`` route, a cached ``Depends(zitadel)`` route, a route protected by
``ZitadelMiddleware`` alone and two floors (section 1's do-nothing security dependency used
directly, (b), and wrapped like ``require_scope``, (c)); every request carries the same
Authorization header.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

from bench.common import (
    ROOT,
    Profile,
    SectionResult,
    child_env,
    interleave_sync,
    log,
    median,
    per_round,
    profile_top,
    quotient,
    ratio_range,
    section_main,
)

CONNECTIONS = 16
SERVER_CPU, LOAD_CPU = 0, 1


def _pinning() -> bool:
    return hasattr(os, "sched_getaffinity") and {SERVER_CPU, LOAD_CPU} <= os.sched_getaffinity(0)


class LoadGenerator:
    def __init__(self, kind: str, token: str, seconds: int) -> None:
        self.kind = kind
        self.header = f"Authorization: Bearer {token}"
        self.seconds = seconds

    def __call__(self, url: str) -> float:
        """Requests per second against ``url`` for ``self.seconds``."""
        if self.kind == "wrk":
            return self._wrk(url)
        return self._python(url)

    def _wrk(self, url: str) -> float:
        wrk = shutil.which("wrk")
        assert wrk is not None
        command = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{self.seconds}s", "-H", self.header, url]
        if _pinning() and shutil.which("taskset"):
            command = ["taskset", "-c", str(LOAD_CPU), *command]
        out = subprocess.run(  # noqa: S603 - wrk against our own loopback server
            command, capture_output=True, text=True, check=True
        ).stdout
        if "Non-2xx" in out or "Socket errors" in out:
            raise RuntimeError(f"wrk saw failed requests:\n{out}")
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if found is None:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return float(found.group(1))

    def _python(self, url: str) -> float:
        command = [sys.executable, "-m", "bench.loadgen", url, "--header", self.header]
        command += ["--connections", str(CONNECTIONS), "--seconds", str(self.seconds)]
        if _pinning():
            command += ["--cpu", str(LOAD_CPU)]
        out = subprocess.run(  # noqa: S603 - our own interpreter and module
            command, capture_output=True, text=True, check=True, cwd=ROOT, env=child_env()
        ).stdout
        result = json.loads(out)
        if result["non_2xx"]:
            raise RuntimeError(f"the load generator saw {result['non_2xx']} failed requests")
        return float(result["requests_per_second"])


def _get(url: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _choose(kind: str) -> str:
    if kind == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if kind == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    return kind


def run(args: argparse.Namespace) -> SectionResult:
    result = SectionResult("5. Under a server: uvicorn, fixed concurrency over loopback")
    generator_kind = _choose(args.loadgen)
    rounds, seconds = (2, 1) if args.quick else (8, 1)  # whole seconds: wrk's -d takes no less
    command = [sys.executable, "-m", "bench.server_app"]
    if _pinning():
        command += ["--cpu", str(SERVER_CPU)]
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        url, token = info["url"], info["token"]
        routes = {
            "protected": "/items",  # first: its request warms the cache
            "open": "/open",
            "authenticated": "/authenticated",
            "middleware": "/mw/items",
            "floor": "/floor",
            "bare_floor": "/bare-floor",
        }
        for route in routes.values():
            if _get(url + route, token) != {"ok": True}:
                raise RuntimeError(f"{route} did not answer as expected")
        warm = _get(url + "/stats", token)["introspections"]
        load = LoadGenerator(generator_kind, token, seconds)
        for route in routes.values():  # warm the routes up
            load(url + route)
        log(f"server: {rounds} rounds of {seconds:g} s per route, {generator_kind}")
        batches: dict[str, Callable[[], float]] = {
            name: functools.partial(load, url + route) for name, route in routes.items()
        }
        samples = interleave_sync(batches, rounds=rounds)
        after = _get(url + "/stats", token)["introspections"]
    finally:
        server.terminate()
        server.wait(timeout=15)

    def share_of(name: str, of: str = "open") -> tuple[float, str]:
        rounds = per_round(samples, quotient(name, of))
        return median(rounds), ratio_range(rounds, "%")

    generator = (
        f"wrk -t1 -c{CONNECTIONS}" if generator_kind == "wrk" else f"bench.loadgen, {CONNECTIONS}"
    )
    labels = (
        ("open", "no-auth route"),
        ("protected", "cached require_scope route"),
        ("authenticated", "cached Depends(zitadel) route"),
        ("middleware", "cached route behind ZitadelMiddleware (no dependency)"),
        ("floor", "floor: do-nothing SecurityBase wrapped like require_scope (section 1 (c))"),
        ("bare_floor", "floor: do-nothing SecurityBase, Depends(floor) (section 1 (b))"),
    )
    for name, label in labels:
        values = samples[name]
        result.add(
            label,
            f"{median(values):,.0f} requests/s",
            f"{min(values):,.0f}-{max(values):,.0f} over {len(values)} rounds of {seconds:g} s",
        )
    share, context = share_of("protected")
    result.add(
        "protected / open, requests per second", f"{share:.1%}", context, ">= 85 %", share >= 0.85
    )
    floor_share, context = share_of("floor")
    result.add(
        "floor / open, requests per second",
        f"{floor_share:.1%}",
        f"the most a dependency declared like require_scope can reach; {context}",
    )
    protected_share, context = share_of("protected", "floor")
    result.add("protected / floor, requests per second", f"{protected_share:.1%}", context)
    authenticated_share, context = share_of("authenticated")
    result.add(
        "Depends(zitadel) / open, requests per second",
        f"{authenticated_share:.1%}",
        f"authentication without the require_scope wrapper; {context}",
    )
    middleware_share, context = share_of("middleware")
    result.add(
        "ZitadelMiddleware / open, requests per second",
        f"{middleware_share:.1%}",
        f"the whole app behind the middleware; {context}",
        ">= 90 %",
        middleware_share >= 0.90,
    )
    bare_share, context = share_of("bare_floor")
    result.add(
        "floor (b) / open, requests per second",
        f"{bare_share:.1%}",
        f"the most any security dependency can reach; {context}",
    )
    result.notes.append(
        f"uvicorn ({info['loop']}, {info['http']}) with one worker"
        + (f" pinned to CPU {SERVER_CPU}" if _pinning() else "")
        + f"; load: {generator} keep-alive connections"
        + (f" pinned to CPU {LOAD_CPU}" if _pinning() else "")
        + f". Introspections: {warm} before the load (the warm-up request), {after} after it. "
        "Every route gets the same Authorization header; the open route ignores it."
    )
    if share < 0.85:
        result.profiles.append(Profile(*_profile_protected_route()))
    return result


def _profile_protected_route() -> tuple[str, str]:
    """The same app in-process (no server): where a protected request's time goes."""
    import asyncio

    from bench.hot_path import AsgiDriver
    from bench.server_app import create_app

    app, _zitadel, token = create_app()
    driver = AsgiDriver(app, token, path="/items")
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(driver.check())
        text = profile_top(lambda: loop.run_until_complete(driver.batch(5000)))
    finally:
        loop.close()
    return "the cached require_scope route in-process (same app, no server), 5,000 requests", text


def main() -> None:
    section_main(run)


if __name__ == "__main__":
    main()
