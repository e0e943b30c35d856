"""``domain.slotsets`` against Python sets."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from domain import slotsets

ids = st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 20), max_size=60)


@given(ids, ids)
def test_set_algebra_matches_python_sets(xs: list[int], ys: list[int]) -> None:
    a, b = slotsets.from_ints(xs), slotsets.from_ints(ys)
    assert a.dtype == np.uint64 and a.tolist() == sorted(set(xs))
    assert slotsets.union(a, b).tolist() == sorted(set(xs) | set(ys))
    assert slotsets.minus(a, b).tolist() == sorted(set(xs) - set(ys))
    assert slotsets.contains(a, b).tolist() == [y in set(xs) for y in b.tolist()]


@given(ids)
def test_bytes_round_trip(xs: list[int]) -> None:
    a = slotsets.from_ints(xs)
    data = slotsets.to_bytes(a)
    assert len(data) == 8 * len(a)
    assert slotsets.from_bytes(data).tolist() == a.tolist()


def test_empty() -> None:
    assert slotsets.from_bytes(None).tolist() == []
    assert slotsets.from_bytes(b"").tolist() == []
    assert slotsets.from_hex(["00000000000000ff", "ff"]).tolist() == [255]
