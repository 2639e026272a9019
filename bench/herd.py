"""Section 3: the herd. 1,000 concurrent ``verify`` calls for one token nobody has verified yet.

Against the stand-in in its own process, over loopback. Each round takes a fresh token, and
interleaves: one cold ``verify`` (cache miss, pooled connection), the scheduling floor
(1,000 coroutines that each yield once, gathered), and the herd itself.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Iterator

from bench.common import (
    AsyncBatch,
    Profile,
    SectionResult,
    StandInProcess,
    log,
    median,
    ms,
    per_round,
    profile_top,
    ratio,
    ratio_range,
    round_robin,
    section_main,
    spread,
)
from fastapi_zitadel import ZitadelIntrospection

HERD = 1000


async def _yield_once() -> None:
    await asyncio.sleep(0)  # suspends once, as every caller waiting for the IdP must


async def _nothing() -> None:
    return None


class Herd:
    def __init__(self, zitadel: ZitadelIntrospection, tokens: Iterator[str]) -> None:
        self.zitadel = zitadel
        self.tokens = tokens
        self.introspections: list[int] = []  # per herd, counted by the client
        self.distinct_principals: list[int] = []

    async def single(self, _n: int) -> float:
        token = next(self.tokens)
        start = time.perf_counter()
        await self.zitadel.verify(token)
        return time.perf_counter() - start

    async def scheduling(self, _n: int) -> float:
        start = time.perf_counter()
        await asyncio.gather(*(_yield_once() for _ in range(HERD)))
        return time.perf_counter() - start

    async def no_op(self, _n: int) -> float:
        start = time.perf_counter()
        await asyncio.gather(*(_nothing() for _ in range(HERD)))
        return time.perf_counter() - start

    async def herd(self, _n: int) -> float:
        token = next(self.tokens)
        before = self.zitadel.introspection_calls
        start = time.perf_counter()
        principals = await asyncio.gather(*(self.zitadel.verify(token) for _ in range(HERD)))
        elapsed = time.perf_counter() - start
        self.introspections.append(self.zitadel.introspection_calls - before)
        self.distinct_principals.append(len({id(principal) for principal in principals}))
        return elapsed


def run(args: argparse.Namespace) -> SectionResult:
    result = SectionResult(f"3. Herd: {HERD:,} concurrent verify calls, one uncached token")
    rounds = 3 if args.quick else 25
    loop = asyncio.new_event_loop()
    try:
        with StandInProcess(tokens=2 * rounds + 8) as standin:
            zitadel = ZitadelIntrospection(
                standin.info["issuer"],
                key_file=standin.info["key_path"],
                project_id=standin.info["project_id"],
                audience=standin.info["project_id"],
            )
            herd = Herd(zitadel, iter(standin.info["tokens"]))
            loop.run_until_complete(herd.single(1))  # discovery, connection, assertion
            loop.run_until_complete(herd.herd(1))  # and once through the herd path
            herd.introspections.clear()
            herd.distinct_principals.clear()
            served_before = standin.introspection_calls()
            batches: dict[str, AsyncBatch] = {
                "single": herd.single,
                "scheduling": herd.scheduling,
                "no_op": herd.no_op,
                "herd": herd.herd,
            }
            samples: dict[str, list[float]] = {name: [] for name in batches}
            log(f"herd: {rounds} rounds")
            for index in range(rounds):
                for name in round_robin(list(batches), index):
                    gc.collect()
                    samples[name].append(loop.run_until_complete(batches[name](1)))
            served = standin.introspection_calls() - served_before
            _report(result, samples, herd, served)
            if any(row.met is False for row in result.rows):
                text = profile_top(lambda: loop.run_until_complete(herd.herd(1)), sort="tottime")
                result.profiles.append(Profile(f"one herd of {HERD:,}", text))
            loop.run_until_complete(zitadel.aclose())
    finally:
        loop.close()
    return result


def _report(
    result: SectionResult, samples: dict[str, list[float]], herd: Herd, served: int
) -> None:
    single, scheduling, herd_time = (median(samples[n]) for n in ("single", "scheduling", "herd"))
    herds = len(herd.introspections)
    exactly_one = all(count == 1 for count in herd.introspections)
    result.add(
        "introspections per herd (client count)",
        ", ".join(str(count) for count in sorted(set(herd.introspections))),
        f"{herds} herds; the stand-in served {served} introspections for all "
        f"{herds} herds and the {herds} single calls; "
        f"distinct Principal objects per herd: {max(herd.distinct_principals)}",
        "exactly 1",
        exactly_one and served == 2 * herds,
    )
    result.add("one cold verify (cache miss)", ms(single), spread(samples["single"], ms))
    result.add(
        f"scheduling floor: {HERD:,} coroutines gathered, each suspending once",
        ms(scheduling),
        spread(samples["scheduling"], ms) + f"; never suspending: {ms(median(samples['no_op']))}",
    )
    result.add(f"herd of {HERD:,}", ms(herd_time), spread(samples["herd"], ms))
    rounds = per_round(samples, lambda r: r["herd"] / (r["single"] + r["scheduling"]))
    figure = median(rounds)
    result.add(
        "herd / (cold verify + scheduling floor)",
        ratio(figure),
        f"{ms(herd_time)} vs {ms(single)} + {ms(scheduling)}; {ratio_range(rounds)}",
        "<= 1.5x",
        figure <= 1.5,
    )


def main() -> None:
    section_main(run)


if __name__ == "__main__":
    main()
