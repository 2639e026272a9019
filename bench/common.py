"""What every section shares: interleaved rounds, result rows, the stand-in process, profiles.

A figure is always a ratio of alternatives measured in the same process and the same run:
the alternatives take turns (round-robin, the starting one rotating every round), each batch
is timed on its own, and each alternative's figure is the median of its rounds. Ratios are
taken within each round (the alternatives' samples of one round were measured moments apart)
and the median over the rounds is reported. Absolute times are for context only; they depend
on the machine and its other load.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# A batch runs ``n`` operations and answers the seconds per operation.
AsyncBatch = Callable[[int], Awaitable[float]]


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# Results ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a section's table."""

    measure: str
    figure: str  # the ratio (or count) this line is about
    context: str = ""  # absolute numbers, for context only
    goal: str = ""
    met: bool | None = None  # None: no goal on this line


@dataclass
class Profile:
    title: str
    text: str


@dataclass
class SectionResult:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)

    def add(
        self,
        measure: str,
        figure: str,
        context: str = "",
        goal: str = "",
        met: bool | None = None,
    ) -> None:
        self.rows.append(Row(measure, figure, context, goal, met))

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, path: Path) -> SectionResult:
        data = json.loads(path.read_text())
        return cls(
            title=data["title"],
            rows=[Row(**row) for row in data["rows"]],
            notes=list(data["notes"]),
            profiles=[Profile(**profile) for profile in data["profiles"]],
        )


def section_main(run: Callable[[argparse.Namespace], SectionResult]) -> None:
    """The command line of one section: ``python -m bench.X --json out.json [--quick]``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path, required=True, help="where to write the result")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke test")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    args = parser.parse_args()
    run(args).write(args.json)


# Formatting ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def ratio(value: float) -> str:
    return f"{value:.2f}x"


def spread(samples: Sequence[float], unit: Callable[[float], str]) -> str:
    """The median with the range of the rounds, e.g. ``52.1 µs (49.8-60.2)``."""
    low, high = unit(min(samples)).split()[0], unit(max(samples)).split()[0]
    return f"{unit(median(samples))} ({low}-{high}, {len(samples)} rounds)"


Figure = Callable[[Mapping[str, float]], float]


def quotient(numerator: str, denominator: str) -> Figure:
    """The per-round figure ``numerator / denominator``."""
    return lambda r: r[numerator] / r[denominator]


def extra_cost_ratio(ours: str, floor: str, base: str) -> Figure:
    """The per-round figure ``(ours - base) / (floor - base)``: extra costs compared."""
    return lambda r: (r[ours] - r[base]) / (r[floor] - r[base])


def per_round(samples: Mapping[str, Sequence[float]], figure: Figure) -> list[float]:
    """``figure`` computed within each round, from that round's sample of every alternative.

    A ratio taken round by round compares measurements made moments apart, so a change of
    background load between rounds cancels out; its median then discards the disturbed ones.
    """
    rounds = min(len(values) for values in samples.values())
    return [figure({name: values[i] for name, values in samples.items()}) for i in range(rounds)]


def ratio_range(values: Sequence[float], style: str = "x") -> str:
    """The range of a per-round figure, for a context column: ``x`` for a ratio (0.91x-1.02x),
    ``%`` for a share (91.0%-102.0%), ``+%`` for a change (+1.0% to +4.2%)."""
    low, high = min(values), max(values)
    if style == "%":
        span = f"{low:.1%}-{high:.1%}"
    elif style == "+%":
        span = f"{low:+.1%} to {high:+.1%}"
    else:
        span = f"{low:.2f}x-{high:.2f}x"
    return f"{span} over {len(values)} rounds"


# Interleaved measurement -----------------------------------------------------------------


def round_robin(names: Sequence[str], round_index: int) -> list[str]:
    """The order of one round: every alternative once, starting one further each round."""
    shift = round_index % len(names)
    return [*names[shift:], *names[:shift]]


async def calibrate_async(batch: AsyncBatch, target_seconds: float, *, minimum: int = 3) -> int:
    """How many operations make one batch last about ``target_seconds``."""
    per_op = await batch(minimum)
    per_op = min(per_op, await batch(minimum))
    return max(minimum, round(target_seconds / max(per_op, 1e-9)))


async def interleave_async(
    batches: Mapping[str, AsyncBatch], *, rounds: int, target_seconds: float
) -> dict[str, list[float]]:
    """Seconds per operation of each alternative, one sample per round, taken in turns."""
    sizes = {name: await calibrate_async(batch, target_seconds) for name, batch in batches.items()}
    samples: dict[str, list[float]] = {name: [] for name in batches}
    for index in range(rounds):
        for name in round_robin(list(batches), index):
            gc.collect()
            samples[name].append(await batches[name](sizes[name]))
    return samples


def interleave_sync(
    batches: Mapping[str, Callable[[], float]], *, rounds: int
) -> dict[str, list[float]]:
    """Like ``interleave_async`` for batches that size themselves (e.g. a timed load run)."""
    samples: dict[str, list[float]] = {name: [] for name in batches}
    for index in range(rounds):
        for name in round_robin(list(batches), index):
            samples[name].append(batches[name]())
    return samples


# Profiles --------------------------------------------------------------------------------


def profile_top(run: Callable[[], object], *, limit: int = 18, sort: str = "tottime") -> str:
    """cProfile ``run()`` and answer the top entries, paths shortened to the package."""
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(sort).print_stats(limit)
    lines = [_shorten(line) for line in out.getvalue().splitlines()]
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    header = next((line.strip() for line in lines if "function calls" in line), "")
    return "\n".join([header, "", *lines[start:]]).rstrip()


def _shorten(line: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3"):
        if marker in line:
            head, _, tail = line.partition(marker)
            prefix = head.rsplit(" ", 1)[0] + " " if " " in head else ""
            line = prefix + tail
    return line


# Memory ----------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm (Linux)."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


# The ZITADEL stand-in in its own process ---------------------------------------------------


class StandInProcess:
    """``python -m bench.standin_process``: the stand-in on a loopback port, in a separate
    process so it shares neither the event loop nor the GIL with the client measured.

    ``info`` holds what it printed (issuer, key file, project, pre-minted tokens);
    ``introspection_calls()`` asks it how many introspection requests it served.
    """

    def __init__(self, *, tokens: int) -> None:
        self._tokens = tokens
        self._process: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> StandInProcess:
        command = [sys.executable, "-m", "bench.standin_process", "--tokens", str(self._tokens)]
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        self.info = json.loads(self._readline())
        return self

    def _readline(self) -> str:
        assert self._process is not None
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the stand-in process exited before answering")
        return line

    def introspection_calls(self) -> int:
        return self._ask("calls")

    def token_calls(self) -> int:
        """How many token requests it served (service users' grants)."""
        return self._ask("token_calls")

    def _ask(self, question: str) -> int:
        assert self._process is not None
        assert self._process.stdin is not None
        self._process.stdin.write(question + "\n")
        self._process.stdin.flush()
        return int(self._readline())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process is None:
            return
        if self._process.stdin is not None:
            self._process.stdin.close()  # end of input: the stand-in stops its server and exits
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def child_env() -> dict[str, str]:
    """The environment for our child processes: the work tree importable, no ZITADEL_* set,
    and no proxy settings (every request of the benchmarks stays on 127.0.0.1)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("ZITADEL_") and not name.lower().endswith("_proxy")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env
