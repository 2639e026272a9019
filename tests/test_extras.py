"""The optional extras: each missing one is one line naming it (and how to install it from a
clone or a wheel, the package not being on PyPI yet); nothing optional is imported before it
is used."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastapi_zitadel import ConfigurationError
from fastapi_zitadel.cache import RedisCache

ROOT = Path(__file__).resolve().parent.parent

# Runs a module with the named top-level packages made unimportable, as without the extra.
WITHOUT = """
import runpy, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
module = sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_without(packages: str, module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and modules
        [sys.executable, "-c", WITHOUT, packages, module, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def says_how_to_install(text: str, extra: str) -> bool:
    return f"'.[{extra}]'" in text and f".whl[{extra}]'" in text


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("module", "argv", "prog"),
    [
        ("fastapi_zitadel", ["dev-issuer", "--port", "0"], "fastapi-zitadel dev-issuer"),
        ("fastapi_zitadel.testing", ["--port", "0"], "fastapi-zitadel-standin"),
    ],
    ids=["dev-issuer", "standin"],
)
def test_the_standin_command_without_the_testing_extra_is_one_line(
    module: str, argv: list[str], prog: str
) -> None:
    completed = run_without("uvicorn,websockets", module, *argv)
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(f"{prog}: serving on a port needs uvicorn, the 'testing' extra")
    assert says_how_to_install(lines[0], "testing")
    assert completed.stdout == ""


def test_importing_the_mcp_kit_without_the_sdk_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ["mcp", *(name for name in sys.modules if name.startswith("mcp."))]:
        monkeypatch.setitem(sys.modules, name, None)  # as if never installed
    monkeypatch.delitem(sys.modules, "fastapi_zitadel.mcp", raising=False)
    with pytest.raises(ImportError) as missing:
        importlib.import_module("fastapi_zitadel.mcp")
    message = str(missing.value)
    assert message.startswith("fastapi_zitadel.mcp needs the MCP SDK, the 'mcp' extra")
    assert says_how_to_install(message, "mcp")
    assert "\n" not in message


def test_a_redis_tier_without_the_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["redis", *(name for name in sys.modules if name.startswith("redis."))]:
        monkeypatch.setitem(sys.modules, name, None)  # as if never installed
    with pytest.raises(ConfigurationError) as missing:
        RedisCache("redis://127.0.0.1:6379/0")
    assert "redis_url needs the redis client, the 'redis' extra" in str(missing.value)
    assert says_how_to_install(str(missing.value), "redis")


@pytest.mark.subprocess
def test_importing_the_package_does_not_import_redis() -> None:
    """redis.asyncio costs 0.1 to 0.17 s at start-up: paid only when a Redis tier is made."""
    code = (
        "import sys, fastapi_zitadel; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'redis'))"
    )
    completed = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert completed.stdout.strip() == "[]"


HINT_FILES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted((ROOT / "docs").rglob("*.py")),
    *sorted((ROOT / "fastapi_zitadel").rglob("*.py")),
    *sorted((ROOT / "example_app").rglob("*.py")),
]


def test_every_install_hint_says_how_from_a_clone_or_a_wheel() -> None:
    """Until the package is on an index, `pip install 'fastapi-zitadel[x]'` alone fails: each
    place that names one also names the clone's and the wheel's way."""
    bare = []
    for path in HINT_FILES:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"fastapi-zitadel\[(\w+)\]", text):
            around = text[max(0, match.start() - 400) : match.end() + 100]
            if not says_how_to_install(around, match[1]):
                line = text.count("\n", 0, match.start()) + 1
                bare.append(f"{path.relative_to(ROOT)}:{line}")
    assert not bare, bare


def test_the_extras_table_lists_every_extra() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = re.findall(r"^(\w+) = ", section, flags=re.MULTILINE)
    assert "mcp" in extras
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert [extra for extra in extras if f"| `{extra}` |" not in readme] == []
    assert [extra for extra in extras if f"`{extra}` (" not in index] == []
