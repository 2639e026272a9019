"""``fastapi-zitadel events setup`` and ``events send-test`` over real HTTP on loopback: the
setup never shadows an execution that already matched an event type, and send-test signs as
ZITADEL does (a receiver with the key takes it; one with another key refuses it)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel._cli import main
from fastapi_zitadel.testing import LoopbackServer
from fastapi_zitadel.types import REVOCATION_EVENTS

from .jwt_support import JwtWorld

pytestmark = pytest.mark.loopback

PAT = "pat-of-an-iam-owner"


class ActionsApi:
    """ZITADEL's Actions v2 endpoints as far as setup uses them, recording each call."""

    def __init__(self, executions: list[dict[str, Any]]) -> None:
        self.executions = executions
        self.calls: list[tuple[str, str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/v2/actions/targets", self.target, methods=["POST"]),
                Route("/v2/actions/executions/search", self.search, methods=["POST"]),
                Route("/v2/actions/executions", self.set_execution, methods=["PUT"]),
            ]
        )

    async def _record(self, request: Request) -> JSONResponse | None:
        body = await request.json()
        self.calls.append((request.method, request.url.path, body))
        if request.headers.get("authorization") != f"Bearer {PAT}":
            return JSONResponse({"code": 16}, status_code=401)
        return None

    async def target(self, request: Request) -> JSONResponse:
        return await self._record(request) or JSONResponse(
            {"id": "t-ours", "signingKey": "the-new-signing-key"}
        )

    async def search(self, request: Request) -> JSONResponse:
        refused = await self._record(request)
        if refused is None and self.calls[-1][2] != {"pagination": {"limit": 1000}}:
            return JSONResponse({"code": 3}, status_code=400)  # one page holds them all
        return refused or JSONResponse({"executions": self.executions})

    async def set_execution(self, request: Request) -> JSONResponse:
        return await self._record(request) or JSONResponse({})


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out=out, err=out), out.getvalue()


def test_setup_without_a_token_prints_the_calls() -> None:
    code, printed = run(
        "events", "setup", "--url", "https://api.test/zitadel/events", "--issuer", "https://z.test"
    )
    assert code == 0
    assert "POST https://z.test/v2/actions/targets" in printed
    for event_type in REVOCATION_EVENTS:
        assert f'"event": "{event_type}"' in printed


def test_setup_adds_our_target_and_never_shadows_an_execution() -> None:
    existing: list[dict[str, Any]] = [
        {"condition": {"event": {"group": "user"}}, "targets": ["t-audit"]},
        {"condition": {"event": {"group": "user.grant"}}, "targets": [{"target": "t-grants"}]},
        {"condition": {"event": {"event": "user.locked"}}, "targets": ["t-lock"]},
        {"condition": {"event": {"all": True}}, "targets": ["t-all"]},
    ]
    api = ActionsApi(existing)
    with LoopbackServer(api.app) as url:
        code, printed = run(
            "events", "setup", "--url", "https://api.test/ev", "--issuer", url, "--pat", PAT
        )
    assert code == 0, printed
    assert "ZITADEL_EVENTS_SIGNING_KEY=the-new-signing-key" in printed
    target = api.calls[0][2]
    assert target["endpoint"] == "https://api.test/ev"
    assert "restWebhook" in target
    assert target["payloadType"] == "PAYLOAD_TYPE_JSON"
    set_calls = {
        body["condition"]["event"]["event"]: body["targets"]
        for method, _, body in api.calls
        if method == "PUT"
    }
    assert set(set_calls) == set(REVOCATION_EVENTS)
    assert set_calls["user.deactivated"] == ["t-audit", "t-ours"]  # the group's target kept
    assert set_calls["user.locked"] == ["t-lock", "t-ours"]  # the exact one added to
    assert set_calls["user.grant.removed"] == ["t-grants", "t-ours"]  # the longest group
    assert set_calls["session.terminated"] == ["t-all", "t-ours"]  # "all" kept
    assert PAT not in printed


def test_setup_with_a_rejected_token_says_so() -> None:
    api = ActionsApi([])
    with LoopbackServer(api.app) as url:
        code, printed = run("events", "setup", "--url", "https://a.test/e", "--issuer", url)
        assert code == 0  # no token: printed, nothing called
        assert api.calls == []
        code, printed = run(
            "events", "setup", "--url", "https://a.test/e", "--issuer", url, "--pat", "wrong"
        )
    assert code == 5
    assert "IAM owner" in printed


def test_send_test_signs_as_zitadel(jwt_world: JwtWorld) -> None:
    zitadel = ZitadelIntrospection(
        jwt_world.issuer,
        validation="local",
        audience=jwt_world.audience,
        events_signing_key="old-key,the-key",
    )
    with LoopbackServer(zitadel.events_app) as url:
        code, printed = run("events", "send-test", url, "--key", "the-key")
        assert code == 0, printed
        assert json.loads(printed.partition("(200 ")[2].rstrip(")\n")) == {"status": "ignored"}
        code, printed = run("events", "send-test", url, "--key", "another-key")
        assert code == 5
    metrics = zitadel.metrics()
    assert metrics.events_ignored == 1
    assert metrics.events_refused == {"mismatch": 1}
