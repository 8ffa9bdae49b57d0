"""The bounded processed-id set: bounds, eviction order, O(1) membership."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsm.policy import Dedup
from xmtp_supervisor.dedup import DedupSet


def test_defaults_come_from_policy() -> None:
    d = DedupSet.from_policy(Dedup())
    for i in range(500):
        assert d.add(f"m{i}")
    assert d.size == 500
    d.add("m500")
    assert d.size == 251  # the oldest 250 went at once
    assert "m249" not in d and "m250" in d and "m500" in d


def test_evicts_oldest_first_in_bulk() -> None:
    d = DedupSet(max_ids=4, evict=2)
    for name in "abcd":
        d.add(name)
    assert d.snapshot() == ["a", "b", "c", "d"]
    d.add("e")
    assert d.snapshot() == ["c", "d", "e"]
    assert d.evicted == 2
    assert len(d) == 3


def test_duplicate_add_is_reported_and_does_not_refresh_age() -> None:
    d = DedupSet(max_ids=3, evict=1)
    assert d.add("a") and d.add("b")
    assert not d.add("a")
    d.add("c")
    d.add("d")
    assert "a" not in d  # still the oldest
    assert d.snapshot() == ["b", "c", "d"]


@pytest.mark.parametrize(("max_ids", "evict"), [(0, 0), (4, 0), (4, 5)])
def test_rejects_bad_bounds(max_ids: int, evict: int) -> None:
    with pytest.raises(ValueError):
        DedupSet(max_ids, evict)


@given(
    max_ids=st.integers(1, 40),
    evict_frac=st.floats(0.01, 1.0),
    ids=st.lists(st.integers(0, 100), max_size=300),
)
def test_never_exceeds_bound_and_keeps_the_newest(
    max_ids: int, evict_frac: float, ids: list[int]
) -> None:
    evict = max(1, min(max_ids, round(max_ids * evict_frac)))
    d = DedupSet(max_ids, evict)
    for i in ids:
        d.add(str(i))
        assert d.size <= max_ids
        assert str(i) in d  # the id just added is always remembered
    snapshot = d.snapshot()
    assert len(snapshot) == len(set(snapshot))
