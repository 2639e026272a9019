"""Client assertions: claims as ZITADEL checks them, cached, refreshed once, single-use mode."""

from __future__ import annotations

import base64
import threading
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fastapi_zitadel._credentials.client_auth import (
    CLIENT_ASSERTION_TYPE,
    IAT_BACKDATE_SECONDS,
    ClientCredentials,
    ClientSecretBasic,
    PrivateKeyJwt,
)
from fastapi_zitadel.config import load_key_file

from .helpers import CLIENT_ID, ISSUER, FakeClock


def _signer(app_key: dict[str, Any], clock: FakeClock, **options: Any) -> PrivateKeyJwt:
    settings: dict[str, Any] = {"lifetime": 600.0, "single_use": False, **options}
    return PrivateKeyJwt(
        load_key_file(app_key), audience=ISSUER, clock=clock, monotonic=clock, **settings
    )


def _decode(assertion: str, rsa_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        assertion,
        rsa_key.public_key(),
        algorithms=["RS256"],
        audience=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    return claims


def test_assertion_claims_and_header(
    app_key: dict[str, Any], rsa_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    credentials = _signer(app_key, clock).credentials()
    assert credentials.form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assertion = credentials.form["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == "RS256"
    assert header["kid"] == app_key["keyId"]
    claims = _decode(assertion, rsa_key)
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == ISSUER
    assert claims["iat"] == int(clock.now) - IAT_BACKDATE_SECONDS
    assert claims["exp"] == int(clock.now + 600)
    assert len(claims["jti"]) >= 16
    assert credentials.headers == {}


def test_service_account_key_signs_as_user(rsa_key: rsa.RSAPrivateKey, clock: FakeClock) -> None:
    from .helpers import pem_pkcs1

    key = {"type": "serviceaccount", "keyId": "k", "key": pem_pkcs1(rsa_key), "userId": "u-1"}
    claims = _decode(_signer(key, clock).credentials().form["client_assertion"], rsa_key)
    assert claims["iss"] == claims["sub"] == "u-1"


def test_assertion_is_reused_then_refreshed_at_half_life(
    app_key: dict[str, Any], rsa_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    signer = _signer(app_key, clock)
    first = signer.credentials()
    assert not first.reused
    clock.advance(299)
    second = signer.credentials()
    assert second.reused
    assert second.form == first.form
    clock.advance(2)
    third = signer.credentials()
    assert not third.reused
    assert third.form != first.form
    claims = [_decode(c.form["client_assertion"], rsa_key) for c in (first, third)]
    assert claims[0]["jti"] != claims[1]["jti"]
    # Refreshed well inside ZITADEL's one hour iat window.
    assert claims[1]["iat"] - claims[0]["iat"] < 3600


def test_single_use_mode_signs_every_time(app_key: dict[str, Any], clock: FakeClock) -> None:
    signer = _signer(app_key, clock, single_use=True)
    seen = {signer.credentials().form["client_assertion"] for _ in range(5)}
    assert len(seen) == 5


def test_fresh_credentials_bypass_cache(app_key: dict[str, Any], clock: FakeClock) -> None:
    signer = _signer(app_key, clock)
    cached = signer.credentials()
    assert signer.credentials(fresh=True).form != cached.form
    assert signer.credentials().form == cached.form


def test_switch_to_single_use_logs_once(
    app_key: dict[str, Any], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    signer = _signer(app_key, clock)
    signer.fresh_credentials_helped()
    signer.fresh_credentials_helped()
    assert signer.single_use
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert app_key["keyId"] in warnings[0].getMessage()


def test_concurrent_refresh_signs_exactly_once(app_key: dict[str, Any], clock: FakeClock) -> None:
    signer = _signer(app_key, clock)
    barrier = threading.Barrier(16)
    results: list[ClientCredentials] = []

    def worker() -> None:
        barrier.wait()
        results.append(signer.credentials())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Each signing starts a new generation, and every caller is handed the generation it
    # carries: all sixteen holding the first means it was signed once.
    assert {c.generation for c in results} == {1}
    assert len({c.form["client_assertion"] for c in results}) == 1


@pytest.mark.parametrize(
    ("client_id", "secret", "expected_pair"),
    [
        ("api@project", "s3cret", "api%40project:s3cret"),
        ("plain", "with space+plus/slash:colon", "plain:with+space%2Bplus%2Fslash%3Acolon"),
    ],
)
def test_client_secret_basic_form_urlencodes_first(
    client_id: str, secret: str, expected_pair: str
) -> None:
    credentials = ClientSecretBasic(client_id, secret).credentials()
    scheme, _, encoded = credentials.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == expected_pair
    assert credentials.form == {}
    assert not credentials.reused


def test_reuse_is_judged_when_rejected_not_when_issued(
    app_key: dict[str, Any], clock: FakeClock
) -> None:
    signer = _signer(app_key, clock)
    first = signer.credentials()
    assert not signer.possibly_reused(first)  # nobody else has it yet
    second = signer.credentials()
    # The server may see the second request first: then the *first* is the replay.
    assert signer.possibly_reused(first)
    assert signer.possibly_reused(second)
    assert not signer.possibly_reused(signer.credentials(fresh=True))


def test_rejected_assertion_is_never_replayed(app_key: dict[str, Any], clock: FakeClock) -> None:
    signer = _signer(app_key, clock)
    first = signer.credentials()
    signer.rejected()
    after = signer.credentials()
    assert after.form != first.form
    assert not after.reused
