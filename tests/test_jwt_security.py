"""Attacks on local JWT verification, each of which a naive verifier lets through (or turns
into a 500). The JWKS is fetched over real HTTP from the stand-in (or a hostile issuer) on a
loopback port; requests go through a FastAPI app, so the status a caller sees is checked."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import secrets
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from jwt.algorithms import RSAAlgorithm
from starlette.responses import JSONResponse, Response

from fastapi_zitadel import IdentityProviderError, InvalidTokenError, ZitadelIntrospection

from .jwt_support import (
    HostileIssuer,
    JwtWorld,
    b64,
    bearer,
    client_for,
    compact,
    new_rsa_key,
)


async def refused(zitadel: ZitadelIntrospection, token: str) -> str:
    """The 401's error_description, through FastAPI (never another status)."""
    async with client_for(zitadel) as client:
        answer = await client.get("/plain", headers=bearer(token))
    assert answer.status_code == 401, answer.text
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    description: str = answer.json()["detail"]["error_description"]
    return description


async def test_a_genuine_token_passes(jwt_world: JwtWorld) -> None:
    """The control for every test below: the same set-up accepts a real token."""
    async with jwt_world.local() as zitadel, client_for(zitadel) as client:
        answer = await client.get("/plain", headers=bearer(jwt_world.forge()))
    assert answer.status_code == 200
    assert answer.json()["verified_by"] == "jwt"


async def test_alg_none(jwt_world: JwtWorld) -> None:
    kid = jwt_world.standin.signing_key_id
    for alg in ("none", "None", "NONE"):
        token = compact({"alg": alg, "kid": kid, "typ": "JWT"}, jwt_world.claims())
        async with jwt_world.local() as zitadel:
            assert "alg none" in await refused(zitadel, token)
    # The same without even an empty signature segment: not a JWT at all.
    bare = token.rsplit(".", 1)[0] + "."
    async with jwt_world.local() as zitadel:
        await refused(zitadel, bare)


async def test_hs256_signed_with_the_rsa_public_key(jwt_world: JwtWorld) -> None:
    """The classic algorithm confusion: the RSA public key's PEM used as an HMAC secret."""
    async with httpx.AsyncClient() as http:
        jwks = (await http.get(jwt_world.issuer + "/oauth/v2/keys")).json()
    jwk = jwks["keys"][0]
    public = RSAAlgorithm.from_jwk(jwk)
    assert isinstance(public, rsa.RSAPublicKey)
    async with jwt_world.local() as zitadel:
        for encoding in (serialization.Encoding.PEM, serialization.Encoding.DER):
            secret = public.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)
            for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
                header = {"alg": alg, "kid": jwk["kid"], "typ": "JWT"}
                signing_input = f"{b64(json.dumps(header))}.{b64(json.dumps(jwt_world.claims()))}"
                mac = hmac.new(secret, signing_input.encode(), digest).digest()
                assert "HMAC" in await refused(zitadel, f"{signing_input}.{b64(mac)}")
        # Nor with the key's algorithm swapped for another the key does not allow.
        other = jwt_world.forge()
        header = {"alg": "PS256", "kid": jwk["kid"], "typ": "JWT"}
        swapped = f"{b64(json.dumps(header))}.{other.split('.', 1)[1]}"
        assert "algorithm" in await refused(zitadel, swapped)


async def test_signature_by_a_key_not_in_the_jwks_with_a_jwks_kid(jwt_world: JwtWorld) -> None:
    attacker = new_rsa_key()
    headers = {"kid": jwt_world.standin.signing_key_id, "typ": "JWT"}
    token = jwt.encode(jwt_world.claims(), attacker, algorithm="RS256", headers=headers)
    async with jwt_world.local() as zitadel:
        assert "signature" in await refused(zitadel, token)


