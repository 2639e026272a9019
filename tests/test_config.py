"""Configuration: keyword arguments and ZITADEL_* variables, bad values named at construction."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from fastapi_zitadel import ConfigurationError, KeyFileError, ZitadelIntrospection

ISSUER = "https://zitadel.example.test"


def test_minimal_construction(app_key_path: Path) -> None:
    zitadel = ZitadelIntrospection(ISSUER, key_file=app_key_path)
    assert zitadel.issuer == ISSUER
    assert zitadel.config.cache_ttl == 60
    assert zitadel.config.negative_cache_ttl == 5


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"cache_ttl": -1}, "cache_ttl"),
        ({"negative_cache_ttl": "soon"}, "negative_cache_ttl"),
        ({"timeout": 0}, "timeout"),
        ({"assertion_lifetime": 7200}, "assertion_lifetime"),
        ({"introspection_endpoint": "ftp://x"}, "https"),
        ({"introspection_endpoint": "http://idp.example.com/introspect"}, "plain http"),
    ],
)
def test_bad_option_is_named(app_key_path: Path, options: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        ZitadelIntrospection(ISSUER, key_file=app_key_path, **options)


def test_misspelt_setting_is_a_type_error(app_key_path: Path) -> None:
    options: dict[str, Any] = {"cache_tll": 5}  # a typo is an error, not silently ignored
    with pytest.raises(TypeError, match="cache_tll"):
        ZitadelIntrospection(ISSUER, key_file=app_key_path, **options)
    with pytest.raises(TypeError, match="cache_tll"):
        ZitadelIntrospection.from_env(**options)


@pytest.mark.parametrize(
    ("issuer", "message"),
    [
        ("https://zitadel.example.test/", "must not end with '/'"),
        ("http://zitadel.example.test", "plain http"),
        ("zitadel.example.test", "absolute"),
    ],
)
def test_bad_issuer(app_key_path: Path, issuer: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        ZitadelIntrospection(issuer, key_file=app_key_path)


@pytest.mark.parametrize(
    "issuer", ["http://localhost:8080", "http://127.0.0.1:8080", "http://[::1]:8080"]
)
def test_http_allowed_for_loopback(app_key_path: Path, issuer: str) -> None:
    assert ZitadelIntrospection(issuer, key_file=app_key_path).issuer == issuer


def test_http_allowed_when_asked(app_key_path: Path) -> None:
    zitadel = ZitadelIntrospection(
        "http://zitadel.internal", key_file=app_key_path, allow_insecure_http=True
    )
    assert zitadel.issuer == "http://zitadel.internal"


def test_credentials_required() -> None:
    with pytest.raises(ConfigurationError, match="no client credentials"):
        ZitadelIntrospection(ISSUER)


def test_key_and_secret_are_exclusive(app_key_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        ZitadelIntrospection(ISSUER, key_file=app_key_path, client_id="a", client_secret="b")


def test_secret_needs_id() -> None:
    with pytest.raises(ConfigurationError, match="together"):
        ZitadelIntrospection(ISSUER, client_secret="b")


def test_broken_key_file_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="file not found"):
        ZitadelIntrospection(ISSUER, key_file=tmp_path / "missing.json")


def test_audience_list_or_comma_string(app_key_path: Path) -> None:
    one = ZitadelIntrospection(ISSUER, key_file=app_key_path, audience="a, b")
    two = ZitadelIntrospection(ISSUER, key_file=app_key_path, audience=["a", "b"])
    assert one.config.audience == two.config.audience == ("a", "b")


def test_secret_not_in_repr() -> None:
    zitadel = ZitadelIntrospection(ISSUER, client_id="api", client_secret="hunter2-secret")
    assert "hunter2-secret" not in repr(zitadel.config)


def test_from_env(
    monkeypatch: pytest.MonkeyPatch, app_key_path: Path, app_key: dict[str, Any]
) -> None:
    monkeypatch.setenv("ZITADEL_ISSUER", ISSUER)
    monkeypatch.setenv("ZITADEL_KEY_FILE", str(app_key_path))
    monkeypatch.setenv("ZITADEL_AUDIENCE", "p1,p2")
    monkeypatch.setenv("ZITADEL_CACHE_TTL", "30")
    monkeypatch.setenv("ZITADEL_NEGATIVE_CACHE_TTL", "0")
    zitadel = ZitadelIntrospection.from_env()
    assert zitadel.config.audience == ("p1", "p2")
    assert zitadel.config.cache_ttl == 30
    assert zitadel.config.negative_cache_ttl == 0
    assert ZitadelIntrospection.from_env(cache_ttl=5).config.cache_ttl == 5


def test_from_env_with_key_json(monkeypatch: pytest.MonkeyPatch, app_key: dict[str, Any]) -> None:
    monkeypatch.setenv("ZITADEL_ISSUER", ISSUER)
    monkeypatch.setenv("ZITADEL_KEY", json.dumps(app_key))
    assert ZitadelIntrospection.from_env().issuer == ISSUER


def test_from_env_names_the_variable(monkeypatch: pytest.MonkeyPatch, app_key_path: Path) -> None:
    monkeypatch.setenv("ZITADEL_ISSUER", ISSUER)
    monkeypatch.setenv("ZITADEL_KEY_FILE", str(app_key_path))
    monkeypatch.setenv("ZITADEL_CACHE_TTL", "forever")
    with pytest.raises(ConfigurationError, match="ZITADEL_CACHE_TTL"):
        ZitadelIntrospection.from_env()


def test_from_env_missing_issuer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZITADEL_ISSUER", raising=False)
    with pytest.raises(ConfigurationError, match="ZITADEL_ISSUER"):
        ZitadelIntrospection.from_env()


# Errors name the setting as the user set it -----------------------------------------------


def test_plain_http_issuer_named_as_keyword_or_variable(
    monkeypatch: pytest.MonkeyPatch, app_key_path: Path
) -> None:
    with pytest.raises(ConfigurationError) as keyword:
        ZitadelIntrospection("http://zitadel.example.com", key_file=app_key_path)
    assert "issuer: 'http://zitadel.example.com' uses plain http" in str(keyword.value)
    assert "allow_insecure_http=True (ZITADEL_ALLOW_INSECURE_HTTP=true)" in str(keyword.value)
    monkeypatch.setenv("ZITADEL_ISSUER", "http://zitadel.example.com")
    monkeypatch.setenv("ZITADEL_KEY_FILE", str(app_key_path))
    with pytest.raises(ConfigurationError) as variable:
        ZitadelIntrospection.from_env()
    assert "ZITADEL_ISSUER: 'http://zitadel.example.com' uses plain http" in str(variable.value)
    with pytest.raises(ConfigurationError) as override:  # a keyword given to from_env
        ZitadelIntrospection.from_env(issuer="http://other.example.com")
    assert "issuer: 'http://other.example.com'" in str(override.value)
    assert "ZITADEL_ISSUER" not in str(override.value)


def test_credential_mix_up_names_both_forms(
    monkeypatch: pytest.MonkeyPatch, app_key_path: Path
) -> None:
    monkeypatch.setenv("ZITADEL_ISSUER", ISSUER)
    monkeypatch.setenv("ZITADEL_KEY_FILE", str(app_key_path))
    monkeypatch.setenv("ZITADEL_CLIENT_ID", "api")
    monkeypatch.setenv("ZITADEL_CLIENT_SECRET", "secret")
    with pytest.raises(ConfigurationError) as info:
        ZitadelIntrospection.from_env()
    for name in ("ZITADEL_KEY_FILE", "ZITADEL_CLIENT_ID", "ZITADEL_CLIENT_SECRET"):
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("issuer", "suggestion"),
    [
        ("127.0.0.1:8080", "did you mean 'http://127.0.0.1:8080'?"),
        ("localhost:8080", "did you mean 'http://localhost:8080'?"),
        ("acme.zitadel.cloud", "did you mean 'https://acme.zitadel.cloud'?"),
    ],
)
def test_issuer_without_scheme_gets_the_right_suggestion(
    app_key_path: Path, issuer: str, suggestion: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(suggestion)):
        ZitadelIntrospection(issuer, key_file=app_key_path)


@pytest.mark.parametrize(
    "pasted",
    [
        "https://acme.zitadel.cloud/.well-known/openid-configuration",
        "https://acme.zitadel.cloud/.well-known/openid-configuration/",
    ],
)
def test_discovery_url_pasted_as_issuer(app_key_path: Path, pasted: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape("use 'https://acme.zitadel.cloud'")):
        ZitadelIntrospection(pasted, key_file=app_key_path)


def test_tilde_in_key_path_is_expanded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, app_key: dict[str, Any]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "api.json").write_text(json.dumps(app_key))
    zitadel = ZitadelIntrospection(ISSUER, key_file="~/keys/api.json")
    assert zitadel.config.key_file == tmp_path / "keys" / "api.json"
    monkeypatch.setenv("ZITADEL_ISSUER", ISSUER)
    monkeypatch.setenv("ZITADEL_KEY_FILE", "~/keys/api.json")
    client = ZitadelIntrospection.from_env().client
    assert client is not None
    assert client.key_id == app_key["keyId"]


def test_a_service_user_key_is_refused_for_introspection(
    tmp_path: Path, app_key: dict[str, Any]
) -> None:
    service_key = {"type": "serviceaccount", "keyId": "k1", "key": app_key["key"], "userId": "u1"}
    path = tmp_path / "service.json"
    path.write_text(json.dumps(service_key))
    for source in (path, service_key, json.dumps(service_key)):
        with pytest.raises(KeyFileError, match="a service user's key") as info:
            ZitadelIntrospection(ISSUER, key_file=source)
        assert "API application" in str(info.value)
        assert "PRIVATE KEY" not in str(info.value)
