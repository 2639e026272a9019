"""Token exchange (RFC 8693) with ZITADEL's rules (``internal/api/oidc/token_exchange.go``):
an OIDC application with the grant type, authenticated; the subject token active and issued
for the application's project; an actor token for impersonation, which the instance must
allow and the actor's role permit; the audience and scopes no wider than the subject's and
actor's; ``act`` on the new token."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from fastapi_zitadel.testing._client_check import ClientAuthFailed, InvalidRequest
from fastapi_zitadel.testing._directory import AccessToken, User, WebApplication

from .instance import Instance
from .oauth import (
    ACCESS_TOKEN_TYPE,
    TOKEN_EXCHANGE_GRANT,
    TOKEN_TYPES,
    USER_ID_TOKEN_TYPE,
    every_value,
    oauth_error,
    token_answer,
)


async def exchange(instance: Instance, request: Request, params: Mapping[str, str]) -> Response:
    try:
        app = instance.state.directory.web_apps.get(instance.authenticate(params, request))
    except (ClientAuthFailed, InvalidRequest):
        app = None
    if app is None:  # API applications and service users are not OIDC clients
        return oauth_error("invalid_client", "no active client not found")
    if TOKEN_EXCHANGE_GRANT not in app.grant_types:
        return oauth_error(
            "unauthorized_client", f'grant_type "{TOKEN_EXCHANGE_GRANT}" not allowed'
        )
    subject_value, subject_type = params.get("subject_token"), params.get("subject_token_type")
    actor_value, actor_type = params.get("actor_token", ""), params.get("actor_token_type", "")
    if not subject_value:
        return oauth_error("invalid_request", "subject_token missing")
    if not subject_type:
        return oauth_error("invalid_request", "subject_token_type missing")
    if not {subject_type, actor_type or ACCESS_TOKEN_TYPE} <= TOKEN_TYPES:
        return oauth_error("invalid_request", "subject_token_type is not supported")
    if (params.get("requested_token_type") or ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
        # ZITADEL also issues JWTs and ID tokens here; this stand-in issues opaque tokens.
        return oauth_error(
            "invalid_request", "the stand-in exchanges for opaque access tokens only"
        )
    if params.get("resource"):
        return oauth_error("invalid_target", "resource parameter not supported")
    subject = _exchangeable(instance, app, subject_value, subject_type)
    if subject is None:
        return oauth_error("invalid_request", "subject_token invalid")
    actor: AccessToken | None = None
    if subject_type == USER_ID_TOKEN_TYPE or actor_value:
        if not instance.state.impersonation:
            return oauth_error(
                "invalid_request", "Errors.TokenExchange.Impersonation.PolicyDisabled", 403
            )
        found = _exchangeable(instance, app, actor_value, actor_type)
        if not isinstance(found, AccessToken):
            return oauth_error("invalid_request", "actor_token invalid")
        if not found.user.can_impersonate:
            return oauth_error("invalid_request", "Errors.PermissionDenied", 403)
        actor = found
    subject_audience = subject.audience if isinstance(subject, AccessToken) else []
    subject_scopes = subject.scopes if isinstance(subject, AccessToken) else []
    actor_audience = actor.audience if actor else []
    actor_scopes = actor.scopes if actor else []
    audience = every_value(request, "audience") or subject_audience or actor_audience
    scopes = params.get("scope", "").split() or subject_scopes or actor_scopes
    for name, error, asked, held in (
        ("audience", "invalid_target", audience, subject_audience + actor_audience),
        ("scope", "invalid_scope", scopes, subject_scopes + actor_scopes),
    ):
        for entry in asked:
            if entry not in held:
                return oauth_error(error, f'{name} "{entry}" not found in subject or actor token')
    user = subject.user if isinstance(subject, AccessToken) else subject
    token = instance.state.directory.mint(
        user,
        client_id=app.client_id,
        audience=audience,
        scopes=scopes,
        now=int(instance.state.clock()),
        lifetime=43_200,
    )
    if actor is not None:
        # The actor's own actor nests (a chain of delegations), as ZITADEL's nestedActor.
        token.actor = {"iss": instance.state.issuer, "sub": actor.user.id}
        if actor.actor is not None:
            token.actor["act"] = actor.actor
    elif isinstance(subject, AccessToken) and subject.actor is not None:
        token.actor = subject.actor
    return token_answer(token, issued_token_type=ACCESS_TOKEN_TYPE)


def _exchangeable(
    instance: Instance, app: WebApplication, value: str, token_type: str
) -> AccessToken | User | None:
    """A token (or, for ZITADEL's user id type, a user) the application may exchange."""
    directory = instance.state.directory
    if token_type == USER_ID_TOKEN_TYPE:
        return directory.users.get(value)
    if token_type != ACCESS_TOKEN_TYPE:
        return None  # id_token and jwt subjects: not modelled by the stand-in
    token = directory.tokens.get(value)
    if token is None or not instance.is_live(token):
        return None
    if app.client_id not in token.audience and app.project.id not in token.audience:
        return None
    return token
