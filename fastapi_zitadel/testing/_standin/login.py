"""The authorization code flow with PKCE: the authorization endpoint, a minimal login page
where the person picks a user, the code's redemption at the token endpoint, and the ID token
issued with it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fastapi_zitadel.testing._directory import AccessToken, LoginSession, User, WebApplication

from .instance import Instance
from .oauth import known_scopes, oauth_error, parameters, token_answer

LOGIN_PATH = "/ui/login/select"
CODE_LIFETIME = 300  # seconds an authorization code can be exchanged
# RFC 7636 section 4.1: 43 to 128 characters of the unreserved set.
_CODE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


@dataclass
class _AuthorizationRequest:
    """An authorization request waiting for the login page's answer."""

    app: WebApplication
    redirect_uri: str
    scopes: list[str]
    state: str | None
    nonce: str | None
    code_challenge: str


@dataclass
class _AuthorizationCode:
    request: _AuthorizationRequest
    user: User
    expires_at: float
    session: LoginSession


class Login:
    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self._requests: dict[str, _AuthorizationRequest] = {}
        self._codes: dict[str, _AuthorizationCode] = {}

    async def authorize(self, request: Request) -> Response:
        """The authorization endpoint: checks the request as ZITADEL does (a known client, an
        exactly registered redirect URI, ``response_type=code``, a PKCE S256 challenge) and
        shows a login page where the person picks a user."""
        params = request.query_params
        app = self.instance.state.directory.web_apps.get(params.get("client_id", ""))
        if app is None:
            return _login_error("unknown client_id")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in app.redirect_uris:
            return _login_error(f"redirect_uri {redirect_uri!r} is not registered for this app")
        state = params.get("state")
        if params.get("response_type") != "code":
            error = {"error": "unsupported_response_type", "error_description": "use code"}
            return _redirect(redirect_uri, state, error)
        challenge = params.get("code_challenge", "")
        if not challenge or params.get("code_challenge_method") != "S256":
            description = "PKCE is required: code_challenge with code_challenge_method S256"
            error = {"error": "invalid_request", "error_description": description}
            return _redirect(redirect_uri, state, error)
        request_id = secrets.token_urlsafe(16)
        scopes, nonce = params.get("scope", "").split(), params.get("nonce")
        self._requests[request_id] = _AuthorizationRequest(
            app, redirect_uri, scopes, state, nonce, challenge
        )
        users = self.instance.state.directory.users.values()
        humans = [user for user in users if user.kind == "human" and user.usable]
        return HTMLResponse(_login_page(request_id, app, humans))

    async def login(self, request: Request) -> Response:
        """The login page's answer: the picked user gets an authorization code."""
        params = await parameters(request)
        pending = self._requests.pop(params.get("auth_request", ""), None)
        user = self.instance.state.directory.users.get(params.get("user", ""))
        if pending is None:
            return _login_error("this login is unknown or already used: start it again")
        if user is None or user.kind != "human" or not user.usable:
            return _login_error("unknown user")
        code = secrets.token_urlsafe(32)
        self._codes[code] = _AuthorizationCode(
            pending,
            user,
            self.instance.state.clock() + CODE_LIFETIME,
            self.instance.new_login_session(user),
        )
        return _redirect(pending.redirect_uri, pending.state, {"code": code})

    def redeem(self, params: Mapping[str, str]) -> Response:
        """``grant_type=authorization_code`` for a public client: the code once, from the same
        client and redirect URI, with the PKCE verifier of its challenge."""
        found = self._codes.pop(params.get("code", ""), None)
        if found is None or self.instance.state.clock() > found.expires_at:
            return oauth_error("invalid_grant", "the code is unknown, used or expired")
        pending = found.request
        client_id = pending.app.client_id
        if params.get("client_id") != client_id:
            return oauth_error("invalid_client", "the code was issued to another client")
        if params.get("redirect_uri") != pending.redirect_uri:
            return oauth_error("invalid_grant", "redirect_uri differs from the authorization")
        verifier = params.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode("ascii", errors="replace")).digest()
        expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        if not _CODE_VERIFIER.fullmatch(verifier) or not hmac.compare_digest(
            expected, pending.code_challenge
        ):
            return oauth_error("invalid_grant", "code_verifier does not match the challenge")
        scopes = known_scopes(pending.scopes)
        token = self.instance.mint(
            found.user,
            [pending.app.project.id],
            scopes,
            43_200,
            client_id,
            jwt=pending.app.jwt_access_tokens,
            requester=client_id,
            login=found.session,
        )
        if "openid" not in scopes:
            return token_answer(token)
        return token_answer(
            token, id_token=id_token(self.instance, token, client_id, pending.nonce)
        )


def id_token(
    instance: Instance, token: AccessToken, client_id: str, nonce: str | None = None
) -> str:
    """Shaped as ZITADEL's (zitadel/oidc ``NewIDTokenClaims``): the access token's
    audience with the client id, ``azp`` and ``client_id`` the client, ``at_hash`` of the
    access token issued with it, ``nonce`` when the client sent one."""
    digest = hashlib.sha256(token.value.encode("ascii")).digest()
    claims: dict[str, Any] = {
        "iss": instance.state.issuer,
        "sub": token.user.id,
        "aud": list(dict.fromkeys([*token.audience, client_id])),
        "azp": client_id,
        "client_id": client_id,
        "iat": token.issued_at,
        "exp": token.expires_at,
        "auth_time": token.issued_at,
        "at_hash": base64.urlsafe_b64encode(digest[:16]).decode().rstrip("="),
    }
    if nonce:
        claims["nonce"] = nonce
    return instance.web_keys.sign(claims)


def _redirect(uri: str, state: str | None, answer: dict[str, str]) -> Response:
    """Back to a verified redirect URI with ``answer`` and ``state``: the code, or an error
    (RFC 6749 4.1.2.1: errors go back there too)."""
    query = urlencode({**answer, "state": state} if state else answer)
    return RedirectResponse(uri + ("&" if "?" in uri else "?") + query, status_code=303)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in: ZITADEL stand-in</title>
<style>body{{font-family:sans-serif;max-width:32em;margin:3em auto}}
button{{display:block;width:100%;margin:.4em 0;padding:.6em;font-size:1em;text-align:left}}
</style></head><body>
{body}
</body></html>
"""


def _login_page(request_id: str, app: WebApplication, users: list[User]) -> str:
    """The minimal login page: one button per human user, with its roles in the project."""
    buttons = []
    for user in users:
        roles = ", ".join(sorted(user.roles.get(app.project.id, set()))) or "no roles"
        label = f"{user.username} ({roles})"
        buttons.append(
            f'<button type="submit" name="user" value="{html.escape(user.id)}">'
            f"{html.escape(label)}</button>"
        )
    body = (
        f"<h1>Sign in to {html.escape(app.project.name)}</h1>"
        "<p>ZITADEL stand-in, for development: pick the user to sign in as.</p>"
        f'<form method="post" action="{LOGIN_PATH}">'
        f'<input type="hidden" name="auth_request" value="{html.escape(request_id)}">'
        + ("".join(buttons) or "<p>No users yet.</p>")
        + "</form>"
    )
    return _PAGE.format(body=body)


def _login_error(message: str) -> HTMLResponse:
    """Errors that must not be redirected (unknown client or redirect URI)."""
    body = f"<h1>Cannot sign in</h1><p>{html.escape(message)}</p>"
    return HTMLResponse(_PAGE.format(body=body), status_code=400)
