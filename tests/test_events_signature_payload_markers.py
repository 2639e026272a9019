"""ZITADEL's events, the parts that need no server: the ``ZITADEL-Signature`` check, the
event body (its three ``event_payload`` forms), and the revocation markers' verdicts."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastapi_zitadel import Principal
from fastapi_zitadel._events.payload import EventMalformed, parse_event, parse_event_json
from fastapi_zitadel._events.receiver import EventReceiver
from fastapi_zitadel._events.revocations import REFUSED, STALE, Marker, Revocations
from fastapi_zitadel._events.signature import SignatureRefused, verify_signature
from fastapi_zitadel._metrics import Metrics

from .events_support import KEY, OTHER_KEY, event, sign
from .helpers import FakeClock


# The signature -------------------------------------------------------------------------------
def test_signature_accepts_any_matching_v1_and_any_configured_key() -> None:
    body, now = b'{"a":1}', 1_800_000_000
    good = sign(body, KEY, now)["ZITADEL-Signature"]
    other = sign(body, OTHER_KEY, now)["ZITADEL-Signature"].split(",")[1]
    verify_signature(good, body, [KEY.encode()], now=now, max_age=300)
    verify_signature(good + "," + other, body, [OTHER_KEY.encode()], now=now, max_age=300)
    verify_signature(good, body, [OTHER_KEY.encode(), KEY.encode()], now=now + 299, max_age=300)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("t=1800000000", "malformed"),
        ("v1=" + "0" * 64, "malformed"),
        ("t=abc,v1=" + "0" * 64, "malformed"),
        ("t=1800000000,v1=zz" + "0" * 62, "malformed"),
        ("t=1800000000,v1=00", "malformed"),
        ("garbage", "malformed"),
        ("t=1800000000,t=1800000000,v1=" + "0" * 64, "malformed"),
        ("t=1800000000,v1=" + "0" * 64, "mismatch"),
        ("t=1799999000,v1=" + "0" * 64, "stale"),
        ("t=1800001000,v1=" + "0" * 64, "stale"),
    ],
)
def test_signature_refusals(header: str | None, reason: str) -> None:
    with pytest.raises(SignatureRefused) as refused:
        verify_signature(header, b"{}", [KEY.encode()], now=1_800_000_000, max_age=300)
    assert refused.value.reason == reason
    assert KEY not in refused.value.description


def test_a_signature_over_another_body_or_time_does_not_verify() -> None:
    now = 1_800_000_000
    header = sign(b'{"a":1}', KEY, now)["ZITADEL-Signature"]
    with pytest.raises(SignatureRefused):
        verify_signature(header, b'{"a":2}', [KEY.encode()], now=now, max_age=300)
    moved = header.replace(f"t={now}", f"t={now + 1}")
    with pytest.raises(SignatureRefused):
        verify_signature(moved, b'{"a":1}', [KEY.encode()], now=now, max_age=300)


@pytest.mark.hypothesis
@settings(max_examples=300, deadline=None)
@given(header=st.text(max_size=300), body=st.binary(max_size=100))
def test_any_header_is_verified_or_refused_never_crashes(header: str, body: bytes) -> None:
    try:
        verify_signature(header, body, [KEY.encode()], now=1_800_000_000, max_age=300)
    except SignatureRefused:
        return
    pytest.fail("an arbitrary header verified")


# The payload ---------------------------------------------------------------------------------
def test_event_payload_as_object_base64_or_empty() -> None:
    base = event("user.token.removed", "u1", 1_800_000_000.5)
    as_object = parse_event({**base, "event_payload": {"tokenId": "t1"}})
    encoded = base64.b64encode(b'{"tokenId":"t1"}').decode().rstrip("=")
    as_base64 = parse_event({**base, "event_payload": encoded})
    empty = parse_event({**base, "event_payload": {}})
    assert as_object.payload == as_base64.payload == {"tokenId": "t1"}
    assert empty.payload == {}
    assert as_object.created_at == pytest.approx(1_800_000_000.5, abs=1e-3)
    assert as_object.editor == "280000000000000099"
    assert parse_event({**base, "sequence": "42"}).sequence == 42


@pytest.mark.parametrize(
    "broken",
    [
        {"event_type": 1},
        {"aggregateID": ""},
        {"sequence": -1},
        {"sequence": True},
        {"sequence": "x"},
        {"created_at": "yesterday"},
        {"created_at": "2025-01-01T00:00:00"},
    ],
)
def test_malformed_events(broken: dict[str, Any]) -> None:
    with pytest.raises(EventMalformed):
        parse_event({**event("user.locked", "u1", 1_800_000_000), **broken})
    with pytest.raises(EventMalformed):
        parse_event_json(b"not json")
    with pytest.raises(EventMalformed):
        parse_event_json(b"[1]")


@pytest.mark.hypothesis
@settings(max_examples=300, deadline=None)
@given(
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
        max_leaves=20,
    )
)
def test_any_json_is_an_event_or_malformed(data: Any) -> None:
    try:
        parsed = parse_event(data)
    except EventMalformed:
        return
    assert isinstance(parsed.event_type, str)
    assert parsed.event_type


# The markers ---------------------------------------------------------------------------------
def principal(**fields: Any) -> Principal:
    return Principal(**fields)


def test_markers_refuse_tokens_issued_before_the_event_only() -> None:
    clock = FakeClock(1_000.0)
    revocations = Revocations(clock=clock)
    before = datetime.fromtimestamp(900, tz=timezone.utc)
    after = datetime.fromtimestamp(1_100, tz=timezone.utc)
    markers = revocations.markers(parse_event(event("user.deactivated", "u1", 1_000)), 1_000)
    assert markers is not None
    epoch = revocations.epoch
    revocations.apply(markers)
    assert revocations.epoch != epoch
    assert revocations.verdict(principal(subject="u1", issued_at=before), 2_000) == REFUSED
    assert revocations.verdict(principal(subject="u1", issued_at=after), 2_000) == 0
    assert revocations.verdict(principal(subject="u2", issued_at=before), 2_000) == 0
    # a JWT without iat cannot show it is newer; an introspected verdict without one is
    # dropped if it was made before the event and stands if ZITADEL vouched for it after
    assert revocations.verdict(principal(subject="u1", verified_by="jwt"), 2_000) == REFUSED
    assert revocations.verdict(principal(subject="u1"), 999) == REFUSED
    assert revocations.verdict(principal(subject="u1"), 1_001) == 0


def test_session_markers_read_both_token_id_delimiters_and_the_login_mapping() -> None:
    revocations = Revocations(clock=FakeClock(1_000.0))
    issued = datetime.fromtimestamp(900, tz=timezone.utc)
    added = parse_event(
        event(
            "oidc_session.added",
            "V2_oidc1",
            950,
            aggregate_type="oidc_session",
            payload={"sessionID": "login1", "userID": "u1"},
        )
    )
    revocations.apply(revocations.markers(added, 950) or [])
    terminated = parse_event(event("session.terminated", "login1", 1_000, aggregate_type="session"))
    markers = revocations.markers(terminated, 1_000)
    assert markers == [Marker("session", "oidc1", 1_000.0, 1_000.0)]
    revocations.apply(markers)
    for jti in ("V2_oidc1-at_7", "V2_oidc1.at_7"):
        assert revocations.verdict(principal(token_id=jti, issued_at=issued), 2_000) == REFUSED
    assert revocations.verdict(principal(token_id="V2_oidc2-at_7", issued_at=issued), 2_000) == 0


def test_grant_markers_drop_verdicts_and_unknown_grants_drop_all() -> None:
    revocations = Revocations(clock=FakeClock(1_000.0))
    added = parse_event(
        event("user.grant.added", "g1", 900, aggregate_type="usergrant", payload={"userId": "u1"})
    )
    revocations.apply(revocations.markers(added, 900) or [])
    removed = parse_event(event("user.grant.removed", "g1", 1_000, aggregate_type="usergrant"))
    revocations.apply(revocations.markers(removed, 1_000) or [])
    assert revocations.verdict(principal(subject="u1"), 999) == STALE
    assert revocations.verdict(principal(subject="u1"), 1_001) == 0
    assert revocations.verdict(principal(subject="u2"), 999) == 0
    unknown = parse_event(event("user.grant.deactivated", "g9", 1_100, aggregate_type="usergrant"))
    assert revocations.markers(unknown, 1_100) == [Marker("all", "", verified_before=1_100.0)]
    revocations.apply(revocations.markers(unknown, 1_100) or [])
    assert revocations.verdict(principal(subject="u2"), 1_050) == STALE
    assert revocations.verdict(principal(subject="u2"), 1_101) == 0


def test_markers_travel_unchanged() -> None:
    marker = Marker("session", "oidc1", 1.5, 2.5)
    assert Marker.decode(marker.encode()) == marker
    with pytest.raises(ValueError, match="not a revocation marker"):
        Marker.decode(b'{"kind":"everything"}')


def test_a_removed_token_the_payload_does_not_name_drops_the_users_verdicts() -> None:
    """v4.1.0 sends ``{}``: the token is unknown, so its user's verdicts are verified again."""
    revocations = Revocations(clock=FakeClock(1_000.0))
    removed = parse_event(event("user.token.removed", "u1", 1_000, payload={}))
    markers = revocations.markers(removed, 1_000)
    assert markers == [Marker("roles", "u1", verified_before=1_000.0)]
    revocations.apply(markers)
    assert revocations.verdict(principal(subject="u1", token_id="t1"), 999) == STALE
    assert revocations.verdict(principal(subject="u1", token_id="t1"), 1_001) == 0


