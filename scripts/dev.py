#!/usr/bin/env python3
"""One entry point for developers and CI, needing nothing but Python 3.10+ and git.

    python3 scripts/dev.py test          # create .venv, install .[dev], run the whole test suite
    python3 scripts/dev.py test --fast   # the unit tests only (no Redis, browser, interop,
                                         # subprocess, uvicorn, soak or hypothesis-heavy tests)
    python3 scripts/dev.py example       # run the example app against the embedded stand-in
    python3 scripts/dev.py lint          # ruff check, ruff format --check, mypy --strict
    python3 scripts/dev.py compat oldest # the core tests on the oldest supported versions
    python3 scripts/dev.py compat newest # ... and on the newest, each in a venv of its own
    python3 scripts/dev.py lock          # refresh the pins in constraints/ (a commit of its own)

Every install is pinned: ``constraints/dev.txt`` holds the version of every package the
development environment has (tools, test libraries and the runtime dependencies), as CI last
passed with them, so CI's verdict does not depend on the day it runs. A user's ``pip install``
of the library stays unpinned: pyproject.toml holds ranges, whose floors
``constraints/oldest.txt`` pins and ``compat oldest`` tests, and whose newest releases
``lock`` moves ``dev.txt`` to.

``example`` needs only the package and its ``testing`` extra, so on a fresh clone it installs
just those (no test or lint tools): their requirements, and the checkout on the path through a
``.pth`` file rather than a build of the package (the example needs no entry points; on Python
3.10, which has no ``tomllib`` to read the requirements with, an editable install instead).
``test``, ``lint`` and ``setup`` install ``-e .[dev]``, which includes everything. The virtual
environment is reinstalled only when pyproject.toml or the pins change, or when a task needs
more than what is installed.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
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
CONSTRAINTS = ROOT / "constraints"
PINS = CONSTRAINTS / "dev.txt"  # every package of .venv, pinned
OLDEST_IN = CONSTRAINTS / "oldest.in"  # the floors, written by hand with their reasons
OLDEST = CONSTRAINTS / "oldest.txt"  # the floors resolved with the test tools, pinned

# Each extra installs everything the ones before it do.
EXTRAS = ("testing", "dev")
TASK_EXTRA = {"example": "testing", "test": "dev", "lint": "dev", "setup": "dev"}
TASKS = (*TASK_EXTRA, "compat", "lock")

# What makes a test slow (the markers pyproject.toml registers); `test --fast` leaves them out.
SLOW_MARKERS = ("redis", "browser", "interop", "soak", "subprocess", "hypothesis", "loopback")
# Every run says why each test was skipped (-rs), so a skipped browser test tells its reason.
PYTEST = ("-m", "pytest", "-rs")

# The compatibility job: the modules that exercise the FastAPI, Starlette and pydantic surface
# (dependencies, OpenAPI, middleware, settings, the pipeline over real HTTP), not the whole
# suite; and the test tools they need beyond the package's runtime and testing extra.
CORE_TESTS = (
    "tests/test_compat.py",
    "tests/test_fastapi.py",
    "tests/test_openapi.py",
    "tests/test_middleware.py",
    "tests/test_default_instance.py",
    "tests/test_config.py",
    "tests/test_principal_construct.py",
    "tests/test_introspection.py",
    "tests/test_cache.py",
    "tests/test_jwt_local.py",
    "tests/test_loopback.py",
    "tests/test_service_account.py",
)
CORE_TEST_TOOLS = (
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "hypothesis",
    "openapi-spec-validator",
    "redis",
)
COMPAT_PYTHONS = {"oldest": ("3.10",), "newest": ("3.14", "3.13", "3.12", "3.11")}


def run(*command: str | Path) -> None:
    print("+", " ".join(str(part) for part in command), flush=True)
    completed = subprocess.run([str(part) for part in command], cwd=ROOT, check=False)  # noqa: S603
    if completed.returncode != 0:
        sys.exit(completed.returncode)


def digest() -> str:
    """What the installed environment was made from: pyproject.toml and the pins."""
    sha = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    if PINS.exists():
        sha.update(PINS.read_bytes())
    return sha.hexdigest()


def installed() -> tuple[str, str] | None:
    """(digest, extra) of what .venv holds, or ``None``."""
    if not PYTHON.exists():
        return None
    if STAMP.exists():
        stamp = json.loads(STAMP.read_text())
        return stamp["pyproject"], stamp["extra"]
    if OLD_STAMP.exists():
        return OLD_STAMP.read_text().strip(), "dev"
    return None


def pip(python: Path) -> tuple[str | Path, ...]:
    return (python, "-m", "pip", "--disable-pip-version-check", "--no-input")


def pinned() -> tuple[str, ...]:
    """pip's arguments that hold an install to the pins (none when the file is missing)."""
    return ("-c", str(PINS)) if PINS.exists() else ()


