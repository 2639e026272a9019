#!/usr/bin/env python3
"""One entry point for developers and CI, needing nothing but Python 3.10+ and git.

    python3 scripts/dev.py test      # create .venv, install .[dev], run the whole test suite
    python3 scripts/dev.py example   # run the example app against the embedded ZITADEL stand-in
    python3 scripts/dev.py lint      # ruff check, ruff format --check, mypy --strict

``example`` needs only the package and its ``testing`` extra, so on a fresh clone it installs
just those (no test or lint tools): their requirements, and the checkout on the path through a
``.pth`` file rather than a build of the package (the example needs no entry points; on Python
3.10, which has no ``tomllib`` to read the requirements with, an editable install instead).
``test``, ``lint`` and ``setup`` install ``-e .[dev]``, which includes everything. The virtual
environment is reinstalled only when pyproject.toml changes, or when a task needs more than
what is installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed.json"  # {"pyproject": sha256, "extra": "testing" | "dev"}
OLD_STAMP = VENV / ".installed-pyproject-sha256"  # written by earlier versions: .[dev]
CHECKOUT_PTH = "_fastapi_zitadel_checkout.pth"

# Each extra installs everything the ones before it do.
EXTRAS = ("testing", "dev")
TASK_EXTRA = {"example": "testing", "test": "dev", "lint": "dev", "setup": "dev"}


def run(*command: str | Path) -> None:
    print("+", " ".join(str(part) for part in command), flush=True)
    completed = subprocess.run([str(part) for part in command], cwd=ROOT, check=False)  # noqa: S603
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def installed() -> tuple[str, str] | None:
    """(pyproject digest, extra) of what .venv holds, or ``None``."""
    if not PYTHON.exists():
        return None
    if STAMP.exists():
        stamp = json.loads(STAMP.read_text())
        return stamp["pyproject"], stamp["extra"]
    if OLD_STAMP.exists():
        return OLD_STAMP.read_text().strip(), "dev"
    return None


def ensure_environment(extra: str) -> None:
    """Make .venv hold the package with ``extra`` (or more) for this pyproject.toml."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    have = installed()
    if have is not None:
        digest, have_extra = have
        if EXTRAS.index(have_extra) > EXTRAS.index(extra):
            extra = have_extra  # keep what a developer's .venv already has
        if digest == wanted and have_extra == extra:
            return
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = (PYTHON, "-m", "pip", "--disable-pip-version-check", "--no-input")
    run(*pip, "install", "--quiet", "--upgrade", "pip")  # a newer pip resolves faster
    checkout_pth = site_packages() / CHECKOUT_PTH
    requirements = None if extra == "dev" else lean_requirements(extra)
    if requirements is None:
        checkout_pth.unlink(missing_ok=True)  # the editable install takes over
        run(*pip, "install", "--quiet", "-e", f".[{extra}]")
    else:
        run(*pip, "install", "--quiet", *requirements)
        checkout_pth.write_text(f"{ROOT}\n")
    OLD_STAMP.unlink(missing_ok=True)
    STAMP.write_text(json.dumps({"pyproject": wanted, "extra": extra}))


def lean_requirements(extra: str) -> list[str] | None:
    """The package's requirements with ``extra``'s, or ``None`` without ``tomllib``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return None
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [*project["dependencies"], *project["optional-dependencies"][extra]]


def site_packages() -> Path:
    """The virtual environment's site-packages (made by this interpreter, so same layout)."""
    paths = {"base": str(VENV), "platbase": str(VENV)}
    scheme = "venv" if "venv" in sysconfig.get_scheme_names() else None
    return Path(sysconfig.get_path("purelib", scheme, vars=paths))


def main(argv: Sequence[str] | None = None) -> None:
    task, *extra = list(sys.argv[1:] if argv is None else argv) or ["test"]
    if task not in TASK_EXTRA:
        sys.exit(f"unknown task {task!r}: use test, lint, example or setup")
    ensure_environment(TASK_EXTRA[task])
    if task == "test":
        run(PYTHON, "-m", "pytest", *extra)
    elif task == "lint":
        run(PYTHON, "-m", "ruff", "check", ".")
        run(PYTHON, "-m", "ruff", "format", "--check", ".")
        run(PYTHON, "-m", "mypy", "--strict", "fastapi_zitadel", "example_app", "tests", "bench")
    elif task == "example":
        run(PYTHON, "-m", "example_app", *extra)


if __name__ == "__main__":
    main()
