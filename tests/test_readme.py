"""The README's quick-start code runs as written, against the stand-in on a loopback port."""

import json
import re
import subprocess
import sys
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


@pytest.mark.subprocess
def test_testing_recipe_is_complete_on_its_own(tmp_path: Path) -> None:
    """The README's two files (``myapp.py`` and ``tests/test_items.py``), written as they are
    into an empty folder and run by pytest as the README says: nothing else is needed."""
    files = {}
    for block in python_blocks():
        first = block.splitlines()[0]
        if first.startswith("# ") and first.split()[1].endswith(".py"):
            files[first.split()[1]] = block
    assert set(files) == {"myapp.py", "tests/test_items.py"}, set(files)
    for name, block in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(block)
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "1 passed" in completed.stdout


def test_per_route_example_leads_with_roles(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The per-route example runs, and authorizes ZITADEL users with roles, not custom scopes
    (ZITADEL issues none, zitadel/zitadel#8967)."""
    block = python_blocks()[1]
    assert "require_role(" in block
    assert "items:read" not in block
    assert "zitadel/zitadel#8967" in README.read_text()
    standin = ZitadelStandIn()
    with standin.serve():
        org = standin.add_org("Acme")
        project = standin.add_project("shop")
        api = standin.add_api_app(project)
        bob = standin.add_user(org, "bob", roles={project: ["reader"]})
        key_path = tmp_path / "key.json"
        key_path.write_text(json.dumps(api.key_file))
        monkeypatch.setenv("ZITADEL_ISSUER", standin.issuer)
        monkeypatch.setenv("ZITADEL_KEY_FILE", str(key_path))
        monkeypatch.setenv("ZITADEL_PROJECT_ID", project.id)
        namespace: dict[str, Any] = {}
        exec(python_blocks()[0], namespace)  # noqa: S102 - our own README
        exec(block, namespace)  # noqa: S102 - our own README
        token = standin.issue_token(bob, project, scopes=["openid", "profile"])
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(namespace["app"]) as client:
            assert client.get("/items", headers=headers).json() == {"user": "bob"}
            assert client.post("/items", headers=headers).status_code == 403
            assert client.get("/me", headers=headers).status_code == 200


async def test_calling_other_apis_runs_as_written(tmp_path: Path) -> None:
    """The section's block, with the stand-in's issuer, a service user's key file, the
    project's id and a served shop in place of the example values."""
    from example_app.app import create_app
    from fastapi_zitadel import set_default_zitadel
    from fastapi_zitadel.testing import LoopbackServer, StandInProject

    (block,) = [block for block in python_blocks() if "ServiceAccountAuth(" in block]
    standin = ZitadelStandIn()
    with standin.serve():
        project = StandInProject(standin, key_dir=tmp_path)
        project.service_user("service-user", roles=["reader"])
        with LoopbackServer(create_app(project.introspection())) as shop:
            code = (
                block.replace("https://acme.zitadel.cloud", standin.issuer)
                .replace('"service-user.json"', repr(str(project.service_key_path("service-user"))))
                .replace("298374000000000000", project.project.id)
                .replace("https://shop.acme.example", shop)
            )
            namespace: dict[str, Any] = {}
            exec(code, namespace)  # noqa: S102 - our own README
            assert await namespace["list_items"]() == ["apple", "pear"]
            await namespace["auth"].aclose()
        set_default_zitadel(None)
