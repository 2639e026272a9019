"""Keeping thousands of cached principals small. Most of what a ``Principal`` holds is the
same from user to user: claim names, a handful of scope strings, the project's role maps, the
organization. Sharing one copy of each (and never validating twice) took a cached entry from
about 10.7 KB to 2.7 KB (tracemalloc; see BENCHMARKS.md). All of it is immutable, so sharing
can never leak one user's data into another's principal.

The copies live in bounded tables keyed by value in one object, ``SHARED`` (not a cache per
function), one per process on purpose: principals are built where no instance is at hand
(``Principal.from_claims``, pydantic validation), and two instances for the same project share
the same values anyway.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Hashable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

__all__ = ["EMPTY", "SHARED", "SharedFieldSet", "freeze", "thaw"]

_INTERN_LIMIT = 100  # longer strings (tokens' own ids, pictures) are rarely shared
_SHARED_LIMIT = 1024  # distinct values kept of each kind; past that its table starts afresh

EMPTY: Mapping[str, Any] = MappingProxyType({})

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), separated by U+0020 only.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_SCALARS = (int, float, bool, type(None))


def freeze(value: Any) -> Any:
    """A read-only deep copy, with mapping keys and short strings interned. A mapping of
    mappings of strings has the shape of ZITADEL's role claims (``{role: {org id: domain}}``),
    which most users of a project share: it is shared by value like the parsed roles."""
    # JSON's own types first, by exact type: the ABC checks below cost more than the rest.
    kind = type(value)
    if kind is str:
        return sys.intern(value) if len(value) <= _INTERN_LIMIT else value
    if kind in _SCALARS:
        return value
    if isinstance(value, Mapping):
        if value and all(_is_string_map(item) for item in value.values()):
            return SHARED.roles(value)
        return MappingProxyType(
            {
                sys.intern(key) if isinstance(key, str) else key: freeze(item)
                for key, item in value.items()
            }
        )
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item) for item in value)
    if isinstance(value, str) and len(value) <= _INTERN_LIMIT:
        return sys.intern(value)
    return value


def thaw(value: Any) -> Any:
    """Plain dicts and lists again, for serialisation."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


ValueT = TypeVar("ValueT")


class SharedValues:
    """One copy of each immutable value that many principals hold, by kind and by value; a
    kind's table full at ``limit`` starts afresh (losing only sharing with older principals)."""

    def __init__(self, limit: int = _SHARED_LIMIT) -> None:
        self._limit = limit
        self._tables: dict[str, dict[Hashable, Any]] = {}

    def get(self, kind: str, key: Hashable, make: Callable[[], ValueT]) -> ValueT:
        """The shared value of ``kind`` for ``key``; ``make()`` builds it the first time."""
        table = self._tables.setdefault(kind, {})
        found: ValueT | None = table.get(key)
        if found is None:
            if len(table) >= self._limit:
                table.clear()
            found = table[key] = make()
        return found

    def scopes(self, value: str) -> frozenset[str]:
        """One frozenset per distinct scope string: most tokens share a handful of them. Split
        on spaces only; tokens with characters RFC 6749 §3.3 forbids are dropped, never split
        further: ``"aud\tadmin"`` is one invalid token, not the scopes ``aud`` and ``admin``."""
        return self.get("scopes", value, lambda: _scope_set(value))

    def strings(self, value: tuple[str, ...]) -> tuple[str, ...]:
        """One tuple per distinct sequence of strings (audiences)."""
        return self.get("strings", value, lambda: value)

    def roles(self, roles: Mapping[str, Mapping[str, str]]) -> Mapping[str, Mapping[str, str]]:
        """The same read-only role map (role -> {org: domain}) for every user who has it."""
        if not roles:
            return EMPTY
        signature = tuple((role, tuple(orgs.items())) for role, orgs in roles.items())
        return self.get("roles", signature, lambda: _role_map(roles))


def _scope_set(value: str) -> frozenset[str]:
    return frozenset(
        sys.intern(scope) for scope in value.split(" ") if _SCOPE_TOKEN.fullmatch(scope)
    )


def _role_map(roles: Mapping[str, Mapping[str, str]]) -> Mapping[str, Mapping[str, str]]:
    return MappingProxyType(
        {
            sys.intern(role): MappingProxyType(
                {sys.intern(org): sys.intern(domain) for org, domain in orgs.items()}
            )
            for role, orgs in roles.items()
        }
    )


def _is_string_map(value: Any) -> bool:
    if type(value) is not dict and not isinstance(value, Mapping):
        return False
    return all(type(k) is str and type(v) is str for k, v in value.items()) or all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


SHARED = SharedValues()
"""The shared copies of this process (see the module docstring)."""


class SharedFieldSet(set[str]):
    """One read-only "fields set" for every principal built from claims (pydantic keeps one
    per model instance otherwise, about 700 bytes each); copies are ordinary sets."""

    def _read_only(self, *args: object) -> None:
        raise TypeError("the fields set of a Principal is read-only")

    def __copy__(self) -> set[str]:  # model_copy() gets a plain set
        return set(self)

    def __deepcopy__(self, memo: object) -> set[str]:
        return set(self)

    add = discard = remove = pop = clear = update = _read_only  # type: ignore[assignment]
    difference_update = intersection_update = symmetric_difference_update = _read_only
    __ior__ = __iand__ = __isub__ = __ixor__ = _read_only  # type: ignore[assignment]
