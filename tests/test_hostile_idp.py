"""Whatever the IdP answers, the outcome is a Principal, an invalid token, or an IdP error:
never another exception, never a Principal from an answer that is not a proper active one."""

import asyncio
import json
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_zitadel import (
    IdentityProviderError,
    InvalidTokenError,
    Principal,
    ZitadelError,
    ZitadelIntrospection,
)

from .test_principal import json_value

ISSUER = "https://zitadel.example.test"
FIELDS = ["active", "scope", "client_id", "exp", "iat", "nbf", "sub", "aud", "iss", "jti"]
FIELDS += ["username", "email", "email_verified", "locale", "urn:zitadel:iam:org:project:roles"]
FIELDS += ["urn:zitadel:iam:user:metadata", "urn:zitadel:iam:user:resourceowner:id"]

answers = st.fixed_dictionaries(
    {"active": st.just(True)}, optional={field: json_value for field in FIELDS[1:]}
) | st.dictionaries(st.sampled_from(FIELDS), json_value)
statuses = st.sampled_from([200, 200, 200, 201, 204, 400, 401, 403, 404, 429, 500, 502])
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/html", ""]
)


def outcome(status: int, body: bytes, content_type: str, app_key: dict[str, Any]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        return httpx.Response(status, content=body, headers=headers)

    zitadel = ZitadelIntrospection(
        ISSUER,
        key_file=app_key,
        introspection_endpoint=ISSUER + "/oauth/v2/introspect",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        max_retries=0,
    )

    async def run() -> Any:
        try:
            return await zitadel.verify("token")
        except ZitadelError as error:
            return error

    return asyncio.run(run())


@settings(max_examples=150, deadline=None)
@given(answer=answers, status=statuses, content_type=content_types, truncate=st.booleans())
def test_any_answer_has_a_named_outcome(
    app_key: dict[str, Any], answer: dict[str, Any], status: int, content_type: str, truncate: bool
) -> None:
    body = json.dumps(answer).encode()
    if truncate:
        body = body[: len(body) // 2]
    result = outcome(status, body, content_type, app_key)
    assert isinstance(result, (Principal, InvalidTokenError, IdentityProviderError))
    if isinstance(result, Principal):
        assert status == 200
        assert content_type.startswith("application/json")
        assert answer.get("active") is True
        assert not truncate
