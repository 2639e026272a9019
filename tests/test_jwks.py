"""The JWKS cache: which keys are taken with which algorithms, how long a set is kept
(``Cache-Control`` within bounds), and when it is fetched again (throttled, with backoff)."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from starlette.responses import JSONResponse

from fastapi_zitadel import IdentityProviderError, ZitadelIntrospection
from fastapi_zitadel._idp.jwks import MAX_KEYS, _max_age, parse_jwks

from .helpers import FakeClock
from .jwt_support import HostileIssuer, JwtWorld, new_rsa_key, settled


@pytest.fixture(scope="module")
def rsa_jwk() -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(new_rsa_key().public_key(), as_dict=True)
    return {**jwk, "kid": "rsa"}


def test_algorithms_come_from_the_jwk(rsa_jwk: dict[str, Any]) -> None:
    p256 = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
    p384 = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)
    okp = OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate().public_key(), as_dict=True)
    keys, skipped = parse_jwks(
        {
            "keys": [
                rsa_jwk,  # no alg: RS256/384/512, never PS*
                {**rsa_jwk, "kid": "ps", "alg": "PS256"},
                {**rsa_jwk, "kid": "hs", "alg": "HS256"},  # an RSA key never does HMAC
                {**p256, "kid": "p256"},
                {**p384, "kid": "p384", "alg": "ES256"},  # curve and alg disagree
                {**okp, "kid": "ed", "alg": "EdDSA"},
                {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
                {**rsa_jwk, "kid": "enc", "use": "enc"},
                {**rsa_jwk, "kid": "ops", "key_ops": ["encrypt"]},
                {**rsa_jwk, "kid": "x" * 300},
                {**rsa_jwk, "kid": 7},
                {**p256, "kid": "broken", "x": "AAAA"},
                "not a key",
            ]
        }
    )
    found = {kid: sorted(key.algorithm for key in found) for kid, found in keys.items()}
    assert found == {
        "rsa": ["RS256", "RS384", "RS512"],
        "ps": ["PS256"],
        "p256": ["ES256"],
        "ed": ["EdDSA"],
    }
    assert skipped == 9
    assert keys["rsa"][0].description == "RSA 2048 bits"


def test_a_set_we_cannot_use_is_an_idp_fault(rsa_jwk: dict[str, Any]) -> None:
    documents: list[Any] = [
        [],
        {"keys": "x"},
        {"keys": []},
        {"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]},
        {"keys": [{**rsa_jwk, "kid": f"k{i}"} for i in range(MAX_KEYS + 1)]},
    ]
    for document in documents:
        with pytest.raises(IdentityProviderError):
            parse_jwks(document)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 300),
        ("max-age=300, must-revalidate", 300),
        ("public, max-age=900", 900),
        ('max-age="120"', 120),
        ("max-age=5", 60),
        ("max-age=999999999", 3600),
        ("no-store", 60),
        ("no-cache, max-age=600", 60),
        ("private", 300),
        ("s-maxage=10", 300),
    ],
)
def test_cache_control_within_bounds(header: str | None, seconds: float) -> None:
    assert _max_age(header) == seconds


async def test_the_set_is_refreshed_after_its_max_age(jwt_world: JwtWorld) -> None:
    token = jwt_world.token()
    async with jwt_world.local(cache_ttl=0) as zitadel:
        await zitadel.verify(token)
        jwt_world.monotonic.advance(299)
        await zitadel.verify(token)
        assert jwt_world.standin.jwks_calls == 1
        jwt_world.monotonic.advance(2)  # max-age=300 passed: refreshed behind the request
        await zitadel.verify(token)
        await settled(zitadel)
        assert jwt_world.standin.jwks_calls == 2
        await zitadel.verify(token)
        assert jwt_world.standin.jwks_calls == 2


async def test_a_short_max_age_is_raised_to_a_minute() -> None:
    signer = new_rsa_key()
    jwk = {**RSAAlgorithm.to_jwk(signer.public_key(), as_dict=True), "kid": "k1"}
    hostile = HostileIssuer()
    hostile.keys_answer = lambda: JSONResponse(
        {"keys": [jwk]}, headers={"Cache-Control": "max-age=1"}
    )
    with hostile.serve():
        monotonic = FakeClock(0.0)
        zitadel = ZitadelIntrospection(
            hostile.issuer, validation="local", audience="api", monotonic=monotonic, cache_ttl=0
        )
        async with zitadel:
            keys = await zitadel.signing_keys()
            assert [key["kid"] for key in keys] == ["k1"] * 3
            for seconds in (2, 30, 59):
                monotonic.now = seconds
                await zitadel.verify(_token(hostile.issuer, signer, "k1"))
            assert hostile.requests.count("/keys") == 1
            monotonic.now = 61
            await zitadel.verify(_token(hostile.issuer, signer, "k1"))
            await settled(zitadel)
            assert hostile.requests.count("/keys") == 2


def _token(issuer: str, signer: Any, kid: str) -> str:
    claims = {"iss": issuer, "aud": "api", "exp": 4_000_000_000, "sub": "s", "jti": kid}
    return jwt.encode(claims, signer, algorithm="RS256", headers={"kid": kid})


async def test_failed_fetches_back_off_and_keep_the_keys(jwt_world: JwtWorld) -> None:
    standin = jwt_world.standin
    known = jwt_world.token()
    async with jwt_world.local(cache_ttl=0) as zitadel:
        await zitadel.verify(known)
        standin.inject("status", status=500, times=None, endpoint="keys")
        unknown = jwt_world.forge(headers={"kid": "new-key"})
        jwt_world.monotonic.advance(31)
        fetches = []
        for _ in range(6):  # 1 s apart: fetches at 0, 1, 3 (backoff 1, 2, 4 s...)
            with pytest.raises(IdentityProviderError, match="JWKS"):
                await zitadel.verify(unknown)
            fetches.append(standin.jwks_calls)
            jwt_world.monotonic.advance(1)
        assert fetches == [2, 3, 3, 4, 4, 4]
        assert (await zitadel.verify(known)).verified_by == "jwt"  # never dropped
