"""The ClickHouse schema: numbered table migrations and the analysts' views (pure SQL text).

Tables are created by numbered migrations, applied once each and recorded in
``schema_migrations``. Retention (``TTL``) and the views depend on settings, so they are
(re)applied at every start by :func:`derived_statements`; both are idempotent.

Layout (see ``docs/analytics.md``):

- ``drop_events``: one row per record of the drops topic, open and close events in one
  table (column ``event``), because the feed is one ordered log of both kinds and its cursor
  is a position in that log. ``ORDER BY (kafka_offset, kafka_partition)`` makes a feed page a
  short in-order read of the primary key. ``PARTITION BY toYYYYMM(opened_at)``: month
  partitions (day partitions were measured: 400 of them cost ~25 ms of part analysis per feed
  page); retention is a row TTL in days, and the dedupe check and time-window reads prune by
  ``opened_at`` inside a month.
- ``discovery_buckets``: one row per bucket fetch (``BucketStats``), for ``/buckets``.
- ``venues``: the canonical venue list, last name and neighborhood seen (ReplacingMergeTree).
- ``sink_progress``: per topic partition, the log position the sink has fully stored.

Migration 2 adds ``drop_events.item``: the feed item as JSON, rendered once by the sink, so a
feed page reads three columns and sends the stored bytes (no per-row conversion in Python).
Rows stored before it have ``item = ''``; the API renders those from the columns.
Migration 3 adds the projection ``by_venue`` (the columns ``GET /venues/{id}`` reads, ordered
by venue), so a venue's history is a short range read instead of a scan of every row.
Migration 4 adds ``drop_events.opened_after`` (drop records v2: the last complete poll before
the one that saw the slot open); rows of v1 records have NULL.
Migration 5 adds ``drop_events.read_via``: how the slot was read (``search``, the bucket's
ordinary read, or ``fallback``); older rows read ``search``.
Migration 6 adds ``sink_topics``: per topic, the Kafka cluster id and topic id that the
stored offsets belong to (a topic wiped and created again restarts its offsets).
Migration 7 adds ``watched_days`` (provider, date), filled from ``discovery_buckets`` by a
materialized view: the days watched of ``/venues/{id}`` read a few hundred rows, not every
bucket fetch.
Migration 8 adds ``watches`` (the watches topic, last record per watch id wins by offset; a
tombstone is a row with ``deleted = 1``) and ``alert_deliveries`` (the delivery log, one row
per alert and channel); both are ReplacingMergeTrees, so a re-read record is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEDUPE_WINDOW = 10_000  # insert blocks remembered per table for insert_deduplication_token


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = MergeTree ORDER BY version
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "drop_events, discovery_buckets, venues, sink_progress",
        (
            f"""
