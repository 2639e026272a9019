"""A user's own test suite in a fresh pytest process, in an empty project configured only with
the one line the testing page documents for each way of running async tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# pytest-asyncio warns until this is set; it is its own advice, not ours.
LOOP_SCOPE = 'asyncio_default_fixture_loop_scope = "function"\n'

MODES = {
    # mode: (the marker line in the tests, pyproject.toml's pytest section, extra arguments)
    "strict": ("@pytest.mark.asyncio", "", []),
    "auto": ("", 'asyncio_mode = "auto"\n', []),
    "anyio": ("@pytest.mark.anyio", "", []),
    "anyio-without-pytest-asyncio": ("@pytest.mark.anyio", "", ["-p", "no:asyncio"]),
}


def run_user_suite(
    tmp_path: Path, mode: str, modules: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """One pytest process over ``modules`` (a test module's name and its body, whose
    ``{marker}`` is the mode's marker line): one process serves every module of a mode."""
    marker, ini, extra = MODES[mode]
    for name, body in modules.items():
        (tmp_path / f"{name}.py").write_text("import pytest\n" + body.format(marker=marker))
    ini_text = (
        "[tool.pytest.ini_options]\n"
        + ini
        + LOOP_SCOPE
        # An unclosed connection (a fixture closed in another event loop than the test's)
        # shows up as an unraisable ResourceWarning: fail the run on it.
        + 'filterwarnings = ["error::pytest.PytestUnraisableExceptionWarning"]\n'
    )
    if "no:asyncio" in extra:  # the setting belongs to pytest-asyncio, unknown without it
        ini_text = ini_text.replace(LOOP_SCOPE, "")
    (tmp_path / "pyproject.toml").write_text(ini_text)
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
