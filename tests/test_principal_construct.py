"""``Principal.from_claims`` builds its object without ``model_construct``'s loop: the object
must be exactly what ``model_construct`` makes, field for field and in field order."""

from __future__ import annotations

from typing import Any, Literal

from fastapi_zitadel import Principal

from .helpers import active_claims


def _state(principal: Principal) -> tuple[Any, ...]:
    return (
        list(principal.__dict__.items()),
        principal.__pydantic_fields_set__,
        principal.__pydantic_extra__,
        principal.__pydantic_private__,
    )


def test_from_claims_makes_what_model_construct_makes() -> None:
    claims = active_claims(1_800_000_000.0, email="a@b.c", email_verified=True)
    modes: tuple[Literal["introspection", "jwt"], ...] = ("introspection", "jwt")
    for verified_by in modes:
        principal = Principal.from_claims(claims, verified_by=verified_by)
        fields = dict(principal.__dict__)
        assert list(fields) == list(Principal.model_fields)  # every field, in order
        reference = Principal.model_construct(_fields_set=principal.model_fields_set, **fields)
        assert _state(principal) == _state(reference)
        assert principal == reference
        assert principal.model_dump() == reference.model_dump()
        assert Principal.model_validate(principal.model_dump()) == principal
