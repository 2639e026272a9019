#!/usr/bin/env python3
"""Build the sdist and the wheel, install the **wheel** into a fresh virtual environment, and
use it as a user would, so that a packaging mistake fails CI:

1. ``python -m build`` makes the sdist, then the wheel from the sdist (a file missing from the
   sdist breaks the wheel build).
2. The wheel's contents: every module of ``fastapi_zitadel``, both ``py.typed`` markers, the
   console scripts and the pytest plugin's entry point; no tests, no example.
3. A fresh venv gets ``fastapi-zitadel[testing]`` from the wheel (and pytest). From a folder
   outside the checkout, so nothing is imported from it:
   - the example's smoke mode (``python -m example_app --smoke``: HTTP and WebSocket, the
     example's files copied next to it; the library comes from the wheel);
   - ``fastapi-zitadel-standin`` started in the background, then ``fastapi-zitadel check`` and
     ``fastapi-zitadel introspect`` against it with the variables and a token it printed;
   - a user's test file using the plugin's fixtures, run by pytest.

    .venv/bin/python scripts/check_wheel.py      # needs `build` (in the dev extra)

Exits 0 when all of it works, 1 with the failures listed otherwise.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import venv
import zipfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "fastapi_zitadel"
CONSOLE_SCRIPTS = {"fastapi-zitadel", "fastapi-zitadel-standin"}

USER_TEST = """
from fastapi import Depends, FastAPI
from starlette.testclient import TestClient

from fastapi_zitadel import ZitadelIntrospection


def test_plugin_fixtures_from_the_wheel(zitadel_env, zitadel_token):
    zitadel = ZitadelIntrospection.from_env()
    app = FastAPI()
    zitadel.install(app)

    @app.get("/items", dependencies=[Depends(zitadel.require_role("reader"))])
    async def items():
        return ["apple"]

    headers = {"Authorization": "Bearer " + zitadel_token("bob", roles=["reader"])}
    with TestClient(app) as client:
        assert client.get("/items", headers=headers).json() == ["apple"]
        assert client.get("/items").status_code == 401
"""


def wheel_problems(wheel: Path, package_dir: Path = ROOT / PACKAGE) -> list[str]:
    """What is wrong with the wheel's contents (an empty list when nothing is)."""
    problems = []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
        entries = archive.read(entry_points).decode() if entry_points else ""
    for module in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in module.parts:
            continue
        name = module.relative_to(package_dir.parent).as_posix()
        if name not in names:
            problems.append(f"missing module {name}")
    for marker in (f"{PACKAGE}/py.typed", f"{PACKAGE}/testing/py.typed"):
        if marker not in names:
            problems.append(f"missing {marker} (type information for users)")
    if entry_points is None:
        problems.append("no entry_points.txt: no console scripts, no pytest plugin")
    sections = _sections(entries)
    for script in sorted(CONSOLE_SCRIPTS - set(sections.get("console_scripts", {}))):
        problems.append(f"missing console script {script}")
    if sections.get("pytest11", {}).get(PACKAGE) != f"{PACKAGE}.testing.pytest_plugin":
        problems.append("missing the pytest11 entry point of the fixtures")
    strays = sorted({n.split("/")[0] for n in names} & {"tests", "example_app", "scripts"})
    problems.extend(f"{stray}/ should not be in the wheel" for stray in strays)
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("missing the LICENSE (Apache-2.0) in .dist-info/licenses/")
    return problems


def sdist_problems(sdist: Path) -> list[str]:
    """What is missing from the source distribution (an empty list when nothing is)."""
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[-1] for name in archive.getnames()}
    return [
        f"missing {name}"
        for name in ("LICENSE", "pyproject.toml", "README.md")
        if name not in names
    ]


