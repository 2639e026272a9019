#!/usr/bin/env python3
"""Run every benchmark and write BENCHMARKS.md at the repository root.

    python3 bench/run.py            # the full run (a few minutes on 2 cores)
    python3 bench/run.py --quick    # fewer rounds: a smoke test of the harness, not figures

Needs only Python 3.10+: the first run creates ``bench/.venv`` and installs the library's
dependencies (read from pyproject.toml) and the bench-only packages of bench/requirements.txt
into it; later runs reinstall only when one of those two files changes. The library itself is
imported from the work tree, never installed, so the figures are always for the code checked
out. Section 5 uses ``wrk`` when it is on the PATH (Debian: ``apt-get install wrk``) and a
small asyncio load generator otherwise.

Each section runs in a process of its own (``python -m bench.<section> --json ...``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = BENCH / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed-sha256"
REQUIREMENTS = BENCH / "requirements.txt"
PINS = ROOT / "constraints" / "dev.txt"  # the versions the test suite passes with

SECTIONS = (
    "hot_path",
    "miss_path",
    "herd",
    "memory",
    "server",
    "service_account",
    "local_jwt",
    "hybrid_page",
    "events",
)

READ_DEPENDENCIES = """
import sys
try:
    import tomllib
except ImportError:
    import tomli as tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
print("\\n".join(project["dependencies"] + project["optional-dependencies"]["testing"]))
"""


def _run(*command: str | Path) -> str:
    completed = subprocess.run(  # noqa: S603 - our own interpreter and pip
        [str(part) for part in command], cwd=ROOT, check=False, capture_output=True, text=True
    )
    if completed.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, command))}\n{completed.stdout}{completed.stderr}")
    return completed.stdout


def ensure_environment() -> None:
    """bench/.venv with the library's dependencies and bench/requirements.txt installed, at
    the versions constraints/dev.txt pins (what the suite passes with)."""
    wanted = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + REQUIREMENTS.read_bytes() + PINS.read_bytes()
    ).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        print(f"creating {VENV}", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing the benchmark dependencies (first run only)", file=sys.stderr, flush=True)
    pip = (PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", PINS)
    _run(*pip, "-r", REQUIREMENTS)
    dependencies = _run(PYTHON, "-c", READ_DEPENDENCIES, ROOT / "pyproject.toml").split()
    _run(*pip, *dependencies)
    STAMP.write_text(wanted)


def in_bench_environment() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (smoke test)")
    parser.add_argument(
        "--only", choices=SECTIONS, action="append", help="run only this section (repeatable)"
    )
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "BENCHMARKS.md", help="the Markdown file to write"
    )
    args = parser.parse_args()
    if not in_bench_environment():
        ensure_environment()
        os.execv(PYTHON, [str(PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])  # noqa: S606
    sys.path.insert(0, str(ROOT))
    from bench.common import SectionResult, child_env
    from bench.report import render

    started = time.monotonic()
    results: list[SectionResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        for section in args.only or SECTIONS:
            print(f"section {section} ...", file=sys.stderr, flush=True)
            out = Path(scratch) / f"{section}.json"
            command = [sys.executable, "-m", f"bench.{section}", "--json", str(out)]
            command += ["--loadgen", args.loadgen] + (["--quick"] if args.quick else [])
            completed = subprocess.run(command, cwd=ROOT, env=child_env(), check=False)  # noqa: S603
            if completed.returncode != 0 or not out.exists():
                sys.exit(f"section {section} failed (exit {completed.returncode})")
            results.append(SectionResult.read(out))
    command_line = "python3 bench/run.py" + "".join(f" {arg}" for arg in sys.argv[1:])
    markdown = render(results, command=command_line, seconds=time.monotonic() - started)
    print(markdown)
    args.output.write_text(markdown)
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