async def test_jku_jwk_x5u_and_x5c_pointing_to_the_attackers_key(jwt_world: JwtWorld) -> None:
    attacker = new_rsa_key()
    hostile = HostileIssuer()
    jwk = RSAAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    jwk.update(kid="attacker", alg="RS256", use="sig")
    hostile.keys_answer = lambda: JSONResponse({"keys": [jwk]})
    with hostile.serve():
        for kid in ("attacker", jwt_world.standin.signing_key_id):
            headers: dict[str, Any] = {
                "kid": kid,
                "typ": "JWT",
                "jku": hostile.issuer + "/keys",
                "x5u": hostile.issuer + "/cert.pem",
                "jwk": jwk,
                "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
            }
            token = jwt.encode(jwt_world.claims(), attacker, algorithm="RS256", headers=headers)
            async with jwt_world.local() as zitadel:
                await refused(zitadel, token)
    assert hostile.requests == []  # nothing in a token is ever fetched


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../etc/passwd",
        "..%2f..%2fkeys",
        "' OR '1'='1' --",
        "1; DROP TABLE keys",
        "kid\x00null",
        "$(curl attacker)",
        "k" * 10_000,
    ],
)
async def test_hostile_kid_values(jwt_world: JwtWorld, kid: str) -> None:
    token = jwt_world.forge(headers={"kid": kid})
    async with jwt_world.local(max_token_length=20_000) as zitadel:
        await refused(zitadel, token)
        assert zitadel.metrics().jwks_fetches <= 1


async def test_a_kid_flood_costs_at_most_a_few_fetches(jwt_world: JwtWorld) -> None:
    """300 tokens with random kids, all at once: 401 each, never a 500, and the JWKS is
    fetched once per throttle interval however many there are."""
    tokens = [jwt_world.forge(headers={"kid": uuid.uuid4().hex}) for _ in range(300)]
    async with jwt_world.local() as zitadel, client_for(zitadel) as client:
        answers = await asyncio.gather(
            *(client.get("/plain", headers=bearer(token)) for token in tokens)
        )
        assert {answer.status_code for answer in answers} == {401}
        jwt_world.monotonic.advance(10)  # within the 30 s throttle: still no new fetch
        more = [jwt_world.forge(headers={"kid": uuid.uuid4().hex}) for _ in range(50)]
        for token in more:
            assert (await client.get("/plain", headers=bearer(token))).status_code == 401
        assert zitadel.metrics().jwks_fetches == 1
        assert jwt_world.standin.jwks_calls == 1
        # A genuine token still passes: its key was fetched with the first flood.
        assert (await client.get("/plain", headers=bearer(jwt_world.token()))).status_code == 200


REMOVE = object()  # a claim left out


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"exp": -10}, "expired"),
        ({"exp": REMOVE}, "no expiry"),
        ({"exp": "tomorrow"}, "not a number"),
        ({"exp": True}, "not a number"),
        ({"exp": 10**20}, "representable"),
        ({"nbf": 600}, "not valid yet"),
        ({"iat": 600}, "issued in the future"),
        ({"iss": "https://evil.example"}, "another issuer"),
        ({"iss": REMOVE}, "another issuer"),
        ({"iss": "TRAILING/"}, "another issuer"),
        ({"aud": ["someone-else"]}, "audience"),
        ({"aud": "someone-else"}, "audience"),
        ({"aud": REMOVE}, "aud claim"),
        ({"aud": [1, 2]}, "aud claim"),
        ({"sub": 42}, "malformed"),
    ],
)
async def test_claims_that_make_a_token_invalid(
    jwt_world: JwtWorld, claims: dict[str, Any], expected: str
) -> None:
    now = int(jwt_world.clock())
    merged = jwt_world.claims()
    for name, value in claims.items():
        if value is REMOVE:
            merged.pop(name, None)
        elif name in ("exp", "nbf", "iat") and type(value) is int and abs(value) < 10**6:
            merged[name] = now + value  # relative to the test's clock
        elif value == "TRAILING/":
            merged[name] = jwt_world.issuer + "/"
        else:
            merged[name] = value
    async with jwt_world.local() as zitadel:
        assert expected in await refused(zitadel, jwt_world.standin.sign_jwt(merged))


async def test_leeway_is_honoured(jwt_world: JwtWorld) -> None:
    now = int(jwt_world.clock())
    inside = jwt_world.forge(exp=now - 3, nbf=now + 3, iat=now + 3)
    async with jwt_world.local(leeway=5) as zitadel:
        assert (await zitadel.verify(inside)).verified_by == "jwt"
    async with jwt_world.local(leeway=1) as zitadel:
        await refused(zitadel, inside)


async def test_a_key_removed_from_the_jwks_stops_verifying_after_the_refresh(
    jwt_world: JwtWorld,
) -> None:
    standin = jwt_world.standin
    old_token = jwt_world.token()
    async with jwt_world.local() as zitadel:
        assert (await zitadel.verify(old_token)).verified_by == "jwt"  # cached from now on
        standin.rotate_signing_key(grace_period=0)  # the old key leaves the JWKS at once
        new_token = jwt_world.token("bob")
        jwt_world.monotonic.advance(31)  # past the throttle: an unknown kid may fetch
        assert (await zitadel.verify(new_token)).subject is not None  # fetches, finds bob's key
        assert zitadel.metrics().jwks_fetches == 2
        # The refresh no longer lists the old key: its tokens fail, the cached one included.
        assert "does not publish" in await refused(zitadel, old_token)


