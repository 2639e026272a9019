"""The ``zitadel_events`` fixture in a user's own async test suite, under each way of running
async tests: a deactivated user loses access as soon as the stand-in's event reaches the API
(served on a loopback port, since the stand-in calls it over HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .plugin_support import MODES, run_user_suite

pytestmark = [pytest.mark.subprocess, pytest.mark.loopback]

BODY = """
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


@pytest.mark.parametrize("mode", list(MODES))
def test_the_events_fixture_in_every_async_mode(tmp_path: Path, mode: str) -> None:
    completed = run_user_suite(tmp_path, mode, BODY)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "1 passed" in output, output
    assert "warning" not in output.lower(), output
