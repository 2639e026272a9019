"""scripts/dev.py decides what to install: the example's first run installs only the package
with its ``testing`` extra (no test or lint tools), ``test`` installs ``.[dev]`` directly, and
nothing is reinstalled while pyproject.toml is unchanged and the installed extra covers the
task. Run against a copy of the script's world in ``tmp_path``, with the commands recorded
instead of run."""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


class DevScript:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.module: dict[str, Any] = runpy.run_path(str(ROOT / "scripts" / "dev.py"))
        self.commands: list[list[str]] = []
        venv_dir = root / ".venv"
        python = venv_dir / "bin" / "python"
        main = self.module["main"]
        globals_ = main.__globals__  # the functions' own namespace
        monkeypatch.setitem(globals_, "ROOT", root)
        monkeypatch.setitem(globals_, "VENV", venv_dir)
        monkeypatch.setitem(globals_, "PYTHON", python)
        monkeypatch.setitem(globals_, "STAMP", venv_dir / ".installed.json")
        monkeypatch.setitem(globals_, "OLD_STAMP", venv_dir / ".installed-pyproject-sha256")
        monkeypatch.setitem(globals_, "PINS", root / "constraints" / "dev.txt")
        site = venv_dir / "lib" / "site-packages"
        monkeypatch.setitem(globals_, "site_packages", lambda: site)
        self.pth = site / self.module["CHECKOUT_PTH"]

        class FakeEnvBuilder:
            def __init__(self, **_: Any) -> None:
                pass

            def create(self, path: Path) -> None:
                python.parent.mkdir(parents=True)
                python.write_text("")
                site.mkdir(parents=True)

        class FakeVenv:
            EnvBuilder = FakeEnvBuilder

        monkeypatch.setitem(globals_, "venv", FakeVenv)
        monkeypatch.setitem(globals_, "run", lambda *cmd: self.commands.append(list(map(str, cmd))))
        self._main = main

    def __call__(self, *argv: str) -> list[list[str]]:
        self.commands.clear()
        self._main(list(argv))
        return list(self.commands)


def installs(commands: list[list[str]]) -> list[str]:
    """What each pip install among ``commands`` installs: ``pip`` (the upgrade), an editable
    ``.[extra]``, or ``requirements`` (a list of requirement specifiers)."""
    found = []
    for cmd in commands:
        if "install" not in cmd:
            continue
        if "--upgrade" in cmd:
            found.append(cmd[-1])
        elif "-e" in cmd:
            found.append(cmd[cmd.index("-e") + 1])
        else:
            found.append("requirements")
    return found


def requirements_installed(commands: list[list[str]]) -> set[str]:
    (command,) = (cmd for cmd in commands if "install" in cmd and "--upgrade" not in cmd)
    words = command[command.index("--quiet") + 1 :]
    if words[0] == "-c":
        words = words[2:]  # the pins
    return {word.split(">")[0].split("[")[0] for word in words}


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DevScript:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "constraints", tmp_path / "constraints")
    return DevScript(tmp_path, monkeypatch)


def test_first_example_installs_only_the_testing_extra(dev: DevScript) -> None:
    commands = dev("example", "--smoke")
    assert installs(commands) == ["pip", "requirements"]  # no .[dev], no build
    installed = requirements_installed(commands)
    assert {"fastapi", "httpx", "uvicorn", "websockets"} <= installed
    assert not {"pytest", "mypy", "ruff", "playwright", "mkdocs-material"} & installed
    assert dev.pth.read_text().strip() == str(dev.root)  # the checkout is importable
    assert commands[-1][-3:] == ["-m", "example_app", "--smoke"]
    assert dev("example") == [[str(dev.root / ".venv/bin/python"), "-m", "example_app"]]


def test_test_after_example_adds_the_dev_tools_once(dev: DevScript) -> None:
    dev("example")
    commands = dev("test", "-q")
    assert installs(commands) == ["pip", ".[dev]"]
    assert not dev.pth.exists()  # the editable install replaces the .pth file
    assert commands[-1][-4:] == ["-m", "pytest", "-rs", "-q"]
    assert installs(dev("test")) == []
    assert installs(dev("example")) == []  # .[dev] includes what the example needs


def test_fresh_test_installs_dev_directly(dev: DevScript) -> None:
    assert installs(dev("test")) == ["pip", ".[dev]"]  # not .[testing] first: no slower


def test_changed_pyproject_reinstalls_keeping_the_bigger_extra(dev: DevScript) -> None:
    dev("lint")
    (dev.root / "pyproject.toml").write_text(
        (dev.root / "pyproject.toml").read_text() + "\n# changed\n"
    )
    assert installs(dev("example")) == ["pip", ".[dev]"]


