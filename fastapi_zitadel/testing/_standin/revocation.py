"""Revocation (RFC 7009, ``/oauth/v2/revoke``) as ZITADEL v4 does it: the token's OIDC
session loses its access token, a personal access token is removed."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fastapi_zitadel.testing._client_check import ClientAuthFailed, InvalidRequest

from .instance import Instance
from .oauth import oauth_error, parameters


def revoke(instance: Instance, token: str) -> None:
    found = instance.find_token(token)
    if found is None or found.revoked:
        return
    found.revoked = True
    session = found.oidc_session
    if found.personal:
        instance.emit(found.user, "user.pat.removed", editor=None, tokenId=found.id)
    elif session is not None and not session.access_token_revoked:
        session.access_token_revoked = True
        instance.emit_about_session(session, "oidc_session.access_token.revoked")


async def revoke_endpoint(instance: Instance, request: Request) -> Response:
    params = await parameters(request)
    try:
        instance.authenticate(params, request)
    except (ClientAuthFailed, InvalidRequest):
        return oauth_error("invalid_client", "client authentication failed", 401)
    revoke(instance, params.get("token", ""))
    return Response(status_code=200)
