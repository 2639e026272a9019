"""The example app end to end over real HTTP against the stand-in on loopback: every route as
admin, reader, anonymous and with a revoked token; the quick-start command in smoke mode."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from example_app.app import create_app
from fastapi_zitadel import ZitadelIntrospection
from fastapi_zitadel.defaults import set_default_zitadel
from fastapi_zitadel.testing import LoopbackServer, StandInProject

pytestmark = pytest.mark.subprocess  # commands and servers in processes of their own

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def reset_default() -> Iterator[None]:
    yield
    set_default_zitadel(None)


@pytest.fixture
def served(zitadel_project: StandInProject) -> Iterator[str]:
    app = create_app(zitadel_project.introspection(), org_id=zitadel_project.org.id)
    with LoopbackServer(app) as url:
        yield url


# (method, path, expected status for admin, reader, anonymous)
ROUTES = [
    ("GET", "/", 200, 200, 200),
    ("GET", "/hello", 200, 200, 200),
    ("GET", "/me", 200, 200, 401),
    ("GET", "/items", 200, 200, 401),
    ("POST", "/items?name=fig", 201, 403, 401),
    ("GET", "/profile", 200, 403, 401),
    ("GET", "/email", 200, 200, 401),
    ("GET", "/org/report", 200, 403, 401),
    ("GET", "/admin/stats", 200, 403, 401),
    ("DELETE", "/admin/cache", 200, 403, 401),
]


def test_every_route_for_every_caller(served: str, zitadel_project: StandInProject) -> None:
    tokens = {
        "admin": zitadel_project.token("alice", roles=["admin"]),
        "reader": zitadel_project.token("bob", roles=["reader"], scopes=["openid", "email"]),
    }
    with httpx.Client(base_url=served) as http:
        for method, path, *expected in ROUTES:
            for who, status in zip(("admin", "reader", None), expected, strict=True):
                headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
                response = http.request(method, path, headers=headers)
                assert response.status_code == status, (method, path, who, response.text)
        me = http.get("/me", headers={"Authorization": f"Bearer {tokens['admin']}"}).json()
        assert me["roles"] == {"admin": {zitadel_project.org.id: "acme.localhost"}}
        assert me["organization"] == zitadel_project.org.id
        assert http.get("/hello", headers={"Authorization": "Bearer junk"}).status_code == 401


def test_revoked_token(served: str, zitadel_project: StandInProject) -> None:
    token = zitadel_project.token("carol", roles=["admin"])
    zitadel_project.standin.revoke(token)
    with httpx.Client(base_url=served) as http:
        response = http.get("/items", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_app_wide_variant(zitadel_project: StandInProject) -> None:
    app = create_app(zitadel_project.introspection(), app_wide=True)
    token = zitadel_project.token()
    with TestClient(app) as client:
        assert client.get("/").status_code == 401
        assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_websocket(zitadel_project: StandInProject) -> None:
    app = create_app(zitadel_project.introspection())
    token = zitadel_project.token()
    with (
        TestClient(app) as client,
        client.websocket_connect("/ws", headers={"Authorization": f"Bearer {token}"}) as ws,
    ):
        assert ws.receive_json() == {"welcome": "alice"}


def test_websocket_over_uvicorn(served: str, zitadel_project: StandInProject) -> None:
    """The /ws route on a real uvicorn: it needs a WebSocket library, which the ``testing``
    extra brings (without one, uvicorn answers the upgrade with 404)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    url = served.replace("http://", "ws://") + "/ws"
    token = zitadel_project.token("alice")
    headers = {"Authorization": f"Bearer {token}"}
    with connect(url, additional_headers=headers, open_timeout=10) as websocket:
        assert websocket.recv(timeout=10) == '{"welcome":"alice"}'
    # Refused: accepted, then closed with 1008 and the reason (not a bare HTTP 403).
    with connect(url, open_timeout=10) as websocket, pytest.raises(ConnectionClosed) as refused:
        websocket.recv(timeout=10)
    assert refused.value.rcvd is not None
    assert refused.value.rcvd.code == 1008


def test_testing_extra_brings_a_websocket_library() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    testing = pyproject.split("\ntesting = [", 1)[1].split("]", 1)[0]
    assert '"uvicorn' in testing
    assert '"websockets' in testing or "uvicorn[standard]" in testing


def test_quick_start_smoke_mode() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "example_app", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "GET /me without a token: 401" in completed.stdout
    assert "GET /me as admin: 200" in completed.stdout
    assert "WebSocket /ws as admin: {'welcome': 'alice'}" in completed.stdout


