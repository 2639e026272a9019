"""The stand-in's events, shaped as ZITADEL v4's Actions v2 sends them to a target.

ZITADEL writes every change as an event of an aggregate (a user, a user grant, a login session,
an OIDC session). An event execution POSTs it to its targets as JSON signed with the target's
key (header ``ZITADEL-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + body>``), or as a JWT
signed with the instance's web key (with the same header, computed over the JWT). The quirks
of released versions are options here, so a receiver can be tested against each:
``event_payload`` a base64 string (before v4.1), always ``{}`` (v4.1.0, zitadel/zitadel#10650),
or the JSON object (after #10651).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

PayloadFormat = Literal["object", "base64", "empty"]
SIGNATURE_HEADER = "ZITADEL-Signature"

# The version ZITADEL writes on each aggregate type's events.
_AGGREGATE_VERSIONS = {"user": "v2", "usergrant": "v1", "session": "v1", "oidc_session": "v1"}


@dataclass(frozen=True)
class Event:
    """One event of the stand-in's history. ``editor`` is who made the change (``userID`` in
    the body), not necessarily the user it is about."""

    aggregate_type: str
    aggregate_id: str
    resource_owner: str
    instance_id: str
    sequence: int  # per aggregate, from 1
    position: int  # across the instance: orders events and tokens
    event_type: str
    created_at: float  # the stand-in's clock, seconds
    editor: str
    payload: Mapping[str, Any] = field(default_factory=dict)

    def body(self, payload_format: PayloadFormat = "object") -> dict[str, Any]:
        """The JSON object an event execution sends (empty fields left out, as ZITADEL's
        ``omitempty``)."""
        body: dict[str, Any] = {
            "aggregateID": self.aggregate_id,
            "aggregateType": self.aggregate_type,
            "resourceOwner": self.resource_owner,
            "instanceID": self.instance_id,
            "version": _AGGREGATE_VERSIONS.get(self.aggregate_type, "v1"),
            "sequence": self.sequence,
            "event_type": self.event_type,
            "created_at": rfc3339_nano(self.created_at),
            "userID": self.editor,
        }
        if payload_format == "empty":
            body["event_payload"] = {}
        elif payload_format == "base64":
            raw = json.dumps(dict(self.payload), separators=(",", ":")).encode()
            body["event_payload"] = base64.b64encode(raw).decode("ascii")
        else:
            body["event_payload"] = dict(self.payload)
        return {name: value for name, value in body.items() if value not in ("", None)}


def rfc3339_nano(seconds: float) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: nanoseconds with trailing zeros trimmed, and no
    fraction at all on a whole second (``2026-12-07T02:31:54.1234Z``)."""
    nanos = round(seconds * 1_000_000_000)
    whole, fraction = divmod(nanos, 1_000_000_000)
    stamp = datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def signature_header(signing_key: str, body: bytes, timestamp: int) -> str:
    """``t=<unix>,v1=<hex HMAC-SHA256(key, "<t>." + body)>``, as ZITADEL signs a JSON payload."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(signing_key.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
