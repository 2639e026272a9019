"""Revocation (RFC 7009, ``/oauth/v2/revoke``) as ZITADEL v4 does it: the token's OIDC
session loses its access token, a personal access token is removed."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fastapi_zitadel.testing._client_check import ClientAuthFailed, InvalidRequest

from .instance import Instance
from .oauth import oauth_error, parameters


class Revocation:
    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    def revoke(self, token: str) -> None:
        found = self.instance.find_token(token)
        if found is None or found.revoked:
            return
        found.revoked = True
        session = found.oidc_session
        if found.personal:
            self.instance.emit(found.user, "user.pat.removed", editor=None, tokenId=found.id)
        elif session is not None and not session.access_token_revoked:
            session.access_token_revoked = True
            self.instance.emit_about_session(session, "oidc_session.access_token.revoked")

    async def endpoint(self, request: Request) -> Response:
        params = await parameters(request)
        try:
            self.instance.authenticate(params, request)
        except (ClientAuthFailed, InvalidRequest):
            return oauth_error("invalid_client", "client authentication failed", 401)
        self.revoke(params.get("token", ""))
        return Response(status_code=200)
