"""The documentation site: it builds offline with ``--strict``, its configuration reference
lists every setting, its troubleshooting page explains every message the library produces,
and every code snippet in it runs (Python snippets live in docs/snippets/ and are included
into the pages, so what is tested is what readers see)."""

from __future__ import annotations

import ast
import hashlib
import hmac
import importlib.util
import inspect
import io
import json
import logging
import os
import re
import runpy
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from fastapi_zitadel import InvalidTokenError, Principal, ZitadelIntrospection
from fastapi_zitadel import _cli as cli
from fastapi_zitadel.config import ZitadelConfig
from fastapi_zitadel.testing import StandInProject, ZitadelStandIn

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SNIPPETS = DOCS / "snippets"
PACKAGE = ROOT / "fastapi_zitadel"
TROUBLESHOOTING = DOCS / "troubleshooting.md"

# Every file in docs/snippets/ is exercised by one of the tests below.
TESTED_SNIPPETS = {
    "check-output.txt",
    "events.py",
    "health.py",
    "introspection-answer.json",
    "key-file.json",
    "logging_setup.py",
    "mcp_server.py",
    "middleware.py",
    "module_level.py",
    "myapp.py",
    "own_user.py",
    "quickstart.py",
    "replicas.py",
    "resource_metadata.py",
    "routes.py",
    "service_account.py",
    "service_account_sync.py",
    "standin_in_process.py",
    "telemetry.py",
    "test_items.py",
    "token_exchange.py",
    "verify.py",
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run_snippet(name: str) -> dict[str, Any]:
    """Execute a snippet file as a script and return its globals."""
    return runpy.run_path(str(SNIPPETS / name))


def load_module(name: str, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, SNIPPETS / name)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Messages: every error and log text of the library is explained ---------------------------

_MESSAGE_SUFFIXES = ("Error", "Unavailable", "Rejected", "Mismatch", "Failure", "_Retryable")
_LOG_CALLS = {
    "warning",
    "error",
    "_rejection_log",
    "_outage_log",
    "_misconfiguration_log",
    "_cache_log",
}
_MIN_FRAGMENT = 12


@dataclass(frozen=True)
class Message:
    where: str
    call: str
    text: str

    def __str__(self) -> str:
        return f"{self.where} {self.call}: {self.text!r}"


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _literal_text(node: ast.expr) -> str | None:
    """A str constant, or the constant part of an f-string before its first placeholder."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        text = ""
        for part in node.values:
            if not (isinstance(part, ast.Constant) and isinstance(part.value, str)):
                break
            text += part.value
        return text
    return None


def _is_message_call(name: str) -> bool:
    return name.endswith(_MESSAGE_SUFFIXES) or name == "ValueError" or name in _LOG_CALLS


def library_messages() -> list[Message]:
    """Error and log messages of the library's modules (not testing/), found with ``ast``."""
    messages = []
    paths = [p for p in sorted(PACKAGE.rglob("*.py")) if "testing" not in p.parts]
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = _called_name(node.func)
            if name is None or not _is_message_call(name):
                continue
            # KeyFileError(label, problem, ...), and its subclass WrongKeyTypeError
            position = 1 if name in ("KeyFileError", "WrongKeyTypeError") else 0
            if len(node.args) <= position:
                continue
            text = _literal_text(node.args[position])
            if text is not None and len(text) >= _MIN_FRAGMENT:
                where = path.relative_to(PACKAGE).as_posix()
                messages.append(Message(f"{where}:{node.lineno}", name, text))
    return messages


def cli_messages() -> list[Message]:
    """What ``fastapi-zitadel`` prints as ``[FAIL]``, ``[fix]`` or ``[invalid]``."""
    messages = []
    tree = ast.parse((PACKAGE / "_cli.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        found: list[tuple[str, ast.expr]] = []
        if _called_name(node.func) == "_say":
            status = node.args[1]
            if isinstance(status, ast.Constant) and status.value in ("FAIL", "fix", "invalid"):
                found.append((status.value, node.args[2]))
        elif _called_name(node.func) == "_fail":  # _fail(out, code, message[, fix])
            found += zip(("FAIL", "fix"), node.args[2:4], strict=False)
        for status_text, message in found:
            text = _literal_text(message)
            if text is not None and len(text) >= _MIN_FRAGMENT:
                messages.append(Message(f"_cli.py:{node.lineno}", f"_say {status_text}", text))
    return messages


def test_the_message_collector_finds_the_messages() -> None:
    messages = library_messages()
    assert len(messages) > 50, messages
    texts = {message.text for message in messages}
    assert "the token is not active" in texts  # a plain string
    assert "identity provider timed out after " in texts  # an f-string's constant prefix
    assert "permission denied" in texts  # KeyFileError's second argument
    assert "shared cache (Redis) available again" in texts  # a logger call


def test_troubleshooting_explains_every_library_message() -> None:
    page = TROUBLESHOOTING.read_text(encoding="utf-8")
    missing = [str(message) for message in library_messages() if message.text not in page]
    assert not missing, "docs/troubleshooting.md does not mention:\n" + "\n".join(missing)


def test_troubleshooting_explains_every_cli_message() -> None:
    page = TROUBLESHOOTING.read_text(encoding="utf-8")
    messages = cli_messages()
    assert len(messages) > 5, messages
    missing = [str(message) for message in messages if message.text not in page]
    assert not missing, "docs/troubleshooting.md does not mention:\n" + "\n".join(missing)


# The site builds, and the configuration reference is complete ------------------------------


@dataclass(frozen=True)
class Build:
    returncode: int
    output: str
    site: Path


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Build:
    site = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    completed = subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Build(completed.returncode, completed.stdout + completed.stderr, site)


@pytest.mark.subprocess
def test_site_builds_strictly(built_site: Build) -> None:
    assert built_site.returncode == 0, built_site.output
    assert (built_site.site / "index.html").is_file()


@pytest.mark.subprocess
def test_configuration_reference_lists_every_setting(built_site: Build) -> None:
    assert built_site.returncode == 0, built_site.output
    page = (built_site.site / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "fastapi-zitadel:config-reference" not in page  # the placeholder was replaced
    missing = [
        name
        for name in ZitadelConfig.model_fields
        if f"<td><code>{name}</code></td>" not in page
        or f"<code>ZITADEL_{name.upper()}</code>" not in page
    ]
    assert not missing, f"settings missing from the configuration reference: {missing}"
    assert "not yet described" not in page


# Inside code fences, the block form of pymdownx.snippets: ruff (0.16+) formats Python fences in
# Markdown and would rewrite the one-line form ``--8<-- "file"`` as ``--8 < --"file"``.
_INCLUDE = re.compile(r"--8<--\n((?:docs/snippets/[^\n]+\n\n?)+)--8<--\n")


def test_code_blocks_are_tested_snippets() -> None:
    """Code in the pages is either an included snippet file or a shell command."""
    included: set[str] = set()
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for language, body in re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S):
            if language == "bash":
                continue
            match = _INCLUDE.fullmatch(body)
            assert match is not None, f"{page.name}: code that is not a snippet file:\n{body}"
            for line in filter(None, match[1].splitlines()):
                included.add(line.removeprefix("docs/snippets/").split(":")[0])
    files = {path.name for path in SNIPPETS.iterdir() if path.is_file()}
    assert included == files, "snippet files not included in any page (or missing)"
    assert files == TESTED_SNIPPETS, "a snippet file without a test (or a stale entry)"


def _shell_commands() -> Iterator[tuple[str, list[str]]]:
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for body in re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
            for line in body.splitlines():
                words = shlex.split(line, comments=True)
                if words:
                    yield page.name, words


def test_shell_snippets_are_real_commands() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    optional = pyproject.split("[project.optional-dependencies]\n")[1].split("\n[")[0]
    extras = set(re.findall(r"^(\w+) = \[", optional, flags=re.M))
    scripts = set(re.findall(r'^([\w-]+) = "fastapi_zitadel', pyproject, flags=re.M))
    tasks = set(runpy.run_path(str(ROOT / "scripts" / "dev.py"))["TASKS"])
    settings = {f"ZITADEL_{name.upper()}" for name in ZitadelConfig.model_fields}
    version = re.findall(r'^version = "([^"]+)"', pyproject, flags=re.M)[0]
    example = (ROOT / "example_app" / "__main__.py").read_text(encoding="utf-8")
    example_variables = set(re.findall(r'os\.environ\.get\("(EXAMPLE_\w+)"', example))
    assert example_variables == {"EXAMPLE_ORG_ID"}
    seen = 0
    for page, words in _shell_commands():
        seen += 1
        command = " ".join(words)
        if words[:2] == ["python3", "scripts/dev.py"]:
            assert words[2] in tasks, (page, command)
        elif words[:2] == ["pip", "install"]:
            # The package by name, the clone's folder, or the wheel `python -m build` makes.
            match = re.fullmatch(
                r"(fastapi-zitadel|\.|dist/fastapi_zitadel-([\w.]+)-py3-none-any\.whl)"
                r"(?:\[(\w+)\])?",
                words[2],
            )
            assert match is not None, (page, command)
            assert match[2] is None or match[2] == version, (page, command)
            assert match[3] is None or match[3] in extras, (page, command)
        elif words[0] == "export":
            name = words[1].split("=", 1)[0]
            assert name in settings or name in example_variables, (page, command)
        elif words[0] == "fastapi-zitadel":
            assert "fastapi-zitadel" in scripts
            try:
                cli._parser().parse_args(words[1:])
            except SystemExit as exc:  # pragma: no cover - shown on failure
                raise AssertionError(f"{page}: {command}") from exc
        else:
            raise AssertionError(f"{page}: unknown command {command!r}")
    assert seen > 10


# Python snippets --------------------------------------------------------------------------


def test_quickstart_protects_every_route(
    zitadel_env: dict[str, str], zitadel_token: Callable[..., str]
) -> None:
    app = run_snippet("quickstart.py")["app"]
    with TestClient(app) as client:
        assert client.get("/hello").status_code == 401
        answer = client.get("/hello", headers=bearer(zitadel_token("alice")))
        assert answer.status_code == 200
        assert answer.json() == {"hello": "world"}
        responses = client.get("/openapi.json").json()["paths"]["/hello"]["get"]["responses"]
        assert {"401", "503"} <= set(responses)
        assert "403" not in responses  # no scope or role is checked there


def test_routes_snippet(
    zitadel_env: dict[str, str],
    zitadel_project: StandInProject,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = zitadel_project
    monkeypatch.setenv("BILLING_ORG_ID", project.org.id)
    app: FastAPI = run_snippet("routes.py")["app"]
    standin = project.standin
    globex = standin.add_org("Globex", "globex.localhost")
    gina = standin.add_user(globex, "gina", roles={project.project: ["admin"]})
    tokens = {
        "reader": project.token("bob", roles=["reader"]),
        "admin": project.token("alice", roles=["admin"]),
        "auditor": project.token("carol", roles=["admin", "auditor"]),
        "openid_only": project.token("dave", scopes=["openid"]),
        "globex_admin": standin.issue_token(gina, project.project, scopes=["openid", "profile"]),
    }

    with TestClient(app) as client:

        def status(method: str, path: str, who: str | None = None) -> int:
            headers = bearer(tokens[who]) if who else {}
            return int(client.request(method, path, headers=headers).status_code)

        # A valid token, and optional authentication.
        assert status("GET", "/me") == 401
        assert client.get("/me", headers=bearer(tokens["reader"])).json()["username"] == "bob"
        assert client.get("/hello").json() == "hello stranger"
        assert client.get("/hello", headers=bearer(tokens["admin"])).json() == "hello alice"
        assert client.get("/hello", headers=bearer("forged")).status_code == 401

        # Scopes: the stand-in's default tokens carry openid, profile and email.
        for path in ("/profile", "/contact", "/email"):
            assert status("GET", path, "reader") == 200, path
            assert status("GET", path, "openid_only") == 403, path
        denied = client.get("/email", headers=bearer(tokens["openid_only"]))
        assert 'error="insufficient_scope"' in denied.headers["WWW-Authenticate"]
        assert 'scope="email"' in denied.headers["WWW-Authenticate"]
        assert status("GET", "/profile", None) == 401  # never 403 without a valid token

        # Roles.
        assert status("GET", "/items", "reader") == 200
        assert status("GET", "/items", "openid_only") == 403
        assert client.post("/items?name=kiwi", headers=bearer(tokens["reader"])).status_code == 403
        assert client.post("/items?name=kiwi", headers=bearer(tokens["admin"])).status_code == 201
        assert status("GET", "/audit", "admin") == 403
        assert status("GET", "/audit", "auditor") == 200
        assert status("GET", "/admin/stats", "reader") == 403
        assert status("GET", "/admin/stats", "admin") == 200

        # Roles granted by one organization.
        assert status("GET", "/billing", "admin") == 200
        assert status("GET", "/billing", "globex_admin") == 403
        own = client.get(f"/orgs/{project.org.id}/roles", headers=bearer(tokens["auditor"]))
        assert own.json() == ["admin", "auditor"]
        other = client.get(f"/orgs/{globex.id}/roles", headers=bearer(tokens["auditor"]))
        assert other.status_code == 403
        assert 'error="insufficient_scope"' in other.headers["WWW-Authenticate"]
        theirs = client.get(f"/orgs/{globex.id}/roles", headers=bearer(tokens["globex_admin"]))
        assert theirs.json() == ["admin"]

        # OpenAPI: the route's own 403 is declared; a plain valid-token route has none.
        paths = client.get("/openapi.json").json()["paths"]
        assert "403" in paths["/orgs/{org_id}/roles"]["get"]["responses"]
        assert "403" not in paths["/me"]["get"]["responses"]
        assert paths["/hello"]["get"]["security"] == [{"ZITADEL": []}, {}]


def test_module_level_snippet(
    zitadel_env: dict[str, str], zitadel_token: Callable[..., str]
) -> None:
    from fastapi_zitadel.defaults import set_default_zitadel

    try:
        app = run_snippet("module_level.py")["create_app"]()
        with TestClient(app) as client:
            assert client.get("/reports", headers=bearer(zitadel_token("bob"))).status_code == 403
            admin = bearer(zitadel_token("alice", roles=["admin"]))
            assert client.get("/reports", headers=admin).json() == ["q1", "q2"]
            assert client.get("/whoami", headers=admin).json() == "alice"
            assert client.get("/whoami").status_code == 401
    finally:
        set_default_zitadel(None)


def test_key_file_snippet_has_zitadels_shape(zitadel_project: StandInProject) -> None:
    documented = json.loads((SNIPPETS / "key-file.json").read_text())
    real = zitadel_project.app.key_file
    assert documented.keys() == real.keys()
    assert documented["type"] == real["type"] == "application"
    assert documented["clientId"].endswith("@shop")
    assert all(isinstance(value, str) for value in documented.values())


async def test_introspection_answer_snippet() -> None:
    """The documented answer has the stand-in's shape, and parses as the page says."""
    answer = json.loads((SNIPPETS / "introspection-answer.json").read_text())
    project_id = "298374000000000000"
    principal = Principal.from_claims(answer, project_id=project_id)
    acme, globex = "298373000000000001", "298373500000000009"
    assert principal.has_role("admin", acme)
    assert not principal.has_role("admin", globex)
    assert principal.roles_in_org(globex) == {"reader"}
    assert principal.organization is not None
    assert principal.organization.id == acme
    assert principal.username == "alice"
    assert project_id in principal.audience

    standin = ZitadelStandIn()
    project = StandInProject(standin)
    project.user(
        "alice",
        roles=["admin"],
        name="Alice Adams",
        given_name="Alice",
        family_name="Adams",
        email="alice@acme.localhost",
        email_verified=True,
        locale="en",
    )
    token = project.token("alice")
    async with (
        httpx.AsyncClient(transport=standin.transport()) as http,
        project.introspection(http_client=http) as zitadel,
    ):
        real = dict((await zitadel.verify(token)).claims)
    assert project.project.id in real["aud"]
    normalised = {key.replace(project.project.id, project_id) for key in real}
    assert normalised == set(answer)
    assert (
        answer["urn:zitadel:iam:org:project:roles"]
        == answer[f"urn:zitadel:iam:org:project:{project_id}:roles"]
    )


def test_check_output_snippet(zitadel_env: dict[str, str], zitadel_project: StandInProject) -> None:
    out = io.StringIO()
    assert cli.main(["check"], out=out) == 0, out.getvalue()
    app = zitadel_project.app
    assert app.key_id is not None
    shown = (
        out.getvalue()
        .replace(zitadel_project.standin.issuer, "https://acme-xyz.zitadel.cloud")
        .replace(app.key_id, "298374650000000001")
        .replace(app.client_id, "298374620000000000@shop")
    )
    assert shown == (SNIPPETS / "check-output.txt").read_text()


# The user's own tests of the testing page run as pytest would run them.
USER_TESTS = [
    node.name
    for node in ast.parse((SNIPPETS / "test_items.py").read_text(encoding="utf-8")).body
    if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
]


def test_user_tests_are_found() -> None:
    assert len(USER_TESTS) >= 5


@pytest.mark.parametrize("name", USER_TESTS)
def test_user_test_snippet_passes(
    name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "myapp", load_module("myapp.py", "myapp"))
    user_tests = load_module("test_items.py", "docs_snippet_test_items")
    function = getattr(user_tests, name)
    fixtures = {
        parameter: request.getfixturevalue(parameter)
        for parameter in inspect.signature(function).parameters
    }
    function(**fixtures)


def test_async_snippet_tests_run_in_strict_mode() -> None:
    """pytest-asyncio's default strict mode skips unmarked async tests (a warning, no failure):
    every async test a page shows carries the mark, or its module a ``pytestmark``."""
    unmarked = []
    for path in sorted(SNIPPETS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
            for node in tree.body
        ):
            continue
        for node in tree.body:
            if isinstance(node, ast.AsyncFunctionDef) and node.name.startswith("test"):
                marks = {ast.unparse(decorator) for decorator in node.decorator_list}
                if not marks & {"pytest.mark.asyncio", "pytest.mark.anyio"}:
                    unmarked.append(f"{path.name}:{node.lineno} {node.name}")
    assert not unmarked, unmarked


async def test_standin_in_process_snippet() -> None:
    module = load_module("standin_in_process.py", "docs_snippet_standin_in_process")
    await module.test_verify_in_process()


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_replicas_snippet_survives_redis_down(
    zitadel_env: dict[str, str],
    zitadel_project: StandInProject,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis is an optimisation: with nothing listening there, requests still pass, the
    outage is logged once, and a revoked token is refused after ``invalidate``, which says
    that Redis could not confirm it."""
    pytest.importorskip("redis")
    monkeypatch.setenv("ZITADEL_REDIS_URL", f"redis://127.0.0.1:{_unused_port()}/0")
    monkeypatch.setenv("ZITADEL_TIMEOUT", "1")  # how long invalidate() keeps trying Redis
    snippet = run_snippet("replicas.py")
    zitadel: ZitadelIntrospection = snippet["zitadel"]
    app: FastAPI = snippet["app"]

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    token = zitadel_project.token("alice")
    caplog.set_level(logging.WARNING, logger="fastapi_zitadel")
    transport = httpx.ASGITransport(app=app)
    async with zitadel, httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        assert (await http.get("/ping")).status_code == 401
        assert (await http.get("/ping", headers=bearer(token))).json() == "pong"
        zitadel_project.standin.revoke(token)
        assert (await zitadel.verify(token)).username == "alice"  # still cached
        assert not await snippet["token_revoked"](token)  # Redis could not confirm it...
        with pytest.raises(InvalidTokenError):  # ...but this process refuses the token
            await zitadel.verify(token)
    outages = [r for r in caplog.records if "shared cache (Redis) unavailable" in r.message]
    assert len(outages) == 1


async def test_events_snippet_refuses_a_deactivated_users_token(
    zitadel_env: dict[str, str],
    zitadel_project: StandInProject,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page's app takes a signed user.deactivated event, and the user's token (which the
    stand-in still calls active) is refused from then on; the health route shows it."""
    monkeypatch.setenv("ZITADEL_EVENTS_SIGNING_KEY", "docs-key")
    snippet = run_snippet("events.py")
    zitadel: ZitadelIntrospection = snippet["zitadel"]
    app: FastAPI = snippet["app"]
    token = zitadel_project.token("alice")
    transport = httpx.ASGITransport(app=app)
    async with zitadel, httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        sub = (await http.get("/me", headers=bearer(token))).json()["sub"]
        now = int(time.time()) + 1
        body = json.dumps(
            {
                "aggregateID": sub,
                "aggregateType": "user",
                "sequence": 1,
                "event_type": "user.deactivated",
                "created_at": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}Z",
            }
        ).encode()
        mac = hmac.new(b"docs-key", f"{now}.".encode() + body, hashlib.sha256).hexdigest()
        signature = {"ZITADEL-Signature": f"t={now},v1={mac}"}
        assert (await http.post("/zitadel/events", content=body, headers=signature)).is_success
        assert (await http.get("/me", headers=bearer(token))).status_code == 401
        health = (await http.get("/healthz")).json()
    assert health["events_applied"] == 1
    assert health["events_refused"] == {}


def test_health_snippet(zitadel_env: dict[str, str], zitadel_token: Callable[..., str]) -> None:
    app = run_snippet("health.py")["app"]
    token = zitadel_token("alice")
    with TestClient(app) as client:
        before = client.get("/healthz").json()
        assert before["auth"] == "ok"
        assert before["misses"] == 0
        assert before["cache_hit_ratio"] is None
        for _ in range(2):
            assert client.get("/me", headers=bearer(token)).status_code == 200
        after = client.get("/healthz").json()
    assert after["misses"] == 1
    assert after["cache_hits"] == 1
    assert after["cache_hit_ratio"] == 0.5
    assert after["idp_calls"]["active"] == 1
    assert after["circuit_state"] == "closed"
    assert after["cache_size"] == 1


_TELEMETRY_RUN = """
import asyncio, json, runpy, sys

import httpx
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fastapi_zitadel.testing import StandInProject, ZitadelStandIn

reader, exporter = InMemoryMetricReader(), InMemorySpanExporter()
runpy.run_path(sys.argv[1])["configure_telemetry"](reader, exporter)


async def main() -> None:
    standin = ZitadelStandIn()
    project = StandInProject(standin)
    token = project.token("alice")
    async with httpx.AsyncClient(transport=standin.transport()) as http:
        async with project.introspection(http_client=http) as zitadel:
            await zitadel.verify(token)
            await zitadel.verify(token)


asyncio.run(main())
trace.get_tracer_provider().force_flush()
points = {}
for resource in reader.get_metrics_data().resource_metrics:
    for scope in resource.scope_metrics:
        for metric in scope.metrics:
            for point in metric.data.data_points:
                label = ",".join(f"{k}={v}" for k, v in sorted(point.attributes.items()))
                points[f"{metric.name}[{label}]"] = getattr(point, "value", None)
spans = [(span.name, dict(span.attributes)) for span in exporter.get_finished_spans()]
print(json.dumps({"points": points, "spans": spans}))
"""


@pytest.mark.subprocess
def test_telemetry_snippet() -> None:
    """In a fresh interpreter: OpenTelemetry's global providers can be set only once."""
    pytest.importorskip("opentelemetry.sdk")
    completed = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _TELEMETRY_RUN, str(SNIPPETS / "telemetry.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    points = result["points"]
    assert points["fastapi_zitadel.lookups[result=hit]"] == 1
    assert points["fastapi_zitadel.lookups[result=miss]"] == 1
    assert points["fastapi_zitadel.idp.calls[outcome=active]"] == 1
    assert "fastapi_zitadel.idp.duration[outcome=active]" in points
    assert result["spans"] == [["zitadel.introspect", {"fastapi_zitadel.outcome": "active"}]]


async def test_verify_snippet_tells_failures_apart() -> None:
    who_is = load_module("verify.py", "docs_snippet_verify").who_is
    standin = ZitadelStandIn()
    project = StandInProject(standin)
    token = project.token("alice")
    other = standin.add_api_app(project.project, "other")
    forged = {**project.app.key_file, "key": other.key_file["key"]}  # the right id, wrong key
    async with httpx.AsyncClient(transport=standin.transport()) as http:
        async with project.introspection(http_client=http, max_retries=0) as zitadel:
            assert await who_is(zitadel, token) == f"subject {project.user('alice').id}"
            garbage = await who_is(zitadel, "not-a-token")
            assert garbage == "invalid token: the token is not active"
            standin.inject("status", status=503)
            outage = await who_is(zitadel, project.token("bob"))
            assert outage == "try again in 1 s: identity provider answered HTTP 503"
        async with ZitadelIntrospection(standin.issuer, key_file=forged, http_client=http) as bad:
            rejected = await who_is(bad, token)
    assert rejected == (
        f"our credentials were rejected (400 unauthorized_client), key {forged['keyId']}"
    )


async def test_logging_snippet(
    zitadel_introspection: ZitadelIntrospection,
    zitadel_token: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    show_auth_logs = load_module("logging_setup.py", "docs_snippet_logging").show_auth_logs
    logger = logging.getLogger("fastapi_zitadel")
    handler = show_auth_logs(logging.DEBUG)
    try:
        await zitadel_introspection.verify(zitadel_token("alice"))
        with pytest.raises(InvalidTokenError):
            await zitadel_introspection.verify("not-a-token")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    lines = capsys.readouterr().err.splitlines()
    assert any(re.search(r"DEBUG fastapi_zitadel: token \w{8} is active, cached", x) for x in lines)
    assert any(re.search(r"DEBUG fastapi_zitadel: token \w{8} is inactive", x) for x in lines)


# override_principal and the module-level functions: what the pages say is what happens ------

OVERRIDE_PAGES = [
    ROOT / "README.md",
    DOCS / "testing.md",
    DOCS / "scopes-and-roles.md",
    DOCS / "troubleshooting.md",
]
# What earlier versions of the pages claimed, and the behaviour below contradicts.
WRONG_CLAIMS = [
    "are not reached by `override_principal`",
    "module-level functions still authenticate for real",
    "which `override_principal` does not replace",
]


async def test_override_principal_module_level_docs_match_behaviour() -> None:
    from fastapi import Depends

    from fastapi_zitadel.defaults import require_role, set_default_zitadel
    from fastapi_zitadel.testing import override_principal

    def instance() -> ZitadelIntrospection:
        return ZitadelIntrospection(
            "https://acme.zitadel.test", client_id="tests", client_secret="unused"
        )

    app = FastAPI()

    @app.get("/reports", dependencies=[Depends(require_role("admin"))])
    async def reports() -> str:
        return "ok"

    zitadel, other = instance(), instance()
    admin = Principal(subject="ann", roles={"admin": {}})
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            set_default_zitadel(zitadel)
            with override_principal(app, zitadel, admin):
                covered = (await http.get("/reports")).status_code
            set_default_zitadel(other)  # the module-level functions are bound to another one
            with override_principal(app, zitadel, admin):
                not_covered = (await http.get("/reports")).status_code
    finally:
        set_default_zitadel(None)
    assert (covered, not_covered) == (200, 401)

    for page in OVERRIDE_PAGES:
        text = " ".join(page.read_text(encoding="utf-8").split())
        assert "also covers the module-level" in text, page.name
        assert "default instance" in text, page.name  # the condition is stated
        for claim in WRONG_CLAIMS:
            assert claim not in text, (page.name, claim)


# Calling other APIs (calling-apis.md): the snippets against a shop served on loopback ----------


@pytest.fixture
def shop(zitadel_project: StandInProject, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from example_app.app import create_app
    from fastapi_zitadel.defaults import set_default_zitadel
    from fastapi_zitadel.testing import LoopbackServer

    app = create_app(zitadel_project.introspection(), org_id=zitadel_project.org.id)
    with LoopbackServer(app) as url:
        monkeypatch.setenv("ZITADEL_ISSUER", zitadel_project.standin.issuer)
        monkeypatch.setenv("SHOP_PROJECT_ID", zitadel_project.project.id)
        monkeypatch.setenv("SHOP_URL", url)
        yield url
    set_default_zitadel(None)


async def test_service_account_snippet(
    zitadel_project: StandInProject, shop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    zitadel_project.service_user("reporter", roles=["reader"])
    monkeypatch.setenv("REPORTER_KEY_FILE", str(zitadel_project.service_key_path("reporter")))
    module = load_module("service_account.py", "docs_snippet_service_account")
    assert await module.list_items() == ["apple", "pear"]
    assert await module.list_items() == ["apple", "pear"]
    assert zitadel_project.standin.token_calls == 1  # one token for both calls
    await module.auth.aclose()


def test_service_account_sync_snippet(
    zitadel_project: StandInProject, shop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    robot = zitadel_project.service_user("reporter", roles=["admin"], with_secret=True)
    assert robot.client_secret is not None
    monkeypatch.setenv("REPORTER_CLIENT_ID", robot.username)
    monkeypatch.setenv("REPORTER_CLIENT_SECRET", robot.client_secret)
    snippet = run_snippet("service_account_sync.py")
    assert snippet["stats"].status_code == 200
    assert snippet["stats"].json() == {"items": 2}
    issued = zitadel_project.standin.directory.tokens[snippet["token"]]
    assert issued.user is robot
    assert "urn:zitadel:iam:org:projects:roles" in issued.scopes


def test_token_exchange_snippet(
    zitadel_project: StandInProject, shop: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    standin = zitadel_project.standin
    gateway = standin.add_project("gateway")
    gateway_api = standin.add_api_app(gateway, "gateway-api")
    exchanging = standin.add_web_app(
        gateway,
        "gateway",
        auth="private_key_jwt",
        grant_types=["urn:ietf:params:oauth:grant-type:token-exchange"],
    )
    robot = zitadel_project.service_user("gateway-robot")
    robot.can_impersonate = True
    files = {"api": gateway_api.key_file, "app": exchanging.key_file}
    for name, key in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(key))
    monkeypatch.setenv("ZITADEL_KEY_FILE", str(tmp_path / "api.json"))
    monkeypatch.setenv("ZITADEL_PROJECT_ID", gateway.id)
    monkeypatch.setenv("GATEWAY_APP_KEY_FILE", str(tmp_path / "app.json"))
    monkeypatch.setenv(
        "GATEWAY_ROBOT_KEY_FILE", str(zitadel_project.service_key_path("gateway-robot"))
    )
    alice = zitadel_project.user("alice", roles=["reader"])
    shop_audience = f"urn:zitadel:iam:org:project:id:{zitadel_project.project.id}:aud"
    token = standin.issue_token(alice, gateway, scopes=["openid", shop_audience])
    snippet = run_snippet("token_exchange.py")
    with TestClient(snippet["app"]) as client:
        answer = client.get("/shop-items", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert answer.json() == ["apple", "pear"]
    exchanged = [found for found in standin.directory.tokens.values() if found.actor]
    acting = [(found.user, (found.actor or {}).get("sub")) for found in exchanged]
    assert acting == [(alice, robot.id)]
    assert exchanged[0].audience[-1] == zitadel_project.project.id


# The middleware, RFC 9728, the app's own user, MCP --------------------------------------


def test_middleware_snippet(zitadel_env: dict[str, str], zitadel_token: Callable[..., str]) -> None:
    app = run_snippet("middleware.py")["app"]
    with TestClient(app) as client:
        assert client.get("/health").json() == {"ok": True}
        # What a browser needs before it has a token: Swagger UI and its login's return page.
        for path in (app.docs_url, app.swagger_ui_oauth2_redirect_url, app.openapi_url):
            assert client.get(path).status_code == 200, path
        assert client.options("/me").status_code != 401  # preflight passes
        assert client.get("/me").status_code == 401
        admin, reader = zitadel_token("alice", roles=["admin"]), zitadel_token("bob")
        me = client.get("/me", headers=bearer(admin)).json()
        assert me["name"] == "alice"
        assert "role:admin" in me["scopes"]
        assert client.get("/admin", headers=bearer(admin)).json() == {"ok": True}
        assert client.get("/admin", headers=bearer(reader)).status_code == 403
        assert client.get("/principal", headers=bearer(admin)).json()["subject"]


def test_own_user_snippet(zitadel_env: dict[str, str], zitadel_token: Callable[..., str]) -> None:
    snippet = run_snippet("own_user.py")
    with TestClient(snippet["app"]) as client:
        answer = client.get("/account", headers=bearer(zitadel_token("alice")))
        assert answer.json() == {"id": 1, "plan": "gold"}
        assert client.get("/account", headers=bearer(zitadel_token("bob"))).status_code == 403
        assert client.get("/account").status_code == 401


def test_resource_metadata_snippet(
    zitadel_env: dict[str, str],
    zitadel_token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZITADEL_RESOURCE", "https://api.example.com/shop")
    app = run_snippet("resource_metadata.py")["app"]
    url = "https://api.example.com/.well-known/oauth-protected-resource/shop"
    with TestClient(app) as client:
        document = client.get("/.well-known/oauth-protected-resource/shop").json()
        assert document == {
            "resource": "https://api.example.com/shop",
            "authorization_servers": [zitadel_env["ZITADEL_ISSUER"]],
            "bearer_methods_supported": ["header"],
            "scopes_supported": ["profile"],
            "resource_name": "Example shop",
        }
        challenge = client.get("/shop/me").headers["www-authenticate"]
        assert challenge == f'Bearer realm="api", resource_metadata="{url}"'
        # Protected the ZITADEL way: a role, and a scope ZITADEL puts in its tokens.
        reader = bearer(zitadel_token("bob", roles=["reader"]))
        assert client.get("/shop/items", headers=reader).json() == ["apple", "pear"]
        assert client.get("/shop/items", headers=bearer(zitadel_token("eve"))).status_code == 403
        assert client.get("/shop/me", headers=reader).status_code == 200


def test_mcp_server_snippet(
    zitadel_env: dict[str, str],
    zitadel_token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZITADEL_RESOURCE", "http://127.0.0.1:8000/mcp")
    app = run_snippet("mcp_server.py")["app"]
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "docs", "version": "1"},
        },
    }
    headers = {"Accept": "application/json, text/event-stream"}
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        refused = client.post("/mcp", json=initialize, headers=headers)
        assert refused.status_code == 401
        assert (
            'resource_metadata="http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp"'
            in (refused.headers["www-authenticate"])
        )
        token = zitadel_token("alice")
        accepted = client.post("/mcp", json=initialize, headers={**headers, **bearer(token)})
        assert accepted.status_code == 200