async def test_an_id_token_is_not_an_access_token(jwt_world: JwtWorld) -> None:
    standin, project = jwt_world.standin, jwt_world.project
    id_token = standin.id_token(project.user("alice"), project.project)
    # The stand-in's ID token is shaped as ZITADEL's: its aud holds our project, so only
    # its ID-token claims give it away.
    claims = jwt.decode(id_token, options={"verify_signature": False})
    assert jwt_world.audience in claims["aud"]
    assert jwt.get_unverified_header(id_token)["typ"] == "JWT"
    async with jwt_world.local() as zitadel:
        assert "ID token" in await refused(zitadel, id_token)
        for marker in ("nonce", "c_hash", "s_hash"):
            marked = jwt_world.standin.sign_jwt({**jwt_world.claims(), marker: "x"})
            assert "ID token" in await refused(zitadel, marked)
        # A client's ID token for itself (token exchange can issue one without at_hash):
        # its azp is its only audience.
        selfish = jwt_world.forge(aud=jwt_world.audience, azp=jwt_world.audience)
        assert "ID token" in await refused(zitadel, selfish)
        # typ at+jwt declares an access token (RFC 9068); other types are refused.
        assert (await zitadel.verify(jwt_world.forge(headers={"typ": "at+jwt"}))).subject
        for typ in ("id_token+jwt", "logout+jwt", "application/secevent+jwt", "dpop+jwt"):
            assert "typ" in await refused(zitadel, jwt_world.forge(headers={"typ": typ}))


async def test_crit_and_unencoded_payloads_are_refused(jwt_world: JwtWorld) -> None:
    async with jwt_world.local() as zitadel:
        crit = jwt_world.forge(headers={"crit": ["exp"], "exp": 1})
        assert "critical" in await refused(zitadel, crit)
        kid = jwt_world.standin.signing_key_id
        unencoded = compact({"alg": "RS256", "kid": kid, "b64": False}, jwt_world.claims(), b"x")
        assert "b64" in await refused(zitadel, unencoded)


async def test_malformed_tokens(jwt_world: JwtWorld) -> None:
    good = jwt_world.forge()
    header, payload, signature = good.split(".")
    kid = jwt_world.standin.signing_key_id
    bomb = "[" * 50_000 + "]" * 50_000
    candidates = [
        f"{header}.{payload}.{signature}!",  # not base64url
        f"{header}.{payload[:-1]}.{signature}",  # payload changed: signature fails
        f"{header}.{payload}.{signature[:-5]}",  # signature truncated
        f"{header}.{b64('not json')}.{signature}",
        f"{header}.{b64('[1, 2]')}.{signature}",
        f"{header}x.{payload}.{signature}",  # length 4n+1: never base64
        compact({"alg": "RS256", "kid": kid}, bomb),
        compact(bomb, jwt_world.claims()),
        compact({"alg": "RS256", "kid": kid, "x": bomb}, jwt_world.claims()),
        compact({"alg": "RS256", "kid": kid}, '{"exp": NaN}'),
        compact({"alg": "RS256", "kid": kid}, '{"exp": 1e999999}'),
        compact({"alg": "RS256", "kid": kid}, '{"exp": ' + "9" * 10_000 + "}"),
        f"{header}.{payload}",
        f"{header}.{payload}.{signature}.{signature}",
    ]
    async with jwt_world.local(max_token_length=250_000) as zitadel:
        for token in candidates:
            await refused(zitadel, token)
    # Longer than max_token_length: refused before anything is parsed.
    long = jwt_world.forge(padding="p" * 5000)
    async with jwt_world.local() as zitadel:
        assert "longer than 4096" in await refused(zitadel, long)
        with pytest.raises(InvalidTokenError, match="too long"):
            await zitadel.verify(long)
        assert zitadel.metrics().jwks_fetches == 0


