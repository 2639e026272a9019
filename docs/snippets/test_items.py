"""tests/test_items.py: your own tests, with the fixtures fastapi-zitadel registers."""

# --8<-- [start:imports]
from collections.abc import Callable

import httpx
from fastapi import Depends, FastAPI
from myapp import create_app
from starlette.testclient import TestClient

from fastapi_zitadel import Principal, ZitadelIntrospection
from fastapi_zitadel.defaults import require_role, set_default_zitadel
from fastapi_zitadel.testing import (
    LoopbackServer,
    StandInEvents,
    StandInProject,
    override_principal,
)

# --8<-- [end:imports]


# --8<-- [start:fixed]
def test_reader_may_list_but_not_add_fixed_principal() -> None:
    # No IdP at all: authentication is replaced, the role checks still run.
    zitadel = ZitadelIntrospection(
        "https://acme.zitadel.cloud",
        client_id="tests",
        client_secret="unused",  # noqa: S106
    )
    app = create_app(zitadel)
    bob = Principal(subject="bob", roles={"reader": {}})
    with override_principal(app, zitadel, bob), TestClient(app) as client:
        assert client.get("/items").status_code == 200
        assert client.post("/items", params={"name": "kiwi"}).status_code == 403
    with override_principal(app, zitadel, None), TestClient(app) as client:
        assert client.get("/items").status_code == 401  # anonymous


# --8<-- [end:fixed]
# --8<-- [start:module_level]
def test_module_level_checks_are_covered_too() -> None:
    zitadel = ZitadelIntrospection(
        "https://acme.zitadel.cloud",
        client_id="tests",
        client_secret="unused",  # noqa: S106
    )
    set_default_zitadel(zitadel)  # the module-level require_* use this instance
    try:
        app = FastAPI()

        @app.get("/reports", dependencies=[Depends(require_role("admin"))])
        async def reports() -> list[str]:
            return ["q1"]

        admin = Principal(subject="ann", roles={"admin": {}})
        with override_principal(app, zitadel, admin), TestClient(app) as client:
            assert client.get("/reports").status_code == 200
        reader = Principal(subject="bob", roles={"reader": {}})
        with override_principal(app, zitadel, reader), TestClient(app) as client:
            assert client.get("/reports").status_code == 403  # the role check still runs
    finally:
        set_default_zitadel(None)


# --8<-- [end:module_level]
# --8<-- [start:standin]
def test_reader_may_list_but_not_add(
    zitadel_env: dict[str, str], zitadel_token: Callable[..., str]
) -> None:
    token = zitadel_token("bob", roles=["reader"])
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app()) as client:
        assert client.get("/items", headers=headers).status_code == 200
        assert client.post("/items", params={"name": "kiwi"}, headers=headers).status_code == 403
        assert client.get("/items").status_code == 401


def test_admin_may_add(zitadel_env: dict[str, str], zitadel_token: Callable[..., str]) -> None:
    headers = {"Authorization": f"Bearer {zitadel_token('alice', roles=['admin'])}"}
    with TestClient(create_app()) as client:
        answer = client.post("/items", params={"name": "kiwi"}, headers=headers)
        assert answer.status_code == 201


def test_revoked_token_is_refused(
    zitadel_env: dict[str, str], zitadel_project: StandInProject
) -> None:
    token = zitadel_project.token("bob", roles=["reader"])
    zitadel_project.standin.revoke(token)
    with TestClient(create_app()) as client:
        answer = client.get("/items", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401
        assert answer.json()["detail"]["error"] == "invalid_token"


# --8<-- [end:standin]
# --8<-- [start:faults]
def test_idp_outage_is_503_not_401(
    zitadel_env: dict[str, str], zitadel_project: StandInProject
) -> None:
    token = zitadel_project.token("bob", roles=["reader"])
    zitadel_project.standin.inject("status", status=502, times=None)  # until clear_faults()
    with TestClient(create_app()) as client:
        answer = client.get("/items", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 503
        assert answer.json()["detail"]["error"] == "temporarily_unavailable"
        assert int(answer.headers["Retry-After"]) >= 1
        zitadel_project.standin.clear_faults()
        answer = client.get("/items", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200


# --8<-- [end:faults]
# --8<-- [start:events]
def test_deactivated_user_loses_access(
    zitadel_env: dict[str, str], zitadel_events: StandInEvents, zitadel_project: StandInProject
) -> None:
    # ZITADEL_EVENTS_SIGNING_KEY is set: install() serves the receiver at /zitadel/events.
    with LoopbackServer(create_app()) as url:  # the stand-in calls the API over HTTP
        zitadel_events.send_to(url + "/zitadel/events")
        token = zitadel_project.token("bob", roles=["reader"])
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(url + "/items", headers=headers).status_code == 200  # now cached
        zitadel_project.standin.deactivate_user(zitadel_project.user("bob"))
        assert zitadel_events.wait()  # the event reached the API
        assert httpx.get(url + "/items", headers=headers).status_code == 401


# --8<-- [end:events]
