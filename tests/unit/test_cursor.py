"""The feed cursor: codec round trip, strict decoding, and paging that never skips or repeats."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api import cursor as C

positions = st.dictionaries(
    st.integers(0, C.MAX_PARTITIONS - 1), st.integers(0, C.MAX_OFFSET), max_size=8
)


@given(positions)
def test_round_trip(cur: dict[int, int]) -> None:
    text = C.encode(cur)
    assert C.decode(text) == cur
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@given(st.text(max_size=40))
def test_decode_never_crashes(text: str) -> None:
    try:
        cur = C.decode(text)
    except C.CursorError:
        return
    assert C.encode(cur) == text


@pytest.mark.parametrize(
    "bad",
    ["", "!!!", "AQ", "Ag", "AgA", "AQEAAA", "AQIAAQAB", "AQEBAAA", "AQE", "AQEAAAA", "x" * 30000],
)
def test_malformed_cursors_are_refused(bad: str) -> None:
    with pytest.raises(C.CursorError):
        C.decode(bad)


def test_after_respects_the_read_order() -> None:
    head = {0: 50, 1: 50, 2: 50}
    # the read stopped at row (offset 10, partition 1)
    assert C.after({}, head, 10, 1) == {0: 10, 1: 10, 2: 9}
    assert C.after({2: 30}, head, 10, 1) == {0: 10, 1: 10, 2: 30}
    assert C.after({}, {0: 5}, 10, 1) == {0: 5, 1: 10}


def _read(
    rows: list[tuple[int, int, bool]], start: C.Cursor, head: C.Cursor, limit: int
) -> list[tuple[int, int]]:
    """What the SQL does: rows after start, at or below head, matching, in (offset, partition)."""
    sel = sorted((o, p) for o, p, m in rows if m and start.get(p, -1) < o <= head.get(p, -1))
    return sel[:limit]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 3)), min_size=1, max_size=60
    ),
    st.integers(1, 5),
)
def test_paging_under_late_inserts_never_skips_or_repeats(
    log: list[tuple[int, bool, int]], limit: int
) -> None:
    """Partitions append at their own pace (a lagging partition's rows arrive late); pages are
    read between arrivals; every matching row is delivered exactly once."""
    next_offset = {0: 0, 1: 0, 2: 0}
    rows: list[tuple[int, int, bool]] = []
    head: C.Cursor = {}
    cur: C.Cursor = {}
    delivered: list[tuple[int, int]] = []
    for partition, match, reads in log:
        o = next_offset[partition]
        next_offset[partition] += 1 + (o % 3 == 2)  # gaps, like transaction markers
        rows.append((o, partition, match))
        head[partition] = o  # visible rows of a partition are a prefix of its log
        for _ in range(reads):
            page = _read(rows, cur, head, limit)
            delivered += page
            cur = C.next_cursor(cur, head, page, limit)
    while True:
        page = _read(rows, cur, head, limit)
        delivered += page
        cur = C.next_cursor(cur, head, page, limit)
        if len(page) < limit:
            break
    expected = sorted((o, p) for o, p, m in rows if m)
    assert sorted(delivered) == expected
    assert len(set(delivered)) == len(delivered)


def test_range_sql_is_bounded_by_the_head() -> None:
    assert C.range_sql({}, {}) == "0"
    sql = C.range_sql({0: 5}, {0: 9, 1: 3})
    assert "kafka_offset > 5" in sql and "kafka_offset <= 9" in sql and "kafka_partition = 1" in sql
    assert C.range_sql({0: 9}, {0: 9}) == "0"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=80),
    st.integers(1, 6),
    st.integers(1, 7),
)
def test_windowed_reads_equal_one_read(log: list[tuple[int, bool]], limit: int, first: int) -> None:
    next_offset = {0: 0, 1: 0, 2: 0}
    rows: list[tuple[int, int, bool]] = []
    for p, m in log:
        rows.append((next_offset[p], p, m))
        next_offset[p] += 1 + (next_offset[p] % 4 == 3)
    head = {p: o - 1 for p, o in next_offset.items() if o}
    start: C.Cursor = {}
    whole: list[tuple[int, int]] = []
    windowed: list[tuple[int, int]] = []
    cur_a: C.Cursor = {}
    cur_b: C.Cursor = {}
    for _ in range(200):
        page = _read(rows, cur_a, head, limit)
        whole += page
        cur_a = C.next_cursor(cur_a, head, page, limit)
        got: list[tuple[int, int]] = []
        pos = dict(cur_b)
        for bound in C.windows(cur_b, head, limit, first):
            want = limit - len(got)
            part = _read(rows, pos, bound, want)
            got += part
            pos = C.next_cursor(pos, bound, part, want)
            if len(part) == want:
                break
        windowed += got
        cur_b = pos
        assert got == page
        if len(page) < limit:
            break
    assert whole == windowed and cur_a == cur_b
    del start


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=80),
    st.integers(1, 6),
    st.integers(1, 9),
)
def test_bounded_reads_deliver_every_row_once_and_each_reads_at_most_the_span(
    log: list[tuple[int, bool]], limit: int, span: int
) -> None:
    """Requests whose read is bounded to ``span`` offsets a partition: pages may end early
    (short, cursor before the head); following the cursors delivers what one read would."""
    next_offset = {0: 0, 1: 0, 2: 0}
    rows: list[tuple[int, int, bool]] = []
    for p, m in log:
        rows.append((next_offset[p], p, m))
        next_offset[p] += 1 + (next_offset[p] % 4 == 3)
    head = {p: o - 1 for p, o in next_offset.items() if o}
    cur: C.Cursor = {}
    got: list[tuple[int, int]] = []
    for _ in range(1000):
        if C.covers(cur, head):
            break
        pos = dict(cur)
        bounds = C.windows(cur, head, limit, 1, span)
        lo = min(cur.get(p, -1) for p in head if head[p] > cur.get(p, -1))
        assert all(o <= lo + span for o in bounds[-1].values() if o > lo)
        page: list[tuple[int, int]] = []
        for bound in bounds:
            want = limit - len(page)
            part = _read(rows, pos, bound, want)
            page += part
            pos = C.next_cursor(pos, bound, part, want)
            if len(part) == want:
                break
        assert len(page) <= limit
        got += page
        assert pos != cur, "no progress"
        cur = pos
    assert C.covers(cur, head)
    assert got == sorted((o, p) for o, p, m in rows if m)
