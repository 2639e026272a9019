"""The pytest plugin's fixtures in a user's own test suite, under each way of running async
tests: pytest-asyncio's default strict mode, its auto mode, and anyio (with pytest-asyncio in
strict mode, and without pytest-asyncio at all). Each run is a fresh pytest process in an empty
project, configured only with the one line the testing page documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .plugin_support import MODES, run_user_suite

pytestmark = pytest.mark.subprocess  # commands and servers in processes of their own

ROOT = Path(__file__).resolve().parent.parent

# Every fixture of the plugin, used the way the testing page shows, in one async test.
BODY = """
import httpx
from fastapi import Depends, FastAPI

from fastapi_zitadel import ZitadelIntrospection


{marker}
async def test_every_fixture(
    zitadel_introspection, zitadel_token, zitadel_env, zitadel_project, zitadel_standin
):
    token = zitadel_token("bob", roles=["reader"])
    principal = await zitadel_introspection.verify(token)
    assert principal.has_role("reader")
    assert zitadel_env["ZITADEL_ISSUER"] == zitadel_standin.issuer
    assert zitadel_project.standin is zitadel_standin

    zitadel = ZitadelIntrospection.from_env()
    app = FastAPI()
    zitadel.install(app)

    @app.get("/items", dependencies=[Depends(zitadel.require_role("reader"))])
    async def items() -> list[str]:
        return ["apple"]

    transport = httpx.ASGITransport(app=app)
    async with zitadel, httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        headers = {{"Authorization": f"Bearer {{token}}"}}
        assert (await http.get("/items", headers=headers)).json() == ["apple"]
        assert (await http.get("/items")).status_code == 401


{marker}
async def test_introspection_fixture_twice_in_a_row(zitadel_introspection, zitadel_token):
    assert (await zitadel_introspection.verify(zitadel_token("alice"))).username == "alice"
"""


# The ``zitadel_events`` fixture: a deactivated user loses access as soon as the stand-in's event
# reaches the API (served on a loopback port, since the stand-in calls it over HTTP).
EVENTS_BODY = """
import httpx
from fastapi import Depends, FastAPI

from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.testing import LoopbackServer


{marker}
async def test_a_deactivated_user_loses_access(
    zitadel_events, zitadel_env, zitadel_token, zitadel_project
):
    zitadel = ZitadelIntrospection.from_env()  # ZITADEL_EVENTS_SIGNING_KEY is set too
    app = FastAPI()
    zitadel.install(app)

    @app.get("/me")
    async def me(principal=Depends(zitadel)) -> str:
        return principal.subject

    with LoopbackServer(app) as url:
        zitadel_events.send_to(url + zitadel.events_path)
        headers = {{"Authorization": f"Bearer {{zitadel_token('carol')}}"}}
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/me", headers=headers)).status_code == 200
            zitadel_project.standin.deactivate_user(zitadel_project.user("carol"))
            assert zitadel_events.wait()
            assert (await http.get("/me", headers=headers)).status_code == 401
"""


@pytest.mark.loopback
@pytest.mark.parametrize("mode", list(MODES))
def test_fixtures_work_in_every_async_mode(tmp_path: Path, mode: str) -> None:
    """Both user modules in one pytest process per mode (a process costs seconds)."""
    modules = {"test_user": BODY, "test_user_events": EVENTS_BODY}
    completed = run_user_suite(tmp_path, mode, modules)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "3 passed" in output, output
    for test in (  # each of them ran (and passed: 3 of 3)
        "test_user.py::test_every_fixture",
        "test_user.py::test_introspection_fixture_twice_in_a_row",
        "test_user_events.py::test_a_deactivated_user_loses_access",
    ):
        assert test in output, output
    assert "warning" not in output.lower(), output


def test_testing_page_documents_each_mode() -> None:
    """The one-line set-ups the test above uses are the ones the testing page shows."""
    page = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    for line in ("@pytest.mark.asyncio", 'asyncio_mode = "auto"', "@pytest.mark.anyio"):
        assert line in page, line


@pytest.fixture
def developer_shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What someone who sourced their real ZITADEL configuration has exported."""
    monkeypatch.setenv("ZITADEL_VALIDATION", "local")
    monkeypatch.setenv("ZITADEL_ALLOWED_CLIENT_IDS", "their-real-app")
    monkeypatch.setenv("ZITADEL_CLIENT_ID", "their-api")
    monkeypatch.setenv("ZITADEL_CLIENT_SECRET", "their-secret")
    monkeypatch.setenv("ZITADEL_KEY", '{"type": "application"}')
    monkeypatch.setenv("ZITADEL_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("zitadel_cache_ttl", "0")  # pydantic-settings ignores the case
    monkeypatch.setenv("ZITADEL_ISSUER", "https://their.zitadel.cloud")


@pytest.mark.loopback
def test_zitadel_env_is_clean_whatever_the_shell_exported(
    developer_shell: None, zitadel_env: dict[str, str], zitadel_token: Any
) -> None:
    """The README's own test passes on a laptop with a real configuration in the shell."""
    import os

    from fastapi import Depends, FastAPI
    from starlette.testclient import TestClient

    from fastapi_zitadel import ZitadelIntrospection

    assert {name for name in os.environ if name.upper().startswith("ZITADEL_")} == set(zitadel_env)
    zitadel = ZitadelIntrospection.from_env()
    assert zitadel.config.validation == "introspection"
    assert zitadel.config.redis_url is None
    assert zitadel.config.allowed_client_ids is None or not zitadel.config.allowed_client_ids
    app = FastAPI()
    zitadel.install(app)

    @app.get("/items", dependencies=[Depends(zitadel.require_role("reader"))])
    async def items() -> list[str]:
        return ["apple"]

    headers = {"Authorization": f"Bearer {zitadel_token('bob', roles=['reader'])}"}
    with TestClient(app) as client:
        assert client.get("/items", headers=headers).status_code == 200
