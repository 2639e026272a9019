"""Key files: every way they can be broken gets an error naming the source and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fastapi_zitadel import KeyFileError
from fastapi_zitadel.config import ZitadelKeyFile, load_key_file

from .helpers import CLIENT_ID, pem_pkcs1, pem_pkcs8


def test_loads_application_key_from_path(app_key_path: Path, app_key: dict[str, Any]) -> None:
    key = load_key_file(app_key_path)
    assert key.type == "application"
    assert key.key_id == app_key["keyId"]
    assert key.client_id == CLIENT_ID
    assert key.app_id == app_key["appId"]
    assert key.subject == CLIENT_ID
    assert key.private_key.key_size == 2048


def test_loads_from_str_path_json_string_and_mapping(
    app_key_path: Path, app_key: dict[str, Any]
) -> None:
    from_str_path = load_key_file(str(app_key_path))
    from_json = load_key_file(json.dumps(app_key))
    from_mapping = load_key_file(app_key)
    assert from_str_path.key_id == from_json.key_id == from_mapping.key_id
    assert load_key_file(from_mapping) is from_mapping


def test_loads_service_account_key(rsa_key: rsa.RSAPrivateKey) -> None:
    key = load_key_file(
        {"type": "serviceaccount", "keyId": "k1", "key": pem_pkcs1(rsa_key), "userId": "u-9"}
    )
    assert key.type == "serviceaccount"
    assert key.subject == "u-9"
    assert key.client_id is None


def test_accepts_pkcs8(app_key: dict[str, Any], rsa_key: rsa.RSAPrivateKey) -> None:
    key = load_key_file({**app_key, "key": pem_pkcs8(rsa_key)})
    assert key.private_key.private_numbers() == rsa_key.private_numbers()


def test_repr_and_dump_never_show_the_key(app_key: dict[str, Any]) -> None:
    key = load_key_file(app_key)
    assert "PRIVATE" not in repr(key)
    assert "private_key" not in key.model_dump()
    assert isinstance(key, ZitadelKeyFile)


def _error(source: Any) -> KeyFileError:
    with pytest.raises(KeyFileError) as info:
        load_key_file(source)
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    error = _error(tmp_path / "nope.json")
    assert "nope.json" in str(error)
    assert "file not found" in str(error)


def test_directory(tmp_path: Path) -> None:
    assert "directory" in str(_error(tmp_path))


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text("not json at all")
    error = _error(path)
    assert "not valid JSON" in str(error)
    assert str(path) in str(error)


def test_json_string_not_json() -> None:
    error = _error("{ broken")
    assert error.source == "(JSON string)"
    assert "not valid JSON" in error.problem


def test_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text("[1, 2]")
    assert "expected a JSON object, got list" in str(_error(path))


@pytest.mark.parametrize("field", ["keyId", "key", "clientId", "appId"])
def test_missing_field(app_key: dict[str, Any], field: str) -> None:
    broken = {name: value for name, value in app_key.items() if name != field}
    error = _error(broken)
    assert error.field == field
    assert "missing" in error.problem


@pytest.mark.parametrize("field", ["keyId", "key", "clientId", "appId"])
def test_empty_field(app_key: dict[str, Any], field: str) -> None:
    error = _error({**app_key, field: "  "})
    assert error.field == field
    assert error.problem == "is empty"


def test_wrong_field_type(app_key: dict[str, Any]) -> None:
    error = _error({**app_key, "keyId": 12345})
    assert error.field == "keyId"
    assert "must be a string, got int" in error.problem


def test_missing_type(app_key: dict[str, Any]) -> None:
    error = _error({name: value for name, value in app_key.items() if name != "type"})
    assert error.field == "type"


def test_unknown_type(app_key: dict[str, Any]) -> None:
    error = _error({**app_key, "type": "machine"})
    assert error.field == "type"
    assert "'machine'" in error.problem


def test_service_account_needs_user_id(rsa_key: rsa.RSAPrivateKey) -> None:
    error = _error({"type": "serviceaccount", "keyId": "k", "key": pem_pkcs1(rsa_key)})
    assert error.field == "userId"


def test_unreadable_pem(app_key: dict[str, Any]) -> None:
    garbage = "-----BEGIN RSA PRIVATE KEY-----\nSECRETMATERIAL\n-----END RSA PRIVATE KEY-----\n"
    error = _error({**app_key, "key": garbage})
    assert error.field == "key"
    assert "not a readable PEM" in error.problem
    assert "SECRETMATERIAL" not in str(error)


def test_wrong_key_type(app_key: dict[str, Any]) -> None:
    from cryptography.hazmat.primitives import serialization

    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    error = _error({**app_key, "key": ec_pem})
    assert error.field == "key"
    assert "expected an RSA private key" in error.problem


def test_key_too_small(app_key: dict[str, Any]) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    error = _error({**app_key, "key": pem_pkcs1(small)})
    assert error.field == "key"
    assert "1024 bits is too small" in error.problem


def test_no_error_message_contains_key_material(app_key: dict[str, Any]) -> None:
    body_line = app_key["key"].splitlines()[1]
    for broken in (
        {**app_key, "key": app_key["key"][:200]},
        {**app_key, "type": app_key["key"]},
        {**app_key, "appId": ""},
    ):
        assert body_line not in str(_error(broken))


@pytest.mark.parametrize("source", ["", "  "])
def test_an_empty_path_is_named_empty_not_a_directory(source: str) -> None:
    with pytest.raises(KeyFileError, match="the path is empty") as info:
        load_key_file(source)
    assert "directory" not in str(info.value)