CREATE TABLE IF NOT EXISTS drop_events (
    event LowCardinality(String),
    dedupe_key String,
    bucket_id String,
    market LowCardinality(String),
    provider LowCardinality(String),
    date Date,
    time_slot LowCardinality(String),
    slot_id String,
    venue_id String,
    venue_name String,
    neighborhood LowCardinality(String),
    actual_time String,
    time_zone LowCardinality(String),
    seating_types Array(LowCardinality(String)),
    party_min UInt16,
    party_max UInt16,
    booking String,
    opened_at DateTime64(3, 'UTC'),
    snapshot_id String,
    closed_at Nullable(DateTime64(3, 'UTC')),
    open_seconds Nullable(Float64),
    v UInt8,
    extra String,
    kafka_partition UInt16,
    kafka_offset UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX ix_dedupe dedupe_key TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX ix_venue venue_id TYPE bloom_filter(0.01) GRANULARITY 4
) ENGINE = MergeTree
PARTITION BY toYYYYMM(opened_at)
ORDER BY (kafka_offset, kafka_partition)
SETTINGS non_replicated_deduplication_window = {DEDUPE_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS discovery_buckets (
    market LowCardinality(String),
    provider LowCardinality(String),
    bucket_id String,
    date Date,
    time_slot LowCardinality(String),
    kind LowCardinality(String),
    snapshot_id String,
    polled_at DateTime64(3, 'UTC'),
    duration_ms UInt32,
    venues UInt32,
    slots UInt32,
    complete Bool,
    failures UInt32,
    requests UInt32,
    retries UInt32,
    kafka_partition UInt16,
    kafka_offset UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(polled_at)
ORDER BY (bucket_id, provider, polled_at)
SETTINGS non_replicated_deduplication_window = {DEDUPE_WINDOW}
""",
            """
CREATE TABLE IF NOT EXISTS venues (
    market LowCardinality(String),
    provider LowCardinality(String),
    venue_id String,
    venue_name String,
    neighborhood LowCardinality(String),
    time_zone LowCardinality(String),
    last_seen DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(last_seen)
ORDER BY (provider, venue_id)
""",
            """
CREATE TABLE IF NOT EXISTS sink_progress (
    topic String,
    kafka_partition UInt16,
    position Int64,
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(position)
ORDER BY (topic, kafka_partition)
""",
        ),
    ),
    Migration(
        2,
        "drop_events.item: the feed item as stored JSON",
        ("ALTER TABLE drop_events ADD COLUMN IF NOT EXISTS item String DEFAULT ''",),
    ),
    Migration(
        3,
        "drop_events projection by venue (GET /venues/{id} without a full scan)",
        (
            """
ALTER TABLE drop_events ADD PROJECTION IF NOT EXISTS by_venue (
    SELECT venue_id, provider, event, date, opened_at, open_seconds, kafka_partition,
           kafka_offset, item
    ORDER BY venue_id, kafka_offset
)""",
            "ALTER TABLE drop_events MATERIALIZE PROJECTION by_venue",
        ),
    ),
    Migration(
        4,
        "drop_events.opened_after: the last complete poll before the drop (drop records v2)",
        (
            "ALTER TABLE drop_events ADD COLUMN IF NOT EXISTS opened_after "
            "Nullable(DateTime64(3, 'UTC')) AFTER open_seconds",
        ),
    ),
    Migration(
        5,
        "drop_events.read_via: how the slot was read (search or fallback)",
        (
            "ALTER TABLE drop_events ADD COLUMN IF NOT EXISTS "
            "read_via LowCardinality(String) DEFAULT 'search'",
        ),
    ),
    Migration(
        6,
        "sink_topics: the cluster and topic ids the sink's progress belongs to",
        (
            """
CREATE TABLE IF NOT EXISTS sink_topics (
    topic String,
    cluster_id String,
    topic_id String,
    seen_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree(seen_at)
ORDER BY topic
""",
        ),
    ),
    Migration(
        7,
        "watched_days: the days each provider was polled (GET /venues/{id} without a scan)",
        (
            """
CREATE TABLE IF NOT EXISTS watched_days (
    provider LowCardinality(String),
    date Date
) ENGINE = ReplacingMergeTree
ORDER BY (provider, date)
""",
            """
CREATE MATERIALIZED VIEW IF NOT EXISTS watched_days_mv TO watched_days AS
SELECT provider, date FROM discovery_buckets WHERE kind = 'poll' GROUP BY provider, date
""",
            """
INSERT INTO watched_days
SELECT provider, date FROM discovery_buckets WHERE kind = 'poll' GROUP BY provider, date
""",
        ),
    ),
    Migration(
        8,
        "watches (a copy of the watches topic) and alert_deliveries (the delivery log)",
        (
            """
CREATE TABLE IF NOT EXISTS watches (
    watch_id String,
    owner String,
    name String,
    deleted UInt8,
    closes UInt8,
    criteria String,
    channel_types Array(LowCardinality(String)),
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    kafka_offset Int64
) ENGINE = ReplacingMergeTree(kafka_offset)
ORDER BY watch_id
""",
            """
CREATE TABLE IF NOT EXISTS alert_deliveries (
    alert_id String,
    channel UInt8,
    watch_id String,
    channel_type LowCardinality(String),
    target String,
    status LowCardinality(String),
    attempts UInt16,
    latency_ms Int64,
    error String,
    at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(at)
ORDER BY (alert_id, channel)
""",
        ),
    ),
)

TTL_TABLES = {
    "drop_events": "toDateTime(opened_at)",
    "discovery_buckets": "toDateTime(polled_at)",
    "venues": "toDateTime(last_seen)",
    "watched_days": "toDateTime(date)",
    "alert_deliveries": "toDateTime(at)",
}


def ttl_statement(table: str, days: int) -> str:
    return f"ALTER TABLE {table} MODIFY TTL {TTL_TABLES[table]} + INTERVAL {int(days)} DAY"


def sql_zone(time_zone: str) -> str:
    """A time zone name fit to be quoted in SQL (ClickHouse takes a zone as a constant)."""
    if not time_zone or any(c in time_zone for c in "'\\"):
        raise ValueError(f"not a time zone name: {time_zone!r}")
    return time_zone


def local(fn: str, column: str, zones: Mapping[str, str]) -> str:
    """``fn(column, zone)`` in each row's market's zone: ClickHouse takes a zone only as a
    constant, so one branch per market (a market not listed falls back to the first's zone)."""
    if not zones:
        raise ValueError("no markets: every view needs at least one market's time zone")
    for market in zones:
        if not market or any(c in market for c in "'\\"):
            raise ValueError(f"not a market name: {market!r}")
    items = list(zones.items())
    default = f"{fn}({column}, '{sql_zone(items[0][1])}')"
    if len(items) == 1:
        return default
    branches = ", ".join(f"market = '{m}', {fn}({column}, '{sql_zone(z)}')" for m, z in items)
    return f"multiIf({branches}, {default})"


def view_statements(zones: Mapping[str, str]) -> tuple[str, ...]:
    """The analysts' views; days and hours are local to each row's market (``zones``:
    market name to time zone)."""
    return (
        """
CREATE OR REPLACE VIEW close_events AS
SELECT * FROM drop_events WHERE event = 'close'
""",
        f"""
CREATE OR REPLACE VIEW drops_per_venue_day AS
SELECT market, provider, venue_id, any(venue_name) AS venue_name,
       any(neighborhood) AS neighborhood, {local("toDate", "opened_at", zones)} AS day,
       count() AS drops
FROM drop_events WHERE event = 'open'
GROUP BY market, provider, venue_id, day
""",
        """
CREATE OR REPLACE VIEW drop_open_time AS
SELECT provider, venue_id, any(venue_name) AS venue_name, count() AS closes,
       quantileExact(0.5)(open_seconds) AS median_open_seconds,
       quantileExact(0.9)(open_seconds) AS p90_open_seconds
FROM drop_events WHERE event = 'close' AND open_seconds IS NOT NULL
GROUP BY provider, venue_id
""",
        """
CREATE OR REPLACE VIEW venue_rarity AS
SELECT d.market AS market, d.provider AS provider, d.venue_id AS venue_id,
       d.venue_name AS venue_name, d.days_with_drop AS days_with_drop,
       w.days_watched AS days_watched,
       if(w.days_watched = 0, 0, d.days_with_drop / w.days_watched) AS drop_day_ratio
FROM (
    SELECT market, provider, venue_id, any(venue_name) AS venue_name,
           uniqExact(date) AS days_with_drop
    FROM drop_events WHERE event = 'open' GROUP BY market, provider, venue_id
) AS d
LEFT JOIN (
    SELECT market, provider, uniqExact(date) AS days_watched
    FROM discovery_buckets WHERE kind = 'poll' GROUP BY market, provider
) AS w ON d.market = w.market AND d.provider = w.provider
""",
        f"""
CREATE OR REPLACE VIEW drops_by_hour AS
SELECT market, {local("toHour", "opened_at", zones)} AS hour, count() AS drops,
       uniqExact(venue_id) AS venues
FROM drop_events WHERE event = 'open'
GROUP BY market, hour
""",
        """
CREATE OR REPLACE VIEW drops_by_neighborhood AS
SELECT market, neighborhood, count() AS drops, uniqExact(venue_id) AS venues,
       countIf(time_slot = '15:00') AS drops_1500, countIf(time_slot = '19:00') AS drops_1900
FROM drop_events WHERE event = 'open'
GROUP BY market, neighborhood
""",
    )


def derived_statements(retention_days: int, zones: Mapping[str, str]) -> tuple[str, ...]:
    """Statements re-applied at every start: TTLs from the settings, then the views."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    ttls = tuple(ttl_statement(t, retention_days) for t in TTL_TABLES)
    return ttls + view_statements(zones)
