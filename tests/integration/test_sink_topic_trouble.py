"""The drops topic behind the sink's back: records deleted by retention while the sink was
away, and a topic wiped and created again while ClickHouse kept the sink's progress."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from confluent_kafka import TopicPartition

from drops import kafka
from drops.settings import Settings
from sinks.service import Sink, prepare, sink_readings
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
    cut = TopicPartition(s.topics.drops, 0, ends[0] - 3)
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
    _, high = c.get_watermark_offsets(TopicPartition(s.topics.drops, 0), timeout=10)
    c.close()
    return {0: high}


def test_a_gap_shows_in_readyz_and_metrics(kafka_settings: Settings) -> None:
    s = kafka_settings
    w = DropWriter(s)
    w.write([make_drop(i) for i in range(3)])
    admin = kafka.admin(s)
    for fut in admin.delete_records([TopicPartition(s.topics.drops, 0, 2)]).values():
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
    _recreate(s, s.topics.drops)
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


def _recreated_under_a_running_sink(s: Settings, ch: ClickHouse) -> tuple[Sink, list[str]]:
    """A sink running in its thread stores 6 drops; the drops topic is deleted and created
    again and 3 new drops written to it while the sink keeps running. Returns the sink once
    it stopped storing (or after 60 s) and the log lines it wrote meanwhile."""
    import logging

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep()
    logging.getLogger("drops.sink").addHandler(handler)
    w = DropWriter(s)
    w.write([make_drop(i) for i in range(6)])
    sink = Sink(s, ch)
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while rows(ch) < 6 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rows(ch) == 6
        w.close()
        _recreate(s, s.topics.drops)
        w = DropWriter(s)
        w.write([make_drop(i) for i in range(100, 103)])
        deadline = time.monotonic() + 60
        while not sink.blocked and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        sink.stop.set()
        thread.join(30)
        w.close()
        logging.getLogger("drops.sink").removeHandler(handler)
    return sink, lines


def test_a_topic_recreated_while_the_sink_runs_is_caught_by_the_periodic_check(
    kafka_settings: Settings, ch: ClickHouse
) -> None:
    """Before: the identity was checked only when the sink started; a topic created again
    under a running sink had its records skipped as stored, without a word."""
    s = kafka_settings.model_copy(update={"sink_identity_interval": 1.0})
    sink, lines = _recreated_under_a_running_sink(s, ch)
    assert sink.blocked and "topic id" in sink.blocked, lines[-20:]
    assert sink.identity_changes == 1
    assert sink.totals.skipped == 0  # nothing of the new topic was skipped as "stored"
    assert rows(ch) == 6
    assert any("topic_identity_changed" in line for line in lines)
    counters = {
        m.name: m.samples[0].value for m in sink_readings(lambda: sink, lambda: 0).collect()
    }
    assert counters["drops_sink_topic_identity_changes"] == 1


def test_a_topic_recreated_while_the_sink_runs_is_caught_when_its_offsets_go_back(
    kafka_settings: Settings, ch: ClickHouse
) -> None:
    """No periodic check in the test's time: the first record of the new topic, at an offset
    below the last one read, makes the sink check at once, before it stores anything."""
    s = kafka_settings.model_copy(update={"sink_identity_interval": 3600.0})
    sink, lines = _recreated_under_a_running_sink(s, ch)
    assert sink.blocked and "topic id" in sink.blocked, lines[-20:]
    assert sink.identity_changes == 1
    assert sink.totals.skipped == 0
    assert rows(ch) == 6
    assert any("offsets_went_back" in line or "topic_identity_changed" in line for line in lines)
