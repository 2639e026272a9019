"""The README's quick-start code runs as written, against the stand-in on a loopback port."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
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
