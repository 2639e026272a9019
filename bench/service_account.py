"""Section 6: calling an API as a service user. ``ServiceAccountAuth`` on the client side.

Against the stand-in in its own process, over loopback. Two measures:

* **warm overhead**: sequential GETs of one small JSON resource with a plain
  ``httpx.AsyncClient`` and with the same client carrying a warm ``ServiceAccountAuth`` (the
  token cached), rounds interleaved, the ratio taken per round;
* **the auth flow alone**, in-process: driving ``ServiceAccountAuth``'s flow for one request
  and its response, against httpx's own no-op ``Auth`` (what a client without auth runs);
* **cold herd**: 1,000 concurrent GETs through a fresh ``ServiceAccountAuth`` (no token
  yet): how many token requests they make, counted by the client and by the stand-in (the
  herd's duration is mostly httpx's pool queueing 1,000 requests on 100 connections).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import httpx

from bench.common import (
    SectionResult,
    StandInProcess,
    interleave_async,
    log,
    median,
    ms,
    per_round,
    quotient,
    ratio,
    ratio_range,
    round_robin,
    section_main,
    spread,
    us,
)
from fastapi_zitadel import ServiceAccountAuth

HERD = 1000
DOCUMENT = "/.well-known/openid-configuration"  # a small JSON resource the server answers fast


def _auth(info: dict[str, str]) -> ServiceAccountAuth:
    return ServiceAccountAuth(
        info["issuer"], key_file=info["service_key_path"], project_id=info["project_id"]
    )


class Warm:
    def __init__(self, url: str, auth: ServiceAccountAuth) -> None:
        self.url = url
        self.plain = httpx.AsyncClient()
        self.authed = httpx.AsyncClient(auth=auth)

    async def plain_get(self, n: int) -> float:
        return await self._gets(self.plain, n)

    async def authed_get(self, n: int) -> float:
        return await self._gets(self.authed, n)

    async def _gets(self, client: httpx.AsyncClient, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            response = await client.get(self.url)
            if response.status_code != 200:
                raise RuntimeError(f"GET answered {response.status_code}")
        return (time.perf_counter() - start) / n

    async def aclose(self) -> None:
        await self.plain.aclose()
        await self.authed.aclose()


class Flow:
    """One request through an auth's flow and back, no network: what the auth costs."""

    def __init__(self, url: str, auth: httpx.Auth) -> None:
        self.auth = auth
        self.request = httpx.Request("GET", url)
        self.response = httpx.Response(200, request=self.request)

    async def __call__(self, n: int) -> float:
        auth, request, response = self.auth, self.request, self.response
        start = time.perf_counter()
        for _ in range(n):
            flow = auth.async_auth_flow(request)
            await flow.__anext__()
            with contextlib.suppress(StopAsyncIteration):
                await flow.asend(response)
        return (time.perf_counter() - start) / n


async def _herd(info: dict[str, str], url: str, *, cold_auth: bool) -> tuple[int, float]:
    """1,000 concurrent GETs, through a cold auth or none: (token requests sent, seconds)."""
    auth = _auth(info) if cold_auth else None
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(auth=auth, limits=limits, timeout=60) as client:
        start = time.perf_counter()
        responses = await asyncio.gather(*(client.get(url) for _ in range(HERD)))
        elapsed = time.perf_counter() - start
    if any(response.status_code != 200 for response in responses):
        raise RuntimeError("a GET of the herd failed")
    if auth is None:
        return 0, elapsed
    await auth.aclose()
    return auth.token_requests, elapsed


async def _run(args: argparse.Namespace, result: SectionResult) -> None:
    rounds = 3 if args.quick else 21
    herds = 2 if args.quick else 3
    with StandInProcess(tokens=1) as standin:
        info = standin.info
        url = info["issuer"] + DOCUMENT
        auth = _auth(info)
        warm = Warm(url, auth)
        await warm.authed_get(3)  # discovery, the token, the connections: warm from here on
        await warm.plain_get(3)
        log(f"warm overhead: {rounds} rounds")
        samples = await interleave_async(
            {"plain": warm.plain_get, "auth": warm.authed_get},
            rounds=rounds,
            target_seconds=0.1 if args.quick else 0.4,
        )
        flows = await interleave_async(
            {"ours": Flow(url, auth), "none": Flow(url, httpx.Auth())},
            rounds=rounds,
            target_seconds=0.05 if args.quick else 0.2,
        )
        assert auth.token_requests == 1, auth.token_requests
        await warm.aclose()
        await auth.aclose()
        rounds_ratio = per_round(samples, quotient("auth", "plain"))
        figure = median(rounds_ratio)
        result.add(
            "warm ServiceAccountAuth GET / plain httpx.AsyncClient GET (loopback)",
            ratio(figure),
            f"{us(median(samples['auth']))} vs {us(median(samples['plain']))} per GET; "
            f"{ratio_range(rounds_ratio)}; one token for every GET",
            "<= 1.05x",
            figure <= 1.05,
        )
        result.add("plain GET", us(median(samples["plain"])), spread(samples["plain"], us))
        result.add(
            "GET with a warm ServiceAccountAuth",
            us(median(samples["auth"])),
            spread(samples["auth"], us),
        )
        extra = per_round(
            {**flows, "plain": samples["plain"]}, lambda r: (r["ours"] - r["none"]) / r["plain"]
        )
        result.add(
            "its flow's extra cost per request, as a share of a plain GET",
            f"{median(extra):.2%}",
            f"flow {us(median(flows['ours']))} vs httpx's no-op Auth "
            f"{us(median(flows['none']))}, in-process; {ratio_range(extra, '%')}",
        )
        log(f"cold herds: {herds} x {HERD}")
        served_before = standin.token_calls()
        counts: list[int] = []
        seconds: dict[str, list[float]] = {"cold": [], "plain": []}
        for index in range(herds):
            for name in round_robin(["cold", "plain"], index):
                count, elapsed = await _herd(info, url, cold_auth=name == "cold")
                seconds[name].append(elapsed)
                if name == "cold":
                    counts.append(count)
        served = standin.token_calls() - served_before
        herd_ratio = per_round(seconds, quotient("cold", "plain"))
        result.add(
            f"token requests per herd of {HERD:,} concurrent GETs on a cold auth",
            ", ".join(str(count) for count in sorted(set(counts))),
            f"{herds} herds; the stand-in served {served} token requests for all of them",
            "exactly 1",
            all(count == 1 for count in counts) and served == herds,
        )
        result.add(
            f"herd of {HERD:,} GETs on a cold auth / the same herd without auth",
            ratio(median(herd_ratio)),
            f"{ms(median(seconds['cold']))} vs {ms(median(seconds['plain']))}; "
            f"{ratio_range(herd_ratio)} (both mostly httpx's pool queueing 1,000 requests)",
        )


def run(args: argparse.Namespace) -> SectionResult:
    result = SectionResult("6. Calling an API as a service user: ServiceAccountAuth")
    asyncio.run(_run(args, result))
    return result


def main() -> None:
    section_main(run)


if __name__ == "__main__":
    main()