def ensure_environment(extra: str) -> None:
    """Make .venv hold the package with ``extra`` (or more) for this pyproject.toml."""
    wanted = digest()
    have = installed()
    if have is not None:
        have_digest, have_extra = have
        if EXTRAS.index(have_extra) > EXTRAS.index(extra):
            extra = have_extra  # keep what a developer's .venv already has
        if have_digest == wanted and have_extra == extra:
            return
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    install = (*pip(PYTHON), "install", "--quiet", *pinned())
    run(*install, "--upgrade", "pip")  # a newer pip resolves faster
    checkout_pth = site_packages() / CHECKOUT_PTH
    requirements = None if extra == "dev" else lean_requirements(extra)
    if requirements is None:
        checkout_pth.unlink(missing_ok=True)  # the editable install takes over
        run(*install, "-e", f".[{extra}]")
    else:
        run(*install, *requirements)
        checkout_pth.write_text(f"{ROOT}\n")
    OLD_STAMP.unlink(missing_ok=True)
    STAMP.write_text(json.dumps({"pyproject": wanted, "extra": extra}))


def project_table() -> dict[str, object] | None:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return None
    table: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"
    ]
    return table


def lean_requirements(extra: str) -> list[str] | None:
    """The package's requirements with ``extra``'s, or ``None`` without ``tomllib``."""
    project = project_table()
    if project is None:
        return None
    dependencies = project["dependencies"]
    extras = project["optional-dependencies"]
    assert isinstance(dependencies, list)
    assert isinstance(extras, dict)
    return [*dependencies, *extras[extra]]


def site_packages(env: Path = VENV) -> Path:
    """A virtual environment's site-packages (made by this interpreter, so same layout)."""
    paths = {"base": str(env), "platbase": str(env)}
    scheme = "venv" if "venv" in sysconfig.get_scheme_names() else None
    return Path(sysconfig.get_path("purelib", scheme, vars=paths))


