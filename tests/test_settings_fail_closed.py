"""Settings that used to fail open or fail late: a misspelt ``ZITADEL_*`` variable, whitespace
or control characters in a URL setting, a malformed ``ZITADEL_REDIS_URL``, and ``check``
connecting to the configured Redis."""

import io
import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fastapi_zitadel import ConfigurationError, ServiceAccountAuth, ZitadelIntrospection
from fastapi_zitadel._cli import main
from fastapi_zitadel._config import unknown_variables
from fastapi_zitadel.cache import RedisCache
from fastapi_zitadel.config import ZitadelSettings
from fastapi_zitadel.testing import StandInProject

ROOT = Path(__file__).resolve().parent.parent
SECRET: dict[str, Any] = {"client_id": "api", "client_secret": "s3cr3t"}


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


@pytest.fixture
def env(zitadel_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("ZITADEL_AUDIENCE")  # `check` introspects a made-up token
    return zitadel_env


# Misspelt variables ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("ZITADEL_ALLOWED_CLIENT_ID", "ZITADEL_ALLOWED_CLIENT_IDS"),  # accepted every client
        ("ZITADEL_AUDIENCES", "ZITADEL_AUDIENCE"),  # switched the audience check off
        ("ZITADEL_KEYFILE", "ZITADEL_KEY_FILE"),
        ("ZITADEL_PROJECT", "ZITADEL_PROJECT_ID"),
        ("ZITADEL_CLIENTSECRET", "ZITADEL_CLIENT_SECRET"),
        ("zitadel_allowed_clients", "ZITADEL_ALLOWED_CLIENT_IDS"),  # read case-insensitively
    ],
)
def test_a_misspelt_variable_fails_construction_naming_the_setting(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, variable: str, meant: str
) -> None:
    monkeypatch.setenv(variable, "nobody")
    with pytest.raises(ConfigurationError) as info:
        ZitadelIntrospection.from_env()
    assert f"{variable} is not a setting: did you mean {meant}?" in str(info.value)
    assert "nobody" not in str(info.value)
    code, text = run("check")  # `check` said "[ok] all checks passed"
    assert code == 3
    assert meant in text
    assert "all checks passed" not in text


