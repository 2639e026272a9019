"""From the claims a validator vouched for to a ``Principal`` we are willing to trust: every
claim rule, for introspection answers and for verified JWTs alike, is here and only here.

An introspection answer: ZITADEL already refuses tokens for other audiences, but an answer
can come from a misconfigured proxy, a cache or another server: the checks are cheap insurance.
A claim of the wrong shape or another issuer is an IdP fault or our misconfiguration, not the
caller's: a 503 and an ERROR log, never a 401.

A JWT verified locally carries its own claims, so the same faults are the token's (401), and
a few more rules apply (``jwt_rules``): ``iss`` is the issuer exactly, ``exp`` and ``aud`` are
present, ``iat`` is not in the future beyond ``leeway``, times lie within 1e11 seconds of the
epoch, and the token is no ID token. ZITADEL signs both kinds with the same web key and the
same ``typ: JWT`` (zitadel/zitadel ``internal/api/oidc/sign/signer.go``), so the claims tell
them apart: ``at_hash``, ``c_hash``, ``s_hash`` and ``nonce`` are ID-token claims (OpenID
Connect Core §2, §3.3.2.11) that ZITADEL never puts in an access token, and an ``azp`` that is
the token's only audience is a client's ID token for itself. A token typed ``at+jwt``
declares itself an access token (RFC 9068 §2.1) and is taken as one. See docs/security.md
for what ZITADEL's source says about each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from pydantic import ValidationError

from fastapi_zitadel._claims import text
from fastapi_zitadel._exceptions import (
    IdentityProviderUnavailable,
    InvalidTokenError,
    MalformedClaimError,
)
from fastapi_zitadel._log import RateLimitedLog
from fastapi_zitadel._principal import Principal, VerifiedBy

__all__ = ["ACCESS_TOKEN_TYPES", "ID_TOKEN_CLAIMS", "ClaimChecks"]

# What an active answer may call the token (compared case-insensitively): ZITADEL answers
# "Bearer"; RFC 7662 servers also "access_token" or RFC 8693's URN, or leave it out. A refresh
# token or an ID token is not a credential for this API, whatever else the answer says.
ACCESS_TOKEN_TYPES = frozenset(
    {"bearer", "access_token", "urn:ietf:params:oauth:token-type:access_token"}
)
ID_TOKEN_CLAIMS = ("at_hash", "c_hash", "s_hash", "nonce")
_TIME_BOUND = 1e11  # seconds from the epoch (year 5138): beyond it a JWT's time is no time


class ClaimChecks:
    def __init__(
        self,
        *,
        issuer: str,
        audiences: Collection[str],
        leeway: float,
        project_id: str | None,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        allowed_client_ids: Collection[str] = (),
        principal_class: type[Principal] = Principal,
    ) -> None:
        self._issuer = issuer
        self._audiences = frozenset(audiences)
        self._allowed_client_ids = frozenset(allowed_client_ids)
        self._principal_class = principal_class
        self._leeway = leeway
        self._project_id = project_id
        self._clock = clock
        self._misconfiguration_log = RateLimitedLog(logging.ERROR, monotonic=monotonic)

    def principal(
        self,
        claims: Mapping[str, Any],
        *,
        verified_by: VerifiedBy = "introspection",
        declared_access_token: bool = False,
    ) -> Principal:
        """Raise ``InvalidTokenError`` when the active answer (or the verified JWT's claims)
        must not be trusted. ``declared_access_token``: the JWT's header says ``at+jwt``."""
        principal = self.parse(claims, verified_by=verified_by)
        if verified_by == "jwt":
            self.jwt_rules(principal, declared_access_token=declared_access_token)
        if principal.issuer is not None and principal.issuer != self._issuer:
            # Not the caller's fault: our issuer setting differs from what the IdP says.
            self._misconfiguration_log(
                "the introspection answer names issuer %r but ZITADEL_ISSUER is %r: every "
                "token fails until the setting matches the issuer exactly",
                principal.issuer,
                self._issuer,
            )
            raise IdentityProviderUnavailable("issuer mismatch", retry_after=30.0)
        token_type = principal.token_type
        if token_type is not None and token_type.lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidTokenError("the token is not an access token")
        now, leeway = self._clock(), self._leeway
        if principal.expires_at is not None and principal.expires_at.timestamp() + leeway <= now:
            raise InvalidTokenError("the token has expired")
        if principal.not_before is not None and principal.not_before.timestamp() - leeway > now:
            raise InvalidTokenError("the token is not valid yet")
        audiences = self._audiences
        if audiences and audiences.isdisjoint(principal.audience):
            raise InvalidTokenError(
                "the token is not meant for this API (audience mismatch)",
                detail=f"the token's audiences: {', '.join(principal.audience) or 'none'}; "
                f"accepted (audience): {', '.join(sorted(audiences))}",
            )
        allowed = self._allowed_client_ids
        if allowed:
            # ZITADEL puts every application of the project in ``aud`` (zitadel/zitadel#9200):
            # the audience alone admits tokens issued to sibling apps.
            client = principal.client_id or text(principal.claims, "azp")
            if client not in allowed:
                raise InvalidTokenError(
                    "the token was issued to a client this API does not accept",
                    detail=f"the token's client id: {client or 'none'}; "
                    f"accepted (allowed_client_ids): {', '.join(sorted(allowed))}",
                )
        return principal

    def jwt_rules(self, principal: Principal, *, declared_access_token: bool) -> None:
        """What a self-contained token must show besides what an active answer must."""
        if principal.issuer != self._issuer:
            raise InvalidTokenError("the token was issued by another issuer")
        expires, issued = principal.expires_at, principal.issued_at
        for name, at in (("exp", expires), ("nbf", principal.not_before), ("iat", issued)):
            if at is not None and not -_TIME_BOUND < at.timestamp() < _TIME_BOUND:
                raise InvalidTokenError(f"the token's {name} claim is not a representable time")
        if expires is None:
            raise InvalidTokenError("the token has no expiry (exp)")
        if issued is not None and issued.timestamp() - self._leeway > self._clock():
            raise InvalidTokenError("the token was issued in the future")
        audience = principal.audience
        if not audience:
            raise InvalidTokenError("the token's aud claim is not a string or an array of strings")
        if declared_access_token:
            return
        claims = principal.claims
        for claim in ID_TOKEN_CLAIMS:
            if claim in claims:
                raise InvalidTokenError(f"an ID token is not an access token (it has {claim})")
        azp = claims.get("azp")
        if isinstance(azp, str) and audience == (azp,):
            raise InvalidTokenError("an ID token is not an access token (azp is its only aud)")

    def parse(
        self, claims: Mapping[str, Any], *, verified_by: VerifiedBy = "introspection"
    ) -> Principal:
        """The principal for ``claims``; a shape no server should send is an IdP fault, or
        in a JWT the token's own (it can never become valid: refused, 401, not retried, 503)."""
        try:
            return self._principal_class.from_claims(
                claims, project_id=self._project_id, verified_by=verified_by
            )
        except ValidationError as exc:
            # A custom claim of principal_class= is missing or has the wrong shape: the token
            # lacks what this API requires (a 401), not an IdP fault.
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise InvalidTokenError(
                "the token lacks claims this API requires",
                detail=f"custom claims of {self._principal_class.__name__}: {fields}",
            ) from None
        except RecursionError:  # nesting deep enough to parse but not to walk
            problem = "nested too deeply"
        except MalformedClaimError as exc:
            if verified_by == "jwt":
                raise InvalidTokenError(
                    f"the token's claims are malformed: its {exc.claim} claim is not {exc.expected}"
                ) from None
            problem = str(exc)
        if verified_by == "jwt":
            raise InvalidTokenError(f"the token's claims are malformed: {problem}")
        self._misconfiguration_log("malformed introspection answer: %s", problem)
        raise IdentityProviderUnavailable(
            f"malformed introspection answer: {problem}", retry_after=5.0
        ) from None
