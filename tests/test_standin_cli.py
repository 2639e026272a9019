"""The stand-in's command line as a user runs it, in a subprocess on loopback: the printed
variables, tokens and service-user ``curl`` work; ``--state-dir`` keeps them valid across a
restart (private files); a port already in use is one line and exit code 4, for the stand-in,
``fastapi-zitadel dev-issuer`` and the example app alike."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from fastapi_zitadel import InvalidTokenError, ZitadelIntrospection

pytestmark = pytest.mark.subprocess  # commands and servers in processes of their own

ROOT = Path(__file__).resolve().parent.parent
ENV = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}  # no ZITADEL_* from the outside
STANDIN = [sys.executable, "-m", "fastapi_zitadel.testing"]


@dataclass
class Printed:
    lines: list[str]

    def mentions(self, text: str) -> bool:
        """Whether a printed line contains ``text`` (the lines hold tokens: assertions on
        this show no output when they fail)."""
        return any(text in line for line in self.lines)

    @property
    def env(self) -> dict[str, str]:
        found = {}
        for line in self.lines:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                found[name] = shlex.split(value)[0]
        return found

    def token(self, username: str) -> str:
        line = next(x for x in self.lines if x.startswith(f"token for {username} ("))
        return line.rsplit(": ", 1)[1]

    @property
    def curl(self) -> str:
        return next(line.strip() for line in self.lines if line.strip().startswith("curl "))


@contextmanager
def standin(*args: str, cwd: Path = ROOT) -> Iterator[Printed]:
    """Run the stand-in CLI until it serves; yield what it printed; stop it with Ctrl-C."""
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [*STANDIN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=ENV,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        while not lines or lines[-1] != "serving until Ctrl-C":
            line = process.stdout.readline()
            if not line:
                _, errors = process.communicate(timeout=10)
                # Not the printed lines: they hold tokens and a client secret.
                raise AssertionError(f"the stand-in stopped after {len(lines)} lines: {errors}")
            lines.append(line.rstrip("\n"))
        yield Printed(lines)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)


def run_curl(command: str) -> dict[str, object]:
    words = shlex.split(command)
    assert words[0] == "curl"
    assert all("127.0.0.1" in word for word in words if word.startswith("http"))  # loopback only
    completed = subprocess.run(  # noqa: S603 - the printed command, against loopback
        ["/usr/bin/curl", "--max-time", "10", *words[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answer: dict[str, object] = json.loads(completed.stdout)
    return answer


def roles_of(env: dict[str, str], token: str) -> set[str]:
    """The roles an API configured with the printed variables sees in ``token``."""
    return asyncio.run(_roles_of(env, token))


async def _roles_of(env: dict[str, str], token: str) -> set[str]:
    zitadel = ZitadelIntrospection(
        env["ZITADEL_ISSUER"],
        key_file=env["ZITADEL_KEY_FILE"],
        project_id=env["ZITADEL_PROJECT_ID"],
        audience=env["ZITADEL_AUDIENCE"],
    )
    async with zitadel:
        return set((await zitadel.verify(token)).roles)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_printed_tokens_and_curl_work_and_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    users = ["--user", "alice:admin", "--user", "bob:reader,auditor", "--user", "carol"]
    with standin("--state-dir", str(state), "--service-user", "robot:admin", *users) as first:
        env = first.env
        assert set(env) == {
            "ZITADEL_ISSUER",
            "ZITADEL_KEY_FILE",
            "ZITADEL_PROJECT_ID",
            "ZITADEL_AUDIENCE",
            "ZITADEL_SWAGGER_CLIENT_ID",
        }
        assert roles_of(env, first.token("alice")) == {"admin"}
        assert roles_of(env, first.token("bob")) == {"reader", "auditor"}
        assert roles_of(env, first.token("carol")) == set()
        # The service user's curl, as printed: the client credentials grant with the roles
        # scope and the project's audience scope.
        assert "urn:zitadel:iam:org:projects:roles" in first.curl
        assert f"urn:zitadel:iam:org:project:id:{env['ZITADEL_PROJECT_ID']}:aud" in first.curl
        answer = run_curl(first.curl)
        assert answer["token_type"] == "Bearer"
        service_token = str(answer["access_token"])
        assert roles_of(env, service_token) == {"admin"}
        assert not first.mentions("PRIVATE KEY")  # the key stays in its file
        key_file = Path(env["ZITADEL_KEY_FILE"])
        assert key_file.parent == state
        assert json.loads(key_file.read_text())["type"] == "application"
        old_alice = first.token("alice")

    assert mode(state) == 0o700
    assert {path.name for path in state.iterdir()} == {"state.json", key_file.name}
    for path in state.iterdir():
        assert mode(path) == 0o600, path

    # A restart with the same state directory (and no --port: the saved one is reused).
    with standin("--state-dir", str(state), "--service-user", "robot:admin", *users) as second:
        assert second.env == env
        assert second.curl == first.curl  # the same client id and secret
        assert roles_of(env, str(run_curl(second.curl)["access_token"])) == {"admin"}
        assert roles_of(env, second.token("alice")) == {"admin"}
        with pytest.raises(InvalidTokenError):  # tokens are not kept, as the output says
            roles_of(env, old_alice)
        assert second.mentions("tokens are new every run")


def test_without_a_state_dir_nothing_is_kept() -> None:
    with standin("--port", "0") as printed:
        assert printed.mentions("nothing is kept: --state-dir")
        assert printed.token("alice")  # the default users: alice (admin) and bob (reader)
        assert any(line.startswith("token for bob (reader): ") for line in printed.lines)
        issuer = printed.env["ZITADEL_ISSUER"]
        discovery = httpx.get(issuer + "/.well-known/openid-configuration").json()
        assert discovery["issuer"] == issuer


def test_bad_user_flag_is_a_usage_error() -> None:
    completed = subprocess.run(  # noqa: S603 - our own interpreter and module
        [*STANDIN, "--user", ":admin"], capture_output=True, text=True, env=ENV, check=False
    )
    assert completed.returncode == 2
    assert "use NAME or NAME:ROLE" in completed.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        yield blocker.getsockname()[1]


@pytest.mark.parametrize(
    "command",
    [
        STANDIN,
        [sys.executable, "-m", "fastapi_zitadel", "dev-issuer"],
        [sys.executable, "-m", "example_app"],
    ],
    ids=["standin", "dev-issuer", "example"],
)
def test_port_in_use_is_one_line_and_exit_4(command: list[str], taken_port: int) -> None:
    completed = subprocess.run(  # noqa: S603 - our own interpreter and modules
        [*command, "--port", str(taken_port)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 4, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert f"port {taken_port} on 127.0.0.1 is already in use" in lines[0]
    assert "choose another port with --port" in lines[0]
    if "dev-issuer" in command:  # the command typed, not the one it runs
        assert lines[0].startswith("fastapi-zitadel dev-issuer: "), lines[0]
    assert "Traceback" not in completed.stderr
    assert completed.stdout == ""  # nothing started, nothing printed


def test_exit_code_4_is_documented() -> None:
    for page in (ROOT / "README.md", ROOT / "docs" / "cli-and-metrics.md"):
        text = " ".join(page.read_text(encoding="utf-8").split())
        pattern = r"\b4\b[ |]*network:[^|]*the port to listen on (?:is )?already in use"
        assert re.search(pattern, text), page


@pytest.mark.subprocess
def test_a_relative_state_dir_prints_an_absolute_key_file(tmp_path: Path) -> None:
    """The printed ZITADEL_KEY_FILE holds from the folder the API is started in, not only
    from the one the stand-in was."""
    with standin("--port", "0", "--state-dir", ".standin", cwd=tmp_path) as printed:
        key_file = Path(printed.env["ZITADEL_KEY_FILE"])
        assert key_file.is_absolute()
        assert key_file.parent == (tmp_path / ".standin").resolve()
        assert key_file.is_file()
        assert printed.mentions(f"state kept in {(tmp_path / '.standin').resolve()}")


@pytest.mark.subprocess
def test_jwt_tokens_for_trying_local_validation_by_hand() -> None:
    with standin("--port", "0", "--jwt") as printed:
        env = printed.env
        token = printed.token("alice")
        assert printed.mentions("with ZITADEL_VALIDATION=local")
        assert jwt.get_unverified_header(token)["typ"] == "JWT"

        async def verified_locally() -> tuple[str, set[str]]:
            zitadel = ZitadelIntrospection(
                env["ZITADEL_ISSUER"],
                validation="local",
                audience=env["ZITADEL_AUDIENCE"],
                project_id=env["ZITADEL_PROJECT_ID"],
            )
            async with zitadel:
                principal = await zitadel.verify(token)
            return principal.verified_by, set(principal.roles)

        assert asyncio.run(verified_locally()) == ("jwt", {"admin"})
        assert roles_of(env, token) == {"admin"}  # introspection accepts it too
