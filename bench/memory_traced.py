"""Section 4, second part: tracemalloc and an object census while a cache fills.

Run by ``bench.memory`` in a process of its own (``python -m bench.memory_traced --json
out.json``), so nothing the first part grew is resized, and charged, inside this window.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import tracemalloc
from collections import Counter

from bench.common import ROOT, SectionResult, section_main
from bench.memory import KIB, World, fill, tokens

TRACED = 10_000
WARM = 100


def run(args: argparse.Namespace) -> SectionResult:
    result = SectionResult("4. Memory (tracemalloc)")
    traced = 2_000 if args.quick else TRACED
    world = World()
    loop = asyncio.new_event_loop()
    try:
        zitadel = world.zitadel(traced)
        batch = tokens("traced", range(traced))
        loop.run_until_complete(fill(zitadel, batch[:WARM]))
        gc.collect()
        census = Counter(type(obj).__name__ for obj in gc.get_objects())
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        loop.run_until_complete(fill(zitadel, batch[WARM:]))
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        census = Counter(type(obj).__name__ for obj in gc.get_objects()) - census
        loop.run_until_complete(zitadel.aclose())
    finally:
        loop.close()
    entries = traced - WARM
    stats = after.compare_to(before, "lineno")
    added = sum(stat.size_diff for stat in stats)
    result.add(
        f"tracemalloc per cached principal ({traced:,} entries)",
        f"{added / entries / KIB:.2f} KiB",
        "allocations still live after the fill, divided by the entries added",
    )
    kinds = [(name, count / entries) for name, count in census.most_common() if count >= entries]
    result.add(
        "objects the garbage collector tracks, per cached entry",
        f"{sum(per for _, per in kinds):.0f}",
        ", ".join(f"{per:.0f} {name}" for name, per in kinds)
        + " (nothing else grows with the entries: no leak)",
    )
    for stat in sorted(stats, key=lambda stat: -stat.size_diff)[:8]:
        frame = stat.traceback[0]
        where = frame.filename.split("site-packages/")[-1].removeprefix(f"{ROOT}/")
        if "/lib/python3" in where:  # the standard library
            where = where.split("/lib/", 1)[1]
        result.add(
            f"  allocated at {where}:{frame.lineno}",
            f"{stat.size_diff / entries:,.0f} B per entry",
            f"{stat.size_diff / added:.0%} of the traced growth",
        )
    return result


def main() -> None:
    section_main(run)


if __name__ == "__main__":
    main()
