"""Over real HTTP: the stand-in and a protected app each on 127.0.0.1 with an ephemeral port,
the library using its own pooled client, discovery, and an IdP that goes away."""

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from fastapi_zitadel import Principal, ZitadelIntrospection
from fastapi_zitadel.testing import LoopbackServer, StandInProject, ZitadelStandIn


@pytest.fixture
def standin(zitadel_standin: ZitadelStandIn) -> ZitadelStandIn:
    return zitadel_standin


@pytest.fixture
def setup(zitadel_project: StandInProject) -> dict[str, Any]:
    user = zitadel_project.user("alice", roles=["admin"])
    return {"project": zitadel_project.project, "user": user, "key_path": zitadel_project.key_path}


def protected_app(zitadel: ZitadelIntrospection) -> FastAPI:
    app = FastAPI()
    zitadel.install(app)

    @app.get("/items")
    async def items(
        principal: Annotated[Principal, Depends(zitadel.require_scope("items:read"))],
    ) -> dict[str, Any]:
        return {"sub": principal.subject, "roles": sorted(principal.roles)}

    return app


def test_end_to_end_over_loopback(standin: ZitadelStandIn, setup: dict[str, Any]) -> None:
    zitadel = ZitadelIntrospection(
        standin.issuer, key_file=setup["key_path"], project_id=setup["project"].id, timeout=1
    )
    token = standin.issue_token(setup["user"], setup["project"], scopes=["openid", "items:read"])
    weak = standin.issue_token(setup["user"], setup["project"], scopes=["openid"])
    with LoopbackServer(protected_app(zitadel)) as url, httpx.Client(base_url=url) as http:
        ok = http.get("/items", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        assert ok.json() == {"sub": setup["user"].id, "roles": ["admin"]}
        for _ in range(5):
            http.get("/items", headers={"Authorization": f"Bearer {token}"})
        assert standin.introspection_calls == 1  # cached across requests
        missing = http.get("/items")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        forbidden = http.get("/items", headers={"Authorization": f"Bearer {weak}"})
        assert forbidden.status_code == 403
        assert 'scope="items:read"' in forbidden.headers["www-authenticate"]
        standin.inject("latency", seconds=1.5, times=None)
        slow = http.get("/items", headers={"Authorization": "Bearer another-token"}, timeout=30)
        assert slow.status_code == 503
        assert "retry-after" in slow.headers


def test_idp_gone_is_503_not_401(setup: dict[str, Any], standin: ZitadelStandIn) -> None:
    token = standin.issue_token(setup["user"], setup["project"])
    nothing_listens = LoopbackServer(None)
    nothing_listens.stop()  # the port was bound and released: connections are refused
    zitadel = ZitadelIntrospection(nothing_listens.url, key_file=setup["key_path"], timeout=2)
    with LoopbackServer(protected_app(zitadel)) as url:
        response = httpx.get(url + "/items", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        assert httpx.get(url + "/items").status_code == 401
