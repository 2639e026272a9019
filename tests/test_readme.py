"""The README's quick-start code runs as written, against the stand-in on a loopback port."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from fastapi_zitadel.testing import ZitadelStandIn

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_three_line_protection(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    standin = ZitadelStandIn()
    with standin.serve():
        org = standin.add_org("Acme")
        project = standin.add_project("shop")
        api = standin.add_api_app(project)
        user = standin.add_user(org, "alice")
        key_path = tmp_path / "key.json"
        key_path.write_text(json.dumps(api.key_file))
        monkeypatch.setenv("ZITADEL_ISSUER", standin.issuer)
        monkeypatch.setenv("ZITADEL_KEY_FILE", str(key_path))
        namespace: dict[str, Any] = {}
        exec(python_blocks()[0], namespace)  # noqa: S102 - our own README
        app = namespace["app"]
        assert isinstance(app, FastAPI)

        @app.get("/anything")
        async def anything() -> str:
            return "ok"

        token = standin.issue_token(user, project)
        with TestClient(app) as client:
            assert client.get("/anything").status_code == 401
            ok = client.get("/anything", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200
            assert (
                "401"
                in client.get("/openapi.json").json()["paths"]["/anything"]["get"]["responses"]
            )


def test_users_example_test_runs(zitadel_env: dict[str, str], zitadel_token: Any) -> None:
    """The README's 'complete test of your own app', with a tiny ``myapp`` behind it."""
    import sys
    import types

    from fastapi import Depends, FastAPI

    from fastapi_zitadel import ZitadelIntrospection

    def create_app() -> FastAPI:
        zitadel = ZitadelIntrospection.from_env()
        app = FastAPI()
        zitadel.install(app)

        @app.get("/items", dependencies=[Depends(zitadel.require_any_role("reader", "admin"))])
        async def items() -> list[str]:
            return []

        @app.post("/items", dependencies=[Depends(zitadel.require_role("admin"))])
        async def add() -> None:
            return None

        return app

    block = next(b for b in python_blocks() if "def test_reader_may_list_but_not_add" in b)
    myapp = types.ModuleType("myapp")
    myapp.create_app = create_app  # type: ignore[attr-defined]
    sys.modules["myapp"] = myapp
    try:
        namespace: dict[str, Any] = {}
        exec(block, namespace)  # noqa: S102 - our own README
        namespace["test_reader_may_list_but_not_add"](zitadel_env, zitadel_token)
    finally:
        del sys.modules["myapp"]
