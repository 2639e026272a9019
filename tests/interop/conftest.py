"""Fixtures running panva's oidc-provider (npm, pinned by package-lock.json) with Node.js.

The server is an independent implementation of OAuth 2.0 token introspection (RFC 7662),
revocation (RFC 7009), the client credentials grant and JWT client authentication (RFC 7523),
so these tests hold the library against somebody else's reading of the specifications rather
than our own ZITADEL stand-in. ``npm ci`` runs on first use; a machine without Node.js or npm
fails these tests with a clear message, it never skips them.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from .support import HERE, KEY_ID, OidcServer, new_rsa_key, server_config, write_key_file

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 20.0
NPM_TIMEOUT = 300.0
MIN_NODE_MAJOR = 20


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "interop: runs against a real third-party authorization server (oidc-provider)"
    )


def _fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


# Node.js and the pinned oidc-provider ------------------------------------------------------


@pytest.fixture(scope="session")
def node() -> str:
    """The machine's Node.js, checked to be new enough; a loud failure when it is missing."""
    path = shutil.which("node")
    if path is None:
        _fail(
            "the interop tests (tests/interop) need Node.js >= 20 and npm on PATH to run "
            "oidc-provider; install them (e.g. `apt-get install nodejs npm`) and run again"
        )
    version = subprocess.run(  # noqa: S603
        [path, "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout.strip()
    match = re.match(r"v(\d+)\.", version)
    if match is None or int(match.group(1)) < MIN_NODE_MAJOR:
        _fail(f"the interop tests need Node.js >= {MIN_NODE_MAJOR}; {path} is {version!r}")
    return path


def _locked_version() -> str:
    lock = json.loads((HERE / "package-lock.json").read_text())
    return str(lock["packages"]["node_modules/oidc-provider"]["version"])


def _installed_version() -> str | None:
    manifest = HERE / "node_modules" / "oidc-provider" / "package.json"
    if not manifest.exists():
        return None
    return str(json.loads(manifest.read_text())["version"])


@pytest.fixture(scope="session")
def oidc_provider_version(node: str) -> str:
    """Installs the locked oidc-provider with ``npm ci`` unless that version is there."""
    wanted = _locked_version()
    if _installed_version() == wanted:
        return wanted
    npm = shutil.which("npm")
    if npm is None:
        _fail(
            f"the interop tests need npm to install oidc-provider {wanted} into "
            f"{HERE / 'node_modules'}; install npm (it comes with Node.js) and run again"
        )
    try:
        completed = subprocess.run(  # noqa: S603
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=False,
            timeout=NPM_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        _fail(f"`npm ci` in {HERE} did not finish within {NPM_TIMEOUT:.0f} s")
    if completed.returncode != 0:
        _fail(
            f"`npm ci` in {HERE} failed with exit status {completed.returncode}:\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    installed = _installed_version()
    if installed != wanted:
        _fail(f"`npm ci` installed oidc-provider {installed}; package-lock.json pins {wanted}")
    return wanted


# Keys ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def introspector_key() -> rsa.RSAPrivateKey:
    """The API application's key; the server is given only its public half."""
    return new_rsa_key()


@pytest.fixture
def key_file(tmp_path: Path, introspector_key: rsa.RSAPrivateKey) -> Path:
    """The API application's key file, as ZITADEL's console downloads it."""
    return write_key_file(tmp_path / "api-key.json", introspector_key)


# The server --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _stop(process: "subprocess.Popen[bytes]") -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _wait_until_ready(
    process: "subprocess.Popen[bytes]", stdout_path: Path, stderr_path: Path
) -> str:
    """The server's readiness line; fails loudly, with the server's output, otherwise."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        for line in stdout_path.read_text(errors="replace").splitlines():
            if line.startswith("READY "):
                return line
        status = process.poll()
        if status is not None or time.monotonic() > deadline:
            _stop(process)
            what = (
                f"exited with status {status}"
                if status is not None
                else f"did not report readiness within {STARTUP_TIMEOUT:.0f} s"
            )
            _fail(
                f"oidc-provider ({HERE / 'server.mjs'}) {what}\n"
                f"--- stdout ---\n{stdout_path.read_text(errors='replace')}\n"
                f"--- stderr ---\n{stderr_path.read_text(errors='replace')}"
            )
        time.sleep(0.05)


@pytest.fixture(scope="session")
def oidc_server(
    node: str,
    oidc_provider_version: str,
    introspector_key: rsa.RSAPrivateKey,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OidcServer]:
    """oidc-provider on a free loopback port, for the whole session."""
    public_jwk = RSAAlgorithm.to_jwk(introspector_key.public_key(), as_dict=True)
    public_jwk.update(kid=KEY_ID, alg="RS256", use="sig")
    port = _free_port()
    issuer = f"http://{HOST}:{port}"
    logs = tmp_path_factory.mktemp("oidc-provider")
    stdout_path, stderr_path = logs / "stdout.log", logs / "stderr.log"
    arguments = [node, str(HERE / "server.mjs"), json.dumps(server_config(port, public_jwk))]
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(  # noqa: S603
            arguments,
            cwd=HERE,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "NODE_ENV": "test"},
        )
    try:
        ready = _wait_until_ready(process, stdout_path, stderr_path)
        assert ready.split()[1] == issuer, ready
        with httpx.Client(timeout=10) as http:
            response = http.get(f"{issuer}/.well-known/openid-configuration")
            assert response.status_code == 200, response.text
            yield OidcServer(issuer, oidc_provider_version, response.json(), stderr_path, http)
    finally:
        _stop(process)
