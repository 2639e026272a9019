"""scripts/check_wheel.py's look at the wheel's contents catches each packaging mistake it is
there for (a missing module, a missing py.typed, a missing console script or pytest plugin
entry point, tests shipped in the wheel). CI runs the whole script on a real build
(``.ci/run``); here, wheels made by hand show that each mistake is reported."""

from __future__ import annotations

import runpy
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = runpy.run_path(str(ROOT / "scripts" / "check_wheel.py"))
wheel_problems: Callable[[Path], list[str]] = _SCRIPT["wheel_problems"]
sdist_problems: Callable[[Path], list[str]] = _SCRIPT["sdist_problems"]

ENTRY_POINTS = """[console_scripts]
fastapi-zitadel = fastapi_zitadel._cli:entry_point
fastapi-zitadel-standin = fastapi_zitadel.testing.__main__:main

[pytest11]
fastapi_zitadel = fastapi_zitadel.testing.pytest_plugin
"""


def complete_contents() -> dict[str, str]:
    package = ROOT / "fastapi_zitadel"
    files = {
        path.relative_to(ROOT).as_posix(): ""
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    files["fastapi_zitadel-0.1.0.dist-info/entry_points.txt"] = ENTRY_POINTS
    files["fastapi_zitadel-0.1.0.dist-info/licenses/LICENSE"] = "Apache License"
    return files


def make_wheel(tmp_path: Path, contents: dict[str, str]) -> Path:
    wheel = tmp_path / "fastapi_zitadel-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in contents.items():
            archive.writestr(name, text)
    return wheel


def test_a_complete_wheel_passes(tmp_path: Path) -> None:
    assert wheel_problems(make_wheel(tmp_path, complete_contents())) == []


@pytest.mark.parametrize(
    ("mistake", "reported"),
    [
        (
            "fastapi_zitadel/_pipeline/pipeline.py",
            "missing module fastapi_zitadel/_pipeline/pipeline.py",
        ),
        (
            "fastapi_zitadel/testing/_standin/login.py",
            "missing module fastapi_zitadel/testing/_standin/login.py",
        ),
        ("fastapi_zitadel/py.typed", "missing fastapi_zitadel/py.typed"),
        ("fastapi_zitadel/testing/py.typed", "missing fastapi_zitadel/testing/py.typed"),
        ("fastapi_zitadel-0.1.0.dist-info/entry_points.txt", "no entry_points.txt"),
        ("fastapi_zitadel-0.1.0.dist-info/licenses/LICENSE", "missing the LICENSE"),
    ],
)
def test_a_missing_file_is_reported(tmp_path: Path, mistake: str, reported: str) -> None:
    contents = complete_contents()
    del contents[mistake]
    problems = wheel_problems(make_wheel(tmp_path, contents))
    assert any(problem.startswith(reported) for problem in problems), problems


@pytest.mark.parametrize(
    ("line", "reported"),
    [
        ("fastapi-zitadel-standin = ", "missing console script fastapi-zitadel-standin"),
        ("fastapi_zitadel = fastapi_zitadel.testing", "missing the pytest11 entry point"),
    ],
)
def test_a_missing_entry_point_is_reported(tmp_path: Path, line: str, reported: str) -> None:
    contents = complete_contents()
    entry_points = "fastapi_zitadel-0.1.0.dist-info/entry_points.txt"
    contents[entry_points] = "\n".join(
        kept for kept in ENTRY_POINTS.splitlines() if not kept.startswith(line)
    )
    assert any(p.startswith(reported) for p in wheel_problems(make_wheel(tmp_path, contents)))


def test_tests_in_the_wheel_are_reported(tmp_path: Path) -> None:
    contents = {**complete_contents(), "tests/__init__.py": ""}
    assert wheel_problems(make_wheel(tmp_path, contents)) == ["tests/ should not be in the wheel"]


def test_ci_runs_the_wheel_check() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/check_wheel.py" in ci


def test_a_sdist_without_the_license_is_reported(tmp_path: Path) -> None:
    def sdist(*names: str) -> Path:
        path = tmp_path / f"sdist-{len(names)}.tar.gz"
        with tarfile.open(path, "w:gz") as archive:
            for name in names:
                source = tmp_path / name
                source.write_text(name)
                archive.add(source, arcname=f"fastapi_zitadel-0.1.0/{name}")
        return path

    assert sdist_problems(sdist("LICENSE", "pyproject.toml", "README.md")) == []
    assert sdist_problems(sdist("pyproject.toml", "README.md")) == ["missing LICENSE"]


def test_the_license_is_apache_2_and_the_package_says_so() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'license = "Apache-2.0"' in pyproject
    assert 'license-files = ["LICENSE"]' in pyproject
