"""Pure parts of the sink: row mapping, batch dedupe plan, tokens, schema text."""

from __future__ import annotations

import pytest

from sinks.testdata import close_of, make_drop, make_stats
from store import rows as R
from store import tables as schema


def test_drop_row_matches_the_columns() -> None:
    ev = make_drop(3, opened_at_ms=1_800_000_000_123)
    row = R.drop_row(ev, 0, 42)
    doc = dict(zip(R.DROP_COLUMNS, row, strict=True))
    assert doc["kafka_offset"] == 42 and doc["kafka_partition"] == 0
    assert R.dt_to_ms(doc["opened_at"]) == 1_800_000_000_123
    assert doc["closed_at"] is None and doc["open_seconds"] is None
    assert R.dt_to_ms(doc["opened_after"]) == 1_800_000_000_123 - 30_000
    assert doc["v"] == 2
    closed = dict(
        zip(R.DROP_COLUMNS, R.drop_row(close_of(ev, ev.opened_at_ms + 5000), 0, 43), strict=True)
    )
    assert closed["event"] == "close" and closed["open_seconds"] == 5.0


def test_stats_row_matches_the_columns() -> None:
    row = R.stats_row(make_stats(slots=7), 0, 9)
    assert len(row) == len(R.STATS_COLUMNS)
    assert dict(zip(R.STATS_COLUMNS, row, strict=True))["slots"] == 7


def test_plan_skips_stored_offsets_known_keys_and_repeats() -> None:
    evs = [make_drop(i, opened_at_ms=1_800_000_000_000) for i in range(5)]
    batch = [R.Positioned(0, 10 + i, e) for i, e in enumerate(evs)]
    batch.append(R.Positioned(0, 20, evs[4]))  # same drop again under a new offset
    todo = R.plan_drops(batch, stored_upto=11, existing_keys={evs[3].dedupe_key})
    assert [p.offset for p in todo] == [12, 14]


def test_dedupe_token_is_stable_and_specific() -> None:
    a = R.dedupe_token("drop_events", 0, [1, 2, 3])
    assert a == R.dedupe_token("drop_events", 0, [1, 2, 3])
    assert a != R.dedupe_token("drop_events", 0, [1, 2, 4])
    assert a != R.dedupe_token("drop_events", 1, [1, 2, 3])


def test_validate_rejects_bad_dates() -> None:
    ev = make_drop(1)
    bad = type(ev)(**{**{f: getattr(ev, f) for f in ev.__dataclass_fields__}, "date": "12/01"})
    with pytest.raises(ValueError, match="'date'"):
        R.validate_drop(bad)


def test_venue_rows_keep_the_latest_per_venue() -> None:
    a = make_drop(1, venue=7, opened_at_ms=1000, neighborhood="Old")
    b = make_drop(2, venue=7, opened_at_ms=2000, neighborhood="New")
    rows = R.venue_rows([b, a])
    assert len(rows) == 1 and rows[0][4] == "New"


def test_derived_statements_refuse_bad_settings() -> None:
    with pytest.raises(ValueError):
        schema.derived_statements(0, {"nyc": "UTC"})
    with pytest.raises(ValueError):
        schema.view_statements({"nyc": "x'; DROP TABLE drop_events; --"})
    assert any("INTERVAL 30 DAY" in s for s in schema.derived_statements(30, {"nyc": "UTC"}))


def test_stored_item_is_the_feed_item_of_the_row() -> None:
    import orjson

    from api.data import feed_body, parse_rows
    from api.items import item_from_row

    ev = make_drop(5, opened_at_ms=1_800_000_000_321)
    for e in (ev, close_of(ev, ev.opened_at_ms + 2500)):
        row = dict(zip(R.DROP_COLUMNS, R.drop_row(e, 1, 77), strict=True))
        item = orjson.loads(row.pop("item"))
        assert list(item) == list(R.ITEM_KEYS)
        assert item == item_from_row(row)
    raw = b"7\t1\t" + R.item_json(ev, 1, 7) + b"\n9\t0\t{}\n"
    rows = parse_rows(raw)
    assert [(o, p) for o, p, _ in rows] == [(7, 1), (9, 0)]
    doc = orjson.loads(feed_body(rows, "AQ"))
    assert doc["next"] == "AQ" and doc["items"][0]["kafka_offset"] == 7 and doc["items"][1] == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("date", "1969-12-31"),
        ("date", "2150-01-01"),
        ("opened_at_ms", -1),
        ("opened_at_ms", 4_294_967_296_000),
        ("seating_types", ("Bar", 7)),
    ],
)
def test_drops_that_do_not_fit_the_columns_are_rejected(field: str, value: object) -> None:
    import dataclasses

    ev = dataclasses.replace(make_drop(1, opened_at_ms=1_800_000_000_000), **{field: value})
    with pytest.raises(ValueError, match=repr(field)):
        R.validate_drop(ev)
    R.validate_drop(make_drop(1, date="2149-06-06", opened_at_ms=1_800_000_000_000))


@pytest.mark.parametrize("field", ["duration_ms", "venues", "slots", "failures", "requests"])
def test_stats_that_do_not_fit_uint32_are_rejected(field: str) -> None:
    import dataclasses

    with pytest.raises(ValueError, match=repr(field)):
        R.validate_stats(dataclasses.replace(make_stats(), **{field: 2**32}))
    R.validate_stats(dataclasses.replace(make_stats(), **{field: 2**32 - 1}))