def test_a_terminated_session_never_mapped_changes_nothing() -> None:
    revocations = Revocations(clock=FakeClock(1_000.0))
    terminated = parse_event(
        event("session.terminated", "login-x", 1_000, aggregate_type="session")
    )
    assert revocations.markers(terminated, 1_000) == []


def _receiver() -> EventReceiver:
    clock = FakeClock(1_800_000_000.0)
    return EventReceiver(
        keys=[KEY.encode()],
        revocations=Revocations(clock=clock),
        metrics=Metrics(),
        feed=None,
        max_age=300,
        max_body=65_536,
        timeout=1.0,
        clock=clock,
        monotonic=clock,
    )


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=15), inner),
    max_leaves=25,
)
_EVENTS = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(["user.locked", "user.grant.added", "session.terminated"])
        | st.text(max_size=20),
        "aggregateID": st.text(max_size=30),
    },
    optional={
        "sequence": _JSON_VALUES,
        "created_at": st.text(max_size=40) | _JSON_VALUES,
        "instanceID": _JSON_VALUES,
        "event_payload": _JSON_VALUES
        | st.binary(max_size=40).map(lambda raw: base64.b64encode(raw).decode()),
    },
)


@pytest.mark.hypothesis
@settings(max_examples=300, deadline=None)
@given(body=_EVENTS.map(json.dumps).map(str.encode) | st.binary(max_size=200))
def test_any_signed_body_is_answered_never_crashes(body: bytes) -> None:
    """Signed with the right key, whatever the body: an answer (200, 400 or 403), never an
    exception."""
    receiver = _receiver()
    headers = {k.lower(): v for k, v in sign(body, KEY, 1_800_000_000).items()}
    status, _ = asyncio.run(receiver.handle(headers, body))
    assert status in (200, 400, 403)


def test_marker_tables_are_bounded_the_oldest_going_first(monkeypatch: pytest.MonkeyPatch) -> None:
    import fastapi_zitadel._events.revocations as revocations_module

    monkeypatch.setattr(revocations_module, "_MAX_ENTRIES", 3)
    revocations = Revocations(clock=FakeClock(1_000.0))
    issued = datetime.fromtimestamp(900, tz=timezone.utc)
    for user in ("u1", "u2", "u3", "u1", "u4"):  # u1 again: refreshed, so u2 is the oldest
        revocations.apply([Marker("user", user, 1_000.0, 1_000.0)])
    assert len(revocations) == 3
    refused = [
        u
        for u in ("u1", "u2", "u3", "u4")
        if revocations.verdict(principal(subject=u, issued_at=issued), 2_000) == REFUSED
    ]
    assert refused == ["u1", "u3", "u4"]
