"""Section 8: what hybrid mode's promise costs: a browser page, and a cold start.

A page: 10 requests at once with a JWT the API has never seen (a user who just signed in, a
page firing its API calls in parallel). Each request is timed from the page's start to its
answer; per page, p50 is the median of the 10 and p99 the slowest (of 10 samples, the 99th
percentile is the 10th). Alternatives, taking turns page by page, with the IdP answering each
introspection after 50 ms and after 500 ms (in memory, as in section 7):

(h1)  validation=hybrid, hybrid_unconfirmed_limit=1 (the default): the first request is served
      from the JWT, the other nine wait for its confirming introspection
(h10) validation=hybrid, hybrid_unconfirmed_limit=10: all ten served from the JWT
(l)   validation=local: all ten served from the JWT, never introspected
(i)   validation=introspection: all ten wait for one introspection (single flight)

Between pages each instance finishes its background introspections (the next page of a
real browser comes later).

Cold start: 2,000 JWTs nobody has seen, all at once (an API restarted behind a busy site),
the IdP at 500 ms, ``max_concurrent_introspections`` and ``timeout`` at their defaults (50,
10 s): the first request of each token, then, once those have answered, a second request of
each, all at once. Reported: how many answered 200 and 503, their p50/p99, and how many
confirming introspections ran in the end (every one: none dropped).
"""

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from typing import Any

from bench.common import (
    SectionResult,
    log,
    median,
    ms,
    ratio,
    ratio_range,
    round_robin,
    section_main,
)
from bench.hot_path import SigningKey
from bench.local_jwt import _mock_issuer, _settled
from fastapi_zitadel import IdentityProviderError, ZitadelIntrospection
from fastapi_zitadel.testing import StandInProject, ZitadelStandIn

PAGE = 10
LATENCIES = (0.05, 0.5)
LABELS = {
    "h1": "(h1) hybrid, hybrid_unconfirmed_limit=1 (default)",
    "h10": "(h10) hybrid, hybrid_unconfirmed_limit=10",
    "l": "(l) local",
    "i": "(i) introspection",
}
COLD_START = 2000
COLD_LATENCY = 0.5

Page = Callable[[str], Awaitable[list[float]]]


def _page(zitadel: ZitadelIntrospection) -> Page:
    async def page(token: str) -> list[float]:
        start = time.perf_counter()

        async def one() -> float:
            await zitadel.verify(token)
            return time.perf_counter() - start

        latencies = await asyncio.gather(*(one() for _ in range(PAGE)))
        await _settled(zitadel)  # the confirmations end before the next page
        return sorted(latencies)

    return page


async def _pages(
    pages: dict[str, Page], mint: Callable[[], str], rounds: int
) -> dict[str, list[list[float]]]:
    """``rounds`` pages of each alternative, taking turns; each page a new JWT."""
    seen: dict[str, list[list[float]]] = {name: [] for name in pages}
    for index in range(rounds):
        for name in round_robin(list(pages), index):
            seen[name].append(await pages[name](mint()))
    return seen


async def _wave(zitadel: ZitadelIntrospection, tokens: list[str]) -> tuple[list[float], int]:
    """All of ``tokens`` at once: the latencies of those answered 200, and how many 503."""
    start = time.perf_counter()

    async def one(token: str) -> float | None:
        try:
            await zitadel.verify(token)
        except IdentityProviderError:
            return None
        return time.perf_counter() - start

    answers = await asyncio.gather(*(one(token) for token in tokens))
    served = sorted(answer for answer in answers if answer is not None)
    return served, len(answers) - len(served)


def _p(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(len(values) * fraction))] if values else 0.0


