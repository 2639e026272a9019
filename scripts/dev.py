#!/usr/bin/env python3
"""One entry point for developers and CI, needing nothing but Python 3.10+ and git.

    python3 scripts/dev.py test      # create .venv, install .[dev], run the whole test suite
    python3 scripts/dev.py example   # run the example app against the embedded ZITADEL stand-in
    python3 scripts/dev.py lint      # ruff check, ruff format --check, mypy --strict

The virtual environment is reinstalled only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed-pyproject-sha256"


def run(*command: str | Path) -> None:
    print("+", " ".join(str(part) for part in command), flush=True)
    completed = subprocess.run([str(part) for part in command], cwd=ROOT, check=False)  # noqa: S603
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def ensure_environment() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", ".[dev]")
    STAMP.write_text(wanted)


def main() -> None:
    task, *extra = sys.argv[1:] or ["test"]
    ensure_environment()
    if task == "test":
        run(PYTHON, "-m", "pytest", *extra)
    elif task == "lint":
        run(PYTHON, "-m", "ruff", "check", ".")
        run(PYTHON, "-m", "ruff", "format", "--check", ".")
        run(PYTHON, "-m", "mypy", "--strict", "fastapi_zitadel", "example_app", "tests", "bench")
    elif task == "example":
        run(PYTHON, "-m", "example_app", *extra)
    elif task == "setup":
        pass
    else:
        sys.exit(f"unknown task {task!r}: use test, lint, example or setup")


if __name__ == "__main__":
    main()
