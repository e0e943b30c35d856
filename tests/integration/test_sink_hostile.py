"""Records that pass decoding but cannot be stored, and dead letters the broker refuses: the
sink dead-letters what it cannot store and goes on; a refused dead letter is detected."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource

from drops import kafka
from drops.settings import Settings
from sinks.service import Sink, SinkThread, prepare
from sinks.testdata import DropWriter, make_drop, make_stats
from store.clickhouse import ClickHouse

pytestmark = pytest.mark.kafka


@pytest.fixture
def ch(kafka_settings: Settings) -> Iterator[ClickHouse]:
    c = prepare(kafka_settings)
    yield c
    c.close()


def rows(ch: ClickHouse, table: str = "drop_events") -> int:
    return int(ch.query(f"SELECT count() FROM {table}")[0][0])


def wait(cond: Callable[[], bool], timeout: float = 40.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached")


def dead_letters(settings: Settings, n: int, timeout: float = 20.0) -> list[Any]:
    c = kafka.consumer(
        settings,
        {
            "group.id": f"dlq-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52_428_800,
        },
    )
    c.subscribe([settings.topics.deadletter])
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m)
    c.close()
    return got


def big_producer(settings: Settings) -> Producer:
    p = kafka.producer(
        settings,
        {
            "transactional.id": f"hostile-{uuid.uuid4().hex}",
            "message.max.bytes": settings.kafka.max_message_bytes,
        },
    )
    p.init_transactions(30)
    return p


def write_docs(p: Producer, topic: str, docs: list[dict[str, Any]]) -> None:
    p.begin_transaction()
    for d in docs:
        p.produce(topic, value=orjson.dumps(d), key=b"k")
    p.commit_transaction(30)


def test_records_outside_the_column_types_are_dead_lettered_not_retried(
    kafka_settings: Settings, ch: ClickHouse
) -> None:
    """A Date column holds 1970-01-01 .. 2149-06-06 and UInt32 stops at 2**32 - 1: records
    that decode but do not fit must not wedge the sink (before: the insert failed for ever,
    taken for an outage, and the feed head froze)."""
    s = kafka_settings
    good = make_drop(1)
    hostile = [
        {**make_drop(2).to_dict(), "date": "1969-12-31"},
        {**make_drop(3).to_dict(), "date": "2150-01-01"},
        {**make_drop(4).to_dict(), "seating_types": ["Bar", 7]},
    ]
    p = big_producer(s)
    write_docs(p, s.topics.drops, hostile)
    write_docs(p, s.topics.stats, [{**make_stats().to_dict(), "duration_ms": 2**32}])
    w = DropWriter(s)
    w.write([good])
    w.write_stats([make_stats()])
    thread = SinkThread(s, ch).start()
    try:
        wait(lambda: rows(ch) == 1 and rows(ch, "discovery_buckets") == 1, what="good rows stored")
        assert not thread.sink.paused
        wait(lambda: thread.sink.totals.deadletters == 4, what="four dead letters")
    finally:
        thread.close()
        w.close()
    got = dead_letters(s, 4)
    errors = sorted(dict(m.headers())["error"].decode() for m in got)
    assert len(errors) == 4
    assert any("'date'" in e and "1969-12-31" in e for e in errors)
    assert any("'date'" in e and "2150-01-01" in e for e in errors)
    assert any("'seating_types'" in e for e in errors)
    assert any("'duration_ms'" in e for e in errors)


def test_a_huge_field_gives_a_bounded_dead_letter(kafka_settings: Settings, ch: ClickHouse) -> None:
    """A 3 MB bad field: the error text quoting it must not make the dead letter exceed the
    record limit (before: value + error header ~6 MB, refused, the batch retried for ever)."""
    s = kafka_settings
    p = big_producer(s)
    huge = {**make_drop(5).to_dict(), "date": "x" * 3_000_000}
    write_docs(p, s.topics.drops, [huge])
    w = DropWriter(s)
    w.write([make_drop(6)])
    thread = SinkThread(s, ch).start()
    try:
        wait(lambda: rows(ch) == 1, what="the good row after the huge one")
    finally:
        thread.close()
        w.close()
    (m,) = dead_letters(s, 1)
    headers = dict(m.headers())
    assert len(headers["error"]) <= 1000
    assert m.value() == orjson.dumps(huge)  # the original bytes, whole: they fit


def test_a_dead_letter_the_broker_refuses_is_detected(
    kafka_settings: Settings, ch: ClickHouse
) -> None:
    """An operator's dead-letter topic with a smaller record limit refuses a dead letter:
    it must be counted as lost, not as written (before: no delivery callback, counted as a
    dead letter written)."""
    s = kafka_settings
    admin = kafka.admin(s)
    res = ConfigResource("topic", s.topics.deadletter, set_config={"max.message.bytes": "20000"})
    for fut in admin.alter_configs([res]).values():
        fut.result()
    w = DropWriter(s)
    w.write_raw([b"not json " + b"x" * 50_000])
    w.write([make_drop(7)])
    sink = Sink(s, ch)
    try:
        deadline = time.monotonic() + 40
        while rows(ch) < 1 and time.monotonic() < deadline:
            sink.step()
        assert rows(ch) == 1
        assert sink.totals.deadletters == 0
        assert sink.totals.deadletters_lost == 1
    finally:
        sink.close()
        w.close()
