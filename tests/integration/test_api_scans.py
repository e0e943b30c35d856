"""The API's reads use a key, and answer exactly what the unkeyed reads answered:

- ``/buckets`` merges ``bucket_summary`` (per bucket, provider and poll day, kept by a
  materialized view) instead of aggregating every fetch of the window's days;
- ``/venues/{id}`` reads ``venue_events`` (ordered by venue) in one pass instead of four
  queries over ``drop_events``;
- a feed filter on a neighborhood that matches nothing reads no granule (skip index).

Each comparison runs the query before the change (kept here, or as
:func:`api.data.buckets_query_rows`) on the same data, including rows stored before the
migration (its backfill).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from api.data import Data, buckets_query, buckets_query_rows, watched_query
from api.params import Filters
from sinks.testdata import close_of, make_drop, make_stats
from store import rows as R
from store.clickhouse import ClickHouse
from store.tables import MIGRATIONS

DAYS = 60
TZ = "America/New_York"


@pytest.fixture
def ch(tmp_path: Path) -> Iterator[ClickHouse]:
    c = ClickHouse(f"chdb://{tmp_path / 'ch'}")
    c.migrate(400, {"nyc": TZ})
    # one fetch a day of each of 28 buckets over 60 days of polls, bucket dates a window
    # ahead of their poll day: an old day's rows belong to buckets long gone
    c.command(
        "INSERT INTO discovery_buckets (market, provider, bucket_id, date, time_slot, kind, "
        "snapshot_id, polled_at, duration_ms, venues, slots, complete, kafka_partition, "
        "kafka_offset) "
        "SELECT 'nyc', 'resy', concat('nyc:', toString(d), ':1900'), d, '19:00', "
        "if(number % 28 = 0, 'baseline', 'poll'), '', p, 300, 10, 20 + number % 7, 1, 0, number "
        "FROM (SELECT number, toDateTime64('2026-12-01 12:00:00', 3, 'UTC') "
        f"- toIntervalDay(intDiv(number, 28)) AS p, toDate(p) + (number % 14) AS d "
        f"FROM numbers({28 * DAYS}))"
    )
    yield c
    c.close()


def migration(version: int) -> tuple[str, ...]:
    return next(m for m in MIGRATIONS if m.version == version).statements


def plan(ch: ClickHouse, sql: str, params: dict[str, Any]) -> str:
    return "\n".join(r[0] for r in ch.query("EXPLAIN indexes = 1 " + sql, params))


def tables_read(ch: ClickHouse, sql: str, params: dict[str, Any]) -> set[str]:
    return set(re.findall(r"ReadFromMergeTree \(default\.(\w+)\)", plan(ch, sql, params)))


# ---------------------------------------------------------------------------------- /buckets


def random_fetches(ch: ClickHouse, seed: int, blocks: int = 6) -> None:
    """Fetches of two markets and providers, baselines and polls (some incomplete), polled
    over 30 days around the window, in several insert blocks (the view's states of one key
    come from several blocks and merge); no two fetches of a stream share a time."""
    rnd = random.Random(seed)
    start = datetime(2026, 11, 5, tzinfo=UTC)
    offset = 10_000
    for _ in range(blocks):
        rows = []
        for _ in range(rnd.randrange(50, 300)):
            polled = (
                start
                + timedelta(seconds=rnd.randrange(30 * 86_400))
                + timedelta(microseconds=1000 * (offset % 1000))
            )
            day = polled.date() + timedelta(days=rnd.randrange(14))
            st = make_stats(
                date=day.isoformat(),
                time_slot=rnd.choice(("15:00", "19:00")),
                polled_at_ms=int(polled.timestamp() * 1000),
                kind=rnd.choice(("baseline", "poll", "poll", "poll")),
                slots=rnd.randrange(1000),
                market=rnd.choice(("nyc", "nyc", "chi")),
                provider=rnd.choice(("resy", "opentable")),
            )
            row = R.stats_row(st, 0, offset)
            row[R.STATS_COLUMNS.index("complete")] = rnd.random() > 0.2
            row[R.STATS_COLUMNS.index("duration_ms")] = rnd.randrange(5000)
            rows.append(row)
            offset += 1
        ch.insert("discovery_buckets", rows, R.STATS_COLUMNS)


TODAYS = ("2026-11-20", "2026-12-01", "2026-12-04", "2026-12-20")


def test_buckets_merge_the_summary_and_answer_as_the_fetch_rows_did(ch: ClickHouse) -> None:
    random_fetches(ch, 1)
    for market in ("nyc", "chi"):
        for today in TODAYS:
            sql, params = buckets_query(market, today)
            assert tables_read(ch, sql, params) == {"bucket_summary"}
            want = ch.query_dicts(*buckets_query_rows(market, today))
            assert ch.query_dicts(sql, params) == want, (market, today)
    assert len(ch.query_dicts(*buckets_query("nyc", "2026-12-01"))) > 14
    # one summary row per bucket, provider and poll day, however many fetches that day
    ch.command("OPTIMIZE TABLE bucket_summary FINAL")
    keys = ch.query(
        "SELECT uniqExact(market, bucket_id, provider, toDate(polled_at, 'UTC')) "
        "FROM discovery_buckets"
    )[0][0]
    assert ch.query("SELECT count() FROM bucket_summary")[0][0] == keys


def test_the_bucket_summary_backfill_gives_the_same_answer(ch: ClickHouse) -> None:
    """Fetches stored before migration 11: its backfill builds the summary from them."""
    random_fetches(ch, 2)
    before = {t: ch.query_dicts(*buckets_query_rows("nyc", t)) for t in TODAYS}
    ch.command("TRUNCATE TABLE bucket_summary")
    assert ch.query_dicts(*buckets_query("nyc", "2026-12-01")) == []
    ch.command(migration(11)[2])
    for today in TODAYS:
        assert ch.query_dicts(*buckets_query("nyc", today)) == before[today], today


def test_days_watched_read_the_small_table_and_answer_the_same(ch: ClickHouse) -> None:
    """/venues/{id}'s days watched: before, ``uniqExact(date)`` over every poll row of
    ``discovery_buckets`` (30M rows at full size) on each request."""
    ch.command(  # polls of another provider, stored after the migration: through the view
        "INSERT INTO discovery_buckets (market, provider, bucket_id, date, time_slot, kind, "
        "snapshot_id, polled_at, duration_ms, venues, slots, complete, kafka_partition, "
        "kafka_offset) SELECT 'nyc', 'opentable', 'b', toDate('2026-10-01') + number % 9, "
        "'19:00', 'poll', '', now64(3), 1, 1, 1, 1, 0, number FROM numbers(50)"
    )
    for provider in (None, "resy", "opentable"):
        sql, params = watched_query(provider)
        assert "discovery_buckets" not in sql
        before = "SELECT uniqExact(date) FROM discovery_buckets WHERE kind = 'poll'" + (
            " AND provider = %(p)s" if provider else ""
        )
        assert ch.query(sql, params) == ch.query(before, params)
    rows = ch.query("SELECT count() FROM watched_days")[0][0]
    assert rows < 28 * DAYS / 10
    # rows stored before the migration: its backfill gives the same days
    ch.command("TRUNCATE TABLE watched_days")
    ch.command(migration(7)[2])
    for provider in (None, "resy", "opentable"):
        sql, params = watched_query(provider)
        assert ch.query(sql, params)[0][0] > 0
        before = "SELECT uniqExact(date) FROM discovery_buckets WHERE kind = 'poll'" + (
            " AND provider = %(p)s" if provider else ""
        )
        assert ch.query(sql, params) == ch.query(before, params)


# ---------------------------------------------------------------------------- /venues/{id}


def venue_before(
    ch: ClickHouse, venue_id: str, provider: str | None, history: int
) -> dict[str, Any] | None:
    """``Data.venue`` as it was: five queries, the counts, days and history over
    ``drop_events``."""
    params: dict[str, Any] = {"v": venue_id}
    pf = ""
    if provider:
        pf = " AND provider = %(p)s"
        params["p"] = provider
    info = ch.query_dicts(
        "SELECT market, provider, venue_id, venue_name, neighborhood, time_zone, last_seen "
        f"FROM venues FINAL WHERE venue_id = %(v)s{pf} ORDER BY provider",
        params,
    )
    if not info:
        return None
    stats = ch.query_dicts(
        "SELECT countIf(event = 'open') AS drops, countIf(event = 'close') AS closes, "
        "uniqExactIf(date, event = 'open') AS days_with_drop, "
        "quantileExactIf(0.5)(open_seconds, event = 'close') AS median_open_seconds, "
        "minIf(opened_at, event = 'open') AS first_drop_at, "
        "maxIf(opened_at, event = 'open') AS last_drop_at "
        f"FROM drop_events WHERE venue_id = %(v)s{pf}",
        params,
    )[0]
    watched = ch.query(*watched_query(provider))[0][0]
    recent = ch.query(
        "SELECT item FROM drop_events "
        f"WHERE venue_id = %(v)s{pf} ORDER BY kafka_offset DESC LIMIT {int(history)}",
        params,
    )
    by_day = ch.query(
        f"SELECT toDate(opened_at, '{TZ}') AS day, count() FROM drop_events "
        f"WHERE venue_id = %(v)s{pf} AND event = 'open' GROUP BY day ORDER BY day DESC "
        "LIMIT 60",
        params,
    )

    def ms(v: datetime) -> int:
        return round(v.replace(tzinfo=UTC).timestamp() * 1000)

    drops = int(stats["drops"])
    median = stats["median_open_seconds"]
    return {
        "venue": {**info[0], "last_seen": ms(info[0]["last_seen"])},
        "providers": [i["provider"] for i in info],
        "stats": {
            "drops": drops,
            "closes": int(stats["closes"]),
            "days_with_drop": int(stats["days_with_drop"]),
            "days_watched": int(watched),
            "drop_day_ratio": (int(stats["days_with_drop"]) / watched) if watched else None,
            "median_open_seconds": float(median) if stats["closes"] else None,
            "first_drop_at_ms": ms(stats["first_drop_at"]) if drops else None,
            "last_drop_at_ms": ms(stats["last_drop_at"]) if drops else None,
        },
        "drops_per_day": [{"day": d.isoformat(), "drops": int(n)} for d, n in by_day],
        "history": [orjson.loads(i) for (i,) in recent],
    }


def random_drops(ch: ClickHouse, seed: int, blocks: int = 5) -> list[str]:
    """Opens and closes of 12 venues (two providers each) over 90 days, in several insert
    blocks; the venue ids."""
    rnd = random.Random(seed)
    start = int(datetime(2026, 9, 1, tzinfo=UTC).timestamp() * 1000)
    offset = 0
    for _ in range(blocks):
        events = []
        for _ in range(rnd.randrange(100, 400)):
            venue = rnd.randrange(12)
            opened = start + rnd.randrange(90 * 86_400_000)
            day = datetime.fromtimestamp(opened / 1000, UTC).date() + timedelta(
                days=rnd.randrange(14)
            )
            ev = make_drop(
                offset,
                venue=venue,
                provider=rnd.choice(("resy", "opentable")),
                date=day.isoformat(),
                opened_at_ms=opened,
            )
            if rnd.random() < 0.4:
                ev = close_of(ev, opened + rnd.randrange(1, 7_200_000))
            events.append((ev, offset))
            offset += 1
        ch.insert("drop_events", [R.drop_row(e, 0, o) for e, o in events], R.DROP_COLUMNS)
        ch.insert("venues", R.venue_rows(e for e, _ in events), R.VENUE_COLUMNS)
    return [str(1000 + v) for v in range(12)]


class Counting:
    """The ClickHouse adapter, counting the queries made through it."""

    def __init__(self, ch: ClickHouse) -> None:
        self.ch = ch
        self.calls: list[str] = []

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self.calls.append(sql)
        return self.ch.query(sql, params)

    def query_dicts(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self.calls.append(sql)
        return self.ch.query_dicts(sql, params)


def test_a_venue_reads_venue_events_in_one_pass_and_answers_as_before(ch: ClickHouse) -> None:
    venues = random_drops(ch, 3)
    counting = Counting(ch)
    data = Data(counting, "drops.events")  # type: ignore[arg-type]
    for v in [*venues, "nope"]:
        for provider in (None, "resy", "opentable"):
            for history in (0, 1, 20, 500):
                counting.calls.clear()
                got = data.venue(v, provider, history)
                assert len(counting.calls) <= 3, counting.calls
                assert got == venue_before(ch, v, provider, history), (v, provider, history)
                assert all("drop_events" not in c for c in counting.calls[:2])
    sample = data.venue(venues[0], None, 20)
    assert sample is not None and sample["stats"]["drops"] > 0 and sample["history"]
    assert sample["stats"]["closes"] > 0 and sample["drops_per_day"]


def test_the_venue_events_backfill_gives_the_same_answer(ch: ClickHouse) -> None:
    """Drops stored before migration 10: its backfill copies them."""
    venues = random_drops(ch, 4)
    data = Data(ch, "drops.events")
    ch.command("TRUNCATE TABLE venue_events")
    assert data.venue(venues[0], None, 20) != venue_before(ch, venues[0], None, 20)
    ch.command(migration(10)[2])
    for v in venues:
        assert data.venue(v, None, 20) == venue_before(ch, v, None, 20), v


# ------------------------------------------------------------------------------------ /feed


def test_a_neighborhood_that_matches_nothing_reads_no_granule(ch: ClickHouse) -> None:
    random_drops(ch, 5)
    data = Data(ch, "drops.events", scan_max=200_000)
    head = {0: int(ch.query("SELECT max(kafka_offset) FROM drop_events")[0][0])}
    sql = (
        "SELECT kafka_offset FROM drop_events WHERE kafka_offset <= %(h)s AND "
        "neighborhood IN %(n)s ORDER BY kafka_offset LIMIT 100"
    )
    nothing = plan(ch, sql, {"h": head[0], "n": ["Nowhere"]})
    granules = re.findall(
        r"Name: ix_neighborhood\s+Description: [^\n]+\s+Condition: [^\n]+\s+"
        r"Parts: \d+/\d+\s+Granules: (\d+)/(\d+)",
        nothing,
    )
    assert granules and granules[0][0] == "0", nothing
    for hood in ("Nowhere", "SoHo", "Harlem"):
        f = Filters(neighborhood=(hood,))
        got = data.feed_window({0: -1}, head, f, 50)
        want_sql = (
            "SELECT kafka_offset, kafka_partition, item FROM drop_events WHERE "
            "neighborhood = %(n)s ORDER BY kafka_offset LIMIT 50 SETTINGS use_skip_indexes = 0"
        )
        want = [(int(o), int(p), str(i).encode()) for o, p, i in ch.query(want_sql, {"n": hood})]
        assert got[0] == want, hood
