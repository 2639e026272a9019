"""Hypothesis strategies for JSON values, as claims may hold them."""

from __future__ import annotations

from hypothesis import strategies as st

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()


json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