def test_zitadels_own_server_variables_are_left_alone(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An environment shared with ZITADEL itself keeps working (its names: cmd/defaults.yaml)."""
    caplog.set_level(logging.WARNING, logger="fastapi_zitadel")
    server = [
        "ZITADEL_MASTERKEY",
        "ZITADEL_EXTERNALDOMAIN",
        "ZITADEL_EXTERNALPORT",
        "ZITADEL_EXTERNALSECURE",
        "ZITADEL_PORT",
        "ZITADEL_TLS_ENABLED",
        "ZITADEL_TLS_KEY",
        "ZITADEL_LOG_LEVEL",
        "ZITADEL_DATABASE_POSTGRES_HOST",
        "ZITADEL_DATABASE_POSTGRES_USER_PASSWORD",
        "ZITADEL_FIRSTINSTANCE_ORG_NAME",
        "ZITADEL_PROFILER_PROJECTID",
        "ZITADEL_TRACING_SERVICENAME",
        "ZITADEL_TELEMETRY_ENDPOINTS",
        "ZITADEL_WEBAUTHNNAME",
        "ZITADEL_INSTANCEHOSTHEADERS",
    ]
    for name in server:
        monkeypatch.setenv(name, "x")
    ZitadelIntrospection.from_env()
    warnings = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert len(warnings) == 1
    assert all(name in warnings[0] for name in server)


def test_every_variable_the_project_writes_is_a_setting() -> None:
    """The stand-in's command line, the fixtures, the docs and the examples export only
    settings: none of them would now fail construction."""
    names: set[str] = set()
    files = subprocess.run(
        ["git", "ls-files"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for relative in files:
        path = ROOT / relative
        if path.name == Path(__file__).name:  # misspellings on purpose
            continue
        if path.suffix not in {".py", ".md", ".sh", ".toml", ".yml", ".yaml", ""}:
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        names.update(re.findall(r"(?<![A-Z_])ZITADEL_[A-Z0-9_]*[A-Z0-9]", text))
    assert len(names) > 20  # found the documented ones
    misspelt, others = unknown_variables(dict.fromkeys(names, "x"))
    assert misspelt == []
    zitadels_own = {"ZITADEL_MASTERKEY", "ZITADEL_DATABASE_POSTGRES_HOST", "ZITADEL_DATABASE"}
    assert set(others) <= zitadels_own  # named in the docs as ZITADEL's server's


def test_zitadel_settings_refuse_a_misspelling_given_directly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ZITADEL_ISSUER", "https://acme.zitadel.cloud")
    monkeypatch.setenv("ZITADEL_CACHE_TT", "0")
    with pytest.raises(ConfigurationError, match="did you mean ZITADEL_CACHE_TTL"):
        ZitadelSettings(**SECRET)


# Whitespace and control characters in URL settings ----------------------------------------

URL_SETTINGS = {
    "issuer": "https://acme.zitadel.cloud",
    "introspection_endpoint": "https://acme.zitadel.cloud/oauth/v2/introspect",
    "resource": "https://api.example.com/api",
    "resource_documentation": "https://api.example.com/docs",
}
SMUGGLED = {
    "\n": "a line break at the end",
    "\r\n": "a carriage return at the end",
    " ": "a space at the end",
    "\t": "a tab at the end",
    "\x00": "the control character U+0000 at the end",
    "\u2028": "the control character U+2028 at the end",
}


@pytest.mark.parametrize("setting", sorted(URL_SETTINGS))
@pytest.mark.parametrize("suffix", sorted(SMUGGLED))
def test_whitespace_in_a_url_setting_is_named(setting: str, suffix: str) -> None:
    settings = {"issuer": URL_SETTINGS["issuer"], setting: URL_SETTINGS[setting] + suffix}
    with pytest.raises(ConfigurationError) as info:
        ZitadelIntrospection(**settings, **SECRET)  # type: ignore[arg-type]
    message = str(info.value)
    assert f"{setting}: contains {SMUGGLED[suffix]}" in message
    assert "Traceback" not in message


@pytest.mark.parametrize("suffix", ["\n", "\r", " "])
def test_whitespace_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    monkeypatch.setenv("ZITADEL_ISSUER", "https://acme.zitadel.cloud" + suffix)
    with pytest.raises(ConfigurationError, match="ZITADEL_ISSUER: contains"):
        ZitadelIntrospection.from_env(**SECRET)


def test_whitespace_inside_a_url_is_refused_too() -> None:
    with pytest.raises(ConfigurationError, match="issuer: contains a space at character 13"):
        ZitadelIntrospection("https://acme .zitadel.cloud", **SECRET)
    with pytest.raises(ConfigurationError, match="contains a line break"):
        ServiceAccountAuth("https://acme.zitadel.cloud\n", **SECRET)


# Redis -------------------------------------------------------------------------------------

BAD_REDIS_URLS = {
    "redis//:hunter2@cache:6379": "must be redis://",
    "http://:hunter2@cache:6379": "must be redis://",
    "redis://:hunter2@cache:port/0": "the port must be a number",
    "redis://:hunter2@cache:6379/sessions": "the path is the database number",
    "redis://:hunter2@:6379/0": "needs a host",
    "unix://": "needs the socket's path",
    "redis://:hunter2@cache:6379/0\n": "contains a line break",
}


@pytest.mark.parametrize("url", sorted(BAD_REDIS_URLS))
def test_a_malformed_redis_url_is_refused_at_construction(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("redis")
    with pytest.raises(ConfigurationError) as keyword:
        ZitadelIntrospection("https://acme.zitadel.cloud", redis_url=url, **SECRET)
    monkeypatch.setenv("ZITADEL_REDIS_URL", url)
    with pytest.raises(ConfigurationError) as variable:
        ZitadelIntrospection.from_env(issuer="https://acme.zitadel.cloud", **SECRET)
    with pytest.raises(ConfigurationError) as direct:
        RedisCache.from_url(url)
    for info in (keyword, variable, direct):
        assert BAD_REDIS_URLS[url] in str(info.value)
        assert "hunter2" not in str(info.value)  # the password is never shown
    assert "redis_url:" in str(keyword.value)
    assert "ZITADEL_REDIS_URL:" in str(variable.value)


@pytest.fixture
def redis_server() -> Iterator[str]:
    pytest.importorskip("redis")
    from .redis_support import REDIS_SERVER, RedisServer

    if REDIS_SERVER is None:
        pytest.skip("needs Debian's redis-server")
    server = RedisServer()
    server.start()
    yield server.url
    server.stop()


@pytest.mark.redis
def test_check_connects_to_the_configured_redis(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, redis_server: str
) -> None:
    port = redis_server.rsplit(":", 1)[1].split("/")[0]
    monkeypatch.setenv("ZITADEL_REDIS_URL", redis_server)
    code, text = run("check")
    assert code == 0, text
    assert f"[ok] shared cache: Redis at 127.0.0.1:{port} answered" in text
    assert text.index("shared cache") < text.index("all checks passed")


@pytest.mark.redis
def test_check_reports_a_redis_that_does_not_answer(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, zitadel_project: StandInProject
) -> None:
    pytest.importorskip("redis")
    from .redis_support import free_port

    port = free_port()  # nothing listens there
    monkeypatch.setenv("ZITADEL_REDIS_URL", f"redis://:hunter2@127.0.0.1:{port}/0")
    code, text = run("check")
    assert code == 4, text
    assert f"[FAIL] shared cache: Redis at 127.0.0.1:{port} did not answer" in text
    assert "[fix] check ZITADEL_REDIS_URL" in text
    assert "all checks passed" not in text
    assert "hunter2" not in text


# Hostile files and variables for the command line ---------------------------------------------


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: Path("/dev/zero"), "is not a regular file"),
        (lambda d: Path("/dev/urandom"), "is not a regular file"),
        (lambda d: _fifo(d), "is not a regular file"),
        (lambda d: _write(d, b"{" + b" " * (1 << 20) + b"}"), "larger than 64 KiB"),
        (lambda d: _write(d, b"[" * 20_000 + b"]" * 20_000), "nested too deeply"),
        (lambda d: _write(d, bytes(range(256)) * 10), "not UTF-8 text"),
        (lambda d: d, "is a directory, not a file"),
    ],
)
def test_check_with_a_hostile_key_file_fails_at_once(
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make: Callable[[Path], Path],
    expected: str,
) -> None:
    """/dev/zero, a FIFO or a huge file as ``ZITADEL_KEY_FILE`` hung ``check`` (and start-up)
    or ended in a traceback; now each is exit 3 with the reason."""
    monkeypatch.setenv("ZITADEL_KEY_FILE", str(make(tmp_path)))
    code, text = run("check")
    assert code == 3, text
    assert expected in text
    assert "Traceback" not in text


def _write(folder: Path, content: bytes) -> Path:
    path = folder / "key.json"
    path.write_bytes(content)
    return path


def _fifo(folder: Path) -> Path:
    path = folder / "fifo"
    os.mkfifo(path)  # nobody writes: opening it for reading would block forever
    return path


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ZITADEL_KEY", '{"a":' * 5000 + "1" + "}" * 5000, "nested too deeply"),
        ("ZITADEL_KEY", "{" + " " * 70_000 + "}", "larger than 64 KiB"),
        ("ZITADEL_ISSUER", "https://" + "a" * 100_000 + ".cloud", "is not a usable URL"),
        ("ZITADEL_ISSUER", "https://acme.zitadel.cloud:99999", "is not a usable URL"),
        ("ZITADEL_AUDIENCE", "a\x01b", "ZITADEL_AUDIENCE: contains the control character U+0001"),
        ("ZITADEL_PROJECT_ID", "123 ", "ZITADEL_PROJECT_ID: contains a space at the end"),
        ("ZITADEL_ALLOWED_CLIENT_IDS", "a,b\tc", "ZITADEL_ALLOWED_CLIENT_IDS: contains a tab"),
    ],
)
def test_check_with_a_hostile_variable_fails_at_once(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    if variable == "ZITADEL_KEY":
        monkeypatch.delenv("ZITADEL_KEY_FILE")
    monkeypatch.setenv(variable, value)
    code, text = run("check")
    assert code == 3, text
    assert expected in text
    assert "Traceback" not in text