def find_python(versions: Sequence[str]) -> Path | None:
    """The first CPython of ``versions`` on PATH or under pyenv, newest wanted first (a
    candidate counts only if it runs: a pyenv shim for a version not selected fails)."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for version in versions:
        candidates = [shutil.which(f"python{version}")]
        candidates += sorted(glob.glob(str(root / "versions" / f"{version}.*" / "bin" / "python3")))
        for candidate in filter(None, candidates):
            probe = subprocess.run(  # noqa: S603 - an interpreter asked for its version
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.returncode == 0 and probe.stdout.strip() == version:
                return Path(candidate)
    return None


def compat(which: str, pytest_args: Sequence[str]) -> None:
    """The core tests in a virtual environment of their own, on the oldest supported set
    (Python 3.10, constraints/oldest.txt) or the newest (the newest Python here, dev.txt)."""
    if which not in COMPAT_PYTHONS:
        sys.exit(f"compat takes 'oldest' or 'newest', not {which!r}")
    python = find_python(COMPAT_PYTHONS[which])
    if python is None:
        sys.exit(
            f"compat {which}: no Python {' or '.join(COMPAT_PYTHONS[which])} found on PATH or "
            "under ~/.pyenv/versions; install one (pyenv install 3.10) and run again"
        )
    env = ROOT / f".venv-{which}"
    env_python = env / "bin" / "python"
    if which == "oldest":
        requirements: tuple[str, ...] = ("-r", str(OLDEST))
    else:
        project = project_table()
        runtime = [] if project is None else (lean_requirements("testing") or [])
        requirements = (*pinned(), *runtime, *CORE_TEST_TOOLS)
    stamp = env / ".installed.json"
    wanted = hashlib.sha256((OLDEST if which == "oldest" else PINS).read_bytes())
    wanted.update((ROOT / "pyproject.toml").read_bytes())
    wanted.update(str(python).encode())
    if not (stamp.exists() and stamp.read_text() == wanted.hexdigest()):
        shutil.rmtree(env, ignore_errors=True)
        run(python, "-m", "venv", env)
        run(*pip(env_python), "install", "--quiet", *requirements)
        site = Path(
            subprocess.check_output(  # noqa: S603
                [str(env_python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                text=True,
            ).strip()
        )
        (site / CHECKOUT_PTH).write_text(f"{ROOT}\n")
        stamp.write_text(wanted.hexdigest())
    run(env_python, "-c", VERSIONS_REPORT)
    run(env_python, *PYTEST, "-p", "no:cacheprovider", "-q", *CORE_TESTS, *pytest_args)


VERSIONS_REPORT = (
    "import sys, importlib.metadata as m; print('Python ' + sys.version.split()[0], *("
    "f'{n} {m.version(n)}' for n in ('fastapi', 'starlette', 'pydantic', 'pydantic-settings',"
    " 'PyJWT', 'cryptography', 'httpx')), sep=', ')"
)


def lock() -> None:
    """Refresh the pins: the newest releases of everything .[dev] needs into dev.txt, and the
    floors of oldest.in with the test tools into oldest.txt. Commit the change on its own."""
    with tempfile.TemporaryDirectory() as work:
        fresh = Path(work) / "dev"
        venv.EnvBuilder(with_pip=True).create(fresh)
        python = fresh / "bin" / "python"
        run(*pip(python), "install", "--quiet", "--upgrade", "pip")
        run(*pip(python), "install", "--quiet", ".[dev]")
        write_pins(python, PINS, "python3 scripts/dev.py lock (the newest releases)")
        oldest_python = find_python(COMPAT_PYTHONS["oldest"])
        if oldest_python is None:
            sys.exit("lock: no Python 3.10 to resolve constraints/oldest.in with")
        old = Path(work) / "oldest"
        run(oldest_python, "-m", "venv", old)
        old_python = old / "bin" / "python"
        run(*pip(old_python), "install", "--quiet", "--upgrade", "pip")
        run(*pip(old_python), "install", "--quiet", "-r", OLDEST_IN, *CORE_TEST_TOOLS)
        write_pins(old_python, OLDEST, "python3 scripts/dev.py lock (from oldest.in)")


def write_pins(python: Path, target: Path, how: str) -> None:
    frozen = subprocess.check_output(  # noqa: S603
        [str(python), "-m", "pip", "freeze", "--all", "--exclude-editable"], text=True
    )
    keep = sorted(
        (line for line in frozen.splitlines() if line and not line.startswith("#")),
        key=str.lower,
    )
    keep = [
        line
        for line in keep
        if re.split(r"[=@ ]", line)[0].lower() not in {"fastapi-zitadel", "setuptools", "wheel"}
    ]
    version = subprocess.check_output(  # noqa: S603
        [str(python), "-c", "import sys; print(sys.version.split()[0])"], text=True
    ).strip()
    header = f"# Pinned by {how} on Python {version}. Change on purpose, in a commit of its own.\n"
    target.write_text(header + "\n".join(keep) + "\n")
    print(f"wrote {target.relative_to(ROOT)}: {len(keep)} pins", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    task, *extra = list(sys.argv[1:] if argv is None else argv) or ["test"]
    if task not in TASKS:
        sys.exit(f"unknown task {task!r}: use {', '.join(TASKS)}")
    if task == "lock":
        lock()
        return
    if task == "compat":
        which, *rest = extra or ["oldest"]
        compat(which, rest)
        return
    ensure_environment(TASK_EXTRA[task])
    if task == "test":
        if "--fast" in extra:
            extra = [arg for arg in extra if arg != "--fast"]
            extra = ["-m", " and ".join(f"not {marker}" for marker in SLOW_MARKERS), *extra]
        run(PYTHON, *PYTEST, *extra)
    elif task == "lint":
        run(PYTHON, "-m", "ruff", "check", ".")
        run(PYTHON, "-m", "ruff", "format", "--check", ".")
        run(PYTHON, "-m", "mypy", "--strict", "fastapi_zitadel", "example_app", "tests", "bench")
    elif task == "example":
        run(PYTHON, "-m", "example_app", *extra)


if __name__ == "__main__":
    main()
