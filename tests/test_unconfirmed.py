"""Hybrid mode's ledger of JWTs served before their confirmation (``_pipeline/unconfirmed.py``):
the count per token, the limit, the token's ``exp``, and the cap on records."""

from __future__ import annotations

from fastapi_zitadel import Principal
from fastapi_zitadel._pipeline.unconfirmed import Unconfirmed

NOW = 1_800_000_000.0


def principal(exp: float = NOW + 3600) -> Principal:
    return Principal.from_claims({"sub": "310000000000000042", "exp": int(exp), "active": True})


def test_the_first_request_opens_a_record_and_the_limit_counts_it() -> None:
    ledger = Unconfirmed(limit=3, max_size=10)
    record = ledger.open(b"a", principal())
    assert record is not None
    assert record.served == 1
    assert ledger.get(b"a") is record
    assert [ledger.admit(record, NOW) for _ in range(3)] == [True, True, False]
    assert record.served == 3


def test_the_default_limit_admits_nothing_after_the_first() -> None:
    ledger = Unconfirmed(limit=1, max_size=10)
    record = ledger.open(b"a", principal())
    assert record is not None
    assert not ledger.admit(record, NOW)


def test_nothing_is_admitted_past_the_tokens_exp() -> None:
    ledger = Unconfirmed(limit=5, max_size=10)
    record = ledger.open(b"a", principal(exp=NOW + 10))
    assert record is not None
    assert ledger.admit(record, NOW + 9)
    assert not ledger.admit(record, NOW + 10)


def test_a_full_ledger_opens_no_record_so_the_request_waits() -> None:
    ledger = Unconfirmed(limit=1, max_size=2)
    assert ledger.open(b"a", principal()) is not None
    assert ledger.open(b"b", principal()) is not None
    assert ledger.open(b"c", principal()) is None
    ledger.pop(b"a")
    assert ledger.open(b"c", principal()) is not None
    assert sorted(ledger) == [b"b", b"c"]
    ledger.clear()
    assert len(ledger) == 0
