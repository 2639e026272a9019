"""The command-line tool end to end against the stand-in on loopback: every exit code, every
diagnosis, the introspect table and JSON, assertions, and the dev issuer."""

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest

from fastapi_zitadel._cli import main
from fastapi_zitadel.testing import StandInProject

from .cli_support import run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(zitadel_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("ZITADEL_AUDIENCE")  # `check` introspects a made-up token
    return zitadel_env


def test_check_passes(env: dict[str, str]) -> None:
    code, text = run("check")
    assert code == 0, text
    assert "[ok] discovery: issuer matches" in text
    assert "[ok] credentials: accepted" in text
    assert "[ok] all checks passed" in text


def forged_key_file(project: StandInProject, folder: Path) -> tuple[Path, dict[str, Any]]:
    """The API application's key file with another application's key inside."""
    other = project.standin.add_api_app(project.project, "other")
    forged = {**project.app.key_file, "key": other.key_file["key"]}
    path = folder / "forged.json"
    path.write_text(json.dumps(forged))
    return path, forged


def test_check_wrong_key_names_key_and_fix(
    env: dict[str, str], zitadel_project: StandInProject, tmp_path: Path
) -> None:
    path, forged = forged_key_file(zitadel_project, tmp_path)
    code, text = run("--key-file", str(path), "check")
    assert code == 5, text
    assert "rejected our client authentication (HTTP 400 unauthorized_client)" in text
    assert f"check that key id {forged['keyId']} belongs to an API application" in text


def test_check_unknown_key_id(env: dict[str, str], tmp_path: Path) -> None:
    key = json.loads(Path(env["ZITADEL_KEY_FILE"]).read_text())
    path = tmp_path / "unknown.json"
    path.write_text(json.dumps({**key, "keyId": "999"}))
    code, text = run("--key-file", str(path), "check")
    assert code == 5
    assert "key id 999" in text


def test_check_issuer_mismatch_is_configuration(env: dict[str, str]) -> None:
    other_spelling = env["ZITADEL_ISSUER"].replace("127.0.0.1", "localhost")
    code, text = run("--issuer", other_spelling, "check")
    assert code == 3, text
    assert "expected exactly" in text
    assert "set ZITADEL_ISSUER to exactly the issuer" in text


def test_check_unreachable_is_network(env: dict[str, str]) -> None:
    from fastapi_zitadel.testing import LoopbackServer

    closed = LoopbackServer(None)
    closed.stop()
    code, text = run("--issuer", closed.url, "check")
    assert code == 4, text
    assert "unreachable" in text


def test_check_broken_key_file_is_configuration(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text("{not json")
    code, text = run("--key-file", str(path), "check")
    assert code == 3
    assert "not valid JSON" in text
    assert "ZITADEL_KEY_FILE" in text


def test_check_bad_setting_names_variable(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZITADEL_CACHE_TTL", "soon")
    code, text = run("check")
    assert code == 3
    assert "ZITADEL_CACHE_TTL" in text


def test_introspect_table_json_and_stdin(
    env: dict[str, str], zitadel_project: StandInProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = zitadel_project.token("alice", roles=["admin", "reader"])
    code, text = run("introspect", token)
    assert code == 0, text
    assert "username      alice" in text
    assert f"admin       {zitadel_project.org.id} (acme.localhost)" in text
    assert token not in text
    code, text = run("introspect", "--json", token)
    data: dict[str, Any] = json.loads(text)
    assert data["username"] == "alice"
    assert set(data["roles"]) == {"admin", "reader"}
    monkeypatch.setattr(sys, "stdin", io.StringIO(token + "\n"))
    assert run("introspect")[0] == 0
    code, text = run("introspect", "not-a-token")
    assert code == 6
    assert "[invalid] the token is not active" in text


def test_assertion(env: dict[str, str], zitadel_project: StandInProject) -> None:
    code, text = run("assertion")
    assert code == 0
    assertion = text.strip()
    key = zitadel_project.app.private_key
    assert key is not None
    claims = jwt.decode(
        assertion, key.public_key(), algorithms=["RS256"], audience=env["ZITADEL_ISSUER"]
    )
    assert claims["iss"] == claims["sub"] == zitadel_project.app.client_id


@pytest.mark.subprocess
def test_module_entry_point_and_dev_issuer() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "fastapi_zitadel", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 0
    assert "exit codes" in completed.stdout
    dev = subprocess.Popen(
        [sys.executable, "-m", "fastapi_zitadel", "dev-issuer"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert dev.stdout is not None
        lines = [dev.stdout.readline() for _ in range(9)]
        key_path = next(line.split(": ", 1)[1].strip() for line in lines if "key file" in line)
        assert json.loads(Path(key_path).read_text())["type"] == "application"
        while dev.stdout.readline().strip() != "serving until Ctrl-C":
            pass
    finally:
        dev.terminate()
        dev.wait(timeout=10)
    assert lines[0].startswith("ZITADEL stand-in: http://127.0.0.1:")
    assert any(line.startswith("token for alice (admin): ") for line in lines)
    assert any(line.startswith("token for bob (reader): ") for line in lines)
    assert not Path(key_path).exists()  # its private key is removed when it stops


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_introspect_without_a_token_on_a_terminal_is_a_usage_error(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal())
    code, text = run("introspect")
    assert code == 2
    assert "introspect needs a token" in text


def test_introspect_drops_a_bearer_prefix(
    env: dict[str, str], zitadel_project: StandInProject
) -> None:
    token = zitadel_project.token("alice")
    code, text = run("introspect", f"Bearer {token}")
    assert code == 0, text
    assert "username      alice" in text


def test_flags_after_the_command(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    issuer = env["ZITADEL_ISSUER"]
    monkeypatch.setenv("ZITADEL_ISSUER", "https://wrong.example.test")
    code, text = run("check", "--issuer", issuer)
    assert code == 0, text
    code, text = run("--issuer", "https://wrong.example.test", "check", "--issuer", issuer)
    assert code == 0, text  # the flag nearest the command wins


def test_a_failure_is_one_line_not_a_log_record_too(
    env: dict[str, str],
    zitadel_project: StandInProject,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = forged_key_file(zitadel_project, tmp_path)
    code, text = run("--key-file", str(path), "check")
    assert code == 5
    captured = capsys.readouterr()
    assert "rejected our client authentication" not in captured.err  # no log line beside
    assert sum("[FAIL]" in line for line in text.splitlines()) == 1


def test_introspect_shows_the_audiences_of_a_refused_token(
    env: dict[str, str], zitadel_project: StandInProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZITADEL_AUDIENCE", "some-other-api")
    code, text = run("introspect", zitadel_project.token("alice"))
    assert code == 6
    assert "audience mismatch" in text
    assert "accepted (audience): some-other-api" in text
    assert zitadel_project.project.id in text  # the token's own audience


def test_introspect_notes_roles_of_another_project(
    env: dict[str, str], zitadel_project: StandInProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZITADEL_PROJECT_ID", "999999")
    code, text = run("introspect", zitadel_project.token("alice", roles=["admin"]))
    assert code == 0, text
    assert "[note] no roles of project 999999" in text
    assert f"roles of project {zitadel_project.project.id}" in text


def test_check_names_a_service_users_credentials(
    env: dict[str, str],
    zitadel_project: StandInProject,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """ZITADEL lets only applications introspect: the stand-in refuses a service user there
    as ZITADEL does (400 unauthorized_client), and ``check`` says which credential is needed."""
    robot = zitadel_project.standin.add_service_user(zitadel_project.org, "robot", with_secret=True)
    assert robot.client_secret is not None
    monkeypatch.delenv("ZITADEL_KEY_FILE")
    monkeypatch.setenv("ZITADEL_CLIENT_ID", robot.id)
    monkeypatch.setenv("ZITADEL_CLIENT_SECRET", robot.client_secret)
    code, text = run("check")
    assert code == 5, text
    assert "HTTP 400 unauthorized_client" in text
    assert "a service user's id and secret cannot introspect" in text
    assert robot.client_secret not in text
    key = {"type": "serviceaccount", "keyId": "k9", "userId": robot.id}
    key["key"] = json.loads(Path(env["ZITADEL_KEY_FILE"]).read_text())["key"]
    path = tmp_path / "robot.json"
    path.write_text(json.dumps(key))
    monkeypatch.delenv("ZITADEL_CLIENT_ID")
    monkeypatch.delenv("ZITADEL_CLIENT_SECRET")
    code, text = run("--key-file", str(path), "check")
    assert code == 3, text
    assert "a service user's key" in text


# token: a service user's access token -------------------------------------------------------


def run_token(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["token", *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def roles_of(zitadel_project: StandInProject, token: str) -> set[str]:
    async with zitadel_project.introspection() as zitadel:
        return set((await zitadel.verify(token)).roles)


async def test_token_with_a_key_prints_only_the_token(
    env: dict[str, str], zitadel_project: StandInProject
) -> None:
    robot = zitadel_project.service_user("robot", roles=["reader"])
    key_path = zitadel_project.service_key_path("robot")
    project = zitadel_project.project.id
    code, out, err = run_token("--key-file", str(key_path), "--project-id", project, "--roles")
    assert code == 0, err
    token = out.strip()
    assert out == token + "\n"  # stdout: the token and nothing else
    assert token not in err
    assert f"service user {robot.id}" in err
    assert "urn:zitadel:iam:org:projects:roles" in err
    assert await roles_of(zitadel_project, token) == {"reader"}


async def test_token_with_a_secret_from_the_environment(
    env: dict[str, str], zitadel_project: StandInProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    robot = zitadel_project.service_user("robot", roles=["admin"], with_secret=True)
    assert robot.client_secret is not None
    monkeypatch.setenv("ZITADEL_CLIENT_SECRET", robot.client_secret)
    project = zitadel_project.project.id
    code, out, err = run_token("--client-id", robot.username, "--project-id", project)
    assert code == 0, err
    assert await roles_of(zitadel_project, out.strip()) == {"admin"}
    assert robot.client_secret not in err


def test_token_exit_codes(
    env: dict[str, str], zitadel_project: StandInProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    robot = zitadel_project.service_user("robot", with_secret=True)
    # 5: the secret rejected, with ZITADEL's answer and the fix; the secret never shown
    code, out, err = run_token("--client-id", robot.username, "--client-secret", "guessed-wrong")
    assert (code, out) == (5, "")
    assert "Errors.User.Machine.Secret.Invalid" in err
    assert "[fix]" in err
    assert "guessed-wrong" not in err
    assert "no --project-id" in err
    # 3: the API application's key where a service user's is needed
    code, out, err = run_token("--key-file", env["ZITADEL_KEY_FILE"])
    assert (code, out) == (3, "")
    assert "needs a service user's key" in err
    # 4: the issuer unreachable
    from fastapi_zitadel.testing import LoopbackServer

    closed = LoopbackServer(None)
    closed.stop()
    key = str(zitadel_project.service_key_path("robot"))
    code, out, err = main_with_issuer(closed.url, "--key-file", key)
    assert (code, out) == (4, "")
    # 2: usage
    monkeypatch.delenv("ZITADEL_CLIENT_SECRET", raising=False)
    for argv in ([], ["--client-id", robot.username]):
        with pytest.raises(SystemExit) as usage:
            run_token(*argv)
        assert usage.value.code == 2


def main_with_issuer(issuer: str, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--issuer", issuer, "token", *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_check_says_what_each_key_is_for(
    env: dict[str, str], zitadel_project: StandInProject
) -> None:
    code, text = run("check")
    assert code == 0, text
    assert "[ok] key: an application's key" in text
    zitadel_project.service_user("robot")
    key = str(zitadel_project.service_key_path("robot"))
    code, text = run("--key-file", key, "check")
    assert code == 3, text
    assert "a service user's key" in text
    assert "ZitadelIntrospection, which needs an application's key" in text
    assert "fastapi-zitadel token --key-file" in text
    assert "PRIVATE KEY" not in text


@pytest.mark.parametrize("prefix", ["-", "--", "-v", "--json"])
def test_a_token_starting_with_a_dash_is_a_token(
    env: dict[str, str], prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tokens are random base64url: one in 64 starts with '-'. It is read as the token (never
    as an option, which argparse would refuse and print, token included, on stderr)."""
    token = prefix + "kmWbqnUv9TcE5oTzmGrWcWq3.abc"
    code, text = run("introspect", token)
    assert code == 6, text
    assert "[invalid]" in text
    code, text = run("introspect", token, "--json")
    assert code == 6, text
    assert token not in capsys.readouterr().err


@pytest.fixture(params=[False, True], ids=["plain", "swagger-login"])
def swagger_login(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """With ZITADEL_SWAGGER_CLIENT_ID (the stand-in says to export it), opening the instance
    fetches discovery first: the diagnosis must be the same either way."""
    if request.param:
        monkeypatch.setenv("ZITADEL_SWAGGER_CLIENT_ID", "310000000000000006@shop-web")
    return bool(request.param)


@pytest.mark.loopback
@pytest.mark.parametrize("command", ["check", "introspect"])
def test_an_issuer_mismatch_is_named_whoever_fetched_discovery_first(
    env: dict[str, str], swagger_login: bool, command: str
) -> None:
    other_spelling = env["ZITADEL_ISSUER"].replace("127.0.0.1", "localhost")
    argv = [
        "--issuer",
        other_spelling,
        command,
        *(["some-token"] if command == "introspect" else []),
    ]
    code, text = run(*argv)
    assert code == 3, text
    assert f"names issuer '{env['ZITADEL_ISSUER']}', expected exactly '{other_spelling}'" in text
    assert "[fix] set ZITADEL_ISSUER to exactly the issuer" in text
    assert "recently" not in text


@pytest.mark.loopback
@pytest.mark.parametrize("command", ["check", "introspect"])
def test_an_unreachable_issuer_says_connection_refused(
    env: dict[str, str], swagger_login: bool, command: str
) -> None:
    from fastapi_zitadel.testing import LoopbackServer

    closed = LoopbackServer(None)
    closed.stop()
    token = ["some-token"] if command == "introspect" else []
    code, text = run("--issuer", closed.url, command, *token)
    assert code == 4, text
    assert "unreachable (connection refused: nothing listens on that host and port)" in text
    assert "[fix] check ZITADEL_ISSUER" in text


@pytest.mark.loopback
@pytest.mark.parametrize("command", ["check", "introspect"])
def test_https_against_a_plain_http_issuer_says_so(
    env: dict[str, str], swagger_login: bool, command: str
) -> None:
    plain = env["ZITADEL_ISSUER"]
    assert plain.startswith("http://")
    token = ["some-token"] if command == "introspect" else []
    code, text = run("--issuer", "https://" + plain.removeprefix("http://"), command, *token)
    assert code == 4, text
    assert "TLS handshake failed: does it serve plain http?" in text
    assert f"[fix] the issuer answers plain http: set ZITADEL_ISSUER={plain}" in text
    assert "ConnectError" not in text


@pytest.mark.loopback
def test_introspect_with_an_empty_stdin_is_a_usage_error(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # introspect </dev/null
    code, text = run("introspect")
    assert code == 2, text
    assert "introspect needs a token" in text
    code, text = run("introspect", "")  # an empty $TOKEN
    assert code == 2, text


@pytest.mark.loopback
def test_a_wrong_introspection_endpoint_gets_a_fix(env: dict[str, str]) -> None:
    wrong = env["ZITADEL_ISSUER"] + "/wrong/introspect"
    code, text = run("--introspection-endpoint", wrong, "check")
    assert code == 4, text
    assert "[FAIL] introspection: introspection request refused: HTTP 404" in text
    assert f"[fix] ZITADEL_INTROSPECTION_ENDPOINT is set to {wrong}: unset it" in text


@pytest.mark.loopback
def test_an_empty_key_file_variable_says_it_is_empty(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZITADEL_KEY_FILE", "")
    code, text = run("check")
    assert code == 3, text
    assert "ZITADEL_KEY_FILE: is empty" in text
    assert "directory" not in text
