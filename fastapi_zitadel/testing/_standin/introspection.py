"""Introspection (RFC 7662, ``/oauth/v2/introspect``) as ZITADEL answers it: only an API or
OIDC application may ask, and only about tokens whose audience holds it or its project."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fastapi_zitadel.testing._client_check import ClientAuthFailed, InvalidRequest
from fastapi_zitadel.testing._directory import AccessToken

from . import faults
from .instance import Instance
from .oauth import oauth_error, parameters


async def introspect(instance: Instance, request: Request) -> Response:
    instance.state.introspection_calls += 1
    fault, faulty = await faults.apply(instance.faults, "introspect")
    if faulty is not None:
        return faulty
    params = await parameters(request)
    try:
        caller: str | None = instance.authenticate(params, request)
    except ClientAuthFailed:
        caller = None
    except InvalidRequest as exc:
        return oauth_error("invalid_request", str(exc))
    # ZITADEL looks the caller up among API and OIDC applications only: a service user's key
    # or secret is refused here as any unknown client is.
    if caller is None or caller in instance.state.directory.users:
        return oauth_error("unauthorized_client", "client authentication failed")
    token_value = params.get("token")
    if not token_value:
        return oauth_error("invalid_request", "token missing")
    if fault is not None and fault.kind == "inactive":
        return JSONResponse({"active": False})
    app = instance.state.directory.apps.get(caller)
    allowed = {caller} if app is None else {caller, app.project.id}
    token = instance.state.directory.tokens.get(token_value)
    if token is None or not instance.is_live(token) or allowed.isdisjoint(token.audience):
        return JSONResponse({"active": False})
    return JSONResponse(_active_body(instance, token, app.project.id if app else None))


def _active_body(instance: Instance, token: AccessToken, project_id: str | None) -> dict[str, Any]:
    user = token.user
    scopes = set(token.scopes)
    body: dict[str, Any] = {
        "active": True,
        "scope": " ".join(token.scopes),
        "client_id": token.client_id,
        "token_type": "Bearer",
        **instance.claims(token, project_id),
    }
    if "profile" in scopes:
        body.update(
            name=user.name,
            given_name=user.given_name,
            family_name=user.family_name,
            locale=user.locale,
            updated_at=token.issued_at,
            preferred_username=user.username,
            username=user.username,
        )
    if "email" in scopes and user.email is not None:
        body["email"] = user.email
        if user.email_verified:
            body["email_verified"] = True
    return body
