"""The stand-in's private keys do not outlive the run that made them (0600 while they exist):
the project object, the example app and the stand-in's command line remove what they wrote."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fastapi_zitadel.testing import StandInProject, ZitadelStandIn

pytestmark = pytest.mark.subprocess  # commands and servers in processes of their own

ROOT = Path(__file__).resolve().parent.parent


def _leftovers(folder: Path) -> list[Path]:
    return sorted(folder.glob("fastapi-zitadel-standin-*"))


def test_a_project_removes_the_key_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR read afresh
    with StandInProject(ZitadelStandIn()) as project:
        mode = stat.S_IMODE(project.key_path.stat().st_mode)
        assert mode == 0o600
        assert _leftovers(tmp_path)
    assert not project.key_path.exists()
    assert not _leftovers(tmp_path)
    given = tmp_path / "mine"
    given.mkdir()
    with StandInProject(ZitadelStandIn(), key_dir=given) as kept:
        pass
    assert kept.key_path.exists()  # a folder the caller gave is the caller's


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZITADEL_")}
    env["TMPDIR"] = str(tmp_path)
    return env


def test_the_example_leaves_no_key_behind(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "example_app", "--smoke"],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_the_standin_command_line_leaves_no_key_behind(tmp_path: Path, stop: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "fastapi_zitadel.testing", "--port", "0"],
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            if line.strip() == "serving until Ctrl-C":
                break
        else:
            pytest.fail("the stand-in stopped before serving")
        assert _leftovers(tmp_path)  # its key file exists while it serves
    finally:
        process.send_signal(stop)
        process.communicate(timeout=20)
    assert not _leftovers(tmp_path)
