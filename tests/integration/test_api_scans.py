"""The API's reads use a key: /buckets reads only the day partitions that can hold the
window's buckets (before: every day of retention, 400 partitions at full size)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.data import buckets_query, watched_query
from store.clickhouse import ClickHouse
from store.tables import MIGRATIONS

DAYS = 60


@pytest.fixture
def ch(tmp_path: Path) -> Iterator[ClickHouse]:
    c = ClickHouse(f"chdb://{tmp_path / 'ch'}")
    c.migrate(400, {"nyc": "America/New_York"})
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


def parts_read(ch: ClickHouse, sql: str, params: dict[str, object]) -> tuple[int, int]:
    plan = "\n".join(r[0] for r in ch.query("EXPLAIN indexes = 1 " + sql, params))
    counts = [tuple(map(int, m)) for m in re.findall(r"Parts: (\d+)/(\d+)", plan)]
    return counts[-1][0], counts[0][1]


def test_buckets_read_only_recent_partitions_and_answer_the_same(ch: ClickHouse) -> None:
    sql, params = buckets_query("nyc", "2026-12-01")
    read, total = parts_read(ch, sql, params)
    assert total == DAYS and read <= 16, (read, total)
    unbounded = sql.replace("AND polled_at >= %(since)s ", "")
    assert unbounded != sql
    assert parts_read(ch, unbounded, params)[0] == DAYS  # the query before: every day
    assert ch.query_dicts(sql, params) == ch.query_dicts(unbounded, params)
    assert len(ch.query_dicts(sql, params)) == 14


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
    ch.command(next(m for m in MIGRATIONS if m.version == 7).statements[2])
    for provider in (None, "resy", "opentable"):
        sql, params = watched_query(provider)
        assert ch.query(sql, params)[0][0] > 0
        before = "SELECT uniqExact(date) FROM discovery_buckets WHERE kind = 'poll'" + (
            " AND provider = %(p)s" if provider else ""
        )
        assert ch.query(sql, params) == ch.query(before, params)
