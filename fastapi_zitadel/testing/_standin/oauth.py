"""What the stand-in's OAuth endpoints share: their parameters, one way to answer an error and
one to answer a token, and ZITADEL's rules for scopes and token types."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse

from fastapi_zitadel.testing._directory import AccessToken

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 RFC 8693
AUTHORIZATION_CODE_GRANT = "authorization_code"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105
USER_ID_TOKEN_TYPE = "urn:zitadel:params:oauth:token-type:user_id"  # noqa: S105 ZITADEL's own
# Every token type ZITADEL's exchange knows (zitadel/oidc AllTokenTypes and its user id type).
TOKEN_TYPES = {
    ACCESS_TOKEN_TYPE,
    "urn:ietf:params:oauth:token-type:refresh_token",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:jwt",
    USER_ID_TOKEN_TYPE,
}
# What ZITADEL puts into a token's scope: it knows no custom scopes (zitadel/zitadel#8967) and
# drops the ones it does not know.
STANDARD_SCOPES = {"openid", "profile", "email", "phone", "address", "offline_access"}
IAM_SCOPE_PREFIX = "urn:zitadel:iam:"
AUDIENCE_SCOPE_PREFIX = "urn:zitadel:iam:org:project:id:"
AUDIENCE_SCOPE_SUFFIX = ":aud"


async def parameters(request: Request) -> dict[str, str]:
    """Query and url-encoded form parameters (the only body type OAuth endpoints take)."""
    params = dict(request.query_params)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method == "POST" and content_type == "application/x-www-form-urlencoded":
        body = (await request.body()).decode("utf-8", errors="replace")
        pairs = parse_qsl(body, keep_blank_values=True)
        request.state.form_pairs = pairs  # for repeated fields
        params.update(pairs)
    return params


def every_value(request: Request, name: str) -> list[str]:
    """Every value of a repeated form or query parameter (RFC 8693's ``audience``)."""
    return [value for value in request.query_params.getlist(name) if value] + [
        value for key, value in getattr(request.state, "form_pairs", []) if key == name and value
    ]


def known_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes ZITADEL keeps: the standard ones and its own reserved ones."""
    return [s for s in scopes if s in STANDARD_SCOPES or s.startswith(IAM_SCOPE_PREFIX)]


def audience_scopes(scopes: Iterable[str]) -> list[str]:
    """The project ids of ``urn:zitadel:iam:org:project:id:{id}:aud`` scopes."""
    return [
        scope[len(AUDIENCE_SCOPE_PREFIX) : -len(AUDIENCE_SCOPE_SUFFIX)]
        for scope in scopes
        if scope.startswith(AUDIENCE_SCOPE_PREFIX) and scope.endswith(AUDIENCE_SCOPE_SUFFIX)
    ]


def oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def token_answer(token: AccessToken, **extra: Any) -> JSONResponse:
    """The token endpoint's answer for ``token`` (RFC 6749 §5.1: never cached)."""
    body = {
        "access_token": token.value,
        "token_type": "Bearer",
        "expires_in": token.expires_at - token.issued_at,
        "scope": " ".join(token.scopes),
        **extra,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
