"""``fastapi-zitadel events setup`` against the stand-in's Actions v2 API (ZITADEL's v2 paths
and shapes), then the events it set up, end to end: the API refuses a deactivated user's
cached token, and the executions that existed before still reach their targets."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from example_app.app import create_app
from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel._cli import main
from fastapi_zitadel.defaults import set_default_zitadel
from fastapi_zitadel.testing import (
    LoopbackServer,
    StandInProject,
    ZitadelStandIn,
    base_url,
    bind_socket,
)
from fastapi_zitadel.types import REVOCATION_EVENTS

pytestmark = pytest.mark.loopback


def test_setup_against_the_standin_then_events_flow(tmp_path: Any) -> None:
    standin = ZitadelStandIn()
    received: dict[str, list[str]] = {"audit": [], "lock": []}

    async def record(request: Request) -> Response:
        received[request.path_params["name"]].append(json.loads(await request.body())["event_type"])
        return Response()

    others = LoopbackServer(Starlette(routes=[Route("/{name}", record, methods=["POST"])]))
    with standin.serve(), others as other_url, StandInProject(standin) as project:
        # What the instance already sends elsewhere: setup must not shadow it.
        standin.set_execution([standin.add_target(f"{other_url}/audit")], group="user")
        standin.set_execution([standin.add_target(f"{other_url}/lock")], event="user.locked")
        sock = bind_socket("127.0.0.1", 0)
        api_url = base_url("127.0.0.1", sock.getsockname()[1])
        out = io.StringIO()
        code = main(
            [
                "events",
                "setup",
                "--url",
                api_url + "/zitadel/events",
                "--issuer",
                standin.issuer,
                "--pat",
                standin.admin_token(),
            ],
            out=out,
            err=out,
        )
        printed = out.getvalue()
        assert code == 0, printed
        found = re.search(r"ZITADEL_EVENTS_SIGNING_KEY=(\S+)", printed)
        assert found is not None, printed
        conditions = {execution.condition[1] for execution in standin.actions.executions.values()}
        assert set(REVOCATION_EVENTS) <= conditions
        zitadel = ZitadelIntrospection(
            standin.issuer,
            validation="local",
            audience=project.project.id,
            project_id=project.project.id,
            events_signing_key=found[1],
        )
        try:
            with LoopbackServer(create_app(zitadel), sock=sock) as url:
                user = project.user("ann", roles=["reader"])
                token = project.token("ann", jwt=True)
                headers = {"Authorization": f"Bearer {token}"}
                assert httpx.get(url + "/items", headers=headers).status_code == 200
                standin.lock_user(user)
                standin.deactivate_user(user)
                assert standin.wait_for_deliveries()
                assert httpx.get(url + "/items", headers=headers).status_code == 401
        finally:
            set_default_zitadel(None)
            standin.close()
    assert "user.deactivated" in received["audit"]  # the group's target still called
    assert received["lock"] == ["user.locked"]  # the exact execution still calls its target
