"""The body of an Actions v2 event call, read strictly: what the markers are made of.

ZITADEL sends ``{"aggregateID", "aggregateType", "resourceOwner", "instanceID", "version",
"sequence", "event_type", "created_at", "userID", "event_payload"}`` with empty fields left
out. ``userID`` is whoever made the change, never the user it is about (that is the
``aggregateID`` of a user event). ``event_payload`` has been three things across versions: a
JSON object, a base64 string of one (older versions), and ``{}`` whatever the event (v4.1.0):
all three are read, and anything else in it is treated as empty rather than trusted.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["EventMalformed", "ZitadelEvent", "parse_event", "parse_event_json"]

_MAX_ID = 200


class EventMalformed(Exception):
    """The body is not an event (400); the message never quotes the body."""


@dataclass(frozen=True, slots=True)
class ZitadelEvent:
    """One event, as ZITADEL describes it (``created_at`` in epoch seconds, ``None`` if absent)."""

    event_type: str
    aggregate_type: str
    aggregate_id: str
    instance_id: str
    sequence: int
    created_at: float | None
    resource_owner: str = ""
    editor: str = ""  # ``userID``: who made the change
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> tuple[str, str, str, int]:
        """What makes an event unique: a second delivery of it is a replay."""
        return (self.instance_id, self.aggregate_type, self.aggregate_id, self.sequence)


def _text(data: Mapping[str, Any], name: str, *, required: bool) -> str:
    value = data.get(name, "")
    if not isinstance(value, str) or len(value) > _MAX_ID or (required and not value):
        raise EventMalformed(f"{name} is missing or not a short string")
    return value


def _sequence(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise EventMalformed("sequence is missing or not a number")
    try:
        number = int(value)
    except ValueError:
        raise EventMalformed("sequence is not a number") from None
    if number < 0 or number >= 2**63:
        raise EventMalformed("sequence is out of range")
    return number


def _created_at(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise EventMalformed("created_at is not an RFC 3339 time")
    # Python reads at most microseconds: ZITADEL sends nanoseconds.
    head, dot, rest = value.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        value = head + "." + rest[: min(digits, 6)] + rest[digits:]
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise EventMalformed("created_at is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise EventMalformed("created_at has no time zone")
    return moment.timestamp()


def _payload(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if not isinstance(value, str) or not value:
        return {}
    try:
        decoded = json.loads(base64.b64decode(value + "=" * (-len(value) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return decoded if isinstance(decoded, Mapping) else {}


def parse_event(data: Any) -> ZitadelEvent:
    """The event in ``data`` (the JSON value of the body, or a JWS's claims)."""
    if not isinstance(data, Mapping):
        raise EventMalformed("the body is not a JSON object")
    return ZitadelEvent(
        event_type=_text(data, "event_type", required=True),
        aggregate_type=_text(data, "aggregateType", required=False),
        aggregate_id=_text(data, "aggregateID", required=True),
        instance_id=_text(data, "instanceID", required=False),
        sequence=_sequence(data.get("sequence", 0)),
        created_at=_created_at(data.get("created_at")),
        resource_owner=_text(data, "resourceOwner", required=False),
        editor=_text(data, "userID", required=False),
        payload=_payload(data.get("event_payload")),
    )


def parse_event_json(body: bytes) -> ZitadelEvent:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise EventMalformed("the body is not JSON") from None
    return parse_event(data)
