"""Principal parsing: every shape servers send, deep immutability, and the check helpers."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastapi_zitadel import Principal
from fastapi_zitadel._claims import ROLES_CLAIM, project_roles_claim
from fastapi_zitadel._exceptions import MalformedClaimError

from .claim_strategies import json_value
from .helpers import active_claims

NOW = 1_800_000_000


def test_zitadel_shaped_answer() -> None:
    claims = active_claims(
        NOW,
        **{
            "urn:zitadel:iam:user:resourceowner:id": "org-1",
            "urn:zitadel:iam:user:resourceowner:name": "Acme",
            "urn:zitadel:iam:user:resourceowner:primary_domain": "acme.test",
            ROLES_CLAIM: {"admin": {"org-1": "acme.test"}, "viewer": {"org-2": "b.test"}},
            "urn:zitadel:iam:user:metadata": {"tier": "Z29sZA"},
            "locale": None,
            "email": "a@acme.test",
        },
    )
    principal = Principal.from_claims(claims)
    assert principal.subject == "user-1"
    assert principal.scopes == {"openid", "profile", "items:read"}
    assert principal.audience == ("298374999@fastapi-zitadel", "298374000")
    assert principal.expires_at is not None
    assert principal.expires_at.timestamp() == NOW + 3600
    assert principal.organization is not None
    assert principal.organization.name == "Acme"
    assert principal.metadata == {"tier": b"gold"}
    assert principal.metadata_text("tier") == "gold"
    assert principal.locale is None
    assert principal.claims["email"] == "a@acme.test"


def test_audience_as_plain_string() -> None:
    assert Principal.from_claims({"aud": "api"}).audience == ("api",)


def test_minimal_answer() -> None:
    principal = Principal.from_claims({"active": True})
    assert principal.subject is None
    assert principal.scopes == frozenset()
    assert principal.roles == {}


def test_project_specific_role_claim_wins() -> None:
    claims = {
        ROLES_CLAIM: {"generic": {"o": "d"}},
        project_roles_claim("p1"): {"mine": {"o": "d"}},
        project_roles_claim("p2"): {"theirs": {"o": "d"}},
    }
    assert set(Principal.from_claims(claims, project_id="p1").roles) == {"mine"}
    # Only the configured project's claim counts; the generic one may be another project's.
    assert set(Principal.from_claims(claims, project_id="p9").roles) == set()
    assert set(Principal.from_claims(claims).roles) == {"generic"}


def test_role_and_scope_helpers() -> None:
    principal = Principal.from_claims(
        {
            "scope": "a b",
            ROLES_CLAIM: {"admin": {"o1": "one.test"}, "reader": {"o1": "x", "o2": "y"}},
        }
    )
    assert principal.has_all_scopes(["a", "b"])
    assert not principal.has_all_scopes(["a", "c"])
    assert principal.has_any_scope(["c", "b"])
    assert not principal.has_any_scope(["c"])
    assert principal.has_role("admin")
    assert principal.has_role("admin", org_id="o1")
    assert not principal.has_role("admin", org_id="o2")
    assert principal.has_any_role(["nope", "reader"], org_id="o2")
    assert principal.has_all_roles(["admin", "reader"], org_id="o1")
    assert not principal.has_all_roles(["admin", "reader"], org_id="o2")
    assert principal.roles_in_org("o2") == {"reader"}


def test_deeply_immutable() -> None:
    principal = Principal.from_claims(
        {"sub": "u", ROLES_CLAIM: {"admin": {"o": "d"}}, "nested": {"list": [1, {"a": 2}]}}
    )
    with pytest.raises(TypeError):
        principal.roles["root"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        principal.roles["admin"]["o2"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        principal.claims["nested"]["list"][1]["a"] = 3
    with pytest.raises(ValueError, match="frozen"):
        principal.subject = "root"  # type: ignore[misc]


def test_serialises_to_plain_json() -> None:
    principal = Principal.from_claims({"sub": "u", ROLES_CLAIM: {"admin": {"o": "d"}}})
    dumped = principal.model_dump(mode="json")
    assert dumped["roles"] == {"admin": {"o": "d"}}
    assert dumped["claims"]["sub"] == "u"


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", "soon"),
        ("exp", True),
        ("exp", 10**30),
        ("nbf", [1]),
        ("iat", {"t": 1}),
        ("aud", 5),
        ("aud", ["ok", 5]),
        ("scope", 5),
        ("scope", ["a", 1]),
        ("iss", 5),
        ("sub", ["u"]),
        ("client_id", 1),
    ],
)
def test_validity_claims_of_wrong_type_are_rejected(claim: str, value: Any) -> None:
    with pytest.raises(MalformedClaimError) as info:
        Principal.from_claims({claim: value})
    assert info.value.claim == claim


def test_descriptive_claims_of_wrong_type_are_dropped() -> None:
    principal = Principal.from_claims(
        {"name": 5, "email": ["x"], "email_verified": "yes", "locale": 1, ROLES_CLAIM: "admin"}
    )
    assert principal.name is None
    assert principal.email is None
    assert principal.email_verified is None
    assert principal.roles == {}


# Property tests -------------------------------------------------------------------------


@given(aud=st.text() | st.lists(st.text(), max_size=5))
def test_any_string_or_string_list_audience(aud: str | list[str]) -> None:
    expected = (aud,) if isinstance(aud, str) else tuple(aud)
    assert Principal.from_claims({"aud": aud}).audience == expected


@given(
    roles=st.dictionaries(
        st.text(min_size=1), st.dictionaries(st.text(), st.text(), max_size=3), max_size=5
    )
)
def test_zitadel_role_shape_round_trips(roles: dict[str, dict[str, str]]) -> None:
    principal = Principal.from_claims({ROLES_CLAIM: roles})
    assert {role: dict(orgs) for role, orgs in principal.roles.items()} == roles
    for role, orgs in roles.items():
        assert principal.has_role(role)
        for org in orgs:
            assert principal.has_role(role, org_id=org)


@given(value=json_value)
def test_any_roles_shape_never_crashes(value: Any) -> None:
    principal = Principal.from_claims({ROLES_CLAIM: value})
    for role, orgs in principal.roles.items():
        assert isinstance(role, str)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in orgs.items())


@given(data=st.dictionaries(st.text(min_size=1), st.binary(), max_size=5))
def test_metadata_unpadded_base64url_round_trips(data: dict[str, bytes]) -> None:
    encoded = {k: base64.urlsafe_b64encode(v).decode().rstrip("=") for k, v in data.items()}
    assert dict(Principal.from_claims({"urn:zitadel:iam:user:metadata": encoded}).metadata) == data


@given(data=st.dictionaries(st.text(min_size=1), st.binary(), max_size=5))
def test_metadata_padded_base64url_is_accepted(data: dict[str, bytes]) -> None:
    encoded = {k: base64.urlsafe_b64encode(v).decode() for k, v in data.items()}
    assert dict(Principal.from_claims({"urn:zitadel:iam:user:metadata": encoded}).metadata) == data


@given(value=json_value)
def test_any_metadata_shape_never_crashes(value: Any) -> None:
    principal = Principal.from_claims({"urn:zitadel:iam:user:metadata": value})
    assert all(isinstance(v, bytes) for v in principal.metadata.values())


@given(claims=st.dictionaries(st.text(), json_value, max_size=8))
def test_arbitrary_claims_parse_or_fail_cleanly(claims: dict[str, Any]) -> None:
    try:
        principal = Principal.from_claims(claims)
    except MalformedClaimError:
        return
    assert isinstance(principal.scopes, frozenset)
    assert all(isinstance(a, str) for a in principal.audience)
