"""The dead-letter record stays within the record limit whatever it carries."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas import deadletter as DL


@given(
    value=st.binary(max_size=20_000),
    key=st.binary(max_size=500),
    error=st.text(max_size=5_000),
    limit=st.integers(min_value=10_000, max_value=30_000),
)
def test_a_dead_letter_fits_the_limit(value: bytes, key: bytes, error: str, limit: int) -> None:
    out, headers = DL.record(value, key, error, ("t", 0, 7), limit)
    size = len(out) + len(key) + sum(len(k) + len(v) for k, v in headers)
    assert size <= limit - DL.OVERHEAD
    names = dict(headers)
    assert len(names["error"].decode()) <= DL.ERROR_MAX
    if "value_truncated" in names:
        assert int(names["value_truncated"]) == len(value) and value.startswith(out)
    else:
        assert out == value
    assert names["source_offset"] == b"7"


def test_error_text_keeps_short_texts_and_says_how_long_a_cut_one_was() -> None:
    assert DL.error_text("short") == "short"
    cut = DL.error_text("x" * 5000)
    assert len(cut) == DL.ERROR_MAX and cut.endswith("(5000 characters)")