def test_example_docs_log_in_through_the_embedded_standin() -> None:
    """`python -m example_app` as the quick start runs it: its /docs offers the PKCE login, and
    the stand-in's authorize endpoint accepts the example's redirect URI (the browser test
    clicks through the same flow)."""
    import re
    import time
    from urllib.parse import urlencode

    process, port = start_example(stderr=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        issuer = first.removeprefix("Embedded ZITADEL stand-in at ").strip()
        assert issuer.startswith("http://127.0.0.1:"), first
        base = f"http://127.0.0.1:{port}"
        docs = None
        for _ in range(100):  # until uvicorn listens (bounded)
            try:
                docs = httpx.get(base + "/docs")
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert docs is not None
        assert docs.status_code == 200
        assert "usePkceWithAuthorizationCodeGrant" in docs.text
        client_id = re.search(r'"clientId": ?"([^"]+)"', docs.text)
        assert client_id is not None, docs.text
        for host in ("127.0.0.1", "localhost"):
            query = {
                "response_type": "code",
                "client_id": client_id[1],
                "redirect_uri": f"http://{host}:{port}/docs/oauth2-redirect",
                "code_challenge": "x" * 43,
                "code_challenge_method": "S256",
                "state": "s",
            }
            login = httpx.get(issuer + "/oauth/v2/authorize?" + urlencode(query))
            assert login.status_code == 200, login.text
            assert ">alice (admin)</button>" in login.text
            assert ">bob (reader)</button>" in login.text
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_with_your_own_zitadel_the_example_says_how_to_get_a_token() -> None:
    from example_app.__main__ import _how_to_get_a_token
    from fastapi_zitadel import ZitadelIntrospection

    zitadel = ZitadelIntrospection(
        "https://acme-xyz.zitadel.cloud",
        client_id="api",
        client_secret="unused",
        project_id="298374000000000000",
    )
    text = _how_to_get_a_token(zitadel, "http://127.0.0.1:8000")
    assert "https://acme-xyz.zitadel.cloud/oauth/v2/token" in text
    assert "grant_type=client_credentials" in text
    assert "urn:zitadel:iam:org:projects:roles" in text
    assert "urn:zitadel:iam:org:project:id:298374000000000000:aud" in text
    assert "ZITADEL_SWAGGER_CLIENT_ID" in text
    assert "http://127.0.0.1:8000/docs/oauth2-redirect" in text


def test_example_variables_are_documented() -> None:
    for page in (ROOT / "README.md", ROOT / "docs" / "zitadel-setup.md"):
        text = page.read_text(encoding="utf-8")
        assert "EXAMPLE_ORG_ID" in text, page
        assert "/org/report" in text, page


@pytest.mark.parametrize("validation", ["local", "hybrid"])
def test_smoke_mode_with_each_validation(validation: str) -> None:
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "example_app", "--smoke", "--validation", validation],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"Validation: {validation}" in completed.stdout
    assert "'verified_by': 'jwt'" in completed.stdout
    assert ("key file" in completed.stdout) == (validation == "hybrid")


def test_the_example_in_local_mode_needs_no_key(zitadel_project: StandInProject) -> None:
    zitadel = ZitadelIntrospection(
        zitadel_project.standin.issuer,
        validation="local",
        audience=zitadel_project.project.id,
        project_id=zitadel_project.project.id,
    )
    admin = zitadel_project.token("alice", roles=["admin"], jwt=True)
    with TestClient(create_app(zitadel, org_id=zitadel_project.org.id)) as client:
        headers = {"Authorization": f"Bearer {admin}"}
        me = client.get("/me", headers=headers).json()
        assert me["verified_by"] == "jwt"
        assert me["roles"] == {"admin": {zitadel_project.org.id: "acme.localhost"}}
        assert client.post("/items?name=fig", headers=headers).status_code == 201
        assert client.get("/profile", headers=headers).status_code == 403  # no scopes in a JWT
        opaque = zitadel_project.token("alice")
        assert client.get("/me", headers={"Authorization": f"Bearer {opaque}"}).status_code == 401


@pytest.mark.subprocess
def test_the_example_log_is_the_apis_alone_and_ctrl_c_is_clean() -> None:
    """The embedded stand-in serves on uvicorn in the same process: its access lines and its
    start and shutdown lines stay out of the example's log, and Ctrl-C stops both without a
    traceback."""
    import signal
    import time

    process, port = start_example(stderr=subprocess.PIPE)
    try:
        answer = None
        for _ in range(100):  # until uvicorn listens (bounded)
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/me")
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert answer is not None
        assert answer.status_code == 401  # the API answered, after discovery at start-up
    finally:
        process.send_signal(signal.SIGINT)
        out, log = process.communicate(timeout=30)  # uvicorn: access lines on stdout
    # stdout holds tokens: checked without showing it
    api_access_line = '"GET /me HTTP/1.1" 401' in out
    standin_access_line = "openid-configuration" in out + log
    assert process.returncode == 0, log
    assert "Traceback" not in log
    assert log.count("Shutting down") == 1, log
    assert log.count("Finished server process") == 1, log
    assert api_access_line  # the API's own access line stays
    assert not standin_access_line  # the stand-in's does not


@pytest.mark.loopback
@pytest.mark.parametrize("validation", ["local", "introspection"])
def test_smoke_mode_with_events_refuses_a_deactivated_admin(validation: str) -> None:
    """``--events``: the embedded stand-in sends ZITADEL's events to the example's receiver;
    after the admin is deactivated there, the admin's token is refused, even a JWT verified
    locally and a verdict still cached."""
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "example_app", "--smoke", "--events", "--validation", validation],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "GET /me as admin: 200" in completed.stdout
    assert "admin deactivated (event delivered: True); GET /me: 401" in completed.stdout


def start_example(*, stderr: int) -> tuple[subprocess.Popen[str], int]:
    """``python -m example_app`` on a free port, in a process of its own: (process, port)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "example_app", "--port", str(port)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    return process, port
