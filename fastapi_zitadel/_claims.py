"""Reading an answer's claims: every shape ZITADEL and other RFC 7662 servers produce.

Descriptive claims of the wrong type are dropped; claims that decide validity (``exp``,
``aud``, ``scope``...) are read strictly, because guessing there could let a bad token through.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ._exceptions import MalformedClaimError
from ._interning import SHARED

__all__ = [
    "ACTOR_CLAIM",
    "METADATA_CLAIM",
    "ORG_DOMAIN_CLAIM",
    "ORG_ID_CLAIM",
    "ORG_NAME_CLAIM",
    "ROLES_CLAIM",
    "actors",
    "audience",
    "flag",
    "metadata",
    "project_roles_claim",
    "roles",
    "scopes",
    "strict_text",
    "text",
    "time",
]

ACTOR_CLAIM = "act"  # RFC 8693 §4.1
ROLES_CLAIM = "urn:zitadel:iam:org:project:roles"
METADATA_CLAIM = "urn:zitadel:iam:user:metadata"
ORG_ID_CLAIM = "urn:zitadel:iam:user:resourceowner:id"
ORG_NAME_CLAIM = "urn:zitadel:iam:user:resourceowner:name"
ORG_DOMAIN_CLAIM = "urn:zitadel:iam:user:resourceowner:primary_domain"


def project_roles_claim(project_id: str) -> str:
    """The claim that holds the roles of one project: ``urn:zitadel:iam:org:project:{id}:roles``."""
    return f"urn:zitadel:iam:org:project:{project_id}:roles"


def text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) else None


def strict_text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None or isinstance(value, str):
        return value
    raise MalformedClaimError(name, "a string")


def flag(claims: Mapping[str, Any], name: str) -> bool | None:
    value = claims.get(name)
    return value if isinstance(value, bool) else None


def time(claims: Mapping[str, Any], name: str) -> datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python; a ``true`` expiry is nonsense, not second 1 of 1970.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedClaimError(name, "a number of seconds since the epoch")
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise MalformedClaimError(name, "a representable time") from None


def scopes(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return SHARED.scopes(value)
    # Some servers send a JSON array; accept it only if every item is a string.
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise MalformedClaimError("scope", "a space-delimited string")


def audience(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return SHARED.strings((value,))
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return SHARED.strings(tuple(value))
    raise MalformedClaimError("aud", "a string or an array of strings")


_MAX_ACTORS = 16


def actors(value: Any) -> list[tuple[str | None, str | None]]:
    """The ``act`` chain (RFC 8693 §4.1) as (subject, issuer) pairs, the current actor first.
    Read strictly: who acts for the subject is what an API may decide on (refusing impersonated
    tokens, auditing them), so an ``act`` of the wrong shape is an IdP fault, never ignored."""
    chain: list[tuple[str | None, str | None]] = []
    while value is not None:
        if not isinstance(value, Mapping) or len(chain) >= _MAX_ACTORS:
            raise MalformedClaimError(ACTOR_CLAIM, f"an object (nested at most {_MAX_ACTORS} deep)")
        chain.append((strict_text(value, "sub"), strict_text(value, "iss")))
        value = value.get(ACTOR_CLAIM)
    return chain


def roles(claims: Mapping[str, Any], project_id: str | None) -> dict[str, dict[str, str]]:
    """Project roles; with a project id, only that project's claim counts: ZITADEL's generic
    claim holds the roles of the project that *requested* the token, which may be another one
    (taking the first ``...:roles`` claim found, as one peer does, can grant the wrong ones)."""
    value = claims.get(project_roles_claim(project_id) if project_id else ROLES_CLAIM)
    if isinstance(value, (list, tuple)):  # other servers: a plain list of role names
        return {role: {} for role in value if isinstance(role, str)}
    if not isinstance(value, Mapping):
        return {}
    found: dict[str, dict[str, str]] = {}
    for role, orgs in value.items():
        if isinstance(role, str) and isinstance(orgs, Mapping):  # else not ZITADEL's shape
            found[role] = {
                org: domain
                for org, domain in orgs.items()
                if isinstance(org, str) and isinstance(domain, str)
            }
    return found


def metadata(value: Any) -> dict[str, bytes]:
    """ZITADEL metadata: values are base64url without padding; undecodable ones are skipped."""
    if not isinstance(value, Mapping):
        return {}
    decoded: dict[str, bytes] = {}
    for key, encoded in value.items():
        if not isinstance(key, str) or not isinstance(encoded, str):
            continue
        try:
            data = encoded.encode("ascii")
            decoded[key] = base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
        except (UnicodeEncodeError, binascii.Error, ValueError):
            continue
    return decoded
