"""BENCHMARKS.md: the command, the machine, then one table per section."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata

from bench.common import ROOT, SectionResult

PACKAGES = (
    "fastapi",
    "starlette",
    "pydantic",
    "PyJWT",
    "cryptography",
    "httpx",
    "cachetools",
    "uvicorn",
    "httptools",
    "uvloop",
    "fastapi-zitadel-auth",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    git = shutil.which("git")
    if git is None:
        return ""
    completed = subprocess.run(  # noqa: S603 - git, read-only queries
        [git, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return completed.stdout.strip() if completed.returncode == 0 else ""


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> list[str]:
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    library_changes = _git("status", "--porcelain", "--", ".", ":!bench", ":!BENCHMARKS.md")
    dirty = " (with uncommitted changes)" if library_changes else ""
    versions = ", ".join(f"{package} {_version(package)}" for package in PACKAGES)
    return [
        f"- Machine: {os.cpu_count()} cores ({_cpu_model()}), {platform.system()} "
        f"{platform.release()}",
        f"- Python {platform.python_version()} ({sys.implementation.name})",
        f"- Packages: {versions} (one environment: both libraries use the same PyJWT)",
        f"- fastapi-zitadel at commit {commit}{dirty}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _met(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "**no**")


def render(results: Sequence[SectionResult], *, command: str, seconds: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Produced by:",
        "",
        "```bash",
        command,
        "```",
        "",
        *machine(),
        f"- Whole run: {seconds:.0f} s",
        "",
        "Every figure is a ratio of alternatives measured in the same run, taking turns "
        "(round-robin, the first one rotating each round). A ratio is taken within each round, "
        "between samples measured moments apart, and the median over the rounds is reported "
        "(its range over the rounds is in the context column). Absolute numbers (median, then "
        "the range over the rounds) are context only: they depend on the machine and on what "
        "else runs on it. Each section runs in a fresh process; section 4 reads the process's "
        "own RSS.",
        "",
    ]
    goals = [(result.title, row) for result in results for row in result.rows if row.goal]
    if goals:
        lines += ["## Goals", "", "| Section | Goal | Figure | Met |", "|---|---|---|---|"]
        for title, row in goals:
            section = title.split(" ", 1)[0].rstrip(".")
            lines.append(
                f"| {section} | {_cell(row.measure)} {_cell(row.goal)} | {_cell(row.figure)} | "
                f"{_met(row.met)} |"
            )
        lines.append("")
    for result in results:
        lines += [
            f"## {result.title}",
            "",
            "| Measure | Figure | Context (absolute) | Goal | Met |",
            "|---|---|---|---|---|",
        ]
        for row in result.rows:
            lines.append(
                f"| {_cell(row.measure)} | {_cell(row.figure)} | {_cell(row.context)} | "
                f"{_cell(row.goal)} | {_met(row.met)} |"
            )
        lines.append("")
        for note in result.notes:
            lines += [note, ""]
        for profile in result.profiles:
            lines += [f"Profile: {profile.title}", "", "```text", profile.text, "```", ""]
    return "\n".join(lines).rstrip() + "\n"
