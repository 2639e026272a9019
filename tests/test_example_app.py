"""The example app doubles as a fixture: its routes behave as the README says."""

import httpx
from starlette.testclient import TestClient

from example_app.app import create_app

from .helpers import World


async def test_example_routes(world: World) -> None:
    reader = world.standin.add_user(world.user.org, "bob", roles={world.project: ["reader"]})
    alice = world.token(scopes=["openid", "profile", "email"])
    bob = world.standin.issue_token(reader, world.project, scopes=["openid"])
    app = create_app(world.client())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http:
        assert (await http.get("/")).status_code == 200
        me = await http.get("/me", headers={"Authorization": f"Bearer {alice}"})
        assert me.json()["roles"] == {
            "admin": {world.user.org.id: world.user.org.primary_domain},
            "reader": {world.user.org.id: world.user.org.primary_domain},
        }
        assert (await http.get("/items", headers={"Authorization": f"Bearer {bob}"})).json()
        add = await http.post("/items", headers={"Authorization": f"Bearer {bob}"})
        assert add.status_code == 403
        add = await http.post("/items", headers={"Authorization": f"Bearer {alice}"})
        assert add.status_code == 200
        profile = await http.get("/profile", headers={"Authorization": f"Bearer {bob}"})
        assert profile.status_code == 403
        profile = await http.get("/profile", headers={"Authorization": f"Bearer {alice}"})
        assert profile.json() == {"name": "Alice A.", "email": "alice@acme.localhost"}
        assert (await http.get("/hello")).json() == "hello stranger"


def test_example_websocket(world: World) -> None:
    app = create_app(world.client())
    with (
        TestClient(app) as client,
        client.websocket_connect(
            "/ws", headers={"Authorization": f"Bearer {world.token(scopes=['profile'])}"}
        ) as ws,
    ):
        assert ws.receive_json() == {"welcome": "alice"}
