"""Client authentication exactly as ZITADEL checks it (see shared ZITADEL facts).

JWT profile: ``kid`` required and known; RS256 signature; ``iss`` = ``sub`` = the key's owner;
``aud`` contains the issuer exactly; ``exp`` more than 1 s ahead; ``iat`` not over 1 s ahead
and not over an hour old; ``jti`` is not tracked (unless ``track_jti`` asks for the stricter
behaviour of other servers). Basic: id and secret url-unescaped after base64.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

import jwt

from ._directory import Application, Directory, User

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"  # RFC 7523


class ClientAuthFailed(Exception):
    """Answered as HTTP 400 ``unauthorized_client``, as ZITADEL's code does."""


class InvalidRequest(Exception):
    """Answered as HTTP 400 ``invalid_request``."""


class TokenRefused(Exception):
    """A token request refused with ``status`` and ``error`` (and ZITADEL's description)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        self.status = status
        self.error = error
        self.description = description
        super().__init__(f"{status} {error}: {description}")


def authenticate_client(
    directory: Directory,
    *,
    form: Mapping[str, str],
    authorization: str | None,
    issuer: str,
    now: float,
    seen_jtis: set[str] | None,
) -> str:
    """The authenticated client id (an app's client id or a user id)."""
    assertion = form.get("client_assertion")
    basic = authorization is not None and authorization[:6].lower() == "basic "
    if assertion is not None and basic:
        raise InvalidRequest("only one client authentication method may be used")
    if assertion is not None:
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise ClientAuthFailed("unsupported client_assertion_type")
        return _check_assertion(directory, assertion, issuer, now, seen_jtis)
    if basic:
        assert authorization is not None
        return _check_basic(directory, authorization[6:].strip())
    raise ClientAuthFailed("no client authentication")


def _check_assertion(
    directory: Directory, assertion: str, issuer: str, now: float, seen_jtis: set[str] | None
) -> str:
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise ClientAuthFailed("assertion is not a JWT") from None
    kid = header.get("kid")
    owner = directory.keys.get(kid) if isinstance(kid, str) else None
    if owner is None or owner.private_key is None:
        raise ClientAuthFailed("unknown or missing kid")
    subject = owner.id if isinstance(owner, User) else owner.client_id
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion,
            owner.private_key.public_key(),
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise ClientAuthFailed("bad signature") from None
    if claims.get("iss") != subject or claims.get("sub") != subject:
        raise ClientAuthFailed("iss and sub must be the key owner's id")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or issuer not in audiences:
        raise ClientAuthFailed("aud must contain the issuer")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, (int, float)) or exp <= now + 1:
        raise ClientAuthFailed("assertion expired")
    if not isinstance(iat, (int, float)) or iat > now + 1 or iat < now - 3600:
        raise ClientAuthFailed("iat out of range")
    if seen_jtis is not None:
        jti = claims.get("jti")
        if not isinstance(jti, str) or jti in seen_jtis:
            raise ClientAuthFailed("jti missing or reused")
        seen_jtis.add(jti)
    if isinstance(owner, User) and not owner.active:
        raise ClientAuthFailed("user deactivated")
    return subject


def _basic_credentials(encoded: str, malformed: Exception) -> tuple[str, str]:
    """HTTP Basic's client id and secret, each url-unescaped (RFC 6749 §2.3.1)."""
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise malformed from None
    raw_id, _, raw_secret = decoded.partition(":")
    return unquote_plus(raw_id), unquote_plus(raw_secret)


def _check_basic(directory: Directory, encoded: str) -> str:
    malformed = ClientAuthFailed("malformed basic credentials")
    client_id, secret = _basic_credentials(encoded, malformed)
    client: Application | User | None = (
        directory.apps.get(client_id)
        or directory.web_apps.get(client_id)
        or directory.users.get(client_id)
    )
    expected = client.client_secret if client is not None else None
    if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
        raise ClientAuthFailed("wrong client id or secret")
    return client_id


def check_service_user_secret(directory: Directory, authorization: str | None) -> User:
    """Client credentials as ZITADEL checks them (``clientCredentialsAuth``): the client id
    is a service user's login name (its user name), the secret that user's; the refusals are
    ZITADEL's own (an unknown name 400 ``invalid_client``, a wrong or missing secret 400
    ``invalid_request`` with ZITADEL's message key)."""
    if authorization is None or authorization[:6].lower() != "basic ":
        raise TokenRefused(400, "invalid_request", "client_id or client_assertion must be provided")
    malformed = TokenRefused(400, "invalid_client", "invalid basic auth header")
    client_id, secret = _basic_credentials(authorization[6:].strip(), malformed)
    users = directory.users.values()
    user = next((u for u in users if u.kind == "machine" and client_id in u.login_names), None)
    if user is None:
        raise TokenRefused(400, "invalid_client", "client not found")
    if user.client_secret is None:
        raise TokenRefused(400, "invalid_request", "Errors.User.Machine.Secret.NotExisting")
    if not hmac.compare_digest(user.client_secret.encode(), secret.encode()):
        raise TokenRefused(400, "invalid_request", "Errors.User.Machine.Secret.Invalid")
    if not user.active:
        raise TokenRefused(400, "invalid_request", "Errors.User.NotActive")
    return user
