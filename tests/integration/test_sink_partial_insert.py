"""An INSERT that spans partitions can commit one partition and fail on the next (ClickHouse
commits each partition of an insert on its own). The retry must store exactly the rest: before,
it skipped every row at or below the highest stored offset, and the rows of the partition that
failed were lost for good."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from drops.settings import Settings
from sinks.service import Sink, prepare
from sinks.testdata import DropWriter, make_drop, make_stats
from store.clickhouse import ClickHouse

pytestmark = pytest.mark.kafka

NOV = int(datetime(2026, 11, 20, 18, 0, tzinfo=UTC).timestamp() * 1000)
DEC = int(datetime(2026, 12, 2, 18, 0, tzinfo=UTC).timestamp() * 1000)
PARTITION_OF = {"drop_events": "opened_at", "discovery_buckets": "polled_at"}


class FailsBetweenPartitions(ClickHouse):
    """The real engine, except that the first insert of a table spanning two partitions
    commits only the partition holding the highest offset, then fails."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.failed: set[str] = set()

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        token: str | None = None,
    ) -> None:
        if table in PARTITION_OF and table not in self.failed:
            at, off = list(columns).index(PARTITION_OF[table]), list(columns).index("kafka_offset")
            day = "%Y%m" if table == "drop_events" else "%Y%m%d"
            groups: dict[str, list[Sequence[Any]]] = {}
            for r in rows:
                groups.setdefault(r[at].strftime(day), []).append(r)
            if len(groups) > 1:
                self.failed.add(table)
                top = max(groups.values(), key=lambda g: max(r[off] for r in g))
                super().insert(table, top, columns)
                raise RuntimeError(f"injected: {table} failed after one partition committed")
        super().insert(table, rows, columns, token)


@pytest.fixture
def ch(kafka_settings: Settings) -> Iterator[FailsBetweenPartitions]:
    prepare(kafka_settings).close()
    c = FailsBetweenPartitions(kafka_settings.clickhouse_url)
    yield c
    c.close()


def count(ch: ClickHouse, table: str) -> int:
    return int(ch.query(f"SELECT count() FROM {table}")[0][0])


def test_a_retry_after_a_partial_insert_stores_exactly_the_rest(
    kafka_settings: Settings, ch: FailsBetweenPartitions
) -> None:
    w = DropWriter(kafka_settings)
    # opens of December and closes-like rows with November open times, interleaved
    events = [make_drop(i, opened_at_ms=(NOV if i % 2 else DEC) + i) for i in range(10)]
    w.write(events)
    w.write_stats(
        [make_stats(polled_at_ms=(NOV if i % 2 else NOV + 86_400_000) + i) for i in range(6)]
    )
    sink = Sink(kafka_settings.model_copy(update={"sink_batch_seconds": 2.0}), ch)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not (
            count(ch, "drop_events") >= 10 and count(ch, "discovery_buckets") >= 6
        ):
            sink.step()
        assert ch.failed == {"drop_events", "discovery_buckets"}, "no partial insert happened"
        time.sleep(0.3)
        sink.step()
    finally:
        sink.close()
        w.close()
    assert count(ch, "drop_events") == 10
    assert ch.query("SELECT uniqExact(kafka_offset) FROM drop_events") == [(10,)]
    assert count(ch, "discovery_buckets") == 6
    keys = {r[0] for r in ch.query("SELECT dedupe_key FROM drop_events")}
    assert keys == {e.dedupe_key for e in events}
