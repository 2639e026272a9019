"""Discovery (``/.well-known/openid-configuration``) and the JWKS (``/oauth/v2/keys``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import faults
from .instance import Instance
from .oauth import AUTHORIZATION_CODE_GRANT, JWT_BEARER_GRANT, TOKEN_EXCHANGE_GRANT

# ZITADEL's JWKS answer by default (OIDC.JWKSCacheControlMaxAge: 5m).
JWKS_CACHE_CONTROL = "max-age=300, must-revalidate"
_CLIENT_AUTH = ["client_secret_basic", "private_key_jwt"]


async def configuration(instance: Instance, _request: Request) -> Response:
    issuer = instance.state.issuer
    base = issuer + "/oauth/v2"
    return JSONResponse(
        {
            "issuer": issuer,
            "authorization_endpoint": base + "/authorize",
            "token_endpoint": base + "/token",
            "introspection_endpoint": base + "/introspect",
            "revocation_endpoint": base + "/revoke",
            "jwks_uri": base + "/keys",
            "introspection_endpoint_auth_methods_supported": _CLIENT_AUTH,
            "introspection_endpoint_auth_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none", *_CLIENT_AUTH],
            "grant_types_supported": [
                AUTHORIZATION_CODE_GRANT,
                "client_credentials",
                JWT_BEARER_GRANT,
                TOKEN_EXCHANGE_GRANT,
            ],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "email", "phone"],
        }
    )


async def jwks(instance: Instance, _request: Request) -> Response:
    instance.state.jwks_calls += 1
    _fault, faulty = await faults.apply(instance.faults, "keys")
    if faulty is not None:
        return faulty
    keys = [key.jwk() for key in instance.web_keys.published()]
    return JSONResponse({"keys": keys}, headers={"Cache-Control": JWKS_CACHE_CONTROL})
