"""The API benchmark's data builder writes rows the current schema reads: a column added to
``drop_events`` or the feed item (as the booking link's were) must reach the builder too, or
``drops bench`` fails at its first step."""

from __future__ import annotations

from pathlib import Path

import orjson

from bench import api_bench
from store.clickhouse import ClickHouse
from store.rows import ITEM_KEYS


def test_the_scan_builder_fills_every_feed_item_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    api_bench.build(data, rows=2_000, tag="t", stats_rows=2_000)
    ch = ClickHouse(f"chdb://{data / 'clickhouse'}")
    try:
        assert ch.query("SELECT count() FROM drop_events")[0][0] == 2_000
        assert ch.query("SELECT count() FROM discovery_buckets")[0][0] == 2_000
        items = [orjson.loads(r[0]) for r in ch.query("SELECT item FROM drop_events LIMIT 50")]
        for item in items:
            assert tuple(item) == ITEM_KEYS
            assert item["booking_url"].startswith("https://")
            assert item["venue_slug"] == f"venue-{item['venue_id']}"
    finally:
        ch.close()