@pytest.mark.parametrize("depth", [500, 900, 5_000])
async def test_a_json_bomb_in_a_validly_signed_token(depth: int) -> None:
    """Signed with the issuer's own key, yet nested deeper than we parse or walk: a 401,
    never a 500."""
    signer = new_rsa_key()
    jwk = RSAAlgorithm.to_jwk(signer.public_key(), as_dict=True)
    jwk.update(kid="k1", alg="RS256")
    hostile = HostileIssuer()
    hostile.keys_answer = lambda: JSONResponse({"keys": [jwk]})
    with hostile.serve():
        claims = json.dumps({"iss": hostile.issuer, "aud": "api", "exp": 4_000_000_000})
        payload = claims[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
        signing_input = f"{b64(json.dumps({'alg': 'RS256', 'kid': 'k1'}))}.{b64(payload)}"
        signature = signer.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = f"{signing_input}.{b64(signature)}"
        zitadel = ZitadelIntrospection(
            hostile.issuer, validation="local", audience="api", max_token_length=100_000
        )
        async with zitadel, client_for(zitadel) as client:
            answer = await client.get("/plain", headers=bearer(token))
    assert answer.status_code in (200, 401), answer.text  # parsed and walked, or refused
    if depth > 900:
        assert answer.status_code == 401


@pytest.mark.parametrize(
    "answer",
    [
        "gzip bomb",
        "10000 keys",
        "10000 tiny keys",
        "2 MiB",
        "html",
        "not an object",
        "no keys",
        "hmac only",
        "private keys",
        "weak rsa",
        "status 500",
    ],
)
async def test_hostile_jwks_answers_are_an_idp_fault(answer: str) -> None:
    """Whatever the JWKS endpoint answers, a token whose key we cannot get is a 503 with
    Retry-After, never a 401 or a 500."""
    signer = new_rsa_key()
    jwk = RSAAlgorithm.to_jwk(signer.public_key(), as_dict=True)
    jwk.update(kid="k1", alg="RS256")
    hostile = HostileIssuer()
    hostile.keys_answer = lambda: _hostile_answer(answer, jwk, signer)
    with hostile.serve():
        claims = {"iss": hostile.issuer, "aud": "api", "exp": 4_000_000_000, "sub": "s"}
        token = jwt.encode(claims, signer, algorithm="RS256", headers={"kid": "k1"})
        zitadel = ZitadelIntrospection(hostile.issuer, validation="local", audience="api")
        async with zitadel, client_for(zitadel) as client:
            response = await client.get("/plain", headers=bearer(token))
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) >= 1
            with pytest.raises(IdentityProviderError):
                await zitadel.verify(token)


_BOMB: list[bytes] = []


def _gzip_bomb() -> bytes:
    """64 MiB of JSON whitespace in about 64 KiB of gzip (made once)."""
    if not _BOMB:
        _BOMB.append(gzip.compress(b'{"keys": [' + b" " * (64 << 20) + b"]}", 9))
    return _BOMB[0]


def _hostile_answer(kind: str, jwk: dict[str, Any], signer: Any) -> Response:
    headers = {"content-type": "application/json"}
    if kind == "gzip bomb":
        return Response(_gzip_bomb(), headers={**headers, "content-encoding": "gzip"})
    if kind == "10000 keys":  # real keys: about 4 MiB once decompressed
        keys = [{**jwk, "kid": f"k{i}"} for i in range(10_000)]
        body = gzip.compress(json.dumps({"keys": keys}).encode())
        return Response(body, headers={**headers, "content-encoding": "gzip"})
    if kind == "10000 tiny keys":  # within the size cap, over the count
        keys = [{"kid": f"k{i}", "kty": "oct"} for i in range(10_000)]
        keys[0] = {**jwk, "kid": "k1"}
        return Response(json.dumps({"keys": keys}), headers=headers)
    if kind == "2 MiB":
        return Response(b'{"keys": [], "pad": "' + b"x" * (2 << 20) + b'"}', headers=headers)
    if kind == "html":
        return Response("<html>502 Bad Gateway</html>", media_type="text/html")
    if kind == "not an object":
        return JSONResponse([jwk])
    if kind == "no keys":
        return JSONResponse({"keys": []})
    if kind == "hmac only":
        return JSONResponse(
            {"keys": [{"kty": "oct", "kid": "k1", "k": b64(secrets.token_bytes(32))}]}
        )
    if kind == "private keys":
        private = RSAAlgorithm.to_jwk(signer, as_dict=True)
        return JSONResponse({"keys": [{**private, "kid": "k1"}]})
    if kind == "weak rsa":
        weak_key = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the point of the test
        weak = RSAAlgorithm.to_jwk(weak_key.public_key(), as_dict=True)
        return JSONResponse({"keys": [{**weak, "kid": "k1"}]})
    return JSONResponse({"error": "boom"}, status_code=500)
