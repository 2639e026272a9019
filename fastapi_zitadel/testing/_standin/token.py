"""The token endpoint (``/oauth/v2/token``): a service user's JWT bearer (RFC 7523) and client
credentials grants here; the authorization code (``login``) and token exchange
(``exchange``) grants are handed to their own modules."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from fastapi_zitadel.testing._client_check import (
    CLIENT_ASSERTION_TYPE,
    ClientAuthFailed,
    TokenRefused,
    check_service_user_secret,
)
from fastapi_zitadel.testing._directory import User

from .exchange import exchange
from .instance import Instance
from .login import Login
from .oauth import (
    AUTHORIZATION_CODE_GRANT,
    JWT_BEARER_GRANT,
    TOKEN_EXCHANGE_GRANT,
    known_scopes,
    oauth_error,
    parameters,
    token_answer,
)


async def token_endpoint(instance: Instance, login: Login, request: Request) -> Response:
    instance.state.token_calls += 1
    params = await parameters(request)
    grant = params.get("grant_type")
    if grant == AUTHORIZATION_CODE_GRANT:
        return login.redeem(params)
    if grant == TOKEN_EXCHANGE_GRANT:
        return await exchange(instance, request, params)
    try:
        if grant == JWT_BEARER_GRANT:
            user = _jwt_bearer_user(instance, params)
        elif grant == "client_credentials":
            authorization = request.headers.get("authorization")
            user = check_service_user_secret(instance.state.directory, authorization)
        else:
            return oauth_error(
                "unsupported_grant_type",
                "use authorization_code, jwt-bearer, client_credentials or token-exchange",
            )
    except TokenRefused as refused:
        return oauth_error(refused.error, refused.description, refused.status)
    # ZITADEL keeps the scopes it knows and drops the others (no custom scopes).
    scopes = known_scopes(params.get("scope", "").split())
    # The client id of a client-credentials token is the name it was asked with.
    client_id = user.id if grant == JWT_BEARER_GRANT else user.username
    token = instance.mint(user, [], scopes, 43_200, client_id, jwt=user.jwt_access_tokens)
    return token_answer(token)


def _jwt_bearer_user(instance: Instance, params: Mapping[str, str]) -> User:
    """The JWT bearer grant (RFC 7523 §2.1), checked as ZITADEL checks it: the assertion
    as a client assertion (``kid``, RS256, ``iss`` = ``sub``, ``aud``, ``exp``, ``iat``) of a
    service user's key. What it cannot verify ZITADEL answers with 500 ``server_error``
    (``Errors.Internal``; zitadel/zitadel#12692, #9745), not RFC 7523's ``invalid_grant``."""
    assertion = params.get("assertion", "")
    if not assertion:
        raise TokenRefused(400, "invalid_request", "assertion missing")
    form = {"client_assertion": assertion, "client_assertion_type": CLIENT_ASSERTION_TYPE}
    try:
        subject = instance.authenticate(form, None)
    except ClientAuthFailed:
        raise TokenRefused(500, "server_error", "Errors.Internal") from None
    user = instance.state.directory.users.get(subject)
    if user is None or user.kind != "machine":  # an application's key
        raise TokenRefused(500, "server_error", "Errors.Internal")
    return user