def run(args: argparse.Namespace) -> SectionResult:
    result = SectionResult("8. Hybrid mode's promise: a page of 10 parallel requests, a cold start")
    loop = asyncio.new_event_loop()
    rounds = {0.05: 4 if args.quick else 15, 0.5: 2 if args.quick else 7}
    cold = 200 if args.quick else COLD_START
    with ExitStack() as stack:
        stack.callback(loop.close)
        standin = ZitadelStandIn()
        project = StandInProject(standin)
        key = SigningKey(
            standin.issuer, [project.app.client_id, project.project.id], project.app.client_id
        )

        def mint() -> str:
            return key.access_token(project.org.id, project.project.id)

        def instance(mode: str, latency: float, **options: Any) -> ZitadelIntrospection:
            settings: dict[str, Any] = {
                "validation": mode,
                "audience": project.project.id,
                "project_id": project.project.id,
                "http_client": _mock_issuer(key, latency),
                **options,
            }
            if mode != "local":
                settings["key_file"] = project.key_path
            return ZitadelIntrospection(standin.issuer, **settings)

        figures: dict[float, dict[str, list[list[float]]]] = {}
        for latency in LATENCIES:
            zitadels = {
                "h1": instance("hybrid", latency),
                "h10": instance("hybrid", latency, hybrid_unconfirmed_limit=PAGE),
                "l": instance("local", latency),
                "i": instance("introspection", latency),
            }
            for zitadel in zitadels.values():  # discovery and keys fetched before timing
                loop.run_until_complete(zitadel.verify(mint()))
                loop.run_until_complete(_settled(zitadel))
            log(f"hybrid page: IdP at {latency * 1000:.0f} ms, {rounds[latency]} pages each")
            pages = {name: _page(zitadel) for name, zitadel in zitadels.items()}
            figures[latency] = loop.run_until_complete(_pages(pages, mint, rounds[latency]))
            for zitadel in zitadels.values():
                loop.run_until_complete(zitadel.aclose())

        log(f"cold start: signing {cold} JWTs")
        cold_tokens = {name: [mint() for _ in range(cold)] for name in ("h1", "l", "i")}
        cold_figures: dict[str, dict[str, Any]] = {}
        for name, mode in (("h1", "hybrid"), ("l", "local"), ("i", "introspection")):
            log(f"cold start: {cold} new JWTs at once, {LABELS[name]}")
            zitadel = instance(mode, COLD_LATENCY)
            loop.run_until_complete(zitadel.verify(mint()))  # discovery and keys
            loop.run_until_complete(_settled(zitadel))
            tokens = cold_tokens[name]
            first = loop.run_until_complete(_wave(zitadel, tokens))
            second = loop.run_until_complete(_wave(zitadel, tokens))
            loop.run_until_complete(_settled(zitadel))
            # Each token's confirmation ends once: answered by ZITADEL, or failed (the IdP
            # did not answer in time, the circuit was open: the token is left suspect).
            # Queueing again is not an end. Read from the metrics: no request disturbs them.
            metrics = zitadel.metrics()
            cold_figures[name] = {
                "first": first,
                "second": second,
                "answered": metrics.idp_calls["active"] + metrics.idp_calls["inactive"] - 1,
                "failed": metrics.idp_calls["unavailable"] + metrics.circuit_rejections,
                "requeued": metrics.confirmations_requeued,
            }
            loop.run_until_complete(zitadel.aclose())
    _report(result, figures, cold_figures, cold)
    return result


def _page_rows(result: SectionResult, latency: float, pages: dict[str, list[list[float]]]) -> None:
    at = f"IdP at {latency * 1000:.0f} ms"
    p50 = {name: [page[PAGE // 2 - 1] for page in seen] for name, seen in pages.items()}
    p99 = {name: [page[-1] for page in seen] for name, seen in pages.items()}
    for name, label in LABELS.items():
        result.add(
            f"{label}, {at}",
            f"p50 {ms(median(p50[name]))}, p99 {ms(median(p99[name]))}",
            f"medians over {len(pages[name])} pages; p99 from {ms(min(p99[name]))} "
            f"to {ms(max(p99[name]))}",
        )
    for ours, other in (("h1", "i"), ("h10", "l"), ("h1", "l")):
        for which, values in (("p50", p50), ("p99", p99)):
            rounds = [a / b for a, b in zip(values[ours], values[other], strict=True)]
            result.add(
                f"{at}: page {which}, ({ours}) / ({other})",
                ratio(median(rounds)),
                ratio_range(rounds),
            )


def _report(
    result: SectionResult,
    figures: dict[float, dict[str, list[list[float]]]],
    cold_figures: dict[str, dict[str, Any]],
    cold: int,
) -> None:
    for latency, pages in figures.items():
        _page_rows(result, latency, pages)
    for name, seen in cold_figures.items():
        for wave in ("first", "second"):
            served, unavailable = seen[wave]
            result.add(
                f"cold start, {cold:,} new JWTs at once, {wave} request of each: {LABELS[name]}",
                f"{len(served):,} served, {unavailable:,} answered 503",
                f"p50 {ms(_p(served, 0.5))}, p99 {ms(_p(served, 0.99))} of those served",
            )
    h1 = cold_figures["h1"]
    dropped = cold - h1["answered"] - h1["failed"]
    result.add(
        f"cold start, (h1): confirmations dropped, of {cold:,} served JWTs",
        f"{dropped:,}",
        f"{h1['answered']:,} answered by ZITADEL; {h1['failed']:,} failed (no answer within "
        "the timeout, or the circuit open): those tokens stay suspect, their next request is "
        f"introspected; {h1['requeued']:,} queued again after a whole timeout without a slot",
        "exactly 0",
        dropped == 0,
    )
    result.add(
        f"cold start, (i): introspections answered, of {cold:,}",
        f"{cold_figures['i']['answered']:,}",
        f"{cold_figures['i']['failed']:,} failed (no answer within the timeout, or the "
        "circuit open)",
    )
    result.notes.append(
        "A page's ten requests share one fresh JWT; (h1) serves the first from its local "
        "verification and makes the other nine wait for the confirming introspection, so its "
        "p50 and p99 follow the IdP's latency, as (i)'s do; (h10) serves all ten at once, as "
        "(l) does, and lets a revoked JWT pass ten requests. The IdP answers from memory after "
        "the stated latency (asyncio.sleep), so the figures are the wait, not our CPU."
    )
    result.notes.append(
        "Cold start: with the IdP at 500 ms and 50 introspections in flight at most, ZITADEL "
        "confirms about 100 tokens a second, so 2,000 take about 20 s. (h1)'s first requests "
        "never wait; a second request waits for its token's confirmation, and gets 503 when "
        "that has not answered within its own 10 s timeout (the confirmation still runs: it "
        "queues again rather than being dropped). (i) makes every first request wait, and "
        "answers 503 to those the queue cannot take within 10 s; (l) never asks."
    )


def main() -> None:
    section_main(run)


if __name__ == "__main__":
    main()
