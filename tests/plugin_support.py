"""A user's own test suite in a fresh pytest process, in an empty project configured only with
the one line the testing page documents for each way of running async tests."""

from __future__ import annotations

import subprocess
import sys
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


def run_user_suite(tmp_path: Path, mode: str, body: str) -> subprocess.CompletedProcess[str]:
    marker, ini, extra = MODES[mode]
    test_file = "import pytest\n" + body.format(marker=marker)
    (tmp_path / "test_user.py").write_text(test_file)
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
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
