"""The drops topic behind the sink's back: records deleted by retention while the sink was
away, and a topic wiped and created again while ClickHouse kept the sink's progress."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka import TopicPartition

from drops import kafka
from drops.settings import Settings
from sinks.service import Sink, prepare
from sinks.testdata import DropWriter, make_drop
from store.clickhouse import ClickHouse
from tests.integration.test_api_feed import Server

pytestmark = pytest.mark.kafka


@pytest.fixture
def ch(kafka_settings: Settings) -> Iterator[ClickHouse]:
    c = prepare(kafka_settings)
    yield c
    c.close()


def rows(ch: ClickHouse) -> int:
    return int(ch.query("SELECT count() FROM drop_events")[0][0])


def drain(sink: Sink, cond: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sink.step()
        if callable(cond) and cond():
            return
    raise AssertionError("condition not reached")


def test_records_deleted_by_retention_while_the_sink_was_away_are_a_counted_gap(
    kafka_settings: Settings, ch: ClickHouse
) -> None:
    """Before: the consumer's offset fell off the log and auto.offset.reset=earliest skipped
    the deleted records silently."""
    s = kafka_settings
    w = DropWriter(s)
    w.write([make_drop(i) for i in range(5)])
    first = Sink(s, ch)
    try:
        drain(first, lambda: rows(ch) == 5)
    finally:
        first.close()
    w.write([make_drop(i) for i in range(5, 15)])  # written while the sink is away ...
    admin = kafka.admin(s)
    ends = _ends(s)
    # ... and deleted by retention before it comes back (DeleteRecords moves the log start
    # as retention does)
    cut = TopicPartition(s.drops_topic, 0, ends[0] - 3)
    for fut in admin.delete_records([cut]).values():
        fut.result()
    w.write([make_drop(i) for i in range(15, 17)])
    again = Sink(s, ch)
    try:
        # 5 stored, the last 2 of the 10 written while away survived, 2 new
        drain(again, lambda: rows(ch) == 9)
        assert again.gaps.gaps == 1
        # offsets 0-4 and a marker were stored; 6-15 the 10 records: 6-13 were deleted
        assert again.gaps.offsets == cut.offset - 6 == 8
    finally:
        again.close()
        w.close()


def _ends(s: Settings) -> dict[int, int]:

    c = kafka.consumer(s, {"group.id": "ends"})
    _, high = c.get_watermark_offsets(TopicPartition(s.drops_topic, 0), timeout=10)
    c.close()
    return {0: high}


def test_a_gap_shows_in_readyz_and_metrics(kafka_settings: Settings) -> None:
    s = kafka_settings
    w = DropWriter(s)
    w.write([make_drop(i) for i in range(3)])
    admin = kafka.admin(s)
    for fut in admin.delete_records([TopicPartition(s.drops_topic, 0, 2)]).values():
        fut.result()
    with Server(s, with_sink=True) as srv:
        deadline = time.monotonic() + 30
        while True:
            ready = httpx.get(srv.url + "/readyz", timeout=5).json()
            if ready.get("retention_gaps"):
                break
            assert time.monotonic() < deadline, ready
            time.sleep(0.2)
        assert ready["retention_gaps"] == 1 and ready["ready"]
        metrics = httpx.get(srv.url + "/metrics", timeout=5).text
        assert "drops_sink_retention_gaps_total 1" in metrics
    w.close()


def _recreate(s: Settings, topic: str) -> None:
    from shell import broker

    admin = kafka.admin(s)
    for fut in admin.delete_topics([topic], operation_timeout=30).values():
        fut.result()
    deadline = time.monotonic() + 60
    while True:
        try:
            if topic not in admin.list_topics(timeout=10).topics:
                broker.ensure_topics(s)
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def test_a_recreated_topic_is_detected_not_skipped_silently(
    kafka_settings: Settings, ch: ClickHouse
) -> None:
    """The drops topic wiped and created again while ClickHouse kept the progress. Before:
    the new records, at offsets the old topic had already passed, were skipped as stored and
    the feed stalled without a word."""
    s = kafka_settings
    w = DropWriter(s)
    w.write([make_drop(i) for i in range(6)])
    first = Sink(s, ch)
    try:
        drain(first, lambda: rows(ch) == 6)
    finally:
        first.close()
    w.close()
    _recreate(s, s.drops_topic)
    w = DropWriter(s)
    w.write([make_drop(i) for i in range(100, 103)])
    again = Sink(s, ch)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not again.blocked:
            again.step()
        assert again.blocked and "topic id" in again.blocked
        assert again.totals.skipped == 0  # nothing was skipped as "already stored"
        assert rows(ch) == 6
    finally:
        again.close()
        w.close()