def test_python_without_tomllib_uses_an_editable_install(
    dev: DevScript, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(dev.module["main"].__globals__, "lean_requirements", lambda _: None)
    assert installs(dev("example")) == ["pip", ".[testing]"]


def test_old_stamp_counts_as_dev(dev: DevScript) -> None:

    python = dev.root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    digest = dev.module["main"].__globals__["digest"]()  # pyproject.toml and the pins
    (dev.root / ".venv" / ".installed-pyproject-sha256").write_text(digest)
    assert installs(dev("test")) == []


def test_unknown_task(dev: DevScript) -> None:
    with pytest.raises(SystemExit, match="unknown task 'deploy'"):
        dev("deploy")


def test_every_install_is_pinned(dev: DevScript) -> None:
    pins = str(dev.root / "constraints" / "dev.txt")
    for task in ("example", "test"):
        commands = [cmd for cmd in dev(task) if "install" in cmd]
        assert commands, task
        for command in commands:
            assert command[command.index("-c") + 1] == pins, command


def test_changed_pins_reinstall(dev: DevScript) -> None:
    dev("test")
    assert installs(dev("test")) == []
    pins = dev.root / "constraints" / "dev.txt"
    pins.write_text(pins.read_text() + "# changed\n")
    assert installs(dev("test")) == ["pip", ".[dev]"]


def test_fast_leaves_the_slow_markers_out_and_every_run_says_why_it_skipped(
    dev: DevScript,
) -> None:
    full = dev("test", "-q")[-1]
    assert full[-4:] == ["-m", "pytest", "-rs", "-q"]
    fast = dev("test", "--fast", "-x")[-1]
    assert "--fast" not in fast
    selection = fast[fast.index("-m", fast.index("pytest")) + 1]
    markers = set(dev.module["SLOW_MARKERS"])
    assert selection == " and ".join(f"not {marker}" for marker in dev.module["SLOW_MARKERS"])
    assert markers == {
        "redis",
        "browser",
        "interop",
        "soak",
        "subprocess",
        "hypothesis",
        "loopback",
    }
    registered = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert all(f'"{marker}: ' in registered for marker in markers)
    assert fast[-1] == "-x"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonical(name)] = version
    return pins


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_the_pins_are_what_dev_py_installed() -> None:
    """This suite runs in the .venv dev.py made: every package in it is the pinned version,
    and nothing is in it unpinned (but the package itself and the venv's own setuptools)."""
    from importlib import metadata

    pins = _pins(ROOT / "constraints" / "dev.txt")
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    if "mypy" not in installed:
        pytest.skip("not the development environment (a compat venv): its pins differ")
    wrong = {
        name: (have, pins.get(name)) for name, have in installed.items() if pins.get(name) != have
    }
    assert set(wrong) <= {"fastapi-zitadel", "setuptools", "wheel"}, wrong


def test_the_floors_are_pinned_and_match_pyproject() -> None:
    """constraints/oldest.txt holds oldest.in's floors exactly, and each floor is the lower
    bound pyproject.toml declares, so the range it promises is the range CI tests."""
    floors = _pins(ROOT / "constraints" / "oldest.in")
    resolved = _pins(ROOT / "constraints" / "oldest.txt")
    assert {name: resolved.get(name) for name in floors} == floors
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = {}
    for line in pyproject.splitlines():
        stripped = line.strip().strip(",").strip('"')
        if ">=" in stripped and not stripped.startswith(("requires", "#")):
            name, floor = stripped.split(">=", 1)
            declared[canonical(name.split("[")[0])] = floor.split(",")[0]
    from packaging.version import Version

    assert set(floors) - {"opentelemetry-sdk"} <= set(declared), set(floors) - set(declared)
    for name, floor in floors.items():
        if name in declared:
            assert Version(floor) == Version(declared[name]), (name, floor, declared[name])


def test_testing_extra_is_lean() -> None:
    """The example's extra holds what the example and the stand-in need, no dev tools."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    testing = pyproject.split("\ntesting = [", 1)[1].split("]", 1)[0]
    names = {part.strip().strip('"').split(">")[0].split("[")[0] for part in testing.split(",")}
    assert names == {"uvicorn", "websockets"}


def test_the_readme_states_the_tested_range() -> None:
    """README's table of supported versions names the floors and the pins CI tests."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Supported versions", 1)[1].split("\n\n", 2)[1]
    rows: dict[str, tuple[str, str]] = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        names = [name.split(" (")[0].strip() for name in cells[0].split(",")]
        oldests = [v.split(" (")[0].strip() for v in cells[1].split(",")]
        newests = [v.strip() for v in cells[2].split(",")]
        for name, oldest, newest in zip(names, oldests, newests, strict=True):
            rows[canonical(name)] = (oldest, newest)
    floors = _pins(ROOT / "constraints" / "oldest.in")
    pins = _pins(ROOT / "constraints" / "dev.txt")
    assert rows.pop("python") == ("3.10", "3.13")
    assert len(rows) >= 7, rows
    for name, (oldest, newest) in rows.items():
        assert (oldest, newest) == (floors[name], pins[name]), name
