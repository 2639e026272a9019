"""Checks we run on an *active* answer, as defence in depth.

ZITADEL already refuses tokens for other audiences, but an introspection answer can come from
a misconfigured proxy, a cache, or another server; a few comparisons here are cheap insurance.
(The issuer is compared elsewhere: a mismatch there is our misconfiguration, not a bad token.)
"""

from __future__ import annotations

from collections.abc import Collection

from ._exceptions import InvalidTokenError
from ._principal import Principal


def check_active_principal(
    principal: Principal,
    *,
    now: float,
    leeway: float,
    audiences: Collection[str],
) -> None:
    """Raise ``InvalidTokenError`` when the active answer must not be trusted."""
    if principal.expires_at is not None and principal.expires_at.timestamp() + leeway <= now:
        raise InvalidTokenError("the token has expired")
    if principal.not_before is not None and principal.not_before.timestamp() - leeway > now:
        raise InvalidTokenError("the token is not valid yet")
    if audiences and not any(audience in audiences for audience in principal.audience):
        raise InvalidTokenError("the token is not meant for this API (audience mismatch)")
