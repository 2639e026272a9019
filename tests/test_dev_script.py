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
    return {word.split(">")[0].split("[")[0] for word in command[command.index("--quiet") + 1 :]}


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DevScript:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
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
    assert commands[-1][-3:] == ["-m", "pytest", "-q"]
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
    import hashlib

    python = dev.root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    digest = hashlib.sha256((dev.root / "pyproject.toml").read_bytes()).hexdigest()
    (dev.root / ".venv" / ".installed-pyproject-sha256").write_text(digest)
    assert installs(dev("test")) == []


def test_unknown_task(dev: DevScript) -> None:
    with pytest.raises(SystemExit, match="unknown task 'deploy'"):
        dev("deploy")


def test_testing_extra_is_lean() -> None:
    """The example's extra holds what the example and the stand-in need, no dev tools."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    testing = pyproject.split("\ntesting = [", 1)[1].split("]", 1)[0]
    names = {part.strip().strip('"').split(">")[0].split("[")[0] for part in testing.split(",")}
    assert names == {"uvicorn", "websockets"}