def _sections(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line:
            name, _, value = line.partition("=")
            current[name.strip()] = value.strip()
    return sections


class Check:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def run(
        self, what: str, command: Sequence[str | Path], *, expect: str = "", **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        print(f"--- {what}: {' '.join(shlex.quote(str(part)) for part in command)}", flush=True)
        completed = subprocess.run(  # noqa: S603 - our own tools
            [str(part) for part in command],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            **kwargs,  # type: ignore[call-overload]
        )
        output = completed.stdout + completed.stderr
        ok = completed.returncode == 0 and expect in output
        print(("ok" if ok else "FAILED") + f" (exit {completed.returncode})", flush=True)
        if not ok:
            print(output[-4000:], flush=True)
            self.failures.append(what)
        return completed

    def require(self, what: str, condition: bool, detail: str = "") -> None:
        print(f"--- {what}: {'ok' if condition else 'FAILED ' + detail}", flush=True)
        if not condition:
            self.failures.append(what)


def main() -> int:
    check = Check()
    with tempfile.TemporaryDirectory(prefix="fastapi-zitadel-wheel-") as scratch:
        work = Path(scratch)
        dist = work / "dist"
        check.run("build sdist and wheel", [sys.executable, "-m", "build", "--outdir", dist, ROOT])
        wheels = sorted(dist.glob("*.whl"))
        sdists = sorted(dist.glob("*.tar.gz"))
        check.require("one wheel and one sdist", len(wheels) == 1 and len(sdists) == 1)
        if check.failures:
            return report(check)
        problems = wheel_problems(wheels[0])
        check.require("wheel contents", not problems, "; ".join(problems))
        problems = sdist_problems(sdists[0])
        check.require("sdist contents", not problems, "; ".join(problems))

        env_dir = work / "venv"
        venv.EnvBuilder(with_pip=True).create(env_dir)
        bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
        python = bin_dir / "python"
        pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
        pins = ["-c", ROOT / "constraints" / "dev.txt"]  # the versions CI passes with
        check.run(
            "install the wheel with [testing]", [*pip, "install", *pins, f"{wheels[0]}[testing]"]
        )
        check.run("install pytest", [*pip, "install", *pins, "pytest"])

        # Outside the checkout, with nothing of it on the path but the example's own files.
        user = work / "user"
        shutil.copytree(ROOT / "example_app", user / "example_app")
        clean_env = {
            "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin",
            "HOME": str(work),
        }
        check.run(
            "the library comes from the wheel",
            [python, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"],
            expect=str(env_dir),
            cwd=user,
            env=clean_env,
        )
        check.run(
            "example smoke mode (HTTP and WebSocket)",
            [python, "-m", "example_app", "--smoke"],
            expect="WebSocket /ws as admin: {'welcome': 'alice'}",
            cwd=user,
            env=clean_env,
        )
        check.run("fastapi-zitadel --help", [bin_dir / "fastapi-zitadel", "--help"], env=clean_env)
        standin_checks(check, bin_dir, work, user, clean_env)
        (user / "test_user.py").write_text(USER_TEST)
        check.run(
            "pytest plugin fixtures",
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
            expect="1 passed",
            cwd=user,
            env=clean_env,
        )
    return report(check)


def standin_checks(check: Check, bin_dir: Path, work: Path, cwd: Path, env: dict[str, str]) -> None:
    """``fastapi-zitadel check`` and ``introspect`` against the wheel's stand-in command."""
    command = [bin_dir / "fastapi-zitadel-standin", "--state-dir", work / "standin"]
    print(f"--- start {' '.join(map(str, command))}", flush=True)
    process = subprocess.Popen(  # noqa: S603 - our own tool
        [str(part) for part in command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )
    assert process.stdout is not None
    printed: list[str] = []
    try:
        while not printed or printed[-1] != "serving until Ctrl-C":
            line = process.stdout.readline()
            if not line:
                break
            printed.append(line.rstrip("\n"))
        check.require("stand-in started", bool(printed) and printed[-1] == "serving until Ctrl-C")
        exports = {}
        for line in printed:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                exports[name] = shlex.split(value)[0]
        token = next(
            (line.rsplit(": ", 1)[1] for line in printed if line.startswith("token for bob ")), ""
        )
        with_standin = {**env, **exports}
        cli = bin_dir / "fastapi-zitadel"
        check.run(
            "fastapi-zitadel check", [cli, "check"], expect="all checks passed", env=with_standin
        )
        check.run(  # the token on stdin: it is not shown in the log with the command
            "fastapi-zitadel introspect (a printed token)",
            [cli, "introspect", "-"],
            expect="verdict       active",
            env=with_standin,
            input=token + "\n",
        )
        # The printed service user, as a caller of the API: its secret from the environment.
        service = next((line for line in printed if line.startswith("service user ")), "")
        client_id = service.partition("client id ")[2].partition(",")[0]
        secret = service.partition("client secret ")[2].strip()
        check.run(
            "fastapi-zitadel token (the printed service user)",
            [cli, "token", "--client-id", client_id, "--project-id", exports["ZITADEL_PROJECT_ID"]],
            expect=f"[ok] token of service user {client_id}",
            env={**with_standin, "ZITADEL_CLIENT_SECRET": secret},
        )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def report(check: Check) -> int:
    if check.failures:
        print("\nwheel check FAILED: " + ", ".join(check.failures))
        return 1
    print("\nwheel check passed: the built wheel installs and works")
    return 0


if __name__ == "__main__":
    sys.exit(main())
