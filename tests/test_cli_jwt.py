"""The command line with validation local and hybrid, against the stand-in on loopback:
``check`` fetches the JWKS and reports its keys and algorithms, ``introspect`` says how a
token was verified."""

import io
import json
import sys
from typing import Any

import pytest

from fastapi_zitadel.testing import StandInProject

from .cli_support import run


@pytest.fixture
def local_env(zitadel_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("ZITADEL_KEY_FILE")  # local mode needs no credential
    monkeypatch.setenv("ZITADEL_VALIDATION", "local")
    return zitadel_env


def test_check_local_reports_the_keys(
    local_env: dict[str, str], zitadel_project: StandInProject
) -> None:
    standin = zitadel_project.standin
    standin.rotate_signing_key(algorithm="ES256")
    code, text = run("check")
    assert code == 0, text
    assert "no client credentials (validation=local needs none), validation local" in text
    assert f"keys at {standin.issuer}/oauth/v2/keys" in text
    assert "[ok] signing keys: 2 usable: " in text
    assert f"{standin.signing_key_id} (EC P-256): ES256" in text
    assert "(RSA 2048 bits): RS256" in text
    assert "[ok] credentials" not in text
    assert "[ok] all checks passed" in text


def test_check_local_with_the_keys_unavailable(
    local_env: dict[str, str], zitadel_project: StandInProject
) -> None:
    zitadel_project.standin.inject("garbage", endpoint="keys", times=None)
    code, text = run("check")
    assert code == 4, text
    assert "[FAIL] signing keys: the JWKS is unavailable" in text
    assert "[fix] the JWKS (the discovery document's jwks_uri) must answer" in text


def test_check_hybrid_reports_keys_and_credentials(zitadel_env: dict[str, str]) -> None:
    code, text = run("--validation", "hybrid", "check")
    assert code == 0, text
    assert "validation hybrid" in text
    assert "[ok] signing keys: 1 usable" in text
    assert "[ok] credentials: accepted" in text


def test_check_local_without_an_audience_is_configuration(
    local_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZITADEL_AUDIENCE")
    code, text = run("check")
    assert code == 3
    assert "ZITADEL_AUDIENCE" in text


def test_introspect_says_how_the_token_was_verified(
    local_env: dict[str, str], zitadel_project: StandInProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = zitadel_project.token("alice", roles=["admin"], jwt=True)
    code, text = run("introspect", token)
    assert code == 0, text
    assert "verified by   JWT verified locally" in text
    assert token not in text
    code, text = run("introspect", "--json", token)
    data: dict[str, Any] = json.loads(text)
    assert data["verified_by"] == "jwt"
    code, text = run(
        "--validation", "introspection", "--key-file", _key(zitadel_project), "introspect", token
    )
    assert code == 0, text
    assert "verified by   introspection" in text
    monkeypatch.setattr(sys, "stdin", io.StringIO(zitadel_project.token("bob") + "\n"))
    code, text = run("introspect")  # on stdin: an opaque token may start with "-"
    assert code == 6
    assert "[invalid] opaque tokens need introspection" in text


def _key(project: StandInProject) -> str:
    return str(project.key_path)
